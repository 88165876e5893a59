"""Native histograms: the float histogram PromQL computes with, and a store of histogram samples.

Semantics from Prometheus's `model/histogram/float_histogram.go` and `promql/quantile.go`.
A histogram has a schema (-4..8: exponential buckets, each power of two divided into 2^schema
buckets; -53: custom buckets whose upper bounds are `custom`), a zero bucket
(`zero_threshold`, `zero_count`), `count`, `sum` and sparse buckets by index (`pos`, `neg`:
index -> count, the keys are the bucket layout). Bucket `i` of an exponential schema covers
(2^((i-1)/2^schema), 2^(i/2^schema)]; custom bucket `i` covers (custom[i-1], custom[i]]
(the first from -Inf, the last to +Inf).

Adding histograms of different schemas reduces the finer one to the coarser schema; a wider zero
bucket swallows the buckets inside it; custom buckets with different bounds are reconciled to
the bounds both share (`reconciled` is set, an info for the query); custom and exponential
buckets do not mix (`IncompatibleSchemas`).

`HistogramStore` keeps histogram samples per series (`None` is a staleness marker), beside the
float `monitor.history.History`: no check produces histograms, so the float arrays stay as they are.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator, Sequence

from monitor.history import Matcher, label_key

CUSTOM_SCHEMA = -53
GAUGE = "gauge"
UNKNOWN = "unknown"
RESET = "reset"
NOT_RESET = "not_reset"


class IncompatibleSchemas(Exception):
    """Custom-bucket and exponential histograms in one operation."""


def bound(idx: int, schema: int) -> float:
    """The upper bound of exponential bucket `idx` (Prometheus's getBound)."""
    if schema < 0:
        exp = idx << -schema
        if exp == 1024:
            return 1.7976931348623157e308
        if exp > 1024:
            return math.inf
        return math.ldexp(1.0, exp)
    frac_idx = idx & ((1 << schema) - 1)
    frac = 2.0 ** (frac_idx / (1 << schema)) / 2.0
    exp = (idx >> schema) + 1
    if frac == 0.5 and exp == 1025:
        return math.inf
    try:
        return math.ldexp(frac, exp)
    except OverflowError:
        return math.inf


def _target_idx(idx: int, origin: int, target: int) -> int:
    return ((idx - 1) >> (origin - target)) + 1


class FloatHistogram:
    __slots__ = ("schema", "zero_threshold", "zero_count", "count", "sum", "pos", "neg", "custom", "hint")

    def __init__(
        self,
        schema: int = 0,
        zero_threshold: float = 0.0,
        zero_count: float = 0.0,
        count: float = 0.0,
        sum: float = 0.0,
        pos: dict[int, float] | None = None,
        neg: dict[int, float] | None = None,
        custom: Sequence[float] | None = None,
        hint: str = UNKNOWN,
    ) -> None:
        self.schema = schema
        self.zero_threshold = zero_threshold
        self.zero_count = zero_count
        self.count = count
        self.sum = sum
        self.pos = pos if pos is not None else {}
        self.neg = neg if neg is not None else {}
        self.custom = tuple(custom) if custom is not None else ()
        self.hint = hint

    @property
    def is_custom(self) -> bool:
        return self.schema == CUSTOM_SCHEMA

    def copy(self) -> FloatHistogram:
        return FloatHistogram(
            self.schema,
            self.zero_threshold,
            self.zero_count,
            self.count,
            self.sum,
            dict(self.pos),
            dict(self.neg),
            self.custom,
            self.hint,
        )

    def __repr__(self) -> str:
        return (
            f"FloatHistogram(schema={self.schema}, count={self.count}, sum={self.sum}, zero={self.zero_count}"
            f"@{self.zero_threshold}, pos={dict(sorted(self.pos.items()))}, neg={dict(sorted(self.neg.items()))}"
            + (f", custom={list(self.custom)}" if self.is_custom else "")
            + f", hint={self.hint})"
        )

    # ---- scaling -------------------------------------------------------------------------------
    def mul(self, factor: float) -> FloatHistogram:
        """In place: every count and the sum times `factor`."""
        self.zero_count *= factor
        self.count *= factor
        self.sum *= factor
        for d in (self.pos, self.neg):
            for k in d:
                d[k] *= factor
        return self

    def div(self, divisor: float) -> FloatHistogram:
        """In place: every count and the sum divided (by zero: ±Inf or NaN, as Go's floats)."""

        def q(a: float) -> float:
            if divisor == 0:
                if a == 0 or math.isnan(a):
                    return math.nan
                return math.copysign(math.inf, a) * (1 if math.copysign(1, divisor) > 0 else -1)
            return a / divisor

        self.zero_count = q(self.zero_count)
        self.count = q(self.count)
        self.sum = q(self.sum)
        for d in (self.pos, self.neg):
            for k in d:
                d[k] = q(d[k])
        return self

    # ---- layout changes ----------------------------------------------------------------------
    def reduced(self, schema: int) -> FloatHistogram:
        """A copy at the coarser `schema` (buckets merged)."""
        if schema == self.schema or self.is_custom:
            return self.copy()
        out = FloatHistogram(
            schema, self.zero_threshold, self.zero_count, self.count, self.sum, custom=None, hint=self.hint
        )
        for src, dst in ((self.pos, out.pos), (self.neg, out.neg)):
            for k in sorted(src):
                t = _target_idx(k, self.schema, schema)
                dst[t] = dst.get(t, 0.0) + src[k]
        return out

    def _widen_zero(self, threshold: float) -> None:
        """Move every bucket inside (-threshold, threshold] into the zero bucket."""
        if threshold <= self.zero_threshold:
            return
        for d in (self.pos, self.neg):
            for k in sorted(d):
                if bound(k, self.schema) <= threshold:
                    self.zero_count += d.pop(k)
        self.zero_threshold = threshold

    def compact(self) -> FloatHistogram:
        """In place: drop empty buckets."""
        self.pos = {k: v for k, v in self.pos.items() if v != 0}
        self.neg = {k: v for k, v in self.neg.items() if v != 0}
        return self

    def _custom_to(self, bounds: tuple[float, ...]) -> None:
        """Remap custom buckets onto `bounds` (a subset of ours): each bucket goes to the first
        shared bound at or above its own."""
        new: dict[int, float] = {}
        for k, v in self.pos.items():
            upper = self.custom[k] if k < len(self.custom) else math.inf
            t = bisect.bisect_left(bounds, upper)
            new[t] = new.get(t, 0.0) + v
        self.pos = new
        self.custom = bounds

    def _combine(self, other: FloatHistogram, sign: float) -> tuple[FloatHistogram, bool]:
        """self + sign*other, as a new histogram; and whether custom bounds were reconciled."""
        if self.is_custom != other.is_custom:
            raise IncompatibleSchemas()
        reconciled = False
        if self.is_custom:
            a = self.copy()
            b = other
            if a.custom != other.custom:
                common = tuple(sorted(set(a.custom) & set(other.custom)))
                a._custom_to(common)
                b = other.copy()
                b._custom_to(common)
                reconciled = True
        else:
            schema = min(self.schema, other.schema)
            a = self.reduced(schema)
            b = other.reduced(schema) if other.schema != schema else other.copy()
            zt = max(a.zero_threshold, b.zero_threshold)
            a._widen_zero(zt)
            b._widen_zero(zt)
        a.hint = _combined_hint(self.hint, other.hint)
        a.zero_count += sign * b.zero_count
        a.count += sign * b.count
        a.sum += sign * b.sum
        for src, dst in ((b.pos, a.pos), (b.neg, a.neg)):
            for k, v in src.items():
                dst[k] = dst.get(k, 0.0) + sign * v
        return a, reconciled

    def add(self, other: FloatHistogram) -> tuple[FloatHistogram, bool]:
        """A new histogram, self + other; raises IncompatibleSchemas. The flag: custom bounds
        were reconciled."""
        return self._combine(other, 1.0)

    def sub(self, other: FloatHistogram) -> tuple[FloatHistogram, bool]:
        return self._combine(other, -1.0)

    def equals(self, other: FloatHistogram) -> bool:
        """Exact equality of value and layout (zero-count buckets are part of the layout)."""
        return (
            self.schema == other.schema
            and self.zero_threshold == other.zero_threshold
            and self.zero_count == other.zero_count
            and self.count == other.count
            and _same(self.sum, other.sum)
            and self.pos == other.pos
            and self.neg == other.neg
            and (not self.is_custom or self.custom == other.custom)
        )

    # ---- counters ------------------------------------------------------------------------------
    def detect_reset(self, prev: FloatHistogram) -> bool:
        """Whether self, following `prev`, starts the counter again (Prometheus's DetectReset)."""
        if self.hint == RESET:
            return True
        if self.hint == NOT_RESET:
            return False
        if self.count < prev.count:
            return True
        if self.is_custom != prev.is_custom:
            return True
        if self.is_custom:
            now, before = self, prev
            if self.custom != prev.custom:
                common = tuple(sorted(set(self.custom) & set(prev.custom)))
                now, before = self.copy(), prev.copy()
                now._custom_to(common)
                before._custom_to(common)
            return any(v > now.pos.get(k, 0.0) for k, v in before.pos.items())
        if self.schema > prev.schema:
            return True
        if self.zero_threshold < prev.zero_threshold:
            return True
        p = prev.reduced(self.schema) if prev.schema != self.schema else prev.copy()
        p._widen_zero(self.zero_threshold)
        if p.zero_threshold != self.zero_threshold:
            return True
        if self.zero_count < p.zero_count:
            return True
        for mine, theirs in ((self.pos, p.pos), (self.neg, p.neg)):
            for k, v in theirs.items():
                if v > mine.get(k, 0.0):
                    return True
        return False

    # ---- buckets -------------------------------------------------------------------------------
    def buckets(self) -> Iterator[tuple[float, float, float]]:
        """(lower, upper, count) of every bucket from the lowest to the highest, the zero bucket
        (when it has observations or width) in its place."""
        if self.is_custom:
            n = len(self.custom)
            for k in sorted(self.pos):
                lower = self.custom[k - 1] if k > 0 else -math.inf
                upper = self.custom[k] if k < n else math.inf
                yield lower, upper, self.pos[k]
            return
        for k in sorted(self.neg, reverse=True):
            yield -bound(k, self.schema), -bound(k - 1, self.schema), self.neg[k]
        if self.zero_count != 0 or self.zero_threshold != 0:
            yield -self.zero_threshold, self.zero_threshold, self.zero_count
        for k in sorted(self.pos):
            yield bound(k - 1, self.schema), bound(k, self.schema), self.pos[k]


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _combined_hint(a: str, b: str) -> str:
    if a == b:
        return a
    if GAUGE in (a, b):
        return GAUGE
    return UNKNOWN


# ---- the functions over one histogram (promql/quantile.go, functions.go) ----------------------
def quantile(q: float, h: FloatHistogram) -> float:
    """histogram_quantile over a native histogram."""
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    if h.count == 0 or math.isnan(q):
        return math.nan
    buckets = list(h.buckets())
    forward = math.isnan(h.sum) or q < 0.5
    if forward:
        rank = q * h.count
        seq = buckets
    else:
        rank = (1 - q) * h.count
        seq = buckets[::-1]
    count = 0.0
    hit = (0.0, 0.0, 0.0)
    for b in seq:
        hit = b  # as Prometheus: the last bucket looked at, even an empty one
        if b[2] == 0:
            continue
        count += b[2]
        if count >= rank:
            break
    lower, upper, bcount = hit
    if not h.is_custom and lower < 0 < upper:
        if not h.neg and h.pos:
            lower = 0.0
        elif not h.pos and h.neg:
            upper = 0.0
    elif h.is_custom:
        if lower == -math.inf:
            if upper <= 0:
                return upper
            lower = 0.0
        elif upper == math.inf:
            return lower
    count = min(count, h.count)
    if count < rank:
        return upper
    if forward:
        rank -= count - bcount
    else:
        rank = count - rank
    fraction = rank / bcount if bcount else 0.0
    if h.is_custom or (lower <= 0 <= upper):
        return lower + (upper - lower) * fraction
    log_lower = math.log2(abs(lower))
    log_upper = math.log2(abs(upper))
    if lower > 0:
        return math.pow(2.0, log_lower + (log_upper - log_lower) * fraction)
    return -math.pow(2.0, log_upper + (log_lower - log_upper) * (1 - fraction))


def fraction(lo: float, hi: float, h: FloatHistogram) -> float:
    """histogram_fraction over a native histogram: the share of observations in [lo, hi]."""
    if h.count == 0 or math.isnan(lo) or math.isnan(hi):
        return math.nan
    if lo >= hi:
        return 0.0
    rank = lower_rank = upper_rank = 0.0
    lower_set = upper_set = False
    for b_lower, b_upper, b_count in h.buckets():
        zero_bucket = False
        if not h.is_custom and b_lower <= 0 <= b_upper:
            zero_bucket = True
            if not h.neg and h.pos:
                b_lower = 0.0
            elif not h.pos and h.neg:
                b_upper = 0.0
        if h.is_custom and b_lower == -math.inf and b_upper > 0:
            b_lower = 0.0

        if not lower_set and b_lower >= lo:
            lower_rank = rank
            lower_set = True
        if not upper_set and b_lower >= hi:
            upper_rank = rank
            upper_set = True
        if lower_set and upper_set:
            break
        if not lower_set and b_lower < lo < b_upper:
            lower_rank = rank + _share(lo, True, b_lower, b_upper, b_count, h.is_custom or zero_bucket)
            lower_set = True
        if not upper_set and b_lower < hi < b_upper:
            upper_rank = rank + _share(hi, False, b_lower, b_upper, b_count, h.is_custom or zero_bucket)
            upper_set = True
        if lower_set and upper_set:
            break
        rank += b_count
    if not lower_set or lower_rank > h.count:
        lower_rank = h.count
    if not upper_set or upper_rank > h.count:
        upper_rank = h.count
    return (upper_rank - lower_rank) / h.count


def _share(v: float, is_lower: bool, bl: float, bu: float, bc: float, linear: bool) -> float:
    """The observations of bucket (bl, bu] below `v`: linear in custom and zero buckets,
    exponential in the others."""
    if linear:
        # an infinitely wide bucket contributes nothing to a finite range
        if bu == math.inf:
            return 0.0
        if bl == -math.inf:
            return bc if is_lower else 0.0
        return bc * (v - bl) / (bu - bl)
    log_lower = math.log2(abs(bl))
    log_upper = math.log2(abs(bu))
    log_v = math.log2(abs(v))
    if v > 0:
        frac = (log_v - log_lower) / (log_upper - log_lower)
    else:
        frac = 1 - ((log_v - log_upper) / (log_lower - log_upper))
    return bc * frac


def variance(h: FloatHistogram) -> float:
    """histogram_stdvar: the variance of the observations, each bucket's at its middle."""
    if h.count == 0:
        return math.nan
    mean = h.sum / h.count
    total = 0.0
    c = 0.0
    for lower, upper, count in h.buckets():
        if count == 0:
            continue
        if h.is_custom:
            if lower == -math.inf:
                lower = 0.0 if upper > 0 else upper
            if upper == math.inf:
                upper = lower
            val = (upper + lower) / 2.0
        elif lower <= 0 <= upper:
            val = 0.0
        else:
            val = math.sqrt(upper * lower)
            if upper < 0:
                val = -val
        delta = val - mean
        inc = count * delta * delta
        t = total + inc
        if abs(total) >= abs(inc):
            c += (total - t) + inc
        else:
            c += (inc - t) + total
        total = t
    return (total + c) / h.count


# ---- storage ----------------------------------------------------------------------------------
class HistogramSeries:
    """One series' histogram samples in time order (ms); `None` is a staleness marker."""

    __slots__ = ("labels", "ts", "hs")

    def __init__(self, labels: dict[str, str]) -> None:
        self.labels = labels
        self.ts: list[int] = []
        self.hs: list[FloatHistogram | None] = []

    def put(self, t: int, h: FloatHistogram | None) -> None:
        i = bisect.bisect_left(self.ts, t)
        if i < len(self.ts) and self.ts[i] == t:
            self.hs[i] = h
            return
        self.ts.insert(i, t)
        self.hs.insert(i, h)

    def latest(self, t: int, lookback: int) -> tuple[int, FloatHistogram | None] | None:
        """The newest sample (or staleness marker) in (t - lookback, t]."""
        i = bisect.bisect_right(self.ts, t) - 1
        if i < 0 or self.ts[i] <= t - lookback:
            return None
        return self.ts[i], self.hs[i]

    def window(self, lo: int, hi: int) -> list[tuple[int, FloatHistogram]]:
        """The histograms with lo < t <= hi (staleness markers left out)."""
        i = bisect.bisect_right(self.ts, lo)
        j = bisect.bisect_right(self.ts, hi)
        return [(self.ts[k], h) for k in range(i, j) if (h := self.hs[k]) is not None]


class HistogramStore:
    """Histogram samples by series, selected with the same matchers as the float history (by a
    scan of every series: sized for test data and the few histogram series a check would add)."""

    def __init__(self) -> None:
        self._series: dict[tuple[tuple[str, str], ...], HistogramSeries] = {}

    def __len__(self) -> int:
        return len(self._series)

    def add_ms(self, labels: dict[str, str], t: int, h: FloatHistogram | None) -> None:
        """A histogram sample of the series `labels` at `t` ms; None marks the series stale."""
        key = label_key(labels)
        s = self._series.get(key)
        if s is None:
            s = HistogramSeries(dict(labels))
            self._series[key] = s
        s.put(t, h)

    def clear(self) -> None:
        self._series.clear()

    def select(self, matchers: Sequence[Matcher]) -> list[HistogramSeries]:
        return [s for s in self._series.values() if all(m.matches(s.labels.get(m.name, "")) for m in matchers)]

    def get(self, labels: dict[str, str]) -> HistogramSeries | None:
        return self._series.get(label_key(labels))
