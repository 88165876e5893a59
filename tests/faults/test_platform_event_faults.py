"""Fault rows on the Salesforce Platform Event replay ids in Redis (runbook 1): a frozen key,
deleted keys, and Redis down together with a stall in both orders (the inhibit rule
RedisDown -> PlatformEventsStalled's case).

Every row here runs a portal with Platform Events: the replay key of ORDERS exists before the
daemon starts, and the rules that need replay keys stay on (`platform_events=True`).

The shipped rules judge a silence by the BFF's traffic, not by the clock alone: a channel is
judged once it has 20 events in the (shrunk) day, by its share of the requests the BFF logged
(`portal_log_requests_total` of the logfile check), and a silence pages once it is over 30 min
AND ln(N) + 5.3 events (N: its events in the day, 8.7 at 30) were expected since the channel's
last one (`for: 0s`). So the world of these rows is a BFF that logs requests while events arrive
(`PlatformEvents`: one event per channel and `REQUESTS_PER_EVENT` request lines every shrunk
minute, requests going on whatever the channels do), and a row lets `JUDGED_EVENTS` events
arrive (`judged()`) before it freezes a channel. At that traffic the expected events pass the
threshold before the silence's 30 min (the share is counted outside the silence; the request
count at the last event is taken up to 2.5 min late, the `[30s]` window at its floor, see
tests/faults/derive.py): a stall pages at `STALL`.

Several channels stopping together page once: a channel silent since before another was
judged stalled is part of that page. The rows with one channel, as those with Redis down, page
that channel's stall.

Time is the derived config's (`tests/faults/derive.py`, SCALE 600): 30 min is 3 s, the stall
threshold of 1800 s is 3 s, and a stall pages 30 min (3 s) after the id stopped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.faults.bff_log import request_line
from tests.faults.derive import shrunk
from tests.faults.harness import L2_AFTER, PAGE_TIMEOUT, Rig, wall
from tests.faults.pages import CLOCK_SLACK_S

ORDERS = "/event/OrderProvisionRequested__e"
STATUS = "/event/OrderStatusChanged__e"
# PlatformEventsStalled: stalled > 1800 s with ln(N) + 5.3 events expected (reached first, before
# 19 min: see above)
STALL = shrunk("30m")
KEYS_MISSING = shrunk("35m")  # PlatformEventsReplayKeysMissing: no replay key, for 35m
REQUESTS_PER_EVENT = 10  # request lines the BFF logs per event of a channel
# Events of each judged channel before a row freezes it: the 20 a channel needs to be judged,
# and 10 more, a margin so that its share of the traffic is known well before the silence's
# 30 min.
JUDGED_EVENTS = 30


def replay_key(channel: str) -> str:
    return f"sf:pe:replay:{channel}"


@pytest.fixture
async def rig(make_rig: Callable[..., Rig]) -> Rig:
    """A started row of a portal that has received Platform Events: ORDERS' replay key is there."""
    r = make_rig(platform_events=True)
    async with r.redis_client() as c:
        await c.set(replay_key(ORDERS), 1000)
    await r.start()
    return r


class PlatformEvents:
    """The BFF's Platform Event subscriber, and the requests it logs meanwhile: each event
    advances its channel's replay id (one event per channel every shrunk minute), and the BFF
    logs `REQUESTS_PER_EVENT` ordinary requests in the same minute, whatever the channels do
    (a silence is judged by the requests it spans). `freeze(channel)`: its subscription
    stopped receiving. A row freezes every channel before it stops Redis."""

    def __init__(self, rig: Rig, channels: tuple[str, ...], every_s: float = shrunk("1m")) -> None:
        self.rig = rig
        self.channels = set(channels)
        self.every_s = every_s
        self.ids = dict.fromkeys(channels, 1000)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._requests: asyncio.Task[int] | None = None

    async def __aenter__(self) -> PlatformEvents:
        half = REQUESTS_PER_EVENT // 2  # in two writes per event interval, as a steady trickle
        self._requests = asyncio.create_task(self.rig.log.traffic(
            lambda: [request_line(200, 80) for _ in range(half)], self._stop, every_s=self.every_s / 2,
            max_ticks=20_000))
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        for task in (self._task, self._requests):
            if task is not None:
                await task

    async def _run(self) -> None:
        async with self.rig.redis_client() as r:
            for _ in range(10_000):  # bounded: a row lasts seconds
                if self._stop.is_set():
                    return
                for channel in sorted(self.channels):
                    self.ids[channel] += 1
                    try:
                        await r.set(replay_key(channel), self.ids[channel])
                    except RedisConnectionError:  # the pooled connection died with a restart:
                        await r.set(replay_key(channel), self.ids[channel])  # once more, on a new one
                try:
                    async with asyncio.timeout(self.every_s):
                        await self._stop.wait()
                except TimeoutError:
                    pass

    def freeze(self, channel: str) -> None:
        self.channels.discard(channel)

    def resume(self, channel: str) -> None:
        self.channels.add(channel)


@asynccontextmanager
async def restarted_from_rdb(rig: Rig) -> AsyncIterator[None]:
    """Redis stopped after a SAVE, so that `rig.redis.start()` inside the block loads the same
    keys before it accepts a connection, as a Redis with persistence does (the disposable one
    runs with `--save ""`). The dump is removed afterwards: later restarts start empty."""
    async with rig.redis_client() as r:
        await r.save()
    rig.redis.stop()
    try:
        yield
    finally:
        (rig.redis.workdir / "dump.rdb").unlink(missing_ok=True)


async def seen(rig: Rig, *channels: str) -> None:
    """Until the daemon reports a replay id for each channel."""
    async def ok() -> bool:
        return all([await rig.metric("portal_sf_replay_id", channel=c, check="cache") for c in channels])
    await rig.wait(ok, f"replay ids of {channels}")


async def judged(rig: Rig, *channels: str) -> None:
    """Until the daemon has seen `JUDGED_EVENTS` advances of each channel (its recorded
    `portal:sf_replay_events:1d`) and knows the channel's share of the traffic
    (`portal:sf_replay_events_per_request:1d`): a silence from now on is judged."""
    async def ok() -> bool:
        for c in channels:
            events = await rig.metric("portal:sf_replay_events:1d", channel=c, check="cache")
            share = await rig.metric("portal:sf_replay_events_per_request:1d", channel=c, check="cache")
            if events is None or events < JUDGED_EVENTS or not share:
                return False
        return True
    await rig.wait(ok, f"{JUDGED_EVENTS} events of each of {channels}, and their share of the requests")


async def caught_up(rig: Rig, events: PlatformEvents, channel: str) -> None:
    """Until the daemon has seen the last id written to a frozen channel: a write still in
    flight when the channel froze would otherwise reach a Redis restarted from its RDB file
    unseen, look new, and restart the stall clock."""
    await rig.wait_metric("portal_sf_replay_id", float(events.ids[channel]), channel=channel, check="cache")


async def test_replay_key_frozen_pages_platform_events_stalled_p2_with_salesforce_l4(rig: Rig) -> None:
    async with PlatformEvents(rig, (ORDERS, STATUS)) as events:
        await seen(rig, ORDERS, STATUS)
        await judged(rig, ORDERS)
        events.freeze(ORDERS)  # the subscription to one channel stops receiving (STATUS goes on)
        l1 = await rig.trigger("PlatformEventsStalled", "oncall", timeout=STALL + PAGE_TIMEOUT)
        assert (l1.severity, l1.level, l1.labels["channel"], l1.labels["vendor"]) == \
            ("P2", "L1", ORDERS, "Salesforce")
        assert l1.value is not None and l1.value > shrunk("30m")
        await rig.trigger("PlatformEventsStalled", "vendors")
        await rig.trigger("PlatformEventsStalled", "lead", timeout=L2_AFTER + PAGE_TIMEOUT)
        events.resume(ORDERS)
        await rig.resolved(l1.dedup_key)
    rig.check(l1, {("oncall", "L1"), ("vendors", "L4"), ("lead", "L2")})
    assert rig.incidents() == {
        f"PlatformEventsStalled{{check=cache,channel={ORDERS}}}": ["opened", "resolved"]}, rig.story()


async def test_replay_keys_deleted_page_replay_keys_missing_p2_with_salesforce_l4(rig: Rig) -> None:
    """A deleted key's series (and its stall clock) disappear with it; no replay key at all for
    35 min pages PlatformEventsReplayKeysMissing, which resolves when an event writes one again."""
    async with PlatformEvents(rig, (ORDERS, STATUS)) as events:
        await seen(rig, ORDERS, STATUS)
        events.freeze(ORDERS)
        events.freeze(STATUS)
        async with rig.redis_client() as r:
            deleting_at = time.perf_counter()  # the daemon cannot see the keys gone before this
            assert await r.delete(replay_key(ORDERS), replay_key(STATUS)) == 2
        await rig.wait_metric("portal_sf_replay_keys", 0.0, check="cache")
        assert await rig.metric("portal_sf_replay_stalled_seconds", channel=ORDERS, check="cache") is None
        l1 = await rig.trigger("PlatformEventsReplayKeysMissing", "oncall", timeout=KEYS_MISSING + PAGE_TIMEOUT)
        assert l1.at - deleting_at >= KEYS_MISSING - CLOCK_SLACK_S, rig.story()
        assert (l1.severity, l1.level, l1.labels["vendor"], l1.labels["check"]) == ("P2", "L1", "Salesforce", "cache")
        await rig.trigger("PlatformEventsReplayKeysMissing", "vendors")
        events.resume(ORDERS)  # an event arrives and writes the key again
        await rig.resolved(l1.dedup_key)
    rig.check(l1, {("oncall", "L1"), ("vendors", "L4")})
    assert rig.incidents() == {"PlatformEventsReplayKeysMissing{check=cache}": ["opened", "resolved"]}, rig.story()


async def test_redis_down_with_a_stall_pages_redis_down_then_the_stall_once_redis_is_back(rig: Rig) -> None:
    """Two faults at once: the replay id stops and Redis stops. While Redis is down only
    RedisDown pages: the stall's series went with the check, so there is nothing for the
    inhibit rule to hold back (the incident of the stall is never opened, never held). Back
    with the same ids (from its RDB file), the stall counts from when the id last moved (the
    clock is in the daemon's state, not in Redis) and pages then, as Alertmanager would."""
    advanced = "portal_sf_replay_last_advance_timestamp_seconds"
    async with PlatformEvents(rig, (ORDERS,)) as events:
        await seen(rig, ORDERS)
        await judged(rig, ORDERS)
        events.freeze(ORDERS)
        await caught_up(rig, events, ORDERS)
        stopped = await rig.metric(advanced, channel=ORDERS, check="cache")  # the stall clock's start
        assert stopped is not None, rig.story()
        async with restarted_from_rdb(rig):
            down = await rig.trigger("RedisDown", "oncall")
            await rig.hold(down.at, shrunk("20m"))  # Redis down for 20 minutes
            rig.redis.start()
            await rig.resolved(down.dedup_key)
            await seen(rig, ORDERS)  # the same id, read from the restarted Redis
            # counted from when the id stopped (and Redis with it), not from when Redis came back
            assert await rig.metric(advanced, channel=ORDERS, check="cache") == stopped, rig.story()
            stall = await rig.trigger("PlatformEventsStalled", "oncall", timeout=STALL + PAGE_TIMEOUT)
        # 30 min after the id stopped: stalled over 30 min, with enough events expected
        assert wall(stall.at) - stopped >= STALL - CLOCK_SLACK_S, rig.story()
        await rig.trigger("PlatformEventsStalled", "vendors")
        events.resume(ORDERS)
        await rig.resolved(stall.dedup_key)
    # RedisDown's lead step (30 min) comes 10 min after the 20-minute outage ends: whether the
    # recovery beats it depends on the machine's speed, so the daemon's log says which it did
    rig.check_all((down, {("oncall", "L1")} | rig.escalated(down, {("lead", "L2")})),
                  (stall, {("oncall", "L1"), ("vendors", "L4")} | rig.escalated(stall, {("lead", "L2")})))
    assert rig.incidents() == {
        "RedisDown{check=cache}": ["opened", "resolved"],
        "MonitorCheckFailing{check=cache}": ["opened", "held: inhibited by RedisDown", "resolved"],
        f"PlatformEventsStalled{{check=cache,channel={ORDERS}}}": ["opened", "resolved"],  # never held
    }, rig.story()


async def test_redis_down_during_a_paged_stall_keeps_the_stall_page_open(rig: Rig) -> None:
    """The other order of the two faults: the stall has paged, then Redis stops for 10 min.
    Nothing says the stall is over, so its page stays open (RedisDown, paged, explains why it
    cannot be measured: the engine keeps the alerts of a failed check as they were) and
    resolves once the id moves again: one incident, one page, no "resolved" while no event has
    arrived. While Redis is down the inhibit rule RedisDown -> PlatformEventsStalled holds it."""
    async with PlatformEvents(rig, (ORDERS,)) as events:
        await seen(rig, ORDERS)
        await judged(rig, ORDERS)
        events.freeze(ORDERS)
        stall = await rig.trigger("PlatformEventsStalled", "oncall", timeout=STALL + PAGE_TIMEOUT)
        await rig.trigger("PlatformEventsStalled", "vendors")
        async with restarted_from_rdb(rig):
            down = await rig.trigger("RedisDown", "oncall")
            await rig.hold(down.at, shrunk("10m"))
            assert [p for p in rig.pages() if p.dedup_key == stall.dedup_key and p.action == "resolve"] == [], \
                rig.story()
            rig.redis.start()
            await rig.resolved(down.dedup_key)
        events.resume(ORDERS)
        await rig.resolved(stall.dedup_key)
    # the lead's steps (30 min) race the recovery of a 10-minute outage: see above
    rig.check_all((down, {("oncall", "L1")} | rig.escalated(down, {("lead", "L2")})),
                  (stall, {("oncall", "L1"), ("vendors", "L4")} | rig.escalated(stall, {("lead", "L2")})))
    assert rig.pd.opened == 2, rig.story()
