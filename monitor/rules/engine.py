"""The rule engine: `evaluate(rules, samples, state, now) -> (state, transitions)`, a pure function.

No clock reads (but the durations `timings` asks for), no I/O: time is the `now` argument, so
`for`, `keep_firing_for` and flapping are tested with explicit datetimes, and the daemon persists
`AlertStates.to_json()` so that a restart neither re-pages nor forgets to resolve.

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
  set resolves, saying so ("closed: rule removed by reload", "closed: rule changed by
  reload"): a resolve is never lost because the config changed, and never passes for a fix.
- No data is not "resolved". An alert the rules no longer find is looked up among the series
  its expression reads on the present samples (`monitor.rules.promql.inputs.input_series`, the
  expression with its comparisons made `bool`): there, its condition is false on present data and it resolves as
  above; missing, its series is gone (a deleted Redis key, a vanished log file, a health
  component dropped from the JSON) and the rule's `no_data` policy decides:
  `keep` (default): a firing alert stays firing, marked "no data since T (why)", until its
  series is back (then its condition decides) or `no_data_timeout` (default 1h) has passed,
  when it resolves with "closed: no data for 1h"; `resolve`: it resolves at once (after
  `keep_firing_for`), with "closed: no data (why)"; `alert`: as `keep`, and a firing
  `DatasourceNoData` alert (labels: the alert's, `alertname` DatasourceNoData, `rulename` the
  rule's, no `vendor`) says so, as Grafana does, until the series is back or the alert closes.
  A pending alert without data stays pending (its `for` does not advance) and goes silently
  at the timeout. An alert of a failed check (`portal_check_up 0`) is unknown, not missing:
  it keeps its state without a timeout until the check answers again. The policy applies to
  series of a check that answered (`portal_check_up{check} 1`); a series of no running check
  (the daemon's own `portal_monitor_*`, a check no longer configured, promtool-style test
  input) that disappears resolves after `keep_firing_for` as in Prometheus, with "closed: no
  data (why)", so `test-rules` and promtool agree.
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
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from monitor.config.fields import format_duration
from monitor.config.loader import runnable_errors
from monitor.config.model import DEFAULT_NO_DATA_TIMEOUT, SHORTHANDS, Config, Defaults, RuleConfig
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
    needed_history_by_metric_s,
    parse,
    selected_series,
)
from monitor.rules.promql.inputs import input_series
from monitor.rules.templates import Context, Template, TemplateError, compile_template, render

PENDING = "pending"
FIRING = "firing"
RESOLVED = "resolved"
OUTAGE_TOLERANCE = timedelta(hours=1)
STATE_VERSION = 2  # 2: no-data marks, the rule's expression and DatasourceNoData origins (1 still loads)
NO_DATA_ALERT = "DatasourceNoData"
KEEP, RESOLVE, ALERT = "keep", "resolve", "alert"
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
    no_data: str = KEEP  # keep | resolve | alert
    no_data_timeout_s: float = DEFAULT_NO_DATA_TIMEOUT

    @classmethod
    def from_config(cls, cfg: RuleConfig, defaults: Defaults | None = None) -> Rule:
        """Compile one rule; raise the first problem (ExprError, TemplateError or ValueError)."""
        rule, problems = _compile(cfg, defaults=defaults)
        if rule is None:
            raise problems[0][1]
        if not isinstance(rule, Rule):
            raise ValueError(f"{cfg.record!r} is a recording rule, not an alerting rule")
        return rule

    def alert_for(self, series: Mapping[str, str], value: float) -> Alert:
        """The alert for one matching series. Templates see the series' labels, as in Prometheus;
        the metric name is not an alert label."""
        series = {k: v for k, v in series.items() if k != "__name__"}
        labels = self.labels_for(series)
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

    def labels_for(self, series: Mapping[str, str]) -> dict[str, str]:
        """The alert's labels for one series: the series', the rule's, alertname, severity, vendor."""
        labels = {**{k: v for k, v in series.items() if k != "__name__"}, **self.labels}
        labels.update(alertname=self.alert, severity=self.severity)
        if self.vendor:
            labels["vendor"] = self.vendor
        return labels

    def made(self, alert: Alert) -> bool:
        """Whether this rule, as it is now, produces alerts like `alert` (name, rule labels,
        severity, vendor): false once a reload removed, renamed or relabelled the rule."""
        return (
            alert.name == self.alert
            and alert.severity == self.severity
            and alert.vendor == self.vendor
            and all(alert.labels.get(k) == v for k, v in self.labels.items())
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


def history_needed_by_metric_s(rules: Sequence[AnyRule], lookback_s: float = LOOKBACK_S) -> dict[str | None, float]:
    """Seconds of history the rules can read before the evaluation time, per metric name (the
    longest of any rule; None: selectors without a name, whose need applies to every series)."""
    needs: dict[str | None, float] = {}
    for rule in rules:
        for name, need in needed_history_by_metric_s(rule.expr, lookback_s).items():
            needs[name] = max(need, needs.get(name, 0.0))
    return needs


def fingerprint(name: str, labels: Mapping[str, str]) -> str:
    """Stable dedup key: sha256 of the canonical JSON of name and sorted labels, 32 hex chars.

    The same on every host, restart and Python version (no `hash()`), so two replicas page the
    same PagerDuty incident."""
    canonical = json.dumps([name, sorted(labels.items())], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _compile(
    cfg: RuleConfig, context: Context | None = None, defaults: Defaults | None = None
) -> tuple[AnyRule | None, list[tuple[tuple[str, ...], Exception]]]:
    """The rule, or None and every problem as (key path inside the rule, error)."""
    defaults = defaults or Defaults()
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
        except TemplateError as e:
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
        no_data=cfg.no_data or defaults.no_data,
        no_data_timeout_s=cfg.no_data_timeout if cfg.no_data_timeout is not None else defaults.no_data_timeout,
    ), []


def require_runnable_rules(cfg: Config) -> None:
    """What `run` and `check-config` refuse: every rule error (`compile_rules`) and every problem
    that makes a valid file unfit to run (`runnable_errors`), together in one ConfigError."""
    errors: list[str] = []
    try:
        compile_rules(cfg)
    except ConfigError as e:
        errors += e.errors
    errors += runnable_errors(cfg)
    if errors:
        raise ConfigError(errors)


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
        rule, problems = _compile(rc, context, cfg.root.defaults)
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
    if isinstance(err, ExprError) and path in cfg.positions:
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
    expr: str = ""  # the rule's expression when it was last evaluated ('' from a version-1 state)
    no_data_of: str | None = None  # a DatasourceNoData alert: the fingerprint of the alert without data


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
                    "expr": st.expr,
                    "no_data_of": st.no_data_of,
                    "no_data_since": _iso(st.alert.no_data_since),
                    "no_data_why": st.alert.no_data_why,
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
        if data.get("version") not in (1, STATE_VERSION):
            raise ValueError(f"alert state version {data.get('version')!r} is not 1 or {STATE_VERSION}")
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
                    no_data_since=_parse_time(item.get("no_data_since")),
                    no_data_why=str(item.get("no_data_why") or ""),
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
                    str(item.get("expr") or ""),
                    item.get("no_data_of"),
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


def no_data_samples(state: AlertStates) -> list[Sample]:
    """`portal_alerts_no_data{alertname,severity}`: alerts kept while their series is missing."""
    counts: dict[tuple[str, str], int] = {}
    for st in state.alerts.values():
        if st.alert.no_data_since is not None and st.no_data_of is None:
            key = (st.alert.name, st.alert.severity)
            counts[key] = counts.get(key, 0) + 1
    return [
        Sample("portal_alerts_no_data", {"alertname": n, "severity": s}, float(c))
        for (n, s), c in sorted(counts.items())
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
    timings: list[float] | None = None,
    timer: Callable[[], float] = time.perf_counter,
) -> tuple[AlertStates, list[Transition]]:
    """Evaluate every rule at `now` over the history; return the new state and what changed.

    `data` is the history the expressions read (samples alone are taken as one history point at
    `now`). Recording rules run in file order, and each writes its result into the history at
    `now` (so a later rule reads it, as in a Prometheus rule group); nothing else is written.
    A rule whose evaluation fails (a many-to-many match, duplicate series) leaves its alerts as
    they were, as Prometheus does; `errors`, when given, receives its name and the reason.
    `timings`, when given, receives each rule's evaluation time in seconds (`timer` differences),
    in rule order: Prometheus's per-rule `evaluationTime` (a subexpression shared with an earlier
    rule is computed once, by the first rule that needs it).

    An alert the rules no longer find resolves only when its condition is false on present
    data; a missing series of a check that answered follows the rule's `no_data` policy
    (module docstring). An alert of a check whose last run failed (`portal_check_up{check} 0`)
    whose series went with it is unknown, not over: it keeps its state (firing stays firing, pending keeps its
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
    up = [e for e in vector_at(engine, _CHECK_UP, t) if "check" in e.labels]
    failing: set[str | None] = {e.labels.get("check") for e in up if e.value == 0}
    reporting: set[str | None] = {e.labels.get("check") for e in up}
    found: dict[str, tuple[Rule, Alert]] = {}
    failed: set[str] = set()
    recorded = 0
    cycle = engine.cycle(t)  # subexpressions the rules share are computed once
    for rule in rules:
        began = timer()
        try:
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
        finally:
            if timings is not None:
                timings.append(timer() - began)
    by_name: dict[str, list[Rule]] = {}
    for rule in alert_rules(rules):
        by_name.setdefault(rule.alert, []).append(rule)
    with_data = _WithData(engine, t)
    restart_for = state.evaluated_at is not None and now - state.evaluated_at > outage_tolerance

    out_states: dict[str, AlertState] = {}
    transitions: list[Transition] = []
    closed: dict[str, str] = {}  # fingerprint -> the reason it resolved (for its DatasourceNoData)

    def resolve(st: AlertState, reason: str = "") -> None:
        transitions.append(Transition(st.alert, RESOLVED, now, st.active_since, reason))
        closed[st.alert.fingerprint] = reason

    for fp, st in state.alerts.items():
        if st.no_data_of is not None:
            continue  # DatasourceNoData: follows its alert, below
        hit = found.get(fp)
        if hit is not None:
            rule, alert = hit
            since = now if restart_for and st.state == PENDING else st.active_since
            st = replace(st, alert=alert, active_since=since, keep_firing_since=None, expr=rule.expr.text)
            if st.state == PENDING and now - st.active_since >= timedelta(seconds=rule.for_s):
                st = replace(st, state=FIRING, fired_at=now)
                transitions.append(Transition(alert, FIRING, now, st.active_since))
            out_states[fp] = st
            continue
        if st.alert.name in failed:
            out_states[fp] = st  # its rule could not be evaluated: nothing is known
            continue
        current = next((r for r in by_name.get(st.alert.name, ()) if r.made(st.alert)), None)
        if current is None:
            if st.state == FIRING:
                gone = st.alert.name not in by_name
                resolve(st, "closed: rule removed by reload" if gone else "closed: rule changed by reload")
            continue
        present = fp in with_data.of(current)
        if not present and st.alert.labels.get("check") in failing:
            out_states[fp] = st  # unknown while its check fails: neither resolved nor advanced
            continue
        answered = st.alert.labels.get("check") in reporting  # its check ran and answered without it
        if present or st.keep_firing_since is not None or current.no_data == RESOLVE or not answered:
            # false on present data (or known false before the data went, `no_data: resolve`, or a
            # series of no running check: the daemon's own, or a check no longer configured)
            if st.state == FIRING:
                alert = st.alert
                if present:
                    alert = _with_data(alert)
                elif st.keep_firing_since is None:  # `no_data: resolve`, the data has just gone
                    alert = replace(alert, no_data_since=now, no_data_why=_why(current, alert, reporting))
                since = st.keep_firing_since or now
                if now - since < timedelta(seconds=current.keep_firing_for_s):
                    out_states[fp] = replace(st, alert=alert, keep_firing_since=since)
                elif not present and alert.no_data_since is not None:
                    resolve(st, f"closed: no data ({alert.no_data_why})")
                else:
                    resolve(st)
            continue  # a pending alert that is no longer true just goes: nothing was announced
        if st.expr and st.expr != current.expr.text:
            # a reload changed the expression so that it no longer reads this series
            if st.state == FIRING:
                resolve(st, "closed: rule changed by reload")
            continue
        no_data_since = st.alert.no_data_since or now
        if now - no_data_since >= timedelta(seconds=current.no_data_timeout_s):
            if st.state == FIRING:
                resolve(st, f"closed: no data for {format_duration(current.no_data_timeout_s)}")
            continue
        why = st.alert.no_data_why or _why(current, st.alert, reporting)
        out_states[fp] = replace(
            st, alert=replace(st.alert, no_data_since=no_data_since, no_data_why=why), expr=current.expr.text
        )

    for fp, (rule, alert) in found.items():
        if fp in state.alerts:
            continue
        if rule.for_s <= 0:
            out_states[fp] = AlertState(alert, FIRING, now, fired_at=now, expr=rule.expr.text)
            transitions.append(Transition(alert, FIRING, now, now))
        else:
            out_states[fp] = AlertState(alert, PENDING, now, expr=rule.expr.text)
            transitions.append(Transition(alert, PENDING, now, now))

    _no_data_alerts(alert_rules(rules), state, out_states, closed, transitions, now)
    return AlertStates(out_states, now), transitions


class _WithData:
    """Per rule, the fingerprints of the alerts whose input series are present (computed once
    per rule and evaluation, when an alert needs it)."""

    def __init__(self, engine: Engine, t: float) -> None:
        self._engine = engine
        self._t = t
        self._of: dict[int, set[str]] = {}

    def of(self, rule: Rule) -> set[str]:
        key = id(rule)
        if key not in self._of:
            self._of[key] = {
                fingerprint(rule.alert, rule.labels_for(labels))
                for labels in input_series(self._engine, rule.expr, self._t)
            }
        return self._of[key]


def _with_data(alert: Alert) -> Alert:
    return alert if alert.no_data_since is None else replace(alert, no_data_since=None, no_data_why="")


def _why(rule: Rule, alert: Alert, reporting: set[str | None]) -> str:
    """Why an alert has no data: which check answered without which series."""
    own = {*rule.labels, *_RESERVED_LABELS, "check"}
    shown = ",".join(f'{k}="{v}"' for k, v in sorted(alert.labels.items()) if k not in own)
    names = [n for n in dict.fromkeys(sel.metric for sel in selected_series(rule.expr)) if n]
    series = "/".join(names) + (f"{{{shown}}}" if shown else "")
    check = alert.labels.get("check")
    if check is None:
        return f"{series} is no longer reported"
    if check not in reporting:
        return f"check {check} no longer runs"
    return f"check {check} answered without {series}"


def no_data_alert(origin: Alert) -> Alert:
    """The DatasourceNoData alert of a firing alert without data (`no_data: alert`)."""
    labels = {k: v for k, v in origin.labels.items() if k != "vendor"}
    labels.update(alertname=NO_DATA_ALERT, rulename=origin.name)
    shown = ", ".join(f"{k}={v}" for k, v in sorted(origin.labels.items()) if k not in (*_RESERVED_LABELS, "rulename"))
    return Alert(
        name=NO_DATA_ALERT,
        labels=labels,
        annotations={
            "summary": f"No data for {origin.name}" + (f" ({shown})" if shown else "") + f": {origin.no_data_why}",
            "description": (
                f"{origin.name} fired and its series has since gone missing: {origin.no_data}. "
                f"{origin.name} stays firing until its series is back or its no_data_timeout ends.\n"
                "1. portal-monitor once -c alert_rules.yaml (what each check reports now)\n"
                "2. Find why the series is gone (a deleted key, a moved log file, a component missing "
                "from the health reply) and whether the fault it measured is over."
            ),
        },
        severity=origin.severity,
        value=1.0,
        vendor=None,
        fingerprint=fingerprint(NO_DATA_ALERT, labels),
        no_data_since=origin.no_data_since,
        no_data_why=origin.no_data_why,
    )


def _no_data_alerts(
    rules: Sequence[Rule],
    before: AlertStates,
    out: dict[str, AlertState],
    closed: Mapping[str, str],
    transitions: list[Transition],
    now: datetime,
) -> None:
    """DatasourceNoData for every firing alert without data of a `no_data: alert` rule; one
    whose alert has data again, or closed, resolves (with the alert's reason)."""
    policy = {r.alert: r.no_data for r in rules}
    wanted: dict[str, tuple[Alert, str]] = {}
    for fp, st in out.items():
        if st.state == FIRING and st.alert.no_data_since is not None and policy.get(st.alert.name) == ALERT:
            nd = no_data_alert(st.alert)
            wanted[nd.fingerprint] = (nd, fp)
    for fp, st in before.alerts.items():
        if st.no_data_of is None:
            continue
        if fp in wanted:
            out[fp] = replace(st, alert=wanted.pop(fp)[0])
        elif st.state == FIRING:
            transitions.append(Transition(st.alert, RESOLVED, now, st.active_since, closed.get(st.no_data_of, "")))
    for fp, (nd, origin) in wanted.items():
        out[fp] = AlertState(nd, FIRING, now, fired_at=now, no_data_of=origin)
        transitions.append(Transition(nd, FIRING, now, now))


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
