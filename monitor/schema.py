"""Building blocks of the configuration models: durations, secrets, the common check fields.

The check modules build their own models from these (a check's config sits beside the check);
`monitor.config` assembles them into the whole file.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

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


class SecretMarker:
    """Marks a field whose whole value is a secret: never logged, shown or exported."""


class URLSecretMarker:
    """Marks a URL field whose password (user:PASSWORD@host) is a secret."""


Secret = Annotated[str, SecretMarker()]
SecretURL = Annotated[str, URLSecretMarker()]


def redact_url(url: str) -> str:
    """The URL with any password replaced by `***`, for messages and labels."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{user}:***@{host}" if user else f":***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def url_password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None


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
