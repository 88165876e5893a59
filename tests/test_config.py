"""The config loader: positions, interpolation, every error at once, enabled: auto."""

from __future__ import annotations

import re
import warnings

import pytest

from monitor.config.fields import compile_regex, format_duration, parse_duration
from monitor.config.loader import ConfigError, interpolate, load_config, load_config_text
from monitor.config.yamlpos import load_yaml_text


def errors_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load_config_text(text, env=env or {})
    return exc.value.errors


@pytest.mark.parametrize(("text", "seconds"), [
    ("250ms", 0.25), ("10s", 10), ("5m", 300), ("1h", 3600), ("1h30m", 5400), ("1d", 86400), ("0", 0), (0, 0),
    ("1.5s", 1.5),
])
def test_durations_parse(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["10 s", "10", 10, "s", "", "1x", "5m3", True, "-1s"])
def test_bad_durations_are_refused(text: object) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


@pytest.mark.parametrize("seconds", [0.25, 1, 10, 90, 3600, 5400, 86400 + 60])
def test_format_duration_round_trips(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


def test_error_names_file_line_column_and_key_path() -> None:
    text = "checks:\n  - name: cache\n    type: redis\n    interval: 10 s\n"
    assert errors_of(text) == [
        "alert_rules.yaml:4:15: checks[0].interval: '10 s' is not a duration (use e.g. 250ms, 10s, 5m, 1h)"]


def test_every_error_is_reported_not_only_the_first() -> None:
    text = """\
listen: nowhere
checks:
  - {name: cache, type: redis, interval: 10 s}
  - {name: db, type: postgres, bogus: 1}
  - {name: x, type: smtp}
  - {name: cache, type: redis}
rules:
  - {alert: A, expr: up, severity: P9}
receivers:
  oncall: {type: pagerduty, routing_key: short}
"""
    errs = errors_of(text)
    assert len(errs) == 7, errs
    joined = "\n".join(errs)
    assert "alert_rules.yaml:1:9: listen: 'nowhere' is not host:port" in joined
    assert "alert_rules.yaml:3:42: checks[0].interval: '10 s' is not a duration" in joined
    assert "alert_rules.yaml:4:32: checks[1].bogus: unknown key" in joined
    assert "alert_rules.yaml:5:21: checks[2].type: 'smtp' is not one of 'redis', 'postgres'" in joined
    assert "checks[3].name: duplicate check name 'cache' (first at checks[0])" in joined
    assert "alert_rules.yaml:8:36: rules[0].severity: 'P9'" in joined
    assert "receivers.oncall.routing_key: routing_key must be the 32-character integration key" in joined
    # Sorted by position, as a person reads the file.
    lines = [int(e.split(":")[1]) for e in errs]
    assert lines == sorted(lines)


def test_missing_key_and_duplicate_key_are_errors() -> None:
    errs = errors_of("checks:\n  - {type: redis}\nlisten: a:1\nlisten: b:2\n")
    assert any("checks[0].name: required key is missing" in e for e in errs)
    assert any(e.startswith("alert_rules.yaml:4:1: listen: duplicate key 'listen'") for e in errs)


def test_invalid_yaml_names_the_position() -> None:
    errs = errors_of("checks:\n  - {name: a, type: redis\n")
    assert len(errs) == 1 and errs[0].startswith("alert_rules.yaml:3:1: invalid YAML")


def test_interpolation_with_default_and_escape() -> None:
    assert interpolate("${A}/${B:-dflt}/$${A}", {"A": "x"}) == ("x/dflt/${A}", [])
    assert interpolate("${A:-d}", {"A": ""}) == ("d", [])
    assert interpolate("${NOPE}", {}) == ("", ["NOPE"])


def test_missing_variable_is_an_error_that_names_it() -> None:
    errs = errors_of('checks:\n  - {name: h, type: http, url: "${BFF_URL}"}\n')
    assert errs == ["alert_rules.yaml:2:32: checks[0].url: environment variable BFF_URL is not set "
                    "(and has no ${BFF_URL:-default})"]


def test_interpolated_values_are_validated() -> None:
    errs = errors_of('checks:\n  - {name: h, type: http, url: "http://x", interval: "${IV:-10 s}"}\n')
    assert "checks[0].interval: '10 s' is not a duration" in errs[0]
    cfg = load_config_text('checks:\n  - {name: h, type: http, url: "http://x", interval: "${IV:-10s}"}\n',
                           env={"IV": "2s"})
    assert cfg.interval(cfg.checks[0]) == 2.0


def test_enabled_auto_disables_a_check_until_its_variables_are_set() -> None:
    text = """\
checks:
  - name: whmcs
    type: whmcs
    enabled: auto
    url: "${WHMCS_API_URL}"
    identifier: "${WHMCS_API_IDENTIFIER}"
    secret: "${WHMCS_API_SECRET}"
"""
    cfg = load_config_text(text, env={"WHMCS_API_SECRET": "s3cret-value"})
    assert cfg.checks == []
    assert cfg.disabled_checks() == [
        ("whmcs", "whmcs", "disabled until WHMCS_API_IDENTIFIER and WHMCS_API_URL are set")]
    cfg = load_config_text(text, env={"WHMCS_API_URL": "https://b.example/includes/api.php",
                                      "WHMCS_API_IDENTIFIER": "ident-1", "WHMCS_API_SECRET": "s3cret-value"})
    assert [c.name for c in cfg.checks] == ["whmcs"]
    assert {"ident-1", "s3cret-value"} <= cfg.secrets


def test_enabled_false_is_disabled_and_reports_what_to_set() -> None:
    cfg = load_config_text('checks:\n  - {name: h, type: http, enabled: false, url: "${U}"}\n', env={})
    assert cfg.disabled_checks() == [("h", "http", "disabled; set U")]


def test_timeout_defaults_to_the_smaller_of_interval_and_default() -> None:
    cfg = load_config_text("""\
defaults: {interval: 30s, timeout: 10s}
checks:
  - {name: a, type: redis, interval: 1s}
  - {name: b, type: redis}
  - {name: c, type: redis, interval: 1s, timeout: 500ms}
""", env={})
    assert [(cfg.interval(c), cfg.timeout(c)) for c in cfg.checks] == [(1, 1), (30, 10), (1, 0.5)]


def test_secrets_are_collected_from_secret_fields_and_url_passwords() -> None:
    cfg = load_config_text("""\
checks:
  - {name: a, type: redis, url: "redis://:hunter22@127.0.0.1:6379/0"}
  - {name: b, type: http, url: "http://x/health", headers: {Authorization: "Bearer tok-12345"}}
receivers:
  pd: {type: pagerduty, routing_key: "0123456789abcdef0123456789abcdef"}
""", env={})
    assert {"hunter22", "Bearer tok-12345", "0123456789abcdef0123456789abcdef"} <= cfg.secrets


def test_escalation_must_name_known_receivers() -> None:
    errs = errors_of("""\
receivers:
  oncall: {type: log}
escalation:
  - {level: L1, severities: [P1], receivers: [oncall, pager]}
""")
    assert errs == ["alert_rules.yaml:4:55: escalation[0].receivers[1]: unknown receiver 'pager' (receivers: oncall)"]


def test_the_shipped_file_loads_with_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config("alert_rules.yaml", env={})
    assert {c.type for c in cfg.checks} >= {"redis", "postgres"}
    assert "whmcs" in cfg.disabled


def test_unreadable_file_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.yaml")


def test_optional_secrets_and_url_lists_are_secrets_too() -> None:
    cfg = load_config_text("""\
checks:
  - {name: w, type: whmcs, url: "https://b/includes/api.php", identifier: id-1234, secret: sec-1234,
     accesskey: acc-1234}
receivers:
  am: {type: alertmanager, urls: ["http://u:am-pass-1@127.0.0.1:9093"]}
""", env={})
    assert {"id-1234", "sec-1234", "acc-1234", "am-pass-1"} <= cfg.secrets


def test_an_emptied_section_is_empty_not_an_error() -> None:
    cfg = load_config_text("checks:\nrules:\ninhibit:\n", env={})
    assert cfg.root.checks == [] and cfg.root.rules == [] and cfg.root.inhibit == []


# ---------------------------------------------------------------- bad input never escapes as a traceback

_ONE_ERROR_LINE = r"alert_rules\.yaml:\d+:\d+: [^:\n]+: [^\n]+"


@pytest.mark.parametrize(("text", "expected"), [
    ("listen: 2024-13-01\n", "alert_rules.yaml:1:9: listen: '2024-13-01' is not a valid timestamp (month must be"),
    ("a: !!int x\n", "alert_rules.yaml:1:4: a: 'x' is not a valid int"),
    ("a: !!float x\n", "alert_rules.yaml:1:4: a: 'x' is not a valid float"),
    ("a: !!bool x\n", "alert_rules.yaml:1:4: a: 'x' is not a valid bool"),
    ("a: !!timestamp x\n", "alert_rules.yaml:1:4: a: 'x' is not a valid timestamp"),
    ("x: 1" + "0" * 4300 + "\n", "alert_rules.yaml:1:4: x: '1000000000000000000000000000000000000000…' is not a "
                                 "valid int (Exceeds the limit (4300 digits)"),
    ("a: \x00\n", "alert_rules.yaml:1:4: invalid YAML: character '\\x00' (U+0000) is not allowed in YAML text"),
    ("a: b\nc: [\x07]\n", "alert_rules.yaml:2:5: invalid YAML: character '\\x07' (U+0007)"),
    ("a: &x [*x]\n", "alert_rules.yaml:1:4: a[0]: recursive alias: an anchor is used inside its own value"),
    ("a: &x {b: *x}\n", "alert_rules.yaml:1:4: a.b: recursive alias"),
    ("[" * 3000 + "]" * 3000, "alert_rules.yaml:1:65: invalid YAML: nesting too deep (more than 64 levels)"),
    ("0", "alert_rules.yaml:1:1: (top): the file must be a mapping of keys"),
    ("- a\n", "alert_rules.yaml:1:1: (top): the file must be a mapping of keys"),
])
def test_yaml_the_loader_cannot_read_is_a_positioned_error(text: str, expected: str) -> None:
    """PyYAML raises ValueError, AttributeError, KeyError, ReaderError, RecursionError on
    some inputs; each becomes one `file:line:col: path: message` line."""
    errs = errors_of(text)
    assert any(e.startswith(expected) for e in errs), errs
    assert all(re.fullmatch(_ONE_ERROR_LINE, e) for e in errs), errs


def test_aliases_that_expand_to_too_many_values_are_refused() -> None:
    """A "billion laughs" file stops at MAX_VALUES instead of filling the memory."""
    text = "a: &a [" + ",".join(["x"] * 50) + "]\n"
    for name, prev in zip("bcde", "abcd", strict=True):
        text += f"{name}: &{name} [" + ",".join([f"*{prev}"] * 50) + "]\n"
    errs = errors_of(text)
    assert len(errs) == 1 and "more than 100000 values once aliases are expanded" in errs[0], errs


def test_a_line_break_in_a_key_or_value_is_escaped_in_its_error() -> None:
    errs = errors_of('checks:\n- {name: h, type: http, url: "\\r"}\n"a\\u2028b": 1\n')
    assert "alert_rules.yaml:2:30: checks[0].url: \\r is not an http:// or https:// URL with a host" in errs
    assert "alert_rules.yaml:3:1: a\\u2028b: unknown key (not allowed here)" in errs
    assert all("\r" not in e and "\u2028" not in e for e in errs)


def test_union_members_do_not_show_in_the_key_path() -> None:
    """`auth_failure` is a mapping or a list of them: the error names the key, not pydantic's
    `list[function-after[_check(), AuthFailure]]`, and not the member that does not apply."""
    base = "checks:\n- {name: l, type: logfile, paths: [/x], auth_failure: %s}\n"
    assert errors_of(base % "{}") == [
        "alert_rules.yaml:2:55: checks[0].auth_failure: give at least one of status, path, message"]
    assert errors_of(base % "[{status: x}]") == [
        "alert_rules.yaml:2:65: checks[0].auth_failure[0].status: 'x': input should be a valid list"]
    assert errors_of(base % "5") == [
        "alert_rules.yaml:2:55: checks[0].auth_failure: 5: input should be a mapping (key: value)",
        "alert_rules.yaml:2:55: checks[0].auth_failure: 5: input should be a valid list"]


@pytest.mark.parametrize(("text", "expected"), [
    ("checks:\n- {name: r, type: redis, url: 'redis://u:pw@h:abc/0'}\n",
     "alert_rules.yaml:2:31: checks[0].url: port 'abc' is not a number from 0 to 65535"),
    ("checks:\n- {name: p, type: postgres, dsn: 'postgresql://u:pw@h:99999/db'}\n",
     "alert_rules.yaml:2:34: checks[0].dsn: port '99999' is not a number from 0 to 65535"),
    ("receivers:\n  pd: {type: pagerduty, routing_key: 0123456789abcdef0123456789abcdef, url: 'http://u:pw@h:x/'}\n",
     "alert_rules.yaml:2:77: receivers.pd.url: port 'x' is not a number from 0 to 65535"),
    ("receivers:\n  am: {type: alertmanager, urls: ['http://h/', 'http://h:9x/']}\n",
     "alert_rules.yaml:2:48: receivers.am.urls[1]: port '9x' is not a number from 0 to 65535"),
])
def test_a_port_that_is_not_a_number_is_refused_at_load(text: str, expected: str) -> None:
    """urlsplit() only raises when `.port` is read, which used to be at start-up (redact_url)."""
    assert errors_of(text) == [expected]


def test_a_bad_port_is_reported_with_the_other_errors() -> None:
    errs = errors_of("listen: nowhere\nchecks:\n- {name: r, type: redis, url: 'redis://h:x/0'}\n"
                     "- {name: h, type: http, url: 'http://h:x/'}\n")
    assert errs == ["alert_rules.yaml:1:9: listen: 'nowhere' is not host:port (e.g. 127.0.0.1:9820)",
                    "alert_rules.yaml:3:31: checks[0].url: port 'x' is not a number from 0 to 65535",
                    "alert_rules.yaml:4:30: checks[1].url: http://h:x/ is not an http:// or https:// URL with a host"]


@pytest.mark.parametrize(("pattern", "why"), [
    ("a{4294967296}", "a repeat count is too large"),
    ("(" * 1000 + ")" * 1000, "groups are nested too deeply"),
    ("[[a]", "Possible nested set at position 1"),
])
def test_user_regexes_fail_with_a_reason(pattern: str, why: str) -> None:
    """re.compile raises OverflowError and RecursionError too, and only warns about `[[`."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is printed at load
        with pytest.raises(ValueError, match=re.escape(why)):
            compile_regex(pattern)


def test_secrets_include_their_encoded_forms() -> None:
    """A peer quoting a form-encoded request shows `s3cret%2Bv%2F1%3D`: the redactors know it."""
    cfg = load_config_text("checks:\n- {name: w, type: whmcs, url: 'https://h/api.php', identifier: 'id+ab/1=', "
                           "secret: 's3cret+v/1=&x'}\n", env={})
    assert {"s3cret+v/1=&x", "s3cret%2Bv%2F1%3D%26x", "s3cret%2Bv/1%3D%26x", "s3cret+v/1=&amp;x",
            "id%2Bab%2F1%3D"} <= cfg.secrets


def test_other_yaml_files_are_read_with_the_same_guards() -> None:
    """`load_yaml_text` (for rule test files) turns PyYAML's failures into positioned lines too."""
    assert load_yaml_text("a: [1, x]\n", "t.yaml") == {"a": [1, "x"]}
    for text, expected in (("a: !!int x\n", "t.yaml:1:4: a: 'x' is not a valid int"),
                           ("[" * 3000, "t.yaml:1:65: invalid YAML: nesting too deep"),
                           ("a: \x00\n", "t.yaml:1:4: invalid YAML: character '\\x00'")):
        with pytest.raises(ConfigError) as info:
            load_yaml_text(text, "t.yaml")
        assert info.value.errors[0].startswith(expected), info.value.errors
