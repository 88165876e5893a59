"""Our PromQL tree (monitor/rules/promql/parse.py) printed back to PromQL text.

The tree keeps no positions and drops parentheses, and `promql_parser`'s own nodes, which can
print themselves, cannot be changed: so the matrix, which rewrites durations and thresholds of
the shipped rules (tests/faults/derive.py), edits our tree and prints it with `to_text`. The
printer parenthesizes every operand that is not a leaf and writes durations in milliseconds,
so its text is not the shipped text's layout; `rewritten` therefore re-parses what it printed
and refuses (ValueError) a text whose tree is not the edited one, so a shape this printer gets
wrong stops the derivation instead of testing a different rule.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable

from monitor.rules.promql.parse import (
    Aggregate,
    At,
    Binary,
    Call,
    MatrixSel,
    Node,
    NumberLit,
    StringLit,
    Subquery,
    Unary,
    VectorSel,
    parse,
)

_GROUP = {"many-to-one": "group_left", "one-to-many": "group_right"}


def to_text(node: Node) -> str:
    """PromQL text whose parse is `node` (up to `VectorSel.text`, the parser's own rendering)."""
    if isinstance(node, NumberLit):
        return _number(node.value)
    if isinstance(node, StringLit):
        return f'"{node.invalid_utf8}"' if node.invalid_utf8 is not None else json.dumps(node.value)
    if isinstance(node, VectorSel):
        return _selector(node) + _modifiers(node.offset, node.at)
    if isinstance(node, MatrixSel):
        return f"{_selector(node.sel)}[{_duration(node.range)}]" + _modifiers(node.sel.offset, node.sel.at)
    if isinstance(node, Subquery):
        step = _duration(node.step) if node.step else ""
        return f"({to_text(node.expr)})[{_duration(node.range)}:{step}]" + _modifiers(node.offset, node.at)
    if isinstance(node, Call):
        return f"{node.func}({', '.join(to_text(a) for a in node.args)})"
    if isinstance(node, Aggregate):
        grouping = f" {'without' if node.without else 'by'} ({', '.join(node.labels)})" \
            if node.without or node.labels else ""
        param = f"{to_text(node.param)}, " if node.param is not None else ""
        return f"{node.op}{grouping} ({param}{to_text(node.expr)})"
    if isinstance(node, Binary):
        return f"{_operand(node.lhs)} {node.op}{_matching(node)} {_operand(node.rhs)}"
    if isinstance(node, Unary):
        return f"{node.op}{_operand(node.expr)}"
    raise ValueError(f"cannot print {type(node).__name__} as PromQL")


def rewritten(text: str, edit: Callable[[Node], Node]) -> str:
    """`text` with its tree edited by `edit` (which returns a node unchanged, or a new one):
    the shipped text itself when nothing changed, else the printed tree, checked by re-parsing."""
    root = parse(text).root
    new = edit(root)
    if new == root:
        return text
    printed = to_text(new)
    if _without_text(parse(printed).root) != _without_text(new):
        raise ValueError(f"the rewrite of {text!r} printed as {printed!r}, which parses to another expression")
    return printed


def transform(node: Node, edit: Callable[[Node], Node | None]) -> Node:
    """`node` rebuilt bottom-up: each node's children first, then `edit(node)` (None: keep it)."""
    changes: dict[str, object] = {}
    if isinstance(node, MatrixSel):
        changes["sel"] = transform(node.sel, edit)
    elif isinstance(node, (Subquery, Unary, Aggregate)):
        changes["expr"] = transform(node.expr, edit)
        if isinstance(node, Aggregate) and node.param is not None:
            changes["param"] = transform(node.param, edit)
    elif isinstance(node, Call):
        changes["args"] = tuple(transform(a, edit) for a in node.args)
    elif isinstance(node, Binary):
        changes["lhs"], changes["rhs"] = transform(node.lhs, edit), transform(node.rhs, edit)
    if any(getattr(node, k) != v for k, v in changes.items()):
        node = dataclasses.replace(node, **changes)  # type: ignore[type-var]
    out = edit(node)
    return node if out is None else out


def _without_text(node: Node) -> Node:
    """The tree with every `VectorSel.text` blanked: the parser renders it from what it read,
    offset included, so it differs between an edited tree and the parse of its print."""
    def blank(n: Node) -> Node | None:
        return dataclasses.replace(n, text="") if isinstance(n, VectorSel) else None
    return transform(node, blank)


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)  # the shortest text that reads back as the same float


def _duration(ms: int) -> str:
    return f"{ms}ms"


def _selector(sel: VectorSel) -> str:
    if sel.or_groups:
        raise ValueError(f"cannot print the `or` matchers of {sel.text}")
    matchers = [m for m in sel.matchers if not (m.name == "__name__" and m.op == "=" and m.value == sel.name)]
    inside = ", ".join(f"{m.name}{m.op}{json.dumps(m.value)}" for m in matchers)
    return f"{sel.name or ''}{{{inside}}}" if inside or sel.name is None else sel.name


def _modifiers(offset: int, at: At | None) -> str:
    out = f" offset {_duration(offset)}" if offset else ""
    if at is not None:
        out += f" @ {at.t / 1000:.3f}" if at.kind == "at" else f" @ {at.kind}()"
    return out


def _matching(node: Binary) -> str:
    out = " bool" if node.return_bool else ""
    if node.on is not None:
        out += f" {'on' if node.on else 'ignoring'} ({', '.join(node.labels)})"
    if node.card in _GROUP:
        out += f" {_GROUP[node.card]} ({', '.join(node.include)})"
    return out


def _operand(node: Node) -> str:
    leaf = isinstance(node, (NumberLit, StringLit, VectorSel, MatrixSel, Call, Aggregate)) and not (
        isinstance(node, NumberLit) and node.value < 0)
    return to_text(node) if leaf else f"({to_text(node)})"
