"""`check-config`'s rule lint: a metric no configured check exports, a label a metric never carries.

PromQL accepts any name, so a typo (`portal_redis_upp`, `{chek="cache"}`) loads, evaluates to
nothing and never fires. The lint walks every rule's expression with the PromQL parser
(`promql_parser.walk`: every vector selector, inside ranges, subqueries and function calls
too) and compares each selector with the catalogue of what the configuration exports:

- the metric: the selector's name, or its `__name__` matcher (`=`: that name, `=~`: a regex
  that must match some exported name);
- each label matcher: a label the metric's series carry (for a `__name__=~` selector, any
  of the matching metrics).

The catalogue (`Catalogue`: series name -> its labels, or None when they are not known) is
built by the caller from the `METRICS` and `LABELS` tables the modules declare (a check
type's module, the store, the daemon's own parts) and the configuration: the checks
configured (switched off or not: their metrics come when they are switched on), their
`labels`, and the `record:` names of recording rules.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import promql_parser
import re2  # type: ignore[import-untyped]

from monitor.config.model import Config

Catalogue = dict[str, frozenset[str] | None]  # series name -> its labels (None: any, not known)
MetricTable = Mapping[str, tuple[str, str]]  # name -> (kind, help)
LabelTable = Mapping[str, tuple[str, ...]]  # name -> labels


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding: where (`file:line:col`), the rule key (`rules[3].expr`) and what."""

    where: str
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.key}: {self.message}"


def series(name: str, kind: str) -> list[tuple[str, tuple[str, ...]]]:
    """The series a METRICS entry stands for, with the labels its kind adds."""
    if kind == "histogram":
        return [(name + "_bucket", ("le",)), (name + "_sum", ()), (name + "_count", ())]
    if kind == "summary":
        return [(name, ("quantile",)), (name + "_sum", ()), (name + "_count", ())]
    return [(name, ())]


def add(cat: Catalogue, metrics: MetricTable, labels: LabelTable, extra: Iterable[str] = ()) -> None:
    """Add a module's tables; `extra` are labels every series gets (`check`, a check's `labels`)."""
    more = tuple(extra)
    for name, (kind, _help) in metrics.items():
        for sname, kind_labels in series(name, kind):
            known = cat.get(sname, frozenset())
            new = frozenset((*labels.get(name, ()), *kind_labels, *more))
            cat[sname] = None if known is None else known | new


def catalogue(
    cfg: Config,
    check_types: Mapping[str, tuple[MetricTable, LabelTable]],
    per_check: tuple[MetricTable, LabelTable],
    daemon: Sequence[tuple[MetricTable, LabelTable]],
) -> Catalogue:
    """What this configuration exports: each configured check's type tables (with `check`, its
    `labels`), the series the store adds for every check (`per_check`, and `portal_<type>_up`),
    the daemon's own tables, and recording rules' `record:` names."""
    cat: Catalogue = {}
    checks: list[tuple[str, tuple[str, ...]]] = [(str(c.type), tuple(c.labels)) for c in cfg.root.checks]
    checks += [(t, ()) for t in cfg.skipped_types.values() if t in check_types]
    for typ, own in checks:
        extra = ("check", *own)
        metrics, labels = check_types[typ]
        add(cat, metrics, labels, extra)
        add(cat, {f"portal_{typ}_up": ("gauge", "")}, {}, extra)
        add(cat, per_check[0], per_check[1], extra)
    for metrics, labels in daemon:
        add(cat, metrics, labels)
    for rc in cfg.root.rules:
        # Recording rules (`record:`) export their name; their labels depend on the expression.
        record = getattr(rc, "record", None)
        if record:
            cat[str(record)] = None
    return cat


def selectors(expr: str) -> list[tuple[str | None, list[tuple[str, str, str]]]]:
    """Every vector selector of a PromQL expression: (name, [(label, op, value), ...]).
    Raises ValueError when the expression does not parse (the rule compiler reports that)."""
    found: list[tuple[str | None, list[tuple[str, str, str]]]] = []

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            ms = node.matchers
            groups = [list(ms.matchers), *(list(g) for g in (ms.or_matchers or []))]
            for group in groups or [[]]:
                found.append((node.name, [(m.name, _op(m.op), m.value) for m in group]))
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


def _op(op: Any) -> str:
    return {"Equal": "=", "NotEqual": "!=", "Re": "=~", "NotRe": "!~"}.get(str(op).rsplit(".", 1)[-1], str(op))


def lint(cfg: Config, cat: Catalogue) -> list[Problem]:
    """Every selector of every rule that names a metric or label outside `cat`."""
    problems: list[Problem] = []
    names = sorted(cat)
    for i, rc in enumerate(cfg.root.rules):
        expr = getattr(rc, "expr", None)
        if not expr:
            continue
        try:
            found = selectors(expr)
        except (ValueError, TypeError):
            continue  # the rule compiler reports the expression itself
        where, key = cfg.where("rules", i, "expr"), f"rules[{i}].expr"
        seen: set[str] = set()
        for name, matchers in found:
            for message in _check(name, matchers, cat, names):
                if message not in seen:
                    seen.add(message)
                    problems.append(Problem(where, key, message))
    return problems


def _check(name: str | None, matchers: list[tuple[str, str, str]], cat: Catalogue, names: list[str]) -> list[str]:
    metrics: list[str]
    out: list[str] = []
    if name is None:
        by_name = [(op, v) for label, op, v in matchers if label == "__name__"]
        if not by_name:
            return []  # {job="x"}: any metric
        metrics = list(names)
        for op, value in by_name:
            metrics = _matching(metrics, op, value)
        if not metrics:
            shown = ", ".join(f"__name__{op}{value!r}" for op, value in by_name)
            return [f"no metric that the configured checks export matches {shown}"]
    elif name not in cat:
        return [f"metric {name} is exported by no configured check" + _suggest(name, names)]
    else:
        metrics = [name]
    labels: set[str] | None = set()
    for m in metrics:
        known = cat[m]
        if known is None or labels is None:
            labels = None
        else:
            labels |= known
    if labels is None:
        return out
    what = metrics[0] if len(metrics) == 1 else f"the metrics matching {name or '__name__'}"
    for label, *_ in matchers:
        if label == "__name__" or label in labels:
            continue
        carried = ", ".join(sorted(labels)) or "none"
        out.append(f"{what} has no label {label} (its labels: {carried})" + _suggest(label, sorted(labels)))
    return out


def _matching(names: list[str], op: str, value: str) -> list[str]:
    if op == "=":
        return [n for n in names if n == value]
    if op == "!=":
        return [n for n in names if n != value]
    options = re2.Options()
    options.log_errors = False
    try:
        pattern = re2.compile(f"^(?:{value})$", options)
    except re2.error:
        return []
    hit = [n for n in names if pattern.search(n)]
    return hit if op == "=~" else [n for n in names if n not in hit]


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""
