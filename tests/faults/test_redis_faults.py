"""Fault rows on the Redis server (runbook 3): stopped (alone, and with the BFF's /health
following it), at maxmemory with evictions. The Platform Event rows are in
`test_platform_event_faults.py`.

Time is the derived config's (`tests/faults/derive.py`, SCALE 600): 30 min is 3 s, 1 h 6 s.
"""

from __future__ import annotations

import pytest

from tests.faults.derive import shrunk
from tests.faults.harness import L2_AFTER, L3_AFTER, PAGE_TIMEOUT, Rig


async def test_redis_stopped_pages_redis_down_p1_up_to_l3_and_resolves(rig: Rig) -> None:
    """The BFF's /health stays healthy here (the fake does not depend on Redis): its
    reaction to the outage is `test_redis_stopped_with_the_bff_following_it...` below."""
    rig.redis.stop()
    l1 = await rig.trigger("RedisDown", "oncall")
    assert (l1.severity, l1.level, l1.labels["check"]) == ("P1", "L1", "cache")
    await rig.trigger("RedisDown", "lead", timeout=L2_AFTER + PAGE_TIMEOUT)
    await rig.trigger("RedisDown", "management", timeout=L3_AFTER + PAGE_TIMEOUT)
    rig.redis.start()
    await rig.resolved(l1.dedup_key)
    rig.check(l1, {("oncall", "L1"), ("lead", "L2"), ("management", "L3")})
    assert rig.incidents() == {
        "RedisDown{check=cache}": ["opened", "resolved"],
        # the check's own failure alert (5 min), held back by the inhibit rule
        "MonitorCheckFailing{check=cache}": ["opened", "held: inhibited by RedisDown", "resolved"],
    }, rig.story()


async def test_redis_stopped_with_the_bff_following_it_pages_redis_down_only(rig: Rig) -> None:
    """The BFF needs Redis: while Redis is down its /health answers 503 with `cache` failing
    (the shipped inhibit rules expect that). One fault, one page: during the outage that
    holds (PortalUnreachable, IntegrationDegraded and both MonitorCheckFailing are held
    back), and after it the held alerts, whose conditions have ended, are not paged.

    The BFF fails once the daemon has seen Redis down, as a BFF does that notices the outage
    on its own next use of Redis. Shipped, RedisDown (`for` 30 s) fires 30 s before
    PortalUnreachable (`for` 1 m) could; shrunk that is 50 ms, one check interval, and a BFF
    failing in the same instant as Redis would race the two checks' next runs (lost whenever
    the daemon sees the BFF fail first, and PortalUnreachable pages before its inhibitor
    fires). Seen in that order, RedisDown's `for` starts no later and is shorter.

    The BFF's /health recovers together with Redis. A BFF reconnecting 30 s after Redis is
    well inside RedisDown's keep_firing_for (2 min) in the shipped timings, but shrunk that is
    50 ms inside 200 ms: a race on a busy machine, lost whenever the daemon sees the BFF more
    than 200 ms after Redis (it then pages PortalUnreachable, rightly: a BFF still failing
    after Redis is back is a fault of its own). Recovering both at once leaves only the
    checks' own jitter between them. (A released alert only kept firing by keep_firing_for is
    not paged: tests/test_silences.py, with explicit times.)"""
    rig.redis.stop()
    await rig.wait_metric("portal_redis_up", 0.0, check="cache")
    rig.bff.component_down("cache", status=503)
    l1 = await rig.trigger("RedisDown", "oncall")
    await rig.hold(l1.at, shrunk("10m"))  # a 10-minute outage
    held = {
        "RedisDown{check=cache}": ["opened"],
        "PortalUnreachable{check=bff_health}": ["opened", "held: inhibited by RedisDown"],
        "IntegrationDegraded{check=bff_health,component=cache}": ["opened", "held: inhibited by RedisDown"],
        "MonitorCheckFailing{check=cache}": ["opened", "held: inhibited by RedisDown"],
        "MonitorCheckFailing{check=bff_health}": ["opened", "held: inhibited by PortalUnreachable"],
    }
    await rig.wait(lambda: rig.incidents() == held, "every alert of the outage opened, and held but RedisDown")
    assert {p.dedup_key for p in rig.pages()} == {l1.dedup_key}, rig.story()
    rig.bff.healthy()
    rig.redis.start()
    await rig.resolved(l1.dedup_key)
    await rig.wait(lambda: all(v[-1] == "resolved" for v in rig.incidents().values()), "every incident resolved")
    # held alerts whose condition had ended are not paged; the lead's step (30 min, 20 after
    # the outage) is paged only if this machine took that long to see the recovery
    rig.check(l1, {("oncall", "L1")} | rig.escalated(l1, {("lead", "L2")}))


async def test_redis_at_maxmemory_with_evictions_pages_memory_high_p3_to_oncall_only(rig: Rig) -> None:
    """8 MB of cache entries, then a maxmemory 2 MB above what Redis used before them: LRU
    evicts at once, and the daemon sees the memory go from no limit to full in one step.
    (Filled against the limit instead, the memory climbs through 70-90% for as long as the
    writes take, seconds on a busy machine, and RedisMemoryFullSoon rightly pages the growth.)"""
    async with rig.redis_client() as r:
        used = int((await r.info("memory"))["used_memory"])
        await r.config_set("maxmemory-policy", "allkeys-lru")
        value = b"x" * 1024
        for batch in range(8):
            async with r.pipeline(transaction=False) as pipe:
                for i in range(1000):
                    pipe.set(f"cache:invoice:{batch}:{i}", value)
                await pipe.execute()
        await r.config_set("maxmemory", used + 2 * 1024 * 1024)

        async def evicted() -> bool:
            memory, stats = await r.info("memory"), await r.info("stats")
            return int(stats["evicted_keys"]) > 0 and int(memory["used_memory"]) <= int(memory["maxmemory"])
        await rig.wait(evicted, "Redis to evict down to its maxmemory")
        l1 = await rig.trigger("RedisMemoryHigh", "oncall")
        assert (l1.severity, l1.level) == ("P3", "L1") and l1.value is not None and l1.value > 0.9
        assert (await rig.metric("portal_redis_evicted_keys_total", check="cache") or 0) > 0
        await rig.past(l1.at + L2_AFTER, "the lead's step")  # P3 never reaches the lead
        await r.config_set("maxmemory", 0)
        await r.config_set("maxmemory-policy", "noeviction")
        await r.flushall()
    await rig.resolved(l1.dedup_key)
    rig.check(l1, {("oncall", "L1")})
    assert rig.incidents() == {"RedisMemoryHigh{check=cache}": ["opened", "resolved"]}, rig.story()
