"""Whether a rule's input series exist: the no-data question of the rule engine, over PromQL.

A comparison drops a series both when its condition is false and when the series is gone, so
the rule engine asks a second question of an alert it no longer finds: is the series it came
from still there? `input_series(engine, expr, t)` answers it as the subset evaluator's
`Expr.input_series` does: the expression evaluated with every comparison made `bool`
(`x > 1` becomes `x > bool 1`, which keeps every series of `x`), labels without `__name__`.
`absent()` and `absent_over_time()` at the top are their own condition (the series missing
is what they alert on): their one result, the selector's `=` labels, always has data.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any, cast

from monitor.rules.promql.engine import Engine
from monitor.rules.promql.parse import Binary, Call, Expr, Node, selectors
from monitor.rules.promql.values import Vector

COMPARISONS = frozenset(("==", "!=", ">", "<", ">=", "<="))
_ABSENT = frozenset(("absent", "absent_over_time"))


def as_bool(expr: Expr) -> Expr:
    """`expr` with every filtering comparison turned into a `bool` one."""
    return replace(expr, root=_as_bool(expr.root))


def _as_bool(node: Node) -> Node:
    changes: dict[str, Any] = {}
    for f in fields(cast(Any, node)):  # every node is a frozen dataclass
        value = getattr(node, f.name)
        if isinstance(value, Node):
            new = _as_bool(value)
            if new is not value:
                changes[f.name] = new
        elif isinstance(value, tuple) and any(isinstance(v, Node) for v in value):
            changes[f.name] = tuple(_as_bool(v) if isinstance(v, Node) else v for v in value)
    if isinstance(node, Binary) and node.op in COMPARISONS and not node.return_bool:
        changes["return_bool"] = True
    return cast(Node, replace(cast(Any, node), **changes)) if changes else node


def input_series(engine: Engine, expr: Expr, t: float) -> list[dict[str, str]]:
    """The label sets (without `__name__`) of the series `expr` reads at `t` that are present,
    whether or not its condition holds."""
    root = expr.root
    if isinstance(root, Call) and root.func in _ABSENT:
        eq = [m for sel in selectors(root) for m in sel.matchers if m.op == "=" and m.name != "__name__"]
        names = [m.name for m in eq]
        return [{m.name: m.value for m in eq if names.count(m.name) == 1}]
    value = engine.instant(as_bool(expr), t)
    if not isinstance(value, Vector):
        return [{}]  # a scalar expression reads no series: it always has data
    return [{k: v for k, v in e.labels.items() if k != "__name__"} for e in value]
