"""Fault rows on PostgreSQL (runbook 4): stopped, connections at 85% and 95% of
max_connections (20 on the disposable server), a 10-minute query.

Time is the derived config's (`tests/faults/derive.py`, SCALE 600): 30 min is 3 s, 1 h 6 s,
10 min 1 s; LongRunningQuery's 300 s threshold is 0.5 s.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import psutil
import pytest

from tests.faults.derive import shrunk
from tests.faults.harness import L2_AFTER, L3_AFTER, PAGE_TIMEOUT, Rig
from tests.servers import PG_MAX_CONNECTIONS

DAEMON_SESSIONS = 2  # the check's session and the watch's


@asynccontextmanager
async def sessions(rig: Rig, total: int) -> AsyncIterator[list[asyncpg.Connection]]:
    """Idle client sessions, so that with the daemon's own two there are `total` client
    backends; closed on exit. Starts from the daemon's two alone.

    They open and close while the daemon is paused (`Rig.paused`), so that it sees them come
    and go together, as a pool filling up or a client going away does. One by one on a busy
    machine, the count passes 80-90% for longer than an evaluation: on the way down that is
    DatabaseConnectionsHigh's own fault, its inhibitor resolved, and it pages, rightly."""
    await rig.wait_metric("portal_postgres_connections_used_ratio", DAEMON_SESSIONS / PG_MAX_CONNECTIONS,
                          check="db")
    async with rig.paused():  # a backend is in pg_stat_activity before connect() returns
        opened = await asyncio.gather(*(asyncpg.connect(rig.postgres.dsn, timeout=10)
                                        for _ in range(total - DAEMON_SESSIONS)))
    try:
        yield list(opened)
    finally:
        backends = [c.get_server_pid() for c in opened]
        async with rig.paused():
            await asyncio.gather(*(c.close(timeout=5) for c in opened))
            async with asyncio.timeout(PAGE_TIMEOUT):  # close() returns before the backends exit
                while any(psutil.pid_exists(pid) for pid in backends):
                    await asyncio.sleep(0.02)  # re-check as they exit; bounded above


async def test_postgres_stopped_pages_database_down_p1_up_to_l3_and_resolves(rig: Rig) -> None:
    rig.postgres.stop()
    l1 = await rig.trigger("DatabaseDown", "oncall")
    assert (l1.severity, l1.level, l1.labels["check"]) == ("P1", "L1", "db")
    await rig.trigger("DatabaseDown", "lead", timeout=L2_AFTER + PAGE_TIMEOUT)
    await rig.trigger("DatabaseDown", "management", timeout=L3_AFTER + PAGE_TIMEOUT)
    rig.postgres.start()
    await rig.resolved(l1.dedup_key, timeout=PAGE_TIMEOUT + 20)  # a restart replays the WAL first
    rig.check(l1, {("oncall", "L1"), ("lead", "L2"), ("management", "L3")})
    assert rig.incidents() == {
        "DatabaseDown{check=db}": ["opened", "resolved"],
        "MonitorCheckFailing{check=db}": ["opened", "held: inhibited by DatabaseDown", "resolved"],
    }, rig.story()


async def test_postgres_stopped_with_the_bff_following_it_pages_database_down_only(rig: Rig) -> None:
    """As the Redis row of the same name: while PostgreSQL is down the BFF's /health answers
    503 with `database` failing, and recovers together with PostgreSQL (why not 30 s later:
    see the Redis row). During the outage only DatabaseDown pages; after it, the held alerts,
    whose conditions have ended, are not paged."""
    rig.postgres.stop()
    # the BFF fails after the daemon has seen PostgreSQL down (why: the Redis row of the same name)
    await rig.wait_metric("portal_postgres_up", 0.0, check="db")
    rig.bff.component_down("database", status=503)
    l1 = await rig.trigger("DatabaseDown", "oncall")
    await rig.hold(l1.at, shrunk("10m"))  # a 10-minute outage
    held = {
        "DatabaseDown{check=db}": ["opened"],
        "PortalUnreachable{check=bff_health}": ["opened", "held: inhibited by DatabaseDown"],
        "IntegrationDegraded{check=bff_health,component=database}": ["opened", "held: inhibited by DatabaseDown"],
        "MonitorCheckFailing{check=db}": ["opened", "held: inhibited by DatabaseDown"],
        "MonitorCheckFailing{check=bff_health}": ["opened", "held: inhibited by PortalUnreachable"],
    }
    await rig.wait(lambda: rig.incidents() == held, "every alert of the outage opened, and held but DatabaseDown")
    assert {p.dedup_key for p in rig.pages()} == {l1.dedup_key}, rig.story()
    rig.bff.healthy()
    rig.postgres.start()
    await rig.wait_metric("portal_postgres_up", 1.0, timeout=PAGE_TIMEOUT + 20, check="db")
    await rig.resolved(l1.dedup_key)
    await rig.wait(lambda: all(v[-1] == "resolved" for v in rig.incidents().values()), "every incident resolved")
    # held alerts whose condition had ended are not paged; the lead's step (30 min, 20 after
    # the outage) is paged only if this machine took that long to see the recovery
    rig.check(l1, {("oncall", "L1")} | rig.escalated(l1, {("lead", "L2")}))


async def test_connections_at_85_percent_page_connections_high_p3_only(rig: Rig) -> None:
    async with sessions(rig, 17):
        l1 = await rig.trigger("DatabaseConnectionsHigh", "oncall")
        assert (l1.severity, l1.level, l1.value) == ("P3", "L1", 0.85)
        await rig.past(l1.at + L2_AFTER, "the lead's step")  # P3 never reaches the lead; 85% never saturates
    await rig.resolved(l1.dedup_key)
    rig.check(l1, {("oncall", "L1")})
    assert rig.incidents() == {"DatabaseConnectionsHigh{check=db}": ["opened", "resolved"]}, rig.story()


async def test_connections_at_95_percent_page_saturated_p2_and_inhibit_high(rig: Rig) -> None:
    async with sessions(rig, 19):
        l1 = await rig.trigger("DatabaseConnectionsSaturated", "oncall")
        assert (l1.severity, l1.level, l1.value) == ("P2", "L1", 0.95)
        await rig.trigger("DatabaseConnectionsSaturated", "lead", timeout=L2_AFTER + PAGE_TIMEOUT)
        # High (> 80%, 5 min) fired meanwhile and is held back by the inhibit rule
        await rig.wait(lambda: "DatabaseConnectionsHigh{check=db}" in rig.incidents(),
                       "DatabaseConnectionsHigh to fire")
    await rig.resolved(l1.dedup_key)
    rig.check(l1, {("oncall", "L1"), ("lead", "L2")})
    assert rig.incidents() == {
        "DatabaseConnectionsSaturated{check=db}": ["opened", "resolved"],
        "DatabaseConnectionsHigh{check=db}": ["opened", "held: inhibited by DatabaseConnectionsSaturated", "resolved"],
    }, rig.story()


async def test_ten_minute_query_pages_long_running_query_p3_until_it_ends(rig: Rig) -> None:
    conn = await asyncpg.connect(rig.postgres.dsn, timeout=10)
    try:
        query = asyncio.create_task(conn.fetchval("SELECT pg_sleep($1)", shrunk("10m")))
        l1 = await rig.trigger("LongRunningQuery", "oncall")
        assert (l1.severity, l1.level, l1.labels["check"]) == ("P3", "L1", "db")
        assert l1.value is not None and l1.value > shrunk("5m")
        await query  # it ends after 10 minutes: long before the lead's 30
    finally:
        await conn.close(timeout=5)
    await rig.resolved(l1.dedup_key)
    rig.check(l1, {("oncall", "L1")})
    assert rig.incidents() == {"LongRunningQuery{check=db}": ["opened", "resolved"]}, rig.story()
