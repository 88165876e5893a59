"""The rule engine: `evaluate(rules, samples, state, now) -> (state, transitions)`, a pure function.

No clock reads, no I/O: time is the `now` argument, so `for`, `keep_firing_for` and flapping
are tested with explicit datetimes, and the daemon persists `AlertStates.to_json()` so that a
restart neither re-pages nor forgets to resolve.

An alert's life, as Prometheus' `rules/alerting.go`:

    inactive ──true──► pending ──true for ≥ `for`──► firing ──false for ≥ `keep_firing_for`──► resolved
                         │                                    (counted from the first false evaluation)
                         └──false──► gone (no transition: nothing was announced)

- With `for: 0s` an alert fires on the first evaluation that finds it true (one `firing`
  transition, no `pending` one).
- Transitions are emitted only on change: `pending`, `firing`, `resolved`.
- One alert per matching series; its identity is the fingerprint of its labels (series labels
  + rule `labels` + `alertname` + `severity` + `vendor` when set). Two rules that produce the
  same labels share one alert (the first rule in file order describes it), as Alertmanager
  would merge them.
- A firing alert whose rule was deleted or edited so that it no longer produces that label
  set resolves: a resolve is never lost because the config changed.
- A restored state keeps `active_since`, so `for` is not restarted by a daemon restart, unless
  the daemon was away longer than `outage_tolerance` (1h, Prometheus'
  `--rules.alert.for-outage-tolerance`): then what happened meanwhile is unknown and pending
  alerts start their `for` again. Firing alerts stay firing either way.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from monitor.config.model import SHORTHANDS, Config, RuleConfig
from monitor.config.yamlpos import ConfigError, format_path, nearest
from monitor.history import History
from monitor.model import Alert, Sample, Transition
from monitor.rules.expr import locate
from monitor.rules.promql import (
    Engine,
    EvalError,
    Expr,
    ExprError,
    Scalar,
    Vector,
    needed_history_s,
    parse,
    selected_series,
)
from monitor.rules.promql.parse import Call
from monitor.rules.templates import Context, Template, compile_template, render
from monitor.rules.tokens import ExprError as TemplateSyntaxError

PENDING = "pending"
FIRING = "firing"
RESOLVED = "resolved"
OUTAGE_TOLERANCE = timedelta(hours=1)
STATE_VERSION = 1
LOOKBACK_S = 300.0  # Prometheus's default query lookback: a series is current for 5 minutes
_RESERVED_LABELS = ("alertname", "severity", "vendor")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


@dataclass(frozen=True, slots=True)
class Rule:
    """A compiled alert rule: the parsed expression and the annotation templates."""

    alert: str
    expr: Expr
    severity: str  # P1..P4
    for_s: float = 0.0
    keep_firing_for_s: float = 0.0
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, Template] = field(default_factory=dict)  # by name: summary, runbook_url, ...
    vendor: str | None = None
    context: Context = field(default_factory=Context)  # what templates see besides the series ($externalURL)

    @classmethod
    def from_config(cls, cfg: RuleConfig) -> Rule:
        """Compile one rule; raise the first problem (ExprError, TemplateError or ValueError)."""
        rule, problems = _compile(cfg)
        if rule is None:
            raise problems[0][1]
        if not isinstance(rule, Rule):
            raise ValueError(f"{cfg.record!r} is a recording rule, not an alerting rule")
        return rule

    def alert_for(self, series: Mapping[str, str], value: float) -> Alert:
        """The alert for one matching series. Templates see the series' labels, as in Prometheus;
        the metric name is not an alert label."""
        series = {k: v for k, v in series.items() if k != "__name__"}
        labels = {**series, **self.labels, "alertname": self.alert, "severity": self.severity}
        if self.vendor:
            labels["vendor"] = self.vendor
        annotations = {k: render(t, series, value, self.context) for k, t in self.annotations.items()}
        return Alert(
            name=self.alert,
            labels=labels,
            annotations=annotations,
            severity=self.severity,
            value=value,
            vendor=self.vendor,
            fingerprint=fingerprint(self.alert, labels),
        )


@dataclass(frozen=True, slots=True)
class RecordingRule:
    """A compiled recording rule: `expr`'s result stored as the series `record` (+ `labels`)."""

    record: str
    expr: Expr
    labels: Mapping[str, str] = field(default_factory=dict)

    def samples(self, value: Vector | Scalar) -> list[Sample]:
        """The series to store, as Prometheus's rules/recording.go: the name replaced, the rule's
        labels set (an empty value removes the label); a scalar is one series without labels."""
        items: list[tuple[Mapping[str, str], float]]
        if isinstance(value, Scalar):
            items = [({}, value.value)]
        else:
            items = [(e.labels, e.value) for e in value]
        out: list[Sample] = []
        seen: set[tuple[tuple[str, str], ...]] = set()
        for labels, v in items:
            lb = {k: x for k, x in labels.items() if k != "__name__"}
            for k, x in self.labels.items():
                if x:
                    lb[k] = x
                else:
                    lb.pop(k, None)
            key = tuple(sorted(lb.items()))
            if key in seen:
                raise EvalError("vector contains metrics with the same labelset after applying rule labels")
            seen.add(key)
            out.append(Sample(self.record, lb, v))
        return out


AnyRule = Rule | RecordingRule


def alert_rules(rules: Sequence[AnyRule]) -> list[Rule]:
    """The alerting rules of a rule list, in order."""
    return [r for r in rules if isinstance(r, Rule)]


def history_needed_s(rules: Sequence[AnyRule], lookback_s: float = LOOKBACK_S) -> float:
    """Seconds of history the rules can read before the evaluation time (the longest range,
    offset and subquery of any rule, plus the lookback)."""
    return max((needed_history_s(r.expr, lookback_s) for r in rules), default=lookback_s)


def fingerprint(name: str, labels: Mapping[str, str]) -> str:
    """Stable dedup key: sha256 of the canonical JSON of name and sorted labels, 32 hex chars.

    The same on every host, restart and Python version (no `hash()`), so two replicas page the
    same PagerDuty incident."""
    canonical = json.dumps([name, sorted(labels.items())], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _compile(
    cfg: RuleConfig, context: Context | None = None
) -> tuple[AnyRule | None, list[tuple[tuple[str, ...], Exception]]]:
    """The rule, or None and every problem as (key path inside the rule, error)."""
    problems: list[tuple[tuple[str, ...], Exception]] = []
    expr: Expr | None = None
    try:
        expr = parse(cfg.expr)
    except ExprError as e:
        problems.append((("expr",), e))
    if expr is not None and expr.kind not in ("vector", "scalar"):
        what = "a range vector" if expr.kind == "matrix" else "a string"
        problems.append(
            (("expr",), ValueError(f"a rule's expression must be an instant vector or a scalar, not {what}"))
        )
    annotations: dict[str, Template] = {}
    keys = {name: (key,) for key, name in SHORTHANDS.items()}
    for name, text in cfg.all_annotations().items():
        key = ("annotations", name) if name in cfg.annotations else keys[name]
        if not _LABEL_NAME.fullmatch(name):
            problems.append((key, ValueError(f"annotation name {name!r} must match [a-zA-Z_][a-zA-Z0-9_]*")))
            continue
        try:
            annotations[name] = compile_template(text)
        except TemplateSyntaxError as e:
            problems.append((key, e))
    for name, value in cfg.labels.items():
        if name in _RESERVED_LABELS and cfg.alert:
            problems.append(
                (("labels",), ValueError(f"label {name!r} is set by the rule's own `{name}:` key, not under labels"))
            )
        elif not _LABEL_NAME.fullmatch(name) or name.startswith("__"):
            problems.append(
                (
                    ("labels",),
                    ValueError(f"label name {name!r} must match [a-zA-Z_][a-zA-Z0-9_]* and not start with '__'"),
                )
            )
        elif "{{" in value:
            problems.append(
                (
                    ("labels",),
                    ValueError(f"label {name}: label values are not templated (only annotations are)"),
                )
            )
    if problems or expr is None:
        return None, problems
    if cfg.record:
        return RecordingRule(record=cfg.record, expr=expr, labels=dict(cfg.labels)), []
    return Rule(
        alert=cfg.alert,
        expr=expr,
        severity=cfg.severity or "",
        for_s=cfg.for_,
        keep_firing_for_s=cfg.keep_firing_for,
        labels=dict(cfg.labels),
        annotations=annotations,
        vendor=cfg.vendor,
        context=context or Context(),
    ), []


def compile_rules(cfg: Config, context: Context | None = None) -> list[AnyRule]:
    """Compile every rule of a loaded config, in file order (recording and alerting rules);
    raise ConfigError listing every problem of every rule.

    An expression error reads `file:line:col: rules[i].expr: <problem> at column N (hint)`, the
    file position pointing at the offending token where that can be worked out (see `locate`).
    `context` is what the annotation templates see besides the series (`$externalURL`).
    """
    rules: list[AnyRule] = []
    errors: list[tuple[tuple[int, int], str]] = []
    lines: list[str] | None = None
    for i, rc in enumerate(cfg.root.rules):
        rule, problems = _compile(rc, context)
        if rule is not None:
            rules.append(rule)
        for key, err in problems:
            if lines is None:
                lines = _source_lines(cfg.path)
            errors.append(_error_at(cfg, lines, ("rules", i, *key), rc, err))
    if errors:
        errors.sort(key=lambda e: e[0])
        raise ConfigError([msg for _, msg in errors])
    return rules


def _error_at(
    cfg: Config, lines: list[str], path: tuple[str | int, ...], rc: RuleConfig, err: Exception
) -> tuple[tuple[int, int], str]:
    line, col = nearest(cfg.positions, path)
    if isinstance(err, (ExprError, TemplateSyntaxError)) and path in cfg.positions:
        key = path[2:]
        text = (
            rc.expr if key == ("expr",) else rc.annotations[str(key[1])] if len(key) == 2 else getattr(rc, str(key[0]))
        )
        line, col = locate(lines, line, col, text, err.position)
    return (line, col), f"{cfg.path.name}:{line}:{col}: {format_path(path)}: {err}"


def _source_lines(path: Path) -> list[str]:
    """The config's lines, to map an expression column to a file column (empty if unreadable)."""
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return []


# ---------------------------------------------------------------- state


@dataclass(frozen=True, slots=True)
class AlertState:
    """One pending or firing alert and its clocks."""

    alert: Alert
    state: str  # "pending" | "firing"
    active_since: datetime  # first evaluation that found it true
    fired_at: datetime | None = None
    keep_firing_since: datetime | None = None  # first false evaluation while firing (keep_firing_for)


@dataclass(frozen=True, slots=True)
class AlertStates:
    """Every pending and firing alert by fingerprint, and when they were last evaluated."""

    alerts: Mapping[str, AlertState] = field(default_factory=dict)
    evaluated_at: datetime | None = None

    def __len__(self) -> int:
        return len(self.alerts)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (datetimes as ISO 8601, non-finite values as strings)."""
        return {
            "version": STATE_VERSION,
            "evaluated_at": _iso(self.evaluated_at),
            "alerts": [
                {
                    "state": st.state,
                    "active_since": _iso(st.active_since),
                    "fired_at": _iso(st.fired_at),
                    "keep_firing_since": _iso(st.keep_firing_since),
                    "name": st.alert.name,
                    "labels": dict(st.alert.labels),
                    "annotations": dict(st.alert.annotations),
                    "severity": st.alert.severity,
                    "value": st.alert.value if math.isfinite(st.alert.value) else repr(st.alert.value),
                    "vendor": st.alert.vendor,
                    "fingerprint": st.alert.fingerprint,
                }
                for st in self.alerts.values()
            ],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AlertStates:
        """Restore what `to_json` wrote; raise ValueError naming what is wrong."""
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"alert state version {data.get('version')!r} is not {STATE_VERSION}")
        alerts: dict[str, AlertState] = {}
        for n, item in enumerate(data.get("alerts", [])):
            try:
                labels = {str(k): str(v) for k, v in item["labels"].items()}
                alert = Alert(
                    name=item["name"],
                    labels=labels,
                    annotations={str(k): str(v) for k, v in item["annotations"].items()},
                    severity=item["severity"],
                    value=float(item["value"]),
                    vendor=item["vendor"],
                    fingerprint=item.get("fingerprint") or fingerprint(item["name"], labels),
                )
                if item["state"] not in (PENDING, FIRING):
                    raise ValueError(f"state {item['state']!r} is not pending or firing")
                active_since = _parse_time(item["active_since"])
                if active_since is None:
                    raise ValueError("active_since is missing")
                st = AlertState(
                    alert,
                    item["state"],
                    active_since,
                    _parse_time(item["fired_at"]),
                    _parse_time(item["keep_firing_since"]),
                )
            except (KeyError, TypeError, AttributeError, ValueError) as e:
                raise ValueError(f"alert state alerts[{n}]: {type(e).__name__}: {e}") from None
            alerts[alert.fingerprint] = st
        return cls(alerts, _parse_time(data.get("evaluated_at")))


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat()


def _parse_time(text: Any) -> datetime | None:
    if text is None:
        return None
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not an ISO 8601 time")
    return datetime.fromisoformat(text)


def firing(state: AlertStates) -> list[Alert]:
    """Firing alerts (keep_firing_for included), sorted by name then fingerprint."""
    return _alerts(state, FIRING)


def pending(state: AlertStates) -> list[Alert]:
    """Alerts whose condition holds but not yet for `for`."""
    return _alerts(state, PENDING)


def _alerts(state: AlertStates, which: str) -> list[Alert]:
    found = [st.alert for st in state.alerts.values() if st.state == which]
    return sorted(found, key=lambda a: (a.name, a.fingerprint))


def alert_samples(state: AlertStates) -> list[Sample]:
    """`portal_alerts{alertname,severity,state}`: how many alerts of each rule are pending/firing."""
    counts: dict[tuple[str, str, str], int] = {}
    for st in state.alerts.values():
        key = (st.alert.name, st.alert.severity, st.state)
        counts[key] = counts.get(key, 0) + 1
    return [
        Sample("portal_alerts", {"alertname": n, "severity": s, "state": st}, float(c))
        for (n, s, st), c in sorted(counts.items())
    ]


# ---------------------------------------------------------------- evaluation


def evaluate(
    rules: Sequence[AnyRule],
    data: History | Sequence[Sample],
    state: AlertStates,
    now: datetime,
    *,
    outage_tolerance: timedelta = OUTAGE_TOLERANCE,
    lookback_s: float = LOOKBACK_S,
    errors: dict[str, str] | None = None,
) -> tuple[AlertStates, list[Transition]]:
    """Evaluate every rule at `now` over the history; return the new state and what changed.

    `data` is the history the expressions read (samples alone are taken as one history point at
    `now`). Recording rules run in file order, and each writes its result into the history at
    `now` (so a later rule reads it, as in a Prometheus rule group); nothing else is written.
    A rule whose evaluation fails (a many-to-many match, duplicate series) leaves its alerts as
    they were, as Prometheus does; `errors`, when given, receives its name and the reason.

    An alert of a check whose last run failed (`portal_check_up{check} 0`) whose series went
    with it is unknown, not over: it keeps its state (firing stays firing, pending keeps its
    timer) until the check answers again. Otherwise a stall paged before Redis stopped would
    be "resolved" to on-call and the vendor while no event has arrived, and paged again after.
    """
    t = now.timestamp()
    if isinstance(data, History):
        history = data
    else:
        history = History(retention_s=lookback_s + 1.0)
        history.append(t, data)
    engine = Engine(history, lookback_s=lookback_s)
    failing = {e.labels.get("check") for e in vector_at(engine, _CHECK_UP, t) if e.value == 0 and "check" in e.labels}
    found: dict[str, tuple[Rule, Alert]] = {}
    failed: set[str] = set()
    recorded = 0
    cycle = engine.cycle(t)  # subexpressions the rules share are computed once
    for rule in rules:
        name = rule.alert if isinstance(rule, Rule) else rule.record
        try:
            value = cycle.instant(rule.expr)
        except EvalError as e:
            if isinstance(rule, Rule):
                failed.add(rule.alert)
            if errors is not None:
                errors[name] = str(e)
            continue
        if isinstance(rule, RecordingRule):
            try:
                out = rule.samples(value if isinstance(value, (Vector, Scalar)) else Vector())
            except EvalError as e:
                out = []
                if errors is not None:
                    errors[name] = str(e)
            history.append(t, out, source=f"record:{recorded}:{rule.record}")
            recorded += 1
            cycle = engine.cycle(t)  # the rules after it read the history with its series
            continue
        for labels, v in _elements(value):
            alert = rule.alert_for(labels, v)
            found.setdefault(alert.fingerprint, (rule, alert))
    rule_of: dict[str, Rule] = {}
    for rule in alert_rules(rules):
        rule_of.setdefault(rule.alert, rule)
    restart_for = state.evaluated_at is not None and now - state.evaluated_at > outage_tolerance

    out_states: dict[str, AlertState] = {}
    transitions: list[Transition] = []
    for fp, st in state.alerts.items():
        hit = found.get(fp)
        if hit is not None:
            rule, alert = hit
            since = now if restart_for and st.state == PENDING else st.active_since
            st = replace(st, alert=alert, active_since=since, keep_firing_since=None)
            if st.state == PENDING and now - st.active_since >= timedelta(seconds=rule.for_s):
                st = replace(st, state=FIRING, fired_at=now)
                transitions.append(Transition(alert, FIRING, now, st.active_since))
            out_states[fp] = st
        elif st.alert.name in failed:
            out_states[fp] = st  # its rule could not be evaluated: nothing is known
        elif (
            st.alert.labels.get("check") in failing
            and st.alert.name in rule_of
            and not _series_present(rule_of[st.alert.name], st.alert, engine, t)
        ):
            out_states[fp] = st  # unknown while its check fails: neither resolved nor advanced
        elif st.state == FIRING:
            keep = rule_of[st.alert.name].keep_firing_for_s if st.alert.name in rule_of else 0.0
            since = st.keep_firing_since or now
            if now - since < timedelta(seconds=keep):
                out_states[fp] = replace(st, keep_firing_since=since)
            else:
                transitions.append(Transition(st.alert, RESOLVED, now, st.active_since))
        # a pending alert that is no longer true just goes: nothing was announced
    for fp, (rule, alert) in found.items():
        if fp in state.alerts:
            continue
        if rule.for_s <= 0:
            out_states[fp] = AlertState(alert, FIRING, now, fired_at=now)
            transitions.append(Transition(alert, FIRING, now, now))
        else:
            out_states[fp] = AlertState(alert, PENDING, now)
            transitions.append(Transition(alert, PENDING, now, now))
    return AlertStates(out_states, now), transitions


_CHECK_UP = parse("portal_check_up")


def vector_at(engine: Engine, expr: Expr, t: float) -> Vector:
    value = engine.instant(expr, t)
    return value if isinstance(value, Vector) else Vector()


def _elements(value: object) -> list[tuple[Mapping[str, str], float]]:
    """An instant result as (labels, value) pairs: a scalar is one element without labels."""
    if isinstance(value, Scalar):
        return [({}, value.value)]
    if isinstance(value, Vector):
        return [(e.labels, e.value) for e in value]
    return []


def _series_present(rule: Rule, alert: Alert, engine: Engine, t: float) -> bool:
    """Whether a series the alert came from is still reported (a failed check may still say a
    component is fine: then the condition is known to be false, not unknown)."""
    root = rule.expr.root
    if isinstance(root, Call) and root.func in ("absent", "absent_over_time"):
        return True  # absent() fires on a missing series: a missing series is no news for it
    tm = round(t * 1000)
    for sel in selected_series(rule.expr):
        for series in engine.history.select(sel.matchers):
            if series.latest(tm, engine.lookback) is None:
                continue
            if all(alert.labels.get(k) == v for k, v in series.labels.items() if k != "__name__"):
                return True
    return False
