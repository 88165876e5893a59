"""PromQL text to our own expression tree, with positioned errors.

`promql_parser` (the Rust parser's bindings) does the parsing; its tree is copied once into the
small frozen dataclasses below, so evaluation never crosses into the extension again and the
tree can be walked for what a rule needs (`requirements()`).

The parser's messages carry no position. The column of an error is the one the message names
when it quotes a fragment of the text (`unknown function with name 'nonexist'`, an unclosed
parenthesis); otherwise the start of the first token after the longest prefix that parses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import promql_parser as pp

from monitor.history import Matcher


class ExprError(Exception):
    """An expression PromQL does not accept: `position` is the 0-based column of `token`."""

    def __init__(self, position: int, token: str, message: str, hint: str = "") -> None:
        self.position = position
        self.token = token
        self.message = message
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.message} at column {self.position + 1}"
        return f"{text} ({self.hint})" if self.hint else text


# ---- the tree ------------------------------------------------------------------------------
class Node:
    __slots__ = ()


@dataclass(frozen=True, slots=True)
class At:
    """`@ t` (ms), `@ start()` or `@ end()`."""

    kind: str  # "at", "start", "end"
    t: int = 0


@dataclass(frozen=True, slots=True)
class NumberLit(Node):
    value: float


@dataclass(frozen=True, slots=True)
class StringLit(Node):
    value: str
    invalid_utf8: str | None = None  # the literal as written, when its escapes make invalid UTF-8 (Go bytes)


@dataclass(frozen=True, slots=True)
class VectorSel(Node):
    name: str | None
    matchers: tuple[Matcher, ...]
    or_groups: tuple[tuple[Matcher, ...], ...]
    offset: int  # ms
    at: At | None
    text: str


@dataclass(frozen=True, slots=True)
class MatrixSel(Node):
    sel: VectorSel
    range: int  # ms


@dataclass(frozen=True, slots=True)
class Subquery(Node):
    expr: Node
    range: int
    step: int | None
    offset: int
    at: At | None


@dataclass(frozen=True, slots=True)
class Call(Node):
    func: str
    args: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Aggregate(Node):
    op: str
    expr: Node
    param: Node | None
    without: bool
    labels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Binary(Node):
    op: str
    lhs: Node
    rhs: Node
    return_bool: bool
    card: str  # one-to-one, many-to-one, one-to-many, many-to-many
    on: bool | None  # None: no on/ignoring
    labels: tuple[str, ...]
    include: tuple[str, ...]  # group_left/group_right labels


@dataclass(frozen=True, slots=True)
class Unary(Node):
    op: str  # "-" (a "+" never reaches the tree)
    expr: Node


@dataclass(frozen=True, slots=True)
class Expr:
    """A parsed expression: the text it came from and its tree."""

    text: str
    root: Node
    kind: str = field(default="")  # "scalar", "vector", "matrix" or "string"


# ---- conversion ----------------------------------------------------------------------------
_MATCH_OPS = {"Equal": "=", "NotEqual": "!=", "Re": "=~", "NotRe": "!~"}
_CARD = {"OneToOne": "one-to-one", "ManyToOne": "many-to-one", "OneToMany": "one-to-many", "ManyToMany": "many-to-many"}


def _enum_name(value: Any) -> str:
    return str(value).rsplit(".", 1)[-1]


def _ms(d: timedelta | None) -> int:
    if d is None:
        return 0
    return (d.days * 86400 + d.seconds) * 1000 + d.microseconds // 1000


def _at(node: Any) -> At | None:
    at = node.at
    if at is None:
        return None
    kind = _enum_name(at.type)
    if kind == "Start":
        return At("start")
    if kind == "End":
        return At("end")
    try:
        when = at.at
    except BaseException as exc:  # the bindings panic on times before 1970
        raise ExprError(0, "@", "timestamps before 1970 are not supported after @") from exc
    return At("at", round(when.timestamp() * 1000))


def _matcher(m: Any) -> Matcher:
    return Matcher.of(m.name, _MATCH_OPS[_enum_name(m.op)], m.value)


# Structurally equal subtrees are one object, so an evaluation cycle can share their results by
# identity (Engine.cycle). Bounded: forgetting only loses sharing, never correctness.
_INTERNED: dict[Node, Node] = {}


def _convert(node: Any, bad: dict[str, str] | None = None) -> Node:
    out = _convert_raw(node, bad)
    if len(_INTERNED) > 50_000:
        _INTERNED.clear()
    return _INTERNED.setdefault(out, out)


def _convert_raw(node: Any, bad: dict[str, str] | None = None) -> Node:
    bad = bad or {}
    if isinstance(node, pp.ParenExpr):
        return _convert(node.expr, bad)
    if isinstance(node, pp.NumberLiteral):
        return NumberLit(float(node.val))
    if isinstance(node, pp.StringLiteral):
        return StringLit(node.val, bad.get(node.val))
    if isinstance(node, pp.VectorSelector):
        ms = node.matchers
        matchers = [_matcher(m) for m in ms.matchers]
        if node.name is not None and not any(m.name == "__name__" for m in matchers):
            matchers.insert(0, Matcher.of("__name__", "=", node.name))
        groups = tuple(tuple(_matcher(m) for m in g) for g in ms.or_matchers)
        return VectorSel(node.name, tuple(matchers), groups, _ms(node.offset), _at(node), str(node))
    if isinstance(node, pp.MatrixSelector):
        sel = _convert(node.vector_selector, bad)
        assert isinstance(sel, VectorSel)
        return MatrixSel(sel, _ms(node.range))
    if isinstance(node, pp.SubqueryExpr):
        step = _ms(node.step) if node.step is not None else None
        return Subquery(_convert(node.expr, bad), _ms(node.range), step or None, _ms(node.offset), _at(node))
    if isinstance(node, pp.Call):
        return Call(node.func.name, tuple(_convert(a, bad) for a in node.args))
    if isinstance(node, pp.AggregateExpr):
        mod = node.modifier
        without = mod is not None and mod.type == pp.AggModifierType.Without
        labels = tuple(mod.labels) if mod is not None else ()
        param = _convert(node.param, bad) if node.param is not None else None
        return Aggregate(str(node.op), _convert(node.expr, bad), param, without, labels)
    if isinstance(node, pp.BinaryExpr):
        bmod = node.modifier
        op = str(node.op)
        if bmod is None:
            card = "many-to-many" if op in ("and", "or", "unless") else "one-to-one"
            return Binary(op, _convert(node.lhs, bad), _convert(node.rhs, bad), False, card, None, (), ())
        matching = bmod.matching
        on = None if matching is None else _enum_name(matching.type) == "Include"
        labels = tuple(matching.labels) if matching is not None else ()
        card = _CARD[_enum_name(bmod.card)]
        if op in ("and", "or", "unless"):
            card = "many-to-many"
        include = tuple(bmod.group_labels or ())
        return Binary(
            op, _convert(node.lhs, bad), _convert(node.rhs, bad), bool(bmod.return_bool), card, on, labels, include
        )
    if isinstance(node, pp.UnaryExpr):
        return Unary("-", _convert(node.expr, bad))
    raise ExprError(0, str(node), f"unsupported expression {type(node).__name__}")


def kind_of(node: Node) -> str:
    """The value type an expression returns: scalar, vector, matrix or string."""
    if isinstance(node, NumberLit):
        return "scalar"
    if isinstance(node, StringLit):
        return "string"
    if isinstance(node, (MatrixSel, Subquery)):
        return "matrix"
    if isinstance(node, Unary):
        return kind_of(node.expr)
    if isinstance(node, Binary):
        if kind_of(node.lhs) == "scalar" and kind_of(node.rhs) == "scalar":
            return "scalar"
        return "vector"
    if isinstance(node, Call):
        if node.func in ("time", "pi", "scalar", "step", "range", "start", "end", "min_of", "max_of"):
            return "scalar"
        return "vector"
    return "vector"


# ---- errors with columns ---------------------------------------------------------------------
_TOKEN = re.compile(
    r"""\s*(?:"(?:[^"\\\n]|\\.)*"?|'(?:[^'\\\n]|\\.)*'?|`[^`]*`?|[0-9a-zA-Z_:.]+|=~|!~|!=|==|>=|<=|.)""",
    re.DOTALL,
)


def _token_starts(text: str) -> list[int]:
    starts = []
    i = 0
    while i < len(text):
        m = _TOKEN.match(text, i)
        if m is None or m.end() == i:
            break
        starts.append(i + (len(m.group(0)) - len(m.group(0).lstrip())))
        i = m.end()
    return starts


def _parses(text: str) -> bool:
    try:
        pp.parse(text)
    except BaseException:
        return False
    return True


def _unclosed(text: str, open_ch: str, close_ch: str) -> int | None:
    stack: list[int] = []
    for i, ch in enumerate(text):
        if ch == open_ch:
            stack.append(i)
        elif ch == close_ch and stack:
            stack.pop()
    return stack[-1] if stack else None


def error_column(text: str, message: str) -> tuple[int, str]:
    """Best column (0-based) and token for the parser's `message` about `text`."""
    for word, pair in (("parenthesis", "()"), ("brace", "{}"), ("bracket", "[]")):
        if f"unclosed left {word}" in message or f"end of input inside {word}" in message:
            pos = _unclosed(text, pair[0], pair[1])
            if pos is not None:
                return pos, pair[0]
    if "end of input" in message:
        return len(text.rstrip()), ""
    for pattern in (r"'([^']+)'", r'"([^"]+)"', r"illegal regex for (.+)$", r"syntax: (\S+)$"):
        m = re.search(pattern, message)
        if m:
            pos = text.find(m.group(1))
            if pos >= 0:
                return pos, m.group(1)
    m = re.search(r"call to (?:function )?'?([a-z_]+)", message)
    if m and text.find(m.group(1)) >= 0:
        return text.find(m.group(1)), m.group(1)
    starts = _token_starts(text)
    last_ok = -1
    for k in range(len(starts)):
        end = starts[k + 1] if k + 1 < len(starts) else len(text)
        if _parses(text[:end]):
            last_ok = k
    k = last_ok + 1
    if k < len(starts):
        start = starts[k]
        m = _TOKEN.match(text, start)
        return start, (m.group(0).strip() if m else "")
    return 0, text[:1]


def parse(text: str) -> Expr:
    """Parse PromQL `text`; an ExprError points at the column it concerns."""
    try:
        node = pp.parse(text)
    except BaseException as exc:
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        message = str(exc).strip() or "invalid expression"
        pos, token = error_column(text, message)
        raise ExprError(pos, token, message) from None
    root = _convert(node, _invalid_utf8_literals(text))
    return Expr(text, root, kind_of(root))


_QUOTED = re.compile(r'"((?:[^"\\\n]|\\.)*)"|\'((?:[^\'\\\n]|\\.)*)\'')
_ESCAPES = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92, "'": 39, '"': 34}


def _invalid_utf8_literals(text: str) -> dict[str, str]:
    """Quoted literals whose \\x or octal escapes give bytes that are not UTF-8, as Go reads them:
    {the value the parser returns (each escape a code point): the literal as written}."""
    out: dict[str, str] = {}
    if "\\" not in text:
        return out
    for m in _QUOTED.finditer(text):
        raw = m.group(1) if m.group(1) is not None else m.group(2)
        if raw is None or "\\" not in raw:
            continue
        data = bytearray()
        value = []
        i = 0
        while i < len(raw):
            ch = raw[i]
            if ch != "\\" or i + 1 >= len(raw):
                data += ch.encode()
                value.append(ch)
                i += 1
                continue
            esc = raw[i + 1]
            if esc == "x" and re.fullmatch(r"[0-9a-fA-F]{2}", raw[i + 2 : i + 4]):
                code = int(raw[i + 2 : i + 4], 16)
                data.append(code)
                value.append(chr(code))
                i += 4
            elif esc in "01234567" and re.fullmatch(r"[0-7]{3}", raw[i + 1 : i + 4]):
                code = int(raw[i + 1 : i + 4], 8)
                data.append(code & 0xFF)
                value.append(chr(code & 0xFF))
                i += 4
            elif esc in ("u", "U"):
                width = 4 if esc == "u" else 8
                code = int(raw[i + 2 : i + 2 + width] or "0", 16)
                data += chr(code).encode("utf-8", "surrogatepass")
                value.append(chr(code))
                i += 2 + width
            else:
                code = _ESCAPES.get(esc, ord(esc))
                data.append(code)
                value.append(chr(code))
                i += 2
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            out["".join(value)] = raw
    return out


# ---- what an expression needs ---------------------------------------------------------------
def children(node: Node) -> list[Node]:
    """The nodes directly under `node`, in the order they are written."""
    if isinstance(node, MatrixSel):
        return [node.sel]
    if isinstance(node, (Subquery, Unary)):
        return [node.expr]
    if isinstance(node, Call):
        return list(node.args)
    if isinstance(node, Aggregate):
        return ([node.param] if node.param is not None else []) + [node.expr]
    if isinstance(node, Binary):
        return [node.lhs, node.rhs]
    return []


def walk(node: Node) -> list[Node]:
    """Every node, depth first, parents before children."""
    out = [node]
    for child in children(node):
        out += walk(child)
    return out


def metric_name(sel: VectorSel) -> str | None:
    """The one metric name a selector can match (its name, or an `__name__="..."` matcher that
    applies to all of it); None when it can match several."""
    if sel.name is not None:
        return sel.name
    return next((m.value for m in sel.matchers if m.name == "__name__" and m.op == "="), None)


def lookback_needed_by_metric(node: Node, lookback: int) -> dict[str | None, int]:
    """Milliseconds of history before the evaluation time that evaluating `node` can read, per
    metric name (`metric_name`; None: a selector without one, whose need applies to every series).

    Ranges, offsets and subquery ranges add up along the path to each selector; a plain
    selector reads back `lookback`. `@` is treated as reading at the evaluation time.
    """
    needs: dict[str | None, int] = {}
    _add_needs(node, lookback, 0, needs)
    return needs


def _add_needs(node: Node, lookback: int, above: int, needs: dict[str | None, int]) -> None:
    """Record in `needs` what the selectors under `node` read, `above` ms already read back by
    the subqueries around it."""
    if isinstance(node, VectorSel):
        _raise_need(needs, metric_name(node), above + max(node.offset, 0) + lookback)
    elif isinstance(node, MatrixSel):
        _raise_need(needs, metric_name(node.sel), above + max(node.sel.offset, 0) + node.range)
    elif isinstance(node, Subquery):
        _add_needs(node.expr, lookback, above + max(node.offset, 0) + node.range, needs)
    else:
        for child in children(node):
            _add_needs(child, lookback, above, needs)


def _raise_need(needs: dict[str | None, int], name: str | None, need: int) -> None:
    if need > needs.get(name, -1):
        needs[name] = need


def lookback_needed(node: Node, lookback: int) -> int:
    """Milliseconds of history before the evaluation time that evaluating `node` can read: the
    longest of `lookback_needed_by_metric`, 0 for an expression that reads no series."""
    return max(lookback_needed_by_metric(node, lookback).values(), default=0)


def selectors(node: Node) -> list[VectorSel]:
    """Every vector selector in the expression (metric names and matchers, for config checks)."""
    return [n for n in walk(node) if isinstance(n, VectorSel)]
