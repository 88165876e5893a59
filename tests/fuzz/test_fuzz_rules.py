"""Fuzzing the rule expression parser (`monitor.rules.promql`) and the annotation templates.

Property: `parse(text)` returns an `Expr` that evaluates (or is refused with `EvalError`, as
Prometheus refuses some queries at evaluation time), or raises `ExprError`
whose `position` lies inside the input and whose `token` is the text found there. Nothing
else may escape: a rule file is user input, and `check-config` must answer every mistake
with a position, not a traceback. Inputs: arbitrary strings, and expressions generated from
the grammar then mutated token by token into near misses (a dropped quote, a PromQL
construct outside the subset, a duration for a number, an out-of-range number, a regex
Prometheus would refuse).
"""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.history import History
from monitor.rules.promql import Engine, EvalError, ExprError, Scalar, String, Vector, Matrix, parse
from monitor.rules.promql import selected_series
from monitor.rules.templates import TemplateError, compile_template, format_value, render
from monitor.model import Sample
from tests.fuzz import KnownBug, Outcomes, known_bug_cases

KNOWN_BUGS: tuple[KnownBug, ...] = ()  # none open: add one here when the fuzzer finds a crash

# ---------------------------------------------------------------- generators

_METRIC = st.from_regex(r"[a-zA-Z_:][a-zA-Z0-9_:]{0,10}", fullmatch=True)
_LABEL = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,8}", fullmatch=True)
_ESCAPES = st.sampled_from(["\\n", "\\t", "\\\\", '\\"', "\\'", "\\x41", "\\u00e9", "\\U0001F600", "\\101",
                            "\\q", "\\x4", "\\uD800", "\\U00110000", "\\777", "\\"])
_PLAIN = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"], exclude_characters="\"'`\\\n"),
                 max_size=8)
REGEX_PIECES = st.sampled_from([
    "a|b", ".*", ".+", "(?i)x", "[a-z]+", "[^]x]", "[]", "x?", "\\d{2,3}", "(a)(b)", "(?:a)",
    "(?=x)", "(?!x)", "(?<=x)", "\\1", "(?P=n)", "(?P<n>a)", "a{4294967296}", "a{2,1}", "(", ")", "[", "*",
    "+?", "\\", "\\p{L}", "\\N{DIGIT ONE}", "(" * 300 + ")" * 300, "(" * 1000 + ")" * 1000, "é", "\u2028",
])
_NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-10**30, 10**30).map(str),
    st.sampled_from(["0x1F", "0X0", "Inf", "-Inf", "+inf", "NaN", "nan", ".5", "5.", "1e3", "1E-3", "0.9",
                     # near misses
                     "1_000", "5m", "1h30m", "0x", "1e", "1.2.3", "0x" + "f" * 300, "1" + "0" * 400,
                     "1e999", "--1", "+-1", "١", "0b101", "1e+", "Infinity", "0x1p3"]),
)
_CMP = st.sampled_from([">", ">=", "<", "<=", "==", "!="])
_NEAR_MISS_TOKENS = st.sampled_from([
    "(", ")", "{", "}", "[5m]", "[", "]", ",", ",,", "=", "==", "=~", "!~", "!", "~", "=>", "<>", "\"", "'", "`",
    "rate(", "sum", "by", "without", "and", "or", "unless", "offset", "bool", "on", "absent", "absent(",
    "__name__", "@", "+", "-", "*", "/", "%", "^", "#", "\n", "\\", "$", "{{", "é", "\x00", "\ud7ff", "💥",
])


def _quoted(kind: str, parts: list[str]) -> str:
    body = "".join(parts)
    if kind == "`":
        return "`" + body.replace("`", "") + "`"
    return kind + body.replace(kind, "\\" + kind) + kind


@st.composite
def _string(draw: Any, regex: bool) -> str:
    pieces = REGEX_PIECES if regex else st.one_of(_PLAIN, _ESCAPES)
    parts = draw(st.lists(st.one_of(pieces, _PLAIN), max_size=4))
    return _quoted(draw(st.sampled_from(['"', "'", "`"])), parts)


@st.composite
def _selector(draw: Any) -> list[str]:
    tokens = [draw(_METRIC)]
    if draw(st.booleans()):
        tokens.append("{")
        for i in range(draw(st.integers(0, 3))):
            if i:
                tokens.append(",")
            op = draw(st.sampled_from(["=", "!=", "=~", "!~"]))
            tokens += [draw(_LABEL), op, draw(_string(regex=op in ("=~", "!~")))]
        if draw(st.booleans()):
            tokens.append(",")  # a trailing comma is allowed
        tokens.append("}")
    return tokens


@st.composite
def _expression_tokens(draw: Any) -> list[str]:
    """A valid expression of the subset, as tokens."""
    if draw(st.integers(0, 4)) == 0:
        return ["absent", "(", *draw(_selector()), ")"]
    tokens = draw(_selector())
    if draw(st.booleans()):
        tokens += [draw(_CMP), draw(_NUMBERS)]
    return tokens


@st.composite
def near_miss_expressions(draw: Any) -> str:
    """A generated expression, mutated a few times, joined with random spacing and comments."""
    tokens = draw(_expression_tokens())
    for _ in range(draw(st.integers(0, 3))):
        if not tokens:
            break
        i = draw(st.integers(0, len(tokens) - 1))
        action = draw(st.sampled_from(["drop", "dup", "replace", "insert", "cut"]))
        if action == "drop":
            del tokens[i]
        elif action == "dup":
            tokens.insert(i, tokens[i])
        elif action == "replace":
            tokens[i] = draw(_NEAR_MISS_TOKENS)
        elif action == "insert":
            tokens.insert(i, draw(st.one_of(_NEAR_MISS_TOKENS, _NUMBERS, _METRIC)))
        elif tokens[i]:
            tokens[i] = tokens[i][: draw(st.integers(0, len(tokens[i]) - 1))]
    spaces = st.sampled_from(["", " ", "  ", "\t", "\n", " # note\n", "\r\n"])
    return "".join(t + draw(spaces) for t in tokens)


_ANY_TEXT = st.one_of(
    st.text(max_size=60),
    st.text(alphabet='ab_:{}()[]=!~<>"\'`\\ ,.019eExX+-#\n$|*@', max_size=60),
)

# ---------------------------------------------------------------- the property

_SAMPLES_LABELS = [{}, {"a": ""}, {"a": "x", "check": "cache"}, {"a": "é\n", "b": "0x1F"}, {"le": "+Inf"}]


def _check_parse(text: str, out: Outcomes) -> None:
    try:
        expr = parse(text)
    except ExprError as e:
        assert 0 <= e.position <= len(text), (text, e.position)
        assert text.startswith(e.token, e.position), (text, e.position, e.token)
        assert e.message and f"column {e.position + 1}" in str(e)
        out.add("expr_error")
        return
    except Exception as e:
        if out.known(e, KNOWN_BUGS):
            return
        raise AssertionError(f"parse({text!r}) raised {type(e).__name__}: {e}") from e
    assert expr.text == text
    history = History()
    names = {sel.metric or "m" for sel in selected_series(expr)} or {"m"}
    for i, v in enumerate((0.0, 1.0, math.nan, -math.inf)):
        history.append(1000.0 + 15 * i, [Sample(name, labels, v) for name in names for labels in _SAMPLES_LABELS])
    try:
        value = Engine(history).instant(expr, 1060.0)
    except EvalError:
        out.add("eval_error")
        return
    assert isinstance(value, (Scalar, String, Vector, Matrix))
    out.add("valid")


def test_parse_fuzz_near_miss_expressions() -> None:
    """Grammar-generated expressions and their near misses: an Expr or an ExprError at the token."""
    out = Outcomes("expr near-miss")

    @settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(near_miss_expressions())
    def run(text: str) -> None:
        _check_parse(text, out)

    run()
    print(out.report())
    assert out.counts["valid"] > 100 and out.counts["expr_error"] > 100, out.report()


def test_parse_fuzz_any_text() -> None:
    """Arbitrary strings, and strings over PromQL's punctuation."""
    out = Outcomes("expr any-text")

    @settings(max_examples=2000, deadline=None)
    @given(_ANY_TEXT)
    def run(text: str) -> None:
        _check_parse(text, out)

    run()
    print(out.report())
    assert out.total >= 2000, out.report()


@pytest.mark.parametrize("bug", known_bug_cases(KNOWN_BUGS))
def test_known_bug_minimal_input(bug: KnownBug) -> None:
    """The minimal input of each known bug gives an Expr or an ExprError (xfail while the bug stands)."""
    try:
        parse(bug.example)
    except ExprError:
        pass


# ---------------------------------------------------------------- templates

TEMPLATES = st.lists(st.one_of(
    st.text(max_size=6),
    st.sampled_from(["{{", "}}", "{{ $value }}", "{{$value}}", "{{ $labels.check }}", "{{ $labels. }}",
                     "{{ $labels.a-b }}", "{{ .Value }}", "{{ printf \"%s\" }}", "{{ $labels.x | upper }}",
                     "{{", "{ {", "}}}", "{{{ $value }}}", "$labels.check", "{{\n$value\n}}", "{{-", "-}}"]),
), max_size=8).map("".join)


def test_template_fuzz() -> None:
    """Annotation templates: a Template that renders, or a TemplateError at the offending text."""
    out = Outcomes("template")

    @settings(max_examples=1000, deadline=None)
    @given(TEMPLATES, st.floats())
    def run(text: str, value: float) -> None:
        try:
            tpl = compile_template(text)
        except TemplateError as e:
            assert 0 <= e.position <= len(text) and text.startswith(e.token, e.position), (text, e.position)
            out.add("template_error")
            return
        rendered = render(tpl, {"check": "cache", "x": "{{ $value }}"}, value)
        assert isinstance(rendered, str)
        out.add("valid")

    run()
    print(out.report())
    assert out.counts["valid"] > 50 and out.counts["template_error"] > 50, out.report()


def test_format_value_fuzz() -> None:
    """`{{ $value }}` text reads back as the same float (Go's %v is the shortest exact form)."""
    out = Outcomes("format_value")

    @settings(max_examples=1000, deadline=None)
    @given(st.floats())
    def run(value: float) -> None:
        text = format_value(value)
        assert re.fullmatch(r"[-+]?(NaN|Inf|\d+(\.\d+)?(e[-+]\d{2,3})?)", text), text
        back = float(text)
        assert back == value or (math.isnan(back) and math.isnan(value)), (value, text)
        out.add("valid")

    run()
    print(out.report())
