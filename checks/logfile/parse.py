"""Parsing chunks of log lines: JSON (winston, pino, any dotted field paths) or a regex.

A parser turns a chunk of whole lines into a `Parsed` (one record per line it could
parse) and counts the others by reason; `tally.Normalizer` reads the records.

Two JSON paths give the same result (tested on tricky lines):

- the general path (`JsonParser.parse_general`) decodes line by line and classifies every
  failure: `invalid_utf8`, `not_json` (also a number beyond float range in a counted field,
  and arrays or objects nested past msgspec's limit of about a thousand), `not_object`;
- the fast path (`JsonParser.parse_fast`) decodes the whole chunk with C-level `map`s and
  raises on the first line it cannot take; the caller then re-runs that chunk on the
  general path. Real logs are almost all well-formed, so almost every chunk goes fast.

Both decode with msgspec into a Struct generated from the configured paths: the whole line
is validated as JSON, but only the fields we need become Python objects, which is what
makes it faster than `orjson.loads`, which must build every key and value of every line.
The fields only auth rules need (ip, path, message) are decoded from the few candidate
lines only. The Structs are frozen, so hashable: `tally` counts whole records at once.

The fast path first tries a *strict* Struct that takes only the usual shape of a line, on
every path of a field (both families of names: `statusCode` or `status`, `duration` or
`responseTime`): a level from the known words (or pino's numbers), a status that is an
integer HTTP status, a duration that is a non-negative number (integer or fractional),
nested objects (pino's `res`) that are objects. Levels and statuses are msgspec's interned
literals, so no string is built per line and keys compare by identity; durations come as
floats that `tally` classifies a whole column at a time. A chunk it refuses is decoded
again with the lenient Struct (every value as is), and the strict one rests for a while.
A file uses one family of names: once a strict chunk had some alternative paths missing on
every line, later chunks go through a strict Struct that requires them missing, and
`tally` reads only the columns left (a chunk that has one is decoded with the full strict
Struct, and the specialised one rests for a while).

Blank lines are skipped: they are neither lines nor parse errors.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from operator import attrgetter, itemgetter
from typing import Annotated, Any, Literal, Union

import msgspec

from checks.logfile.normalize import FIELDS, LEVEL_ALIASES, LEVELS
from checks.logfile.tally import Parsed

PRESETS: dict[str, dict[str, tuple[str, ...]]] = {
    # winston's json() format: level as a word; request loggers add these fields (both
    # families of names: express-winston/morgan style and the BFF's own request logger).
    # `ip` may be X-Forwarded-For's list itself ("client, proxy"); `forwarded` is the header.
    "winston": {
        "time": ("timestamp",),
        "level": ("level",),
        "status": ("statusCode", "status"),
        "duration": ("duration", "responseTime", "response_time", "ms"),
        "ip": ("ip", "remoteAddr"),
        "forwarded": ("forwardedFor", "headers.x-forwarded-for"),
        "path": ("url", "path"),
        "message": ("message",),
    },
    # pino + pino-http: numeric level, epoch-ms time, req/res serializers.
    "pino": {
        "time": ("time",),
        "level": ("level",),
        "status": ("res.statusCode",),
        "duration": ("responseTime",),
        "ip": ("req.remoteAddress",),
        "forwarded": ("req.headers.x-forwarded-for",),
        "path": ("req.url",),
        "message": ("msg",),
    },
}


# --- JSON ---------------------------------------------------------------------------------


_CONTAINER_OTHERS = (str, int, float, bool, list, None)

# What the strict Struct takes (see the module docstring); anything else is a lenient chunk.
# Built at run time for msgspec (a Literal of computed values): runtime type objects, not aliases.
_STRICT_LEVEL: Any = Union[Literal[(*LEVELS, *LEVEL_ALIASES, 10, 20, 30, 40, 50, 60)], None]
_STRICT_STATUS: Any = Union[Literal[tuple(range(100, 600))], None]
STRICT_REST = 64  # chunks decoded leniently after the strict Struct refused one


_STRICT_DURATION: Any = Union[Annotated[float, msgspec.Meta(ge=0)], None]


def _struct_for(
    tree: dict[str, Any],
    name: str,
    leaf_type: Callable[[str], Any] = lambda path: Any,
    prefix: str = "",
    *,
    strict: bool = False,
) -> type[msgspec.Struct]:
    """A frozen Struct with one field per key of `tree`: `leaf_type(path)` (Any unless
    strict) for a leaf, a nested Struct for a subtree. A subtree also accepts any non-object
    value, so that an unexpected type is a missing field, not an error (`strict`: it must
    be an object or absent)."""
    fields: list[tuple[str, Any, Any]] = []
    rename: dict[str, str] = {}
    for i, (key, sub) in enumerate(tree.items()):
        attr = f"f{i}"
        rename[attr] = key
        if sub is None:
            fields.append((attr, leaf_type(prefix + key), None))
        else:
            inner = _struct_for(sub, f"{name}_{i}", leaf_type, f"{prefix}{key}.", strict=strict)
            kind: Any = inner if strict else Union[(inner, *_CONTAINER_OTHERS)]
            fields.append((attr, kind, msgspec.field(default_factory=inner)))
    return msgspec.defstruct(name, fields, rename=rename, gc=False, omit_defaults=False, frozen=True)


def _strict_leaf_types(layout_paths: Mapping[str, Sequence[str]], absent: Iterable[str] = ()) -> Callable[[str], Any]:
    """The strict type of each path: a level path a known level, a status path an HTTP
    status, a duration path a non-negative number, an `absent` path null or missing. A path
    that two fields share stays Any."""
    roles: dict[str, set[str]] = {}
    for field_name, paths in layout_paths.items():
        for path in paths:
            roles.setdefault(path, set()).add(field_name)
    types = {"level": _STRICT_LEVEL, "status": _STRICT_STATUS, "duration": _STRICT_DURATION}
    absent = frozenset(absent)

    def leaf_type(path: str) -> Any:
        if path in absent:
            return None
        r = roles.get(path, set())
        return types.get(next(iter(r)), Any) if len(r) == 1 else Any

    return leaf_type


class _Shape:
    """A Struct type for some fields' JSON paths, and how to read each path from it
    (`strict`: also the strict Struct of the same layout, see the module docstring)."""

    def __init__(
        self, paths: Mapping[str, Sequence[str]], fields: Iterable[str], name: str, *, strict: bool = False
    ) -> None:
        tree: dict[str, Any] = {}
        slot_paths: list[str] = []
        self.layout: dict[str, tuple[int, ...]] = {}
        used: dict[str, Sequence[str]] = {}
        for f in fields:
            idx = []
            used[f] = paths.get(f, ())
            for path in used[f]:
                if path not in slot_paths:
                    _add_path(tree, path)
                    slot_paths.append(path)
                idx.append(slot_paths.index(path))
            self.layout[f] = tuple(idx)
        self.struct = _struct_for(tree, name)
        self.decode = msgspec.json.Decoder(self.struct).decode
        self.decode_strict = None
        self._tree, self._used, self._name = tree, used, name
        self.slot_paths = slot_paths
        if strict:
            self.decode_strict = self.strict_decoder(frozenset())
        attrs = [_attr_path(tree, p) for p in slot_paths]
        self.attr_paths = attrs
        self.getters = [attrgetter(a) for a in attrs]
        self.attrs = [a.split(".") for a in attrs]

    def strict_decoder(self, absent: frozenset[int]) -> Callable[[bytes], Any]:
        """The strict Struct's decoder, with the paths of the `absent` slots null or missing
        (their attributes keep their names, so the same getters read both)."""
        paths = [self.slot_paths[i] for i in absent]
        suffix = "".join(f"_{i}" for i in sorted(absent))
        struct = _struct_for(
            self._tree, f"{self._name}Strict{suffix}", _strict_leaf_types(self._used, paths), strict=True
        )
        return msgspec.json.Decoder(struct).decode

    def value(self, obj: Any, slot: int) -> Any:
        for name in self.attrs[slot]:
            obj = getattr(obj, name, None)
        return obj


def _add_path(tree: dict[str, Any], path: str) -> None:
    keys = path.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if node is None:
            raise ValueError(f"{path!r}: {key!r} is also read as a value")
    if node.get(keys[-1]) is not None:
        raise ValueError(f"{path!r} is also read as an object")
    node.setdefault(keys[-1], None)


def _attr_path(tree: dict[str, Any], path: str) -> str:
    names, node = [], tree
    for key in path.split("."):
        names.append(f"f{list(node).index(key)}")
        node = node[key]
    return ".".join(names)


MAIN_FIELDS = ("time", "level", "status", "duration")
DETAIL_FIELDS = ("ip", "forwarded", "path", "message")


class JsonParser:
    """Decodes JSON lines into Structs holding only the fields counted on every line;
    the few auth candidates are decoded again for their ip, path and message."""

    reasons = ("invalid_utf8", "not_json", "not_object")  # why a line was not parsed
    batchable = True  # records hold only the fields counted on every line: see tally.Normalizer

    def __init__(self, paths: Mapping[str, Sequence[str]], needed: Iterable[str]) -> None:
        needed = list(needed)
        self._main = _Shape(paths, [f for f in needed if f in MAIN_FIELDS], "LogLine", strict=True)
        self._decode_strict = self._main.decode_strict
        self._strict_rest = 0  # chunks left before the strict Struct is tried again
        # The strict Struct specialised to the alternative paths a file uses (see parse_fast):
        # status and duration paths that were missing on every line of a strict chunk.
        self._alternatives = [
            self._main.layout.get(f, ()) for f in ("status", "duration") if len(self._main.layout.get(f, ())) > 1
        ]
        self._special: tuple[Callable[[bytes], Any], frozenset[int]] | None = None
        self._special_rest = 0  # strict chunks left before specialising again
        self._special_decoders: dict[frozenset[int], Callable[[bytes], Any]] = {}
        self._detail = _Shape(paths, [f for f in needed if f in DETAIL_FIELDS], "LogDetail")
        self.layout = self._main.layout
        self.detail_layout = self._detail.layout
        self._decode = self._main.decode
        # For the rare candidate whose details fail to decode: a float beyond range becomes inf
        # (where the main decode counted the line, only the fields it skipped can hold one).
        self._detail_lenient = msgspec.json.Decoder(self._detail.struct, float_hook=float).decode
        self._empty_detail = self._detail.decode(b"{}")  # every detail field absent

    def parse_fast(self, chunk: bytes) -> Parsed:
        """A chunk of whole lines, parsed; raises on the first line it cannot take.

        No Python code runs per line: `split` and `map` over the decoder are C. The strict
        Struct goes first (see the module docstring); a blank line or a line it refuses
        sends the chunk to the lenient Struct. (Decoding the chunk as one stream of
        documents would save the split, but a stream decoder lets a document span lines,
        and proving it did not costs as much.)
        """
        if not chunk.isascii():
            chunk.decode()  # skipped strings are not checked by msgspec: check here
        lines = chunk.split(b"\n")
        if not lines[-1]:
            lines.pop()  # after the last newline
        if self._strict_rest:
            self._strict_rest -= 1
        elif self._decode_strict is not None:
            try:
                if self._special is not None:
                    decode, absent = self._special
                    try:
                        return Parsed(list(map(decode, lines)), lines, strict=True, absent=absent)
                    except msgspec.ValidationError:  # another path of the family: not specialised
                        self._special, self._special_rest = None, STRICT_REST
                records = list(map(self._decode_strict, lines))
                if self._special_rest:
                    self._special_rest -= 1
                elif self._alternatives:
                    self._specialise(records)
                return Parsed(records, lines, strict=True)
            except msgspec.ValidationError:  # an unusual level or status, an alternative path
                self._strict_rest = STRICT_REST
            except msgspec.DecodeError:  # a blank line, or a line the lenient Struct refuses too
                pass
        lines = list(filter(None, lines))
        return Parsed(list(map(self._decode, lines)), lines)

    def _specialise(self, records: list[Any]) -> None:
        """After a strict chunk: when a field with alternative paths (`statusCode` or
        `status`, `duration` or `responseTime`...) had some of them missing on every line,
        later chunks are decoded with a strict Struct that requires them missing (a line
        that has one is refused and the chunk is decoded again with the full strict Struct),
        so that `tally` reads only the columns a file uses. No alternative path is assumed
        missing on a chunk where it was not seen missing."""
        absent = frozenset(
            slot
            for slots in self._alternatives
            for slot in slots
            if list(map(self._main.getters[slot], records)).count(None) == len(records)
        )
        if not absent:
            return
        if absent not in self._special_decoders:
            if len(self._special_decoders) >= 16:  # bounded: a file that keeps changing family
                self._special_decoders.clear()
            self._special_decoders[absent] = self._main.strict_decoder(absent)
        self._special = (self._special_decoders[absent], absent)

    def parse_general(self, chunk: bytes, errors: Counter[str]) -> Parsed:
        """A chunk of whole lines, parsed line by line; failures counted in `errors`."""
        check_utf8 = False
        if not chunk.isascii():
            try:
                chunk.decode()
            except UnicodeDecodeError:
                check_utf8 = True
        records: list[Any] = []
        lines: list[bytes] = []
        append, keep, decode = records.append, lines.append, self._decode
        for line in chunk.split(b"\n"):
            if check_utf8 and not line.isascii():
                try:
                    line.decode()
                except UnicodeDecodeError:
                    errors["invalid_utf8"] += 1
                    continue
            try:
                append(decode(line))
            except msgspec.ValidationError as e:  # not an object, or a number out of range
                errors["not_object" if str(e).startswith("Expected `object`") else "not_json"] += 1
                continue
            except msgspec.DecodeError:
                if line.strip():
                    errors["not_json"] += 1
                continue
            except RecursionError:  # msgspec's nesting limit (~1000), even inside a skipped field
                errors["not_json"] += 1
                continue
            except UnicodeDecodeError:
                errors["invalid_utf8"] += 1
                continue
            keep(line)
        return Parsed(records, lines)

    def strict_getter(self, slots: Sequence[int]) -> Callable[[Any], Any]:
        """A C-level getter of these slots of a strict record (a tuple for several, the
        value for one): in a strict chunk every nested object is an object."""
        return attrgetter(*(self._main.attr_paths[i] for i in slots))

    def column(self, records: Sequence[Any], slot: int) -> list[Any]:
        try:
            return list(map(self._main.getters[slot], records))
        except AttributeError:  # some line holds a non-object where an object was expected
            return [self._main.value(r, slot) for r in records]

    def details(self, parsed: Parsed, idx: list[int]) -> list[Any]:
        """The ip, path and message of the lines at `idx`, decoded again.

        The first decode skipped these fields, so only now can a number beyond float range
        turn up in one (`"ip":1e999`): that line's details are decoded leniently (the number
        as inf) and, should that fail too, are absent. The line is already counted, once."""
        lines = list(map(parsed.lines.__getitem__, idx))
        try:
            return list(map(self._detail.decode, lines))
        except (msgspec.DecodeError, RecursionError):  # ValidationError is a DecodeError
            return [self._detail_of(line) for line in lines]

    def _detail_of(self, line: bytes) -> Any:
        try:
            return self._detail_lenient(line)
        except (msgspec.DecodeError, RecursionError):
            return self._empty_detail

    def detail_column(self, details: list[Any], slot: int) -> list[Any]:
        try:
            return list(map(self._detail.getters[slot], details))
        except AttributeError:  # some line holds a non-object where an object was expected
            return [self._detail.value(d, slot) for d in details]


# --- regex -----------------------------------------------------------------------------------


REGEX_GROUPS = frozenset(FIELDS)


class RegexParser:
    """Plain-text lines through one regex with named groups (`level`, `status`,
    `duration`, `path`, `ip`, `time`, `message`); a line it does not match is `no_match`.
    Without a `message` group the whole line is the message (for auth rules)."""

    reasons = ("invalid_utf8", "no_match")
    batchable = False  # records may hold the whole line (message): nearly every one distinct

    def __init__(self, pattern: str) -> None:
        self._rx = re.compile(pattern)
        groups = self._rx.groupindex
        names = [f for f in FIELDS if f in groups]
        self._whole_message = "message" not in groups
        self.layout = {f: (i,) for i, f in enumerate(names)}
        if self._whole_message:
            self.layout["message"] = (len(names),)
        self.detail_layout = self.layout
        self._names = names

    def parse_general(self, chunk: bytes, errors: Counter[str]) -> Parsed:
        out: list[tuple[Any, ...]] = []
        search, names, whole = self._rx.search, self._names, self._whole_message
        for raw in chunk.split(b"\n"):
            try:
                line = raw.decode()
            except UnicodeDecodeError:
                errors["invalid_utf8"] += 1
                continue
            line = line.rstrip("\r")
            if not line.strip():
                continue
            m = search(line)
            if m is None:
                errors["no_match"] += 1
                continue
            rec = m.group(*names) if len(names) > 1 else (m.group(names[0]),) if names else ()
            out.append(rec + (line,) if whole else rec)
        return Parsed(out, [])

    def column(self, records: Sequence[Any], slot: int) -> list[Any]:
        return list(map(itemgetter(slot), records))

    def details(self, parsed: Parsed, idx: list[int]) -> list[Any]:
        return [parsed.records[i] for i in idx]

    def detail_column(self, details: list[Any], slot: int) -> list[Any]:
        return list(map(itemgetter(slot), details))


# --- named patterns --------------------------------------------------------------------------


def count_pattern_lines(chunk: bytes, patterns: Mapping[str, re.Pattern[bytes]]) -> Counter[str]:
    """How many lines of the chunk each pattern matches (like `grep -c`), parsed or not.

    Searches the whole chunk (the regex engine skips ahead to a literal prefix quickly) and
    moves to the next line after each hit, so several matches in one line count once.
    Compile the patterns with re.MULTILINE so that `^` and `$` anchor at lines.
    """
    out: Counter[str] = Counter()
    for name, rx in patterns.items():
        n, pos, search, size = 0, 0, rx.search, len(chunk)
        while pos < size:  # bounded: pos moves past a newline on every match
            m = search(chunk, pos)
            if m is None:
                break
            n += 1
            pos = chunk.find(b"\n", m.start()) + 1
            if pos == 0:
                break
        if n:
            out[name] = n
    return out
