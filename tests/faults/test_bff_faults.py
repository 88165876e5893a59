"""Fault rows on the BFF's /health (runbook 3, 4, 5): a 503, and one integration failing.

Time is the derived config's (`tests/faults/derive.py`, SCALE 600): 30 min is 3 s, 1 h 6 s.
"""

from __future__ import annotations

from typing import Any

from tests.faults.harness import L2_AFTER, L3_AFTER, PAGE_TIMEOUT, Rig

PROXY_503 = "<html><head><title>503 Service Unavailable</title></head><body>Service Unavailable</body></html>"


def health(salesforce: Any) -> dict[str, Any]:
    """The BFF's reply with a Salesforce component (the fake's default has database and cache)."""
    ok = salesforce == "ok"
    return {"status": "ok" if ok else "degraded",
            "checks": {"database": {"status": "ok"}, "cache": "ok", "salesforce": {"status": salesforce}}}


async def test_health_503_pages_portal_unreachable_p1_up_to_l3_and_resolves(rig: Rig) -> None:
    rig.bff.answer(503, PROXY_503, content_type="text/html")
    l1 = await rig.trigger("PortalUnreachable", "oncall")
    assert (l1.severity, l1.level, l1.labels["check"]) == ("P1", "L1", "bff_health")
    await rig.trigger("PortalUnreachable", "lead", timeout=L2_AFTER + PAGE_TIMEOUT)
    await rig.trigger("PortalUnreachable", "management", timeout=L3_AFTER + PAGE_TIMEOUT)
    rig.bff.healthy()
    await rig.resolved(l1.dedup_key)
    rig.check(l1, {("oncall", "L1"), ("lead", "L2"), ("management", "L3")})
    assert rig.incidents() == {
        "PortalUnreachable{check=bff_health}": ["opened", "resolved"],
        "MonitorCheckFailing{check=bff_health}": ["opened", "held: inhibited by PortalUnreachable", "resolved"],
    }, rig.story()


async def test_one_component_failing_pages_integration_degraded_p3_only(rig: Rig) -> None:
    rig.bff.answer(200, health("ok"))
    await rig.wait_metric("portal_http_component_up", 1.0, check="bff_health", component="salesforce")
    rig.bff.answer(200, health("fail"))  # the BFF still serves, one integration is down
    l1 = await rig.trigger("IntegrationDegraded", "oncall")
    assert (l1.severity, l1.level, l1.labels["component"]) == ("P3", "L1", "salesforce")
    await rig.past(l1.at + L2_AFTER, "the lead's step")  # P3 never reaches the lead
    rig.bff.answer(200, health("ok"))
    await rig.resolved(l1.dedup_key)
    rig.check(l1, {("oncall", "L1")})
    assert rig.incidents() == {
        "IntegrationDegraded{check=bff_health,component=salesforce}": ["opened", "resolved"]}, rig.story()
