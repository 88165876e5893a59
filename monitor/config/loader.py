"""Loading alert_rules.yaml: YAML with positions, ${VAR:-default} interpolation, validation.

The only module that reads the configuration file or the environment for it. Every error
names the file, line, column and key path (`alert_rules.yaml:14:5: checks[2].interval: '10 s'
is not a duration`), and one load reports every error it can find, not only the first.
Whatever the text, the result is a `Config` (`monitor.config.model`) or a `ConfigError` of
such lines: PyYAML's own failures (a scalar its constructors refuse, a character YAML
forbids, a recursive alias, nesting past MAX_DEPTH) included, and control characters in
quoted keys or values escaped.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from checks import CHECK_TYPES
from monitor.config.fields import CHECK_NAME, format_duration, url_port_problem
from monitor.config.model import API_TOKEN_VAR, DEFAULT_CONFIG, Config, RootConfig
from monitor.config.yamlpos import ConfigError as ConfigError  # what load_config raises: part of its API
from monitor.config.yamlpos import Path_, format_path, nearest, read_yaml
from monitor.delivery import RECEIVER_TYPES
from monitor.secrets import redaction_set

# ---------------------------------------------------------------- ${VAR:-default}


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
                listed = ", ".join(need[:-1]) + " and " + need[-1] if len(need) > 1 else need[0]
                disabled[str(item_name)] = f"disabled until {listed} {'are' if len(need) > 1 else 'is'} set"
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
            if r.alert and r.severity is None:
                add(("rules", i, "severity"), "required key is missing")
            rule_key = (r.alert, r.expr) if r.alert else ("record:" + r.record, r.expr + repr(sorted(r.labels.items())))
            if rule_key in rule_names:
                key = "alert" if r.alert else "record"
                add(("rules", i, key), f"rule {r.name!r} with the same expr as rules[{rule_names[rule_key]}]")
            rule_names.setdefault(rule_key, i)
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


# ---------------------------------------------------------------- fit to run


def _receiver_state(cfg: Config, name: str) -> str | None:
    """None when `name` is an enabled receiver; otherwise why it is not (for the error)."""
    rc = cfg.root.receivers.get(name)
    if rc is None:
        return cfg.disabled.get(name, "not defined under receivers:")
    if rc.enabled is False:
        return "enabled: false"
    return cfg.disabled.get(name)


def _p1_steps(rule: Any, cfg: Config) -> list[Any]:
    """The escalation steps a P1 alert of `rule` takes (as `monitor.incidents.routing.steps_for`)."""
    return [
        s
        for s in cfg.root.escalation
        if (s.vendor and bool(rule.vendor) and (s.severities is None or "P1" in s.severities))
        or (not s.vendor and s.severities is not None and "P1" in s.severities)
    ]


def runnable_errors(cfg: Config) -> list[str]:
    """What makes a valid file unfit for the daemon, one positioned line each: nothing in it
    (an empty or half-saved file), no check, or a P1 rule that no enabled receiver would hear
    about (escalation `fallback` receivers counted). `run` refuses such a file at start and on
    every reload; `check-config` reports it. Rule files for `test-rules` need none of this."""
    name = cfg.path.name
    if not any(len(p) == 1 for p in cfg.positions):
        return [
            f"{name}:1:1: the file is empty (no checks, rules or receivers): a half-written save? "
            "it needs at least `checks:`"
        ]
    errors: list[str] = []
    if not cfg.root.checks and not any(t in CHECK_TYPES for t in cfg.skipped_types.values()):
        errors.append(f"{cfg.where('checks')}: checks: no check is defined: the daemon would watch nothing")
    for i, rule in enumerate(cfg.root.rules):
        if rule.severity != "P1":
            continue
        steps = _p1_steps(rule, cfg)
        if any(_receiver_state(cfg, n) is None for s in steps for n in (*s.receivers, *s.fallback)):
            continue

        def listed(names: list[str]) -> str:
            return ", ".join(f"{n} ({_receiver_state(cfg, n)})" for n in names)

        why = (
            "; ".join(
                f"{s.level} {listed(s.receivers)}" + (f", fallback {listed(s.fallback)}" if s.fallback else "")
                for s in steps
            )
            if steps
            else "no escalation step takes P1"
        )
        errors.append(
            f"{cfg.where('rules', i, 'severity')}: rules[{i}].severity: P1 rule {rule.alert!r} reaches no enabled "
            f"receiver: {why}"
        )
    return errors


def require_runnable(cfg: Config) -> Config:
    """`cfg`, or ConfigError with `runnable_errors(cfg)`."""
    errors = runnable_errors(cfg)
    if errors:
        raise ConfigError(errors)
    return cfg


def config_warnings(cfg: Config) -> list[str]:
    """Legal but worth a word in `check-config`: a file without rules pages nobody (fine when
    Prometheus scrapes /metrics and does the alerting)."""
    if not cfg.root.rules:
        return [f"{cfg.where('rules')}: no rules: nothing will page (fine if Prometheus alerts on /metrics)"]
    return []
