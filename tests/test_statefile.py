"""The state file stays small: a delivered page keeps what people see, not its payload.

`tests/fixtures/state_v2.sql` is a state file written at schema version 2 (before delivered
pages were slimmed): RedisDown fired and resolved, both pages delivered to oncall and chat;
WhmcsDown (vendor whmcs) fired, chat got it, oncall's page is still pending after one failed
attempt. Opened by this release (migration 3), it must read, render and deliver as before.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from monitor import statedb
from monitor.delivery.outbox import Outbox, list_rows, notification_from_json
from monitor.incidents import deliveries, retention, views
from monitor.incidents.lifecycle import Incidents
from monitor.incidents.records import alert_from_dict, stored_alert_json
from monitor.model import Notification
from monitor.statedb import DB_NAME, LATEST, open_db
from monitor.web.api import _mentions_a_secret
from monitor.web.incidentpage import render_incident_page
from tests.incident_helpers import T0, alert, config, fired, resolved

FIXTURE = Path(__file__).parent / "fixtures" / "state_v2.sql"
CFG = """
receivers:
  oncall: {type: log}
  chat: {type: log}
escalation:
  - {level: L1, after: 0s, severities: [P1, P2, P3, P4], receivers: [oncall, chat]}
"""


def restore_v2(state_dir: Path) -> Path:
    state_dir.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(state_dir / DB_NAME)
    db.executescript(FIXTURE.read_text(encoding="utf-8"))
    db.close()
    return state_dir / DB_NAME


def raw(db_file: Path, sql: str) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(db_file)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


class Rx:
    def __init__(self, name: str) -> None:
        self.name = name
        self.got: list[Notification] = []

    async def send(self, n: Notification) -> None:
        self.got.append(n)

    async def aclose(self) -> None:
        pass


async def _no_sleep(_: float) -> None:
    pass


@pytest.fixture
def v2(tmp_path: Path) -> Path:
    return restore_v2(tmp_path / "state")


@pytest.fixture
def migrated(v2: Path) -> Iterator[sqlite3.Connection]:
    conn = open_db(v2.parent)
    yield conn
    conn.close()


def test_the_fixture_is_a_version_2_file(v2: Path) -> None:
    assert raw(v2, "SELECT max(version) FROM schema_version") == [(2,)]
    assert raw(v2, "SELECT id, receiver, state FROM outbox ORDER BY id") == [
        (1, "oncall", "delivered"),
        (2, "chat", "delivered"),
        (3, "chat", "delivered"),
        (4, "oncall", "delivered"),
        (5, "oncall", "pending"),
        (6, "chat", "delivered"),
    ]
    assert all(p for (p,) in raw(v2, "SELECT payload FROM outbox"))  # every payload, delivered or not


def test_migration_3_slims_delivered_pages_only(v2: Path) -> None:
    columns = "id, receiver, kind, incident_id, dedup_key, {payload}, created_at, attempts, next_attempt_at,"
    columns += " last_error, state, finished_at FROM outbox ORDER BY id"
    outbox = "SELECT " + columns.format(payload="payload")
    timeline = "SELECT incident_id, id, at, kind, detail, receiver, level FROM timeline ORDER BY incident_id, id"
    receivers = "SELECT * FROM incident_receivers ORDER BY incident_id, level, receiver"
    before = {q: raw(v2, q) for q in (outbox, timeline, receivers)}
    alerts = {i: orjson.loads(a) for i, a in raw(v2, "SELECT id, alert FROM incidents")}
    seq = raw(v2, "SELECT seq FROM sqlite_sequence WHERE name = 'outbox'")

    conn = open_db(v2.parent)
    assert statedb.applied_version(conn) == LATEST == 3
    conn.close()

    after = raw(
        v2, "SELECT " + columns.format(payload="(SELECT p.payload FROM outbox_payload p WHERE p.id = outbox.id)")
    )
    for old, new in zip(before[outbox], after, strict=True):
        if old[10] == "delivered":  # no dedup key, payload or next attempt; the rest as it was
            assert new == (*old[:4], None, None, *old[6:8], None, *old[9:])
        else:
            assert new == old  # the pending page: everything, its payload byte for byte
    assert raw(v2, timeline) == before[timeline] and raw(v2, receivers) == before[receivers]
    assert raw(v2, "SELECT seq FROM sqlite_sequence WHERE name = 'outbox'") == seq  # ids never reused
    # The stored alerts leave out what the incident's columns say, and read back whole.
    stored = dict(raw(v2, "SELECT id, alert FROM incidents"))
    assert all("fingerprint" not in orjson.loads(a) and "name" not in orjson.loads(a) for a in stored.values())
    conn = open_db(v2.parent)
    read = {v.id: v.alert for v in views.list_incidents(conn, open_only=False)}
    conn.close()
    assert read == {i: alert_from_dict(a) for i, a in alerts.items()}
    assert read[2].vendor == "whmcs"


def test_a_delivered_slim_row_still_renders_the_timeline_and_the_incident_page(migrated: sqlite3.Connection) -> None:
    view = views.get_incident(migrated, 1)
    assert view is not None and view.state == "resolved"
    assert [(d.id, d.receiver, d.kind, d.state, d.attempts) for d in view.deliveries] == [
        (1, "oncall", "trigger", "delivered", 1),
        (2, "chat", "trigger", "delivered", 1),
        (3, "chat", "resolve", "delivered", 1),
        (4, "oncall", "resolve", "delivered", 1),
    ]
    assert all(d.payload is None and d.dedup_key == view.dedup_key and d.level == "L1" for d in view.deliveries)
    doc = view.to_dict()  # the API's incident document: who was paged when
    assert [(d["receiver"], d["kind"], d["created_at"], d["finished_at"]) for d in doc["deliveries"]] == [
        ("oncall", "trigger", "2025-12-05T09:00:00.000000+00:00", "2025-12-05T09:00:00.000000+00:00"),
        ("chat", "trigger", "2025-12-05T09:00:00.000000+00:00", "2025-12-05T09:00:00.000000+00:00"),
        ("chat", "resolve", "2025-12-05T09:10:00.000000+00:00", "2025-12-05T09:10:00.000000+00:00"),
        ("oncall", "resolve", "2025-12-05T09:10:00.000000+00:00", "2025-12-05T09:10:00.000000+00:00"),
    ]
    notified = [(e["receiver"], e["level"], e["detail"]) for e in doc["timeline"] if e["kind"] == "notified"]
    assert sorted(notified) == [
        ("chat", "L1", "resolve → chat"),
        ("chat", "L1", "trigger → chat"),
        ("oncall", "L1", "resolve → oncall"),
        ("oncall", "L1", "trigger → oncall"),
    ]
    assert [e["kind"] for e in doc["timeline"]] == [
        "detected",
        "fired",
        *["notified"] * 2,
        "resolved",
        *["notified"] * 2,
    ]
    assert doc["receivers"] == {"oncall": "L1", "chat": "L1"} and doc["labels"]["check"] == "cache"
    html = render_incident_page(
        doc,
        now=T0 + timedelta(hours=1),
        base="",
        check=None,
        chart="",
        status_update="",
        customer_communication="",
        signed_in=None,
        csrf="",
        token_configured=True,
    )
    assert "RedisDown" in html and "RedisDown on cache" in html
    assert html.count("<strong>notified</strong>") == 4 and "resolve → oncall" in html
    with pytest.raises(ValueError, match="outbox row 1 .* was delivered"):
        _ = view.deliveries[0].notification


def test_an_undelivered_row_keeps_its_payload_and_is_redelivered_intact(v2: Path) -> None:
    (payload,) = raw(v2, "SELECT payload FROM outbox WHERE id = 5")[0]
    conn = open_db(v2.parent)
    (row,) = list_rows(conn, state="pending")
    assert (row.id, row.payload, row.attempts, row.last_error) == (5, payload, 1, "oncall: HTTP 503")
    pages = deliveries.undelivered_pages(conn)
    assert [(p.incident_id, p.receiver, p.level) for p in pages] == [(2, "oncall", "L1")]

    now = T0 + timedelta(minutes=21)
    rx = {"oncall": Rx("oncall"), "chat": Rx("chat")}
    asyncio.run(Outbox(conn, rx, now=lambda: now, sleep=_no_sleep).drain())
    assert rx["oncall"].got == [notification_from_json(payload, id=5)]  # as queued, to the byte
    assert rx["oncall"].got[0].alert.vendor == "whmcs" and rx["chat"].got == []
    (done,) = list_rows(conn, incident_id=2, receiver="oncall")
    assert (done.state, done.attempts, done.payload, done.finished_at) == ("delivered", 2, None, now)
    assert deliveries.undelivered_pages(conn) == []
    conn.close()


def test_delivery_slims_the_row_and_keeps_a_failed_one_whole(tmp_path: Path) -> None:
    conn = open_db(tmp_path)
    inc = Incidents(conn, config(CFG))
    a = alert("RedisDown", "P1", check="cache")
    inc.update([a], [fired(a, T0)], T0)
    queued = {r.receiver: r.payload for r in list_rows(conn)}

    class Refuses(Rx):
        async def send(self, n: Notification) -> None:
            from monitor.model import DeliveryError

            raise DeliveryError("chat: HTTP 400 invalid payload", permanent=True)

    rx = {"oncall": Rx("oncall"), "chat": Refuses("chat")}
    asyncio.run(Outbox(conn, rx, now=lambda: T0, sleep=_no_sleep).drain())
    rows = {r.receiver: r for r in list_rows(conn)}
    assert (rows["oncall"].state, rows["oncall"].payload) == ("delivered", None)
    assert (rows["chat"].state, rows["chat"].payload) == ("failed", queued["chat"])  # kept for people to see
    stored = conn.execute("SELECT id, dedup_key, next_attempt_at FROM outbox WHERE receiver = 'oncall'").fetchone()
    assert stored[1:] == (None, None)
    assert conn.execute("SELECT count(*) FROM outbox_payload WHERE id = ?", (stored[0],)).fetchone() == (0,)
    conn.close()


def test_a_stored_alert_keeps_fields_that_differ_from_the_columns() -> None:
    a = alert("RedisDown", "P1", vendor="redis", check="cache")
    columns = {"alertname": "RedisDown", "severity": "P2", "vendor": None, "dedup_key": a.fingerprint}
    d = orjson.loads(stored_alert_json(a, columns))
    assert (d["severity"], d["vendor"]) == ("P1", "redis") and "name" not in d and "fingerprint" not in d


# ---------------------------------------------------------------- query plans


def plan(conn: sqlite3.Connection, sql: str, args: tuple[Any, ...]) -> list[str]:
    return [r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, args)]


@pytest.fixture
def busy(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """A file with 300 resolved incidents and one open one (delivered pages for each); P4, so
    the open one re-notifies only after 24 hours."""
    conn = open_db(tmp_path)
    inc = Incidents(conn, config(CFG))
    rx = {"oncall": Rx("oncall"), "chat": Rx("chat")}
    clock = {"now": T0}
    outbox = Outbox(conn, rx, now=lambda: clock["now"], sleep=_no_sleep)
    for i in range(301):
        a = alert("WebDown", "P4", check=f"web{i}")
        t = T0 + timedelta(minutes=2 * i)
        clock["now"] = t
        inc.update([a], [fired(a, t)], t)
        if i < 300:
            inc.update([], [resolved(a, t + timedelta(minutes=1))], t + timedelta(minutes=1))
    asyncio.run(outbox.drain())
    conn.execute("ANALYZE")  # the planner's choice must hold with statistics, too
    yield conn
    conn.close()


def test_the_open_incidents_are_found_through_an_index(busy: sqlite3.Connection) -> None:
    steps = plan(busy, views.OPEN_NEWEST_FIRST, (2**62, 200))
    assert any("USING INDEX incidents_open" in s or "USING COVERING INDEX incidents_open" in s for s in steps), steps
    assert not any(s.startswith("SCAN incidents") and "INDEX" not in s for s in steps), steps
    assert [v.id for v in views.list_incidents(busy)] == [301]


def test_undelivered_pages_start_from_the_open_incidents(busy: sqlite3.Connection) -> None:
    sql = (
        "SELECT o.id FROM incidents i CROSS JOIN outbox o ON o.incident_id = i.id"
        " WHERE i.state = 'open' AND o.kind = 'trigger' AND o.state != 'delivered'"
    )
    steps = plan(busy, sql, ())
    assert not any(s.startswith("SCAN o") for s in steps), steps
    assert any("outbox_incident" in s for s in steps), steps
    assert deliveries.undelivered_pages(busy) == []


def test_retention_finds_old_pages_of_open_incidents_through_indexes(busy: sqlite3.Connection) -> None:
    steps = plan(
        busy,
        "SELECT o.id FROM incidents AS i CROSS JOIN outbox AS o ON o.incident_id = i.id"
        " WHERE i.state = 'open' AND o.state = 'delivered' AND o.finished_at < ? ORDER BY o.id LIMIT ?",
        ("2030-01-01", 500),
    )
    assert not any(s.startswith("SCAN o") for s in steps), steps
    pruned = retention.prune(busy, T0 + timedelta(days=91), timedelta(days=90))
    assert (pruned.incidents, pruned.outbox) == (300, 2)  # the open one keeps its incident, loses old pages


def test_open_queries_read_no_more_with_more_resolved_incidents(busy: sqlite3.Connection) -> None:
    """The status page's reads touch the open incidents, not the resolved ones (counted in
    SQLite's virtual machine steps, not in time)."""
    steps: list[int] = []

    def run() -> int:
        count = [0]

        def tick() -> int:
            count[0] += 1
            return 0

        busy.set_progress_handler(tick, 1)
        try:
            views.list_incidents(busy)
            deliveries.undelivered_pages(busy)
            views.open_counts(busy)
        finally:
            busy.set_progress_handler(None, 1)
        return count[0]

    steps.append(run())
    inc = Incidents(busy, config(CFG))
    t = T0 + timedelta(hours=11)  # the open incident does not re-notify before T0 + 34h
    for i in range(300, 600):
        a = alert("WebDown", "P4", check=f"more{i}")
        inc.update([a], [fired(a, t)], t)
        inc.update([], [resolved(a, t + timedelta(minutes=1))], t + timedelta(minutes=1))
        t += timedelta(minutes=2)
    rx = {"oncall": Rx("oncall"), "chat": Rx("chat")}
    asyncio.run(Outbox(busy, rx, now=lambda: t, sleep=_no_sleep).drain())
    steps.append(run())
    assert steps[1] < steps[0] * 1.2, steps


def test_the_incident_list_pages_through_every_incident(busy: sqlite3.Connection) -> None:
    seen: list[int] = []
    before = None
    for _ in range(10):
        page = views.list_incidents(busy, open_only=False, limit=120, before=before)
        if not page:
            break
        seen += [v.id for v in page]
        before = page[-1].id
    assert seen == list(range(301, 0, -1))


def test_a_reply_is_redacted_whenever_a_secret_is_in_it() -> None:
    """The API skips redaction only when no secret, as JSON escapes it, is in the reply."""
    secrets = frozenset({'pa"ss\\word', "tok-123"})
    assert _mentions_a_secret(orjson.dumps({"a": ['x pa"ss\\word y']}), secrets)
    assert _mentions_a_secret(orjson.dumps({"error": "bad tok-1234"}), secrets)
    assert not _mentions_a_secret(orjson.dumps({"a": "tok-12", "b": "pass"}), secrets)
    assert not _mentions_a_secret(b'{"a":"tok-123"}', frozenset())
