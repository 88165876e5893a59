"""The PromQL subset of alert rules: tokenize and parse with positions, select samples.

    expr     := selector [cmp ['+' | '-'] number] | 'absent' '(' selector ')'
    selector := metric_name ['{' [matcher (',' matcher)* [',']] '}']
    matcher  := label_name ('=' | '!=' | '=~' | '!~') string
    cmp      := '>' | '>=' | '<' | '<=' | '==' | '!='

Everything this module accepts is valid PromQL with the same meaning, so `export-rules` can
hand the expressions to Prometheus unchanged. Anything else is refused with `ExprError`,
which carries the 0-based column of the offending token: a rule file's error then points at
the exact character. Nothing is ever `eval`-ed; regexes are compiled once, at parse time.

Decisions, following Prometheus (`promql/parser/lex.go`, `model/labels/regexp.go`):
- Strings: double or single quotes with Go escapes (`\\n`, `\\"`, `\\x41`, `\\u00e9`, octal
  `\\101`), or backticks without escapes; no newline inside a quoted string.
- Numbers: decimal (`0.9`, `.5`, `1e3`), hex (`0x1f`), `Inf` and `NaN` (any case), with an
  optional sign; durations (`5m`) and `1_000` are refused.
- Regex matchers are anchored at both ends (`=~"a|b"` is `^(?:a|b)$`) and `.` matches a
  newline, as in Prometheus. Python-only constructs (look-around, back-references) are refused
  because Prometheus (RE2) would refuse them.
- A missing label equals the empty string (`{a=""}` matches series without `a`).
- Results never carry the metric name, as a PromQL comparison and an alert's labels do not.
- `# comment` runs to the end of the line, as in PromQL.

Annotation templates live in `templates.py`.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from monitor.config.fields import compile_regex
from monitor.model import Sample
from monitor.rules.tokens import ExprError as ExprError
from monitor.rules.tokens import Token, iter_tokens

Labels = dict[str, str]
SampleIndex = Mapping[str, Sequence[Sample]]

SUBSET = "a selector, a selector compared with a number, or absent(selector)"


# ---------------------------------------------------------------- the parsed expression

_LABEL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_AGGREGATIONS = frozenset(
    (
        "sum",
        "avg",
        "min",
        "max",
        "count",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
        "limitk",
        "limit_ratio",
    )
)
_RE2_REFUSED = (
    ("(?=", "look-ahead"),
    ("(?!", "look-ahead"),
    ("(?<=", "look-behind"),
    ("(?<!", "look-behind"),
    ("(?P=", "back-reference"),
    ("(?(", "conditional"),
    ("(?>", "atomic group"),
    ("(?#", "comment group"),
)


@dataclass(frozen=True, slots=True)
class Matcher:
    """One `label op "value"`; a regex is compiled once, anchored at both ends."""

    label: str
    op: str  # = != =~ !~
    value: str
    regex: re.Pattern[str] | None = None

    def matches(self, labels: Mapping[str, str]) -> bool:
        v = labels.get(self.label, "")
        if self.op == "=":
            return v == self.value
        if self.op == "!=":
            return v != self.value
        assert self.regex is not None
        found = self.regex.fullmatch(v) is not None
        return found if self.op == "=~" else not found


@dataclass(frozen=True, slots=True)
class Selector:
    metric: str
    matchers: tuple[Matcher, ...] = ()

    def select(self, index: SampleIndex) -> list[Sample]:
        return [s for s in index.get(self.metric, ()) if all(m.matches(s.labels) for m in self.matchers)]


_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}


def index_samples(samples: Iterable[Sample]) -> dict[str, list[Sample]]:
    """Samples by metric name: build once per evaluation, then every rule looks up its name."""
    index: dict[str, list[Sample]] = {}
    for s in samples:
        index.setdefault(s.name, []).append(s)
    return index


@dataclass(frozen=True, slots=True)
class Expr:
    """A parsed rule expression. `op`/`threshold` are None for a bare selector."""

    text: str
    selector: Selector
    op: str | None = None
    threshold: float | None = None
    absent: bool = False

    def evaluate(self, samples: Sequence[Sample] | SampleIndex) -> list[tuple[Labels, float]]:
        """One (labels, value) per matching series, labels without the metric name.

        A comparison keeps the series whose value passes and their own value (PromQL's
        filter); `absent()` gives one result, the selector's `=` labels with value 1, when
        nothing matches, and none otherwise.
        """
        index = samples if isinstance(samples, Mapping) else index_samples(samples)
        found = self.selector.select(index)
        if self.absent:
            if found:
                return []
            eq = [m for m in self.selector.matchers if m.op == "="]
            names = [m.label for m in eq]
            return [({m.label: m.value for m in eq if names.count(m.label) == 1}, 1.0)]
        if self.op is None:
            return [(dict(s.labels), s.value) for s in found]
        test, threshold = _COMPARE[self.op], self.threshold
        assert threshold is not None
        return [(dict(s.labels), s.value) for s in found if test(s.value, threshold)]


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self._tokens = iter_tokens(text)
        self._ahead: list[Token] = []

    def peek(self, k: int = 0) -> Token:
        while len(self._ahead) <= k:
            if self._ahead and self._ahead[-1].kind == "eof":
                return self._ahead[-1]
            self._ahead.append(next(self._tokens))
        return self._ahead[k]

    @property
    def tok(self) -> Token:
        return self.peek()

    def next(self) -> Token:
        tok = self.peek()
        if tok.kind != "eof":
            self._ahead.pop(0)
        return tok

    def fail(self, tok: Token, hint: str = "", message: str = "") -> ExprError:
        if not message and tok.kind == "eof":
            message = "unexpected end of expression"
        elif not message:
            message = f"unexpected token {tok.text!r}"
        return ExprError(tok.pos, tok.text, message, hint)

    def expect(self, kind: str, text: str, hint: str) -> Token:
        if self.tok.kind != kind or self.tok.text != text:
            raise self.fail(self.tok, hint)
        return self.next()

    def parse(self) -> Expr:
        tok = self.tok
        if tok.kind == "ident" and tok.text in _AGGREGATIONS:
            raise self.fail(
                tok, f"aggregations are not supported: write {SUBSET}", f"unsupported aggregation {tok.text!r}"
            )
        if tok.kind == "ident" and self.peek(1).kind == "punct" and self.peek(1).text == "(":
            if tok.text != "absent":
                raise self.fail(
                    tok, f"the only function is absent(); write {SUBSET}", f"unsupported function {tok.text!r}"
                )
            self.next()
            self.next()
            selector = self.selector()
            self.expect("punct", ")", "absent() takes one selector and closes with ')'")
            self.end("absent(selector) stands alone: no comparison after it")
            return Expr(self.text, selector, absent=True)
        selector = self.selector()
        tok = self.tok
        if tok.kind == "eof":
            return Expr(self.text, selector)
        if tok.kind == "punct" and tok.text == "[":
            raise self.fail(tok, "range selectors need functions such as rate(); not supported here")
        if not (tok.kind == "op" and tok.text in _COMPARE):
            raise self.fail(tok, f"after a selector only a comparison with a number may follow: {SUBSET}")
        op = self.next().text
        if self.tok.kind == "ident" and self.tok.text == "bool":
            raise self.fail(self.tok, "the bool modifier is not supported")
        sign = 1.0
        if self.tok.kind == "op" and self.tok.text in "+-":
            sign = -1.0 if self.next().text == "-" else 1.0
        num = self.tok
        if num.kind == "duration":
            raise self.fail(num, "durations are not numbers here; write seconds, e.g. > 300")
        if num.kind != "number":
            raise self.fail(num, "compare with a number, e.g. > 0.9, == 0, > 1e3")
        self.next()
        self.end()
        assert isinstance(num.value, float)
        return Expr(self.text, selector, op, sign * num.value)

    def end(self, hint: str = f"only one comparison is supported: {SUBSET}") -> None:
        if self.tok.kind != "eof":
            raise self.fail(self.tok, hint)

    def selector(self) -> Selector:
        tok = self.tok
        if tok.kind != "ident":
            hint = 'a selector starts with a metric name, e.g. portal_redis_up{check="cache"}'
            if tok.kind == "punct" and tok.text == "(":
                hint = f"parentheses are not supported: {SUBSET}"
            raise self.fail(tok, hint)
        if tok.text in ("by", "without", "and", "or", "unless", "offset", "bool", "on", "ignoring"):
            raise self.fail(tok, f"{tok.text!r} is a PromQL keyword; not supported here")
        metric = self.next().text
        matchers: list[Matcher] = []
        if self.tok.kind == "punct" and self.tok.text == "{":
            self.next()
            while not (self.tok.kind == "punct" and self.tok.text == "}"):
                matchers.append(self.matcher())
                if self.tok.kind == "punct" and self.tok.text == ",":
                    self.next()
                elif not (self.tok.kind == "punct" and self.tok.text == "}"):
                    raise self.fail(self.tok, "matchers are separated by ',' and closed with '}'")
            self.next()
        return Selector(metric, tuple(matchers))

    def matcher(self) -> Matcher:
        name = self.tok
        # `nan` and `inf` read as numbers elsewhere, but are ordinary label names here.
        if name.kind == "number" and name.text.isalpha():
            name = Token("ident", name.text, name.pos, name.text)
        if name.kind != "ident" or not _LABEL.fullmatch(name.text):
            raise self.fail(name, 'a matcher is label="value" (also !=, =~, !~)')
        if name.text == "__name__":
            raise self.fail(name, "put the metric name before '{'", "matching on __name__ is not supported")
        self.next()
        op = self.tok
        if op.kind != "op" or op.text not in ("=", "!=", "=~", "!~"):
            raise self.fail(op, "a label matcher's operator is one of = != =~ !~")
        self.next()
        value = self.tok
        if value.kind != "string":
            raise self.fail(value, "the value of a matcher is a quoted string")
        self.next()
        assert isinstance(value.value, str)
        regex = _compile_regex(value) if op.text in ("=~", "!~") else None
        return Matcher(name.text, op.text, value.value, regex)


def _compile_regex(tok: Token) -> re.Pattern[str]:
    pattern = tok.value
    assert isinstance(pattern, str)
    i, in_class = 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            if i + 1 < len(pattern) and pattern[i + 1] in "123456789" and not in_class:
                raise ExprError(
                    tok.pos,
                    tok.text,
                    "back-references are not supported in regex matchers",
                    "Prometheus uses RE2 syntax",
                )
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            if pattern.startswith("[^]", i) or pattern.startswith("[]", i):
                i += 2 if pattern[i + 1] == "]" else 3
                continue
        else:
            for prefix, what in _RE2_REFUSED:
                if pattern.startswith(prefix, i):
                    raise ExprError(
                        tok.pos, tok.text, f"{what} is not supported in regex matchers", "Prometheus uses RE2 syntax"
                    )
        i += 1
    try:
        return compile_regex(pattern, re.DOTALL)
    except ValueError as e:
        raise ExprError(tok.pos, tok.text, f"invalid regex {pattern!r}: {e}") from None


def parse(text: str) -> Expr:
    """Parse a rule expression; raise ExprError at the first token outside the subset."""
    return _Parser(text).parse()


def parse_series(text: str) -> tuple[str, Labels]:
    """A series in selector notation (`name{a="b"}`, promtool's `input_series`) → name, labels."""
    expr = parse(text)
    if expr.absent or expr.op is not None:
        raise ExprError(0, text, 'a series is written name{label="value", ...}')
    labels: Labels = {}
    for m in expr.selector.matchers:
        if m.op != "=":
            raise ExprError(0, text, f"a series has only '=' labels, not {m.label}{m.op}")
        labels[m.label] = m.value
    return expr.selector.metric, labels


def locate(lines: Sequence[str] | None, line: int, col: int, text: str, position: int) -> tuple[int, int]:
    """The 1-based file (line, column) of `position` in the YAML scalar `text` found at (line, col).

    `lines` is the file's text split in lines (None: assume a plain one-line scalar). A plain
    scalar maps 1:1; a quoted one starts one column later, and its escapes (`\\"`, `''`) take
    more characters in the file than in the value; a block scalar (`|`, `>`) starts on the
    next line at its indentation. A folded (`>`) or multi-line scalar maps to its start.
    """
    src = lines[line - 1] if lines and 0 < line <= len(lines) else None
    first = src[col - 1] if src is not None and col - 1 < len(src) else ""
    if first == "|":
        row = text.count("\n", 0, position)
        start = text.rfind("\n", 0, position) + 1
        body = next((x for x in lines[line:] if x.strip()), "") if lines else ""
        indent = len(body) - len(body.lstrip(" "))  # the block's indentation: its first content line
        return line + 1 + row, indent + position - start + 1
    if (
        "\n" in text
        or first == ">"
        or (src is not None and first not in ('"', "'") and src[col - 1 : col - 1 + len(text)] != text)
    ):
        return line, col
    if first not in ('"', "'"):
        return line, col + position
    assert src is not None
    i, seen = col, 0  # i: 0-based index in the line of the value's next character
    while seen < position and i < len(src):
        if first == "'" and src.startswith("''", i):
            i += 2
        elif first == '"' and src[i] == "\\" and i + 1 < len(src):
            i += {"x": 4, "u": 6, "U": 10}.get(src[i + 1], 2)
        else:
            i += 1
        seen += 1
    if position < len(text) and not src.startswith(text[position], i) and src[i : i + 1] not in ("\\", "'"):
        return line, col  # the file is not what was loaded (edited since): point at the value
    return line, i + 1
