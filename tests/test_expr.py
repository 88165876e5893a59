"""The PromQL subset: parsing with positions, selection semantics, templates, `$value` formatting."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.config.loader import ConfigError, load_config_text
from monitor.rules.expr import ExprError, locate, parse, parse_series
from monitor.rules.templates import TemplateError, compile_template, format_value, render
from monitor.model import Sample
from monitor.rules.engine import compile_rules

# ---------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "metric", "matchers", "op", "threshold"),
    [
        ("portal_redis_up", "portal_redis_up", [], None, None),
        ('portal_http_up{check="bff_health"} == 0', "portal_http_up",
         [("check", "=", "bff_health")], "==", 0.0),
        ("a:b_c{x!='y', z=~\"p|q\", w!~``,} >= 0.9", "a:b_c",
         [("x", "!=", "y"), ("z", "=~", "p|q"), ("w", "!~", "")], ">=", 0.9),
        ("m > 1e3", "m", [], ">", 1000.0),
        ("m < .5", "m", [], "<", 0.5),
        ("m <= -1", "m", [], "<=", -1.0),
        ("m != + 2", "m", [], "!=", 2.0),
        ("m > 0x1f", "m", [], ">", 31.0),
        ("m > +Inf", "m", [], ">", math.inf),
        ("m > -inf", "m", [], ">", -math.inf),
        ("m{}", "m", [], None, None),
        ("  m  {  a  =  'b'  }  >  1  ", "m", [("a", "=", "b")], ">", 1.0),
        ("m # a comment\n  > 1 # another", "m", [], ">", 1.0),
    ],
)
def test_parses_the_subset(text: str, metric: str, matchers: list[tuple[str, str, str]],
                           op: str | None, threshold: float | None) -> None:
    expr = parse(text)
    assert expr.selector.metric == metric
    assert [(m.label, m.op, m.value) for m in expr.selector.matchers] == matchers
    assert expr.op == op
    assert expr.threshold == threshold
    assert not expr.absent


def test_parses_nan_threshold() -> None:
    expr = parse("m == NaN")
    assert expr.threshold is not None and math.isnan(expr.threshold)


def test_parses_absent() -> None:
    expr = parse('absent( portal_redis_up{check="cache"} )')
    assert expr.absent and expr.selector.metric == "portal_redis_up"


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        (r'"a\"b"', 'a"b'),
        (r"'a\'b'", "a'b"),
        ("'say \"hi\"'", 'say "hi"'),
        (r'"tab\tnl\nbs\\"', "tab\tnl\nbs\\"),
        (r'"\x41\u00e9\U0001F600\101"', "Aé😀A"),
        (r"`raw\n`", "raw\\n"),
        ('"ünïcødé"', "ünïcødé"),
    ],
)
def test_string_escapes_follow_go(literal: str, value: str) -> None:
    assert parse(f"m{{a={literal}}}").selector.matchers[0].value == value


@pytest.mark.parametrize(
    ("text", "position", "token", "message"),
    [
        ("rate(portal_x[5m]) > 1", 0, "rate", "unsupported function 'rate'"),
        ("sum by (check) (portal_x)", 0, "sum", "unsupported aggregation 'sum'"),
        ("max(portal_x)", 0, "max", "unsupported aggregation 'max'"),
        ("m > bar", 4, "bar", "unexpected token 'bar'"),
        ("m and n", 2, "and", "unexpected token 'and'"),
        ("m > 1 > 2", 6, ">", "unexpected token '>'"),
        ("(m)", 0, "(", "unexpected token '('"),
        ("m[5m]", 1, "[", "unexpected token '['"),
        ("m offset 5m", 2, "offset", "unexpected token 'offset'"),
        ("m @ 100", 2, "@", "unexpected token '@'"),
        ("m > bool 1", 4, "bool", "unexpected token 'bool'"),
        ("m > 5m", 4, "5m", "unexpected token '5m'"),
        ("m > 1_000", 4, "1_000", "invalid number '1_000'"),
        ("m > 1.2.3", 4, "1.2.3", "invalid number '1.2.3'"),
        ("m{a}", 3, "}", "unexpected token '}'"),
        ("m{a=b}", 4, "b", "unexpected token 'b'"),
        ('m{a="b" c="d"}', 8, "c", "unexpected token 'c'"),
        ('m{"a"="b"}', 2, '"a"', "unexpected token '\"a\"'"),
        ('m{__name__="x"}', 2, "__name__", "matching on __name__ is not supported"),
        ('m{a="b}', 4, '"b}', "unterminated quoted string"),
        ('m{a="b\n"}', 4, '"b', "unterminated quoted string"),
        ('m{a="b\\', 4, '"b\\', "unterminated quoted string"),
        (r'm{a="\q"}', 5, r"\q", "unknown escape sequence"),
        (r"m{a='\"'}", 5, r"\"", "unknown escape sequence"),
        (r'm{a="\x4"}', 5, r'\x4"', "invalid escape sequence"),
        ('m{a=~"(?=x)"}', 5, '"(?=x)"', "look-ahead is not supported"),
        ('m{a=~"(a)\\\\1"}', 5, '"(a)\\\\1"', "back-references are not supported"),
        ('m{a=~"("}', 5, '"("', "invalid regex"),
        ('m{a=~"a{4294967296}"}', 5, '"a{4294967296}"', "invalid regex 'a{4294967296}': a repeat count is too large"),
        ('m{a=~"' + "(" * 1000 + ")" * 1000 + '"}', 5, '"' + "(" * 1000 + ")" * 1000 + '"', "invalid regex"),
        ('m{a=~"[[:alpha:]]"}', 5, '"[[:alpha:]]"', "invalid regex '[[:alpha:]]': Possible nested set"),
        ("m > 0x" + "f" * 300, 4, "0x" + "f" * 300, "number 0xffffffffffffffffff… is too large"),
        ("absent(m) > 1", 10, ">", "unexpected token '>'"),
        ("absent(m", 8, "", "unexpected end of expression"),
        ("absent(m > 1)", 9, ">", "unexpected token '>'"),
        ("", 0, "", "unexpected end of expression"),
        ("m >", 3, "", "unexpected end of expression"),
        ("m $", 2, "$", "unexpected character '$'"),
        ("m{a.b='x'}", 3, ".", "unexpected character '.'"),
        ("1 < m", 0, "1", "unexpected token '1'"),
    ],
)
def test_refuses_anything_else_with_position_and_token(text: str, position: int, token: str,
                                                       message: str) -> None:
    with pytest.raises(ExprError) as info:
        parse(text)
    err = info.value
    assert (err.position, err.token) == (position, token)
    assert err.message.startswith(message)
    assert f"at column {position + 1}" in str(err)


def test_error_text_reads_as_the_config_layer_prints_it() -> None:
    with pytest.raises(ExprError) as info:
        parse("rate(portal_x[5m]) > 1")
    assert str(info.value).startswith(
        "unsupported function 'rate' at column 1 (the only function is absent()")


_LABEL = st.from_regex(r"[a-z_][a-z0-9_]{0,5}", fullmatch=True).filter(lambda s: not s.startswith("__"))


def _go_quote(value: str) -> str:
    out = []
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ord(ch) < 0x20:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


_PROMQLISH = st.one_of(
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40),
    st.text(alphabet='ab_:{}()[]=!~<>"\'`\\ ,.019eExX+-#\n$|*@', max_size=40),
    st.lists(st.sampled_from(["m", "absent", "(", ")", "{", "}", "a", "=", "=~", "!~", "!=", '"x"', "'(?=y)'",
                              ">", "==", "1", "-", "1e3", "Inf", "5m", ",", " ", "[", "]", "and", "by"]),
             max_size=12).map("".join),
)


@settings(max_examples=500, deadline=None)
@given(_PROMQLISH)
def test_any_input_parses_or_points_at_the_offending_token(text: str) -> None:
    """Whatever the input, parse() returns an Expr or an ExprError whose token sits at its position."""
    try:
        parse(text)
    except ExprError as e:
        assert 0 <= e.position <= len(text)
        assert text.startswith(e.token, e.position)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_LABEL, st.sampled_from(["=", "!="]), st.text(max_size=12)), max_size=4),
       st.sampled_from([">", ">=", "<", "<=", "==", "!="]),
       st.floats(allow_nan=False, allow_infinity=False, width=64))
def test_generated_expressions_round_trip(matchers: list[tuple[str, str, str]], op: str,
                                          number: float) -> None:
    """Quoted with Go rules, any label value and any finite number come back exactly."""
    body = ", ".join(f"{k}{o}{_go_quote(v)}" for k, o, v in matchers)
    expr = parse(f"metric_x{{{body}}} {op} {number!r}")
    assert [(m.label, m.op, m.value) for m in expr.selector.matchers] == matchers
    assert expr.op == op and expr.threshold == number


# ---------------------------------------------------------------- evaluation


def _s(name: str, value: float, **labels: str) -> Sample:
    return Sample(name, labels, value)


def test_comparison_filters_and_keeps_the_value_without_the_name() -> None:
    samples = [_s("m", 0, check="a"), _s("m", 1, check="b"), _s("other", 0, check="c")]
    assert parse("m == 0").evaluate(samples) == [({"check": "a"}, 0)]
    assert parse("m").evaluate(samples) == [({"check": "a"}, 0), ({"check": "b"}, 1)]
    assert parse("m > 5").evaluate(samples) == []


@pytest.mark.parametrize(
    ("selector", "matching"),
    [
        ('m{a="x"}', ["x"]),
        ('m{a!="x"}', ["xy", "", "y\nz"]),
        ('m{a=""}', [""]),  # a missing label equals ""
        ('m{a!=""}', ["x", "xy", "y\nz"]),
        ('m{a=~"x"}', ["x"]),  # anchored: not "xy"
        ('m{a=~"x|xy"}', ["x", "xy"]),  # anchored around the whole alternation
        ('m{a=~"x.*"}', ["x", "xy"]),
        ('m{a=~"y.z"}', ["y\nz"]),  # '.' matches a newline, as (?s) in Prometheus
        ('m{a!~"x.*"}', ["", "y\nz"]),
        ('m{a=~"(?i)X"}', ["x"]),
        ('m{a=~".*"}', ["x", "xy", "", "y\nz"]),
    ],
)
def test_matchers_follow_prometheus(selector: str, matching: list[str]) -> None:
    samples = [_s("m", 1, a="x"), _s("m", 1, a="xy"), _s("m", 1), _s("m", 1, a="y\nz")]
    found = [labels.get("a", "") for labels, _ in parse(selector).evaluate(samples)]
    assert found == matching


def test_nan_compares_like_promql() -> None:
    samples = [_s("m", math.nan), _s("m", 1, k="v")]
    assert parse("m > 0").evaluate(samples) == [({"k": "v"}, 1)]
    assert parse("m == NaN").evaluate(samples) == []
    assert len(parse("m != NaN").evaluate(samples)) == 2


def test_absent_returns_the_equality_labels_when_nothing_matches() -> None:
    expr = parse('absent(portal_redis_up{check="cache", job=~"x.*", env!="dev"})')
    assert expr.evaluate([]) == [({"check": "cache"}, 1.0)]
    assert expr.evaluate([_s("portal_redis_up", 0, check="cache", job="x1")]) == []
    assert expr.evaluate([_s("portal_redis_up", 0, check="other", job="x1")]) == [({"check": "cache"}, 1.0)]


def test_absent_drops_a_label_matched_twice() -> None:
    assert parse('absent(m{a="1", a="2"})').evaluate([]) == [({}, 1.0)]


def test_evaluate_accepts_a_prebuilt_index() -> None:
    from monitor.rules.expr import index_samples

    samples = [_s("m", 3, a="x"), _s("n", 4)]
    expr = parse("m > 1")
    assert expr.evaluate(index_samples(samples)) == expr.evaluate(samples) == [({"a": "x"}, 3)]


def test_regex_is_compiled_once_at_parse() -> None:
    matcher = parse('m{a=~"x+"}').selector.matchers[0]
    assert matcher.regex is not None and matcher.regex.pattern == "x+"


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
        "    expr: rate(portal_x[5m]) > 1\n"
        "    severity: P2\n"
        "  - alert: Quoted\n"
        '    expr: "portal_x{a=\\"b\\"} > bar"\n'
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
        "alert_rules.yaml:6:11: rules[1].expr: unsupported function 'rate' at column 1 (the only function is "
        "absent(); write a selector, a selector compared with a number, or absent(selector))",
        "alert_rules.yaml:9:32: rules[2].expr: unexpected token 'bar' at column 19 "
        "(compare with a number, e.g. > 0.9, == 0, > 1e3)",
        "alert_rules.yaml:14:33: rules[3].summary: function \"nope\" not defined here (templates may use "
        "humanize, humanize1024, humanizeDuration, humanizePercentage, humanizeTimestamp, printf, toUpper, "
        "toLower, title, index) at column 19",
        "alert_rules.yaml:15:13: rules[3].labels: label 'severity' is set by the rule's own `severity:` key, "
        "not under labels",
    ]
    lines = text.splitlines()
    assert lines[5][10:].startswith("rate")
    assert lines[8][31:].startswith("bar")
    assert lines[13][32:].startswith("nope")
