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
`refused`. `trim(now)` drops what is older than `retention_s`. `dump(path)`/`load(path)` keep it
across restarts (msgpack via msgspec; written to a temporary file and renamed): a gap stays a gap.

`select(matchers)` answers in label order and caches its answer until a series is added or
removed. Readers that keep results computed for past times watch `generation` (it changes when a
write lands in the past: before a time its series already had, or more than LATE_MS before the
newest write) and `newest` (the latest time written).

Times at this interface are seconds (float); inside, milliseconds (int), as Prometheus keeps them.
"""

from __future__ import annotations

import bisect
import math
import os
import struct
import sys
import tempfile
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import msgspec
import re2  # type: ignore[import-untyped]

from monitor.model import Sample

STALE_NAN_BITS = 0x7FF0000000000002
STALE_NAN: float = struct.unpack("<d", struct.pack("<Q", STALE_NAN_BITS))[0]
_MAX_REL = 0xFFFFFFFF  # the largest offset array('I') holds: 49.7 days of milliseconds
_DUMP_VERSION = 1
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

    __slots__ = ("labels", "key", "base", "ts", "vs", "stale", "reset_t", "reset_prev")

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
                del self.ts[i]
                del self.vs[i]
                self._recompute_resets()
        if not self.stale or t > self.stale[-1]:
            self.stale.append(t)
        else:
            k = bisect.bisect_left(self.stale, t)
            if self.stale[k] != t:
                self.stale.insert(k, t)
        return True

    def _recompute_resets(self) -> None:
        reset_t = array("q")
        reset_prev = array("d")
        vs = self.vs
        base = self.base
        for i in range(1, len(vs)):
            if vs[i] < vs[i - 1]:
                reset_t.append(self.ts[i] + base)
                reset_prev.append(vs[i - 1])
        if len(reset_t) > _MAX_RESETS and len(reset_t) * 16 > len(vs):
            self.reset_t = self.reset_prev = None
        else:
            self.reset_t, self.reset_prev = reset_t, reset_prev

    def drop_before(self, cutoff: int) -> int:
        """Forget samples and markers at t < cutoff; returns how many samples went."""
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
    version: int
    series: list[tuple[list[tuple[str, str]], int, bytes, bytes, bytes]]  # labels, base, ts, vs, stale
    sources: dict[str, list[list[tuple[str, str]]]]


class History:
    """Every series' recent samples; see the module docstring."""

    def __init__(self, retention_s: float = 3600.0, max_samples: int = 10_000_000) -> None:
        self.retention_s = retention_s
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

    def trim(self, now: float) -> int:
        """Drop samples older than `retention_s` before `now`, and series left empty; returns samples dropped."""
        cutoff = ms(now - self.retention_s)
        dropped = 0
        empty = []
        for key, series in self._series.items():
            dropped += series.drop_before(cutoff)
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
    def dump(self, path: str | os.PathLike[str]) -> None:
        """Write everything to `path` atomically (a temporary file beside it, then rename)."""
        doc = _Dump(
            _DUMP_VERSION,
            [(list(s.key), s.base, s.ts.tobytes(), s.vs.tobytes(), s.stale.tobytes()) for s in self._series.values()],
            {src: [list(k) for k in keys] for src, keys in self._sources.items()},
        )
        target = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(msgspec.msgpack.encode(doc))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def load(self, path: str | os.PathLike[str]) -> int:
        """Replace the contents with a dump; returns the samples restored (over the cap: refused)."""
        try:
            doc = msgspec.msgpack.decode(Path(path).read_bytes(), type=_Dump)
        except msgspec.DecodeError as exc:
            raise ValueError(f"history file {path}: not a history dump ({exc})") from exc
        if doc.version != _DUMP_VERSION:
            raise ValueError(f"history file {path}: version {doc.version}, expected {_DUMP_VERSION}")
        self.clear()
        for key, base, ts, vs, stale in doc.series:
            labels = {k: v for k, v in key}
            series = self._get(labels, base)
            series.base = base
            series.ts = array(_TS_CODE)
            series.ts.frombytes(ts)
            series.vs = array("d")
            series.vs.frombytes(vs)
            series.stale = array("q")
            series.stale.frombytes(stale)
            if len(series.ts) != len(series.vs):
                raise ValueError(
                    f"history file {path}: series {labels} has {len(series.ts)} times, {len(series.vs)} values"
                )
            room = self.max_samples - self._samples
            if len(series.vs) > room:
                cut = len(series.vs) - max(room, 0)
                self.refused += cut
                del series.ts[:cut]
                del series.vs[:cut]
            series._recompute_resets()
            self._samples += len(series.vs)
            if series.ts:
                self.newest = max(self.newest, series.ts[-1] + series.base)
        for src, keys in doc.sources.items():
            self._sources[src] = {tuple((self._intern(k), self._intern(v)) for k, v in key) for key in keys}
        return self._samples
