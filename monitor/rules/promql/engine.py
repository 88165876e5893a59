"""Evaluation of a parsed expression over a History, with Prometheus 3.x instant semantics.

One `_Evaluator` per query: it caches which series each selector matches, evaluates the tree at
a time `t` (milliseconds) and returns internal values (`float` for scalars, `str`,
`InstantVector`, `RangeVector`). A range query evaluates the tree at each step and joins the
vectors by label set. Names marked for removal (`Sample.drop`) are removed when the query ends,
as Prometheus 3 does; two series left with the same labels are then an error.

Semantics follow Prometheus's `promql/engine.go`: the lookback window is (t - 5m, t], a range
selector reads (t - range, t], `@` fixes the time (start()/end() are the query's bounds) and
`offset` shifts it back, a subquery evaluates its inner expression at the multiples of its step
inside its range.

Native histogram samples live in an optional `HistogramStore` beside the float history; while it
holds any, selectors merge them into their results and operators, functions and aggregations go
through `hist_ops`/`hist_functions` (float-only queries never take those paths).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from monitor.history import LATE_MS, History, ms
from monitor.history import Series as HistorySeries
from monitor.rules.promql import aggregate, binary, functions, hist_functions, hist_ops
from monitor.rules.promql.annotations import SORT_IN_RANGE, call_position, invalid_quantile
from monitor.rules.promql.histogram import FloatHistogram, HistogramSeries, HistogramStore
from monitor.rules.promql.parse import (
    Aggregate,
    At,
    Binary,
    Call,
    Expr,
    MatrixSel,
    Node,
    NumberLit,
    StringLit,
    Subquery,
    Unary,
    VectorSel,
    parse,
    walk,
)
from monitor.rules.promql.values import (
    Element,
    EvalError,
    InstantVector,
    Internal,
    Matrix,
    RangeSeries,
    RangeVector,
    Sample,
    Scalar,
    Series,
    String,
    Value,
    Vector,
)


class Engine:
    """Evaluates PromQL over a `History`; see the package docstring for the interface."""

    # Subquery steps older than this before the newest sample are kept between queries: later
    # samples cannot change them (a write into the past clears them, see History.generation).
    SETTLED_MS = LATE_MS

    def __init__(
        self,
        history: History,
        lookback_s: float = 300.0,
        subquery_step_s: float = 60.0,
        histograms: HistogramStore | None = None,
    ) -> None:
        self.history = history
        self.histograms = histograms
        self.lookback = ms(lookback_s)
        self.subquery_step = ms(subquery_step_s)
        # id(subquery node) -> (node, {step time: inner value}); valid for one history generation
        self.steps: dict[int, tuple[Subquery, dict[int, Internal]]] = {}
        self.steps_generation = history.generation
        self._step_safe: dict[int, bool] = {}

    def step_cache(self, node: Subquery) -> dict[int, Internal] | None:
        """Kept inner values of a subquery by step time; None when its inner expression depends on
        the query's own bounds (start(), end(), step(), range(), @ start()/end())."""
        if self.history.generation != self.steps_generation:
            self.steps.clear()
            self.steps_generation = self.history.generation
        safe = self._step_safe.get(id(node))
        if safe is None:
            safe = not any(_bound_dependent(n) for n in walk(node.expr))
            self._step_safe[id(node)] = safe
            if len(self._step_safe) > 10_000:
                self._step_safe.clear()
        if not safe:
            return None
        entry = self.steps.get(id(node))
        if entry is None:
            if len(self.steps) > 1_000:
                self.steps.clear()
            entry = (node, {})
            self.steps[id(node)] = entry
        return entry[1]

    def _expr(self, expr: Expr | str) -> Expr:
        return parse(expr) if isinstance(expr, str) else expr

    def instant(self, expr: Expr | str, t: float) -> Value:
        """The value of `expr` at `t` (seconds)."""
        return self.instant_annotated(expr, t)[0]

    def instant_annotated(self, expr: Expr | str, t: float) -> tuple[Value, list[str]]:
        """The value of `expr` at `t` and Prometheus's warnings and infos about it ("PromQL
        warning: …", "PromQL info: …", each ending in the line:column it concerns)."""
        e = self._expr(expr)
        tm = ms(t)
        ev = _Evaluator(self, tm, tm, 0)
        value = _finish_instant(ev.eval(e.root, tm), tm)
        return value, ev.messages(e.text)

    def cycle(self, t: float) -> Cycle:
        """Evaluate several expressions at one time `t` (a rule group's cycle), computing each
        subexpression they share (a selector, `rate(x[5m])`, a subquery step) once."""
        return Cycle(self, t)

    def range(self, expr: Expr | str, start: float, end: float, step: float) -> Matrix:
        """The value of `expr` at start, start+step, ... <= end, as series of points."""
        return self.range_annotated(expr, start, end, step)[0]

    def range_annotated(self, expr: Expr | str, start: float, end: float, step: float) -> tuple[Matrix, list[str]]:
        """As `range`, with the warnings and infos (see `instant_annotated`)."""
        e = self._expr(expr)
        if e.kind not in ("scalar", "vector"):
            raise EvalError(
                f"invalid expression type {_type_name(e.kind)!r} for range query, must be Scalar or instant Vector"
            )
        t0, t1, dt = ms(start), ms(end), ms(step)
        if dt <= 0:
            raise EvalError("zero or negative query resolution step widths are not accepted")
        ev = _Evaluator(self, t0, t1, dt)
        for node in walk(e.root):
            if isinstance(node, Call) and node.func in ("sort", "sort_desc", "sort_by_label", "sort_by_label_desc"):
                ev.annotate("warn", SORT_IN_RANGE, node.func, -1)
        out: dict[frozenset[tuple[str, str]], tuple[dict[str, str], bool, list[tuple[int, Any]]]] = {}
        t = t0
        while t <= t1:
            v = ev.eval(e.root, t)
            if isinstance(v, float):
                out.setdefault(frozenset(), ({}, False, []))[2].append((t, v))
            elif isinstance(v, InstantVector):
                for s in v:
                    key = frozenset(s.metric.items())
                    entry = out.get(key)
                    if entry is None:
                        entry = (s.metric, s.drop, [])
                        out[key] = entry
                    elif entry[2] and entry[2][-1][0] == t:
                        raise EvalError("vector cannot contain metrics with the same labelset")
                    entry[2].append((t, s.value if s.h is None else s.h))
            t += dt
        merged: dict[frozenset[tuple[str, str]], tuple[dict[str, str], list[tuple[int, Any]]]] = {}
        for metric, drop, points in out.values():
            if drop and "__name__" in metric:
                metric = {k: v for k, v in metric.items() if k != "__name__"}
            key = frozenset(metric.items())
            have = merged.get(key)
            if have is None:
                merged[key] = (metric, list(points))
                continue
            combined = sorted(have[1] + points, key=lambda p: p[0])
            if any(combined[i][0] == combined[i - 1][0] for i in range(1, len(combined))):
                raise EvalError("vector cannot contain metrics with the same labelset")
            merged[key] = (have[0], combined)
        ordered = sorted(merged.values(), key=lambda mp: sorted(mp[0].items()))
        if ev.hstore is None:
            result = Matrix(Series(dict(metric), [(t / 1000.0, v) for t, v in points]) for metric, points in ordered)
        else:
            result = Matrix(
                Series(
                    dict(metric),
                    [(t / 1000.0, v) for t, v in points if not isinstance(v, FloatHistogram)],
                    [(t / 1000.0, v) for t, v in points if isinstance(v, FloatHistogram)],
                )
                for metric, points in ordered
            )
        return result, ev.messages(e.text)


class Cycle:
    """One evaluation time shared by many expressions: `cycle.instant(expr)` as Engine.instant."""

    def __init__(self, engine: Engine, t: float) -> None:
        self._engine = engine
        self.t = ms(t)
        self._ev = _Evaluator(engine, self.t, self.t, 0, memo=True)
        self._keep: list[Expr] = []  # the shared results are keyed by node identity: keep the nodes

    def instant(self, expr: Expr | str) -> Value:
        e = self._engine._expr(expr)
        self._keep.append(e)
        return _finish_instant(self._ev.eval(e.root, self.t), self.t)

    def instant_annotated(self, expr: Expr | str) -> tuple[Value, list[str]]:
        """As Engine.instant_annotated (annotations of shared subexpressions are reported by the
        first expression that evaluated them)."""
        e = self._engine._expr(expr)
        self._keep.append(e)
        self._ev.annotations.clear()
        value = _finish_instant(self._ev.eval(e.root, self.t), self.t)
        return value, self._ev.messages(e.text)


def _bound_dependent(node: Node) -> bool:
    if isinstance(node, Call) and node.func in ("start", "end", "step", "range"):
        return True
    at = getattr(node, "at", None)
    if isinstance(node, MatrixSel):
        at = node.sel.at
    return isinstance(at, At) and at.kind in ("start", "end")


def _type_name(kind: str) -> str:
    return {"matrix": "range vector", "string": "string", "scalar": "scalar", "vector": "instant vector"}[kind]


def _finish_instant(v: Internal, t: int) -> Value:
    ts = t / 1000.0
    if isinstance(v, float):
        return Scalar(v, ts)
    if isinstance(v, str):
        return String(v, ts)
    if isinstance(v, InstantVector):
        out = Vector()
        seen: set[frozenset[tuple[str, str]]] = set()
        for s in v:
            metric = s.metric
            if s.drop and "__name__" in metric:
                metric = {k: x for k, x in metric.items() if k != "__name__"}
            key = frozenset(metric.items())
            if key in seen:
                raise EvalError("vector cannot contain metrics with the same labelset")
            seen.add(key)
            out.append(Element(dict(metric), s.value, ts, s.h))
        return out
    mat = Matrix()
    for rs in v:
        metric = rs.metric
        if rs.drop and "__name__" in metric:
            metric = {k: x for k, x in metric.items() if k != "__name__"}
        series = Series(dict(metric), [(a / 1000.0, b) for a, b in zip(rs.times(), rs.values(), strict=True)])
        if rs.hs:
            series.histograms = [(a / 1000.0, h) for a, h in rs.hs]
        mat.append(series)
    return mat


def trunc_div(a: int, b: int) -> int:
    """Go's integer division (toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


class _Evaluator:
    def __init__(self, engine: Engine, start: int, end: int, step: int, memo: bool = False) -> None:
        self.engine = engine
        self.history = engine.history
        # (id(node), t) -> value, when results are shared between expressions (nodes are interned,
        # so equal subtrees are one object; the tree holds the node, so its id stays unique)
        self._memo: dict[tuple[int, int], Internal] | None = {} if memo else None
        # (level, message, function, argument index or -1 for the call): positions are found in
        # the expression's text when the messages are rendered
        self.annotations: dict[tuple[str, str, str, int], None] = {}
        self.step = step
        self.lookback = engine.lookback
        self.subquery_step = engine.subquery_step
        self.start = start
        self.end = end
        self._selected: dict[int, list[HistorySeries]] = {}
        store = engine.histograms
        # histogram samples exist: selectors merge them in, operators take the histogram paths
        self.hstore = store if store is not None and len(store) else None
        self.hselected: dict[int, list[HistogramSeries]] = {}
        self._dispatch: dict[type, Callable[[Any, int], Internal]] = {
            NumberLit: self._number,
            StringLit: self._string,
            VectorSel: self._vector,
            MatrixSel: self._matrix,
            Subquery: self._subquery,
            Call: self._call,
            Aggregate: self._aggregate,
            Binary: self._binary,
            Unary: self._unary,
        }

    def annotate(self, level: str, message: str, func: str, arg: int) -> None:
        self.annotations[(level, message, func, arg)] = None

    def messages(self, text: str) -> list[str]:
        out = []
        for level, message, func, arg in self.annotations:
            line, col = call_position(text, func, arg)
            prefix = "PromQL warning" if level == "warn" else "PromQL info"
            out.append(f"{prefix}: {message} ({line}:{col})")
        return out

    def eval(self, node: Node, t: int) -> Internal:
        memo = self._memo
        if memo is None:
            return self._dispatch[type(node)](node, t)
        key = (id(node), t)
        found = memo.get(key)
        if found is None:
            found = self._dispatch[type(node)](node, t)
            memo[key] = found
        return found

    # ---- leaves ------------------------------------------------------------------------------
    def _number(self, node: NumberLit, t: int) -> Internal:
        return node.value

    def _string(self, node: StringLit, t: int) -> Internal:
        return node.value

    def ref_time(self, at: At | None, offset: int, t: int) -> int:
        if at is None:
            base = t
        elif at.kind == "start":
            base = self.start
        elif at.kind == "end":
            base = self.end
        else:
            base = at.t
        return base - offset

    def select(self, node: VectorSel) -> list[HistorySeries]:
        found = self._selected.get(id(node))
        if found is None:
            if node.or_groups:
                seen: dict[int, HistorySeries] = {}
                name = [m for m in node.matchers if m.name == "__name__"]
                for group in node.or_groups:
                    for s in self.history.select(list(group) + name):
                        seen[id(s)] = s
                found = list(seen.values())
            else:
                found = self.history.select(node.matchers)
            self._selected[id(node)] = found
        return found

    def _vector(self, node: VectorSel, t: int) -> Internal:
        ref = self.ref_time(node.at, node.offset, t)
        lookback = self.lookback
        out = InstantVector()
        for s in self.select(node):
            hit = s.latest(ref, lookback)
            if hit is not None:
                out.append(Sample(s.labels, hit[1], False, hit[0]))
        if self.hstore is not None:
            hist_ops.merge_vector(self, node, ref, out)
        return out

    def _matrix(self, node: MatrixSel, t: int) -> Internal:
        sel = node.sel
        ref = self.ref_time(sel.at, sel.offset, t)
        lo = ref - node.range
        out = RangeVector()
        for s in self.select(sel):
            i, j = s.window(lo, ref)
            if j > i:
                out.append(RangeSeries(s.labels, False, s, i, j))
        if self.hstore is not None:
            hist_ops.merge_matrix(self, sel, lo, ref, out)
        return out

    def _subquery(self, node: Subquery, t: int) -> Internal:
        ref = self.ref_time(node.at, node.offset, t)
        step = node.step or self.subquery_step
        first = step * trunc_div(ref - node.range, step)
        if first <= ref - node.range:
            first += step
        series: dict[frozenset[tuple[str, str]], RangeSeries] = {}
        keys: dict[int, tuple[dict[str, str], frozenset[tuple[str, str]]]] = {}  # id(metric) -> (metric, key)
        kept = self.engine.step_cache(node)
        settled = self.history.newest - Engine.SETTLED_MS
        if kept is not None:
            for old in [k for k in kept if k < first]:
                del kept[old]
        tt = first
        while tt <= ref:
            v = kept.get(tt) if kept is not None and tt <= settled else None
            if v is None:
                v = self.eval(node.expr, tt)
                if kept is not None and tt <= settled:
                    kept[tt] = v
            if isinstance(v, float):
                v = InstantVector([Sample({}, v)])
            if not isinstance(v, InstantVector):
                raise EvalError("subquery is only allowed on instant vector or scalar expressions")
            for s in v:
                known = keys.get(id(s.metric))
                if known is None:
                    known = (s.metric, frozenset(s.metric.items()))
                    keys[id(s.metric)] = known  # holding the dict keeps its id from being reused
                key = known[1]
                rs = series.get(key)
                if rs is None:
                    rs = RangeSeries(s.metric, s.drop, ts=[], vs=[])
                    series[key] = rs
                elif (rs._ts and rs._ts[-1] == tt) or (rs.hs and rs.hs[-1][0] == tt):
                    raise EvalError("vector cannot contain metrics with the same labelset")
                if s.h is not None:
                    if rs.hs is None:
                        rs.hs = []
                    rs.hs.append((tt, hist_ops.unhinted(s.h)))
                    continue
                rs._ts.append(tt)  # type: ignore[union-attr]
                rs._vs.append(s.value)  # type: ignore[union-attr]
            tt += step
        return RangeVector(series.values())

    def range_bounds(self, node: Node, t: int) -> tuple[int, int]:
        """(start, end) in ms of the window a range argument covers at `t`."""
        if isinstance(node, MatrixSel):
            ref = self.ref_time(node.sel.at, node.sel.offset, t)
            return ref - node.range, ref
        assert isinstance(node, Subquery)
        ref = self.ref_time(node.at, node.offset, t)
        return ref - node.range, ref

    # ---- operators ---------------------------------------------------------------------------
    def _unary(self, node: Unary, t: int) -> Internal:
        v = self.eval(node.expr, t)
        if isinstance(v, float):
            return -v
        assert isinstance(v, InstantVector)
        if self.hstore is not None:
            return hist_ops.negate(v)
        return InstantVector(Sample(s.metric, -s.value, True) for s in v)

    def _binary(self, node: Binary, t: int) -> Internal:
        lhs = self.eval(node.lhs, t)
        rhs = self.eval(node.rhs, t)
        if self.hstore is not None:
            return hist_ops.binary(self, node, lhs, rhs)
        return binary.evaluate(node, lhs, rhs)

    def _aggregate(self, node: Aggregate, t: int) -> Internal:
        param = self.eval(node.param, t) if node.param is not None else None
        v = self.eval(node.expr, t)
        assert isinstance(v, InstantVector)
        if node.op == "quantile" and isinstance(param, float) and not (0 <= param <= 1):
            self.annotate("warn", invalid_quantile(param), node.op, 0)
        if self.hstore is not None:
            return hist_ops.aggregate(self, node, param, v)
        return aggregate.evaluate(node, param, v)

    def _call(self, node: Call, t: int) -> Internal:
        if self.hstore is not None:
            return hist_functions.call(self, node, t)
        return functions.call(self, node, t)
