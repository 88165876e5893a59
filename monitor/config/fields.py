"""Building blocks of the configuration models: durations, regexes, URL ports, the common check fields.

The check modules build their own models from these (a check's config sits beside the check);
`monitor.config.model` assembles them into the whole file. Which fields are secret, and how
they are redacted, is `monitor.secrets`.
"""

from __future__ import annotations

import re
import warnings
from typing import Annotated, Any, AnyStr, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float:
    """`250ms`, `10s`, `5m`, `1h`, `1h30m` → seconds. Bare 0 is allowed; other bare numbers are not."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration (use e.g. 250ms, 10s, 5m, 1h)")
    if isinstance(value, (int, float)) and value == 0:
        return 0.0
    if isinstance(value, str):
        text = value.strip()
        if text == "0":
            return 0.0
        pos, total = 0, 0.0
        for m in _DURATION_PART.finditer(text):
            if m.start() != pos:
                break
            total += float(m.group(1)) * _UNIT_S[m.group(2)]
            pos = m.end()
        else:
            if pos == len(text) and pos > 0:
                return total
    raise ValueError(f"{value!r} is not a duration (use e.g. 250ms, 10s, 5m, 1h)")


def format_duration(seconds: float) -> str:
    """Seconds → the shortest duration string that parse_duration reads back."""
    if seconds == 0:
        return "0s"
    ms = round(seconds * 1000)
    if ms % 1000:
        return f"{ms}ms"
    s = ms // 1000
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if s >= size:
            out += f"{s // size}{unit}"
            s %= size
    return out


Duration = Annotated[float, BeforeValidator(parse_duration)]


def url_port_problem(url: str) -> str | None:
    """Why the port of `url` is unusable (not a number, beyond 65535), or None when it is
    fine or absent. urlsplit() only finds out when `.port` is read, long after loading."""
    try:
        parts = urlsplit(url)
    except ValueError as e:
        return str(e)
    if not parts.scheme or not parts.netloc:
        return None
    try:
        _ = parts.port  # the only place urlsplit() checks it
    except ValueError:
        hostport = parts.netloc.rpartition("@")[2]
        port = (hostport.rpartition("]")[2] if hostport.startswith("[") else hostport).partition(":")[2]
        return f"port {port!r} is not a number from 0 to 65535"
    return None


def compile_regex(pattern: AnyStr, flags: int = 0) -> re.Pattern[AnyStr]:
    """`re.compile` for a pattern from the config: every way it can fail is a ValueError
    that says why (without the pattern: the caller names the field and quotes it).

    `re.compile` raises more than `re.error`: OverflowError for a repeat count past 2**32,
    RecursionError for groups nested about a thousand deep; and it only warns
    (FutureWarning) about a set that a later Python will read differently, such as `[[a]`
    or `[a--b]`. That warning becomes an error here, so the meaning of a rule never changes
    under an upgrade.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return re.compile(pattern, flags)
    except re.error as e:
        raise ValueError(str(e)) from None
    except OverflowError:
        raise ValueError("a repeat count is too large (at most 4294967295)") from None
    except RecursionError:
        raise ValueError("groups are nested too deeply") from None
    except Warning as w:
        raise ValueError(
            f"{w} (escape the character with a backslash: Python may read it differently in a future version)"
        ) from None


class StrictModel(BaseModel):
    """Frozen, and every unknown key is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


CHECK_NAME = r"^[A-Za-z_][A-Za-z0-9_.-]*$"


class CheckBase(StrictModel):
    """Fields every check has. `interval`/`timeout` fall back to the file's `defaults`."""

    name: str = Field(pattern=CHECK_NAME)
    enabled: bool | Literal["auto"] = True
    interval: Duration | None = None
    timeout: Duration | None = None
    labels: dict[str, str] = Field(default_factory=dict)
