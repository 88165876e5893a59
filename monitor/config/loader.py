"""alert_rules.yaml: YAML with positions, ${VAR:-default} interpolation, pydantic models.

The only module that reads YAML or the environment. Every error names the file, line,
column and key path (`alert_rules.yaml:14:5: checks[2].interval: '10 s' is not a duration`),
and one load reports every error it can find, not only the first. Whatever the text, the
result is a Config or a ConfigError of such lines: PyYAML's own failures (a scalar its
constructors refuse, a character YAML forbids, a recursive alias, nesting past MAX_DEPTH)
included, and control characters in quoted keys or values escaped.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import Field, ValidationError, field_validator

from checks import CHECK_TYPES, CheckConfig
from monitor.config.fields import (
    CHECK_NAME,
    Duration,
    StrictModel,
    format_duration,
    url_port_problem,
)
from monitor.config.yamlpos import (  # noqa: F401 (ConfigError and friends are part of this module's API)
    ConfigError,
    Path_,
    format_path,
    load_yaml_text,
    nearest,
    one_line,
    read_yaml,
)
from monitor.delivery import RECEIVER_TYPES, ReceiverConfig
from monitor.heartbeat import HeartbeatConfig
from monitor.rules.timeintervals import NamedTimeInterval
from monitor.secrets import Secret, redaction_set

DEFAULT_CONFIG = "alert_rules.yaml"
DEFAULT_LISTEN = "127.0.0.1:9820"
DEFAULT_STATE_DIR = "./state"
API_TOKEN_VAR = "MONITOR_API_TOKEN"
MIN_TOKEN_LENGTH = 16

Severity = Literal["P1", "P2", "P3", "P4"]
SEVERITIES: tuple[str, ...] = get_args(Severity)
Level = Literal["L1", "L2", "L3", "L4"]

# ---------------------------------------------------------------- models


class Defaults(StrictModel):
    """Fallbacks for checks that do not set their own. A check's timeout defaults to
    the smaller of its interval and `timeout`."""

    interval: Duration = 10.0
    timeout: Duration = 10.0


class RuleConfig(StrictModel):
    alert: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    expr: str = Field(min_length=1)
    for_: Duration = Field(0.0, alias="for")
    keep_firing_for: Duration = 0.0
    severity: Severity
    labels: dict[str, str] = Field(default_factory=dict)
    summary: str = ""
    description: str = ""
    runbook: str = ""
    vendor: str | None = None
    # Names from the top-level `time_intervals`: inside one, this rule's incidents are held
    # back as by a silence (opened, shown as held, paged when it ends if still firing).
    mute_time_intervals: list[str] = Field(default_factory=list)


Matcher = dict[str, str | list[str]]


class EscalationStep(StrictModel):
    """One row of the escalation matrix: who is told, for which incidents, after how long."""

    level: Level
    after: Duration = 0.0
    severities: list[Severity] | None = None
    vendor: bool = False
    receivers: list[str] = Field(min_length=1)
    # Used instead of `receivers` when none of them is enabled (e.g. no PagerDuty key yet).
    fallback: list[str] = Field(default_factory=list)


class InhibitRule(StrictModel):
    """While an alert matching `source` fires, notifications of alerts matching `target`
    (and equal on the `equal` labels) are held back."""

    source: Matcher
    target: Matcher
    equal: list[str] = Field(default_factory=list)


class Silence(StrictModel):
    matchers: Matcher
    starts_at: str | None = None
    ends_at: str
    author: str
    comment: str


DEFAULT_ESCALATION = [
    EscalationStep(level="L1", after="0s", severities=["P1", "P2", "P3", "P4"], receivers=["oncall"]),
    EscalationStep(level="L2", after="30m", severities=["P1", "P2"], receivers=["lead"]),
    EscalationStep(level="L3", after="1h", severities=["P1"], receivers=["management"]),
    EscalationStep(level="L4", after="0s", vendor=True, receivers=["vendors"]),
]


class Renotify(StrictModel):
    """How often non-PagerDuty receivers hear again about an open incident (runbook cadence)."""

    P1: Duration = 1800.0
    P2: Duration = 3600.0
    P3: Duration = 4 * 3600.0
    P4: Duration = 24 * 3600.0


class BasicAuth(StrictModel):
    username: str = Field(min_length=1)
    password: Secret = Field(min_length=1)


class MetricsAuth(StrictModel):
    """Who may scrape /metrics: a bearer token, HTTP basic credentials, or either."""

    bearer: Secret = ""
    basic: BasicAuth | None = None


class ApiConfig(StrictModel):
    """The HTTP API. `token` guards every mutating call (ack, resolve, silences, reload); it
    defaults to $MONITOR_API_TOKEN, and while it is empty those calls are refused."""

    token: Secret = ""
    metrics_auth: MetricsAuth | None = None

    @field_validator("token")
    @classmethod
    def _token_is_long(cls, v: str) -> str:
        if v and len(v) < MIN_TOKEN_LENGTH:
            raise ValueError(
                f"the API token (${API_TOKEN_VAR} unless api.token names another variable) must be "
                f"at least {MIN_TOKEN_LENGTH} characters (e.g. `openssl rand -hex 32`)"
            )
        return v


class RootConfig(StrictModel):
    listen: str = DEFAULT_LISTEN
    state_dir: str = DEFAULT_STATE_DIR
    defaults: Defaults = Field(default_factory=Defaults)
    checks: list[CheckConfig] = Field(default_factory=list)
    rules: list[RuleConfig] = Field(default_factory=list)
    receivers: dict[str, ReceiverConfig] = Field(default_factory=dict)
    escalation: list[EscalationStep] = Field(default_factory=lambda: list(DEFAULT_ESCALATION))
    renotify: Renotify = Field(default_factory=Renotify)
    inhibit: list[InhibitRule] = Field(default_factory=list)
    time_intervals: list[NamedTimeInterval] = Field(default_factory=list)
    api: ApiConfig = Field(default_factory=ApiConfig)
    heartbeat: HeartbeatConfig = Field(default_factory=HeartbeatConfig)

    @field_validator("listen")
    @classmethod
    def _listen_has_port(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"{v!r} is not host:port (e.g. 127.0.0.1:9820)")
        return v


# ---------------------------------------------------------------- result


@dataclass(frozen=True)
class Config:
    """A loaded, valid configuration and what the loader learned on the way."""

    root: RootConfig
    path: Path
    positions: Mapping[tuple[str | int, ...], tuple[int, int]]
    disabled: Mapping[str, str]  # check or receiver name -> why ("set WHMCS_API_URL")
    secrets: frozenset[str] = field(default_factory=frozenset)
    skipped_types: Mapping[str, str] = field(default_factory=dict)  # disabled for a missing variable

    def disabled_checks(self) -> list[tuple[str, str, str]]:
        """(name, type, why) of every check that will not run."""
        out = [(c.name, c.type, self.disabled[c.name]) for c in self.root.checks if c.name in self.disabled]
        out += [(n, t, self.disabled[n]) for n, t in self.skipped_types.items() if t in CHECK_TYPES]
        return out

    def disabled_receivers(self) -> list[tuple[str, str, str]]:
        """(name, type, why) of every receiver that is switched off."""
        out = [(n, r.type, self.disabled[n]) for n, r in self.root.receivers.items() if n in self.disabled]
        out += [(n, t, self.disabled[n]) for n, t in self.skipped_types.items() if t not in CHECK_TYPES]
        return out

    @property
    def checks(self) -> list[Any]:
        """The checks that will run (enabled ones)."""
        return [c for c in self.root.checks if c.name not in self.disabled]

    def where(self, *path: str | int) -> str:
        """`file:line:col` of a key path, for errors found after loading (rule expressions)."""
        line, col = nearest(self.positions, tuple(path))
        return f"{self.path.name}:{line}:{col}"

    def interval(self, check: Any) -> float:
        return check.interval if check.interval is not None else self.root.defaults.interval

    def timeout(self, check: Any) -> float:
        if check.timeout is not None:
            return check.timeout
        return min(self.interval(check), self.root.defaults.timeout)


_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate(text: str, env: Mapping[str, str]) -> tuple[str, list[str]]:
    """Expand `${VAR}` and `${VAR:-default}` (`$$` is a literal `$`); return the text and
    the names of variables that are unset and have no default."""
    missing: list[str] = []

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, default = m.group(1), m.group(2)
        value = env.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                missing.append(name)
                return ""
            return default
        return value

    return _VAR.sub(sub, text), missing


def _interpolate_tree(value: Any, path: Path_, env: Mapping[str, str], missing: dict[Path_, list[str]]) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate_tree(v, (*path, k), env, missing) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate_tree(v, (*path, i), env, missing) for i, v in enumerate(value)]
    if isinstance(value, str) and "$" in value:
        text, names = interpolate(value, env)
        if names:
            missing[path] = names
        return text
    return value


# ---------------------------------------------------------------- pydantic errors → lines


_NOT_A_KEY = re.compile(r"[^A-Za-z0-9_]")  # `list[str]`, "literal['auto']", `function-after[...]`
_TYPE_NAMES = frozenset({"str", "int", "float", "bool", "none", "dict", "list"})


def _is_union_tag(part: str | int, node: Any) -> bool:
    """Whether `part` of a pydantic `loc` names a union member (`AuthFailure`, `list[...]`,
    `function-after[_check(), AuthFailure]`, `str`) rather than a key of the YAML `node`."""
    if not isinstance(part, str):
        return False
    if isinstance(node, (list, str, int, float)):  # a list or a scalar has no keys
        return True
    if isinstance(node, dict) and part in node:
        return False
    return _NOT_A_KEY.search(part) is not None or part in _TYPE_NAMES or part[:1].isupper()


# A union member refusing an input of another shape (`auth_failure` as a list: "should be a
# mapping") says nothing new next to the member that takes that shape: shown only if alone.
_OTHER_SHAPE: dict[str, tuple[type, ...]] = {
    "list_type": (dict, str),
    "model_type": (list, str),
    "dict_type": (list, str),
    "string_type": (dict, list),
    "int_type": (dict, list),
    "float_type": (dict, list),
    "bool_type": (dict, list),
}


_OWN_MESSAGE = frozenset({"extra_forbidden", "missing", "union_tag_invalid", "union_tag_not_found", "value_error"})


def _pydantic_errors(exc: ValidationError, data: Any) -> list[tuple[Path_, str, bool]]:
    """(path, message, at_key) per error; union tags and member names are dropped from the path."""
    found: list[tuple[Path_, str, bool, bool]] = []  # (path, message, at_key, other member's shape)
    for err in exc.errors():
        loc = list(err["loc"])
        # Discriminated unions insert the tag ('checks', 2, 'redis', 'interval'), other unions
        # the member's type ('auth_failure', 'list[function-after[_check(), AuthFailure]]', 0): drop them.
        clean: list[str | int] = []
        node: Any = data
        member = False  # the error is a union member's, about the value at `path` itself
        for part in loc:
            if (
                isinstance(node, dict)
                and part not in node
                and isinstance(part, str)
                and "type" in node
                and part == node.get("type")
            ):
                continue
            member = _is_union_tag(part, node)
            if member:
                continue
            clean.append(part)
            if isinstance(node, dict):
                node = node.get(part)
            elif isinstance(node, list) and isinstance(part, int) and part < len(node):
                node = node[part]
            else:
                node = None
        path: Path_ = tuple(clean)
        kind = err["type"]
        msg = err["msg"]
        value = err.get("input")
        at_key = False
        if kind == "extra_forbidden":
            msg, at_key = "unknown key (not allowed here)", True
        elif kind == "missing":
            msg = "required key is missing"
        elif kind == "union_tag_invalid":
            allowed = RECEIVER_TYPES if path and path[0] == "receivers" else CHECK_TYPES
            msg = f"{err.get('ctx', {}).get('tag', value)!r} is not one of " + ", ".join(repr(t) for t in allowed)
            path = (*path, "type")
        elif kind == "union_tag_not_found":
            msg = "required key 'type' is missing"
        elif kind == "value_error":
            msg = msg.removeprefix("Value error, ")
        elif kind == "model_type":  # "... or instance of AuthFailure": a class name means nothing here
            msg = "Input should be a mapping (key: value)"
        if kind in ("literal_error", "enum") or (
            kind not in _OWN_MESSAGE and value is not None and not isinstance(value, (dict, list))
        ):
            msg = f"{value!r}: {msg[0].lower()}{msg[1:]}"
        other = member and isinstance(value, _OTHER_SHAPE.get(kind, ()))
        found.append((path, msg, at_key, other))
    out: list[tuple[Path_, str, bool]] = []
    for path, msg, at_key, other in found:
        if other and any(p[: len(path)] == path and not o for p, _, _, o in found):
            continue
        if (path, msg, at_key) not in out:  # union members often say the same thing
            out.append((path, msg, at_key))
    return out


# ---------------------------------------------------------------- loading


URL_FIELDS = ("url", "urls", "dsn")


def _urls(data: dict[Any, Any], skip: list[Path_]) -> Iterator[tuple[Path_, str]]:
    """(key path, value) of every URL of the checks, receivers and heartbeat (`url`, `urls`,
    `dsn`), read from the document so that they are checked even when another key is wrong."""
    items: list[tuple[Path_, Any]] = [(("heartbeat",), data.get("heartbeat"))]
    if isinstance(data.get("checks"), list):
        items += [(("checks", i), c) for i, c in enumerate(data["checks"])]
    if isinstance(data.get("receivers"), dict):
        items += [(("receivers", k), r) for k, r in data["receivers"].items()]
    for ipath, item in items:
        if not isinstance(item, dict) or ipath in skip:
            continue
        for key in URL_FIELDS:
            value = item.get(key)
            values = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
            for i, v in values:
                if isinstance(v, str) and v:
                    yield ((*ipath, key) if i is None else (*ipath, key, i)), v


def api_token(env: Mapping[str, str] | None = None) -> str:
    """$MONITOR_API_TOKEN, for the CLI's remote mode (`--url`); '' when unset."""
    env = os.environ if env is None else env
    return env.get(API_TOKEN_VAR, "").strip()


def config_path(explicit: str | None = None, env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(explicit or env.get("PORTAL_MONITOR_CONFIG") or DEFAULT_CONFIG)


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read, interpolate and validate a config file; raise ConfigError with every problem."""
    env = os.environ if env is None else env
    path = Path(path)
    name = path.name
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError([f"{path}: cannot read config file: {e.strerror or e}"]) from e
    except UnicodeDecodeError as e:
        raise ConfigError([f"{path}: not UTF-8 text: {e}"]) from e
    return load_config_text(text, name=name, path=path, env=env)


def load_config_text(
    text: str, *, name: str = DEFAULT_CONFIG, path: Path | None = None, env: Mapping[str, str] | None = None
) -> Config:
    env = os.environ if env is None else env
    path = path or Path(name)
    tree, data = read_yaml(text, name)
    pos, keypos = tree.pos, tree.keypos
    if data is None:
        data = {}
    if not isinstance(data, dict):
        line, col = pos.get((), (1, 1))
        raise ConfigError(
            [f"{name}:{line}:{col}: {format_path(())}: the file must be a mapping of keys (listen, checks, rules, ...)"]
        )

    # `rules:` with every rule deleted (YAML null) means no rules, not an error.
    for section in (
        "checks",
        "rules",
        "receivers",
        "inhibit",
        "escalation",
        "defaults",
        "renotify",
        "heartbeat",
        "time_intervals",
    ):
        if section in data and data[section] is None:
            del data[section]

    # The API token is $MONITOR_API_TOKEN unless the file names another source.
    api = data.get("api")
    if api is None or (isinstance(api, dict) and "token" not in api):
        data["api"] = {**(api or {}), "token": "${" + API_TOKEN_VAR + ":-}"}

    errors: list[tuple[tuple[int, int], str]] = []

    def add(path_: Path_, msg: str, at_key: bool = False) -> None:
        where = keypos.get(path_) if at_key else None
        errors.append((where or nearest(pos, path_), f"{format_path(path_)}: {msg}"))

    for p, msg, where in tree.errors:
        errors.append((where, f"{format_path(p)}: {msg}"))

    missing: dict[Path_, list[str]] = {}
    data = _interpolate_tree(data, (), env, missing)

    # A check or receiver that needs an unset variable is switched off (enabled: auto, or
    # enabled: false) instead of failing the whole file; elsewhere a missing variable is an error.
    disabled: dict[str, str] = {}
    skip: list[Path_] = []
    for section in ("checks", "receivers"):
        items = data.get(section)
        pairs: list[tuple[Path_, Any]] = []
        if section == "checks" and isinstance(items, list):
            pairs = [((section, i), item) for i, item in enumerate(items)]
        elif section == "receivers" and isinstance(items, dict):
            pairs = [((section, k), item) for k, item in items.items()]
        for ipath, item in pairs:
            if not isinstance(item, dict):
                continue
            item_name = item.get("name") if section == "checks" else ipath[1]
            need = sorted({v for p, names in missing.items() if p[:2] == ipath for v in names})
            enabled = item.get("enabled", True)
            if enabled is False or enabled == "false":
                disabled[str(item_name)] = ("disabled; set " + ", ".join(need)) if need else "disabled"
                if need:
                    skip.append(ipath)
            elif enabled == "auto" and need:
                names = ", ".join(need[:-1]) + " and " + need[-1] if len(need) > 1 else need[0]
                disabled[str(item_name)] = f"disabled until {names} {'are' if len(need) > 1 else 'is'} set"
                skip.append(ipath)
    for p, names in missing.items():
        if any(p[: len(s)] == s for s in skip):
            continue
        for var in names:
            add(p, f"environment variable {var} is not set (and has no ${{{var}:-default}})")

    # Items switched off for a missing variable are kept out of validation: their
    # empty values are not the user's mistake. Their name and type stay for display.
    skipped_types: dict[str, str] = {}
    valid_data = dict(data)
    if skip:
        if isinstance(data.get("checks"), list):
            kept = []
            for i, item in enumerate(data["checks"]):
                if ("checks", i) in skip:
                    skipped_types[str(item.get("name"))] = str(item.get("type"))
                else:
                    kept.append(item)
            valid_data["checks"] = kept
        if isinstance(data.get("receivers"), dict):
            valid_data["receivers"] = {}
            for k, item in data["receivers"].items():
                if ("receivers", k) in skip:
                    skipped_types[str(k)] = str(item.get("type"))
                else:
                    valid_data["receivers"][k] = item
    index_of = (
        [i for i in range(len(data.get("checks") or [])) if ("checks", i) not in skip]
        if isinstance(data.get("checks"), list)
        else []
    )

    seen: dict[str, int] = {}
    for i, item in enumerate(data.get("checks") or [] if isinstance(data.get("checks"), list) else []):
        check_name = item.get("name") if isinstance(item, dict) else None
        if isinstance(check_name, str):
            if check_name in seen:
                add(("checks", i, "name"), f"duplicate check name {check_name!r} (first at checks[{seen[check_name]}])")
            seen.setdefault(check_name, i)

    root: RootConfig | None = None
    refused: set[Path_] = set()
    try:
        root = RootConfig.model_validate(valid_data)
    except ValidationError as e:
        for p, msg, at_key in _pydantic_errors(e, valid_data):
            if len(p) >= 2 and p[0] == "checks" and isinstance(p[1], int) and p[1] < len(index_of):
                p = ("checks", index_of[p[1]], *p[2:])
            if p in missing:
                continue  # already reported as the missing variable
            if any(p[: len(b)] == b for b in tree.unreadable):
                continue  # already reported: the YAML value itself could not be read
            refused.add(p)
            add(p, msg, at_key)

    # urlsplit() checks a port only when it is read (when a check or receiver starts): here.
    for p, url in _urls(data, skip):
        if p not in refused and (problem := url_port_problem(url)) is not None:
            add(p, problem)

    if root is not None:
        for rname in root.receivers:
            if not re.match(CHECK_NAME, rname):
                add(("receivers", rname), f"receiver name {rname!r} must match {CHECK_NAME}", at_key=True)
        for i, step in enumerate(root.escalation):
            known = set(root.receivers) | set(skipped_types)
            for key in ("receivers", "fallback"):
                for j, r in enumerate(getattr(step, key)):
                    if r not in known and "escalation" in data:
                        add(
                            ("escalation", i, key, j),
                            f"unknown receiver {r!r} (receivers: " + (", ".join(sorted(known)) or "none defined") + ")",
                        )
            if step.severities is None and not step.vendor:
                add(("escalation", i), "needs `severities: [...]` or `vendor: true`")
        interval_at: dict[str, int] = {}
        for i, ti in enumerate(root.time_intervals):
            if ti.name in interval_at:
                add(
                    ("time_intervals", i, "name"),
                    f"duplicate time interval name {ti.name!r} (first at time_intervals[{interval_at[ti.name]}])",
                )
            interval_at.setdefault(ti.name, i)
        rule_names: dict[tuple[str, str], int] = {}
        for i, r in enumerate(root.rules):
            key = (r.alert, r.expr)
            if key in rule_names:
                add(("rules", i, "alert"), f"rule {r.alert!r} with the same expr as rules[{rule_names[key]}]")
            rule_names.setdefault(key, i)
            for j, ti_name in enumerate(r.mute_time_intervals):
                if ti_name not in interval_at:
                    add(
                        ("rules", i, "mute_time_intervals", j),
                        f"unknown time interval {ti_name!r} (time_intervals: "
                        + (", ".join(sorted(interval_at)) or "none defined")
                        + ")",
                    )
        for j, c in enumerate(root.checks):
            i = index_of[j] if j < len(index_of) else j
            if c.name in disabled:
                continue
            iv = c.interval if c.interval is not None else root.defaults.interval
            if iv <= 0:
                add(("checks", i, "interval"), f"{format_duration(iv)}: must be more than 0s")
            if c.timeout is not None and c.timeout <= 0:
                add(("checks", i, "timeout"), f"{format_duration(c.timeout)}: must be more than 0s")

    if errors:
        errors.sort(key=lambda e: e[0])
        raise ConfigError([f"{name}:{line}:{col}: {msg}" for (line, col), msg in errors])
    assert root is not None
    # The log, API and CLI redactors all read this one set.
    secrets = redaction_set(root)
    return Config(root=root, path=path, positions=pos, disabled=disabled, secrets=secrets, skipped_types=skipped_types)
