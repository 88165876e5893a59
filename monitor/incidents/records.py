"""How incidents and notifications are written down in the state database.

Times are UTC ISO-8601 text of fixed width (so text order is time order); every write runs in
`transaction()`; the timeline is the incident's history (written by `incidents.py`, and by
`outbox.py` on delivery); alerts and notifications are stored as JSON. Both `incidents.py` and
`outbox.py` build on this module. The tables themselves are `monitor.statedb`'s migrations.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
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
    """One timeline entry (detected, fired, notified, escalated, acknowledged, resolved, note)."""
    conn.execute(
        "INSERT INTO timeline (incident_id, at, kind, detail, receiver, level) VALUES (?, ?, ?, ?, ?, ?)",
        (incident_id, iso(at), kind, detail, receiver, level),
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
    )


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
    )
