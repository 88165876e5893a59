"""The runbook's texts: status update, customer communication, post-incident review and its due date."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from monitor.incidents.messages import (
    customer_communication,
    incident_url,
    review_due,
    review_template,
    runbook_steps,
    status_update,
)
from tests.fake_receivers import T0, make_notification


def test_status_update_is_the_runbooks_template() -> None:
    n = make_notification(next_update_at=T0 + timedelta(minutes=30))
    assert status_update(n) == (
        "INCIDENT UPDATE - P1 - Redis is down on cache\n"
        "Status: Investigating\n"
        "Impact: Complete service outage or data loss\n"
        "Started: 2024-05-03 14:05:09 UTC\n"
        "Last Update: 2024-05-03 14:05:14 UTC\n"
        "Current Actions:\n"
        "- Check Redis connectivity: redis-cli ping\n"
        "- Check Redis memory usage: redis-cli info memory\n"
        "- Check BFF health endpoint: curl http://localhost:4000/health\n"
        "- Runbook: https://wiki.example/runbooks/incident-response#3-redis-connection-failures\n"
        "Next Update: 2024-05-03 14:35:09 UTC"
    )


def test_status_update_when_acknowledged_and_resolved() -> None:
    acked = status_update(make_notification("acknowledge", severity="P3"))
    assert "Status: Identified" in acked
    assert "Current Actions:\n- Acknowledged: on-call is working on it\n- Check Redis" in acked
    assert "Impact: Degraded performance or partial outage" in acked
    assert "Next Update: when the status changes" in acked
    resolved = status_update(make_notification("resolve", severity="P3"))
    assert "Status: Resolved" in resolved and "Next Update: none (resolved)" in resolved
    assert "review" not in resolved  # only P1/P2 need one


def test_impact_and_times_from_the_rule_and_other_zones() -> None:
    cet = timezone(timedelta(hours=2))
    n = make_notification(labels={"impact": "Orders stuck in Pending Review"},
                          started_at=datetime(2024, 5, 3, 16, 5, 9, tzinfo=cet))
    text = status_update(n)
    assert "Impact: Orders stuck in Pending Review" in text
    assert "Started: 2024-05-03 14:05:09 UTC" in text


@pytest.mark.parametrize(("description", "steps"), [
    ("1. Verify SF_EVENTS_ENABLED\n2) Check JWT\n- Restart BFF\n\n* a\n• b",
     ["Verify SF_EVENTS_ENABLED", "Check JWT", "Restart BFF", "a", "b"]),
    ("Check the WHMCS API from the BFF host", ["Check the WHMCS API from the BFF host"]),
    ("", []),
    ("  10. tenth step  ", ["tenth step"]),
])
def test_runbook_steps(description: str, steps: list[str]) -> None:
    assert runbook_steps(description) == steps


def test_no_description_falls_back_to_the_runbook() -> None:
    text = status_update(make_notification(description="", runbook=""))
    assert "Current Actions:\n- Follow the incident-response runbook\n" in text


def test_customer_communication_p1_every_30_minutes() -> None:
    assert customer_communication(make_notification(severity="P1")) == (
        "We are currently experiencing issues with the Customer Portal.\n"
        "What's happening: Parts of the Customer Portal are unavailable.\n"
        "Impact: You may be unable to sign in or use the portal.\n"
        "Status: Our team is actively working to resolve this issue.\n"
        "We will provide updates every 30 minutes.\n"
        "We apologize for any inconvenience."
    )


def test_customer_communication_p2_hourly_with_rule_labels() -> None:
    n = make_notification(severity="P2", labels={"service": "order provisioning",
                                                 "customer_impact": "New orders are delayed."})
    text = customer_communication(n)
    assert text.startswith("We are currently experiencing issues with order provisioning.\n")
    assert "Impact: New orders are delayed.\n" in text
    assert "We will provide updates every 1 hour." in text


@pytest.mark.parametrize("severity", ["P3", "P4"])
def test_no_customer_communication_below_p2(severity: str) -> None:
    assert customer_communication(make_notification(severity=severity)) == ""


def test_customer_communication_once_resolved() -> None:
    text = customer_communication(make_notification("resolve", severity="P1"))
    assert "which are now resolved" in text and "resolved at 2024-05-03 14:50:09 UTC" in text
    assert "We will provide updates" not in text


@pytest.mark.parametrize(("resolved_at", "due"), [
    (datetime(2024, 5, 3, 14, 50, tzinfo=UTC), date(2024, 5, 8)),   # Friday → Wednesday (over the weekend)
    (datetime(2024, 5, 4, 9, 0, tzinfo=UTC), date(2024, 5, 8)),     # Saturday → Wednesday
    (datetime(2024, 5, 5, 23, 59, tzinfo=UTC), date(2024, 5, 8)),   # Sunday → Wednesday
    (datetime(2024, 5, 6, 0, 0, tzinfo=UTC), date(2024, 5, 9)),     # Monday → Thursday
    (datetime(2024, 5, 1, 12, 0, tzinfo=UTC), date(2024, 5, 6)),    # Wednesday → Monday
    (datetime(2024, 5, 2, 12, 0, tzinfo=UTC), date(2024, 5, 7)),    # Thursday → Tuesday
    # Friday 23:30 in New York is Saturday 03:30 UTC: counted from the UTC day.
    (datetime(2024, 5, 3, 23, 30, tzinfo=timezone(timedelta(hours=-4))), date(2024, 5, 8)),
    (datetime(2024, 5, 3, 14, 50), date(2024, 5, 8)),               # naive = UTC
])
def test_review_due_three_business_days_after_resolution(resolved_at: datetime, due: date) -> None:
    assert review_due(resolved_at, "P1") == due
    assert review_due(resolved_at, "P2") == due


@pytest.mark.parametrize("severity", ["P3", "P4"])
def test_no_review_due_below_p2(severity: str) -> None:
    assert review_due(datetime(2024, 5, 3, tzinfo=UTC), severity) is None


TIMELINE = [
    {"at": "2024-05-03T14:05:04Z", "event": "detected", "detail": "cache: portal_redis_up 0"},
    {"at": T0, "event": "fired", "detail": "RedisDown"},
    {"at": T0 + timedelta(seconds=1), "event": "notified", "detail": "oncall (pagerduty, L1)"},
    {"at": T0 + timedelta(seconds=2), "event": "notified", "detail": "chat (slack, L1)"},
    {"at": (T0 + timedelta(minutes=7)).timestamp(), "event": "acknowledged", "detail": "by alice | cli"},
    {"at": T0 + timedelta(minutes=30), "event": "escalated", "detail": "L2: lead"},
    {"at": T0 + timedelta(minutes=45), "event": "resolved", "detail": "cache up again"},
]


def test_review_template_filled_from_a_mapping_incident() -> None:
    incident = {"id": 12, "alertname": "RedisDown", "severity": "P1", "summary": "Redis is down on cache",
                "started_at": T0, "resolved_at": T0 + timedelta(minutes=45), "level": "L2",
                "labels": {"check": "cache", "alertname": "RedisDown"},
                "runbook": "https://wiki.example/runbooks/incident-response#3-redis-connection-failures"}
    due = review_due(incident["resolved_at"], "P1")  # type: ignore[arg-type]
    md = review_template(incident, list(reversed(TIMELINE)), due)
    assert md.startswith("# Post-Incident Review: incident 12, RedisDown (P1 - Critical)\n")
    assert "**Review due:** 2024-05-08 (3 business days after resolution)" in md
    for heading in ("## 1. Incident Summary", "## 2. Timeline", "## 3. Root Cause Analysis",
                    "## 4. Action Items"):
        assert heading in md
    assert "- **What happened?** Redis is down on cache" in md
    assert "- **When did it start/end?** 2024-05-03 14:05:09 UTC to 2024-05-03 14:50:09 UTC (45m00s)" in md
    assert "- **Alert:** `RedisDown` (alertname=RedisDown, check=cache), highest escalation level L2" in md
    assert "- **Detection time:** 2024-05-03 14:05:04 UTC" in md
    assert "- **Response time:** 2024-05-03 14:12:09 UTC (acknowledged 7m05s after detection)" in md
    assert "- **Resolution time:** 2024-05-03 14:50:09 UTC (45m05s after detection)" in md
    rows = [line for line in md.splitlines() if line.startswith("| 2024-")]
    assert rows == [
        "| 2024-05-03 14:05:04 UTC | detected | cache: portal_redis_up 0 |",
        "| 2024-05-03 14:05:09 UTC | fired | RedisDown |",
        "| 2024-05-03 14:05:10 UTC | notified | oncall (pagerduty, L1) |",
        "| 2024-05-03 14:05:11 UTC | notified | chat (slack, L1) |",
        "| 2024-05-03 14:12:09 UTC | acknowledged | by alice \\| cli |",
        "| 2024-05-03 14:35:09 UTC | escalated | L2: lead |",
        "| 2024-05-03 14:50:09 UTC | resolved | cache up again |",
    ]
    assert "- **What was the direct cause?** _to fill in_" in md
    assert "- [ ] Monitoring improvements:" in md


@dataclass(frozen=True)
class Incident:
    id: int
    alertname: str
    severity: str
    summary: str
    started_at: datetime
    resolved_at: datetime | None = None
    level: str = "L1"
    labels: dict[str, str] = field(default_factory=dict)
    runbook: str = ""


@dataclass(frozen=True)
class Entry:
    at: datetime
    event: str
    detail: str = ""


def test_review_template_from_dataclasses_open_and_unacknowledged() -> None:
    inc = Incident(3, "HighErrorRate", "P3", "Error rate 4% on bff_logs", T0)
    md = review_template(inc, [Entry(T0, "fired")], None)
    assert "# Post-Incident Review: incident 3, HighErrorRate (P3 - Medium)" in md
    assert "**Review due:** not required" in md
    assert "not resolved yet" in md and "- **Response time:** not acknowledged" in md
    assert "| 2024-05-03 14:05:09 UTC | fired |  |" in md
    assert "Runbook" not in md


def test_review_template_without_timeline() -> None:
    incident = {"id": 1, "alertname": "X", "severity": "P2", "started_at": T0}
    md = review_template(incident, [], date(2024, 5, 8))
    assert "| - | (no timeline recorded) | |" in md


def test_incident_url() -> None:
    assert incident_url("http://mon:9820/", 12) == "http://mon:9820/incidents/12"
    assert incident_url(None, 12) == ""
    assert incident_url("http://mon:9820", 0) == ""
