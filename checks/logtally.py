"""Grouping parsed log records into normalized counts, once per distinct value.

A parser (`logparse`) turns a chunk of lines into *records*; `Normalizer.tally()` groups
them into a `Tally`: lines by (time, level, status), durations by time (count, sum, and
counts per histogram bucket and sketch slot), auth failures by (time, client IP). The check
adds a `Tally` to its counters and its window.

Why grouping first: a chunk of a few thousand lines has few distinct (level, status) pairs
and durations, so `collections.Counter` (C) does the per-line work and the Python code
below (normalizing, rules) runs once per distinct value, not once per line.

Raw values are normalized the same whatever their JSON type: a level word, a pino number
or an alias; a status as number or numeric string; a duration as number or numeric string.
An object or array where a scalar was expected counts as "no usable value". Booleans are
numbers (True == 1), as they are for `Counter`, so grouping never changes a result.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import compress, repeat
from operator import is_
from typing import Any, Protocol

FIELDS = ("time", "level", "status", "duration", "ip", "path", "message")
LEVELS = ("fatal", "error", "warn", "info", "http", "verbose", "debug", "trace", "silly", "other", "unknown")
ERROR_LEVELS = frozenset({"error", "fatal"})
_LEVEL_ALIASES = {
    "warning": "warn",
    "err": "error",
    "critical": "fatal",
    "crit": "fatal",
    "emerg": "fatal",
    "emergency": "fatal",
    "alert": "fatal",
    "panic": "fatal",
    "notice": "info",
    "information": "info",
}
_PINO_LEVELS = ((60, "fatal"), (50, "error"), (40, "warn"), (30, "info"), (20, "debug"))
_ISO_SECOND = re.compile(r"(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d)(?:[.,]\d+)?(Z|[+-]\d\d(?::?\d\d)?)?$")
_CACHE_MAX = 4096  # distinct raw values remembered per normalizer (bounded memory)


# --- normalizing raw values (one call per distinct value, cached) --------------------------


def norm_level(v: Any) -> str:
    """A level word from a winston word, a pino number, or a syslog-style alias.

    Numbers follow pino's scale (10 trace … 60 fatal; custom levels fall in the band below).
    Anything unrecognised is `other`, a missing level `unknown`: label values stay bounded.
    """
    if v is None:
        return "unknown"
    if isinstance(v, str):
        word = v.strip().lower()
        if _is_number_text(word):
            v = int(word)
        else:
            word = _LEVEL_ALIASES.get(word, word)
            return word if word in LEVELS else "other"
    if isinstance(v, (int, float)):  # bools are numbers, as Counter sees them (True == 1)
        for floor, name in _PINO_LEVELS:
            if v >= floor:
                return name
        return "trace"
    return "other"


def norm_status(v: Any) -> int | None:
    """An HTTP status 100..599 from a number or a string of ASCII digits; None otherwise."""
    if isinstance(v, str):
        v = v.strip()
        if not _is_number_text(v):
            return None
        v = int(v)
    if isinstance(v, (int, float)) and 100 <= v < 600 and v == int(v):
        return int(v)
    return None


_MAX_DIGITS = 18  # a level or status written with more digits is not one (and int() has a limit)


def _is_number_text(text: str) -> bool:
    """ASCII digits only, and few of them: `str.isdigit()` also accepts "²" and "٣", which
    `int()` refuses or reads as another number."""
    return 0 < len(text) <= _MAX_DIGITS and text.isascii() and text.isdigit()


def norm_number(v: Any) -> float | None:
    """A finite, non-negative number from a number or an ASCII numeric string; None otherwise
    (an integer beyond float range too)."""
    if isinstance(v, str):
        if not v.isascii():  # float() also reads "٣" as 3
            return None
        try:
            v = float(v)
        except ValueError:
            return None
    if isinstance(v, (int, float)):
        x = _as_float(v)
        if math.isfinite(x) and x >= 0:
            return x
    return None


def _as_float(v: int | float) -> float:
    """float(v), with an integer beyond float range (JSON allows any number of digits) as ±inf."""
    try:
        return float(v)
    except OverflowError:
        return math.inf if v > 0 else -math.inf


def norm_time(v: Any) -> float | None:
    """Epoch seconds, to the whole second, from epoch s/ms/µs/ns or an ISO 8601 string.

    Whole seconds are all the window needs (its buckets are whole seconds). Times without
    a zone are UTC, as winston's `timestamp()` writes them.
    """
    if isinstance(v, str):
        s = v.strip()
        m = _ISO_SECOND.match(s)
        if m is None:
            x = norm_number(s)
            return None if x is None else norm_time(x)
        try:
            dt = datetime.fromisoformat(m.group(1) + ("+00:00" if m.group(2) in (None, "Z") else m.group(2)))
        except ValueError:
            return None
        return float(math.floor(dt.timestamp()))
    if isinstance(v, (int, float)) and v > 0:
        x = _as_float(v)
        for limit, scale in ((1e17, 1e9), (1e14, 1e6), (1e11, 1e3)):
            if x > limit:
                x /= scale
                break
        return float(math.floor(x)) if math.isfinite(x) else None
    return None


def first(values: Any) -> Any:
    """The first value that is not None, from a tuple of alternative paths' values."""
    for v in values:
        if v is not None:
            return v
    return None


class _Cached:
    """A normalizer with a bounded cache of raw value -> normalized value. A raw value is
    a field's value, or the tuple of its alternative paths' values (first present wins)."""

    __slots__ = ("fn", "cache")

    def __init__(self, fn: Any) -> None:
        self.fn = fn
        self.cache: dict[Any, Any] = {}

    def __call__(self, raw: Any) -> Any:
        try:
            return self.cache[raw]
        except KeyError:
            pass
        out = self.fn(first(raw) if raw.__class__ is tuple else raw)
        if len(self.cache) >= _CACHE_MAX:
            self.cache.clear()
        self.cache[raw] = out
        return out


# --- auth failures ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuthRule:
    """A line is an auth failure when every condition given here holds (any rule may match)."""

    statuses: frozenset[int] | None = None
    path: re.Pattern[str] | None = None
    message: re.Pattern[str] | None = None

    def matches(self, status: int | None, path: str | None, message: str | None) -> bool:
        if self.statuses is not None and status not in self.statuses:
            return False
        if self.path is not None and (path is None or self.path.search(path) is None):
            return False
        return self.message is None or (message is not None and self.message.search(message) is not None)


# --- the result of one chunk -----------------------------------------------------------------


@dataclass(slots=True)
class Durations:
    """The durations placed at one time: how many, their sum in seconds, and how many fall
    in each class of `classify` (the check's histogram bucket and window sketch slot)."""

    count: int = 0
    total_s: float = 0.0
    classes: Counter[tuple[int, int]] = field(default_factory=Counter)


@dataclass(frozen=True, slots=True)
class Tally:
    """Normalized counts of one chunk. A time of None means "when it was read"."""

    groups: Counter[tuple[float | None, str, int | None]] = field(default_factory=Counter)
    durations: dict[float | None, Durations] = field(default_factory=dict)
    auth: Counter[tuple[float | None, str | None]] = field(default_factory=Counter)


@dataclass(frozen=True, slots=True)
class Parsed:
    """A parsed chunk: one record per parsed line, and the lines themselves (same order)."""

    records: list[Any]
    lines: list[bytes]


class Reader(Protocol):
    """How a parser's records are read. `layout` maps the fields counted on every line
    (time, level, status, duration) to record slots; `detail_layout` maps the fields only
    auth candidates need (ip, path, message) to slots of what `details()` returns."""

    @property
    def layout(self) -> Mapping[str, tuple[int, ...]]: ...

    @property
    def detail_layout(self) -> Mapping[str, tuple[int, ...]]: ...

    def column(self, records: Sequence[Any], slot: int) -> list[Any]: ...

    def details(self, parsed: Parsed, idx: list[int]) -> list[Any]: ...

    def detail_column(self, details: list[Any], slot: int) -> list[Any]: ...


class Normalizer:
    """Groups a parser's records into a Tally; owns the value caches and the auth rules."""

    def __init__(
        self,
        reader: Reader,
        *,
        use_time: bool,
        duration_scale: float,
        classify: Callable[[float], tuple[int, int]] = lambda s: (0, 0),
        auth: Sequence[AuthRule] = (),
    ) -> None:
        self.reader = reader
        self.layout = reader.layout
        self.use_time = use_time and bool(self.layout.get("time"))
        self.auth = tuple(auth)
        self._level = _Cached(norm_level)
        self._status = _Cached(norm_status)
        scale = duration_scale

        def duration(v: Any) -> tuple[float, tuple[int, int]] | None:
            x = norm_number(v)
            return None if x is None else (x * scale, classify(x * scale))

        # raw duration -> (seconds, class): the work per distinct duration is one lookup
        self._duration = _Cached(duration)
        self._iso_seconds: dict[str, float | None] = {}  # "2024-05-01T12:00:00" -> epoch seconds
        statuses = [r.statuses for r in self.auth]
        # When every rule names statuses, only lines with one of them need a closer look.
        self._auth_statuses: frozenset[int] | None = None
        if statuses and all(s is not None for s in statuses):
            self._auth_statuses = frozenset(code for s in statuses if s is not None for code in s)

    def tally(self, parsed: Parsed) -> Tally:
        """The records' counts, grouped by distinct values (C-level Counters)."""
        if not parsed.records:
            return Tally()
        try:
            return self._count(parsed, safe=False)
        except TypeError:  # an object or array where a scalar was expected: unhashable
            return self._count(parsed, safe=True)

    def _count(self, parsed: Parsed, *, safe: bool) -> Tally:
        out = Tally()
        col = self._columns(parsed.records, safe)
        level, status, duration = col("level"), col("status"), col("duration")
        nl, ns, nd = self._level, self._status, self._duration
        groups, durations = out.groups, out.durations
        tcol: list[float | None] | None = None
        if self.use_time:
            raw_times = col("time")
            # once per distinct value, then one C-level lookup per line
            line_time = self._line_time
            tcol = list(map({raw: line_time(raw) for raw in set(raw_times)}.__getitem__, raw_times))
            triples = Counter(zip(tcol, level, status, strict=True))
            for (t, lv, st), n in triples.items():
                groups[(t, nl(lv), ns(st))] += n
            for (t, du), n in Counter(zip(tcol, duration, strict=True)).items():
                if (d := nd(du)) is not None:
                    acc = durations.get(t) or durations.setdefault(t, Durations())
                    acc.count += n
                    acc.total_s += d[0] * n
                    acc.classes[d[1]] += n
            distinct_status = {k[2] for k in triples}
        else:
            pairs = Counter(zip(level, status, strict=True))
            for (lv, st), n in pairs.items():
                groups[(None, nl(lv), ns(st))] += n
            acc = Durations()
            classes, known = acc.classes, nd.cache
            for du, n in Counter(duration).items():
                if (d := known[du] if du in known else nd(du)) is not None:
                    acc.count += n
                    acc.total_s += d[0] * n
                    classes[d[1]] += n
            if acc.count:
                durations[None] = acc
            distinct_status = {k[1] for k in pairs}
        if self.auth:
            self._count_auth(parsed, status, distinct_status, tcol, out)
        return out

    def _line_time(self, raw: Any) -> float | None:
        v = first(raw) if raw.__class__ is tuple else raw
        if v.__class__ is str and len(v) == 24 and v[19] == "." and v[23] == "Z":
            # winston's toISOString(): every line of one second shares one parse
            try:
                return self._iso_seconds[v[:19]]
            except KeyError:
                if len(self._iso_seconds) >= _CACHE_MAX:
                    self._iso_seconds.clear()
                second = self._iso_seconds[v[:19]] = norm_time(v[:19] + "Z")
                return second
        return norm_time(v)

    def _count_auth(
        self,
        parsed: Parsed,
        status: list[Any],
        distinct_status: set[Any],
        tcol: list[float | None] | None,
        out: Tally,
    ) -> None:
        ns = self._status
        if self._auth_statuses is not None:
            idx: list[int] = []
            for raw in distinct_status:
                if ns(raw) in self._auth_statuses:  # list.index scans in C; we loop per hit
                    i = -1
                    for _ in range(status.count(raw)):
                        i = status.index(raw, i + 1)
                        idx.append(i)
            idx.sort()
        else:
            idx = list(range(len(parsed.records)))
        if not idx:
            return
        details = self.reader.details(parsed, idx)  # decoded again, for the candidates only
        path, message, ip = (self._detail_strings(details, f) for f in ("path", "message", "ip"))
        times = [tcol[i] for i in idx] if tcol is not None else [None] * len(idx)
        rules, auth = self.auth, out.auth
        for i, t, p, m, source in zip(idx, times, path, message, ip, strict=True):
            st = ns(status[i])
            for rule in rules:
                if rule.matches(st, p, m):
                    auth[(t, source)] += 1
                    break

    def _columns(self, records: Sequence[Any], safe: bool) -> Any:
        """col(field) -> the field's raw values, one per record (a tuple of the alternative
        paths' values when it has several); computed once per field."""
        memo: dict[str, list[Any]] = {}

        def col(name: str) -> list[Any]:
            if name not in memo:
                memo[name] = self._column(records, self.layout.get(name, ()), safe)
            return memo[name]

        return col

    def _column(self, records: Sequence[Any], slots: tuple[int, ...], safe: bool) -> list[Any]:
        if not slots:
            return [None] * len(records)
        read = self.reader.column if not safe else (lambda r, i: _sanitize(self.reader.column(r, i)))
        first_col = read(records, slots[0])
        if len(slots) == 1 or None not in first_col:
            return first_col
        # The alternatives matter only where the first path is missing, and only if present.
        missing = list(compress(records, map(is_, first_col, repeat(None))))
        present = [i for i in slots[1:] if (c := read(missing, i)).count(None) != len(c)]
        if not present:
            return first_col
        return list(zip(first_col, *(read(records, i) for i in present), strict=True))

    def _detail_strings(self, details: list[Any], name: str) -> list[str | None]:
        """A detail field's value per detail (the first of its paths present), or None
        where it is not a string."""
        slots = self.reader.detail_layout.get(name, ())
        if not slots:
            return [None] * len(details)
        cols = [self.reader.detail_column(details, i) for i in slots]
        values = cols[0] if len(cols) == 1 else [first(vs) for vs in zip(*cols, strict=True)]
        return [v if v.__class__ is str else None for v in values]


def _as_str(v: Any) -> str | None:
    return v if isinstance(v, str) else None


_OBJECT = "<object>"  # stands for an object or array where a scalar was expected: no level/status/number
_SCALARS = (str, int, float, type(None))


def _sanitize(column: list[Any]) -> list[Any]:
    """The column with unhashable values (objects, arrays) replaced by a marker that every
    normalizer reads as "not a usable value"."""
    return [v if isinstance(v, _SCALARS) else _OBJECT for v in column]
