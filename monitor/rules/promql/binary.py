"""Binary operators: arithmetic, comparison (with and without `bool`), and/or/unless, vector matching.

As Prometheus's `VectorBinop`, `VectorscalarBinop`, `VectorAnd/Or/Unless` and `resultMetric`
(`promql/engine.go`): matching signatures ignore `__name__` unless `on(...)` names it;
arithmetic removes the metric name at once, a comparison keeps the left side's labels, `bool`
marks the name for removal; a "one" side with two series of the same signature is an error.
"""

from __future__ import annotations

import math

from monitor.rules.promql.parse import Binary
from monitor.rules.promql.values import EvalError, InstantVector, Internal, Sample, labels_str

ARITHMETIC = frozenset({"+", "-", "*", "/", "%", "^", "atan2"})
COMPARISON = frozenset({"==", "!=", ">", "<", ">=", "<="})


def fdiv(a: float, b: float) -> float:
    try:
        return a / b
    except ZeroDivisionError:
        if a == 0 or math.isnan(a):
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)


def fmod(a: float, b: float) -> float:
    """Go's math.Mod."""
    if math.isnan(a) or math.isnan(b) or math.isinf(a) or b == 0:
        return math.nan
    if math.isinf(b):
        return a
    return math.fmod(a, b)


def fpow(a: float, b: float) -> float:
    """Go's math.Pow (no exceptions: overflow is ±Inf, a negative base with a fraction is NaN)."""
    try:
        return math.pow(a, b)
    except OverflowError:
        if a < 0 and b == int(b) and int(b) % 2 == 1:
            return -math.inf
        return math.inf
    except ValueError:
        if a == 0 and b < 0:
            if b == int(b) and int(b) % 2 == 1:
                return math.copysign(math.inf, a)
            return math.inf
        return math.nan


def arith(op: str, a: float, b: float) -> float:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        return fdiv(a, b)
    if op == "%":
        return fmod(a, b)
    if op == "^":
        return fpow(a, b)
    if op == "atan2":
        return math.atan2(a, b)
    raise EvalError(f"operator {op!r} not allowed for arithmetic")


def compare(op: str, a: float, b: float) -> bool:
    if op == "==":
        return a == b
    if op == "!=":
        return a != b
    if op == ">":
        return a > b
    if op == "<":
        return a < b
    if op == ">=":
        return a >= b
    if op == "<=":
        return a <= b
    raise EvalError(f"operator {op!r} is not a comparison")


def scalar_op(op: str, a: float, b: float) -> float:
    if op in COMPARISON:
        return 1.0 if compare(op, a, b) else 0.0
    return arith(op, a, b)


def evaluate(node: Binary, lhs: Internal, rhs: Internal) -> Internal:
    op = node.op
    if isinstance(lhs, float) and isinstance(rhs, float):
        return scalar_op(op, lhs, rhs)
    if isinstance(lhs, InstantVector) and isinstance(rhs, float):
        return _vector_scalar(op, lhs, rhs, False, node.return_bool)
    if isinstance(lhs, float) and isinstance(rhs, InstantVector):
        return _vector_scalar(op, rhs, lhs, True, node.return_bool)
    if not isinstance(lhs, InstantVector) or not isinstance(rhs, InstantVector):
        raise EvalError(f"binary operator {op!r} needs scalars or instant vectors")
    if op == "and":
        return _and(node, lhs, rhs)
    if op == "or":
        return _or(node, lhs, rhs)
    if op == "unless":
        return _unless(node, lhs, rhs)
    return _vector_vector(node, lhs, rhs)


def _vector_scalar(op: str, vec: InstantVector, scalar: float, swap: bool, return_bool: bool) -> InstantVector:
    out = InstantVector()
    is_cmp = op in COMPARISON
    changes = op in ARITHMETIC
    for s in vec:
        a, b = (scalar, s.value) if swap else (s.value, scalar)
        if is_cmp:
            keep = compare(op, a, b)
            value = s.value
        else:
            value = arith(op, a, b)
            keep = True
        if return_bool:
            value = 1.0 if keep else 0.0
            keep = True
        if keep:
            out.append(Sample(s.metric, value, s.drop or changes or return_bool))
    return out


def signature_fn(node: Binary):  # type: ignore[no-untyped-def]
    labels = node.labels
    if node.on:
        names = tuple(sorted(labels))
        return lambda m: tuple(m.get(n, "") for n in names)
    ignored = frozenset(labels) | {"__name__"}

    def signature(m: dict[str, str]) -> object:
        items = frozenset(m.items())
        gone = [(k, m[k]) for k in ignored if k in m]
        return items.difference(gone) if gone else items

    return signature


def _match_labels(node: Binary, m: dict[str, str]) -> dict[str, str]:
    if node.on:
        return {k: v for k, v in m.items() if k in node.labels}
    ignored = set(node.labels) | {"__name__"}
    return {k: v for k, v in m.items() if k not in ignored}


def _and(node: Binary, lhs: InstantVector, rhs: InstantVector) -> InstantVector:
    if not lhs or not rhs:
        return InstantVector()
    sig = signature_fn(node)
    right = {sig(s.metric) for s in rhs}
    return InstantVector(s for s in lhs if sig(s.metric) in right)


def _or(node: Binary, lhs: InstantVector, rhs: InstantVector) -> InstantVector:
    if not lhs:
        return InstantVector(rhs)
    if not rhs:
        return InstantVector(lhs)
    sig = signature_fn(node)
    left = {sig(s.metric) for s in lhs}
    return InstantVector(list(lhs) + [s for s in rhs if sig(s.metric) not in left])


def _unless(node: Binary, lhs: InstantVector, rhs: InstantVector) -> InstantVector:
    if not lhs or not rhs:
        return InstantVector(lhs)
    sig = signature_fn(node)
    right = {sig(s.metric) for s in rhs}
    return InstantVector(s for s in lhs if sig(s.metric) not in right)


def _result_metric(node: Binary, lm: dict[str, str], rm: dict[str, str]) -> dict[str, str]:
    m = dict(lm)
    if node.op in ARITHMETIC:
        m.pop("__name__", None)
    if node.card == "one-to-one":
        if node.on:
            m = {k: v for k, v in m.items() if k in node.labels}
        else:
            for name in node.labels:
                m.pop(name, None)
    for name in node.include:
        v = rm.get(name, "")
        if v:
            m[name] = v
        else:
            m.pop(name, None)
    return m


def _vector_vector(node: Binary, lhs: InstantVector, rhs: InstantVector) -> InstantVector:
    if not lhs or not rhs:
        return InstantVector()
    op = node.op
    card = node.card
    if card == "one-to-many":
        lhs, rhs = rhs, lhs
    sig = signature_fn(node)
    right: dict[object, Sample] = {}
    for rs in rhs:
        key = sig(rs.metric)
        dup = right.get(key)
        if dup is not None:
            side = "left" if card == "one-to-many" else "right"
            group = labels_str(_match_labels(node, rs.metric))
            pair = "[" + ", ".join(sorted((labels_str(rs.metric), labels_str(dup.metric)))) + "]"
            raise EvalError(
                f"found duplicate series for the match group {group} on the {side} hand-side of the operation: "
                f"{pair};many-to-many matching not allowed: matching labels must be unique on one side"
            )
        right[key] = rs
    matched: dict[object, set[frozenset[tuple[str, str]]] | None] = {}
    out = InstantVector()
    is_cmp = op in COMPARISON
    return_bool = node.return_bool
    for ls in lhs:
        key = sig(ls.metric)
        found = right.get(key)
        if found is None:
            continue
        rs = found
        a, b = ls.value, rs.value
        if card == "one-to-many":
            a, b = b, a
        if is_cmp:
            keep = compare(op, a, b)
            value = a
        else:
            value = arith(op, a, b)
            keep = True
        if return_bool:
            value = 1.0 if keep else 0.0
        metric = _result_metric(node, ls.metric, rs.metric)
        if card == "one-to-one":
            if key in matched:
                raise EvalError(
                    "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)"
                )
            matched[key] = None
        else:
            seen = matched.get(key)
            if seen is None:
                seen = set()
                matched[key] = seen
            mk = frozenset(metric.items())
            if mk in seen:
                raise EvalError("multiple matches for labels: grouping labels must ensure unique matches")
            seen.add(mk)
        if not keep and not return_bool:
            continue
        out.append(Sample(metric, value, return_bool))
    return out
