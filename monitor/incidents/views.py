"""What the CLI, the API and the review template read about an incident: frozen values and
the read-only queries that build them.

Kept apart from `incidents.py`, which decides; these only describe stored incidents.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from monitor.config.model import SEVERITIES
from monitor.incidents.records import (
    OutboxRow,
    iso,
    iso_or_none,
    list_rows,
    parse_iso,
    parse_iso_or_none,
    stored_alert,
)
from monitor.model import Alert

COLUMNS = (
    "id, dedup_key, alertname, severity, vendor, alert, state, detected_at, fired_at, acked_at,"
    " acked_by, resolved_at, resolved_by, held,"
    " (SELECT t.detail FROM timeline t WHERE t.incident_id = incidents.id AND t.kind = 'resolved'"
    " ORDER BY t.id DESC LIMIT 1)"
)


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """detected, fired, notified, escalated, acknowledged, resolved or note; `at` in UTC."""

    at: datetime
    kind: str
    detail: str
    receiver: str | None = None
    level: str | None = None

    @property
    def event(self) -> str:
        """The same as `kind` (the name `messages.review_template` reads)."""
        return self.kind

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": iso(self.at),
            "kind": self.kind,
            "detail": self.detail,
            "receiver": self.receiver,
            "level": self.level,
        }


@dataclass(frozen=True, slots=True)
class IncidentView:
    """One incident as stored. `receivers` maps each receiver that got a trigger to the highest
    level it was triggered at; `held` says why notifications are held back now ('' if not)."""

    id: int
    dedup_key: str
    alertname: str
    severity: str
    vendor: str | None
    alert: Alert
    state: str  # open | resolved
    detected_at: datetime
    fired_at: datetime
    acked_at: datetime | None
    acked_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    held: str
    receivers: Mapping[str, str] = field(default_factory=dict)
    timeline: tuple[TimelineEntry, ...] = ()
    deliveries: tuple[OutboxRow, ...] = ()
    # How it was resolved when not by its condition: "closed: no data for 1h", "closed: rule
    # removed by reload", "resolved by alice" ('' while open or when the fault cleared).
    closed_reason: str = ""

    @property
    def level(self) -> str:
        """The highest escalation level reached ('' before the first trigger)."""
        return max(self.receivers.values(), default="")

    # The names `messages.py` reads an incident by.
    @property
    def started_at(self) -> datetime:
        return self.fired_at

    @property
    def labels(self) -> Mapping[str, str]:
        return self.alert.labels

    @property
    def summary(self) -> str:
        return self.alert.annotations.get("summary") or self.alertname

    @property
    def runbook(self) -> str:
        return self.alert.runbook

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "dedup_key": self.dedup_key,
            "alertname": self.alertname,
            "severity": self.severity,
            "vendor": self.vendor,
            "state": self.state,
            "summary": self.summary,
            "runbook": self.runbook,
            "labels": dict(self.alert.labels),
            "annotations": dict(self.alert.annotations),
            "value": self.alert.value,
            "detected_at": iso(self.detected_at),
            "fired_at": iso(self.fired_at),
            "acked_at": iso_or_none(self.acked_at),
            "acked_by": self.acked_by,
            "resolved_at": iso_or_none(self.resolved_at),
            "resolved_by": self.resolved_by,
            "held": self.held,
            "no_data": self.alert.no_data,
            "no_data_since": iso_or_none(self.alert.no_data_since),
            "closed_reason": self.closed_reason,
            "level": self.level,
            "receivers": dict(self.receivers),
            "timeline": [e.to_dict() for e in self.timeline],
            "deliveries": [
                {
                    "id": d.id,
                    "receiver": d.receiver,
                    "kind": d.kind,
                    "state": d.state,
                    "attempts": d.attempts,
                    "last_error": d.last_error,
                    "created_at": iso(d.created_at),
                    "finished_at": iso_or_none(d.finished_at),
                }
                for d in self.deliveries
            ],
        }


def view_from_row(
    r: tuple[Any, ...],
    receivers: Mapping[str, str] | None = None,
    *,
    timeline: tuple[TimelineEntry, ...] = (),
    deliveries: tuple[OutboxRow, ...] = (),
) -> IncidentView:
    """An `IncidentView` from a `SELECT COLUMNS FROM incidents` row."""
    return IncidentView(
        id=r[0],
        dedup_key=r[1],
        alertname=r[2],
        severity=r[3],
        vendor=r[4],
        alert=stored_alert(r[5], {"alertname": r[2], "severity": r[3], "vendor": r[4], "dedup_key": r[1]}),
        state=r[6],
        detected_at=parse_iso(r[7]),
        fired_at=parse_iso(r[8]),
        acked_at=parse_iso_or_none(r[9]),
        acked_by=r[10],
        resolved_at=parse_iso_or_none(r[11]),
        resolved_by=r[12],
        held=r[13],
        receivers=dict(receivers or {}),
        timeline=timeline,
        deliveries=deliveries,
        closed_reason="" if r[6] == "open" or r[14] in (None, "alert resolved") else r[14],
    )


# ---------------------------------------------------------------- queries


def select(conn: sqlite3.Connection, where: str, args: tuple[Any, ...] = ()) -> list[IncidentView]:
    """Incidents matching an SQL condition (without receivers, timeline or deliveries)."""
    return [view_from_row(r) for r in conn.execute(f"SELECT {COLUMNS} FROM incidents WHERE {where}", args)]


def receivers_of(conn: sqlite3.Connection, iid: int) -> dict[str, tuple[str, datetime]]:
    """Every receiver that got a trigger -> (highest level, when it last heard), in trigger order."""
    return {
        r: (lv, parse_iso(last))
        for r, lv, last in conn.execute(
            "SELECT receiver, max(level), max(last_sent_at) FROM incident_receivers WHERE incident_id = ?"
            " GROUP BY receiver ORDER BY min(triggered_at), receiver",
            (iid,),
        )
    }


def _levels(conn: sqlite3.Connection, iid: int) -> dict[str, str]:
    return {r: lv for r, (lv, _) in receivers_of(conn, iid).items()}


# The open incidents, newest first, through the partial index that holds only them (the status
# page must not read the resolved ones, however many the file keeps).
OPEN_NEWEST_FIRST = f"SELECT {COLUMNS} FROM incidents WHERE state = 'open' AND id < ? ORDER BY id DESC LIMIT ?"
ALL_NEWEST_FIRST = f"SELECT {COLUMNS} FROM incidents WHERE id < ? ORDER BY id DESC LIMIT ?"


def list_incidents(
    conn: sqlite3.Connection, *, open_only: bool = True, limit: int = 200, before: int | None = None
) -> list[IncidentView]:
    """Newest first, at most `limit` (with ids below `before`: the next page), each with the
    receivers it reached (one query for all)."""
    args = (before if before is not None else 2**62, limit)
    rows = conn.execute(OPEN_NEWEST_FIRST if open_only else ALL_NEWEST_FIRST, args).fetchall()
    levels = _levels_of(conn, [r[0] for r in rows])
    return [view_from_row(r, levels.get(r[0], {})) for r in rows]


def _levels_of(conn: sqlite3.Connection, ids: list[int]) -> dict[int, dict[str, str]]:
    """Per incident, each receiver that got a trigger -> its highest level, in trigger order."""
    out: dict[int, dict[str, str]] = {}
    if not ids:
        return out
    marks = ",".join("?" * len(ids))
    for iid, receiver, level in conn.execute(
        "SELECT incident_id, receiver, max(level) FROM incident_receivers"
        f" WHERE incident_id IN ({marks}) GROUP BY incident_id, receiver"
        " ORDER BY incident_id, min(triggered_at), receiver",
        ids,
    ):
        out.setdefault(iid, {})[receiver] = level
    return out


def get_incident(conn: sqlite3.Connection, incident_id: int) -> IncidentView | None:
    """One incident with its timeline and its outbox rows."""
    row = conn.execute(f"SELECT {COLUMNS} FROM incidents WHERE id = ?", (incident_id,)).fetchone()
    if row is None:
        return None
    timeline = tuple(
        TimelineEntry(at=parse_iso(at), kind=kind, detail=detail, receiver=rc, level=lv)
        for at, kind, detail, rc, lv in conn.execute(
            "SELECT at, kind, detail, receiver, level FROM timeline WHERE incident_id = ? ORDER BY at, id",
            (incident_id,),
        )
    )
    return view_from_row(
        row, _levels(conn, incident_id), timeline=timeline, deliveries=tuple(list_rows(conn, incident_id=incident_id))
    )


def open_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Open incidents per severity, all four present."""
    counts = dict.fromkeys(SEVERITIES, 0)
    for sev, n in conn.execute("SELECT severity, count(*) FROM incidents WHERE state = 'open' GROUP BY severity"):
        counts[sev] = n
    return counts
