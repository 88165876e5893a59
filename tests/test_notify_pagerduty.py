"""PagerDuty Events API v2 receiver against a fake that validates events as PagerDuty does."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog

from monitor.config.loader import ConfigError, load_config_text
from monitor.delivery import build_receiver, build_receivers, pagerduty
from monitor.delivery.pagerduty import PagerDutyReceiver, SlidingWindowLimiter
from monitor.model import DeliveryError, ReceiverContext
from tests.fake_receivers import T0, FakePagerDuty, make_notification

KEY = "R0UT1NGKEY0123456789abcdefABCDEF"  # 32 characters
assert len(KEY) == 32


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def config(url: str, **kw: Any) -> pagerduty.Config:
    return pagerduty.Config(type="pagerduty", routing_key=KEY, url=url, **kw)


@pytest.fixture
async def pd() -> AsyncIterator[FakePagerDuty]:
    async with FakePagerDuty() as fake:
        yield fake


@pytest.fixture
async def receiver(pd: FakePagerDuty) -> AsyncIterator[PagerDutyReceiver]:
    r = PagerDutyReceiver("oncall", config(pd.url), ReceiverContext(host="mon1.example", external_url="http://mon1.example:9820"))
    yield r
    await r.aclose()


async def test_trigger_carries_every_payload_field(pd: FakePagerDuty, receiver: PagerDutyReceiver) -> None:
    await receiver.send(make_notification(value=0.0))
    assert [r.status for r in pd.requests] == [202]
    ev = pd.events[0]
    assert ev["routing_key"] == KEY
    assert ev["event_action"] == "trigger"
    assert ev["dedup_key"] == "3f1c0a9e5b7d2c48"
    p = ev["payload"]
    assert p["summary"] == "Redis is down on cache"
    assert p["source"] == "mon1.example"
    assert p["severity"] == "critical"
    assert p["timestamp"] == "2024-05-03T14:05:09Z"
    assert p["component"] == "cache"
    assert p["group"] == "portal"
    assert p["class"] == "RedisDown"
    d = p["custom_details"]
    assert d["labels"] == {"alertname": "RedisDown", "severity": "P1", "check": "cache"}
    assert d["value"] == 0.0
    assert d["runbook_steps"][0] == "Check Redis connectivity: redis-cli ping"
    assert len(d["runbook_steps"]) == 3
    assert d["escalation_level"] == "L1"
    assert d["incident_id"] == 12
    assert d["incident_url"] == "http://mon1.example:9820/incidents/12"
    assert ev["links"][0] == {"href": "https://wiki.example/runbooks/incident-response#3-redis-connection-failures",
                              "text": "Runbook: RedisDown"}
    assert pd.opened == 1 and pd.alerts["3f1c0a9e5b7d2c48"] == "triggered"


@pytest.mark.parametrize(("severity", "expected"),
                         [("P1", "critical"), ("P2", "error"), ("P3", "warning"), ("P4", "info")])
async def test_severity_follows_the_runbook_mapping(pd: FakePagerDuty, receiver: PagerDutyReceiver,
                                                    severity: str, expected: str) -> None:
    await receiver.send(make_notification(severity=severity))
    assert pd.events[0]["payload"]["severity"] == expected


async def test_source_and_group_from_config_and_vendor(pd: FakePagerDuty) -> None:
    r = PagerDutyReceiver("vendors", config(pd.url, source="portal-prod"), ReceiverContext(host="ignored", external_url=None))
    try:
        await r.send(make_notification(vendor="WHMCS", alertname="WhmcsUnavailable",
                                       labels={"check": "whmcs"}))
    finally:
        await r.aclose()
    p = pd.events[0]["payload"]
    assert (p["source"], p["group"], p["component"], p["class"]) == ("portal-prod", "WHMCS", "whmcs",
                                                                     "WhmcsUnavailable")
    assert "client_url" not in pd.events[0]
    assert [link["text"] for link in pd.events[0]["links"]] == ["Runbook: WhmcsUnavailable"]


async def test_summary_is_truncated_to_1024_characters(pd: FakePagerDuty,
                                                       receiver: PagerDutyReceiver) -> None:
    await receiver.send(make_notification(summary="x" * 5000))
    assert pd.requests[0].status == 202
    assert len(pd.events[0]["payload"]["summary"]) == 1024


async def test_acknowledge_and_resolve_use_the_same_dedup_key(pd: FakePagerDuty,
                                                              receiver: PagerDutyReceiver) -> None:
    await receiver.send(make_notification("trigger"))
    await receiver.send(make_notification("acknowledge"))
    assert pd.alerts["3f1c0a9e5b7d2c48"] == "acknowledged"
    await receiver.send(make_notification("resolve"))
    assert pd.actions() == ["trigger", "acknowledge", "resolve"]
    assert pd.alerts["3f1c0a9e5b7d2c48"] == "resolved"
    assert pd.events[2] == {"routing_key": KEY, "dedup_key": "3f1c0a9e5b7d2c48", "event_action": "resolve"}
    assert pd.opened == 1


async def test_renotify_sends_nothing(pd: FakePagerDuty, receiver: PagerDutyReceiver) -> None:
    """A repeated trigger could re-open an alert a person resolved in PagerDuty: never send one."""
    with structlog.testing.capture_logs() as logs:
        await receiver.send(make_notification("renotify"))
    assert pd.requests == []
    assert logs[0]["event"] == "pagerduty_renotify_skipped"


async def test_test_event_is_a_marked_trigger(pd: FakePagerDuty, receiver: PagerDutyReceiver) -> None:
    await receiver.send(make_notification("test", id=0, severity="P4", dedup_key="portal-monitor-test"))
    assert pd.events[0]["event_action"] == "trigger"
    assert pd.events[0]["payload"]["summary"].startswith("[TEST] ")


async def test_400_is_permanent_and_names_pagerdutys_errors(pd: FakePagerDuty,
                                                            receiver: PagerDutyReceiver) -> None:
    """The fake refuses a dedup_key over 255 characters as PagerDuty does; we must not retry."""
    with structlog.testing.capture_logs() as logs, pytest.raises(DeliveryError) as info:
        await receiver.send(make_notification(dedup_key="k" * 300))
    e = info.value
    assert e.permanent and e.retry_after is None
    assert "HTTP 400" in str(e) and "Event object is invalid" in str(e)
    assert "'dedup_key' must be a string of at most 255 characters" in str(e)
    assert "pagerduty receiver 'oncall'" in str(e) and pd.url in str(e)
    rejected = [x for x in logs if x["event"] == "pagerduty_rejected"]
    assert rejected and rejected[0]["status"] == 400 and "dedup_key" in rejected[0]["reply"]


async def test_429_is_retried_after_retry_after(pd: FakePagerDuty, receiver: PagerDutyReceiver) -> None:
    pd.answer(429, retry_after="7", times=1)
    with pytest.raises(DeliveryError) as info:
        await receiver.send(make_notification())
    assert not info.value.permanent
    assert info.value.retry_after == 7.0
    assert "rate limited (HTTP 429)" in str(info.value)
    await receiver.send(make_notification())  # the fake is back to normal
    assert [r.status for r in pd.requests] == [429, 202]


async def test_429_without_retry_after_backs_off_30s(pd: FakePagerDuty, receiver: PagerDutyReceiver) -> None:
    pd.answer(429)
    with pytest.raises(DeliveryError) as info:
        await receiver.send(make_notification())
    assert info.value.retry_after == 30.0 and not info.value.permanent


async def test_retry_after_as_http_date_uses_the_injected_clock(pd: FakePagerDuty) -> None:
    now = datetime(2024, 5, 3, 14, 0, 0, tzinfo=UTC)
    r = PagerDutyReceiver("oncall", config(pd.url), ReceiverContext(host="h", now=lambda: now))
    pd.answer(429, retry_after="Fri, 03 May 2024 14:02:30 GMT")
    try:
        with pytest.raises(DeliveryError) as info:
            await r.send(make_notification())
    finally:
        await r.aclose()
    assert info.value.retry_after == 150.0


async def test_500_is_retryable(pd: FakePagerDuty, receiver: PagerDutyReceiver) -> None:
    pd.answer(500, times=2)
    for _ in range(2):
        with pytest.raises(DeliveryError) as info:
            await receiver.send(make_notification())
        assert not info.value.permanent and "HTTP 500" in str(info.value)
    await receiver.send(make_notification())
    assert [r.status for r in pd.requests] == [500, 500, 202]
    assert len(pd.triggers()) == 1


async def test_a_hanging_pagerduty_times_out_and_is_retryable(pd: FakePagerDuty) -> None:
    r = PagerDutyReceiver("oncall", config(pd.url, timeout="200ms"), ReceiverContext(host="h"))
    pd.answer("hang")
    try:
        with pytest.raises(DeliveryError) as info:
            await r.send(make_notification())
    finally:
        await r.aclose()
    assert not info.value.permanent
    assert "no reply within 0.2s" in str(info.value)
    assert len(pd.requests) == 1 and pd.requests[0].status is None


async def test_connection_refused_is_retryable() -> None:
    fake = FakePagerDuty()
    await fake.start()
    url = fake.url
    await fake.close()
    r = PagerDutyReceiver("oncall", config(url), ReceiverContext(host="h"))
    try:
        with pytest.raises(DeliveryError) as info:
            await r.send(make_notification())
    finally:
        await r.aclose()
    assert not info.value.permanent
    assert url in str(info.value)


async def test_client_side_limit_refuses_the_101st_event_in_a_minute(pd: FakePagerDuty) -> None:
    clock = FakeClock()
    r = PagerDutyReceiver("oncall", config(pd.url), ReceiverContext(host="h", clock=clock))
    try:
        start = clock.t
        for i in range(100):  # 100 events spread over the first 30 s
            clock.t = start + i * 0.3
            await r.send(make_notification(dedup_key=f"k{i}"))
        clock.t = start + 40.0
        with pytest.raises(DeliveryError) as info:
            await r.send(make_notification(dedup_key="k100"))
        assert len(pd.requests) == 100  # refused without calling PagerDuty
        assert not info.value.permanent
        assert info.value.retry_after == pytest.approx(20.0)  # the oldest (t=0) leaves the window at 60
        assert "client-side limit of 100 events/min" in str(info.value)
        clock.t = start + 60.0
        await r.send(make_notification(dedup_key="k100"))
        assert len(pd.requests) == 101 and pd.requests[-1].status == 202
        with pytest.raises(DeliveryError) as again:  # t=0.3's slot is still taken until 60.3
            await r.send(make_notification(dedup_key="k101"))
        assert again.value.retry_after == pytest.approx(0.3)
    finally:
        await r.aclose()


async def test_limit_is_shared_by_receivers_with_the_same_routing_key(pd: FakePagerDuty) -> None:
    clock = FakeClock()
    cfgs = {"oncall": config(pd.url, rate_limit_per_minute=3),
            "lead": config(pd.url, rate_limit_per_minute=3)}
    receivers = build_receivers(cfgs, host="h", external_url=None, clock=clock)
    try:
        await receivers["oncall"].send(make_notification(dedup_key="a"))
        await receivers["lead"].send(make_notification(dedup_key="b"))
        await receivers["oncall"].send(make_notification(dedup_key="c"))
        with pytest.raises(DeliveryError):
            await receivers["lead"].send(make_notification(dedup_key="d"))
    finally:
        for r in receivers.values():
            await r.aclose()
    assert len(pd.requests) == 3


def test_limiter_window_slides() -> None:
    clock = FakeClock(0.0)
    lim = SlidingWindowLimiter(2, window_s=60, clock=clock)
    assert lim.acquire() == 0.0
    clock.t = 10
    assert lim.acquire() == 0.0
    clock.t = 59
    assert lim.acquire() == pytest.approx(1.0)
    clock.t = 60
    assert lim.acquire() == 0.0
    assert lim.acquire() == pytest.approx(10.0)


def test_routing_key_that_is_not_32_characters_is_a_config_error() -> None:
    text = "receivers:\n  oncall:\n    type: pagerduty\n    routing_key: \"${KEY}\"\n"
    with pytest.raises(ConfigError) as info:
        load_config_text(text, env={"KEY": "s3cr3t-but-short"})
    msg = str(info.value)
    assert "alert_rules.yaml:4:" in msg
    assert "receivers.oncall.routing_key: routing_key must be the 32-character integration key" in msg
    assert "got 16 characters" in msg
    assert "s3cr3t-but-short" not in msg
    loaded = load_config_text(text, env={"KEY": KEY})
    assert KEY in loaded.secrets


def test_build_receiver_builds_a_pagerduty_receiver() -> None:
    r = build_receiver("oncall", config(pagerduty.DEFAULT_URL), host="h", external_url=None)
    assert isinstance(r, PagerDutyReceiver) and r.name == "oncall"
    assert r.limiter.limit == 100


async def test_routing_key_never_reaches_messages_or_logs(pd: FakePagerDuty) -> None:
    """Every failure path, including a PagerDuty reply that quotes the key back."""
    r = PagerDutyReceiver("oncall", config(pd.url, timeout="200ms", rate_limit_per_minute=5), ReceiverContext(host="h", clock=FakeClock()))
    messages: list[str] = []
    scenarios: list[dict[str, Any]] = [
        {"status": 400, "body": {"status": "invalid event", "message": "Event object is invalid",
                                 "errors": [f"routing key {KEY} is not enabled"]}},
        {"status": 429, "retry_after": "3"},
        {"status": 500, "body": f"backend failed for {KEY}"},
        {"status": "hang"},
    ]
    with structlog.testing.capture_logs() as logs:
        for s in scenarios:
            pd.answer(s.pop("status"), **s)
            with pytest.raises(DeliveryError) as info:
                await r.send(make_notification())
            messages.append(str(info.value))
            messages.append(repr(info.value.__cause__) + repr(info.value.__context__))
        pd.reset()
        await r.send(make_notification())
        with pytest.raises(DeliveryError) as info:  # the client-side limit (5) is now reached
            await r.send(make_notification())
        messages.append(str(info.value))
    await r.aclose()
    assert any("routing key *** is not enabled" in m for m in messages)
    assert all(KEY not in m for m in messages)
    assert logs and all(KEY not in repr(event) for event in logs)


def test_oversized_custom_details_are_replaced() -> None:
    r = PagerDutyReceiver("oncall", config(pagerduty.DEFAULT_URL), ReceiverContext(host="h"))
    ev = r.event(make_notification(labels={"huge": "x" * 600_000}))
    assert ev is not None
    assert "512 KB" in ev["payload"]["custom_details"]["error"]
    assert ev["payload"]["timestamp"] == T0.isoformat().replace("+00:00", "Z")


async def test_fake_pagerduty_keeps_pagerdutys_alert_semantics(pd: FakePagerDuty,
                                                               receiver: PagerDutyReceiver) -> None:
    """What end-to-end tests count on: a repeated trigger deduplicates, one after resolve reopens,
    an acknowledge for no open alert is dropped."""
    await receiver.send(make_notification("acknowledge", dedup_key="other"))
    assert "other" not in pd.alerts
    for kind in ("trigger", "trigger", "resolve", "trigger"):
        await receiver.send(make_notification(kind))
    assert pd.opened == 2 and len(pd.triggers("3f1c0a9e5b7d2c48")) == 3
    assert pd.alerts["3f1c0a9e5b7d2c48"] == "triggered"


async def test_fake_pagerduty_can_enforce_its_own_rate_limit() -> None:
    async with FakePagerDuty(rate_limit_per_minute=2) as fake:
        r = PagerDutyReceiver("oncall", config(fake.url), ReceiverContext(host="h"))
        try:
            await r.send(make_notification())
            await r.send(make_notification())
            with pytest.raises(DeliveryError) as info:
                await r.send(make_notification())
        finally:
            await r.aclose()
    assert [q.status for q in fake.requests] == [202, 202, 429]
    assert info.value.retry_after == 30.0 and "arriving too quickly" in str(info.value)
