"""Fault rows on a receiver: PagerDuty answering 503 while a P1 fires.

The real daemon on the derived config (SCALE 600: `fallback_after` 2 min is 0.2 s; the
outbox's backoff is not scaled, 1 s doubling). Both PagerDuty receivers (`oncall`, `lead`)
post to the one fake, so both fail; the escalation step's `fallback` is `console`, the log
receiver, whose pages are the daemon's own `notification` log events.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.faults.harness import HTTP_TIMEOUT, PAGE_TIMEOUT, Rig


def console(rig: Rig, kind: str) -> list[dict[str, Any]]:
    return [e for e in rig.daemon.events
            if e.get("event") == "notification" and e.get("receiver") == "console" and e.get("kind") == kind]


async def page_text(rig: Rig) -> str:
    async with aiohttp.ClientSession() as s, s.get(rig.daemon.base + "/", timeout=HTTP_TIMEOUT) as r:
        return await r.text()


async def test_pagerduty_503_pages_the_fallback_logs_each_attempt_and_shows_the_banner(rig: Rig) -> None:
    rig.pd.answer(503)
    rig.redis.stop()
    await rig.wait(lambda: console(rig, "trigger"), "the fallback (console) to get the RedisDown page")
    (fallback,) = [e for e in console(rig, "trigger") if e["escalation_level"] == "L1"]
    assert (fallback["alertname"], fallback["severity"]) == ("RedisDown", "P1")
    iid = fallback["incident_id"]
    retries = [e for e in rig.daemon.events if e.get("event") == "notification_retry" and e["receiver"] == "oncall"]
    assert retries and retries[0]["level"] == "warning"
    assert retries[0]["message"].startswith(f"page for incident {iid} (P1 RedisDown) not delivered to oncall: "
                                            "pagerduty receiver 'oncall'")
    assert ": HTTP 503" in retries[0]["message"] and ", attempt 1, next in " in retries[0]["message"]
    assert any(e.get("event") == "fallback_paged" and e["incident_id"] == iid for e in rig.daemon.events)

    status, doc = await rig._get("/api/v1/incidents")
    assert status == 200
    assert [(p["incident_id"], p["receiver"], p["state"]) for p in doc["undelivered"]
            if p["level"] == "L1"] == [(iid, "oncall", "pending")], doc["undelivered"]
    html = await page_text(rig)
    assert '<section class="banner" id="undelivered">' in html and "<b>oncall</b>" in html

    rig.pd.reset()  # PagerDuty is back: the outbox's next retry delivers
    l1 = await rig.trigger("RedisDown", "oncall", timeout=PAGE_TIMEOUT + 20)  # backoff: up to 16 s by now

    async def nothing_undelivered() -> bool:
        _, d = await rig._get("/api/v1/incidents")
        return d["undelivered"] == []
    await rig.wait(nothing_undelivered, "the undelivered list to empty", timeout=PAGE_TIMEOUT + 20)
    assert 'id="undelivered"' not in await page_text(rig)

    rig.redis.start()
    await rig.resolved(l1.dedup_key, timeout=PAGE_TIMEOUT + 20)
    await rig.wait(lambda: console(rig, "resolve"), "the fallback to get the resolve")
    pages = [p for p in rig.pages() if p.dedup_key == l1.dedup_key]
    for receiver in {p.receiver for p in pages}:  # whoever was paged (lead too, if L2 came), once each
        assert [p.action for p in pages if p.receiver == receiver] == ["trigger", "resolve"], rig.story()
    assert [e["incident_id"] for e in console(rig, "resolve")].count(iid) == 1
    assert [e["incident_id"] for e in console(rig, "trigger") if e["escalation_level"] == "L1"] == [iid]
