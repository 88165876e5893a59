"""PromQL: parse with `promql_parser`, evaluate ourselves over a `monitor.history.History`.

Owns: the expression tree (`parse`), evaluation with Prometheus 3.x semantics (`engine`,
`binary`, `aggregate`, `functions`) and the value types (`values`).

May import: `monitor.history` (series storage and label matchers) and `monitor.model`; nothing
else of ours. The rule engine, the web API and the CLI build on this interface:

    expr = parse("sum by (job) (rate(http_requests_total[5m]))")   # raises ExprError
    engine = Engine(history, lookback_s=300)   # histograms=HistogramStore() for native histograms
    value = engine.instant(expr, t)            # t in seconds; str accepted too
    matrix = engine.range(expr, start, end, step)
    cycle = engine.cycle(t)                    # a rule group: many expressions at one time,
    values = [cycle.instant(e) for e in exprs] # each shared subexpression computed once

- `parse(text) -> Expr`; `ExprError.position` is the 0-based column, `.message` the parser's.
  `Expr.kind` is "scalar", "vector", "matrix" or "string".
- `Engine.instant` returns `Scalar(value, t)`, `String(value, t)`, `Vector` (list of
  `Element(labels, value, t)`, labels a dict with `__name__` where PromQL keeps it) or, for a
  bare range selector, `Matrix`. `Engine.range` returns `Matrix` (list of
  `Series(labels, points)`, points `(t, value)`), sorted by labels. A native histogram result
  is an `Element` whose `histogram` is a `FloatHistogram`, or a `Series` point in `histograms`.
  Both raise `EvalError` when Prometheus refuses the query at evaluation time (duplicate label
  sets, many-to-many matching).
- `Engine.cycle(t).instant(expr)` gives the same values as `Engine.instant(expr, t)`; within one
  cycle equal subtrees (`rate(x[5m])` in two rules, a subquery's steps) are evaluated once.
  Use a new cycle for each evaluation time.
- `needed_history_s(expr, lookback_s=300) -> float`: the seconds of history before the
  evaluation time the expression can read (ranges + offsets + subquery ranges + lookback), so
  the history's retention can be computed from the rules.
- `needed_history_by_metric_s(expr, lookback_s=300) -> dict[str | None, float]`: the same, per
  metric name a selector reads (None for selectors without one: their need applies to every
  series), so each metric can be kept only as long as the rules read it back.
- `selected_series(expr) -> list[Selection]`: per selector, the metric name (None when the
  selector has none) and its matchers (`monitor.history.Matcher`: name, op, value), for
  checking rules against the metrics the checks export.
"""

from __future__ import annotations

from dataclasses import dataclass

from monitor.history import Matcher
from monitor.rules.promql.engine import Cycle, Engine
from monitor.rules.promql.histogram import FloatHistogram, HistogramStore
from monitor.rules.promql.parse import (
    Expr,
    ExprError,
    lookback_needed,
    lookback_needed_by_metric,
    metric_name,
    parse,
    selectors,
)
from monitor.rules.promql.values import Element, EvalError, Matrix, Scalar, Series, String, Value, Vector

__all__ = [
    "Cycle",
    "Element",
    "Engine",
    "EvalError",
    "Expr",
    "ExprError",
    "FloatHistogram",
    "HistogramStore",
    "Matrix",
    "Scalar",
    "Selection",
    "Series",
    "String",
    "Value",
    "Vector",
    "needed_history_by_metric_s",
    "needed_history_s",
    "parse",
    "selected_series",
]


@dataclass(frozen=True, slots=True)
class Selection:
    """One selector of an expression: its metric name and every label matcher."""

    metric: str | None
    matchers: tuple[Matcher, ...]


def needed_history_s(expr: Expr, lookback_s: float = 300.0) -> float:
    """Seconds of history before the evaluation time that `expr` can read."""
    return lookback_needed(expr.root, round(lookback_s * 1000)) / 1000.0


def needed_history_by_metric_s(expr: Expr, lookback_s: float = 300.0) -> dict[str | None, float]:
    """Seconds of history before the evaluation time that `expr` can read, per metric name
    (None: selectors without a name, whose need applies to every series)."""
    needs = lookback_needed_by_metric(expr.root, round(lookback_s * 1000))
    return {name: need / 1000.0 for name, need in needs.items()}


def selected_series(expr: Expr) -> list[Selection]:
    """Every selector's metric name and matchers (the `__name__` matcher included)."""
    return [Selection(metric_name(sel), sel.matchers) for sel in selectors(expr.root)]
