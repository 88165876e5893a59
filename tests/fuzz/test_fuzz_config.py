"""Fuzzing the config loader (`monitor.config.loader.load_config_text`) and what runs on its result.

Property: any text loads into a `Config` or raises `ConfigError` whose every line reads
`fuzz.yaml:LINE:COL: PATH: MESSAGE` with LINE inside the file. A config that loads then goes
through what `check-config`, `export-rules` and the daemon's start do with it
(`compile_rules`, `build_checks`, `build_receivers`, `export_prometheus`, and the real
`portal-monitor check-config` command): each gives a result or a `ConfigError` of the same
form, never a traceback.

Inputs: arbitrary text, text over YAML's punctuation, and structured documents (the real
sections and keys, random values of random types, near-miss durations and URLs, `${VAR}`
forms with and without defaults, rule expressions from the rule fuzzer), dumped to YAML and
sometimes cut or spliced afterwards.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.cli import main as cli
from monitor.config.loader import ConfigError, load_config_text
from monitor.daemon import build_checks
from monitor.model import MemoryState
from monitor.delivery import build_receivers
from monitor.rules.export import export_prometheus
from monitor.rules.engine import compile_rules
from tests.fuzz import KnownBug, Outcomes, known_bug_cases
from tests.fuzz.test_fuzz_rules import REGEX_PIECES, TEMPLATES, near_miss_expressions

NAME = "fuzz.yaml"
_ERROR_LINE = re.compile(r"fuzz\.yaml:(\d+):(\d+): (.+?): (.+)")

KNOWN_BUGS: tuple[KnownBug, ...] = ()  # none open: add one here when the fuzzer finds a crash

# ---------------------------------------------------------------- the property


# Errors that break the one-line `file:line:col: path: message` form, reported and not fixed
# yet: key -> (regex on the whole error, a minimal input). Counted as known:<key> while listed.
KNOWN_FORMAT_BUGS: dict[str, tuple[str, str]] = {}  # none open
# Where YAML starts a new line (PyYAML's reader): positions count these, so must the test.
_YAML_LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")


def _assert_error_lines(e: ConfigError, text: str, known: list[str] | None = None) -> None:
    """Every error of `e` is one line, fuzz.yaml:LINE:COL: PATH: MESSAGE with LINE inside `text`;
    an error of a listed format bug is appended to `known` instead (when given)."""
    n_lines = len(_YAML_LINE_BREAK.findall(text)) + 1
    assert e.errors, "a ConfigError without errors"
    for err in e.errors:
        m = _ERROR_LINE.fullmatch(err) if len(err.splitlines()) == 1 else None
        if m is None and known is not None:
            key = next((k for k, (rx, _) in KNOWN_FORMAT_BUGS.items() if re.fullmatch(rx, err, re.DOTALL)), None)
            if key is not None:
                known.append(key)
                continue
        assert m is not None, f"not one line of file:line:col: path: message: {err!r} (input {text!r:.500})"
        assert 1 <= int(m[1]) <= n_lines + 1 and int(m[2]) >= 1, (err, n_lines)


def _load_and_use(text: str, env: dict[str, str], path: Path, known: list[str] | None = None) -> str:
    """Everything the CLI and the daemon do with a config; the outcome's name."""
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        cfg = load_config_text(text, name=NAME, path=path, env=env)
    except ConfigError as e:
        _assert_error_lines(e, text, known)
        return "config_error"
    try:
        compile_rules(cfg)
    except ConfigError as e:
        _assert_error_lines(e, text, known)
        return "rule_error"
    build_checks(cfg, MemoryState())
    build_receivers(cfg.root.receivers, host="fuzz", external_url="http://127.0.0.1:9820",
                    disabled=cfg.disabled)
    assert isinstance(export_prometheus(cfg), str)
    return "valid"


def _check(text: str, env: dict[str, str], path: Path, out: Outcomes) -> str:
    known: list[str] = []
    try:
        outcome = _load_and_use(text, env, path, known)
    except AssertionError:
        raise
    except Exception as e:
        if out.known(e, KNOWN_BUGS):
            return "known"
        raise AssertionError(f"{type(e).__name__}: {e} on input {text!r:.2000} env={env}") from e
    out.add(f"known:{known[0]}" if known else outcome)  # one outcome per input
    return outcome


# ---------------------------------------------------------------- arbitrary text

_YAML_ALPHABET = "abcxyz019_-.:,[]{}#&*!|>'\"%@`?$\\ \t\n"
_ANY_TEXT = st.one_of(
    st.text(max_size=200),
    st.text(alphabet=_YAML_ALPHABET, max_size=200),
    st.lists(st.sampled_from([
        "listen: 127.0.0.1:0", "checks:", "- name: c", "  type: redis", "  url: redis://h", "rules:",
        "  - alert: A", "    expr: m > 1", "    severity: P1", "receivers:", "  r: {type: log}", "  interval: 5s",
        "  - {name: x, type: http, url: 'http://h/'}", "escalation: []", "defaults: {interval: 1s}", "a: &x 1",
        "b: *x", "<<: {a: 1}", "? [a]", ": b", "- - -", "---", "...", "%YAML 1.1", "!!str", "x: !!binary aGk=",
        "t: 2024-01-01", "t: 2024-02-30", "n: 0x1F", "n: 1_000", "n: .inf", "y: yes", "api: {token: short}",
    ]), max_size=12).map("\n".join),
)


def test_config_text_fuzz(tmp_path: Path) -> None:
    """Arbitrary text: a Config, or a ConfigError whose lines are file:line:col: path: message."""
    out = Outcomes("config arbitrary-text")
    path = tmp_path / NAME

    @settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(_ANY_TEXT)
    def run(text: str) -> None:
        _check(text, {}, path, out)

    run()
    print(out.report())
    assert out.counts["config_error"] > 500, out.report()


# ---------------------------------------------------------------- structured documents

_VARS = ("FUZZ_A", "FUZZ_B", "FUZZ_URL", "FUZZ_D", "FUZZ_EMPTY")
_ENV = st.dictionaries(st.sampled_from(_VARS), st.sampled_from([
    "", "x", "5s", "10 s", "http://127.0.0.1:1/health", "redis://:pw@127.0.0.1:1/0", "${FUZZ_B}", "$$", "P1",
    "0123456789abcdef0123456789abcdef", "true", "[a, b]", "a: b", "\n", "é",
]), max_size=len(_VARS))


def _interpolated(value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A value, or a string holding it in one of the ${VAR} forms (some malformed)."""
    forms = st.sampled_from([
        "${FUZZ_A}", "${FUZZ_A:-%s}", "${FUZZ_EMPTY:-%s}", "${FUZZ_UNSET}", "${FUZZ_UNSET:-%s}", "${FUZZ_URL}",
        "$${FUZZ_A}", "${FUZZ_A", "${1BAD}", "${FUZZ_A:-${FUZZ_B}}", "$FUZZ_A", "%s${FUZZ_D}", "${:-%s}",
        "${FUZZ_A:=x}", "${FUZZ_A:-}",
    ])
    return st.one_of(value, st.tuples(forms, value).map(lambda fv: fv[0].replace("%s", str(fv[1]))))


_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(), st.text(max_size=12))
_ANY_VALUE = st.recursive(_SCALAR, lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)
Field = tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]  # (a valid value, any value)


def _field(clean: list[Any] | st.SearchStrategy[Any], dirty: list[Any] | st.SearchStrategy[Any] | None = None,
           interpolate: bool = True) -> Field:
    """A field's strategies: `clean` values are valid; `dirty` adds near misses, wrong types and ${VAR} forms."""
    c = st.sampled_from(clean) if isinstance(clean, list) else clean
    d = st.sampled_from(dirty) if isinstance(dirty, list) else dirty
    anything = st.one_of(c, d) if d is not None else c
    return c, _interpolated(anything) if interpolate else anything


_WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=8)
_DURATION = _field(["250ms", "10s", "5m", "1h", "1h30m", "1.5s", "${FUZZ_UNSET:-10s}"], st.one_of(st.sampled_from([
    "1d", "0", 0, "0s", "10 s", "10", 10, 1.5, "-1s", "1e3s", "5mm", "1h30", "", "inf", "1w",
    "99999999999999999999d", "1s1s", True, None, [], {}]), _SCALAR))
_BAD_URLS = ["http://h:abc/", "http://u:pw@h:99999/", "http://[::1/x", "localhost:4000", "", "ftp://h/", "http:///x",
             "http://h/\nx", "http://é.example/", "redis://u:pw@h:abc/0", "redis://h:0/99", "postgres://u:p@h:port/db",
             "https://u:pw@h:8443/x?y=1", "redis://127.0.0.1:1/0", "postgresql://u:pw@127.0.0.1:1/db"]
_HTTP_URL = _field(["http://127.0.0.1:1/health", "https://u:pw@h:8443/x?y=1", "${FUZZ_UNSET:-http://127.0.0.1:1/}"],
                   _BAD_URLS)
# The loader accepts a non-numeric port in these (only the scheme is checked): "clean" as far as it knows.
_REDIS_URL = _field(["redis://127.0.0.1:1/0", "rediss://:pw@h/0", "unix:///tmp/r.sock", "redis://u:pw@h:abc/0"],
                    _BAD_URLS)
_PG_URL = _field(["postgresql://u:pw@127.0.0.1:1/db", "postgresql://h/db?sslmode=require",
                  "postgresql://u:pw@h:port/db"], _BAD_URLS)
_PD_URL = _field(["https://events.pagerduty.com/v2/enqueue", "http://127.0.0.1:1/v2/enqueue", "http://u:pw@h:abc/"],
                 _BAD_URLS)
_NAME = st.one_of(st.sampled_from(["cache", "db", "a.b-c", "x_1", "1x", "", "x y", "é", "dup"]),
                  st.integers(0, 3), st.none())
_CLEAN_NAME = st.sampled_from(["cache", "db", "a.b-c", "x_1", "web", "bff", "logs"])
_REGEX = _field(["node.*bff", "x", "a|b", "/auth/login"], st.one_of(REGEX_PIECES, st.text(max_size=8)),
                interpolate=False)
_ENABLED = _field([True, False, "auto"], ["false", "yes", 1, None], interpolate=False)
_BOOL = _field([True, False], ["yes", 1, None], interpolate=False)
_TEXT = _field(_WORD, st.text(max_size=8))

_CHECK_FIELDS: dict[str, dict[str, Field]] = {
    "redis": {"url": _REDIS_URL, "replay_pattern": _field(["sf:pe:replay:*"], ["", "\\", "a[b"]),
              "max_keys": _field(st.integers(1, 100_000), st.integers(-5, 10**6)), "watch": _BOOL},
    "postgres": {"dsn": _PG_URL, "statement_timeout": _DURATION, "watch": _BOOL},
    "whmcs": {"url": _HTTP_URL, "identifier": _TEXT, "secret": _TEXT,
              "accesskey": _field(_WORD, st.one_of(st.none(), st.text(max_size=8)))},
    "http": {"url": _HTTP_URL, "method": _field(["GET", "HEAD", "POST"], ["get", "DELETE"]),
             "expected_status": _field(st.one_of(st.integers(100, 599), st.lists(st.integers(100, 599), max_size=3)),
                                       st.integers(-1, 1000)),
             "components": _field(["checks", "a.b"], [None, ""]),
             "headers": _field(st.dictionaries(st.sampled_from(["X-Token", "Accept"]), _WORD, max_size=2),
                               st.dictionaries(st.sampled_from(["Authorization", "A\nB"]),
                                               st.sampled_from(["v", "a\r\nInjected: 1", "${FUZZ_A}"]), max_size=2)),
             "tls_verify": _BOOL},
    "logfile": {"paths": _field(st.lists(st.sampled_from(["/nonexistent/a.log", "/nonexistent/b.log"]),
                                         min_size=1, max_size=2), st.lists(st.sampled_from([""]), max_size=1)),
                "from": _field(["end", "start"], ["middle"]),
                "format": _field(["json"], ["regex", "xml"]),
                "preset": _field(["winston", "pino"], ["bunyan"]),
                "fields": _field(st.dictionaries(st.sampled_from(["level", "status", "duration", "time", "ip"]),
                                                 st.sampled_from(["lvl", "res.code", "meta.ms"]), max_size=2),
                                 st.dictionaries(st.sampled_from(["level", "status", "duration", "x"]),
                                                 st.one_of(st.sampled_from(["a", "a.b", "", ".", "a..b"]),
                                                           st.lists(st.sampled_from(["a", "a.b", "b"]), max_size=2)),
                                                 max_size=3)),
                "regex": _field([None], st.one_of(_REGEX[1], st.just(r"(?P<level>\w+) (?P<status>\d+)"))),
                "patterns": _field(st.dictionaries(st.sampled_from(["login", "x"]), _REGEX[0], max_size=2),
                                   st.dictionaries(st.sampled_from(["login", "a b", "x"]), _REGEX[1], max_size=2)),
                "auth_failure": _field([None, {"status": [401], "path": "/auth/login"}], st.fixed_dictionaries(
                    {}, optional={"status": st.lists(st.integers(0, 999), max_size=2), "path": _REGEX[1],
                                  "message": _REGEX[1]})),
                "window": _DURATION, "time_source": _field(["read", "line"], ["x"]),
                "duration_unit": _field(["ms", "s"], ["us"]),
                "max_line_bytes": _field(st.integers(256, 1 << 24), st.integers(0, 1 << 25)),
                "max_sources": _field(st.integers(1, 10_000), st.integers(0, 20_000))},
    "process": {"cmdline": _REGEX},
}
_RECEIVER_FIELDS: dict[str, dict[str, Field]] = {
    "pagerduty": {"routing_key": _field(["0123456789abcdef0123456789abcdef"], ["short", ""]),
                  "url": _PD_URL, "source": _TEXT, "timeout": _DURATION,
                  "rate_limit_per_minute": _field(st.integers(1, 10_000), st.integers(-1, 20_000))},
    "webhook": {"url": _HTTP_URL, "secret": _field(_WORD, st.one_of(st.none(), st.text(max_size=8))),
                "timeout": _DURATION},
    "slack": {"url": _HTTP_URL, "timeout": _DURATION},
    "alertmanager": {"urls": _field(st.lists(_HTTP_URL[0], min_size=1, max_size=2),
                                    st.lists(_HTTP_URL[1], max_size=2)),
                     "timeout": _DURATION, "resend_ttl": _DURATION},
    "log": {},
}
_SEVERITY = _field(["P1", "P2", "P3", "P4"], ["P5", "p1", 1, None], interpolate=False)


@st.composite
def _item(draw: Any, fields: dict[str, Field], base: dict[str, Any],
          required: dict[str, Field] | None = None, clean: bool | None = None) -> dict[str, Any]:
    """A mapping with all of `required` and some of `fields`: all valid values (when `clean`,
    else half the time), else any values, a wrong type, an unknown key or a missing one."""
    clean = draw(st.booleans()) if clean is None else clean
    item = dict(base)
    for key, (good, anything) in (required or {}).items():
        item[key] = draw(good if clean else anything)
    for key, (good, anything) in fields.items():
        if draw(st.integers(0, 2)):
            item[key] = draw(good if clean else anything)
    if clean:
        return item
    if fields and draw(st.integers(0, 5)) == 0:
        item[draw(st.sampled_from(sorted(fields)))] = draw(_ANY_VALUE)
    if draw(st.integers(0, 8)) == 0:
        item[draw(st.sampled_from(["timeout_s", "intervall", "Type", "x"]))] = draw(_SCALAR)
    if item and draw(st.integers(0, 8)) == 0:
        del item[draw(st.sampled_from(sorted(item, key=str)))]
    return item


_COMMON_CHECK_FIELDS = {"interval": _DURATION, "timeout": _DURATION, "enabled": _ENABLED,
                        "labels": _field(st.dictionaries(_WORD, _WORD, max_size=2),
                                         st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2))}
_CHECK_ITEM_FIELDS = {kind: {**_COMMON_CHECK_FIELDS, **fields} for kind, fields in _CHECK_FIELDS.items()}
_CHECK_ITEM_FIELDS["smtp"] = _COMMON_CHECK_FIELDS
_RULE_FIELDS = {"for": _DURATION, "keep_firing_for": _DURATION, "summary": _field(["Redis {{ $labels.check }}"],
                                                                                  TEMPLATES),
                "description": _field(["{{ $value }}", "1. redis-cli ping"], TEMPLATES), "runbook": _TEXT,
                "vendor": _field([None, "Salesforce"], st.text(max_size=5)),
                "labels": _field(st.dictionaries(st.sampled_from(["team", "area"]), _WORD, max_size=2),
                                 st.dictionaries(st.sampled_from(["team", "severity", "__x", "a-b"]),
                                                 st.sampled_from(["x", "{{ $value }}", ""]), max_size=2))}
_RECEIVER_ITEM_FIELDS = {kind: {"enabled": _ENABLED, **fields} for kind, fields in _RECEIVER_FIELDS.items()}
_RECEIVER_ITEM_FIELDS["email"] = {"enabled": _ENABLED}
_ALERT_NAME = _field(["RedisDown", "A_1", "HighErrorRate"], ["1bad", "", "x y"], interpolate=False)
_EXPRESSION = _field(["portal_redis_up == 0", 'portal_http_up{check="bff", code=~"5.."} < 1', "absent(m)",
                      "portal_log_error_ratio > 0.01", "m != -Inf", "m{a!~'x|y'} >= 0x1F"],
                      near_miss_expressions(), interpolate=False)
_RULE_REQUIRED = {"alert": _ALERT_NAME, "expr": _EXPRESSION, "severity": _SEVERITY}


@st.composite
def _check_item(draw: Any, clean: bool | None = None) -> dict[str, Any]:
    kinds = [k for k in _CHECK_ITEM_FIELDS if not clean or k != "smtp"]
    kind = draw(st.sampled_from(sorted(kinds)))
    return draw(_item(_CHECK_ITEM_FIELDS[kind], {"name": draw(st.one_of(_CLEAN_NAME, _NAME)), "type": kind},
                      clean=clean))


@st.composite
def _rule_item(draw: Any, clean: bool | None = None) -> dict[str, Any]:
    return draw(_item(_RULE_FIELDS, {}, _RULE_REQUIRED, clean=clean))


@st.composite
def _receiver_item(draw: Any, clean: bool | None = None) -> dict[str, Any]:
    kinds = [k for k in _RECEIVER_ITEM_FIELDS if not clean or k != "email"]
    kind = draw(st.sampled_from(sorted(kinds)))
    return draw(_item(_RECEIVER_ITEM_FIELDS[kind], {"type": kind}, clean=clean))


_RECEIVER_NAMES = st.sampled_from(["oncall", "lead", "chat", "bad name", "x"])


_SECTIONS: dict[str, st.SearchStrategy[Any]] = {
    "listen": _interpolated(st.sampled_from(["127.0.0.1:0", "127.0.0.1:9820", ":9820", "[::1]:1", "h", "h:x",
                                             "h:70000", 9820])),
    "state_dir": st.sampled_from(["/nonexistent/state", "", "${FUZZ_A}"]),
    "defaults": st.fixed_dictionaries({}, optional={"interval": _DURATION[1], "timeout": _DURATION[1]}),
    "checks": st.lists(_check_item(), max_size=3),
    "rules": st.lists(_rule_item(), max_size=3),
    "receivers": st.dictionaries(_RECEIVER_NAMES, _receiver_item(), max_size=3),
    "escalation": st.lists(st.fixed_dictionaries(
        {"level": st.sampled_from(["L1", "L2", "L5"]), "receivers": st.lists(_RECEIVER_NAMES, max_size=2)},
        optional={"after": _DURATION[1], "severities": st.lists(_SEVERITY[1], max_size=2), "vendor": st.booleans(),
                  "fallback": st.lists(_RECEIVER_NAMES, max_size=1)}), max_size=3),
    "inhibit": st.lists(st.fixed_dictionaries(
        {"source": st.dictionaries(st.sampled_from(["alertname", "check"]),
                                   st.one_of(st.text(max_size=4), st.lists(st.text(max_size=4), max_size=2)),
                                   max_size=2),
         "target": st.dictionaries(st.sampled_from(["alertname"]), st.text(max_size=4), max_size=1)},
        optional={"equal": st.lists(st.sampled_from(["check", "x"]), max_size=2)}), max_size=2),
    "renotify": st.dictionaries(st.sampled_from(["P1", "P2", "P5"]), _DURATION[1], max_size=2),
    "api": st.fixed_dictionaries({}, optional={
        "token": _interpolated(st.sampled_from(["", "short", "0123456789abcdef0123"])),
        "metrics_auth": st.fixed_dictionaries({}, optional={
            "bearer": st.text(max_size=5),
            "basic": st.fixed_dictionaries({}, optional={"username": st.text(max_size=4),
                                                         "password": st.text(max_size=4)})})}),
    "heartbeat": st.fixed_dictionaries({}, optional={"url": _HTTP_URL[1], "interval": _DURATION[1],
                                                     "method": st.sampled_from(["GET", "PUT"])}),
    "unknown_section": _ANY_VALUE,
}


@st.composite
def _clean_document(draw: Any) -> dict[str, Any]:
    """Checks, rules and receivers with valid values only (a check or rule may still be
    refused for what its values mean together, e.g. format: json with a regex)."""
    checks = draw(st.lists(_check_item(clean=True), max_size=3))
    for i, c in enumerate(checks):
        c["name"] = f"c{i}"
    return {"listen": "127.0.0.1:0", "checks": checks, "rules": draw(st.lists(_rule_item(clean=True), max_size=3)),
            "receivers": draw(st.dictionaries(st.sampled_from(["oncall", "lead", "chat"]),
                                              _receiver_item(clean=True), max_size=3))}


@st.composite
def _document(draw: Any) -> dict[str, Any]:
    """Half the time a clean document; else checks and rules always, each other section
    sometimes (an unknown one rarely)."""
    if draw(st.booleans()):
        return draw(_clean_document())
    doc = {}
    for key, strategy in _SECTIONS.items():
        if key in ("checks", "rules") or draw(st.integers(0, 3 if key != "unknown_section" else 20)) == 0:
            doc[key] = draw(strategy)
    return doc


@st.composite
def _structured_text(draw: Any) -> str:
    """A document dumped to YAML (block or flow style), sometimes cut or spliced afterwards."""
    doc = draw(_document())
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, default_flow_style=draw(st.booleans()),
                          width=draw(st.sampled_from([80, 10**6])))
    action = draw(st.sampled_from(["none", "none", "none", "cut", "insert", "dup_line", "indent"]))
    if action == "cut" and text:
        i = draw(st.integers(0, len(text) - 1))
        text = text[:i] + text[i + draw(st.integers(1, 20)):]
    elif action == "insert":
        i = draw(st.integers(0, len(text)))
        text = text[:i] + draw(st.sampled_from(list(":-[]{}#&*!|>'\"\t\n ") + ["${", "  ", "\n- "])) + text[i:]
    elif action in ("dup_line", "indent"):
        lines = text.splitlines(keepends=True)
        if lines:
            i = draw(st.integers(0, len(lines) - 1))
            lines.insert(i, lines[i]) if action == "dup_line" else lines.__setitem__(i, " " + lines[i])
            text = "".join(lines)
    return text


def test_config_structured_fuzz(tmp_path: Path) -> None:
    """Valid-looking documents with random keys, values, types, durations and ${VAR} forms."""
    out = Outcomes("config structured")
    path = tmp_path / NAME

    @settings(max_examples=800, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(_structured_text(), _ENV)
    def run(text: str, env: dict[str, str]) -> None:
        _check(text, env, path, out)

    run()
    print(out.report())
    assert out.counts["config_error"] > 100 and out.counts["valid"] > 10, out.report()


# ---------------------------------------------------------------- the real command


def _mostly(f: Field) -> st.SearchStrategy[Any]:
    return st.one_of(f[0], f[1])  # a valid value half the time, else anything


@st.composite
def _mostly_valid_text(draw: Any) -> str:
    """Documents close to valid, so that `check-config` mostly reaches its summary."""
    checks = [{"name": f"c{i}", "type": "http", "url": draw(_mostly(_HTTP_URL)), "interval": draw(_mostly(_DURATION))}
              for i in range(draw(st.integers(0, 2)))]
    checks += [{"name": "r", "type": "redis", "url": draw(_mostly(_REDIS_URL))}] if draw(st.booleans()) else []
    checks += [{"name": "p", "type": "postgres", "dsn": draw(_mostly(_PG_URL))}] if draw(st.booleans()) else []
    rules = [{"alert": "A", "expr": draw(_mostly(_EXPRESSION)), "severity": "P1",
              "summary": draw(_mostly(_RULE_FIELDS["summary"]))}]
    receivers = {"oncall": {"type": "webhook", "url": draw(_mostly(_HTTP_URL)), "enabled": "auto"},
                 "pd": {"type": "pagerduty", "routing_key": "0123456789abcdef0123456789abcdef",
                        "url": draw(_mostly(_PD_URL))}}
    escalation = [{"level": "L1", "severities": ["P1"], "receivers": ["oncall", "pd"]}]
    return yaml.safe_dump({"listen": "127.0.0.1:0", "checks": checks, "rules": rules, "receivers": receivers,
                           "escalation": escalation}, sort_keys=False, allow_unicode=True)


def test_check_config_command_fuzz(tmp_path: Path) -> None:
    """`portal-monitor check-config` exits 0 with a summary or 1 with positioned errors, never a traceback."""
    out = Outcomes("check-config command")
    path = tmp_path / NAME

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(_mostly_valid_text(), _ENV)
    def run(text: str, env: dict[str, str]) -> None:
        path.write_text(text, encoding="utf-8")
        stdout, stderr = io.StringIO(), io.StringIO()
        try:
            with mock.patch.dict(os.environ, env), contextlib.redirect_stdout(stdout), \
                    contextlib.redirect_stderr(stderr):
                rc = cli.main(["check-config", "-c", str(path)])
        except Exception as e:
            if out.known(e, KNOWN_BUGS):
                return
            raise AssertionError(f"check-config raised {type(e).__name__}: {e} on {text!r} env={env}") from e
        if rc == 0:
            assert stdout.getvalue().startswith(f"{path}: OK"), stdout.getvalue()
            out.add("valid")
            return
        assert rc == 1
        lines = stderr.getvalue().splitlines()
        assert re.fullmatch(r"\d+ errors?", lines[-1]), lines
        known: list[str] = []
        _load_and_use(text, env, path, known)  # the same errors, one per entry: which known bugs they hit
        if not known:
            for line in lines[:-1]:
                assert _ERROR_LINE.fullmatch(line), line
        out.add(f"known:{known[0]}" if known else "config_error")

    run()
    print(out.report())
    assert out.counts["valid"] > 10 and out.counts["config_error"] > 10, out.report()


@pytest.mark.parametrize("key", [pytest.param(k, marks=pytest.mark.xfail(
    strict=True, raises=AssertionError,
    reason=f"known bug {k}: an error that is not one line of file:line:col: path: message "
    f"on {KNOWN_FORMAT_BUGS[k][1]!r}; when this XPASSes, delete the KNOWN_FORMAT_BUGS entry"))
    for k in KNOWN_FORMAT_BUGS])
def test_known_format_bug_minimal_input(key: str, tmp_path: Path) -> None:
    """Each listed format bug's minimal input gives well-formed error lines (xfail while it stands)."""
    _load_and_use(KNOWN_FORMAT_BUGS[key][1], {}, tmp_path / NAME)


@pytest.mark.parametrize("bug", known_bug_cases(KNOWN_BUGS))
def test_known_bug_minimal_input(bug: KnownBug, tmp_path: Path) -> None:
    """Each known bug's minimal input gives a Config or a ConfigError (xfail while the bug stands)."""
    try:
        _load_and_use(bug.example, {}, tmp_path / NAME)
    except ConfigError:
        pass


def test_positions_count_every_line_break_yaml_knows() -> None:
    """Found by the fuzzer: '\\r\\x850' is three lines to YAML (CR and NEL break lines), and
    the error names line 3, where the scalar is."""
    with pytest.raises(ConfigError) as e:
        load_config_text("\r\x850", name=NAME, env={})
    assert e.value.errors == [f"{NAME}:3:1: (top): the file must be a mapping of keys (listen, checks, rules, ...)"]
    _assert_error_lines(e.value, "\r\x850")
