"""What the outbox's rows say about pages that have not arrived, read for routing and people.

The outbox (`monitor.delivery.outbox`) delivers each receiver's rows in order, so a receiver
is *failing* while its oldest waiting row has been tried and its last attempt failed: every
row behind it waits too. A page (a `trigger` row) is *undelivered* while it is not delivered
and either its receiver is failing or the row itself failed or expired. Routing uses this to
send a P1/P2 to the escalation step's `fallback` receivers when the step's own receivers
have failed it for `fallback_after` (`routing.fallback_receivers`), and to keep an alert
about a failing receiver away from every failing receiver (`routing.avoided`). The status
page and the API show the undelivered pages of open incidents as a banner.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime

from monitor.incidents.records import parse_iso


@dataclass(frozen=True, slots=True)
class UndeliveredPage:
    """One trigger that has not reached its receiver, and why."""

    incident_id: int
    severity: str
    alertname: str
    receiver: str
    level: str
    state: str  # pending (receiver failing) | failed | expired
    attempts: int
    last_error: str
    since: datetime  # when the page was queued
    next_attempt_at: datetime | None  # None once it will not be tried again

    def to_dict(self) -> dict[str, object]:
        return {
            "incident_id": self.incident_id,
            "severity": self.severity,
            "alertname": self.alertname,
            "receiver": self.receiver,
            "level": self.level,
            "state": self.state,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "since": self.since.isoformat(),
            "next_attempt_at": self.next_attempt_at.isoformat() if self.next_attempt_at else None,
        }


def failing_receivers(conn: sqlite3.Connection) -> set[str]:
    """Receivers whose oldest waiting row was tried and failed (everything behind it waits)."""
    rows = conn.execute(
        "SELECT o.receiver FROM outbox o WHERE o.state = 'pending' AND o.attempts > 0 AND o.last_error != ''"
        " AND o.id = (SELECT min(p.id) FROM outbox p WHERE p.state = 'pending' AND p.receiver = o.receiver)"
    )
    return {r for (r,) in rows}


def undelivered_pages(
    conn: sqlite3.Connection, *, incident_id: int | None = None, failing: set[str] | None = None
) -> list[UndeliveredPage]:
    """The triggers of open incidents (or of `incident_id`, open or not) that have not
    arrived, oldest first; `failing` saves the query when the caller already has it."""
    if failing is None:
        failing = failing_receivers(conn)
    where = "i.id = ?" if incident_id is not None else "i.state = 'open'"
    args: tuple[object, ...] = (incident_id,) if incident_id is not None else ()
    # CROSS JOIN: from the (few) open incidents to their rows, never a scan of the whole outbox.
    rows = conn.execute(
        "SELECT o.incident_id, i.severity, i.alertname, o.receiver, o.level,"
        " o.state, o.attempts, o.last_error, o.created_at, o.next_attempt_at"
        " FROM incidents i CROSS JOIN outbox o ON o.incident_id = i.id"
        f" WHERE {where} AND o.kind = 'trigger' AND o.state != 'delivered' ORDER BY o.id",
        args,
    )
    out = []
    for iid, severity, alertname, receiver, level, state, attempts, error, created, next_at in rows:
        if state == "pending" and receiver not in failing:
            continue  # on its way (first try, or behind a row that is being delivered)
        out.append(
            UndeliveredPage(
                incident_id=iid,
                severity=severity,
                alertname=alertname,
                receiver=receiver,
                level=level or "",
                state=state,
                attempts=attempts,
                last_error=error or "",
                since=parse_iso(created),
                next_attempt_at=parse_iso(next_at) if state == "pending" else None,
            )
        )
    return out
