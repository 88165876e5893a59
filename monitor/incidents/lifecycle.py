"""Incidents: open on firing, close on resolve; the escalation matrix, re-notify, inhibition,
silences, acknowledge and resolve by hand. Everything lives in SQLite, nothing in memory.

`update()` runs after every rule evaluation with the firing alerts and the transitions; it
decides from the stored state and `now` (never the clock) and writes each incident change
with its outbox rows in ONE transaction, so a crash leaves either both or neither. Because
the state is in the file, a restart (or a second `Incidents` on the same file) never pages
twice for an open incident, keeps its escalation timers, and still sends the resolve.

(About 440 lines, over the ~400 guideline, because a quarter of them are the decisions below;
the pure parts already live beside it: routing in `routing.py`, rows in `records.py`, reads in
`views.py`, silences in `silences.py`.)

Decisions, documented because a reader would ask:
- The dedup key is `Alert.fingerprint`; one open incident per key.
- Routing is the `escalation:` list. A step is due at `fired_at + after`; when due, each of
  its receivers (or its `fallback` when none is enabled) gets a `trigger` at that level, once.
  A P1/P2 whose page every receiver of the step has failed for `fallback_after` goes to the
  step's `fallback` as well, once; an alert about a receiver (`receiver` label) avoids every
  failing receiver (`routing.avoided`, `routing.fallback_receivers`).
  Acknowledging does NOT stop escalation: the runbook escalates what is "not resolved in
  30 minutes"; only a resolve does.
- Receivers other than PagerDuty hear again (`renotify`) at the severity's cadence while the
  incident is open, with status "acknowledged" once acked. PagerDuty never gets a repeat.
- Inhibition and silences hold back triggers and re-notifications, not the incident (it opens
  and counts in `portal_incidents_open`). What they held back is sent once they stop holding
  and the alert still fires. A resolve (and an acknowledge) is always sent to every receiver
  that got a trigger, silenced or not.
- A resolve carries its reason when it is not "the condition cleared": the engine's
  ("closed: no data for 1h", "closed: rule removed by reload") reaches the timeline, the
  log and every receiver's text (`Notification.closed_reason`); like every resolve it goes
  only to the receivers that got a trigger.
- An alert kept firing without data ("no data since T (why)") updates the incident's stored
  alert as the mark comes and goes, so the status page and the API show it.
- A resolve by hand while the alert still fires does not re-open the incident at once: the key
  is held until the alert has been seen not firing once, then a new firing is a new incident.
  Re-paging a second after a person closed it would be the surprise; the alert still shows in
  `portal_alerts` meanwhile.

All mutating methods return how many notifications they queued: the caller sets the
outbox's `wake` event when it is not zero.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import orjson
import structlog

from monitor.clock import utc_now
from monitor.config.fields import format_duration
from monitor.config.model import Config, EscalationStep
from monitor.incidents import deliveries, routing, views
from monitor.incidents.records import add_timeline, enqueue, iso, stored_alert_json, transaction
from monitor.incidents.silences import SilenceEntry, Silences
from monitor.incidents.views import IncidentView
from monitor.model import Alert, Notification, Sample, Transition

log = structlog.get_logger()

METRICS: dict[str, tuple[str, str]] = {
    "portal_incidents_open": ("gauge", "open incidents by severity (held-back ones included)")
}
# Every label of the series above (the daemon's own: no `check`).
LABELS: dict[str, tuple[str, ...]] = {"portal_incidents_open": ("severity",)}


class Incidents:
    """The incident store and the routing decisions over it (see the module docstring).

    `conn` comes from `monitor.statedb.open_db`, which created the tables."""

    def __init__(self, conn: sqlite3.Connection, cfg: Config, *, now: Callable[[], datetime] = utc_now) -> None:
        self._conn = conn
        self._cfg = cfg
        self._now = now  # only for read-only queries (metrics, active silences); decisions take `now`
        self.silences = Silences(conn)
        self._warned: set[tuple[int, str]] = set()

    def set_config(self, cfg: Config) -> None:
        """After a reload: new routing, receivers, inhibit rules and cadences apply at once."""
        self._cfg = cfg

    # ---------------------------------------------------------------- the evaluation hook

    def update(
        self,
        firing: Sequence[Alert],
        transitions: Sequence[Transition],
        now: datetime,
        *,
        alert_states: str | Mapping[str, Any] | None = None,
        quiet: Collection[str] = (),
    ) -> int:
        """Apply one rule evaluation; return the number of notifications queued.

        `quiet`: fingerprints of alerts whose condition is false but that `keep_firing_for`
        still keeps firing (see `_route`).

        `alert_states` (the engine's `AlertStates.to_json()`) is saved in the same transaction,
        so the engine's `for` timers and the incidents can never disagree after a crash.
        """
        live = {a.fingerprint: a for a in firing}
        with transaction(self._conn):
            queued = 0
            holds = {k for (k,) in self._conn.execute("SELECT dedup_key FROM manual_holds")}
            for t in transitions:
                key = t.alert.fingerprint
                if t.state == "firing" and key not in holds:
                    self._open(t.alert, t.at, t.active_since)
                elif t.state == "resolved":
                    inc = self._find_open(key)
                    if inc is not None:
                        queued += self._close(inc, t.at, None, t.reason or "alert resolved", now, closed=t.reason)
            for key in holds - live.keys():
                self._conn.execute("DELETE FROM manual_holds WHERE dedup_key = ?", (key,))
            for key, alert in live.items():  # a firing alert without incident (e.g. lost transition)
                if key not in holds:
                    self._open(alert, now, now)
            queued += self._route(live, now, quiet)
            if alert_states is not None:
                self._save_states(alert_states, now)
        return queued

    def _select(self, where: str, args: tuple[Any, ...] = ()) -> list[IncidentView]:
        return views.select(self._conn, where, args)

    def _find_open(self, key: str) -> IncidentView | None:
        found = self._select("dedup_key = ? AND state = 'open'", (key,))
        return found[0] if found else None

    def _open(self, alert: Alert, fired_at: datetime, detected_at: datetime) -> None:
        if self._find_open(alert.fingerprint) is not None:
            return  # one open incident per dedup key: a second firing pages nobody
        cur = self._conn.execute(
            "INSERT INTO incidents (dedup_key, alertname, severity, vendor, alert, detected_at, fired_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                alert.fingerprint,
                alert.name,
                alert.severity,
                alert.vendor,
                stored_alert_json(alert, _columns(alert)),
                iso(detected_at),
                iso(fired_at),
            ),
        )
        iid = cur.lastrowid
        assert iid is not None
        add_timeline(self._conn, iid, detected_at, "detected", f"{alert.name}: condition true")
        add_timeline(self._conn, iid, fired_at, "fired", alert.annotations.get("summary") or alert.name)
        log.warning(
            "incident_opened",
            incident_id=iid,
            alertname=alert.name,
            severity=alert.severity,
            dedup_key=alert.fingerprint,
        )

    # ---------------------------------------------------------------- routing

    def _route(self, live: dict[str, Alert], now: datetime, quiet: Collection[str] = ()) -> int:
        """Due escalation steps and re-notifications of every open incident, unless held back.

        An incident never paged (held by an inhibition or a silence that has just ended) whose
        alert is `quiet` (condition already false, only `keep_firing_for` keeps it firing) is not
        paged now, for a fault that is over: it resolves when keep_firing_for runs out."""
        incidents = self._select("state = 'open' ORDER BY id")
        if not incidents:
            return 0
        active = self.silences.find(now=now)
        firing = list(live.values())
        queued = 0
        for inc in incidents:
            alert = live.get(inc.dedup_key, inc.alert)
            if (alert.no_data_since, alert.no_data_why) != (inc.alert.no_data_since, inc.alert.no_data_why):
                self._conn.execute("UPDATE incidents SET alert = ? WHERE id = ?", (_stored(alert, inc), inc.id))
                add_timeline(self._conn, inc.id, now, "note", alert.no_data or "data is back")
            held = self._held_reason(alert, firing, active, now)
            if held != inc.held:
                self._conn.execute("UPDATE incidents SET held = ? WHERE id = ?", (held, inc.id))
                add_timeline(
                    self._conn,
                    inc.id,
                    now,
                    "note",
                    f"notifications held: {held}" if held else "notifications no longer held",
                )
                log.info("incident_held" if held else "incident_released", incident_id=inc.id, reason=held)
            if held:
                continue
            if inc.dedup_key in quiet and not self._sent(inc.id):
                continue
            n = self._escalate(inc, alert, now) + self._renotify(inc, alert, now)
            if n and inc.dedup_key in live and alert != inc.alert:
                self._conn.execute("UPDATE incidents SET alert = ? WHERE id = ?", (_stored(alert, inc), inc.id))
            queued += n
        return queued

    def _escalate(self, inc: IncidentView, alert: Alert, now: datetime) -> int:
        """Triggers for every due step's receivers that have not had one at that level."""
        sent = self._sent(inc.id)
        queued = 0
        for step in routing.steps_for(alert, self._cfg.root.escalation):
            if now < inc.fired_at + timedelta(seconds=step.after):
                continue
            avoid = (
                routing.avoided(alert, deliveries.failing_receivers(self._conn)) if "receiver" in alert.labels else ()
            )
            targets = routing.step_receivers(step, self._cfg, avoid)
            if not targets and (inc.id, step.level) not in self._warned:
                self._warned.add((inc.id, step.level))
                log.warning(
                    "escalation_step_has_no_receiver",
                    incident_id=inc.id,
                    escalation_level=step.level,
                    receivers=step.receivers,
                    fallback=step.fallback,
                )
            targets += self._fallback(inc, alert, step, targets, sent, now)
            new = [r for r in targets if (step.level, r) not in sent]
            for r in new:
                queued += self._queue(inc, alert, r, "trigger", step.level, now)
                self._conn.execute(
                    "INSERT INTO incident_receivers"
                    " (incident_id, level, receiver, triggered_at, last_sent_at) VALUES (?, ?, ?, ?, ?)",
                    (inc.id, step.level, r, iso(now), iso(now)),
                )
                sent.add((step.level, r))
            if new and step.after > 0:
                add_timeline(
                    self._conn,
                    inc.id,
                    now,
                    "escalated",
                    f"{inc.severity} not resolved after {format_duration(step.after)}: " + ", ".join(new),
                    level=step.level,
                )
                log.warning("incident_escalated", incident_id=inc.id, escalation_level=step.level, receivers=new)
        return queued

    def _fallback(
        self,
        inc: IncidentView,
        alert: Alert,
        step: EscalationStep,
        targets: list[str],
        sent: set[tuple[str, str]],
        now: datetime,
    ) -> list[str]:
        """The step's fallback receivers once its own have failed this P1/P2 page for
        `fallback_after` (`routing.fallback_receivers`); noted on the timeline when new."""
        if alert.severity not in routing.FALLBACK_SEVERITIES or not step.fallback or not targets:
            return []
        failing = {
            p.receiver: p.since
            for p in deliveries.undelivered_pages(self._conn, incident_id=inc.id)
            if p.level == step.level
        }
        chosen = routing.fallback_receivers(step, alert, self._cfg, targets, failing, now)
        new = [r for r in chosen if (step.level, r) not in sent]
        if new:
            wait = format_duration(routing.fallback_after(step, self._cfg).total_seconds())
            add_timeline(
                self._conn,
                inc.id,
                now,
                "note",
                f"{', '.join(targets)} failed this page for {wait}: paging fallback {', '.join(new)} as well",
                level=step.level,
            )
            log.warning(
                "fallback_paged", incident_id=inc.id, escalation_level=step.level, failing=list(targets), receivers=new
            )
        return chosen

    def _renotify(self, inc: IncidentView, alert: Alert, now: datetime) -> int:
        """Non-PagerDuty receivers hear again once per cadence (0s: never)."""
        cadence = routing.renotify_interval(self._cfg, inc.severity)
        if cadence <= timedelta(0):
            return 0
        queued = 0
        for receiver, (level, last) in self._receivers_of(inc.id).items():
            if routing.renotifies(self._cfg, receiver) and now >= last + cadence:
                queued += self._queue(inc, alert, receiver, "renotify", level, now)
                self._conn.execute(
                    "UPDATE incident_receivers SET last_sent_at = ? WHERE incident_id = ? AND receiver = ?",
                    (iso(now), inc.id, receiver),
                )
        return queued

    def _held_reason(self, alert: Alert, firing: Sequence[Alert], active: Sequence[SilenceEntry], now: datetime) -> str:
        """Why new notifications for `alert` are held back now ('' when they are not)."""
        reasons = []
        inhibitors = routing.inhibitors(alert, firing, self._cfg.root.inhibit)
        if inhibitors:
            reasons.append("inhibited by " + ", ".join(inhibitors))
        silenced = self.silences.matching(routing.alert_labels(alert), now, active)
        if silenced:
            reasons.append("; ".join(s.describe() for s in silenced))
        muted = routing.muted_by(alert, self._cfg, now)
        if muted:
            reasons.append("muted by time interval " + "; ".join(muted))
        return "; ".join(reasons)

    def _sent(self, iid: int) -> set[tuple[str, str]]:
        return {
            (lv, r)
            for lv, r in self._conn.execute(
                "SELECT level, receiver FROM incident_receivers WHERE incident_id = ?", (iid,)
            )
        }

    def _receivers_of(self, iid: int) -> dict[str, tuple[str, datetime]]:
        return views.receivers_of(self._conn, iid)

    def _queue(
        self,
        inc: IncidentView,
        alert: Alert,
        receiver: str,
        kind: str,
        level: str,
        now: datetime,
        resolved_at: datetime | None = None,
        closed_reason: str = "",
    ) -> int:
        if kind == "resolve":
            status = "resolved"
        else:
            status = "acknowledged" if inc.acked_at is not None or kind == "acknowledge" else "firing"
        if status == "acknowledged" and inc.acked_by:  # chat and the console say who took it
            alert = replace(alert, annotations={**alert.annotations, "acknowledged_by": inc.acked_by})
        next_update = None
        if kind != "resolve" and routing.renotifies(self._cfg, receiver):
            cadence = routing.renotify_interval(self._cfg, inc.severity)
            next_update = now + cadence if cadence > timedelta(0) else None
        enqueue(
            self._conn,
            Notification(
                id=0,
                receiver=receiver,
                kind=kind,
                incident_id=inc.id,
                dedup_key=inc.dedup_key,
                level=level,
                status=status,
                alert=alert,
                started_at=inc.fired_at,
                updated_at=now,
                resolved_at=resolved_at,
                next_update_at=next_update,
                closed_reason=closed_reason,
            ),
            now,
        )
        return 1

    def _close(
        self, inc: IncidentView, at: datetime, who: str | None, why: str, now: datetime, *, closed: str = ""
    ) -> int:
        """Close an open incident and queue a resolve to every receiver that got a trigger
        (`closed`: the reason the receivers read, when it is not "fault cleared")."""
        self._conn.execute(
            "UPDATE incidents SET state = 'resolved', resolved_at = ?, resolved_by = ?, held = '' WHERE id = ?",
            (iso(at), who, inc.id),
        )
        add_timeline(self._conn, inc.id, at, "resolved", f"resolved by {who}" if who else (closed or why))
        queued = sum(
            self._queue(inc, inc.alert, r, "resolve", level, now, resolved_at=at, closed_reason=closed)
            for r, (level, _) in self._receivers_of(inc.id).items()
        )
        log.warning(
            "incident_resolved", incident_id=inc.id, alertname=inc.alertname, by=who, reason=why, resolves=queued
        )
        return queued

    # ---------------------------------------------------------------- by hand and on reload

    def _get_open(self, incident_id: int, action: str) -> IncidentView:
        found = self._select("id = ?", (incident_id,))
        if not found:
            raise LookupError(f"incident {incident_id} does not exist")
        if found[0].state != "open":
            raise ValueError(f"incident {incident_id} is already resolved; cannot {action} it")
        return found[0]

    def ack(self, incident_id: int, who: str, now: datetime) -> int:
        """Acknowledge: PagerDuty `acknowledge` (and a status update to the other receivers)
        to every receiver that got a trigger. Acking twice queues nothing the second time.
        Escalation goes on: the runbook escalates what is not *resolved*."""
        with transaction(self._conn):
            inc = self._get_open(incident_id, "acknowledge")
            if inc.acked_at is not None:
                return 0
            self._conn.execute(
                "UPDATE incidents SET acked_at = ?, acked_by = ? WHERE id = ?", (iso(now), who, incident_id)
            )
            add_timeline(self._conn, incident_id, now, "acknowledged", f"acknowledged by {who}")
            inc = self._get_open(incident_id, "acknowledge")
            queued = sum(
                self._queue(inc, inc.alert, r, "acknowledge", lv, now)
                for r, (lv, _) in self._receivers_of(incident_id).items()
            )
        log.info("incident_acknowledged", incident_id=incident_id, by=who, notifications=queued)
        return queued

    def note(self, incident_id: int, who: str, text: str, now: datetime) -> None:
        """A line in the incident's timeline (`note`, "alice: restarted the BFF"); resolved
        incidents take notes too (what was found afterwards). Nothing is sent."""
        text = " ".join(text.split())
        if not text:
            raise ValueError("a note needs some text")
        with transaction(self._conn):
            if not self._select("id = ?", (incident_id,)):
                raise LookupError(f"incident {incident_id} does not exist")
            add_timeline(self._conn, incident_id, now, "note", f"{who}: {text}")
        log.info("incident_note", incident_id=incident_id, by=who)

    def resolve(self, incident_id: int, who: str, now: datetime) -> int:
        """Resolve by hand: resolves to every receiver that got a trigger; the key does not
        re-open until its alert has been seen not firing (module docstring)."""
        with transaction(self._conn):
            inc = self._get_open(incident_id, "resolve")
            queued = self._close(inc, now, who, "resolved by hand", now)
            self._conn.execute(
                "INSERT OR REPLACE INTO manual_holds (dedup_key, incident_id, since) VALUES (?, ?, ?)",
                (inc.dedup_key, incident_id, iso(now)),
            )
            add_timeline(
                self._conn,
                incident_id,
                now,
                "note",
                "resolved by hand: while the alert keeps firing it will not re-open; "
                "once it has cleared, a new firing is a new incident",
            )
        return queued

    def resolve_orphans(
        self, known_rule_names: Collection[str], now: datetime, *, live_keys: Collection[str] | None = None
    ) -> int:
        """After a reload: resolve open incidents whose rule is gone (or, with `live_keys`, whose
        alert the engine no longer tracks, e.g. after its labels were edited), with a note."""
        queued = 0
        with transaction(self._conn):
            for inc in self._select("state = 'open' ORDER BY id"):
                if inc.alertname not in known_rule_names:
                    why = f"rule {inc.alertname!r} no longer exists (removed or renamed on reload)"
                    closed = "closed: rule removed by reload"
                elif live_keys is not None and inc.dedup_key not in live_keys:
                    why = f"rule {inc.alertname!r} no longer produces this alert (edited on reload)"
                    closed = "closed: rule changed by reload"
                else:
                    continue
                add_timeline(self._conn, inc.id, now, "note", why)
                queued += self._close(inc, now, None, why, now, closed=closed)
        return queued

    # ---------------------------------------------------------------- silences

    def list_silences(self, active_only: bool = True, now: datetime | None = None) -> list[SilenceEntry]:
        return self.silences.find(now=now or self._now(), active_only=active_only)

    def expire_silence(self, silence_id: int, now: datetime) -> bool:
        return self.silences.expire(silence_id, now)

    # ---------------------------------------------------------------- rule engine state

    def _save_states(self, states: str | Mapping[str, Any], now: datetime) -> None:
        text = states if isinstance(states, str) else orjson.dumps(states).decode()
        self._conn.execute(
            "INSERT INTO alert_states (id, json, saved_at) VALUES (1, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET json = excluded.json, saved_at = excluded.saved_at",
            (text, iso(now)),
        )

    def save_alert_states(self, states: str | Mapping[str, Any], now: datetime | None = None) -> None:
        """Keep the engine's `AlertStates.to_json()` (a dict or its JSON text) so `for` timers
        survive restarts; `update(..., alert_states=...)` does the same in its transaction."""
        with transaction(self._conn):
            self._save_states(states, now or self._now())

    def load_alert_states(self) -> str | None:
        """The JSON text last saved (None before the first save)."""
        row = self._conn.execute("SELECT json FROM alert_states WHERE id = 1").fetchone()
        return row[0] if row else None

    # ---------------------------------------------------------------- queries

    def list_incidents(self, open_only: bool = True, limit: int = 200, before: int | None = None) -> list[IncidentView]:
        """Newest first, with the receivers each one reached; `before`: ids below it (paging)."""
        return views.list_incidents(self._conn, open_only=open_only, limit=limit, before=before)

    def get(self, incident_id: int) -> IncidentView | None:
        """One incident with its timeline and its notifications (delivered, waiting, failed)."""
        return views.get_incident(self._conn, incident_id)

    def undelivered_pages(self) -> list[deliveries.UndeliveredPage]:
        """Triggers of open incidents that have not reached their receiver (status page banner)."""
        return deliveries.undelivered_pages(self._conn)

    def open_counts_by_severity(self) -> dict[str, int]:
        return views.open_counts(self._conn)

    def samples(self) -> list[Sample]:
        """`portal_incidents_open{severity}` for all four severities (0 included)."""
        return [
            Sample("portal_incidents_open", {"severity": s}, float(n))
            for s, n in self.open_counts_by_severity().items()
        ]


def _columns(alert: Alert) -> dict[str, Any]:
    """The incident columns a new incident takes from its alert."""
    return {"alertname": alert.name, "severity": alert.severity, "vendor": alert.vendor, "dedup_key": alert.fingerprint}


def _stored(alert: Alert, inc: IncidentView) -> str:
    columns = {"alertname": inc.alertname, "severity": inc.severity, "vendor": inc.vendor, "dedup_key": inc.dedup_key}
    return stored_alert_json(alert, columns)
