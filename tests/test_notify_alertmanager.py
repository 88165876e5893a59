"""Alertmanager receiver: /api/v2/alerts bodies, endsAt, HA fan-out with partial failure."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import structlog

from monitor.config.loader import ConfigError, load_config_text
from monitor.delivery import alertmanager, build_receiver
from monitor.delivery.alertmanager import AlertmanagerReceiver, endpoint
from monitor.model import DeliveryError, ReceiverContext
from tests.fake_receivers import T0, FakeAlertmanager, make_notification

NOW = T0 + timedelta(seconds=5)


def receiver(*urls: str, now: datetime = NOW, **cfg: Any) -> AlertmanagerReceiver:
    return AlertmanagerReceiver("am", alertmanager.Config(type="alertmanager", urls=list(urls), **cfg), ReceiverContext(external_url="http://mon1.example:9820", now=lambda: now))


@pytest.fixture
async def am() -> AsyncIterator[FakeAlertmanager]:
    async with FakeAlertmanager() as fake:
        yield fake


async def send(r: AlertmanagerReceiver, n: Any) -> None:
    try:
        await r.send(n)
    finally:
        await r.aclose()


async def test_firing_alert_body(am: FakeAlertmanager) -> None:
    await send(receiver(am.base_url), make_notification(level="L2"))
    assert [(r.path, r.status) for r in am.requests] == [("/api/v2/alerts", 200)]
    [alert] = am.requests[0].json
    assert set(alert) == {"labels", "annotations", "startsAt", "endsAt", "generatorURL"}
    assert alert["labels"] == {"alertname": "RedisDown", "severity": "P1", "check": "cache"}
    ann = alert["annotations"]
    assert ann["summary"] == "Redis is down on cache"
    assert ann["runbook_url"] == "https://wiki.example/runbooks/incident-response#3-redis-connection-failures"
    assert (ann["incident_id"], ann["escalation_level"], ann["incident_status"]) == ("12", "L2", "firing")
    assert ann["status_update"].startswith("INCIDENT UPDATE - P1 - ")
    assert alert["startsAt"] == "2024-05-03T14:05:09Z"
    assert alert["endsAt"] == "2024-05-03T15:05:14Z"  # now + resend_ttl (1h)
    assert alert["generatorURL"] == "http://mon1.example:9820/incidents/12"
    assert len(am.firing(NOW + timedelta(minutes=59))) == 1
    assert am.firing(NOW + timedelta(minutes=61)) == []


async def test_ends_at_covers_the_next_planned_post(am: FakeAlertmanager) -> None:
    """A P4 re-posted every 24 h must not be resolved by Alertmanager in between."""
    n = make_notification(severity="P4", next_update_at=NOW + timedelta(hours=24))
    await send(receiver(am.base_url, resend_ttl="30m"), n)
    assert am.requests[0].json[0]["endsAt"] == "2024-05-04T14:35:14Z"


async def test_resolve_sets_ends_at_to_resolved_at(am: FakeAlertmanager) -> None:
    await send(receiver(am.base_url), make_notification())
    resolved_at = T0 + timedelta(minutes=45)
    n = make_notification("resolve", id=2, resolved_at=resolved_at)
    await send(receiver(am.base_url, now=resolved_at), n)
    assert am.requests[1].json[0]["endsAt"] == "2024-05-03T14:50:09Z"
    assert am.requests[1].json[0]["annotations"]["incident_status"] == "resolved"
    assert len(am.alerts) == 1  # the same labels: the same Alertmanager alert
    assert am.firing(resolved_at + timedelta(seconds=1)) == []


async def test_test_alert_clears_itself(am: FakeAlertmanager) -> None:
    await send(receiver(am.base_url), make_notification("test", id=0))
    assert am.requests[0].json[0]["endsAt"] == "2024-05-03T14:10:14Z"
    assert am.requests[0].json[0]["annotations"]["summary"] == "Redis is down on cache"
    assert am.requests[0].json[0]["annotations"]["status_update"].startswith("INCIDENT UPDATE - P1 - [TEST] ")


def test_endpoint_accepts_base_and_full_urls() -> None:
    assert endpoint("http://am:9093") == "http://am:9093/api/v2/alerts"
    assert endpoint("http://am:9093/") == "http://am:9093/api/v2/alerts"
    assert endpoint("http://proxy/alertmanager") == "http://proxy/alertmanager/api/v2/alerts"
    assert endpoint("http://am:9093/api/v2/alerts") == "http://am:9093/api/v2/alerts"
    assert endpoint("http://am:9093/api/v2/alerts/") == "http://am:9093/api/v2/alerts"


async def test_route_prefix_and_full_urls_reach_the_api() -> None:
    async with FakeAlertmanager(prefix="/am") as am:
        await send(receiver(am.base_url + "/am/", am.url), make_notification())
        # The two spellings name one endpoint: posted once.
        assert [(r.path, r.status) for r in am.requests] == [("/am/api/v2/alerts", 200)]


async def test_all_alertmanagers_get_the_alert_and_a_retry_goes_only_to_the_failed_one() -> None:
    async with FakeAlertmanager() as am1, FakeAlertmanager() as am2:
        am2.answer(500, times=1)
        r = receiver(am1.base_url, am2.base_url)
        try:
            with pytest.raises(DeliveryError) as info:
                await r.send(make_notification(id=7))
            e = info.value
            assert not e.permanent
            assert f"alertmanager receiver 'am' ({am2.url}): HTTP 500" in str(e)
            assert am1.url not in str(e)
            assert "(1 of 2 accepted)" in str(e)
            await r.send(make_notification(id=7))  # the outbox retries the same notification
        finally:
            await r.aclose()
        assert [q.status for q in am1.requests] == [200]
        assert [q.status for q in am2.requests] == [500, 200]
        assert len(am1.alerts) == len(am2.alerts) == 1


async def test_one_alertmanager_down_is_retryable_with_retry_after() -> None:
    async with FakeAlertmanager() as am1, FakeAlertmanager() as am2:
        am2.answer(503, retry_after="20")
        with pytest.raises(DeliveryError) as info:
            await send(receiver(am1.base_url, am2.base_url), make_notification())
        assert not info.value.permanent and info.value.retry_after == 20.0
        assert len(am1.alerts) == 1


async def test_400_from_one_is_permanent_once_the_others_accepted() -> None:
    async with FakeAlertmanager() as am1, FakeAlertmanager() as am2, FakeAlertmanager() as am3:
        am2.answer(400, body='"bad alert"')
        am3.answer(500, times=1)
        r = receiver(am1.base_url, am2.base_url, am3.base_url)
        try:
            with pytest.raises(DeliveryError) as first:
                await r.send(make_notification(id=9))
            assert not first.value.permanent  # am3 may still take it
            with pytest.raises(DeliveryError) as second:
                await r.send(make_notification(id=9))
            assert second.value.permanent
            assert f"({am2.url}): rejected with HTTP 400: \"bad alert\"" in str(second.value)
            assert "(2 of 3 accepted)" in str(second.value)
        finally:
            await r.aclose()
        assert [len(a.requests) for a in (am1, am2, am3)] == [1, 1, 2]


async def test_alertmanagers_own_validation_refuses_a_bad_label_name(am: FakeAlertmanager) -> None:
    with pytest.raises(DeliveryError) as info:
        await send(receiver(am.base_url), make_notification(labels={"bad-name": "x"}))
    assert info.value.permanent and "invalid label name 'bad-name'" in str(info.value)


async def test_hang_times_out_retryable(am: FakeAlertmanager) -> None:
    am.answer("hang")
    with pytest.raises(DeliveryError) as info:
        await send(receiver(am.base_url, timeout="200ms"), make_notification())
    assert not info.value.permanent and "no reply within 0.2s" in str(info.value)


async def test_url_password_never_reaches_messages_or_logs(am: FakeAlertmanager) -> None:
    url = am.base_url.replace("http://", "http://admin:am-pa55word@")
    with structlog.testing.capture_logs() as logs:
        am.answer(500, body="am-pa55word leaked")
        with pytest.raises(DeliveryError) as info:
            await send(receiver(url), make_notification())
    assert "admin:***@127.0.0.1" in str(info.value)
    assert "am-pa55word" not in str(info.value) and "am-pa55word" not in repr(logs)
    am.reset()
    await send(receiver(url), make_notification())
    assert am.requests[-1].headers["Authorization"].startswith("Basic ")


def test_config_refuses_api_v1_and_non_http_urls() -> None:
    text = "receivers:\n  am: {type: alertmanager, urls: ['http://am:9093/api/v1/alerts']}\n"
    with pytest.raises(ConfigError) as info:
        load_config_text(text, env={})
    assert "API v1 was removed in Alertmanager 0.27" in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_config_text("receivers:\n  am: {type: alertmanager, urls: ['am:9093']}\n", env={})
    assert "starts with http:// or https://" in str(info.value)
    text = "receivers:\n  am: {type: alertmanager, urls: ['http://am:9093'], resend_ttl: 2h}\n"
    cfg = load_config_text(text, env={})
    am = cfg.root.receivers["am"]
    assert isinstance(am, alertmanager.Config) and am.resend_ttl == 7200.0


def test_build_receiver_builds_an_alertmanager_receiver() -> None:
    r = build_receiver("am", alertmanager.Config(type="alertmanager", urls=["http://a:9093", "http://b:9093"]),
                       host="h", external_url=None)
    assert isinstance(r, AlertmanagerReceiver)
    assert r.endpoints == ["http://a:9093/api/v2/alerts", "http://b:9093/api/v2/alerts"]


def test_naive_times_are_utc() -> None:
    n = make_notification(started_at=datetime(2024, 5, 3, 14, 5, 9))
    body = alertmanager.alert_body(n, now=datetime(2024, 5, 3, 14, 6, tzinfo=UTC), resend_ttl=60,
                                   external_url=None)
    assert body[0]["startsAt"] == "2024-05-03T14:05:09Z" and body[0]["endsAt"] == "2024-05-03T14:07:00Z"
    assert body[0]["generatorURL"] == ""
