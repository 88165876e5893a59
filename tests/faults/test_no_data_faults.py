"""Fault rows where a firing alert's series disappears while its check still answers: no data
is not "resolved" (the rules' `no_data: keep`, see alert_rules.yaml).

- Redis restarted empty (no persistence) during a paged Platform Events stall: the replay
  keys and the stall's series are gone, but no event has arrived. No receiver gets a resolve;
  the stall shows "no data since T (why)" on the API, and PlatformEventsReplayKeysMissing
  pages for the missing keys. It resolves (as a fix) only when an event writes the key again.
- The BFF's log file deleted during HighErrorRate and re-created empty: the check answers
  again, without a request in the rule's 15 min (`portal:log_requests:increase15m` is only
  recorded over 0). No resolve while the data is missing; after `no_data_timeout` (1 h, 6 s here) the resolve says
  "closed: no data for 1h" to every receiver that was paged, never "fault cleared".

Time is the derived config's (`tests/faults/derive.py`, SCALE 600): 30 min is 3 s, 1 h 6 s.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from monitor.config.fields import format_duration
from tests.faults.bff_log import request_line
from tests.faults.derive import shrunk
from tests.faults.harness import L2_AFTER, PAGE_TIMEOUT, Rig, unix, wall
from tests.faults.pages import CLOCK_SLACK_S
from tests.faults.test_log_faults import traffic
from tests.faults.test_platform_event_faults import (
    KEYS_MISSING,
    ORDERS,
    STALL,
    PlatformEvents,
    judged,
    replay_key,
    seen,
)

# What the daemon says is missing: every series the rule reads (the recorded ones included)
STALL_WHY = ('check cache answered without portal_sf_replay_stalled_seconds/portal:sf_replay_stalled'
             f'{{channel="{ORDERS}"}}')
RATIO_WHY = ("check bff_logs answered without portal:log_errors:increase15m/portal:log_requests:increase15m/"
             "portal:stores_down:max15m")
CLOSED_1H = f"closed: no data for {format_duration(shrunk('1h'))}"  # "closed: no data for 1h", shrunk


async def api_alert(rig: Rig, name: str) -> dict[str, Any] | None:
    """The daemon's /api/v1/alerts entry of `name` (None when it is not pending or firing)."""
    status, doc = await rig._get("/api/v1/alerts")
    assert status == 200, doc
    return next((a for a in doc["data"]["alerts"] if a["name"] == name), None)


async def api_incident(rig: Rig, name: str) -> dict[str, Any] | None:
    status, doc = await rig._get("/api/v1/incidents?state=all")
    assert status == 200, doc
    return next((i for i in doc["incidents"] if i["alertname"] == name), None)


def resolves(rig: Rig, key: str) -> list[str]:
    return [p.receiver for p in rig.pages() if p.dedup_key == key and p.action == "resolve"]


@pytest.fixture
async def pe_rig(make_rig: Callable[..., Rig]) -> Rig:
    """A portal with Platform Events: ORDERS' replay key is there before the daemon starts."""
    r = make_rig(platform_events=True)
    async with r.redis_client() as c:
        await c.set(replay_key(ORDERS), 1000)
    await r.start()
    return r


async def test_redis_restarted_empty_during_a_paged_stall_keeps_it_open_and_keys_missing_explains(
        pe_rig: Rig) -> None:
    rig = pe_rig
    async with PlatformEvents(rig, (ORDERS,)) as events:
        await seen(rig, ORDERS)
        await judged(rig, ORDERS)  # with the BFF's requests flowing (PlatformEvents): see there
        events.freeze(ORDERS)
        stall = await rig.trigger("PlatformEventsStalled", "oncall", timeout=STALL + PAGE_TIMEOUT)
        await rig.trigger("PlatformEventsStalled", "vendors")
        rig.redis.stop()  # no persistence: it comes back empty
        down = await rig.trigger("RedisDown", "oncall")
        rig.redis.start()
        await rig.resolved(down.dedup_key)
        await rig.wait_metric("portal_sf_replay_keys", 0.0, check="cache")

        async def kept_without_data() -> bool:
            a = await api_alert(rig, "PlatformEventsStalled")
            return a is not None and a["no_data"] != ""
        await rig.wait(kept_without_data, "the stall kept firing without data")
        marked_at = time.perf_counter()
        a = await api_alert(rig, "PlatformEventsStalled")
        assert a is not None and a["state"] == "firing" and a["no_data_why"] == STALL_WHY, a
        assert a["no_data"] == f"no data since {a['no_data_since'][:19]}+00:00 ({STALL_WHY})", a
        inc = await api_incident(rig, "PlatformEventsStalled")
        assert inc is not None and inc["state"] == "open" and inc["no_data"] == a["no_data"], inc
        assert await rig.metric("portal_alerts_no_data", alertname="PlatformEventsStalled", severity="P2") == 1.0

        # the stall is still open, so it escalates; the missing keys page on their own
        await rig.trigger("PlatformEventsStalled", "lead", timeout=L2_AFTER + PAGE_TIMEOUT)
        keys = await rig.trigger("PlatformEventsReplayKeysMissing", "oncall", timeout=KEYS_MISSING + PAGE_TIMEOUT)
        await rig.trigger("PlatformEventsReplayKeysMissing", "vendors")
        assert resolves(rig, stall.dedup_key) == [], rig.story()
        assert time.perf_counter() - marked_at < shrunk("4h"), "the stall's no_data_timeout passed: row too slow"
        a = await api_alert(rig, "PlatformEventsStalled")
        assert a is not None and a["state"] == "firing" and a["no_data_why"] == STALL_WHY, a

        events.resume(ORDERS)  # an event arrives and writes the key again: the id moved
        await rig.resolved(stall.dedup_key)
        await rig.resolved(keys.dedup_key)
    rig.check_all((stall, {("oncall", "L1"), ("vendors", "L4"), ("lead", "L2")}),
                  (keys, {("oncall", "L1"), ("vendors", "L4")}),
                  (down, {("oncall", "L1")}))
    # a fix, said as one: no "closed: ..." reason on the stall's resolves
    for hook in (rig.vendors,):
        done = [r.json for r in hook.requests if r.json and r.json["groupKey"] == stall.dedup_key
                and r.json["status"] == "resolved"]
        assert len(done) == 1 and "closed_reason" not in done[0]["commonAnnotations"], done
        assert "Fault cleared at" in done[0]["commonAnnotations"]["status_update"], done
    pd_resolve = [e for e in rig.pd.events if e["dedup_key"] == stall.dedup_key and e["event_action"] == "resolve"]
    assert len(pd_resolve) == 2 and all(set(e) == {"routing_key", "dedup_key", "event_action"}
                                        for e in pd_resolve), pd_resolve  # oncall and lead: bare resolves
    # held (not resolved) while RedisDown fired, released, resolved once: one incident
    assert rig.incidents()[f"PlatformEventsStalled{{check=cache,channel={ORDERS}}}"] == \
        ["opened", "held: inhibited by RedisDown", "released", "resolved"], rig.story()


def failing_requests() -> list[bytes]:
    """A failing BFF's requests: 5 of every 20 fail (25%)."""
    return [request_line(200, 80) for _ in range(15)] + [request_line(500, 40) for _ in range(5)]


async def test_log_file_deleted_during_high_error_rate_is_no_data_not_a_resolve(rig: Rig) -> None:
    """The failing BFF's log deleted (the check fails: its alerts keep their state), then
    re-created empty: without a request in the last 5 min (or with the log check failing)
    HighErrorRate's share is not there at all, so it stays firing without data (never
    "resolved") and closes after `no_data_timeout` saying so."""
    async with traffic(rig, failing_requests):
        l1 = await rig.trigger("HighErrorRate", "oncall")
    rig.log.path.unlink()  # deleted: the check fails (no file can be read)
    await rig.wait_metric("portal_check_up", 0.0, check="bff_logs", type="logfile")
    failing = await rig.trigger("MonitorCheckFailing", "oncall")  # 5 min without the file
    assert failing.labels["check"] == "bff_logs"
    rig.log.path.touch()  # the BFF re-creates it, empty: the check answers, without a request
    await rig.wait_metric("portal_check_up", 1.0, check="bff_logs", type="logfile")
    await rig.resolved(failing.dedup_key)

    async def kept_without_data() -> bool:
        a = await api_alert(rig, "HighErrorRate")
        return a is not None and a["no_data_why"] == RATIO_WHY
    await rig.wait(kept_without_data, "HighErrorRate kept firing without data")
    kept = await api_alert(rig, "HighErrorRate")
    assert kept is not None and kept["no_data_since"], kept
    assert resolves(rig, l1.dedup_key) == [], rig.story()
    inc = await api_incident(rig, "HighErrorRate")
    assert inc is not None and inc["state"] == "open" and RATIO_WHY in inc["no_data"], inc

    # nothing comes back: the no-data timeout (1 h) closes it, saying so
    await rig.resolved(l1.dedup_key, timeout=shrunk("1h") + PAGE_TIMEOUT)
    (resolve,) = [p for p in rig.pages() if p.dedup_key == l1.dedup_key and p.action == "resolve"]
    # not before the no-data timeout, counted from when the daemon marked it (its own record)
    assert wall(resolve.at) - unix(kept["no_data_since"]) >= shrunk("1h") - CLOCK_SLACK_S, rig.story()
    (event,) = [e for e in rig.pd.events if e["dedup_key"] == l1.dedup_key and e["event_action"] == "resolve"]
    assert event["payload"]["custom_details"]["closed_reason"] == CLOSED_1H, event
    assert event["payload"]["summary"].startswith(f"{CLOSED_1H}: BFF error rate"), event
    inc = await api_incident(rig, "HighErrorRate")
    assert inc is not None and inc["state"] == "resolved" and inc["closed_reason"] == CLOSED_1H, inc
    rig.check_all((l1, {("oncall", "L1")}), (failing, {("oncall", "L1")}))
