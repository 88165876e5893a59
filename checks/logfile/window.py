"""The sliding window over log events: error ratio, response times, request rate, auth failures.

Memory does not depend on the line rate: the window is a ring of at most `MAX_BUCKETS`
time buckets (one per second for the default 5 minutes; wider buckets for longer windows),
each holding a few counters, a fixed-size log-bucketed duration histogram (`SKETCH_SIZE`
= 462 counts, 3.7 KB) and at most `max_sources` client IPs: at most about 2.2 MB plus
600 x max_sources IP strings per check, whatever the traffic. At each `advance(now)` the
buckets that fell out of the window are subtracted from the running totals and reused.

Which events are in the window: those whose bucket number `floor(t / bucket_s)` is one of
the last `n_buckets` up to the current one (the current bucket is still filling). An event
from the future counts in the current bucket; one older than the window is ignored.

Percentiles come from a log-bucketed histogram (as DDSketch does): a duration x falls in
bucket i = ceil(log_g(x)) with g = (1 + a) / (1 - a), and bucket i reports 2 g^i / (g + 1),
which is within a = 2% of every value in the bucket. So the p95 we report is within 2% of
the true nearest-rank p95 (the value at rank ceil(0.95 n)), for durations between
`SKETCH_MIN_S` and `SKETCH_MAX_S`; shorter ones count as `SKETCH_MIN_S`, longer as the max.

Brute force from one IP (the most failures from any single source) is counted per bucket
with Space-Saving (Metwally et al. 2005): at most `max_sources` IPs per bucket; when a new
IP arrives at a full bucket it takes over the entry with the smallest count and adds to it.
The result is exact while a bucket sees at most `max_sources` distinct failing IPs; beyond
that an IP's count may be over-estimated by at most that bucket's smallest count, which is
at most failures / max_sources of the bucket, and an IP with more than that share is never
lost.
"""

from __future__ import annotations

import heapq
import math
import struct
import sys
from array import array
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import compress, repeat
from operator import add, eq, mul, rshift, sub, truediv

MAX_BUCKETS = 600
SKETCH_ALPHA = 0.02
_GAMMA = (1 + SKETCH_ALPHA) / (1 - SKETCH_ALPHA)
_LOG_GAMMA = math.log(_GAMMA)
SKETCH_MIN_S = 1e-4
SKETCH_MAX_S = 1e4
_I_MIN = math.ceil(math.log(SKETCH_MIN_S) / _LOG_GAMMA)
_I_MAX = math.ceil(math.log(SKETCH_MAX_S) / _LOG_GAMMA)
SKETCH_SIZE = _I_MAX - _I_MIN + 1


def sketch_index(seconds: float) -> int:
    """The histogram slot of a duration (clamped to the sketch's range)."""
    if seconds <= SKETCH_MIN_S:
        return 0
    if seconds >= SKETCH_MAX_S:
        return SKETCH_SIZE - 1
    return math.ceil(math.log(seconds) / _LOG_GAMMA) - _I_MIN


def classify_many(seconds: list[float], bounds: Sequence[float]) -> Counter[tuple[int, int]]:
    """(bisect_left(bounds, s), sketch_index(s)) counted over a column of durations, with
    C-level `map`s only: the same classes as one call per value, without Python per value."""
    inside = not seconds or (min(seconds) > SKETCH_MIN_S and max(seconds) < SKETCH_MAX_S)
    clamped = seconds if inside else map(min, map(max, seconds, repeat(SKETCH_MIN_S)), repeat(SKETCH_MAX_S))
    ceil_logs = map(math.ceil, map(truediv, map(math.log, clamped), repeat(_LOG_GAMMA)))
    # one int per value, bucket * 1024 + ceil(log): cheaper to count than a tuple (|ceil| < 512)
    keys = map(add, map(mul, map(bisect_left, repeat(bounds), seconds), repeat(1024)), ceil_logs)
    out: Counter[tuple[int, int]] = Counter()
    for key, n in Counter(keys).items():
        bucket, c = divmod(key + 512, 1024)
        out[(bucket, c - 512 - _I_MIN)] += n
    return out


_KEY_SHIFT = 42  # a duration's key: its float's exponent and 10 top mantissa bits (0.1% wide)
_KEY_OCTAVES = 24  # keys tabled for durations within 2^-24 .. 2^24 of the unit


class Classifier:
    """`classify_many` for a column of durations in a unit (`scale` seconds), about three
    times cheaper: each value's key is its float's exponent and top mantissa bits (C-level:
    an array reinterpreted, a shift), looked up in a table of the class every value with
    that key has. The few keys whose 0.1%-wide range straddles a class boundary (and values
    outside the table) are classified exactly. The classes are those of one call per value.
    `count_sorted` does the same for thousands of values at once without a per-value lookup:
    sorted, each run between two points where the class changes is counted at once."""

    _tables: dict[tuple[tuple[float, ...], float], dict[int, int]] = {}
    _lists: dict[tuple[tuple[float, ...], float], list[int]] = {}
    _points: dict[tuple[tuple[float, ...], float], tuple[list[float], list[int]]] = {}

    def __init__(self, bounds: Sequence[float], scale: float) -> None:
        self.bounds, self.scale = tuple(bounds), scale
        key = (self.bounds, scale)
        if key not in self._tables:
            self._tables[key] = self._table()
        table = self._tables[key]
        self._get = table.get
        # The same table as a list indexed by key - _KEY_LO (-1 where a key straddles): a
        # list of shared ints stays in the CPU cache where a dict of 48k int keys does not.
        # Used when every value of a column lies within the tabled octaves.
        if key not in self._lists:
            shared: dict[int, int] = {}
            self._lists[key] = [shared.setdefault(c, c) for c in map(table.get, range(_KEY_LO, _KEY_HI), repeat(-1))]
        self._list_get = self._lists[key].__getitem__
        self._changes()  # here, not in a check's first run

    def _code(self, x: float) -> int:
        s = x * self.scale
        return bisect_left(self.bounds, s) * 1024 + sketch_index(s)

    def _table(self) -> dict[int, int]:
        table: dict[int, int] = {}
        lo_key = (1023 - _KEY_OCTAVES) << 10
        for k in range(lo_key, lo_key + (2 * _KEY_OCTAVES << 10)):
            (lo,) = _F64.unpack(_I64.pack(k << _KEY_SHIFT))
            (hi,) = _F64.unpack(_I64.pack(((k + 1) << _KEY_SHIFT) - 1))
            a = self._code(lo)
            if a == self._code(hi):  # classes are monotonic: every value between has it too
                table[k] = a
        return table

    def codes(self, values: list[float], counts: Counter[int]) -> None:
        """Count the class of each of `values` (non-negative floats, in the unit) into
        `counts`, as bucket * 1024 + slot (`decode` turns them back)."""
        keys = map(rshift, memoryview(array("d", values)).cast("B").cast("q"), repeat(_KEY_SHIFT))
        if values and _LIST_MIN <= min(values) and max(values) < _LIST_MAX:
            codes = list(map(self._list_get, map(sub, keys, repeat(_KEY_LO))))
        else:
            codes = list(map(self._get, keys, repeat(-1)))
        counts.update(codes)
        exact = counts.pop(-1, 0)
        if exact:
            for x in compress(values, map(eq, codes, repeat(-1))):
                counts[self._code(x)] += 1

    def weighted(self, values: Counter[float], counts: Counter[int]) -> None:
        """`codes` for values counted by value (few distinct: integer milliseconds)."""
        distinct = list(values)
        keys = map(rshift, array("q", array("d", distinct).tobytes()), repeat(_KEY_SHIFT))
        for x, code, n in zip(distinct, map(self._get, keys, repeat(-1)), values.values(), strict=True):
            counts[code if code >= 0 else self._code(x)] += n

    def count_sorted(self, values: list[float], counts: Counter[int]) -> None:
        """`codes` for many values (non-negative finite floats, in the unit), about three
        times cheaper on fractional durations: `values` is sorted in place (C), then each run
        of values between two of the points where the class changes is counted at once (two
        `bisect`s per class present, not per value)."""
        points, classes = self._changes()
        values.sort()
        i, n, last = 0, len(values), len(points)
        while i < n:  # bounded: `end` > i (points[j] > values[i])
            j = bisect_right(points, values[i])
            end = bisect_left(values, points[j], i) if j < last else n
            counts[classes[j]] += end - i
            i = end

    def _changes(self) -> tuple[list[float], list[int]]:
        """Every point where the class changes, ascending (the smallest value of each class
        but the first), and the class below the first point and from each point on. Classes
        never decrease with the value, so each point is found by bisecting the float's bits
        (non-negative floats order as their bits do); computed once per bounds and unit."""
        key = (self.bounds, self.scale)
        if key not in self._points:
            code = self._code
            points: list[float] = []
            classes = [code(0.0)]
            lo, top = 0, _I64.unpack(_F64.pack(sys.float_info.max))[0]
            final = code(sys.float_info.max)
            for _ in range((len(self.bounds) + 1) * SKETCH_SIZE):  # bounded: each point raises the class
                if classes[-1] == final:
                    break
                a, b = lo, top  # class(a) == classes[-1] != class(b)
                while b - a > 1:
                    m = (a + b) // 2
                    if code(_bits_float(m)) == classes[-1]:
                        a = m
                    else:
                        b = m
                points.append(_bits_float(b))
                classes.append(code(points[-1]))
                lo = b
            self._points[key] = (points, classes)
        return self._points[key]

    @staticmethod
    def decode(counts: Counter[int]) -> Counter[tuple[int, int]]:
        return Counter({divmod(code, 1024): n for code, n in counts.items()})

    def __call__(self, values: list[float]) -> Counter[tuple[int, int]]:
        """The (bucket, slot) counts of `values` (non-negative floats, in the unit)."""
        counts: Counter[int] = Counter()
        self.codes(values, counts)
        return self.decode(counts)


_F64, _I64 = struct.Struct("<d"), struct.Struct("<q")


def _bits_float(bits: int) -> float:
    return float(_F64.unpack(_I64.pack(bits))[0])


TOP_SOURCES = 5  # clients named in portal_log_auth_failures_by_source: the label stays bounded
_KEY_LO = (1023 - _KEY_OCTAVES) << 10  # the keys `Classifier._table` holds: _KEY_LO <= key < _KEY_HI
_KEY_HI = _KEY_LO + (2 * _KEY_OCTAVES << 10)
(_LIST_MIN,) = _F64.unpack(_I64.pack(_KEY_LO << _KEY_SHIFT))  # the values whose keys those are
(_LIST_MAX,) = _F64.unpack(_I64.pack(_KEY_HI << _KEY_SHIFT))


def sketch_value(slot: int) -> float:
    """The value a histogram slot reports: within SKETCH_ALPHA of everything in it."""
    return 2 * _GAMMA ** (slot + _I_MIN) / (_GAMMA + 1)


@dataclass(frozen=True, slots=True)
class WindowStats:
    lines: int
    requests: int
    durations: int
    error_ratio: float
    response_seconds_avg: float
    response_seconds_p95: float
    requests_per_second: float
    auth_failures: int
    auth_failures_max_per_source: int
    # the clients with the most auth failures, most first (at most TOP_SOURCES, ties by address)
    auth_failures_top: tuple[tuple[str, int], ...] = ()


class _Bucket:
    __slots__ = (
        "number",
        "lines",
        "errors",
        "requests",
        "error_requests",
        "dur_count",
        "dur_sum",
        "hist",
        "auth",
        "sources",
    )

    def __init__(self) -> None:
        self.number = -1
        self.clear()

    def clear(self) -> None:
        self.lines = self.errors = self.requests = self.error_requests = 0
        self.dur_count, self.dur_sum = 0, 0.0
        self.hist: array[int] | None = None  # SKETCH_SIZE counts, made on first use
        self.auth = 0
        self.sources: dict[str, int] = {}


class Window:
    """Events of the last `window_s` seconds, in fixed-size time buckets."""

    def __init__(self, window_s: float, *, max_sources: int = 100, start: float = 0.0) -> None:
        self.bucket_s = max(1, math.ceil(window_s / MAX_BUCKETS))
        self.n_buckets = max(1, math.ceil(window_s / self.bucket_s))
        self.window_s = float(self.n_buckets * self.bucket_s)
        self.max_sources = max_sources
        self._ring = [_Bucket() for _ in range(self.n_buckets)]
        self._hist_total = array("q", bytes(8 * SKETCH_SIZE))
        self._sources_total: dict[str, int] = {}
        self._current = math.floor(start / self.bucket_s)
        self.since = start  # the window covers less than window_s until this is old enough

    # --- adding ----------------------------------------------------------------------------

    def add_lines(self, t: float, lines: int, errors: int, requests: int, error_requests: int) -> None:
        b = self._bucket(t)
        if b is not None:
            b.lines += lines
            b.errors += errors
            b.requests += requests
            b.error_requests += error_requests

    def add_durations(self, t: float, count: int, total_s: float, slots: Mapping[int, int]) -> None:
        """`count` durations summing to `total_s`, as counts per `sketch_index` slot."""
        b = self._bucket(t)
        if b is None:
            return
        b.dur_count += count
        b.dur_sum += total_s
        if b.hist is None:
            b.hist = array("q", bytes(8 * SKETCH_SIZE))
        hist, total = b.hist, self._hist_total
        for slot, n in slots.items():
            hist[slot] += n
            total[slot] += n

    def add_auth(self, t: float, source: str | None, n: int) -> None:
        b = self._bucket(t)
        if b is None:
            return
        b.auth += n
        if source is None:
            return
        src, total = b.sources, self._sources_total
        if source not in src and len(src) >= self.max_sources:  # Space-Saving: evict the min
            victim = min(src, key=src.__getitem__)
            floor = src.pop(victim)
            self._drop_source(victim, floor)
            src[source] = floor
            total[source] = total.get(source, 0) + floor
        src[source] = src.get(source, 0) + n
        total[source] = total.get(source, 0) + n

    # --- time ------------------------------------------------------------------------------

    def advance(self, now: float) -> None:
        """Move the window to `now`: buckets that fell out are subtracted and emptied."""
        current = math.floor(now / self.bucket_s)
        if current <= self._current:
            return  # the clock went back or stayed: keep what we have
        self._current = current
        oldest = current - self.n_buckets + 1
        for b in self._ring:
            if 0 <= b.number < oldest:
                self._expire(b)

    def _bucket(self, t: float) -> _Bucket | None:
        number = min(math.floor(t / self.bucket_s), self._current)
        if number <= self._current - self.n_buckets:
            return None
        b = self._ring[number % self.n_buckets]
        if b.number != number:
            self._expire(b)
            b.number = number
        if t < self.since:
            self.since = t
        return b

    def _expire(self, b: _Bucket) -> None:
        if b.hist is not None:
            total = self._hist_total
            for slot, n in enumerate(b.hist):
                if n:
                    total[slot] -= n
        for source, n in b.sources.items():
            self._drop_source(source, n)
        b.number = -1
        b.clear()

    def _drop_source(self, source: str, n: int) -> None:
        left = self._sources_total[source] - n
        if left > 0:
            self._sources_total[source] = left
        else:
            del self._sources_total[source]

    # --- reading ---------------------------------------------------------------------------

    def stats(self, now: float) -> WindowStats:
        """The window's figures at `now` (call `advance(now)` first).

        Error ratio: failed requests / requests (a request is a line with an HTTP status; it
        failed with status >= 500 or level error/fatal) when the window holds requests,
        else error lines / lines, so a log of nothing but errors still reads 1.
        Requests per second: over the window, or over the time since the first event or
        the start, whichever is shorter (never less than one bucket).
        """
        self.advance(now)
        live = [b for b in self._ring if b.number >= 0]
        lines = sum(b.lines for b in live)
        requests = sum(b.requests for b in live)
        if requests:
            ratio = sum(b.error_requests for b in live) / requests
        else:
            ratio = sum(b.errors for b in live) / lines if lines else 0.0
        count = sum(b.dur_count for b in live)
        avg = sum(b.dur_sum for b in live) / count if count else 0.0
        span = min(self.window_s, max(float(self.bucket_s), now - self.since))
        return WindowStats(
            lines=lines,
            requests=requests,
            durations=count,
            error_ratio=ratio,
            response_seconds_avg=avg,
            response_seconds_p95=self.quantile(0.95) if count else 0.0,
            requests_per_second=requests / span,
            auth_failures=sum(b.auth for b in live),
            auth_failures_max_per_source=max(self._sources_total.values(), default=0),
            auth_failures_top=tuple(
                heapq.nsmallest(TOP_SOURCES, self._sources_total.items(), key=lambda kv: (-kv[1], kv[0]))
            ),
        )

    def quantile(self, q: float) -> float:
        """The nearest-rank q-quantile of the durations in the window (within SKETCH_ALPHA)."""
        total = self._hist_total
        count = sum(total)
        if not count:
            return 0.0
        rank = max(1, math.ceil(q * count))
        seen = 0
        for slot, n in enumerate(total):
            seen += n
            if seen >= rank:
                return sketch_value(slot)
        return sketch_value(SKETCH_SIZE - 1)
