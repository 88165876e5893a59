"""Pages reach someone when a receiver is down: the escalation step's `fallback` gets a P1/P2
as well once every receiver of the step has failed its page for `fallback_after`, once; an
alert about a failing receiver (NotificationDeliveryFailing) goes to the others.

The failures are real outbox attempts (`Outbox._attempt` on a receiver that raises, one
attempt at a time so the test says exactly when), decisions take explicit datetimes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from monitor.config.model import Config
from monitor.delivery.outbox import Outbox, list_rows
from monitor.incidents import deliveries, routing
from monitor.incidents.lifecycle import Incidents
from monitor.incidents.records import next_pending
from monitor.model import DeliveryError, Notification
from monitor.statedb import open_db
from tests.incident_helpers import T0, alert, at, config, fired, last_id, queued, resolved

KEY = "0123456789abcdef0123456789abcdef"
CONFIG = f"""
fallback_after: 2m
receivers:
  oncall: {{type: pagerduty, routing_key: "{KEY}"}}
  chat:   {{type: slack, url: "http://127.0.0.1:9/services/T/B/X"}}
  lead:   {{type: pagerduty, routing_key: "{KEY[::-1]}"}}
  local:  {{type: log}}
escalation:
  - {{level: L1, after: 0s,  severities: [P1, P2, P3, P4], receivers: [oncall, chat], fallback: [local]}}
  - {{level: L2, after: 30m, severities: [P1, P2],         receivers: [lead],         fallback: [local]}}
"""


class Peer:
    """A receiver that is down (raises a 503) until `up` is set."""

    def __init__(self, name: str, up: bool = False) -> None:
        self.name = name
        self.up = up
        self.timeout_s = 5.0
        self.got: list[Notification] = []

    async def send(self, n: Notification) -> None:
        if not self.up:
            raise DeliveryError(f"{self.name}: HTTP 503", retry_after=30)
        self.got.append(n)

    async def aclose(self) -> None:
        pass


class World:
    """Incidents + outbox + peers on one state file; `attempt(now)` tries each receiver's
    next row once, as the outbox's workers would at `now`."""

    def __init__(self, conn: sqlite3.Connection, cfg: Config, *, up: tuple[str, ...] = ()) -> None:
        self.conn = conn
        self.t = T0
        self.inc = Incidents(conn, cfg)
        self.peers = {n: Peer(n, up=n in up) for n in cfg.root.receivers}
        self.outbox = Outbox(conn, self.peers, now=lambda: self.t)

    async def attempt(self, now: datetime) -> None:
        self.t = now
        for name, peer in self.peers.items():
            row = next_pending(self.conn, name)
            if row is not None:
                await self.outbox._attempt(peer, row)


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    c = open_db(tmp_path)
    yield c
    c.close()


async def test_a_p1_goes_to_the_fallback_as_well_once_every_l1_receiver_failed_for_fallback_after(
        conn: sqlite3.Connection) -> None:
    w = World(conn, config(CONFIG))
    a = alert("PortalUnreachable", "P1", check="bff_health")
    w.inc.update([a], [fired(a)], T0)
    assert queued(conn) == [("oncall", "trigger", "L1"), ("chat", "trigger", "L1")]
    await w.attempt(T0)  # both answer 503
    mark = last_id(conn)
    w.inc.update([a], [], at(1, 59))
    assert queued(conn, mark) == []  # not yet: 1m59s
    with capture_logs() as logs:
        w.inc.update([a], [], at(2))
    assert queued(conn, mark) == [("local", "trigger", "L1")]
    (event,) = [e for e in logs if e["event"] == "fallback_paged"]
    assert (event["failing"], event["receivers"], event["log_level"]) == (["oncall", "chat"], ["local"], "warning")
    note = [e.detail for e in w.inc.get(1).timeline if e.kind == "note"]  # type: ignore[union-attr]
    assert note == ["oncall, chat failed this page for 2m: paging fallback local as well"]
    w.inc.update([a], [], at(3))
    w.inc.update([a], [], at(9))
    assert queued(conn, mark) == [("local", "trigger", "L1")]  # once
    # the fallback delivers; the others recover later: each got the trigger once, all get the resolve
    w.peers["local"].up = True
    await w.attempt(at(2))
    w.peers["oncall"].up = w.peers["chat"].up = True
    await w.attempt(at(5))
    mark = last_id(conn)
    w.inc.update([], [resolved(a, at(6))], at(6))
    assert sorted(queued(conn, mark)) == [("chat", "resolve", "L1"), ("local", "resolve", "L1"),
                                          ("oncall", "resolve", "L1")]
    for _ in range(2):
        await w.attempt(at(6))
    assert {r.state for r in list_rows(conn)} == {"delivered"}
    assert {n: [x.kind for x in p.got] for n, p in w.peers.items()} == {
        "oncall": ["trigger", "resolve"], "chat": ["trigger", "resolve"], "lead": [],
        "local": ["trigger", "resolve"]}


async def test_one_l1_receiver_that_delivers_keeps_the_fallback_out(conn: sqlite3.Connection) -> None:
    w = World(conn, config(CONFIG), up=("chat",))
    a = alert("PortalUnreachable", "P1", check="bff_health")
    w.inc.update([a], [fired(a)], T0)
    await w.attempt(T0)
    w.inc.update([a], [], at(10))
    assert [r for r, _, _ in queued(conn)] == ["oncall", "chat"]


async def test_a_receiver_that_was_never_tried_has_not_failed(conn: sqlite3.Connection) -> None:
    """No attempt yet (the outbox has not got to it): not a failure, whatever the time."""
    w = World(conn, config(CONFIG))
    a = alert("PortalUnreachable", "P1", check="bff_health")
    w.inc.update([a], [fired(a)], T0)
    w.inc.update([a], [], at(10))
    assert [r for r, _, _ in queued(conn)] == ["oncall", "chat"]


@pytest.mark.parametrize("severity", ["P3", "P4"])
async def test_p3_and_p4_never_go_to_the_fallback_while_a_receiver_is_on(
        conn: sqlite3.Connection, severity: str) -> None:
    w = World(conn, config(CONFIG))
    a = alert("SlowResponses", severity, check="bff_logs")
    w.inc.update([a], [fired(a)], T0)
    await w.attempt(T0)
    w.inc.update([a], [], at(20))
    assert [r for r, _, _ in queued(conn)] == ["oncall", "chat"]


async def test_a_page_behind_a_failing_row_counts_from_when_it_was_queued(conn: sqlite3.Connection) -> None:
    """The outbox sends a receiver's rows in order: a second incident's page waits behind the
    first one's and is never tried itself; it is failing as long as its receiver is."""
    w = World(conn, config(CONFIG))
    first, second = alert("RedisDown", "P1", check="cache"), alert("DatabaseDown", "P2", check="db")
    w.inc.update([first], [fired(first)], T0)
    await w.attempt(T0)
    w.inc.update([first], [], at(2))  # first: fallback
    mark = last_id(conn)
    w.inc.update([first, second], [fired(second, at(5))], at(5))
    assert queued(conn, mark) == [("oncall", "trigger", "L1"), ("chat", "trigger", "L1")]
    w.inc.update([first, second], [], at(6, 59))
    assert queued(conn, mark) == [("oncall", "trigger", "L1"), ("chat", "trigger", "L1")]
    w.inc.update([first, second], [], at(7))
    assert queued(conn, mark)[2:] == [("local", "trigger", "L1")]
    assert list_rows(conn)[-1].incident_id == 2
    pages = deliveries.undelivered_pages(conn)
    assert [(p.incident_id, p.receiver, p.attempts) for p in pages] == [
        (1, "oncall", 1), (1, "chat", 1), (2, "oncall", 0), (2, "chat", 0)]  # local: first try pending


async def test_a_step_fallback_after_wins_over_the_top_level_one(conn: sqlite3.Connection) -> None:
    text = CONFIG.replace("fallback_after: 2m", "fallback_after: 10m").replace(
        "fallback: [local]}", "fallback: [local], fallback_after: 30s}", 1)
    w = World(conn, config(text))
    a = alert("PortalUnreachable", "P1", check="bff_health")
    w.inc.update([a], [fired(a)], T0)
    await w.attempt(T0)
    w.inc.update([a], [], at(0, 29))
    assert len(queued(conn)) == 2
    w.inc.update([a], [], at(0, 30))
    assert queued(conn)[2:] == [("local", "trigger", "L1")]


async def test_the_default_fallback_after_is_two_minutes(conn: sqlite3.Connection) -> None:
    cfg = config(CONFIG.replace("fallback_after: 2m\n", ""))
    assert routing.fallback_after(cfg.root.escalation[0], cfg) == timedelta(minutes=2)


async def test_the_l2_step_falls_back_too_when_the_lead_fails(conn: sqlite3.Connection) -> None:
    w = World(conn, config(CONFIG), up=("oncall", "chat"))
    a = alert("DatabaseDown", "P1", check="db")
    w.inc.update([a], [fired(a)], T0)
    await w.attempt(T0)
    w.inc.update([a], [], at(30))
    await w.attempt(at(30))  # lead: 503
    mark = last_id(conn)
    w.inc.update([a], [], at(32))
    assert queued(conn, mark) == [("local", "trigger", "L2")]


# ---------------------------------------------------------------- NotificationDeliveryFailing


async def test_delivery_failing_goes_to_the_receivers_that_work(conn: sqlite3.Connection) -> None:
    w = World(conn, config(CONFIG), up=("chat",))
    a = alert("PortalUnreachable", "P1", check="bff_health")
    w.inc.update([a], [fired(a)], T0)
    await w.attempt(T0)  # oncall fails, chat delivers
    ndf = alert("NotificationDeliveryFailing", "P4", receiver="oncall")
    mark = last_id(conn)
    w.inc.update([a, ndf], [fired(ndf, at(10))], at(10))
    assert queued(conn, mark) == [("chat", "trigger", "L1")]


async def test_delivery_failing_goes_to_the_fallback_when_every_receiver_fails(conn: sqlite3.Connection) -> None:
    w = World(conn, config(CONFIG))
    a = alert("PortalUnreachable", "P1", check="bff_health")
    w.inc.update([a], [fired(a)], T0)
    await w.attempt(T0)  # oncall and chat fail
    assert deliveries.failing_receivers(conn) == {"oncall", "chat"}
    mark = last_id(conn)
    ndf = [alert("NotificationDeliveryFailing", "P4", receiver=r) for r in ("oncall", "chat")]
    w.inc.update([a, *ndf], [fired(x, at(1)) for x in ndf], at(1))
    assert queued(conn, mark) == [("local", "trigger", "L1"), ("local", "trigger", "L1")]


def test_routing_avoids_the_named_receiver_even_before_it_counts_as_failing() -> None:
    cfg = config(CONFIG)
    ndf = alert("NotificationDeliveryFailing", "P4", receiver="chat")
    avoid = routing.avoided(ndf, failing=set())
    assert avoid == {"chat"}
    assert routing.step_receivers(cfg.root.escalation[0], cfg, avoid) == ["oncall"]
    assert routing.avoided(alert("RedisDown", "P1", check="cache"), failing={"oncall"}) == set()
