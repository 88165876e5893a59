"""Rule expressions in the file: errors at file:line:col, promtool series names, templates, `$value` formatting.

PromQL itself (parsing and evaluation) is tested in tests/test_promql.py and by `make conformance`."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.config.loader import ConfigError, load_config_text
from monitor.rules.expr import locate, parse_series
from monitor.rules.promql import ExprError
from monitor.rules.templates import TemplateError, compile_template, format_value, render
from monitor.model import Sample
from monitor.rules.engine import compile_rules

def test_parse_series_reads_promtool_series() -> None:
    assert parse_series('up{job="x", instance="y:1"}') == ("up", {"job": "x", "instance": "y:1"})
    assert parse_series("up") == ("up", {})
    with pytest.raises(ExprError):
        parse_series('up{job=~"x"}')
    with pytest.raises(ExprError):
        parse_series("up > 1")


# ---------------------------------------------------------------- templates


def test_render_fills_labels_and_value() -> None:
    text = "No event on {{ $labels.channel }} for {{$value}}s ({{   $labels.check   }})"
    filled = render(text, {"channel": "/event/X", "check": "cache"}, 2120.0)
    assert filled == "No event on /event/X for 2120s (cache)"


def test_unknown_label_renders_empty_and_literal_braces_stay() -> None:
    assert render("[{{ $labels.nope }}] } }} {x}", {}, 1) == "[] } }} {x}"


def test_render_never_executes_label_values() -> None:
    assert render("{{ $labels.a }}", {"a": "{{ $value }}"}, 5) == "{{ $value }}"


@pytest.mark.parametrize(
    ("template", "position"),
    [
        ("{{ if $value }}x{{ end }}", 0),  # the whole action: no control structures
        ("x {{ .Nope }}", 5),  # the offending token
        ("{{ $nope }}", 3),
        ("ok {{ $value }} then {{ query \"up\" }}", 24),
        ("{{ $labels.a-b }}", 12),
        ("tail {{ $value", 5),
    ],
)
def test_other_templates_are_refused_at_load(template: str, position: int) -> None:
    with pytest.raises(TemplateError) as info:
        compile_template(template)
    assert info.value.position == position


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1800.0, "1800"), (0.95, "0.95"), (2.5, "2.5"), (100000.0, "100000"), (999999.0, "999999"),
        (1e6, "1e+06"), (1234567.0, "1.234567e+06"), (123456789.0, "1.23456789e+08"),
        (0.0001, "0.0001"), (0.00001, "1e-05"), (0.1 + 0.2, "0.30000000000000004"),
        (-3.0, "-3"), (0.0, "0"), (-0.0, "-0"), (math.nan, "NaN"), (math.inf, "+Inf"), (-math.inf, "-Inf"),
        (1.7976931348623157e308, "1.7976931348623157e+308"), (5e-324, "5e-324"),
    ],
)
def test_value_renders_as_prometheus_does(value: float, text: str) -> None:
    """Go's %v of a float64: shortest digits, exponent form below 1e-4 or from 1e6."""
    assert format_value(value) == text


# ---------------------------------------------------------------- positions in the file


@pytest.mark.parametrize(
    ("line_text", "text", "position", "token"),
    [
        ("    expr: rate(x[5m]) > 1", "rate(x[5m]) > 1", 0, "rate"),
        ("    expr: m > bar", "m > bar", 4, "bar"),
        ('    expr: "m > bar"', "m > bar", 4, "bar"),
        ('    expr: "m{a=\\"b\\"} > bar"', 'm{a="b"} > bar', 11, "bar"),
        ('    expr: "m{a=\\"\\u00e9\\"} > bar"', 'm{a="é"} > bar', 11, "bar"),
        ("    expr: 'm{a=''b''} > bar'", "m{a='b'} > bar", 11, "bar"),
    ],
)
def test_locate_maps_expression_columns_to_file_columns(line_text: str, text: str, position: int,
                                                        token: str) -> None:
    """Plain and quoted scalars (with escapes that are longer in the file than in the value)."""
    line, column = locate([line_text], 1, 11, text, position)
    assert line == 1
    assert line_text[column - 1:].startswith(token)


def test_locate_falls_back_to_the_value_start_when_the_file_differs() -> None:
    assert locate(["    expr: ${EXPR}"], 1, 11, "m > bar", 4) == (1, 11)
    assert locate(None, 3, 11, "m > bar", 4) == (3, 15)
    assert locate(['    expr: "other > x"'], 1, 11, "m > bar", 4) == (1, 11)


def test_locate_in_a_block_scalar() -> None:
    lines = ["    expr: |", "      m", "        > bar"]
    line, col = locate(lines, 1, 11, "m\n  > bar\n", 6)
    assert (line, col) == (3, 11) and lines[line - 1][col - 1:] == "bar"


def test_config_errors_point_at_the_token_in_the_file(tmp_path: Path) -> None:
    """Every bad rule is reported, each with file:line:col of the offending token."""
    text = (
        "rules:\n"
        "  - alert: Good\n"
        "    expr: portal_redis_up == 0\n"
        "    severity: P1\n"
        "  - alert: Rate\n"
        "    expr: rate(portal_x[5m] > 1\n"
        "    severity: P2\n"
        "  - alert: Quoted\n"
        '    expr: "portal_x{a=\\"b\\"} > nonexist(1)"\n'
        "    severity: P3\n"
        "  - alert: Template\n"
        "    expr: portal_x > 1\n"
        "    severity: P4\n"
        "    summary: 'value {{ $value | nope }}'\n"
        "    labels: {severity: P1}\n"
    )
    path = tmp_path / "alert_rules.yaml"
    path.write_text(text)
    cfg = load_config_text(text, name="alert_rules.yaml", path=path, env={})
    with pytest.raises(ConfigError) as info:
        compile_rules(cfg)
    assert info.value.errors == [
        "alert_rules.yaml:6:15: rules[1].expr: unclosed left parenthesis at column 5",
        "alert_rules.yaml:9:32: rules[2].expr: unknown function with name 'nonexist' at column 19",
        "alert_rules.yaml:14:33: rules[3].summary: function \"nope\" not defined here (templates may use "
        "humanize, humanize1024, humanizeDuration, humanizePercentage, humanizeTimestamp, printf, toUpper, "
        "toLower, title, index) at column 19",
        "alert_rules.yaml:15:13: rules[3].labels: label 'severity' is set by the rule's own `severity:` key, "
        "not under labels",
    ]
    lines = text.splitlines()
    assert lines[5][14:].startswith("(")
    assert lines[8][31:].startswith("nonexist")
    assert lines[13][32:].startswith("nope")
