"""The path from samples to pages: rules → incidents → outbox, run after every check.

`Alerting.evaluate(now)` is one step: evaluate the rules (recording rules first, in file order)
over the store's history (every check result, and the daemon's own series recorded at most every
`own_every_s`), hand the firing alerts and the transitions to the incidents (which queue the
notifications in the same transaction as the incident change), and wake the outbox. In the
daemon, `step()` does the same with the database work on the state file's writer thread
(`db`, a `monitor.statedb.Runner`): the rules run on the event loop, the incidents off it. The
daemon calls `kick()` whenever a check completes and `run()` evaluates at once (at most every
`min_gap_s`, so a thousand checks finishing in one second cost a few dozen evaluations, not a
thousand) and at least every second, for the `for:` and escalation timers.
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from typing import TypeVar

import structlog

from monitor.clock import utc_now
from monitor.config.model import Config
from monitor.delivery import build_receivers
from monitor.delivery.outbox import Outbox
from monitor.history import History, Matcher
from monitor.httpclient import HttpClient
from monitor.incidents.lifecycle import Incidents
from monitor.model import Alert, Receiver, Sample, Transition
from monitor.rules.engine import (
    LOOKBACK_S,
    AlertStates,
    AnyRule,
    RecordingRule,
    Rule,
    alert_rules,
    alert_samples,
    compile_rules,
    evaluate,
    firing,
    history_needed_by_metric_s,
    no_data_samples,
)
from monitor.rules.promql import Engine, EvalError
from monitor.rules.templates import Context
from monitor.secrets import scrub
from monitor.statedb import Runner, inline
from monitor.store import Store

T = TypeVar("T")

log = structlog.get_logger()

METRICS: dict[str, tuple[str, str]] = {
    "portal_alerts": ("gauge", "alerts by rule, severity and state (pending/firing), as Prometheus' ALERTS"),
    "portal_monitor_rule_evaluations_total": ("counter", "rule evaluations (each also runs the escalation timers)"),
    "portal_monitor_history_samples": ("gauge", "samples kept in the rules' history"),
    "portal_monitor_history_max_samples": ("gauge", "the history's cap (history.max_samples)"),
    "portal_monitor_history_series": ("gauge", "series kept in the rules' history"),
    "portal_monitor_history_retention_seconds": (
        "gauge",
        "how far back the history keeps the metric it keeps longest (what the rules read back of it + 1 h)",
    ),
    "portal_monitor_history_refused_samples_total": ("counter", "samples not kept: over history.max_samples"),
    "portal_alerts_no_data": (
        "gauge",
        "pending/firing alerts whose series is missing from their check's answer (kept by `no_data`), by rule",
    ),
}
# Every label of the series above (the daemon's own: no `check`).
LABELS: dict[str, tuple[str, ...]] = {"portal_alerts": ("alertname", "severity", "state")}
CHART_S = 3600.0  # the incident page charts the last hour
# A metric the rules read back further than this is kept for its own need (`retention_plan`);
# shorter needs, all of them, make the retention of every other metric.
OWN_RETENTION_AFTER_S = 7200.0


def retention_plan(needs: Mapping[str | None, float]) -> tuple[float, dict[str, float]]:
    """The history's retention from what the rules read back per metric (None: selectors without
    a name): a default for every metric, and an entry for each read back further.

    The default covers the lookback, name-less selectors and every need up to
    OWN_RETENTION_AFTER_S; a metric read back further is kept its own need. Each gets the
    incident page's hour on top: its chart evaluates the rule over the last hour."""
    shared = [need for name, need in needs.items() if name is None or need <= OWN_RETENTION_AFTER_S]
    default = max([LOOKBACK_S, *shared]) + CHART_S
    own = {name: need + CHART_S for name, need in needs.items() if name is not None and need + CHART_S > default}
    return default, own


MAX_CHECK_ERROR = 500  # characters of a check's error carried into a page


class Alerting:
    """Owns the rule state, the incidents and the outbox of one daemon."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        cfg: Config,
        samples: Store | Callable[[], Sequence[Sample]],
        *,
        now: Callable[[], datetime] = utc_now,
        external_url: str | None = None,
        receivers: dict[str, Receiver] | None = None,
        http: HttpClient | None = None,
        min_gap_s: float = 0.02,
        save_every_s: float = 15.0,
        check_error: Callable[[str], str] | None = None,
        db: Runner = inline,
        reads: tuple[sqlite3.Connection, Runner] | None = None,
        own_every_s: float = 5.0,
        trim_every_s: float = 60.0,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._check_error = check_error
        self._secrets = cfg.secrets
        # A Store: its history holds every check result at the time it was produced. A bare
        # sample source (tests, `once`): its samples are written into a history of our own at
        # every evaluation.
        self.store = samples if isinstance(samples, Store) else None
        self._samples = samples.samples if isinstance(samples, Store) else samples
        self.history = self.store.history if self.store is not None else History()
        self.history.max_samples = cfg.root.history.max_samples
        self._own_every_s = own_every_s
        self._own_at: float | None = None
        self._trim_every_s = trim_every_s
        self._trimmed_at: float | None = None
        self._fed: set[str] = set()
        self.rule_errors: dict[str, str] = {}  # rule name -> why its last evaluation failed
        # The last evaluation's duration (s): per rule in `rules` order, and the group's (all of
        # `evaluate`), as Prometheus's /api/v1/rules reports them in `evaluationTime`.
        self.rule_times: list[float] = []
        self.group_time = 0.0
        self._timer = timer
        self._now = now
        self._min_gap_s = min_gap_s
        self._save_every_s = save_every_s
        self.host = socket.gethostname()
        self.external_url = external_url
        self.http = http
        self.rules: list[AnyRule] = compile_rules(cfg, Context(external_url=external_url or ""))
        self.set_retention()
        self.incidents = Incidents(conn, cfg, now=now)
        self.db = db  # runs what uses `conn` (self.incidents, the outbox's rows): the writer thread
        # Reads for the API and the status page: a reader connection on its own thread, if given.
        self._reader, self._read = (Incidents(reads[0], cfg, now=now), reads[1]) if reads else (self.incidents, db)
        self.state = self._restore_state()
        self.receivers = receivers if receivers is not None else self._build_receivers(cfg)
        self.outbox = Outbox(conn, self.receivers, now=now, db=db)
        self.outbox_wake = asyncio.Event()
        self._kick = asyncio.Event()
        self._saved_at: datetime | None = None
        self._holds = 0  # > 0 while a reload changes checks and rules: no evaluation meanwhile
        self._no_data_logged: set[str] = set()
        self.evaluations = 0
        self._rules_s = 0.0  # how long the last evaluation's rules took on the event loop
        # The series read from the file (open incidents, queue depth), refreshed by each step on
        # the writer thread, so /metrics never queries SQLite on the event loop. None: query.
        self._stored: list[Sample] | None = None if db is inline else self._stored_samples()

    def _build_receivers(self, cfg: Config) -> dict[str, Receiver]:
        return build_receivers(
            cfg.root.receivers, host=self.host, external_url=self.external_url, disabled=cfg.disabled, http=self.http
        )

    def _restore_state(self) -> AlertStates:
        saved = self.incidents.load_alert_states()
        if not saved:
            return AlertStates()
        try:
            import orjson

            return AlertStates.from_json(orjson.loads(saved))
        except ValueError as e:
            log.warning("alert_state_not_restored", error=str(e))
            return AlertStates()

    # -------------------------------------------------------------- one step

    def evaluate(self, now: datetime | None = None) -> int:
        """Evaluate every rule once; return how many notifications were queued."""
        now = now or self._now()
        transitions, record, save = self._rules_step(now)
        return self._recorded(now, transitions, record(), save)

    async def step(self, now: datetime | None = None) -> int:
        """`evaluate()` with the incidents' transaction on `db` (the writer thread)."""
        now = now or self._now()
        transitions, record, save = self._rules_step(now)

        def record_and_refresh() -> int:
            queued = record()
            self._stored = self._stored_samples()
            return queued

        return self._recorded(now, transitions, await self.db(record_and_refresh), save)

    def _rules_step(self, now: datetime) -> tuple[list[Transition], Callable[[], int], bool]:
        """The rules (on the caller's thread) and the incidents' update they call for (to run)."""
        started = time.perf_counter()
        self._feed(now.timestamp())
        errors: dict[str, str] = {}
        timings: list[float] = []
        began = self._timer()
        self.state, transitions = evaluate(
            self.rules, self.history, self.state, now, errors=errors, timings=timings, timer=self._timer
        )
        self.group_time = self._timer() - began
        self.rule_times = timings
        for name, error in errors.items():
            if self.rule_errors.get(name) != error:
                log.error("rule_evaluation_failed", rule=name, error=error, kept="the rule's alerts as they were")
        self.rule_errors = errors
        transitions = [
            replace(t, alert=self._with_check_error(t.alert)) if t.state == "firing" else t for t in transitions
        ]
        self.evaluations += 1
        save = (
            bool(transitions) or self._saved_at is None or (now - self._saved_at).total_seconds() >= self._save_every_s
        )
        quiet = {fp for fp, st in self.state.alerts.items() if st.keep_firing_since is not None}
        live = [self._with_check_error(a) for a in firing(self.state)]
        states = self.state.to_json() if save else None
        self._rules_s = time.perf_counter() - started

        def record() -> int:
            return self.incidents.update(live, transitions, now, alert_states=states, quiet=quiet)

        return list(transitions), record, save

    def _recorded(self, now: datetime, transitions: Sequence[Transition], queued: int, save: bool) -> int:
        if save:
            self._saved_at = now
        for t in transitions:
            if t.state != "pending":
                log.info(
                    "alert_" + t.state,
                    alertname=t.alert.name,
                    severity=t.alert.severity,
                    dedup_key=t.alert.fingerprint,
                    labels=dict(t.alert.labels),
                    **({"reason": t.reason} if t.reason else {}),
                )
        for st in self.state.alerts.values():
            a = st.alert
            if a.no_data_since is not None and a.fingerprint not in self._no_data_logged:
                log.warning("alert_no_data", alertname=a.name, state=st.state, dedup_key=a.fingerprint, why=a.no_data)
        self._no_data_logged = {
            st.alert.fingerprint for st in self.state.alerts.values() if st.alert.no_data_since is not None
        }
        if queued:
            self.outbox_wake.set()
        return queued

    def _with_check_error(self, alert: Alert) -> Alert:
        """A firing alert on a check that is failing now carries the check's error (`check_error`),
        so the page says "HTTP 503 (components down: cache)", not only "the portal is down"."""
        check = alert.labels.get("check")
        if not check or self._check_error is None:
            return alert
        error = scrub(self._check_error(check), self._secrets)
        if not error:
            return alert
        return replace(alert, annotations={**alert.annotations, "check_error": error[:MAX_CHECK_ERROR]})

    def _feed(self, t: float) -> None:
        """The daemon's own series into the history (at most every `own_every_s`), and old
        samples out of it (every `trim_every_s`)."""
        if self.store is not None:
            if self._own_at is None or t - self._own_at >= self._own_every_s or t < self._own_at:
                self.store.record_own(t)
                self._own_at = t
        else:
            by_check: dict[str, list[Sample]] = {}
            for s in self._samples():
                by_check.setdefault(s.labels.get("check", ""), []).append(s)
            for source in self._fed - by_check.keys():
                by_check[source] = []
            for source, samples in by_check.items():
                self.history.append(t, samples, source=source)
            self._fed = set(by_check)
        if self._trimmed_at is None or t - self._trimmed_at >= self._trim_every_s or t < self._trimmed_at:
            self.history.trim(t)
            self._trimmed_at = t

    def set_retention(self) -> None:
        """Keep in the history, per metric, what the rules read back of it (`retention_plan`)."""
        default, by_name = retention_plan(history_needed_by_metric_s(self.rules, LOOKBACK_S))
        self.history.retention_s, self.history.retention_by_name = default, by_name

    def alert_rules(self) -> list[Rule]:
        return alert_rules(self.rules)

    def recorded_samples(self) -> list[Sample]:
        """The recording rules' current series (for /metrics): their values at the last evaluation."""
        if self.state.evaluated_at is None:
            return []
        t = round(self.state.evaluated_at.timestamp() * 1000)
        out: list[Sample] = []
        seen: set[str] = set()
        for rule in self.rules:
            if not isinstance(rule, RecordingRule) or rule.record in seen:
                continue
            seen.add(rule.record)
            for series in self.history.select([Matcher.of("__name__", "=", rule.record)]):
                got = series.latest(t, 1)
                if got is not None:
                    labels = {k: v for k, v in series.labels.items() if k != "__name__"}
                    out.append(Sample(rule.record, labels, got[1]))
        return out

    def series_window(
        self, labels: Mapping[str, str], start: float, end: float, points: int = 240
    ) -> list[tuple[float, float]]:
        """The alert's rule evaluated as a range query over [start, end] (about `points` steps)
        from the history: the points of the series whose labels the alert carries."""
        rule = next((r for r in self.alert_rules() if r.alert == labels.get("alertname")), None)
        if rule is None or end <= start:
            return []
        step = max((end - start) / points, 1.0)
        try:
            matrix = Engine(self.history, lookback_s=LOOKBACK_S).range(rule.expr, start, end, step)
        except EvalError:
            return []
        for series in matrix:
            if all(labels.get(k) == v for k, v in series.labels.items() if k != "__name__"):
                return list(series.points)
        return []

    # -------------------------------------------------------------- running

    def kick(self) -> None:
        """A check finished: evaluate soon."""
        self._kick.set()

    async def run(self, ready: Callable[[], bool]) -> None:
        """Evaluate after every kick (coalesced) and at least every second, once `ready()`:
        before every check has run once the rules would see missing series and resolve
        incidents that are still open."""
        while True:
            try:
                async with asyncio.timeout(1.0):
                    await self._kick.wait()
            except TimeoutError:
                pass
            self._kick.clear()
            if not ready() or self._holds:
                continue
            try:
                await self.step()
            except Exception:  # a bug here must not stop the checks or the metrics
                log.exception("evaluation_failed")
            # Paced by the event loop's share (the rules), not by time spent waiting for the file.
            await asyncio.sleep(max(self._min_gap_s, 4 * self._rules_s))

    @contextmanager
    def held(self) -> Iterator[None]:
        """No evaluation runs inside: a reload removes and re-adds checks one by one (each
        removal awaits the check's task), and an evaluation between two of them would see the
        changed checks' series missing, resolve their alerts and page them again afterwards."""
        self._holds += 1
        try:
            yield
        finally:
            self._holds -= 1
            self.kick()

    def swap_config(self, cfg: Config) -> dict[str, Receiver]:
        """After a reload: rules swapped in one assignment, routing and receivers replaced;
        return the replaced receivers (for `retire_receivers`). Alert states stay: an alert
        whose rule is gone resolves at the next evaluation ("closed: rule removed by reload")."""
        rules = compile_rules(cfg, Context(external_url=self.external_url or ""))
        old_receivers = self.receivers
        self.receivers = self._build_receivers(cfg)
        self.rules = rules
        self._secrets = cfg.secrets
        self.set_retention()
        self.history.max_samples = cfg.root.history.max_samples
        self.incidents.set_config(cfg)
        self._reader.set_config(cfg)
        self.outbox.set_receivers(self.receivers)
        self.kick()
        return old_receivers

    async def retire_receivers(self, old: Mapping[str, Receiver]) -> None:
        """Close receivers a reload replaced once their in-flight sends have finished (each
        waited for at most its send timeout): the outbox already hands every new attempt to
        the new ones, and a send cut short is retried there, so nothing is lost."""
        unfinished = await self.outbox.retire(old.values())
        if unfinished:
            log.warning("receivers_closed_mid_send", receivers=unfinished, note="those rows are retried")
        for r in old.values():
            try:
                await r.aclose()
            except Exception as e:
                log.warning("receiver_close_failed", receiver=r.name, error=f"{type(e).__name__}: {e}")

    async def set_config(self, cfg: Config) -> None:
        """`swap_config` then `retire_receivers`."""
        await self.retire_receivers(self.swap_config(cfg))

    async def query(self, fn: Callable[[Incidents], T]) -> T:
        """Run a read (`fn(incidents)`) on the reader thread, or inline without one."""
        reader = self._reader
        result: T = await self._read(lambda: fn(reader))
        return result

    def _stored_samples(self) -> list[Sample]:
        return [*self.incidents.samples(), *self.outbox.queue_samples()]

    def open_counts(self) -> dict[str, int]:
        """Open incidents by severity, as `portal_incidents_open` last showed them."""
        stored = self._stored if self._stored is not None else self.incidents.samples()
        return {s.labels["severity"]: int(s.value) for s in stored if s.name == "portal_incidents_open"}

    def samples(self) -> list[Sample]:
        evaluations = Sample("portal_monitor_rule_evaluations_total", {}, float(self.evaluations))
        stored = self._stored if self._stored is not None else self._stored_samples()
        h = self.history
        return [
            *alert_samples(self.state),
            *no_data_samples(self.state),
            evaluations,
            *stored,
            *self.outbox.delivery_samples(),
            Sample("portal_monitor_history_samples", {}, float(h.sample_count)),
            Sample("portal_monitor_history_max_samples", {}, float(h.max_samples)),
            Sample("portal_monitor_history_series", {}, float(h.series_count)),
            Sample("portal_monitor_history_retention_seconds", {}, h.longest_retention_s),
            Sample("portal_monitor_history_refused_samples_total", {}, float(h.refused)),
        ]

    async def aclose(self) -> None:
        for r in self.receivers.values():
            try:
                await r.aclose()
            except Exception as e:
                log.warning("receiver_close_failed", receiver=r.name, error=f"{type(e).__name__}: {e}")
