"""The logfile check's configuration: paths, format and presets, field paths, the window,
auth failures and named patterns. Every mistake is refused at load, with its key."""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from checks.logfile.normalize import FIELDS, LOOPBACK, Network
from checks.logfile.parse import PRESETS, REGEX_GROUPS, JsonParser
from checks.logfile.tally import AuthRule
from monitor.config.fields import CheckBase, Duration, StrictModel, compile_regex

_LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

Paths = str | list[str] | None


class Fields(StrictModel):
    """JSON paths per field, dotted for nested objects (`res.statusCode`); a list means
    "the first one present". Unset fields take the preset's paths."""

    time: Paths = None
    level: Paths = None
    status: Paths = None
    duration: Paths = None
    ip: Paths = None
    forwarded: Paths = None
    path: Paths = None
    message: Paths = None


class AuthFailure(StrictModel):
    """A line is a login failure when all that is given holds: its status is one of
    `status`, the regex `path` is found in its request path, `message` in its message."""

    status: list[int] | None = None
    path: str | None = None
    message: str | None = None

    @model_validator(mode="after")
    def _check(self) -> AuthFailure:
        if self.status is None and self.path is None and self.message is None:
            raise ValueError("give at least one of status, path, message")
        for name in ("path", "message"):
            _compile(getattr(self, name), name)
        return self

    def rule(self) -> AuthRule:
        return AuthRule(
            statuses=frozenset(self.status) if self.status is not None else None,
            path=re.compile(self.path) if self.path is not None else None,
            message=re.compile(self.message) if self.message is not None else None,
        )


def _compile(pattern: str | None, what: str, *, as_bytes: bool = False) -> None:
    """Refuse a pattern that does not compile (as the check will compile it: text, or bytes
    for `patterns`, which search raw chunks) or that matches the empty string."""
    if pattern is None:
        return
    try:
        rx: re.Pattern[Any] = compile_regex(pattern.encode(), re.MULTILINE) if as_bytes else compile_regex(pattern)
    except ValueError as e:
        raise ValueError(f"{what}: {pattern!r} is not a regex: {e}") from None
    if rx.search(b"" if as_bytes else "") is not None:
        raise ValueError(f"{what}: {pattern!r} matches the empty string, so it matches every line")


class Config(CheckBase):
    type: Literal["logfile"]
    paths: list[str] = Field(min_length=1, max_length=32)
    from_: Literal["end", "start"] = Field("end", alias="from")
    format: Literal["json", "regex"] = "json"
    preset: Literal["winston", "pino"] = "winston"
    fields: Fields = Field(default_factory=Fields)
    regex: str | None = None  # format: regex; named groups level, status, duration, path, ip, time, message
    patterns: dict[str, str] = Field(default_factory=dict)  # name -> regex (a plain word is a substring)
    auth_failure: AuthFailure | list[AuthFailure] | None = Field(
        default_factory=lambda: AuthFailure(status=[401, 403], path="/auth/login")
    )
    window: Duration = 300.0
    time_source: Literal["read", "line"] = "read"
    duration_unit: Literal["ms", "s"] = "ms"
    max_line_bytes: int = Field(65536, ge=256, le=16 << 20)
    max_sources: int = Field(100, ge=1, le=10_000)  # client IPs tracked per window bucket
    min_requests: int = Field(0, ge=0, le=1_000_000)  # no error ratio below this many requests in the window
    trusted_proxies: list[str] = Field(default_factory=lambda: list(LOOPBACK), max_length=256)  # X-Forwarded-For
    fast_path: bool = True  # decode whole chunks at once (off only to compare, in tests and bench)

    @field_validator("window")
    @classmethod
    def _window_positive(cls, v: float) -> float:
        if v < 1:
            raise ValueError("must be at least 1s")
        return v

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, v: list[str]) -> list[str]:
        for net in v:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ValueError(f"{net!r} is not an address or a network like 10.0.0.0/8") from None
        return v

    def trusted_networks(self) -> tuple[Network, ...]:
        return tuple(ipaddress.ip_network(n, strict=False) for n in self.trusted_proxies)

    @field_validator("patterns")
    @classmethod
    def _check_patterns(cls, v: dict[str, str]) -> dict[str, str]:
        if len(v) > 50:
            raise ValueError("at most 50 patterns (each is a series)")
        for name, pattern in v.items():
            if not _LABEL_NAME.match(name):
                raise ValueError(f"pattern name {name!r}: use letters, digits and _")
            _compile(pattern, f"patterns.{name}", as_bytes=True)
        return v

    @model_validator(mode="after")
    def _check_format(self) -> Config:
        if self.format == "regex":
            if self.regex is None:
                raise ValueError("format: regex needs `regex`")
            _compile(self.regex, "regex")
            groups = set(re.compile(self.regex).groupindex)
            if not groups & REGEX_GROUPS:
                raise ValueError(f"regex: name at least one group of {', '.join(FIELDS)}, e.g. (?P<status>\\d+)")
        elif self.regex is not None:
            raise ValueError("`regex` is only for format: regex")
        else:
            for name, paths in self.field_paths().items():
                for p in paths:
                    if not p or any(not part for part in p.split(".")):
                        raise ValueError(f"fields.{name}: {p!r} is not a dotted path like res.statusCode")
            try:
                JsonParser(self.field_paths(), FIELDS)
            except (ValueError, TypeError) as e:
                raise ValueError(f"fields: {e}") from None
        return self

    def field_paths(self) -> dict[str, tuple[str, ...]]:
        """The JSON paths of each field: the preset's, overridden by `fields`."""
        out = dict(PRESETS[self.preset])
        for name in FIELDS:
            value = getattr(self.fields, name)
            if value is not None:
                out[name] = (value,) if isinstance(value, str) else tuple(value)
        return out

    def auth_rules(self) -> list[AuthRule]:
        if self.auth_failure is None:
            return []
        items = self.auth_failure if isinstance(self.auth_failure, list) else [self.auth_failure]
        return [a.rule() for a in items]
