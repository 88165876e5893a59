"""Selectors, operators and aggregations when native histogram samples exist.

The engine takes these paths only while its `HistogramStore` holds samples; float samples still
go through `binary` and `aggregate`. Semantics from Prometheus's `promql/engine.go`
(`vectorElemBinop`, `aggregation`): a histogram can be multiplied by a float (either side),
divided by one, added to or subtracted from another histogram and compared with one by `==`/`!=`;
any other pairing drops the element with an info. `sum`/`avg` add histograms (a group with both
histograms and floats is dropped with a warning), `count`/`group` count them, every other
aggregation ignores them with an info; `count_values` counts a histogram by its text.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from monitor.history import label_key
from monitor.rules.promql import aggregate as float_aggregate
from monitor.rules.promql import binary as float_binary
from monitor.rules.promql.binary import ARITHMETIC, COMPARISON, arith, compare
from monitor.rules.promql.histogram import (
    NOT_RESET,
    RESET,
    UNKNOWN,
    FloatHistogram,
    HistogramSeries,
    IncompatibleSchemas,
)
from monitor.rules.promql.parse import Aggregate, Binary, VectorSel
from monitor.rules.promql.values import (
    EvalError,
    InstantVector,
    Internal,
    RangeSeries,
    RangeVector,
    Sample,
    labels_str,
)

if TYPE_CHECKING:
    from monitor.rules.promql.engine import _Evaluator

MIXED_AGG = "encountered a mix of histograms and floats for aggregation"
MIXED_SCHEMAS = (
    'vector contains a mix of histograms with exponential and custom buckets schemas for metric name "{name}"'
)
RECONCILED = "mismatched custom buckets were reconciled during {op}"
IGNORED_AGG = "ignored histogram in {op} aggregation"
INCOMPATIBLE = 'incompatible sample types encountered for binary operator "{op}": {lhs} {op} {rhs}'


# ---- selectors -------------------------------------------------------------------------------
def select(ev: _Evaluator, node: VectorSel) -> list[HistogramSeries]:
    cache = ev.hselected
    found = cache.get(id(node))
    if found is None:
        store = ev.hstore
        assert store is not None
        if node.or_groups:
            name = [m for m in node.matchers if m.name == "__name__"]
            seen: dict[int, HistogramSeries] = {}
            for group in node.or_groups:
                for s in store.select(list(group) + name):
                    seen[id(s)] = s
            found = list(seen.values())
        else:
            found = store.select(node.matchers)
        cache[id(node)] = found
    return found


def merge_vector(ev: _Evaluator, node: VectorSel, ref: int, out: InstantVector) -> None:
    """Add the histogram samples of `node` at `ref` to `out` (the newer sample of a series wins)."""
    series = select(ev, node)
    if not series:
        return
    index = {label_key(s.metric): k for k, s in enumerate(out)}
    for hs in series:
        hit = hs.latest(ref, ev.lookback)
        if hit is None or hit[1] is None:
            continue
        k = index.get(label_key(hs.labels))
        if k is None:
            out.append(Sample(hs.labels, 0.0, False, hit[0], hit[1]))
            continue
        have = out[k]
        if have.t is not None and have.t >= hit[0]:
            continue
        out[k] = Sample(have.metric, 0.0, False, hit[0], hit[1])


def merge_matrix(ev: _Evaluator, node: VectorSel, lo: int, hi: int, out: RangeVector) -> None:
    """Attach the histogram points in (lo, hi] of the series `node` selects to `out`."""
    series = select(ev, node)
    if not series:
        return
    index = {label_key(rs.metric): rs for rs in out}
    for hs in series:
        points = hs.window(lo, hi)
        if not points:
            continue
        rs = index.get(label_key(hs.labels))
        if rs is None:
            rs = RangeSeries(hs.labels, False, ts=[], vs=[])
            out.append(rs)
        rs.hs = points


def unhinted(h: FloatHistogram) -> FloatHistogram:
    """A subquery's step repeats the sample it looked back to: its counter reset hint would count
    one reset many times, so detection falls back to comparing the histograms."""
    if h.hint in (RESET, NOT_RESET):
        h = h.copy()
        h.hint = UNKNOWN
    return h


def negate(vec: InstantVector) -> InstantVector:
    return InstantVector(
        Sample(s.metric, 0.0, True, None, s.h.copy().mul(-1.0)) if s.h is not None else Sample(s.metric, -s.value, True)
        for s in vec
    )


# ---- binary operators --------------------------------------------------------------------------
def _elem(
    ev: _Evaluator, node: Binary, a: float, ah: FloatHistogram | None, b: float, bh: FloatHistogram | None, name: str
) -> tuple[float, FloatHistogram | None, bool] | None:
    """(value, histogram, keep) of one pair, or None when the pair is dropped (annotated)."""
    op = node.op
    if ah is None and bh is None:
        if op in COMPARISON:
            return a, None, compare(op, a, b)
        return arith(op, a, b), None, True
    if ah is None and bh is not None:
        if op == "*":
            return 0.0, bh.copy().mul(a).compact(), True
        ev.annotate("info", INCOMPATIBLE.format(op=op, lhs="float", rhs="histogram"), op, -1)
        return None
    if ah is not None and bh is None:
        if op == "*":
            return 0.0, ah.copy().mul(b).compact(), True
        if op == "/":
            return 0.0, ah.copy().div(b).compact(), True
        ev.annotate("info", INCOMPATIBLE.format(op=op, lhs="histogram", rhs="float"), op, -1)
        return None
    assert ah is not None and bh is not None
    if op in ("+", "-"):
        try:
            res, reconciled = ah.add(bh) if op == "+" else ah.sub(bh)
        except IncompatibleSchemas:
            ev.annotate("warn", MIXED_SCHEMAS.format(name=name), op, -1)
            return None
        if reconciled:
            ev.annotate("info", RECONCILED.format(op="addition" if op == "+" else "subtraction"), op, -1)
        return 0.0, res.compact(), True
    if op == "==":
        return 0.0, ah, ah.equals(bh)
    if op == "!=":
        return 0.0, ah, not ah.equals(bh)
    ev.annotate("info", INCOMPATIBLE.format(op=op, lhs="histogram", rhs="histogram"), op, -1)
    return None


def binary(ev: _Evaluator, node: Binary, lhs: Internal, rhs: Internal) -> Internal:
    op = node.op
    if op in ("and", "or", "unless") or (isinstance(lhs, float) and isinstance(rhs, float)):
        return float_binary.evaluate(node, lhs, rhs)
    if isinstance(lhs, InstantVector) and isinstance(rhs, float):
        return _vector_scalar(ev, node, lhs, rhs, False)
    if isinstance(lhs, float) and isinstance(rhs, InstantVector):
        return _vector_scalar(ev, node, rhs, lhs, True)
    if not isinstance(lhs, InstantVector) or not isinstance(rhs, InstantVector):
        raise EvalError(f"binary operator {op!r} needs scalars or instant vectors")
    if not any(s.h is not None for s in lhs) and not any(s.h is not None for s in rhs):
        return float_binary.evaluate(node, lhs, rhs)
    return _vector_vector(ev, node, lhs, rhs)


def _vector_scalar(ev: _Evaluator, node: Binary, vec: InstantVector, scalar: float, swap: bool) -> InstantVector:
    if not any(s.h is not None for s in vec):
        return float_binary._vector_scalar(node.op, vec, scalar, swap, node.return_bool)
    out = InstantVector()
    changes = node.op in ARITHMETIC
    for s in vec:
        name = s.metric.get("__name__", "")
        if swap:
            r = _elem(ev, node, scalar, None, s.value, s.h, name)
        else:
            r = _elem(ev, node, s.value, s.h, scalar, None, name)
        if r is None:
            continue
        value, h, keep = r
        if node.op in COMPARISON and s.h is None:
            value = s.value
        if node.return_bool:
            out.append(Sample(s.metric, 1.0 if keep else 0.0, True))
        elif keep:
            out.append(Sample(s.metric, value, s.drop or changes, None, h))
    return out


def _vector_vector(ev: _Evaluator, node: Binary, lhs: InstantVector, rhs: InstantVector) -> InstantVector:
    """As binary._vector_vector, each pair through `_elem`."""
    if not lhs or not rhs:
        return InstantVector()
    card = node.card
    if card == "one-to-many":
        lhs, rhs = rhs, lhs
    sig = float_binary.signature_fn(node)
    right: dict[object, Sample] = {}
    for rs in rhs:
        key = sig(rs.metric)
        dup = right.get(key)
        if dup is not None:
            side = "left" if card == "one-to-many" else "right"
            group = labels_str(float_binary._match_labels(node, rs.metric))
            pair = "[" + ", ".join(sorted((labels_str(rs.metric), labels_str(dup.metric)))) + "]"
            raise EvalError(
                f"found duplicate series for the match group {group} on the {side} hand-side of the operation: "
                f"{pair};many-to-many matching not allowed: matching labels must be unique on one side"
            )
        right[key] = rs
    matched: dict[object, set[frozenset[tuple[str, str]]] | None] = {}
    out = InstantVector()
    for ls in lhs:
        key = sig(ls.metric)
        found = right.get(key)
        if found is None:
            continue
        a, ah, b, bh = ls.value, ls.h, found.value, found.h
        if card == "one-to-many":
            a, ah, b, bh = b, bh, a, ah
        metric = float_binary._result_metric(node, ls.metric, found.metric)
        if card == "one-to-one":
            if key in matched:
                raise EvalError(
                    "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)"
                )
            matched[key] = None
        else:
            seen = matched.get(key)
            if seen is None:
                seen = set()
                matched[key] = seen
            mk = frozenset(metric.items())
            if mk in seen:
                raise EvalError("multiple matches for labels: grouping labels must ensure unique matches")
            seen.add(mk)
        r = _elem(ev, node, a, ah, b, bh, ls.metric.get("__name__", ""))
        if r is None:
            continue
        value, h, keep = r
        if node.return_bool:
            out.append(Sample(metric, 1.0 if keep else 0.0, True))
        elif keep:
            out.append(Sample(metric, value, False, None, h))
    return out


# ---- aggregations ------------------------------------------------------------------------------
_IGNORING = frozenset(("min", "max", "stddev", "stdvar", "quantile", "topk", "bottomk"))


def aggregate(ev: _Evaluator, node: Aggregate, param: Internal | None, vec: InstantVector) -> InstantVector:
    op = node.op
    hists = [s for s in vec if s.h is not None]
    if not hists:
        return float_aggregate.evaluate(node, param, vec)
    floats = InstantVector(s for s in vec if s.h is None)
    if op in _IGNORING:
        ev.annotate("info", IGNORED_AGG.format(op=op), op, -1)
        return float_aggregate.evaluate(node, param, floats)
    if op in ("count", "group", "limitk", "limit_ratio"):
        as_floats = InstantVector(Sample(s.metric, 0.0, s.drop) if s.h is not None else s for s in vec)
        result = float_aggregate.evaluate(node, param, as_floats)
        if op in ("limitk", "limit_ratio"):
            back = {id(s.metric): s for s in hists}
            return InstantVector(back.get(id(s.metric), s) if s.value == 0.0 else s for s in result)
        return result
    if op == "count_values":
        as_text = InstantVector(s for s in floats)
        result = float_aggregate.evaluate(node, param, as_text)
        return InstantVector(list(result) + list(_count_histograms(node, param, hists)))
    # sum, avg
    key_of, labels_of = float_aggregate._group_fn(node)
    groups: dict[object, list[Sample]] = {}
    for s in vec:
        groups.setdefault(key_of(s.metric), []).append(s)
    out = InstantVector()
    for members in groups.values():
        hs = [s for s in members if s.h is not None]
        drop = any(s.drop for s in members)
        if not hs:
            out.extend(float_aggregate.evaluate(node, param, InstantVector(members)))
            continue
        if len(hs) != len(members):
            ev.annotate("warn", MIXED_AGG, op, -1)
            continue
        total = hs[0].h
        assert total is not None
        total = total.copy()
        try:
            for s in hs[1:]:
                assert s.h is not None
                total, reconciled = total.add(s.h)
                if reconciled:
                    ev.annotate("info", RECONCILED.format(op="aggregation"), op, -1)
        except IncompatibleSchemas:
            ev.annotate("warn", MIXED_SCHEMAS.format(name=hs[0].metric.get("__name__", "")), op, -1)
            continue
        if op == "avg":
            total.div(float(len(hs)))
        out.append(Sample(labels_of(members[0].metric), 0.0, drop, None, total.compact()))
    return out


def _count_histograms(node: Aggregate, param: Internal | None, hists: list[Sample]) -> InstantVector:
    label = str(param)
    key_of, labels_of = float_aggregate._group_fn(node)
    counts: dict[tuple[object, str], tuple[dict[str, str], int]] = {}
    for s in hists:
        assert s.h is not None
        text = histogram_text(s.h)
        k = (key_of(s.metric), text)
        have = counts.get(k)
        if have is None:
            m = labels_of(s.metric)
            m = dict(m)
            m[label] = text
            counts[k] = (m, 1)
        else:
            counts[k] = (have[0], have[1] + 1)
    return InstantVector(Sample(m, float(n)) for m, n in counts.values())


def go_g(v: float) -> str:
    """Go's %g (shortest representation) of a float."""
    if v != v:
        return "NaN"
    if v in (float("inf"), float("-inf")):
        return "+Inf" if v > 0 else "-Inf"
    if v == 0:
        return "-0" if str(v).startswith("-") else "0"
    d = Decimal(repr(v))
    sign, digits, exp = d.as_tuple()
    assert isinstance(exp, int)
    ds = "".join(map(str, digits)).rstrip("0") or "0"
    point = len(digits) + exp  # position of the decimal point relative to the digits
    x = point - 1
    s = "-" if sign else ""
    if x < -4 or x >= 6:
        mant = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
        return f"{s}{mant}e{'+' if x >= 0 else '-'}{abs(x):02d}"
    if point <= 0:
        return s + "0." + "0" * (-point) + ds
    if point >= len(ds):
        return s + ds + "0" * (point - len(ds))
    return s + ds[:point] + "." + ds[point:]


def histogram_text(h: FloatHistogram) -> str:
    """Prometheus's FloatHistogram.String()."""
    parts = [f"{{count:{go_g(h.count)}, sum:{go_g(h.sum)}"]
    for lower, upper, count in h.buckets():
        if count == 0:
            continue
        if h.is_custom or lower >= 0 and not (lower == -h.zero_threshold and upper == h.zero_threshold):
            left, right = "(", "]"
        elif lower == -h.zero_threshold and upper == h.zero_threshold:
            left, right = "[", "]"
        else:
            left, right = "[", ")"
        if lower == float("-inf"):
            left = "["
        if upper == float("inf"):
            right = "]"
        parts.append(f"{left}{go_g(lower)},{go_g(upper)}{right}:{go_g(count)}")
    return ", ".join(parts) + "}"
