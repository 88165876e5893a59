"""Retention: resolved incidents, their timelines and delivered pages older than `retention`
leave the state file in bounded batches, and the file gives the space back.

Incidents are made by the real `Incidents.update` and pages delivered by the real `Outbox`; the
time of every step and of every pass is an argument, so 90 days pass in no time.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from monitor.config.loader import ConfigError, load_config_text
from monitor.delivery.outbox import Outbox
from monitor.incidents.lifecycle import Incidents
from monitor.incidents.retention import Retention, file_bytes, prune
from monitor.model import DeliveryError, Notification
from monitor.statedb import open_db
from tests.incident_helpers import alert, config, fired, resolved

T0 = datetime(2025, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
RETENTION = timedelta(days=90)

CFG = """
receivers:
  local: {type: log}
escalation:
  - {level: L1, after: 0s, severities: [P1, P2, P3, P4], receivers: [local]}
"""


class Receiver:
    name = "local"

    def __init__(self) -> None:
        self.sent: list[Notification] = []
        self.failing = False

    async def send(self, n: Notification) -> None:
        if self.failing:
            raise DeliveryError("local: 503")
        self.sent.append(n)

    async def aclose(self) -> None:
        pass


class World:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.now = T0
        self.incidents = Incidents(conn, config(CFG))
        self.receiver = Receiver()
        self.outbox = Outbox(conn, {"local": self.receiver}, now=lambda: self.now, max_age=timedelta(days=365))

    async def fire(self, name: str, at: datetime, **labels: str) -> int:
        self.now = at
        a = alert(name, "P2", **labels)
        self.incidents.update([a], [fired(a, at)], at)
        await self.outbox.drain()
        (iid,) = [i.id for i in self.incidents.list_incidents() if i.alert.fingerprint == a.fingerprint]
        return iid

    async def resolve(self, name: str, at: datetime, **labels: str) -> None:
        self.now = at
        a = alert(name, "P2", **labels)
        self.incidents.update([], [resolved(a, at)], at)
        if not self.receiver.failing:
            await self.outbox.drain()

    def count(self, table: str, where: str = "1", args: tuple[object, ...] = ()) -> int:
        n: int = self.conn.execute(f"SELECT count(*) FROM {table} WHERE {where}", args).fetchone()[0]
        return n


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    conn = open_db(tmp_path)
    yield World(conn)
    conn.close()


async def test_only_what_ended_before_the_retention_goes(world: World) -> None:
    old = await world.fire("Old", T0)
    await world.resolve("Old", T0 + timedelta(minutes=10))
    still_open = await world.fire("StillOpen", T0 + DAY)
    recent = await world.fire("Recent", T0 + 80 * DAY)
    await world.resolve("Recent", T0 + 81 * DAY)
    # Delivered: Old's trigger (T0) and resolve (T0+10m), StillOpen's trigger (day 1) and its
    # re-notifications (days 80, 81), Recent's trigger and resolve.
    assert world.count("outbox", "state = 'delivered'") == 7

    # 90 days after the old one resolved, less 5 minutes: no incident has passed retention yet...
    pruned = prune(world.conn, T0 + RETENTION + timedelta(minutes=5), RETENTION)
    assert (pruned.incidents, pruned.timeline) == (0, 0)
    assert world.count("incidents") == 3
    # ...and Old's trigger, delivered more than 90 days ago, stays with its incident until it goes.
    assert pruned.outbox == 0
    assert world.count("outbox", "incident_id = ?", (old,)) == 2
    assert world.count("timeline", "incident_id = ? AND kind = 'notified'", (old,)) == 2

    pruned = prune(world.conn, T0 + RETENTION + timedelta(minutes=11), RETENTION)
    assert pruned.incidents == 1 and pruned.timeline > 0 and pruned.incident_receivers == 1
    assert {i.id for i in world.incidents.list_incidents(open_only=False)} == {still_open, recent}
    for table in ("timeline", "outbox", "incident_receivers"):
        assert world.count(table, "incident_id = ?", (old,)) == 0
    assert world.incidents.get(still_open) is not None  # open: kept, with its timeline
    assert world.count("timeline", "incident_id = ?", (still_open,)) > 0
    assert world.count("timeline", "incident_id = ?", (recent,)) > 0
    assert world.count("outbox", "incident_id = ?", (recent,)) == 2
    assert world.count("outbox", "incident_id = ?", (still_open,)) == 3  # day 1 < 90 days ago

    # A day later StillOpen's first trigger has passed retention; the open incident stays.
    pruned = prune(world.conn, T0 + RETENTION + DAY + timedelta(minutes=1), RETENTION)
    assert (pruned.outbox, pruned.incidents) == (1, 0)
    assert world.count("outbox", "incident_id = ?", (still_open,)) == 2
    assert world.incidents.get(still_open) is not None


async def test_an_incident_with_a_page_still_pending_is_kept(world: World) -> None:
    iid = await world.fire("Stuck", T0)
    world.receiver.failing = True
    await world.resolve("Stuck", T0 + timedelta(minutes=1))  # its resolve cannot be delivered
    assert world.count("outbox", "state = 'pending'") == 1
    pruned = prune(world.conn, T0 + 2 * RETENTION, RETENTION)
    assert pruned.incidents == 0 and world.incidents.get(iid) is not None
    world.receiver.failing = False
    await world.outbox.drain()
    pruned = prune(world.conn, T0 + 2 * RETENTION, RETENTION)
    assert pruned.incidents == 1 and world.incidents.get(iid) is None


async def test_passes_are_bounded_and_periodic(world: World) -> None:
    for i in range(25):
        await world.fire("Flap", T0 + i * timedelta(minutes=2), check=f"c{i}")
        await world.resolve("Flap", T0 + i * timedelta(minutes=2) + timedelta(minutes=1), check=f"c{i}")
    later = T0 + RETENTION + DAY
    assert prune(world.conn, later, RETENTION, batch=10).full
    assert world.count("incidents") == 15

    sleeps: list[float] = []

    class Stop(Exception):
        pass

    async def sleep(s: float) -> None:
        sleeps.append(s)
        if len(sleeps) == 2:
            raise Stop

    retention = Retention(
        world.conn, lambda: RETENTION.total_seconds(), now=lambda: later, sleep=sleep, every_s=60, batch=4,
        max_passes=2,
    )
    first = await retention.run_once()  # two passes of 4: 8 of the 15, and says more is waiting
    assert (first.incidents, first.full) == (8, True) and world.count("incidents") == 7
    with pytest.raises(Stop):
        await retention.run()  # each wake-up: at most 2 passes, then the 60 s wait
    assert sleeps == [60, 60] and world.count("incidents") == 0
    assert world.count("timeline") == 0 and world.count("outbox") == 0
    samples = {(s.name, s.labels.get("table")): s.value for s in retention.samples()}
    assert samples[("portal_monitor_retention_deleted_total", "incidents")] == 15
    assert samples[("portal_monitor_state_file_bytes", None)] == file_bytes(world.conn)


async def test_the_file_gives_the_space_back(world: World) -> None:
    """With incremental auto-vacuum the pages freed by pruning leave the file, a bounded
    number per pass."""
    for i in range(300):
        at = T0 + i * timedelta(minutes=5)
        await world.fire("Flap", at, check="web", note=f"{i:04d}" + "x" * 400)
        await world.resolve("Flap", at + timedelta(minutes=1), check="web", note=f"{i:04d}" + "x" * 400)
    big = file_bytes(world.conn)
    pages = world.conn.execute("PRAGMA page_count").fetchone()[0]
    first = prune(world.conn, T0 + 2 * RETENTION, RETENTION, batch=1000, vacuum_pages=10)
    assert first.incidents == 300 and first.pages_freed == 10
    assert world.conn.execute("PRAGMA page_count").fetchone()[0] == pages - 10
    while prune(world.conn, T0 + 2 * RETENTION, RETENTION, vacuum_pages=10).pages_freed:
        pass
    assert world.conn.execute("PRAGMA freelist_count").fetchone()[0] == 0
    assert file_bytes(world.conn) < big / 4, (file_bytes(world.conn), big)


def test_retention_is_a_positive_duration_with_a_90_day_default() -> None:
    assert config(CFG).root.retention == 90 * 86400
    assert config("retention: 30d\n" + CFG).root.retention == 30 * 86400
    with pytest.raises(ConfigError, match="retention"):
        load_config_text("retention: 0s\n" + CFG, env={})
