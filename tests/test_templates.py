"""Annotation templates: Prometheus's functions and syntax, checked against Prometheus itself.

The cross-check renders one template per function for many values with our renderer, then
has promtool (Prometheus's own template engine) expand the same templates on the same values:
`promtool test rules` passes only when every annotation is the same text, byte for byte.
"""

from __future__ import annotations

import math
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from monitor.config.loader import ConfigError, load_config_text
from monitor.rules.engine import compile_rules
from monitor.rules.templates import (
    Context,
    TemplateError,
    compile_template,
    go_sprintf,
    humanize,
    humanize1024,
    humanize_duration,
    humanize_percentage,
    render,
)
from tests.conftest import require_tool

# Every template the cross-check runs, by annotation name.
TEMPLATES = {
    "value": "{{ $value }}",
    "humanize": "{{ humanize $value }}",
    "humanize1024": "{{ humanize1024 $value }}",
    "duration": "{{ humanizeDuration $value }}",
    "percentage": "{{ humanizePercentage $value }}",
    "piped": "{{ $value | humanizeDuration }} / {{ .Value | humanize }} / {{ $value | printf `%.3f` }}",
    "printf": '{{ printf "%.2f|%5.1f|%-6.0f|%+.1e|%g|%.3g|%s|%d|%q|%v" $value $value $value $value '
    "$value $value $labels.case 7 $labels.case $value }}",
    "labels": "{{ .Labels.case }} {{ $labels.case | toUpper }} [{{ $labels.nope }}] {{ index $labels `case` }}",
    "trim": "a  {{- $labels.case -}}  b {{/* a comment */}}c",
    "url": "{{ $externalURL }}/alerts",
    "parens": "{{ humanize (printf `%.0f` $value) }}",
}

VALUES = [
    0.0,
    1.0,
    -1.0,
    0.5,
    0.001234,
    1e-7,
    40.000574350357056,
    59.99,
    61.5,
    3600.25,
    -86401.5,
    90061.0,
    1023.0,
    1024.0,
    1536.0,
    1234567.0,
    -1234567.0,
    99999.0,
    123.456,
    0.8125,
    1e21,
    1.5e-12,
    1700000000.25,
    float("nan"),
    float("inf"),
    float("-inf"),
]
EXTERNAL_URL = "http://monitor.example:9820"


def _series_value(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Inf" if v > 0 else "-Inf"
    return repr(v)


def test_promtool_renders_every_function_as_we_do(tmp_path: Path) -> None:
    promtool = require_tool("promtool", "promtool is not installed (Debian package: prometheus)")
    # humanizeTimestamp has its own rule: past 2262 Go's error text names template columns.
    timestamp = {"timestamp": "{{ humanizeTimestamp $value }}"}
    rules = {
        "groups": [
            {
                "name": "t",
                "rules": [
                    {"alert": "T", "expr": "tmpl_input", "annotations": TEMPLATES},
                    {"alert": "TS", "expr": "(tmpl_input < 9e9 and tmpl_input > -9e9) or tmpl_input != tmpl_input", "annotations": timestamp},
                ],
            }
        ]
    }
    ctx = Context(external_url=EXTERNAL_URL)
    series: list[dict[str, str]] = []
    expected: dict[str, list[dict[str, object]]] = {"T": [], "TS": []}
    for n, v in enumerate(VALUES):
        labels = {"case": f"c{n}"}
        series.append({"series": f'tmpl_input{{case="c{n}"}}', "values": _series_value(v)})
        for alert, templates in (("T", TEMPLATES), ("TS", timestamp)):
            if alert == "TS" and abs(v) >= 9e9:
                continue
            anns = {k: render(compile_template(t), labels, v, ctx) for k, t in templates.items()}
            expected[alert].append({"exp_labels": labels, "exp_annotations": anns})
    tests = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "external_url": EXTERNAL_URL,
                "input_series": series,
                "alert_rule_test": [
                    {"eval_time": "0m", "alertname": name, "exp_alerts": exp} for name, exp in expected.items()
                ],
            }
        ],
    }
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    (tmp_path / "test.yml").write_text(yaml.safe_dump(tests, sort_keys=False))
    done = subprocess.run(
        [promtool, "test", "rules", str(tmp_path / "test.yml")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


@pytest.mark.parametrize(
    ("fn", "value", "text"),
    [
        (humanize_duration, 40.000574350357056, "40s"),
        (humanize_duration, 0.0, "0s"),
        (humanize_duration, 1.5, "1.5s"),
        (humanize_duration, 61.9, "1m 1s"),
        (humanize_duration, 90061.0, "1d 1h 1m 1s"),
        (humanize_duration, -3600.5, "-1h 0m 0s"),
        (humanize_duration, 0.25, "250ms"),
        (humanize, 1234567.0, "1.235M"),
        (humanize, 0.001234, "1.234m"),
        (humanize, 0.0, "0"),
        (humanize, float("inf"), "+Inf"),
        (humanize1024, 1536.0, "1.5ki"),
        (humanize1024, 1073741824.0, "1Gi"),
        (humanize1024, 0.5, "0.5"),
        (humanize_percentage, 0.8125, "81.25%"),
        (humanize_percentage, float("nan"), "NaN%"),
    ],
)
def test_humanize_functions(fn, value: float, text: str) -> None:
    assert fn(value) == text


def test_render_fills_labels_value_and_external_url() -> None:
    labels = {"check": "cache", "channel": "/event/X"}
    ctx = Context(external_url="http://mon:9820")
    assert render("{{ $labels.check }} for {{ $value | humanizeDuration }}", labels, 40.0005, ctx) == "cache for 40s"
    assert render("{{ .Labels.channel }} {{ .Value }}", labels, 1e6, ctx) == "/event/X 1e+06"
    assert render("{{$externalURL}}/status", labels, 1, ctx) == "http://mon:9820/status"
    assert render("{{ $externalURL }}", labels, 1) == ""  # no context: empty, as with no --web.external-url
    assert render("{{ $labels.missing }}.", labels, 1) == "."  # missingkey=zero


def test_a_function_that_cannot_use_its_argument_renders_an_error_text() -> None:
    text = render("x {{ humanize $labels.check }}", {"check": "cache"}, 1)
    assert text.startswith("<error expanding template: humanize: strconv.ParseFloat")
    assert render("{{ humanize $labels.n }}", {"n": "2048"}, 1) == "2.048k"  # a numeric label is a number


def test_printf_follows_go() -> None:
    assert go_sprintf("%.1f%%", [81.25]) == "81.2%"  # round half to even, as Go
    assert go_sprintf("%d", [1.5]) == "%!d(float64=1.5)"
    assert go_sprintf("%s %s", ["a"]) == "a %!s(MISSING)"
    assert go_sprintf("%s", ["a", 2.0]) == "a%!(EXTRA float64=2)"
    assert go_sprintf("%05.1f|%x", [-2.25, "hi"]) == "-02.2|6869"


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{ if $value }}x{{ end }}", "`{{ if }}` is not supported"),
        ("{{ query `up` }}", 'function "query" not defined'),
        ("{{ $nope }}", "undefined variable '$nope'"),
        ("{{ .Nope }}", "can't evaluate field Nope"),
        ("{{ $value 1 }}", "can't give an argument to a non-function"),
        ("{{ $value | $labels }}", "piped only into a function"),
        ("{{ humanize 1 2 }}", "wrong number of args for humanize"),
        ("{{ $value", "'{{' without a closing '}}'"),
        ("{{ }}", "missing value"),
        ("{{ $labels.a.b }}", "a label has no fields"),
    ],
)
def test_templates_outside_the_language_are_refused_at_load(template: str, message: str) -> None:
    with pytest.raises(TemplateError, match=re.escape(message)):
        compile_template(template)


def test_a_bad_template_is_a_positioned_config_error_in_the_annotations_map() -> None:
    cfg = load_config_text(
        """
rules:
  - alert: A
    expr: x > 1
    severity: P3
    annotations:
      dashboard: "{{ $labels.check | nope }}"
""",
        env={},
    )
    with pytest.raises(ConfigError) as err:
        compile_rules(cfg)
    (line,) = err.value.errors
    assert "rules[0].annotations.dashboard" in line
    assert 'function "nope" not defined' in line
