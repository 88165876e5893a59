"""How incidents and notifications are written down in the state database.

Times are UTC ISO-8601 text of fixed width (so text order is time order); every write runs in
`transaction()`; the timeline is the incident's history (written by `lifecycle.py`, and by
the outbox on delivery); alerts and notifications are stored as JSON, and each notification an
incident change causes is an outbox row written here (`enqueue`) in the same transaction, read
back with `list_rows`; its payload lives in `outbox_payload` until it is delivered
(`mark_delivered` drops it). An incident's stored alert leaves out what the incident's own
columns say (`stored_alert_json`). `lifecycle.py` and `monitor.delivery.outbox` both build on this module.
The tables themselves are `monitor.statedb`'s migrations.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from monitor.model import Alert, Notification

# ---------------------------------------------------------------- SQLite helpers


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """`BEGIN IMMEDIATE ... COMMIT`, rolled back on any exception (the connection has
    `isolation_level=None`, so nothing else opens transactions behind our back)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def iso(t: datetime) -> str:
    """UTC ISO-8601 text, as every time is stored."""
    if t.tzinfo is None:
        raise ValueError(f"naive datetime {t!r}: times must carry a timezone (UTC)")
    return t.astimezone(UTC).isoformat(timespec="microseconds")  # fixed width: text order = time order


def parse_iso(text: str) -> datetime:
    t = datetime.fromisoformat(text)
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def iso_or_none(t: datetime | None) -> str | None:
    return None if t is None else iso(t)


def parse_iso_or_none(text: str | None) -> datetime | None:
    return parse_iso(text) if text else None


def add_timeline(
    conn: sqlite3.Connection,
    incident_id: int,
    at: datetime,
    kind: str,
    detail: str = "",
    *,
    receiver: str | None = None,
    level: str | None = None,
) -> None:
    """One timeline entry (detected, fired, notified, escalated, acknowledged, resolved, note).

    Entries are keyed by (incident, id): `id` counts up within the incident (its order of writing)."""
    conn.execute(
        "INSERT INTO timeline (incident_id, id, at, kind, detail, receiver, level)"
        " VALUES (?, (SELECT coalesce(max(id), 0) + 1 FROM timeline WHERE incident_id = ?), ?, ?, ?, ?, ?)",
        (incident_id, incident_id, iso(at), kind, detail, receiver, level),
    )


# ---------------------------------------------------------------- serialisation


def _value_out(v: float) -> float | str:
    return v if math.isfinite(v) else ("NaN" if math.isnan(v) else ("+Inf" if v > 0 else "-Inf"))


def alert_to_dict(a: Alert) -> dict[str, Any]:
    return {
        "name": a.name,
        "labels": dict(a.labels),
        "annotations": dict(a.annotations),
        "severity": a.severity,
        "value": _value_out(a.value),
        "vendor": a.vendor,
        "fingerprint": a.fingerprint,
        **({"no_data_since": iso(a.no_data_since), "no_data_why": a.no_data_why} if a.no_data_since else {}),
    }


def alert_from_dict(d: Mapping[str, Any]) -> Alert:
    return Alert(
        name=d["name"],
        labels=dict(d["labels"]),
        annotations=dict(d["annotations"]),
        severity=d["severity"],
        value=float(d["value"]),
        vendor=d.get("vendor"),
        fingerprint=d["fingerprint"],
        no_data_since=parse_iso_or_none(d.get("no_data_since")),
        no_data_why=d.get("no_data_why") or "",
    )


# What an incident's own columns say about its alert: left out of the stored alert JSON when they
# agree (they almost always do), filled back in when it is read.
_ALERT_COLUMNS = (("name", "alertname"), ("severity", "severity"), ("vendor", "vendor"), ("fingerprint", "dedup_key"))


def stored_alert_json(a: Alert, columns: Mapping[str, Any]) -> str:
    """The alert as the incidents table keeps it: without the fields equal to the incident's
    `columns` (alertname, severity, vendor, dedup_key)."""
    d = alert_to_dict(a)
    for key, column in _ALERT_COLUMNS:
        if d[key] == columns[column]:
            del d[key]
    return orjson.dumps(d).decode()


def stored_alert(text: str | bytes, columns: Mapping[str, Any]) -> Alert:
    """The alert from `stored_alert_json` (or a full alert JSON, as older files keep it)."""
    d = orjson.loads(text)
    for key, column in _ALERT_COLUMNS:
        if key not in d:
            d[key] = columns[column]
    return alert_from_dict(d)


def notification_to_json(n: Notification) -> str:
    """The notification as JSON with ISO datetimes; the row id is not part of it."""
    return orjson.dumps(
        {
            "receiver": n.receiver,
            "kind": n.kind,
            "incident_id": n.incident_id,
            "dedup_key": n.dedup_key,
            "level": n.level,
            "status": n.status,
            "alert": alert_to_dict(n.alert),
            "started_at": iso(n.started_at),
            "updated_at": iso(n.updated_at),
            "resolved_at": iso_or_none(n.resolved_at),
            "next_update_at": iso_or_none(n.next_update_at),
            **({"closed_reason": n.closed_reason} if n.closed_reason else {}),
        }
    ).decode()


def notification_from_json(text: str | bytes, *, id: int = 0) -> Notification:
    d = orjson.loads(text)
    return Notification(
        id=id,
        receiver=d["receiver"],
        kind=d["kind"],
        incident_id=d["incident_id"],
        dedup_key=d["dedup_key"],
        level=d["level"],
        status=d["status"],
        alert=alert_from_dict(d["alert"]),
        started_at=parse_iso(d["started_at"]),
        updated_at=parse_iso(d["updated_at"]),
        resolved_at=parse_iso_or_none(d.get("resolved_at")),
        next_update_at=parse_iso_or_none(d.get("next_update_at")),
        closed_reason=d.get("closed_reason") or "",
    )


# ---------------------------------------------------------------- the outbox's rows


def enqueue(conn: sqlite3.Connection, n: Notification, now: datetime) -> int:
    """Queue one notification; call inside the caller's transaction. Returns the row id."""
    cur = conn.execute(
        "INSERT INTO outbox (receiver, kind, incident_id, level, dedup_key, created_at, next_attempt_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (n.receiver, n.kind, n.incident_id, n.level, n.dedup_key, iso(now), iso(now)),
    )
    assert cur.lastrowid is not None
    conn.execute("INSERT INTO outbox_payload (id, payload) VALUES (?, ?)", (cur.lastrowid, notification_to_json(n)))
    return cur.lastrowid


def mark_delivered(conn: sqlite3.Connection, row_id: int, now: datetime) -> bool:
    """Mark a pending row delivered (inside the caller's transaction) and drop what only its
    sending needed: the payload, the dedup key, the next attempt time. False if it was not pending."""
    cur = conn.execute(
        "UPDATE outbox SET state = 'delivered', attempts = attempts + 1, finished_at = ?,"
        " dedup_key = NULL, next_attempt_at = NULL WHERE id = ? AND state = 'pending'",
        (iso(now), row_id),
    )
    if not cur.rowcount:
        return False
    conn.execute("DELETE FROM outbox_payload WHERE id = ?", (row_id,))
    return True


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One queued notification and how its delivery went (for the CLI, the API and tests).

    A delivered row keeps who got what when (receiver, kind, level, attempts, created_at, finished_at;
    the timeline has its "notified" entry) but not its payload: `payload` is None and
    `next_attempt_at` is `finished_at`. Rows still to deliver, failed and expired keep the
    notification as it was queued."""

    id: int
    receiver: str
    kind: str
    incident_id: int
    dedup_key: str
    created_at: datetime
    attempts: int
    next_attempt_at: datetime
    last_error: str
    state: str  # pending | delivered | failed | expired
    finished_at: datetime | None
    payload: str | None
    level: str = ""  # the escalation level it was sent at

    @property
    def notification(self) -> Notification:
        """The notification as queued (ValueError for a delivered row: it is not kept)."""
        if self.payload is None:
            raise ValueError(
                f"outbox row {self.id} ({self.kind} to {self.receiver}) was delivered: its payload is not kept"
            )
        return notification_from_json(self.payload, id=self.id)


# A delivered row's dedup key is its incident's.
_ROW_COLUMNS = (
    "o.id, o.receiver, o.kind, o.incident_id,"
    " coalesce(o.dedup_key, (SELECT i.dedup_key FROM incidents i WHERE i.id = o.incident_id), ''),"
    " o.created_at, o.attempts, coalesce(o.next_attempt_at, o.finished_at, o.created_at),"
    " o.last_error, o.state, o.finished_at, (SELECT p.payload FROM outbox_payload p WHERE p.id = o.id), o.level"
)


def _row(r: tuple[Any, ...]) -> OutboxRow:
    return OutboxRow(
        id=r[0],
        receiver=r[1],
        kind=r[2],
        incident_id=r[3],
        dedup_key=r[4],
        created_at=parse_iso(r[5]),
        attempts=r[6],
        next_attempt_at=parse_iso(r[7]),
        last_error=r[8],
        state=r[9],
        finished_at=parse_iso(r[10]) if r[10] else None,
        payload=r[11],
        level=r[12],
    )


def list_rows(
    conn: sqlite3.Connection,
    *,
    incident_id: int | None = None,
    state: str | None = None,
    receiver: str | None = None,
    limit: int = 1000,
) -> list[OutboxRow]:
    """Outbox rows, oldest first, filtered by incident, state and receiver."""
    where, args = [], []
    for col, val in (("incident_id", incident_id), ("state", state), ("receiver", receiver)):
        if val is not None:
            where.append(f"o.{col} = ?")
            args.append(val)
    sql = f"SELECT {_ROW_COLUMNS} FROM outbox o" + (" WHERE " + " AND ".join(where) if where else "")
    return [_row(r) for r in conn.execute(sql + " ORDER BY o.id LIMIT ?", (*args, limit))]


def next_pending(conn: sqlite3.Connection, receiver: str) -> OutboxRow | None:
    """The receiver's oldest row still to deliver (rows go out in order per receiver)."""
    row = conn.execute(
        f"SELECT {_ROW_COLUMNS} FROM outbox o WHERE o.receiver = ? AND o.state = 'pending' ORDER BY o.id LIMIT 1",
        (receiver,),
    ).fetchone()
    return _row(row) if row else None
