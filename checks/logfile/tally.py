"""Grouping parsed log records into normalized counts, once per distinct value.

A parser (`parse`) turns a chunk of lines into *records*; `Normalizer.tally()` groups
them into a `Tally`: lines by (time, level, status), durations by time (count, sum, and
counts per histogram bucket and sketch slot), auth failures by (time, client IP). The check
adds a `Tally` to its counters and its window.

Why grouping first: a chunk of a few thousand lines has few distinct (level, status) pairs
and durations, so `collections.Counter` (C) does the per-line work and the Python code
below (normalizing, rules) runs once per distinct value, not once per line.

Batches (lines placed at their read time, JSON records): all the chunks of one run share
one time, so `Normalizer.add()` only counts each chunk's whole records into one pending
`Counter` (one C-level pass per chunk; the records are frozen Structs holding the level,
status and duration) and `flush()` normalizes each distinct record once per batch. The
per-chunk Python work is then the auth candidates only, and chunks can be small enough to
stay in the CPU cache. Durations are summed in the order their values first appear in the
batch, so a sum may differ in its last bits from one summed chunk by chunk; every count is
the same. Lines placed at their own time, and regex records (which may hold the whole
line, so nearly all distinct), are grouped chunk by chunk by `tally()`.

Raw values are normalized by `normalize` (once per distinct value, cached).

Why one module of about 450 lines: `Normalizer` is the hot path of the log check (a million
lines a second go through `add`/`flush`/`tally`), and its helpers above are its column
operations; split apart they would be read together anyway, and a call across modules costs
a global lookup per distinct value.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import compress, repeat
from operator import is_, is_not
from typing import Any, Protocol

from checks.logfile.normalize import (
    CACHE_MAX,
    LOOPBACK,
    Cached,
    Network,
    client_address,
    first,
    norm_level,
    norm_number,
    norm_status,
    norm_time,
)
from checks.logfile.window import Classifier

BATCH_MAX = 25_000  # distinct records pending before the batch must be flushed (bounded memory)
DURATIONS_DISTINCT = 2048  # a batch's durations counted by value until this many are distinct
DURATIONS_SORTED = 8192  # then classified this many at once (sorted: see Classifier.count_sorted)


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


def _column_matchable(rule: AuthRule) -> bool:
    """Whether `_matching` gives what `rule.matches` gives line by line: a regex that
    matches the empty string would match a missing value there (config refuses those)."""
    return all(rx is None or rx.search("") is None for rx in (rule.path, rule.message))


def _matching(
    rule: AuthRule,
    statuses: list[Any],
    norm_status: Callable[[Any], int | None],
    path: list[str | None],
    message: list[str | None],
    ip: list[str | None],
) -> list[str | None]:
    """The client IPs of the lines that `rule` matches, in line order: each condition
    narrows whole columns (C-level `map` of the regex, `compress`), not line by line.
    A missing path or message is searched as "", which such a rule never matches."""
    columns: tuple[list[Any], ...] = (ip, path, message)
    if rule.statuses is not None:
        ok = {raw: norm_status(raw) in rule.statuses for raw in set(statuses)}
        columns = _narrow(list(map(ok.__getitem__, statuses)), columns)
    for rx, i in ((rule.path, 1), (rule.message, 2)):
        if rx is not None:
            columns = _narrow(list(map(rx.search, [v if v is not None else "" for v in columns[i]])), columns)
    return columns[0]


def _narrow(keep: list[Any], columns: tuple[list[Any], ...]) -> tuple[list[Any], ...]:
    return tuple(list(compress(c, keep)) for c in columns)


def _positions(values: list[Any], wanted: Iterable[Any]) -> list[int]:
    """Where `values` holds one of `wanted` (==), in order. `list.count` and `list.index`
    scan in C; Python runs once per hit, and hits (login candidates) are few."""
    idx: list[int] = []
    for v in wanted:
        i = -1
        for _ in range(values.count(v)):
            i = values.index(v, i + 1)
            idx.append(i)
    idx.sort()
    return idx


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
    """A parsed chunk: one record per parsed line, and the lines themselves (same order).
    `strict`: every record came from the parser's strict Struct (parse): every status an
    int HTTP status or None; `absent`: the slots its Struct required null or missing."""

    records: list[Any]
    lines: list[bytes]
    strict: bool = False
    absent: frozenset[int] = frozenset()  # slots missing (or null) on every record


class Reader(Protocol):
    """How a parser's records are read. `layout` maps the fields counted on every line
    (time, level, status, duration) to record slots; `detail_layout` maps the fields only
    auth candidates need (ip, path, message) to slots of what `details()` returns."""

    @property
    def layout(self) -> Mapping[str, tuple[int, ...]]: ...

    @property
    def detail_layout(self) -> Mapping[str, tuple[int, ...]]: ...

    @property
    def batchable(self) -> bool:
        """Records are hashable and hold only the fields counted on every line."""
        ...

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
        classifier: Classifier | None = None,
        auth: Sequence[AuthRule] = (),
        trusted_proxies: Sequence[Network] | None = None,
    ) -> None:
        self.reader = reader
        self._scale = duration_scale
        # strict chunks' durations; must classify as `classify` does (the check passes both)
        self._classifier = classifier or Classifier((), duration_scale)
        default = tuple(ipaddress.ip_network(n) for n in LOOPBACK)
        trusted = default if trusted_proxies is None else tuple(trusted_proxies)
        self._clients: dict[tuple[str | None, str | None], str | None] = {}  # (ip, forwarded) -> client

        def client(ip: str | None, forwarded: str | None) -> str | None:
            key = (ip, forwarded)
            try:
                return self._clients[key]
            except KeyError:
                if len(self._clients) >= CACHE_MAX:
                    self._clients.clear()
                out = self._clients[key] = client_address(ip, forwarded, trusted)
                return out

        self._client = client
        self.layout = reader.layout
        self.use_time = use_time and bool(self.layout.get("time"))
        self.auth = tuple(auth)
        self._level = Cached(norm_level)
        self._status = Cached(norm_status)
        scale = duration_scale

        def duration(v: Any) -> tuple[float, tuple[int, int]] | None:
            x = norm_number(v)
            return None if x is None else (x * scale, classify(x * scale))

        # raw duration -> (seconds, class): the work per distinct duration is one lookup
        self._duration = Cached(duration)
        self._iso_seconds: dict[str, float | None] = {}  # "2024-05-01T12:00:00" -> epoch seconds
        statuses = [r.statuses for r in self.auth]
        # When every rule names statuses, only lines with one of them need a closer look.
        self._auth_statuses: frozenset[int] | None = None
        if statuses and all(s is not None for s in statuses):
            self._auth_statuses = frozenset(code for s in statuses if s is not None for code in s)
        # batches: see the module docstring
        self.batching = not self.use_time and bool(getattr(reader, "batchable", False))
        self._pending: Counter[Any] = Counter()  # record -> lines, since the last flush
        # strict chunks: (level, status) keys counted, durations classified many at a time
        level_slots, status_slots = self.layout.get("level", ()), self.layout.get("status", ())
        self._n_level = len(level_slots)
        key_slots = (*level_slots, *status_slots)
        getter: Callable[[Sequence[int]], Callable[[Any], Any]] | None = getattr(reader, "strict_getter", None)
        self._key_of: Callable[[Any], Any] | None = None
        self._status_of: Callable[[Any], Any] | None = None
        self._dur_of: list[tuple[int, Callable[[Any], Any]]] = []  # (slot, getter)
        self._one_status: dict[int, Callable[[Any], Any]] = {}  # status slot -> getter
        self._level_of: Callable[[Any], Any] | None = None  # the level, when it has one path
        if self.batching and getter is not None and key_slots:
            # always a tuple, so that keys of one layout compare alike
            self._key_of = getter(key_slots) if len(key_slots) > 1 else getter((*key_slots, *key_slots))
            self._status_of = getter(status_slots) if status_slots else None
            self._dur_of = [(i, getter((i,))) for i in self.layout.get("duration", ())]
            self._one_status = {i: getter((i,)) for i in status_slots}
            self._level_of = getter(level_slots) if len(level_slots) == 1 else None
        self._pending_keys: Counter[Any] = Counter()  # (raw level..., raw status...) -> lines
        # durations of strict chunks since the last flush: count, sum in the unit, class codes
        self._dur_count, self._dur_total, self._dur_codes = 0, 0.0, Counter[int]()
        self._dur_values: Counter[float] = Counter()  # while durations repeat: counted by value
        self._dur_by_value = True
        self._dur_pending: list[float] = []  # once they do not: classified sorted, many at once
        self._done: list[Tally] = []  # chunks that could not be batched, counted on their own
        self._cand_lines: list[bytes] = []  # auth candidates since the last take_auth()
        self._cand_status: list[Any] = []  # their raw statuses
        # One rule whose conditions are regexes on strings (the default rule is one) is
        # matched on whole columns; several rules go line by line, as in the per-chunk path.
        self._column_rule = self.auth[0] if len(self.auth) == 1 and _column_matchable(self.auth[0]) else None

    # --- batches (read time) ---------------------------------------------------------------

    def add(self, parsed: Parsed) -> bool:
        """Count a chunk into the pending batch (`batching` only) and keep its auth
        candidates for `take_auth()`. True when the batch holds so many distinct records
        that it should be flushed now."""
        records = parsed.records
        if not records:
            return False
        if parsed.strict and self._key_of is not None:
            return self._add_strict(parsed)
        try:
            self._pending.update(records)  # C: hashes each record once
        except TypeError:  # an object or array where a scalar was expected: unhashable
            self._unpend(records)
            self._done.append(self._count(parsed, safe=True, auth=False))
            if self.auth:
                self._keep_candidates(parsed, self._column(records, self.layout.get("status", ()), safe=True))
            return False
        if self.auth:
            self._keep_candidates(parsed, self._column(records, self.layout.get("status", ()), safe=False))
        return len(self._pending) >= BATCH_MAX

    def _add_strict(self, parsed: Parsed) -> bool:
        """A strict chunk (every level and status an interned literal or None, every
        duration a non-negative float or None): its (level, status) keys are counted, its
        durations counted by value while they repeat (integer ms) and otherwise classified
        thousands at a time, sorted (`Classifier.count_sorted`: Python runs once per class
        present, not per value), so a fractional duration on every line costs no Python
        code per line."""
        assert self._key_of is not None
        records = parsed.records
        keys: list[Any] | None = None
        status: list[Any] | None = None  # the one status path this chunk has, when it has one
        if self._one_status and len(present := self._one_status.keys() - parsed.absent) == 1:
            status = list(map(self._one_status[present.pop()], records))
        if status is not None and self._level_of is not None:
            # (level, status) pairs: `zip` reuses its tuple when Counter already holds the key
            self._pending_keys.update(zip(map(self._level_of, records), status, strict=True))
        else:
            keys = list(map(self._key_of, records))
            self._pending_keys.update(keys)
        if self._dur_of:
            values = self._durations(records, parsed.absent)
            if values:
                self._dur_count += len(values)
                self._dur_total += sum(values)
                if self._dur_by_value:  # integer ms repeat: classify each distinct value once
                    self._dur_values.update(values)
                    distinct = len(self._dur_values)
                    if distinct > DURATIONS_DISTINCT and 2 * distinct > self._dur_count:  # fractional
                        self._dur_pending += self._dur_values.elements()
                        self._dur_values, self._dur_by_value = Counter(), False
                else:  # classified sorted, many at once
                    self._dur_pending += values
                    if len(self._dur_pending) >= DURATIONS_SORTED:
                        self._classifier.count_sorted(self._dur_pending, self._dur_codes)
                        self._dur_pending = []
        if self.auth:
            if self._status_of is None:
                self._keep_candidates(parsed, [None] * len(records))
            elif self._auth_statuses is not None and status is not None:
                # one status path in this chunk: candidates found in its column (C: a set
                # lookup per line, then `compress`)
                hits = list(map(self._auth_statuses.__contains__, status))
                if any(hits):
                    self._cand_lines += compress(parsed.lines, hits)
                    self._cand_status += compress(status, hits)
            else:  # the keys hold the statuses: candidates by distinct key, found in C
                if keys is None:
                    keys = list(map(self._key_of, records))
                k, codes = self._n_level, self._auth_statuses
                wanted = set(keys) if codes is None else [x for x in set(keys) if self._status(x[k:]) in codes]
                idx = _positions(keys, wanted) if codes is not None else list(range(len(keys)))
                if idx:
                    self._cand_lines += map(parsed.lines.__getitem__, idx)
                    self._cand_status += (keys[i][k:] for i in idx)
        return len(self._pending_keys) >= BATCH_MAX

    def _durations(self, records: list[Any], absent: frozenset[int]) -> list[float]:
        """The durations of a strict chunk's lines, the first path present on each line
        (the `absent` paths are missing on every line: not read)."""
        present: list[tuple[list[Any], int]] = []  # (column, its missing values)
        for slot, get in self._dur_of:
            if slot in absent:
                continue
            col = list(map(get, records))
            missing = col.count(None)
            if missing != len(col):
                present.append((col, missing))
        if len(present) == 1:
            col, missing = present[0]
            return col if not missing else _present(col, missing)
        if not present:
            return []
        cols = [c for c, _ in present]
        values = [_present(c, missing) for c, missing in present]
        if len(cols) == 2:  # the usual mix (requests, events): is no line in both columns?
            a, b = cols
            if len(values[1]) == len(b) - present[1][1]:  # no zero in b: truthy is present
                both = list(compress(a, b))
            else:
                both = list(compress(b, map(is_not, a, repeat(None))))
            overlap = both.count(None) != len(both)
        else:
            have = sum(len(c) - missing for c, missing in present)
            overlap = have > len(records) - list(zip(*cols, strict=True)).count((None,) * len(cols))
        if overlap:
            # a line with two of them: the first one wins
            return [v for v in map(first, zip(*cols, strict=True)) if v is not None]
        out: list[float] = []
        for v in values:
            out += v
        return out

    def flush(self) -> list[Tally]:
        """The line and duration counts since the last flush (and empties the batch)."""
        out, self._done = self._done, []
        if self._pending:
            out.append(self._tally_pending())
            self._pending = Counter()
        if self._pending_keys or self._dur_count:
            out.append(self._tally_strict())
            self._pending_keys = Counter()
            self._dur_count, self._dur_total, self._dur_codes = 0, 0.0, Counter()
        return out

    def _tally_strict(self) -> Tally:
        out = Tally()
        nl, ns, groups, k = self._level, self._status, out.groups, self._n_level
        for key, n in self._pending_keys.items():
            lv = key[0] if k == 1 else first(key[:k])
            st = first(key[k:])
            groups[(None, nl(lv), ns(st))] += n
        if self._dur_values:
            self._classifier.weighted(self._dur_values, self._dur_codes)
            self._dur_values = Counter()
        if self._dur_pending:
            self._classifier.count_sorted(self._dur_pending, self._dur_codes)
            self._dur_pending = []
        if self._dur_count:
            classes = self._classifier.decode(self._dur_codes)
            out.durations[None] = Durations(self._dur_count, self._dur_total * self._scale, classes)
        return out

    def take_auth(self) -> Counter[tuple[float | None, str | None]]:
        """The login failures among the candidates kept since the last call, by (None, client
        IP), in the order they were first seen: the check calls it once per slice it reads,
        so that Space-Saving in the window sees the same sequence as with `tally()`."""
        auth: Counter[tuple[float | None, str | None]] = Counter()
        lines, statuses = self._cand_lines, self._cand_status
        if lines:
            self._cand_lines, self._cand_status = [], []
            details = self.reader.details(Parsed([], lines), list(range(len(lines))))
            self._match(statuses, details, None, auth)
        return auth

    def _keep_candidates(self, parsed: Parsed, status: list[Any], *, strict: bool = False) -> None:
        """Keep the lines (and raw statuses) that may be login failures: with a status one of
        the rules names, or every line when a rule names none. In a strict chunk a raw
        status is its value; otherwise each distinct raw status is normalized first ("401"
        is one too)."""
        codes = self._auth_statuses
        if codes is None:
            self._cand_lines += parsed.lines
            self._cand_status += status
            return
        wanted: Iterable[Any] = codes
        if not strict:
            wanted = [raw for raw in set(status) if self._status(raw) in codes]
        idx = _positions(status, wanted)
        if idx:
            self._cand_lines += map(parsed.lines.__getitem__, idx)
            self._cand_status += map(status.__getitem__, idx)

    def _unpend(self, records: list[Any]) -> None:
        """Take back what `Counter.update` counted before it met an unhashable record, so
        the batch is as before (a record first seen in this chunk is removed again)."""
        pending = self._pending
        for r in records:
            try:
                n = pending[r] - 1
            except TypeError:
                return
            if n:
                pending[r] = n
            else:
                del pending[r]

    def _tally_pending(self) -> Tally:
        """The pending batch as a Tally: each distinct record's raw (level, status) and
        duration are summed, then each distinct raw value normalized once."""
        records = list(self._pending)
        counts = list(self._pending.values())
        col = self._columns(records, safe=False)
        pairs: dict[tuple[Any, Any], int] = {}
        for pair, n in zip(zip(col("level"), col("status"), strict=False), counts, strict=False):
            pairs[pair] = pairs.get(pair, 0) + n
        durations: dict[Any, int] = {}  # first appearance order, as Counter(durations) of the lines
        for du, n in zip(col("duration"), counts, strict=False):
            durations[du] = durations.get(du, 0) + n
        out = Tally()
        nl, ns, groups = self._level, self._status, out.groups
        for (lv, st), n in pairs.items():
            groups[(None, nl(lv), ns(st))] += n
        self._sum_durations(durations, out)
        return out

    def _sum_durations(self, counts: Mapping[Any, int], out: Tally) -> None:
        """Durations placed at read time: count, sum and classes, once per distinct value."""
        nd = self._duration
        acc = Durations()
        classes, known = acc.classes, nd.cache
        for du, n in counts.items():
            if (d := known[du] if du in known else nd(du)) is not None:
                acc.count += n
                acc.total_s += d[0] * n
                classes[d[1]] += n
        if acc.count:
            out.durations[None] = acc

    def tally(self, parsed: Parsed) -> Tally:
        """The records' counts, grouped by distinct values (C-level Counters)."""
        if not parsed.records:
            return Tally()
        try:
            return self._count(parsed, safe=False)
        except TypeError:  # an object or array where a scalar was expected: unhashable
            return self._count(parsed, safe=True)

    def _count(self, parsed: Parsed, *, safe: bool, auth: bool = True) -> Tally:
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
            self._sum_durations(Counter(duration), out)
            distinct_status = {k[1] for k in pairs}
        if self.auth and auth:
            self._count_auth(parsed, status, distinct_status, tcol, out)
        return out

    def _line_time(self, raw: Any) -> float | None:
        v = first(raw) if raw.__class__ is tuple else raw
        if v.__class__ is str and len(v) == 24 and v[19] == "." and v[23] == "Z":
            # winston's toISOString(): every line of one second shares one parse
            try:
                return self._iso_seconds[v[:19]]
            except KeyError:
                if len(self._iso_seconds) >= CACHE_MAX:
                    self._iso_seconds.clear()
                second = self._iso_seconds[v[:19]] = norm_time(v[:19] + "Z")
                return second
        return norm_time(v)

    def _count_auth(
        self,
        parsed: Parsed,
        status: list[Any],
        distinct_status: Iterable[Any],
        tcol: list[float | None] | None,
        out: Tally,
    ) -> None:
        ns = self._status
        if self._auth_statuses is not None:
            idx = _positions(status, [raw for raw in distinct_status if ns(raw) in self._auth_statuses])
        else:
            idx = list(range(len(parsed.records)))
        if not idx:
            return
        details = self.reader.details(parsed, idx)  # decoded again, for the candidates only
        times = [tcol[i] for i in idx] if tcol is not None else None
        self._match([status[i] for i in idx], details, times, out.auth)

    def _match(
        self,
        statuses: list[Any],
        details: list[Any],
        times: list[float | None] | None,
        auth: Counter[tuple[float | None, str | None]],
    ) -> None:
        """Count the candidates that match a rule into `auth`, by (time, client IP), in
        line order."""
        path, message, ip = (self._detail_strings(details, f) for f in ("path", "message", "ip"))
        ip = list(map(self._client, ip, self._detail_strings(details, "forwarded")))  # behind proxies
        rule = self._column_rule
        if rule is not None and times is None:
            auth.update(zip(repeat(None), _matching(rule, statuses, self._status, path, message, ip)))
            return
        ns, rules = self._status, self.auth
        for t, raw, p, m, source in zip(times or repeat(None), statuses, path, message, ip, strict=False):
            st = ns(raw)
            for r in rules:
                if r.matches(st, p, m):
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


def _present(durations: list[float | None], missing: int) -> list[float]:
    """The durations that are not None (a strict column: floats >= 0 or None; `missing` of
    them None), in C: the truthy ones, then the zeros (0.0 or -0.0: what is left)."""
    out: list[float] = list(filter(None, durations))
    zeros = len(durations) - missing - len(out)
    if zeros:
        out += [0.0] * zeros
    return out


def _as_str(v: Any) -> str | None:
    return v if isinstance(v, str) else None


_OBJECT = "<object>"  # stands for an object or array where a scalar was expected: no level/status/number
_SCALARS = (str, int, float, type(None))


def _sanitize(column: list[Any]) -> list[Any]:
    """The column with unhashable values (objects, arrays) replaced by a marker that every
    normalizer reads as "not a usable value"."""
    return [v if isinstance(v, _SCALARS) else _OBJECT for v in column]
