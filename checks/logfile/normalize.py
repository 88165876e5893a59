"""Normalizing raw log values: levels, statuses, numbers, times, whatever their JSON type.

Raw values are normalized the same whatever their JSON type: a level word, a pino number
or an alias; a status as number or numeric string; a duration as number or numeric string.
An object or array where a scalar was expected counts as "no usable value". Booleans are
numbers (True == 1), as they are for `Counter`, so grouping never changes a result.

Each normalizer is wrapped in `Cached` by `tally.Normalizer`: a bounded cache of raw value
-> normalized value, so each distinct raw value is normalized once.
"""

from __future__ import annotations

import ipaddress
import math
import re
from datetime import datetime
from typing import Any

FIELDS = ("time", "level", "status", "duration", "ip", "forwarded", "path", "message")
LEVELS = ("fatal", "error", "warn", "info", "http", "verbose", "debug", "trace", "silly", "other", "unknown")
ERROR_LEVELS = frozenset({"error", "fatal"})
LEVEL_ALIASES = {
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
CACHE_MAX = 4096  # distinct raw values remembered per normalizer (bounded memory)


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
            word = LEVEL_ALIASES.get(word, word)
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


Network = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK = ("127.0.0.0/8", "::1/128")


def _address(hop: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address in one hop of a forwarding chain: `1.2.3.4`, `1.2.3.4:5678`, `::1`,
    `[::1]:443`, `::ffff:10.0.0.1` (as IPv4); None when it is not an address."""
    h = hop.strip()
    if h.startswith("["):
        h = h[1 : h.find("]")] if "]" in h else h[1:]
    elif h.count(":") == 1:
        h = h.partition(":")[0]
    try:
        addr = ipaddress.ip_address(h)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def client_address(ip: str | None, forwarded: str | None, trusted: tuple[Network, ...]) -> str | None:
    """The client of a request behind proxies: the hops are X-Forwarded-For's entries, then
    the peer address (`ip`, which may itself be a forwarded list); walking from the nearest
    hop back, trusted proxies are skipped and the first hop that is not one is the client
    (as Express's `trust proxy` and nginx's `real_ip_recursive` do: entries left of it were
    written by the client and could be anything). All trusted: the left-most hop."""
    hops = [h.strip() for v in (forwarded, ip) if v for h in v.split(",")]
    hops = [h for h in hops if h]
    if not hops:
        return None
    for hop in reversed(hops):
        addr = _address(hop)
        if addr is None:
            return hop
        if not any(addr in net for net in trusted):
            return str(addr)
    addr = _address(hops[0])
    return str(addr) if addr is not None else hops[0]


def first(values: Any) -> Any:
    """The first value that is not None, from a tuple of alternative paths' values."""
    for v in values:
        if v is not None:
            return v
    return None


class Cached:
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
        if len(self.cache) >= CACHE_MAX:
            self.cache.clear()
        self.cache[raw] = out
        return out
