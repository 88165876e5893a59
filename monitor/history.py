"""Recent history of every series, compact, for the PromQL engine to look back on.

Per series: the label set (interned strings, one dict shared by every reader), timestamps as
unsigned 32-bit milliseconds after a per-series base (`array('I')`) and values as float64
(`array('d')`): 12 bytes a sample plus the arrays' growth slack, no Python object per sample.
Staleness markers (Prometheus's NaN with bit pattern 0x7ff0000000000002) sit in a small side
array of their own, so a range window is a plain slice of real samples; `points()` and the dump
show them in place. Counter resets are noted as they are appended (time and the value before),
so `rate()` over a window needs two bisections instead of a walk over its samples.

`append(t, samples, source=...)` takes one check run: every series the source produced last time
and not now gets a staleness marker at `t`, as Prometheus writes one when a target stops
exporting a series. `max_samples` is a hard cap: past it new samples are refused and counted in
`refused`. `trim(now)` drops what is older than its metric's retention: `retention_s` for every
name, or longer for the few names in `retention_by_name` (a metric the rules read back a day
need not make every series stay a day). `dump(path)`/`load(path)` keep it across restarts
(written to a temporary file and renamed): a gap stays a gap.

The dump is a stream of series: a magic line, a msgpack header (sources, byte order, series count),
then per series a msgpack head (labels, base, counts) and its three arrays' raw bytes. `load` reads
each series' arrays straight into arrays of their final size (no copy of the whole file, no
intermediate bytes), so loading grows the process by the arrays' 12 bytes a sample and little
more. `save(path)` writes from a thread: `snapshot()` (on the caller's thread, cheap: references
to each series' arrays and their lengths) is all it takes from the event loop. Meanwhile appends
go on: an append only adds past the snapshot's lengths; a write into the snapshot's part (out of
order, a staleness marker in the past) first gives the series arrays of its own (copy on write),
and `trim` waits for the next call while a snapshot is being written. Files of the first format
(one msgpack document) still load.

`select(matchers)` answers in label order and caches its answer until a series is added or
removed. Readers that keep results computed for past times watch `generation` (it changes when a
write lands in the past: before a time its series already had, or more than LATE_MS before the
newest write) and `newest` (the latest time written).

Times at this interface are seconds (float); inside, milliseconds (int), as Prometheus keeps them.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import operator
import os
import struct
import sys
import tempfile
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import compress
from pathlib import Path
from typing import IO, Any

import msgspec
import re2  # type: ignore[import-untyped]

from monitor.model import Sample

STALE_NAN_BITS = 0x7FF0000000000002
STALE_NAN: float = struct.unpack("<d", struct.pack("<Q", STALE_NAN_BITS))[0]
_MAX_REL = 0xFFFFFFFF  # the largest offset array('I') holds: 49.7 days of milliseconds
_DUMP_VERSION = 1  # one msgpack document (read, no longer written)
_STREAM_VERSION = 2
_MAGIC = b"portal-monitor history\n"
_FRAME = struct.Struct("<I")  # the length of each msgpack frame
LATE_MS = 60_000  # see History.generation
_MAX_RESETS = 64  # past this many decreases, and one in 16 samples, a series is not indexed for resets

_TS_CODE = "I" if array("I").itemsize == 4 else "L"  # 4-byte unsigned on every platform we run on


def is_stale(value: float) -> bool:
    """True for Prometheus's staleness marker (one NaN bit pattern, not any NaN)."""
    return math.isnan(value) and struct.pack("<d", value) == struct.pack("<Q", STALE_NAN_BITS)


def ms(t: float) -> int:
    """Seconds (float) to integer milliseconds, rounded as Prometheus's `timestamp.FromFloatSeconds`."""
    return int(round(t * 1000.0))


@lru_cache(maxsize=4096)
def compile_regex(pattern: str) -> Any:
    """RE2, fully anchored, `.` matching newline: Prometheus's `^(?s:pattern)$`."""
    return re2.compile(f"^(?s:{pattern})$")


@dataclass(frozen=True, slots=True)
class Matcher:
    """One label matcher: `op` is `=`, `!=`, `=~` or `!~`; a missing label reads as ""."""

    name: str
    op: str
    value: str
    _regex: Any = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, name: str, op: str, value: str) -> Matcher:
        if op not in ("=", "!=", "=~", "!~"):
            raise ValueError(f"unknown matcher operator {op!r} for label {name!r}")
        regex = compile_regex(value) if op in ("=~", "!~") else None
        return cls(name, op, value, regex)

    def matches(self, value: str) -> bool:
        if self.op == "=":
            return value == self.value
        if self.op == "!=":
            return value != self.value
        hit = self._regex.search(value) is not None
        return hit if self.op == "=~" else not hit


class Series:
    """One series: labels, relative timestamps, values, staleness markers, counter resets."""

    __slots__ = ("labels", "key", "base", "ts", "vs", "stale", "reset_t", "reset_prev", "shared", "memo")

    def __init__(self, labels: dict[str, str], key: tuple[tuple[str, str], ...], base: int) -> None:
        self.labels = labels  # includes __name__; never mutated after creation
        self.key = key
        self.base = base  # ms; ts holds t - base
        self.ts = array(_TS_CODE)
        self.vs = array("d")
        self.stale = array("q")  # absolute ms of staleness markers, ascending
        # Counter resets: absolute ms of samples lower than the sample before them, and that value.
        # None once the series falls more often than a counter would (a gauge): then readers scan.
        self.reset_t: array[int] | None = array("q")
        self.reset_prev: array[float] | None = array("d")
        self.shared = False  # ts/vs/stale are in a snapshot being written: copy before changing them
        # Readers' sums over windows of this series, kept between evaluations (the PromQL
        # engine's; each entry says which generation, base and samples it holds).
        self.memo: dict[int, Any] | None = None

    def __len__(self) -> int:
        return len(self.vs)

    @property
    def name(self) -> str:
        return self.labels.get("__name__", "")

    # ---- reading -------------------------------------------------------------------------
    def latest(self, t: int, lookback: int) -> tuple[int, float] | None:
        """The newest real sample in (t - lookback, t], unless a staleness marker follows it."""
        rel = t - self.base
        if rel < 0:
            return None
        i = bisect.bisect_right(self.ts, rel if rel <= _MAX_REL else _MAX_REL) - 1
        if i < 0:
            return None
        st = self.ts[i] + self.base
        if st <= t - lookback:
            return None
        if self.stale:
            k = bisect.bisect_right(self.stale, t) - 1
            if k >= 0 and self.stale[k] > st:
                return None
        return st, self.vs[i]

    def window(self, lo: int, hi: int) -> tuple[int, int]:
        """Indices [i, j) of the real samples with lo < t <= hi."""
        a = lo - self.base
        b = hi - self.base
        if b < 0:
            return 0, 0
        ts = self.ts
        i = 0 if a < 0 else bisect.bisect_right(ts, a if a <= _MAX_REL else _MAX_REL)
        j = bisect.bisect_right(ts, b if b <= _MAX_REL else _MAX_REL)
        return i, j

    def times(self, i: int, j: int) -> list[int]:
        base = self.base
        return [x + base for x in self.ts[i:j]]

    def resets_in(self, first: int, last: int) -> tuple[int, float] | None:
        """Count and sum of the values before each counter reset at first < t <= last; None when
        the series is not indexed for resets (it decreases too often to be a counter)."""
        if self.reset_t is None or self.reset_prev is None:
            return None
        if not self.reset_t:
            return 0, 0.0
        i = bisect.bisect_right(self.reset_t, first)
        j = bisect.bisect_right(self.reset_t, last)
        if i >= j:
            return 0, 0.0
        return j - i, math.fsum(self.reset_prev[i:j])

    def points(self) -> Iterator[tuple[int, float]]:
        """Every (ms, value) in time order, staleness markers included as STALE_NAN."""
        base = self.base
        k = 0
        stale = self.stale
        for rel, v in zip(self.ts, self.vs, strict=True):
            t = rel + base
            while k < len(stale) and stale[k] < t:
                yield stale[k], STALE_NAN
                k += 1
            yield t, v
        while k < len(stale):
            yield stale[k], STALE_NAN
            k += 1

    def nbytes(self) -> int:
        """Bytes held by the sample arrays (allocated, slack included)."""
        arrays = (self.ts, self.vs, self.stale, self.reset_t, self.reset_prev)
        return sum(sys.getsizeof(a) for a in arrays if a is not None)

    # ---- writing -------------------------------------------------------------------------
    def _own(self) -> None:
        """Before a change other than an append: arrays of its own if a snapshot holds these."""
        if self.shared:
            self.ts = self.ts[:]
            self.vs = self.vs[:]
            self.stale = self.stale[:]
            self.shared = False

    def _rebase(self, t: int) -> bool:
        """Make room for `t` in the 32-bit offsets; False if the series would span over 49 days."""
        if not self.ts:
            self.base = t
            return True
        first = self.ts[0] + self.base
        last = self.ts[-1] + self.base
        new_base = min(first, t)
        if max(last, t) - new_base > _MAX_REL:
            return False
        if new_base != self.base:
            shift = self.base - new_base
            self.ts = array(_TS_CODE, [x + shift for x in self.ts])
            self.base = new_base
        return True

    def put(self, t: int, v: float) -> bool:
        """Store one sample (or marker) at `t` ms; in order is O(1), out of order inserts."""
        if is_stale(v):
            return self._put_stale(t)
        rel = t - self.base
        if not self.ts or rel < 0 or rel > _MAX_REL:
            if not self._rebase(t):
                return False
            rel = t - self.base
        if self.stale and self.stale[-1] >= t:
            k = bisect.bisect_left(self.stale, t)
            if k < len(self.stale) and self.stale[k] == t:
                self._own()
                del self.stale[k]
        if not self.ts or rel > self.ts[-1]:
            if self.ts and self.reset_t is not None and self.reset_prev is not None:
                prev = self.vs[-1]
                if v < prev:
                    self.reset_t.append(t)
                    self.reset_prev.append(prev)
                    if len(self.reset_t) > _MAX_RESETS and len(self.reset_t) * 16 > len(self.vs):
                        self.reset_t = self.reset_prev = None
            self.ts.append(rel)
            self.vs.append(v)
            return True
        self._own()
        i = bisect.bisect_left(self.ts, rel)
        if self.ts[i] == rel:
            self.vs[i] = v
        else:
            self.ts.insert(i, rel)
            self.vs.insert(i, v)
        self._recompute_resets()
        return True

    def _put_stale(self, t: int) -> bool:
        rel = t - self.base
        if self.ts and 0 <= rel <= _MAX_REL:
            i = bisect.bisect_left(self.ts, rel)
            if i < len(self.ts) and self.ts[i] == rel:
                self._own()
                del self.ts[i]
                del self.vs[i]
                self._recompute_resets()
        if not self.stale or t > self.stale[-1]:
            self.stale.append(t)
        else:
            k = bisect.bisect_left(self.stale, t)
            if self.stale[k] != t:
                self._own()
                self.stale.insert(k, t)
        return True

    def _recompute_resets(self) -> None:
        vs = self.vs
        falls = list(compress(range(1, len(vs)), map(operator.lt, vs[1:], vs[:-1])))  # i: vs[i] < vs[i-1]
        if len(falls) > _MAX_RESETS and len(falls) * 16 > len(vs):
            self.reset_t = self.reset_prev = None
        else:
            ts, base = self.ts, self.base
            self.reset_t = array("q", [ts[i] + base for i in falls])
            self.reset_prev = array("d", [vs[i - 1] for i in falls])

    def drop_before(self, cutoff: int) -> int:
        """Forget samples and markers at t < cutoff; returns how many samples went."""
        self._own()
        rel = cutoff - self.base
        n = 0
        if rel > 0 and self.ts:
            n = bisect.bisect_left(self.ts, min(rel, _MAX_REL + 1))
            if n:
                del self.ts[:n]
                del self.vs[:n]
        if self.stale and self.stale[0] < cutoff:
            del self.stale[: bisect.bisect_left(self.stale, cutoff)]
        if self.reset_t and self.reset_prev is not None and self.reset_t[0] < cutoff:
            k = bisect.bisect_left(self.reset_t, cutoff)
            del self.reset_t[:k]
            del self.reset_prev[:k]
        return n


def _by_key(series: Series) -> tuple[tuple[str, str], ...]:
    return series.key


def label_key(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


class _Dump(msgspec.Struct, array_like=True):
    """The first format: one msgpack document."""

    version: int
    series: list[tuple[list[tuple[str, str]], int, bytes, bytes, bytes]]  # labels, base, ts, vs, stale
    sources: dict[str, list[list[tuple[str, str]]]]


class _Header(msgspec.Struct, array_like=True):
    version: int
    byteorder: str  # sys.byteorder of the writer: the arrays' raw bytes are in it
    series: int
    sources: dict[str, list[list[tuple[str, str]]]]


class _SeriesHead(msgspec.Struct, array_like=True):
    labels: list[tuple[str, str]]
    base: int
    samples: int  # then samples x 4 bytes of offsets, samples x 8 of values
    stale: int  # then stale x 8 bytes of marker times


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a dump writes: each series' arrays and how much of them is the snapshot's."""

    series: list[tuple[tuple[tuple[str, str], ...], int, array[int], array[float], array[int], int, int]]
    sources: dict[str, list[tuple[tuple[str, str], ...]]]


def write_snapshot(snap: Snapshot, path: str | os.PathLike[str]) -> None:
    """Write `snap` to `path` atomically (a temporary file beside it, then rename); runs on any
    thread while the history takes appends (it reads each array's first n items, a copy at a time)."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    encode = msgspec.msgpack.Encoder().encode
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_MAGIC)
            _frame(
                f,
                encode(
                    _Header(
                        _STREAM_VERSION,
                        sys.byteorder,
                        len(snap.series),
                        {src: [list(k) for k in keys] for src, keys in snap.sources.items()},
                    )
                ),
            )
            for key, base, ts, vs, stale, n, n_stale in snap.series:
                _frame(f, encode(_SeriesHead(list(key), base, n, n_stale)))
                f.write(ts[:n])  # slices: the live arrays may grow meanwhile, and must not be pinned
                f.write(vs[:n])
                f.write(stale[:n_stale])
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _frame(f: IO[bytes], data: bytes) -> None:
    f.write(_FRAME.pack(len(data)))
    f.write(data)


def _read_frame(f: IO[bytes], path: str | os.PathLike[str], what: str) -> bytes:
    head = f.read(_FRAME.size)
    if len(head) != _FRAME.size:
        raise ValueError(f"history file {path}: ends inside the {what}")
    (size,) = _FRAME.unpack(head)
    data = f.read(size)
    if len(data) != size:
        raise ValueError(f"history file {path}: ends inside the {what}")
    return data


def _read_array(f: IO[bytes], code: str, n: int, swap: bool, path: str | os.PathLike[str]) -> array[Any]:
    """n items read into an array allocated at its final size (no intermediate bytes)."""
    out = array(code, [0]) * n if code != "d" else array(code, [0.0]) * n
    if n and f.readinto(memoryview(out).cast("B")) != n * out.itemsize:  # type: ignore[attr-defined]
        raise ValueError(f"history file {path}: ends inside a series' samples")
    if swap:
        out.byteswap()
    return out


class History:
    """Every series' recent samples; see the module docstring."""

    def __init__(
        self,
        retention_s: float = 3600.0,
        max_samples: int = 10_000_000,
        retention_by_name: Mapping[str, float] | None = None,
    ) -> None:
        self.retention_s = retention_s  # seconds kept of every metric not in retention_by_name
        # Metric name -> seconds kept, for the few metrics kept longer than retention_s (an entry
        # shorter than retention_s does not shorten it).
        self.retention_by_name: dict[str, float] = dict(retention_by_name or {})
        self.max_samples = max_samples
        self.refused = 0  # samples not stored: over the cap, or more than 49 days from the rest
        self._series: dict[tuple[tuple[str, str], ...], Series] = {}
        self._by_name: dict[str, dict[tuple[tuple[str, str], ...], Series]] = {}
        self._sources: dict[str, set[tuple[tuple[str, str], ...]]] = {}
        self._samples = 0
        self._strings: dict[str, str] = {}
        # select() results by matchers, valid while no series is added or removed
        self._selected: dict[tuple[Matcher, ...], list[Series]] = {}
        # Readers may keep results computed for times more than LATE_MS before `newest` (the latest
        # time written, ms): `generation` changes whenever a write lands at or before a time its
        # series already had, or more than LATE_MS before `newest`, or everything is replaced.
        self.generation = 0
        self.newest = -(2**62)
        self._snapshots = 0  # snapshots not yet released (being written): trim() waits
        self._save_lock: asyncio.Lock | None = None  # held by save() from snapshot to written file

    # ---- writing -------------------------------------------------------------------------
    def _intern(self, s: str) -> str:
        return self._strings.setdefault(s, s)

    def _get(self, labels: Mapping[str, str], t: int) -> Series:
        key = label_key(labels)
        series = self._series.get(key)
        if series is None:
            interned = {self._intern(k): self._intern(v) for k, v in key}
            key = tuple(interned.items())
            series = Series(interned, key, t)
            self._series[key] = series
            self._selected.clear()
            self._by_name.setdefault(interned.get("__name__", ""), {})[key] = series
        return series

    def _note_write(self, series: Series, t: int) -> None:
        if (
            t < self.newest - LATE_MS
            or (series.ts and series.ts[-1] + series.base >= t)
            or (series.stale and series.stale[-1] >= t)
        ):
            self.generation += 1
        if t > self.newest:
            self.newest = t

    def add(self, labels: Mapping[str, str], t: float, value: float) -> bool:
        """One sample (or `STALE_NAN`) of the series `labels` (with `__name__`) at `t` seconds."""
        return self.add_ms(labels, ms(t), value)

    def add_ms(self, labels: Mapping[str, str], t: int, value: float) -> bool:
        if self._samples >= self.max_samples and not is_stale(value):
            self.refused += 1
            return False
        series = self._get(labels, t)
        self._note_write(series, t)
        before = len(series)
        if not series.put(t, value):
            self.refused += 1
            return False
        self._samples += len(series) - before
        return True

    def append(self, t: float, samples: Iterable[Sample], source: str = "") -> None:
        """One check run's samples at `t`; series `source` produced last time and not now go stale."""
        tm = ms(t)
        now: set[tuple[tuple[str, str], ...]] = set()
        for s in samples:
            labels = dict(s.labels)
            labels["__name__"] = s.name
            series = self._get(labels, tm)
            now.add(series.key)
            if self._samples >= self.max_samples:
                self.refused += 1
                continue
            if (series.ts and series.ts[-1] + series.base >= tm) or tm < self.newest - LATE_MS:
                self.generation += 1
            before = len(series)
            if series.put(tm, float(s.value)):
                self._samples += len(series) - before
            else:
                self.refused += 1
        for key in self._sources.get(source, set()) - now:
            gone = self._series.get(key)
            if gone is not None:
                self._note_write(gone, tm)
                gone.put(tm, STALE_NAN)
        self._sources[source] = now
        if tm > self.newest:
            self.newest = tm

    def retention_of(self, name: str) -> float:
        """Seconds the series of metric `name` are kept: `retention_s`, or its longer entry."""
        return max(self.retention_s, self.retention_by_name.get(name, 0.0))

    @property
    def longest_retention_s(self) -> float:
        """Seconds the longest-kept metric is kept."""
        return max([self.retention_s, *self.retention_by_name.values()])

    def trim(self, now: float) -> int:
        """Drop samples older than their metric's retention (`retention_of`) before `now`, and
        series left empty; returns samples dropped."""
        if self._snapshots:
            return 0  # a snapshot is being written: its arrays stay as they are until the next trim
        cutoff = ms(now - self.retention_s)
        cutoffs = {name: ms(now - self.retention_of(name)) for name in self.retention_by_name}
        dropped = 0
        empty = []
        for key, series in self._series.items():
            dropped += series.drop_before(cutoffs.get(series.name, cutoff))
            if not series.vs and not series.stale:
                empty.append(key)
        for key in empty:
            series = self._series.pop(key)
            self._selected.clear()
            by = self._by_name.get(series.name)
            if by is not None:
                by.pop(key, None)
                if not by:
                    del self._by_name[series.name]
        self._samples -= dropped
        return dropped

    def clear(self) -> None:
        self._selected.clear()
        self.generation += 1
        self.newest = -(2**62)
        self._series.clear()
        self._by_name.clear()
        self._sources.clear()
        self._samples = 0

    # ---- reading -------------------------------------------------------------------------
    def select(self, matchers: Sequence[Matcher]) -> list[Series]:
        """The series every matcher accepts (a missing label reads as ""), in label order.

        The list is cached until a series is added or removed: callers must not change it."""
        cache_key = tuple(matchers)
        found = self._selected.get(cache_key)
        if found is None:
            found = self._select(matchers)
            if len(self._selected) > 10_000:
                self._selected.clear()
            self._selected[cache_key] = found
        return found

    def _select(self, matchers: Sequence[Matcher]) -> list[Series]:
        name = next((m.value for m in matchers if m.name == "__name__" and m.op == "="), None)
        pool: Iterable[Series]
        if name is not None:
            pool = self._by_name.get(name, {}).values()
        else:
            pool = self._series.values()
        rest = [m for m in matchers if not (m.name == "__name__" and m.op == "=")]
        if rest:
            pool = [s for s in pool if all(m.matches(s.labels.get(m.name, "")) for m in rest)]
        return sorted(pool, key=_by_key)

    def series(self) -> Iterator[Series]:
        return iter(self._series.values())

    def label_names(self, matchers: Sequence[Matcher] = ()) -> list[str]:
        pool = self.select(matchers) if matchers else self._series.values()
        return sorted({k for s in pool for k in s.labels})

    def label_values(self, name: str, matchers: Sequence[Matcher] = ()) -> list[str]:
        pool = self.select(matchers) if matchers else self._series.values()
        return sorted({s.labels[name] for s in pool if name in s.labels})

    @property
    def sample_count(self) -> int:
        return self._samples

    @property
    def series_count(self) -> int:
        return len(self._series)

    def usage(self, metric: str | None = None) -> tuple[int, int]:
        """(samples, bytes of sample arrays) for one metric name, or for everything."""
        pool = self._series.values() if metric is None else self._by_name.get(metric, {}).values()
        samples = 0
        nbytes = 0
        for s in pool:
            samples += len(s)
            nbytes += s.nbytes()
        return samples, nbytes

    # ---- persistence ---------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """References to every series' arrays and their lengths (cheap: no sample is copied);
        hand it to `write_snapshot` on any thread, then `release` it here."""
        series = []
        for s in self._series.values():
            s.shared = True
            series.append((s.key, s.base, s.ts, s.vs, s.stale, len(s.ts), len(s.stale)))
        self._snapshots += 1
        return Snapshot(series, {src: list(keys) for src, keys in self._sources.items()})

    def release(self, snap: Snapshot) -> None:
        """The snapshot is written: series may change their arrays in place again."""
        self._snapshots -= 1
        if not self._snapshots:
            for s in self._series.values():
                s.shared = False

    def dump(self, path: str | os.PathLike[str]) -> None:
        """Write everything to `path` atomically, on this thread."""
        snap = self.snapshot()
        try:
            write_snapshot(snap, path)
        finally:
            self.release(snap)

    async def save(
        self,
        path: str | os.PathLike[str],
        writer: Callable[[Snapshot, str | os.PathLike[str]], None] = write_snapshot,
    ) -> None:
        """`dump` with the encoding and the write on a thread; the event loop only takes the
        snapshot. One write at a time, in call order: the lock is let go when the file is
        written, not when the caller stops waiting, so a cancelled caller's write still finishes
        before the next one starts (and a half-written file is never renamed into place)."""
        if self._save_lock is None:
            self._save_lock = asyncio.Lock()
        lock = self._save_lock
        await lock.acquire()
        try:
            snap = self.snapshot()
        except BaseException:
            lock.release()
            raise
        fut = asyncio.ensure_future(asyncio.to_thread(writer, snap, path))

        def done(f: asyncio.Future[None]) -> None:
            self.release(snap)
            lock.release()
            if not f.cancelled():
                f.exception()  # retrieved: a cancelled caller's failure is not an unhandled one

        fut.add_done_callback(done)
        await asyncio.shield(fut)

    def load(self, path: str | os.PathLike[str]) -> int:
        """Replace the contents with a dump; returns the samples restored (over the cap: refused)."""
        with open(path, "rb") as f:
            magic = f.read(len(_MAGIC))
            if magic != _MAGIC:
                return self._load_document(path, magic + f.read())
            try:
                header = msgspec.msgpack.decode(_read_frame(f, path, "header"), type=_Header)
            except msgspec.DecodeError as exc:
                raise ValueError(f"history file {path}: not a history dump ({exc})") from exc
            if header.version != _STREAM_VERSION:
                raise ValueError(f"history file {path}: version {header.version}, expected {_STREAM_VERSION}")
            swap = header.byteorder != sys.byteorder
            decode = msgspec.msgpack.Decoder(_SeriesHead).decode
            self.clear()
            for _ in range(header.series):
                try:
                    head = decode(_read_frame(f, path, "series list"))
                except msgspec.DecodeError as exc:
                    raise ValueError(f"history file {path}: a series head is damaged ({exc})") from exc
                ts = _read_array(f, _TS_CODE, head.samples, swap, path)
                vs = _read_array(f, "d", head.samples, swap, path)
                stale = _read_array(f, "q", head.stale, swap, path)
                self._restore(dict(head.labels), head.base, ts, vs, stale)
        self._restore_sources(header.sources)
        return self._samples

    def _load_document(self, path: str | os.PathLike[str], raw: bytes) -> int:
        """The first format: one msgpack document."""
        try:
            doc = msgspec.msgpack.decode(raw, type=_Dump)
        except msgspec.DecodeError as exc:
            raise ValueError(f"history file {path}: not a history dump ({exc})") from exc
        del raw
        if doc.version != _DUMP_VERSION:
            raise ValueError(f"history file {path}: version {doc.version}, expected {_STREAM_VERSION}")
        self.clear()
        for key, base, ts_raw, vs_raw, stale_raw in doc.series:
            ts = array(_TS_CODE)
            ts.frombytes(ts_raw)
            vs = array("d")
            vs.frombytes(vs_raw)
            stale = array("q")
            stale.frombytes(stale_raw)
            if len(ts) != len(vs):
                raise ValueError(f"history file {path}: series {dict(key)} has {len(ts)} times, {len(vs)} values")
            self._restore({k: v for k, v in key}, base, ts, vs, stale)
        self._restore_sources(doc.sources)
        return self._samples

    def _restore(self, labels: dict[str, str], base: int, ts: array[int], vs: array[float], stale: array[int]) -> None:
        series = self._get(labels, base)
        series.base, series.ts, series.vs, series.stale = base, ts, vs, stale
        room = self.max_samples - self._samples
        if len(vs) > room:
            cut = len(vs) - max(room, 0)
            self.refused += cut
            del ts[:cut]
            del vs[:cut]
        series._recompute_resets()
        self._samples += len(vs)
        if ts:
            self.newest = max(self.newest, ts[-1] + base)

    def _restore_sources(self, sources: Mapping[str, list[list[tuple[str, str]]]]) -> None:
        for src, keys in sources.items():
            self._sources[src] = {tuple((self._intern(k), self._intern(v)) for k, v in key) for key in keys}
