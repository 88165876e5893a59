"""PromQL functions over instant vectors, range vectors and scalars.

Semantics from Prometheus's `promql/functions.go` and `promql/quantile.go`: `rate`/`increase`/
`delta` extrapolate to the window's edges (not past half a sample interval, not below zero for
counters), `irate`/`idelta` use the last two samples, `deriv`/`predict_linear` are a least
squares fit with Kahan sums, `histogram_quantile`/`histogram_fraction` interpolate within
classic `le` buckets. Every function but `last_over_time`, `first_over_time`, the `sort*` and
`label_*` ones marks the metric name for removal.
"""

from __future__ import annotations

import bisect
import calendar
import math
import operator
import re
from array import array
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from monitor.history import compile_regex
from monitor.rules.promql.aggregate import fast_avg, fast_sum, kahan_inc, quantile
from monitor.rules.promql.annotations import BAD_BUCKET_LABEL, MONOTONICITY, NOT_A_COUNTER, invalid_quantile
from monitor.rules.promql.binary import fmod
from monitor.rules.promql.parse import Call, MatrixSel, Node, StringLit, Subquery, VectorSel
from monitor.rules.promql.values import EvalError, InstantVector, Internal, RangeSeries, RangeVector, Sample

if TYPE_CHECKING:
    from monitor.rules.promql.engine import _Evaluator


# ---- small float helpers that behave as Go's math package ----------------------------------
def _safe(fn: Callable[[float], float]) -> Callable[[float], float]:
    def wrapped(x: float) -> float:
        try:
            return fn(x)
        except OverflowError:
            return math.inf
        except ValueError:
            return math.nan

    return wrapped


def _ln(x: float) -> float:
    if x == 0:
        return -math.inf
    if x < 0 or math.isnan(x):
        return math.nan
    return math.log(x)


def _log2(x: float) -> float:
    if x == 0:
        return -math.inf
    if x < 0 or math.isnan(x):
        return math.nan
    return math.log2(x)


def _log10(x: float) -> float:
    if x == 0:
        return -math.inf
    if x < 0 or math.isnan(x):
        return math.nan
    return math.log10(x)


def _sqrt(x: float) -> float:
    if x < 0:
        return math.nan
    return math.sqrt(x)


def _sgn(x: float) -> float:
    if x > 0:
        return 1.0
    if x < 0:
        return -1.0
    return x  # 0 or NaN


def _atanh(x: float) -> float:
    if x == 1:
        return math.inf
    if x == -1:
        return -math.inf
    if abs(x) > 1:
        return math.nan
    return math.atanh(x)


def _acosh(x: float) -> float:
    if x < 1:
        return math.nan
    return math.acosh(x)


def _trig(fn: Callable[[float], float]) -> Callable[[float], float]:
    def wrapped(x: float) -> float:
        if math.isinf(x):
            return math.nan
        return _safe(fn)(x)

    return wrapped


def _ceil(x: float) -> float:
    return x if math.isnan(x) or math.isinf(x) else float(math.ceil(x))


def _floor(x: float) -> float:
    return x if math.isnan(x) or math.isinf(x) else float(math.floor(x))


def go_max(a: float, b: float) -> float:
    if math.isinf(a) and a > 0 or math.isinf(b) and b > 0:
        return math.inf
    if math.isnan(a) or math.isnan(b):
        return math.nan
    return a if a > b else b


def go_min(a: float, b: float) -> float:
    if math.isinf(a) and a < 0 or math.isinf(b) and b < 0:
        return -math.inf
    if math.isnan(a) or math.isnan(b):
        return math.nan
    return a if a < b else b


SIMPLE: dict[str, Callable[[float], float]] = {
    "abs": abs,
    "ceil": _ceil,
    "floor": _floor,
    "exp": _safe(math.exp),
    "sqrt": _sqrt,
    "ln": _ln,
    "log2": _log2,
    "log10": _log10,
    "sgn": _sgn,
    "acos": _safe(math.acos),
    "acosh": _acosh,
    "asin": _safe(math.asin),
    "asinh": _safe(math.asinh),
    "atan": _safe(math.atan),
    "atanh": _atanh,
    "cos": _trig(math.cos),
    "cosh": _safe(math.cosh),
    "sin": _trig(math.sin),
    "sinh": _safe(math.sinh),
    "tan": _trig(math.tan),
    "tanh": _safe(math.tanh),
    "deg": lambda x: x * 180 / math.pi,
    "rad": lambda x: x * math.pi / 180,
}


# ---- range-vector functions -----------------------------------------------------------------
def _extrapolated(rs: RangeSeries, lo: int, hi: int, range_ms: int, counter: bool, is_rate: bool) -> float | None:
    n = len(rs)
    if n < 2:
        return None
    hs = rs._series
    if hs is not None:
        i, j = rs._i, rs._j - 1
        first_t = hs.ts[i] + hs.base
        last_t = hs.ts[j] + hs.base
        first_v = hs.vs[i]
        result = hs.vs[j] - first_v
    else:
        first_t = rs.t_at(0)
        last_t = rs.t_at(-1)
        first_v = rs.v_at(0)
        result = rs.v_at(-1) - first_v
    if counter:
        _, correction = rs.resets()
        result += correction
    to_start = (first_t - lo) / 1000.0
    to_end = (hi - last_t) / 1000.0
    sampled = (last_t - first_t) / 1000.0
    avg_step = sampled / (n - 1)
    threshold = avg_step * 1.1
    if to_start >= threshold:
        to_start = avg_step / 2
    if counter:
        to_zero = to_start
        if result > 0 and first_v >= 0:
            to_zero = sampled * (first_v / result)
        if to_zero < to_start:
            to_start = to_zero
    if to_end >= threshold:
        to_end = avg_step / 2
    factor = (sampled + to_start + to_end) / sampled
    if is_rate:
        factor /= range_ms / 1000.0
    return result * factor


def _instant_value(rs: RangeSeries, is_rate: bool) -> float | None:
    n = len(rs)
    if n < 2:
        return None
    last_t, last_v = rs.t_at(-1), rs.v_at(-1)
    prev_t, prev_v = rs.t_at(-2), rs.v_at(-2)
    if is_rate and last_v < prev_v:
        result = last_v
    else:
        result = last_v - prev_v
    interval = last_t - prev_t
    if interval == 0:
        return None
    if is_rate:
        result /= interval / 1000.0
    return result


def linear_regression(times: Sequence[int], values: Sequence[float], intercept_t: int) -> tuple[float, float]:
    n = 0.0
    sum_x = c_x = sum_y = c_y = sum_xy = c_xy = sum_x2 = c_x2 = 0.0
    init_y = values[0]
    const_y = True
    for i, (t, y) in enumerate(zip(times, values, strict=True)):
        if const_y and i > 0 and y != init_y:
            const_y = False
        n += 1.0
        x = (t - intercept_t) / 1e3
        sum_x, c_x = kahan_inc(x, sum_x, c_x)
        sum_y, c_y = kahan_inc(y, sum_y, c_y)
        sum_xy, c_xy = kahan_inc(x * y, sum_xy, c_xy)
        sum_x2, c_x2 = kahan_inc(x * x, sum_x2, c_x2)
    if const_y:
        if math.isinf(init_y):
            return math.nan, math.nan
        return 0.0, init_y
    sum_x += c_x
    sum_y += c_y
    sum_xy += c_xy
    sum_x2 += c_x2
    cov_xy = sum_xy - sum_x * sum_y / n
    var_x = sum_x2 - sum_x * sum_x / n
    try:
        slope = cov_xy / var_x
    except ZeroDivisionError:
        slope = math.nan if cov_xy == 0 else math.copysign(math.inf, cov_xy)
    intercept = sum_y / n - slope * sum_x / n
    return slope, intercept


def fast_regression(
    rs: RangeSeries, intercept_t: int, window: int | None = None, generation: int = 0
) -> tuple[float, float]:
    """Slope (per second) and the fitted value at `intercept_t`, by exact integer sums over the
    stored timestamps and fsum over the values; non-finite values take Prometheus's loop.

    The timestamps' sums are looked up by the stored offsets' bytes: the series of one check
    run share their times, so a window's sums are computed once for all of them. With `window`
    (the range, ms) a history series keeps its window's exact sums between evaluations
    (`_slide`): the next one adds the samples that came in and takes out those that left."""
    vs = rs.values()
    n = len(vs)
    sums = _slide(rs, window, generation) if window is not None else None
    if sums is not None:
        sum_y, sum_xy, sum_x, sum_x2 = sums
    else:
        try:
            sum_y = math.fsum(vs)
        except (OverflowError, ValueError):
            sum_y = math.nan
    if not math.isfinite(sum_y):
        return linear_regression(rs.times(), vs, intercept_t)
    y0 = vs[0]
    if _constant(vs, y0):
        return 0.0, y0
    ts, base = rs.raw_times()
    if sums is None:
        if isinstance(ts, array):
            sum_x, sum_x2 = _time_sums(ts.typecode, ts.tobytes())
        else:
            sum_x, sum_x2 = sum(ts), sum(map(operator.mul, ts, ts))
        try:
            sum_xy = math.fsum(map(operator.mul, ts, vs))
        except (OverflowError, ValueError):
            sum_xy = math.nan
    var_x = (n * sum_x2 - sum_x * sum_x) / n
    cov_xy = sum_xy - sum_x * sum_y / n
    slope_ms = cov_xy / var_x
    intercept = sum_y / n - slope_ms * (sum_x / n - (intercept_t - base))
    if not (math.isfinite(slope_ms) and math.isfinite(intercept)):  # an intermediate overflowed
        return linear_regression(rs.times(), vs, intercept_t)
    return slope_ms * 1000.0, intercept


# A window's exact sums kept on its history series: (history generation, base, first and last
# stored offset, count, Σt, Σt², Σy and Σty as lists of floats whose exact sum is the sum).
_Sums = tuple[int, int, int, int, int, int, int, list[float], list[float]]
_MAX_PARTS = 48  # a kept sum is re-expressed in a few floats when its list grows past this


def _slide(rs: RangeSeries, window: int, generation: int) -> tuple[float, float, int, int] | None:
    """Σy, Σty, Σt, Σt² of `rs` (t: stored offsets), from the sums its series kept for the same
    window length at the last evaluation when the samples since are only appended ones (no
    write into the past: `generation`; the same base; the kept window's first and last sample
    still where they were). Exactly fsum's answers: the kept sums are exact. None: not a
    history series, or a sum is not finite (the caller's fsum and Prometheus's loop decide)."""
    hs = rs._series
    if hs is None:
        return None
    i, j = rs._i, rs._j
    ts, vs = hs.ts, hs.vs
    memo = hs.memo
    kept = memo.get(window) if memo is not None else None
    state: _Sums | None = None
    if kept is not None and kept[0] == generation and kept[1] == hs.base:
        _, _, first, last, n, sx, sx2, py, pxy = kept
        a = bisect.bisect_left(ts, first)
        b = a + n  # the kept window is [a, b)
        if a <= i and b <= j and i <= b and a < len(ts) and ts[a] == first and ts[b - 1] == last:
            gone, new = range(a, i), range(b, j)
            if len(gone) + len(new) < n // 2:
                py = [*py, *(-vs[k] for k in gone), *(vs[k] for k in new)]
                pxy = [*pxy, *(-(ts[k] * vs[k]) for k in gone), *(ts[k] * vs[k] for k in new)]
                sx += sum(ts[k] for k in new) - sum(ts[k] for k in gone)
                sx2 += sum(ts[k] * ts[k] for k in new) - sum(ts[k] * ts[k] for k in gone)
                if len(py) > _MAX_PARTS:
                    py = _exact(py)
                    pxy = _exact(pxy)
                state = (generation, hs.base, ts[i], ts[j - 1], j - i, sx, sx2, py, pxy)
    if state is None:
        w_ts, w_vs = ts[i:j], vs[i:j]
        sx, sx2 = _time_sums(w_ts.typecode, w_ts.tobytes())
        py = _exact(list(w_vs))
        pxy = _exact(list(map(operator.mul, w_ts, w_vs)))
        state = (generation, hs.base, ts[i], ts[j - 1], j - i, sx, sx2, py, pxy)
    try:
        sum_y, sum_xy = math.fsum(state[7]), math.fsum(state[8])
    except (OverflowError, ValueError):
        return None
    if not (math.isfinite(sum_y) and math.isfinite(sum_xy)):
        return None
    if memo is None:
        hs.memo = memo = {}
    elif len(memo) >= 8 and window not in memo:
        memo.clear()  # ad-hoc queries with many ranges: keep only what the rules use again
    memo[window] = state
    return sum_y, sum_xy, state[5], state[6]


def _exact(parts: list[float]) -> list[float]:
    """A few floats whose exact sum is that of `parts` (each the rounded rest of the ones
    before it; fsum is 0 only for an exact 0). Non-finite: the parts as they are."""
    out: list[float] = []
    rest = list(parts)
    for _ in range(40):  # each round takes 53 more bits; sums of doubles end within 40
        try:
            top = math.fsum(rest)
        except (OverflowError, ValueError):
            return parts
        if top == 0.0:
            return out
        if not math.isfinite(top):
            return parts
        out.append(top)
        rest.append(-top)
    return parts


def _constant(vs: Sequence[float], y0: float) -> bool:
    """Every value equals the first (finite values): a byte comparison, or `count` for ±0."""
    if isinstance(vs, array):
        if vs.tobytes() == vs[:1].tobytes() * len(vs):
            return True
        if y0 != 0.0:
            return False  # another bit pattern of a nonzero finite float is another number
    return vs.count(y0) == len(vs)


@lru_cache(maxsize=1024)
def _time_sums(typecode: str, raw: bytes) -> tuple[int, int]:
    """Σt and Σt² of stored timestamp offsets (exact integers)."""
    ts = array(typecode)
    ts.frombytes(raw)
    return sum(ts), sum(map(operator.mul, ts, ts))


def _variance(values: Sequence[float]) -> float:
    try:
        total = math.fsum(values)
    except (OverflowError, ValueError):
        total = math.nan
    if math.isfinite(total):
        n = len(values)
        if values.count(values[0]) == n:
            return 0.0
        mean = total / n
        dev = [v - mean for v in values]
        return math.fsum(map(operator.mul, dev, dev)) / n
    return _variance_loop(values)


def _variance_loop(values: Sequence[float]) -> float:
    count = 0.0
    mean = c_mean = 0.0
    aux = c_aux = 0.0
    for f in values:
        count += 1
        delta = f - (mean + c_mean)
        mean, c_mean = kahan_inc(delta / count, mean, c_mean)
        aux, c_aux = kahan_inc(delta * (f - (mean + c_mean)), aux, c_aux)
    return (aux + c_aux) / count


def _max(values: Sequence[float]) -> float:
    if not any(map(math.isnan, values)):
        return max(values)
    best = values[0]
    for v in values:
        if v > best or math.isnan(best):
            best = v
    return best


def _min(values: Sequence[float]) -> float:
    if not any(map(math.isnan, values)):
        return min(values)
    best = values[0]
    for v in values:
        if v < best or math.isnan(best):
            best = v
    return best


def _changes(values: Sequence[float]) -> float:
    if not any(map(math.isnan, values)):
        return float(sum(map(operator.ne, values[1:], values[:-1])))
    n = 0
    prev = values[0]
    for cur in values[1:]:
        if not (cur == prev or (math.isnan(cur) and math.isnan(prev))):
            n += 1
        prev = cur
    return float(n)


def fast_changes(rs: RangeSeries, window: int, generation: int) -> float:
    """changes() of `rs`. A history series keeps its window's count between evaluations (on its
    `memo`, under the key -window: `_slide` keeps a regression's sums under +window), so the
    next one counts only the neighbours that came in and those that left: a rule reading
    `changes(x[1d])` every 10 s compares a few pairs, not 8,640."""
    hs = rs._series
    if hs is None:
        return _changes(rs.values())
    i, j = rs._i, rs._j
    ts, vs = hs.ts, hs.vs
    memo = hs.memo
    kept = memo.get(-window) if memo is not None else None
    count = None
    if kept is not None and kept[0] == generation and kept[1] == hs.base:
        _, _, first, last, n, old = kept
        a = bisect.bisect_left(ts, first)
        b = a + n  # the kept window is [a, b): its pairs are those of [a, i + 1) and [i, b)
        if a <= i < b <= j and ts[a] == first and ts[b - 1] == last:
            count = old - _neighbours_changed(vs, a, i + 1) + _neighbours_changed(vs, b - 1, j)
    if count is None:
        count = _neighbours_changed(vs, i, j)
    if memo is None:
        hs.memo = memo = {}
    elif len(memo) >= 8 and -window not in memo:
        memo.clear()
    memo[-window] = (generation, hs.base, ts[i], ts[j - 1], j - i, count)
    return float(count)


def _neighbours_changed(vs: Sequence[float], lo: int, hi: int) -> int:
    """How many of vs[lo:hi]'s neighbouring pairs differ (changes() of the slice)."""
    return int(_changes(vs[lo:hi])) if hi - lo >= 2 else 0


def _resets(rs: RangeSeries) -> float:
    return float(rs.resets()[0])


def _mad(values: Sequence[float]) -> float:
    if any(math.isnan(v) for v in values):
        return math.nan
    med = quantile(0.5, list(values))
    return quantile(0.5, [abs(v - med) for v in values])


def _smoothing(rs: RangeSeries, sf: float, tf: float) -> float | None:
    if not (0 < sf < 1):
        raise EvalError(f"invalid smoothing factor. Expected: 0 < sf < 1, got: {sf}")
    if not (0 < tf < 1):
        raise EvalError(f"invalid trend factor. Expected: 0 < tf < 1, got: {tf}")
    vs = rs.values()
    if len(vs) < 2:
        return None
    s1 = vs[0]
    b = vs[1] - vs[0]
    s0 = s1
    for i in range(1, len(vs)):
        x = sf * vs[i]
        if i > 1:
            b = tf * (s1 - s0) + (1 - tf) * b
        y = (1 - sf) * (s1 + b)
        s0, s1 = s1, x + y
    return s1


# ---- histograms (classic buckets) -----------------------------------------------------------
def _coalesce(buckets: list[list[float]]) -> list[list[float]]:
    out: list[list[float]] = []
    for b in buckets:
        if out and out[-1][0] == b[0]:
            out[-1][1] += b[1]
        else:
            out.append([b[0], b[1]])
    return out


def _almost_equal(a: float, b: float, eps: float) -> bool:
    if math.isnan(a) and math.isnan(b):
        return True
    if a == b:
        return True
    abs_sum = abs(a) + abs(b)
    diff = abs(a - b)
    min_normal = 2.2250738585072014e-308
    if a == 0 or b == 0 or abs_sum < min_normal:
        return diff < eps * min_normal
    return diff / min(abs_sum, 1.7976931348623157e308) < eps


def bucket_quantile(q: float, buckets: list[list[float]]) -> tuple[float, bool]:
    """The quantile, and whether the bucket counts had to be forced to be monotonic."""
    if math.isnan(q):
        return math.nan, False
    if q < 0:
        return -math.inf, False
    if q > 1:
        return math.inf, False
    buckets = sorted(buckets, key=lambda b: b[0])
    if not math.isinf(buckets[-1][0]) or buckets[-1][0] < 0:
        return math.nan, False
    buckets = _coalesce(buckets)
    forced = False
    prev = buckets[0][1]
    for i in range(1, len(buckets)):
        cur = buckets[i][1]
        if cur == prev:
            continue
        if _almost_equal(prev, cur, 1e-12):
            buckets[i][1] = prev
            continue
        if cur < prev:
            buckets[i][1] = prev
            forced = True
            continue
        prev = cur
    if len(buckets) < 2:
        return math.nan, forced
    observations = buckets[-1][1]
    if observations == 0:
        return math.nan, forced
    rank = q * observations
    b = len(buckets) - 1
    for i in range(len(buckets) - 1):
        if buckets[i][1] >= rank:
            b = i
            break
    if b == len(buckets) - 1:
        return buckets[-2][0], forced
    if b == 0 and buckets[0][0] <= 0:
        return buckets[0][0], forced
    start = 0.0
    end = buckets[b][0]
    count = buckets[b][1]
    if b > 0:
        start = buckets[b - 1][0]
        count -= buckets[b - 1][1]
        rank -= buckets[b - 1][1]
    return start + (end - start) * (rank / count), forced


def bucket_fraction(lower: float, upper: float, buckets: list[list[float]]) -> float:
    buckets = sorted(buckets, key=lambda b: b[0])
    if not math.isinf(buckets[-1][0]) or buckets[-1][0] < 0:
        return math.nan
    buckets = _coalesce(buckets)
    count = buckets[-1][1]
    if count == 0 or math.isnan(lower) or math.isnan(upper):
        return math.nan
    if lower >= upper:
        return 0.0
    rank = lower_rank = upper_rank = 0.0
    lower_set = upper_set = False
    for i, (ub, bc) in enumerate(buckets):
        lb = -math.inf if i == 0 else buckets[i - 1][0]
        if i == 0 and ub > 0:
            lb = 0.0

        def interp(v: float, lower: bool, lb: float = lb, ub: float = ub, bc: float = bc, rank: float = rank) -> float:
            if math.isinf(lb):
                return bc if lower else rank  # the lowest bucket has no width to interpolate in
            if math.isinf(ub):
                return rank  # the +Inf bucket: everything in it counts as above the value
            return rank + (bc - rank) * (v - lb) / (ub - lb)

        if not lower_set and lb >= lower:
            lower_rank = rank
            lower_set = True
        if not upper_set and lb >= upper:
            upper_rank = rank
            upper_set = True
        if lower_set and upper_set:
            break
        if not lower_set and lb < lower < ub:
            lower_rank = interp(lower, True)
            lower_set = True
        if not upper_set and lb < upper < ub:
            upper_rank = interp(upper, False)
            upper_set = True
        if lower_set and upper_set:
            break
        rank = bc
    if not lower_set or lower_rank > count:
        lower_rank = count
    if not upper_set or upper_rank > count:
        upper_rank = count
    return (upper_rank - lower_rank) / count


def _buckets_by_series(
    ev: _Evaluator, vec: InstantVector, func: str, arg: int
) -> dict[tuple[tuple[str, str], ...], tuple[dict[str, str], list[list[float]]]]:
    groups: dict[tuple[tuple[str, str], ...], tuple[dict[str, str], list[list[float]]]] = {}
    for s in vec:
        le = s.metric.get("le", "")
        try:
            bound = _parse_go_float(le)
        except ValueError:
            name = s.metric.get("__name__", "")
            ev.annotate("warn", BAD_BUCKET_LABEL.format(le=le, name=name), func, arg)
            continue
        key = tuple(sorted((k, v) for k, v in s.metric.items() if k != "le"))
        g = groups.get(key)
        if g is None:
            g = ({k: v for k, v in s.metric.items() if k != "le"}, [])
            groups[key] = g
        g[1].append([bound, s.value])
    return groups


# ---- label functions -------------------------------------------------------------------------
_EXPAND = re.compile(r"\$(?:\$|\{([A-Za-z0-9_]+)\}|([A-Za-z0-9_]+))")


def expand(template: str, match: Any) -> str:
    """Go's Regexp.ExpandString: $1, ${1}, $name, ${name}; $$ is a dollar; unknown groups are empty."""

    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(2)
        if name.isdigit():
            idx = int(name)
            if idx <= match.re.groups:
                return match.group(idx) or ""
            return ""
        try:
            return match.group(name) or ""
        except (IndexError, KeyError, ValueError):
            return ""

    return _EXPAND.sub(repl, template)


def _label_replace(vec: InstantVector, dst: str, repl: str, src: str, regex: str) -> InstantVector:
    try:
        rx = compile_regex(regex)
    except Exception as exc:
        raise EvalError(f"invalid regular expression in label_replace(): {regex}") from exc
    if not dst:
        raise EvalError(f'invalid destination label name in label_replace(): "{dst}"')
    out = InstantVector()
    for s in vec:
        m = rx.search(s.metric.get(src, ""))
        if m is None:
            out.append(s)
            continue
        value = expand(repl, m)
        metric = dict(s.metric)
        if value:
            metric[dst] = value
        else:
            metric.pop(dst, None)
        out.append(Sample(metric, s.value, s.drop and dst != "__name__", s.t, s.h))
    return out


def _label_join(vec: InstantVector, dst: str, sep: str, srcs: list[str]) -> InstantVector:
    if not dst:
        raise EvalError(f'invalid destination label name in label_join(): "{dst}"')
    out = InstantVector()
    for s in vec:
        value = sep.join(s.metric.get(src, "") for src in srcs)
        metric = dict(s.metric)
        if value:
            metric[dst] = value
        else:
            metric.pop(dst, None)
        out.append(Sample(metric, s.value, s.drop and dst != "__name__", s.t, s.h))
    return out


def _natural_key(s: str) -> list[tuple[int, int | str]]:
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", s) if part != ""]


# ---- dispatch -------------------------------------------------------------------------------
RANGE_FUNCS = frozenset(
    {
        "rate",
        "increase",
        "delta",
        "irate",
        "idelta",
        "deriv",
        "predict_linear",
        "changes",
        "resets",
        "avg_over_time",
        "sum_over_time",
        "min_over_time",
        "max_over_time",
        "count_over_time",
        "last_over_time",
        "first_over_time",
        "present_over_time",
        "absent_over_time",
        "stddev_over_time",
        "stdvar_over_time",
        "quantile_over_time",
        "mad_over_time",
        "double_exponential_smoothing",
        "holt_winters",
        "ts_of_max_over_time",
        "ts_of_min_over_time",
        "ts_of_last_over_time",
        "ts_of_first_over_time",
    }
)

DATE_FUNCS = frozenset(
    {"day_of_month", "day_of_week", "day_of_year", "days_in_month", "hour", "minute", "month", "year"}
)


def _date(name: str, v: float) -> float | None:
    if math.isnan(v) or math.isinf(v):
        return None
    d = datetime.fromtimestamp(int(v), tz=UTC)
    if name == "day_of_month":
        return float(d.day)
    if name == "day_of_week":
        return float((d.weekday() + 1) % 7)
    if name == "day_of_year":
        return float(d.timetuple().tm_yday)
    if name == "days_in_month":
        return float(calendar.monthrange(d.year, d.month)[1])
    if name == "hour":
        return float(d.hour)
    if name == "minute":
        return float(d.minute)
    if name == "month":
        return float(d.month)
    return float(d.year)


def _absent_labels(node: Node) -> dict[str, str]:
    if isinstance(node, MatrixSel):
        node = node.sel
    if not isinstance(node, VectorSel):
        return {}
    out: dict[str, str] = {}
    has: set[str] = set()
    for m in node.matchers:
        if m.name == "__name__":
            continue
        if m.op == "=" and m.name not in has:
            if m.value:
                out[m.name] = m.value
            else:
                out.pop(m.name, None)
            has.add(m.name)
        else:
            out.pop(m.name, None)
    return out


def _scalar_arg(v: Internal) -> float:
    if isinstance(v, float):
        return v
    raise EvalError("expected a scalar argument")


def _range_call(ev: _Evaluator, node: Call, t: int) -> Internal:
    name = node.func
    idx = next(i for i, a in enumerate(node.args) if isinstance(a, (MatrixSel, Subquery)))
    arg = node.args[idx]
    others = [_scalar_arg(ev.eval(a, t)) for i, a in enumerate(node.args) if i != idx]
    rv = ev.eval(arg, t)
    assert isinstance(rv, RangeVector)
    lo, hi = ev.range_bounds(arg, t)
    rng = hi - lo
    out = InstantVector()
    if name == "absent_over_time":
        if rv:
            return out
        out.append(Sample(_absent_labels(arg), 1.0, False))
        return out
    keep_name = name in ("last_over_time", "first_over_time")
    for rs in rv:
        value: float | None
        n = len(rs)
        if n == 0:
            continue
        if name == "rate":
            value = _extrapolated(rs, lo, hi, rng, True, True)
        elif name == "increase":
            value = _extrapolated(rs, lo, hi, rng, True, False)
        elif name == "delta":
            value = _extrapolated(rs, lo, hi, rng, False, False)
        elif name == "irate":
            value = _instant_value(rs, True)
        elif name == "idelta":
            value = _instant_value(rs, False)
        elif name == "deriv":
            if n < 2:
                continue
            value = fast_regression(rs, rs.t_at(0), rng, ev.history.generation)[0]
        elif name == "predict_linear":
            if n < 2:
                continue
            slope, intercept = fast_regression(rs, t, rng, ev.history.generation)
            value = slope * others[0] + intercept
        elif name == "changes":
            value = fast_changes(rs, rng, ev.history.generation)
        elif name == "resets":
            value = _resets(rs)
        elif name == "avg_over_time":
            value = fast_avg(rs.values())
        elif name == "sum_over_time":
            value = fast_sum(rs.values())
        elif name == "min_over_time":
            value = _min(rs.values())
        elif name == "max_over_time":
            value = _max(rs.values())
        elif name == "count_over_time":
            value = float(n)
        elif name == "last_over_time":
            value = rs.v_at(-1)
        elif name == "first_over_time":
            value = rs.v_at(0)
        elif name == "present_over_time":
            value = 1.0
        elif name == "stddev_over_time":
            value = math.sqrt(_variance(rs.values()))
        elif name == "stdvar_over_time":
            value = _variance(rs.values())
        elif name == "quantile_over_time":
            if not (0 <= others[0] <= 1):
                ev.annotate("warn", invalid_quantile(others[0]), name, 0)
            value = quantile(others[0], list(rs.values()))
        elif name == "mad_over_time":
            value = _mad(rs.values())
        elif name in ("double_exponential_smoothing", "holt_winters"):
            value = _smoothing(rs, others[0], others[1])
        elif name.startswith("ts_of_"):
            value = _ts_of(name, rs)
        else:
            raise EvalError(f"function {name} is not supported")
        if value is None:
            continue
        if name in ("rate", "increase"):
            metric_name = rs.metric.get("__name__", "")
            if metric_name and not metric_name.endswith(("_total", "_sum", "_count", "_bucket")):
                ev.annotate("info", NOT_A_COUNTER.format(name=metric_name), name, 0)
        out.append(Sample(rs.metric, value, rs.drop or not keep_name))
    return out


def _ts_of(name: str, rs: RangeSeries) -> float:
    times = rs.times()
    vs = rs.values()
    if name == "ts_of_last_over_time":
        return times[-1] / 1000.0
    if name == "ts_of_first_over_time":
        return times[0] / 1000.0
    best = 0
    for i, v in enumerate(vs):
        b = vs[best]
        if name == "ts_of_max_over_time":
            if v >= b or math.isnan(b):
                best = i
        elif v <= b or math.isnan(b):
            best = i
    return times[best] / 1000.0


def call(ev: _Evaluator, node: Call, t: int) -> Internal:
    name = node.func
    if name in RANGE_FUNCS:
        return _range_call(ev, node, t)
    if name == "time":
        return t / 1000.0
    if name == "start":
        return ev.start / 1000.0
    if name == "end":
        return ev.end / 1000.0
    if name == "step":
        return ev.step / 1000.0
    if name == "range":
        return (ev.end - ev.start) / 1000.0
    if name in ("min_of", "max_of"):
        a, b = (_scalar_arg(ev.eval(x, t)) for x in node.args)
        return go_min(a, b) if name == "min_of" else go_max(a, b)
    if name == "pi":
        return math.pi
    if name == "vector":
        return InstantVector([Sample({}, _scalar_arg(ev.eval(node.args[0], t)))])
    if name == "timestamp":
        arg = node.args[0]
        v = ev.eval(arg, t)
        assert isinstance(v, InstantVector)
        direct = isinstance(arg, VectorSel)
        return InstantVector(Sample(s.metric, (s.t if direct and s.t is not None else t) / 1000.0, True) for s in v)
    args = [ev.eval(a, t) for a in node.args]
    if name == "scalar":
        v = args[0]
        assert isinstance(v, InstantVector)
        return v[0].value if len(v) == 1 else math.nan
    if name == "absent":
        v = args[0]
        assert isinstance(v, InstantVector)
        if v:
            return InstantVector()
        return InstantVector([Sample(_absent_labels(node.args[0]), 1.0)])
    if name in DATE_FUNCS:
        vec = args[0] if args else InstantVector([Sample({}, t / 1000.0)])
        assert isinstance(vec, InstantVector)
        out = InstantVector()
        for s in vec:
            r = _date(name, s.value)
            if r is not None:
                out.append(Sample(s.metric, r, True))
        return out
    if name in ("label_replace", "label_join"):
        dst_node = node.args[1]
        if isinstance(dst_node, StringLit) and dst_node.invalid_utf8 is not None:
            raise EvalError(f'invalid destination label name in {name}(): "{dst_node.invalid_utf8}"')
    if name == "label_replace":
        vec = args[0]
        assert isinstance(vec, InstantVector)
        dst, repl, src, regex = (str(a) for a in args[1:5])
        return _label_replace(vec, dst, repl, src, regex)
    if name == "label_join":
        vec = args[0]
        assert isinstance(vec, InstantVector)
        return _label_join(vec, str(args[1]), str(args[2]), [str(a) for a in args[3:]])
    if name == "histogram_quantile":
        q = _scalar_arg(args[0])
        vec = args[1]
        assert isinstance(vec, InstantVector)
        if not (0 <= q <= 1):
            ev.annotate("warn", invalid_quantile(q), name, 0)
        out = InstantVector()
        for metric, buckets in _buckets_by_series(ev, vec, name, 1).values():
            value, forced = bucket_quantile(q, buckets)
            if forced:
                ev.annotate("info", MONOTONICITY.format(name=metric.get("__name__", "")), name, 1)
            out.append(Sample(metric, value, True))
        return out
    if name == "histogram_quantiles":
        vec = args[0]
        assert isinstance(vec, InstantVector)
        label = str(args[1])
        qs = [_scalar_arg(a) for a in args[2:]]
        for k, q in enumerate(qs):
            if not (0 <= q <= 1):
                ev.annotate("warn", invalid_quantile(q), name, 2 + k)
        out = InstantVector()
        for metric, buckets in _buckets_by_series(ev, vec, name, 0).values():
            for q in qs:
                m = dict(metric)
                m[label] = _quantile_label(q)
                value, forced = bucket_quantile(q, [list(b) for b in buckets])
                if forced:
                    ev.annotate("info", MONOTONICITY.format(name=metric.get("__name__", "")), name, 0)
                out.append(Sample(m, value, True))
        return out
    if name == "histogram_fraction":
        lower, upper = _scalar_arg(args[0]), _scalar_arg(args[1])
        vec = args[2]
        assert isinstance(vec, InstantVector)
        return InstantVector(
            Sample(metric, bucket_fraction(lower, upper, buckets), True)
            for metric, buckets in _buckets_by_series(ev, vec, name, 2).values()
        )
    if name in ("histogram_count", "histogram_sum", "histogram_avg", "histogram_stddev", "histogram_stdvar"):
        return InstantVector()  # native histograms only: float samples give nothing
    vec = args[0]
    if not isinstance(vec, InstantVector):
        raise EvalError(f"function {name} expects an instant vector")
    if name in SIMPLE:
        fn = SIMPLE[name]
        return InstantVector(Sample(s.metric, fn(s.value), True) for s in vec)
    if name == "round":
        to_nearest = _scalar_arg(args[1]) if len(args) > 1 else 1.0
        inv = 1.0 / to_nearest if to_nearest != 0 else math.inf
        return InstantVector(Sample(s.metric, _round(s.value, inv), True) for s in vec)
    if name in ("clamp", "clamp_min", "clamp_max"):
        if name == "clamp":
            lo, hi = _scalar_arg(args[1]), _scalar_arg(args[2])
            if hi < lo:
                return InstantVector()
            return InstantVector(Sample(s.metric, go_max(lo, go_min(hi, s.value)), True) for s in vec)
        bound = _scalar_arg(args[1])
        f = go_max if name == "clamp_min" else go_min
        return InstantVector(Sample(s.metric, f(bound, s.value), True) for s in vec)
    if name in ("sort", "sort_desc"):
        nan_last = [s for s in vec if not math.isnan(s.value)]
        nans = [s for s in vec if math.isnan(s.value)]
        return InstantVector(sorted(nan_last, key=lambda s: s.value, reverse=name == "sort_desc") + nans)
    if name in ("sort_by_label", "sort_by_label_desc"):
        names = [str(a) for a in args[1:]]
        ordered = sorted(vec, key=lambda s: _label_sort_key(s, names), reverse=name == "sort_by_label_desc")
        return InstantVector(ordered)
    raise EvalError(f"function {name} is not supported")


def _label_sort_key(s: Sample, names: list[str]) -> list[list[tuple[int, int | str]]]:
    keys = [_natural_key(s.metric.get(n, "")) for n in names]
    keys.append(_natural_key(str(sorted(s.metric.items()))))
    return keys


def _parse_go_float(text: str) -> float:
    """strconv.ParseFloat: Inf/NaN spellings, no surrounding spaces, no underscores."""
    if text != text.strip() or "_" in text or not text:
        raise ValueError(text)
    return float(text)


def _quantile_label(q: float) -> str:
    if math.isnan(q):
        return "NaN"
    if math.isinf(q):
        return "+Inf" if q > 0 else "-Inf"
    return repr(float(q))


def _round(v: float, inv: float) -> float:
    if math.isnan(v) or math.isinf(v):
        return v
    try:
        return math.floor(v * inv + 0.5) / inv
    except (OverflowError, ValueError):
        return v


_ = fmod
