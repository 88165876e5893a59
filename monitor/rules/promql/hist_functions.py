"""PromQL functions when native histogram samples exist (see `hist_ops`).

Semantics from Prometheus's `promql/functions.go`: `rate`/`increase`/`delta` extrapolate a
histogram difference as they do a float one (counter resets found by `detect_reset`, a series
mixing floats and histograms in the window dropped with a warning), `irate`/`idelta` take the
last two, `sum_over_time`/`avg_over_time` add histograms, `last_over_time`/`first_over_time`
return them, `changes`/`resets`/`count_over_time` count them, and the `histogram_*` functions
read them (classic `le` buckets still work beside them; one series name with both is dropped
with a warning). Every other function reads floats only: histogram samples are left out (with an
info where a range mixes both).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from monitor.rules.promql import functions
from monitor.rules.promql.functions import RANGE_FUNCS
from monitor.rules.promql.hist_ops import MIXED_SCHEMAS, RECONCILED
from monitor.rules.promql.histogram import (
    GAUGE,
    FloatHistogram,
    IncompatibleSchemas,
)
from monitor.rules.promql.histogram import fraction as h_fraction
from monitor.rules.promql.histogram import quantile as h_quantile
from monitor.rules.promql.histogram import variance as h_variance
from monitor.rules.promql.parse import Call, MatrixSel, Node, Subquery
from monitor.rules.promql.values import InstantVector, Internal, RangeSeries, RangeVector, Sample

if TYPE_CHECKING:
    from monitor.rules.promql.engine import _Evaluator

MIXED_RANGE = 'encountered a mix of histograms and floats for metric name "{name}"'
IGNORED_RANGE = 'ignored histograms in a range containing both floats and histograms for metric name "{name}"'
NOT_COUNTER = 'this native histogram metric is not a counter: "{name}"'
NOT_GAUGE = 'this native histogram metric is not a gauge: "{name}"'
MIXED_CLASSIC = 'vector contains a mix of classic and native histograms for metric name "{name}"'

# range functions that read histogram points; the others read the floats of a range only
_HIST_RANGE = frozenset(
    (
        "rate",
        "increase",
        "delta",
        "irate",
        "idelta",
        "sum_over_time",
        "avg_over_time",
        "last_over_time",
        "first_over_time",
        "count_over_time",
        "present_over_time",
        "changes",
        "resets",
        "ts_of_last_over_time",
        "ts_of_first_over_time",
        "absent_over_time",
    )
)
_HIST_READERS = frozenset(("histogram_count", "histogram_sum", "histogram_avg", "histogram_stddev", "histogram_stdvar"))
# instant functions that pass histogram samples through unchanged
_PASS = frozenset(("label_replace", "label_join", "sort_by_label", "sort_by_label_desc", "timestamp", "absent"))


class _Given:
    """The evaluator, with some argument values already computed (filtered)."""

    def __init__(self, ev: _Evaluator, values: dict[int, Internal]) -> None:
        self._ev = ev
        self._values = values

    def eval(self, node: Node, t: int) -> Internal:
        found = self._values.get(id(node))
        return found if found is not None else self._ev.eval(node, t)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ev, name)


def _floats_only(v: Internal) -> Internal:
    if isinstance(v, InstantVector) and any(s.h is not None for s in v):
        return InstantVector(s for s in v if s.h is None)
    return v


def call(ev: _Evaluator, node: Call, t: int) -> Internal:
    name = node.func
    if name in RANGE_FUNCS:
        return _range_call(ev, node, t)
    if name in _PASS or not node.args:
        return functions.call(ev, node, t)
    if name in _HIST_READERS:
        vec = ev.eval(node.args[0], t)
        assert isinstance(vec, InstantVector)
        return _readers(name, vec)
    if name in ("histogram_quantile", "histogram_quantiles", "histogram_fraction"):
        return _quantile_like(ev, node, t)
    values = {id(a): _floats_only(ev.eval(a, t)) for a in node.args}
    return functions.call(_Given(ev, values), node, t)  # type: ignore[arg-type]


def _readers(name: str, vec: InstantVector) -> InstantVector:
    out = InstantVector()
    for s in vec:
        h = s.h
        if h is None:
            continue
        if name == "histogram_count":
            value = h.count
        elif name == "histogram_sum":
            value = h.sum
        elif name == "histogram_avg":
            value = h.sum / h.count if h.count else math.nan
        elif name == "histogram_stdvar":
            value = h_variance(h)
        else:
            value = math.sqrt(h_variance(h))
        out.append(Sample(s.metric, value, True))
    return out


def _quantile_like(ev: _Evaluator, node: Call, t: int) -> Internal:
    name = node.func
    arg = {"histogram_quantile": 1, "histogram_quantiles": 0, "histogram_fraction": 2}[name]
    vec = ev.eval(node.args[arg], t)
    assert isinstance(vec, InstantVector)
    hists = [s for s in vec if s.h is not None]
    floats = InstantVector(s for s in vec if s.h is None)
    # a series name with both classic buckets and native histograms: neither is used
    classic_keys = {_without_le(s.metric) for s in floats if "le" in s.metric}
    mixed = {_without_le(s.metric) for s in hists} & classic_keys
    if mixed:
        for s in hists:
            if _without_le(s.metric) in mixed:
                ev.annotate("warn", MIXED_CLASSIC.format(name=s.metric.get("__name__", "")), name, arg)
        floats = InstantVector(s for s in floats if _without_le(s.metric) not in mixed)
        hists = [s for s in hists if _without_le(s.metric) not in mixed]
    out = functions.call(_Given(ev, {id(node.args[arg]): floats}), node, t)  # type: ignore[arg-type]
    assert isinstance(out, InstantVector)
    if not hists:
        return out
    params = [ev.eval(a, t) for i, a in enumerate(node.args) if i != arg]
    for s in hists:
        h = s.h
        assert h is not None
        if name == "histogram_quantile":
            q = params[0]
            assert isinstance(q, float)
            out.append(Sample(s.metric, h_quantile(q, h), True))
        elif name == "histogram_fraction":
            lo, hi = params[0], params[1]
            assert isinstance(lo, float) and isinstance(hi, float)
            out.append(Sample(s.metric, h_fraction(lo, hi, h), True))
        else:
            label = str(params[0])
            for q in params[1:]:
                assert isinstance(q, float)
                m = dict(s.metric)
                m[label] = functions._quantile_label(q)
                out.append(Sample(m, h_quantile(q, h), True))
    return out


def _without_le(m: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in m.items() if k != "le"))


# ---- range functions ---------------------------------------------------------------------------
def _range_call(ev: _Evaluator, node: Call, t: int) -> Internal:
    name = node.func
    idx = next(i for i, a in enumerate(node.args) if isinstance(a, (MatrixSel, Subquery)))
    arg = node.args[idx]
    rv = ev.eval(arg, t)
    assert isinstance(rv, RangeVector)
    with_h = [rs for rs in rv if rs.hs]
    if not with_h or name == "absent_over_time":
        return functions.call(_Given(ev, {id(arg): rv}), node, t)  # type: ignore[arg-type]
    if name not in _HIST_RANGE:
        for rs in with_h:
            if len(rs):
                ev.annotate("info", IGNORED_RANGE.format(name=rs.metric.get("__name__", "")), name, idx)
        return functions.call(_Given(ev, {id(arg): rv}), node, t)  # type: ignore[arg-type]
    plain = RangeVector(rs for rs in rv if not rs.hs)
    out = functions.call(_Given(ev, {id(arg): plain}), node, t)  # type: ignore[arg-type]
    assert isinstance(out, InstantVector)
    lo, hi = ev.range_bounds(arg, t)
    keep_name = name in ("last_over_time", "first_over_time")
    for rs in with_h:
        r = _hist_range(ev, name, idx, rs, lo, hi)
        if r is None:
            continue
        value, h = r
        out.append(Sample(rs.metric, value, rs.drop or not keep_name, None, h))
    return out


def _points(rs: RangeSeries) -> list[tuple[int, float | FloatHistogram]]:
    pts: list[tuple[int, float | FloatHistogram]] = list(zip(rs.times(), rs.values(), strict=True))
    pts.extend(rs.hs or ())
    pts.sort(key=lambda p: p[0])
    return pts


def _hist_range(
    ev: _Evaluator, name: str, idx: int, rs: RangeSeries, lo: int, hi: int
) -> tuple[float, FloatHistogram | None] | None:
    metric_name = rs.metric.get("__name__", "")
    hs = rs.hs or []
    mixed = len(rs) > 0
    if name in ("count_over_time", "present_over_time"):
        return (float(len(rs) + len(hs)) if name == "count_over_time" else 1.0), None
    if name in ("last_over_time", "first_over_time", "ts_of_last_over_time", "ts_of_first_over_time"):
        pts = _points(rs)
        tv = pts[-1] if "last" in name else pts[0]
        if name.startswith("ts_of_"):
            return tv[0] / 1000.0, None
        return (tv[1], None) if isinstance(tv[1], float) else (0.0, tv[1])
    if name in ("changes", "resets"):
        pts = _points(rs)
        n = 0
        for (_, a), (_, b) in zip(pts, pts[1:], strict=False):
            if isinstance(a, float) and isinstance(b, float):
                if name == "changes":
                    n += a != b and not (math.isnan(a) and math.isnan(b))
                else:
                    n += b < a
            elif isinstance(a, FloatHistogram) and isinstance(b, FloatHistogram):
                if name == "changes":
                    n += not b.equals(a)
                else:
                    n += b.detect_reset(a)
            else:
                n += 1
        return float(n), None
    if name in ("irate", "idelta"):
        return _instant(ev, name, idx, _points(rs)[-2:], metric_name)
    if mixed:
        ev.annotate("warn", MIXED_RANGE.format(name=metric_name), name, idx)
        return None
    if name in ("sum_over_time", "avg_over_time"):
        total = hs[0][1].copy()
        try:
            for _, h in hs[1:]:
                total, reconciled = total.add(h)
                if reconciled:
                    ev.annotate("info", RECONCILED.format(op="aggregation"), name, idx)
        except IncompatibleSchemas:
            ev.annotate("warn", MIXED_SCHEMAS.format(name=metric_name), name, idx)
            return None
        if name == "avg_over_time":
            total.div(float(len(hs)))
        return 0.0, total.compact()
    return _extrapolated(ev, name, idx, hs, lo, hi, metric_name)


def _instant(
    ev: _Evaluator, name: str, idx: int, pts: list[tuple[int, float | FloatHistogram]], metric_name: str
) -> tuple[float, FloatHistogram | None] | None:
    """irate/idelta from the last two points of a range."""
    if len(pts) < 2:
        return None
    (t0, a), (t1, b) = pts
    is_rate = name == "irate"
    if isinstance(a, float) and isinstance(b, float):
        value = b if is_rate and b < a else b - a
        if t1 == t0:
            return None
        return (value / ((t1 - t0) / 1000.0) if is_rate else value), None
    if not isinstance(a, FloatHistogram) or not isinstance(b, FloatHistogram):
        ev.annotate("warn", MIXED_RANGE.format(name=metric_name), name, idx)
        return None
    prev, last = a, b
    if is_rate and (prev.hint == GAUGE or last.hint == GAUGE):
        ev.annotate("warn", NOT_COUNTER.format(name=metric_name), name, idx)
    if not is_rate and (prev.hint != GAUGE or last.hint != GAUGE):
        ev.annotate("warn", NOT_GAUGE.format(name=metric_name), name, idx)
    if is_rate and last.detect_reset(prev):
        result = last.copy()
    else:
        try:
            result, reconciled = last.sub(prev)
        except IncompatibleSchemas:
            ev.annotate("warn", MIXED_SCHEMAS.format(name=metric_name), name, idx)
            return None
        if reconciled:
            ev.annotate("info", RECONCILED.format(op="subtraction"), name, idx)
    result.hint = GAUGE
    result.compact()
    if is_rate:
        interval = t1 - t0
        if interval == 0:
            return None
        result.div(interval / 1000.0)
    return 0.0, result


def _extrapolated(
    ev: _Evaluator, name: str, idx: int, hs: list[tuple[int, FloatHistogram]], lo: int, hi: int, metric_name: str
) -> tuple[float, FloatHistogram | None] | None:
    if len(hs) < 2:
        return None
    counter = name in ("rate", "increase")
    first, last = hs[0][1], hs[-1][1]
    if first.is_custom != last.is_custom or any(h.is_custom != first.is_custom for _, h in hs):
        ev.annotate("warn", MIXED_SCHEMAS.format(name=metric_name), name, idx)
        return None
    if counter and any(h.hint == GAUGE for _, h in hs):
        ev.annotate("warn", NOT_COUNTER.format(name=metric_name), name, idx)
    min_schema = min(h.schema for _, h in hs)
    result = last.reduced(min_schema) if not last.is_custom else last.copy()
    reconciled = False
    try:
        result, r = result.sub(first)
        reconciled |= r
        if counter:
            prev = first
            for _, cur in hs[1:]:
                if cur.detect_reset(prev):
                    result, r = result.add(prev)
                    reconciled |= r
                prev = cur
    except IncompatibleSchemas:
        ev.annotate("warn", MIXED_SCHEMAS.format(name=metric_name), name, idx)
        return None
    if reconciled:
        ev.annotate("info", RECONCILED.format(op="subtraction"), name, idx)
    if not counter and (first.hint != GAUGE or last.hint != GAUGE):
        ev.annotate("warn", NOT_GAUGE.format(name=metric_name), name, idx)
    result.hint = GAUGE
    result.compact()
    first_t, last_t = hs[0][0], hs[-1][0]
    to_start = (first_t - lo) / 1000.0
    to_end = (hi - last_t) / 1000.0
    sampled = (last_t - first_t) / 1000.0
    avg_step = sampled / (len(hs) - 1)
    threshold = avg_step * 1.1
    if to_start >= threshold:
        to_start = avg_step / 2
    if counter and result.count > 0 and first.count >= 0:
        to_zero = sampled * (first.count / result.count)
        if to_zero < to_start:
            to_start = to_zero
    if to_end >= threshold:
        to_end = avg_step / 2
    factor = (sampled + to_start + to_end) / sampled
    if name == "rate":
        factor /= (hi - lo) / 1000.0
    return 0.0, result.mul(factor)
