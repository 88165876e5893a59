"""Webhook receiver: Alertmanager's version-4 body, the HMAC signature, reply handling."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import structlog

from monitor.config.loader import load_config_text
from monitor.delivery import build_receiver, webhook
from monitor.delivery.webhook import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookReceiver,
    sign,
    verify_signature,
)
from monitor.model import DeliveryError, ReceiverContext
from tests.fake_receivers import T0, FakeWebhook, make_notification

SECRET = "whsec-0123456789-abcdef"
NOW = datetime(2024, 5, 3, 14, 5, 10, tzinfo=UTC)


def config(url: str, **kw: Any) -> webhook.Config:
    return webhook.Config(type="webhook", url=url, **kw)


@pytest.fixture
async def hook() -> AsyncIterator[FakeWebhook]:
    async with FakeWebhook() as fake:
        yield fake


async def send(cfg: webhook.Config, n: Any, **kw: Any) -> None:
    r = WebhookReceiver("management", cfg, ReceiverContext(external_url="http://mon1.example:9820", **kw))
    try:
        await r.send(n)
    finally:
        await r.aclose()


async def test_body_is_alertmanager_webhook_version_4(hook: FakeWebhook) -> None:
    await send(config(hook.url), make_notification(level="L3", value=0.0))
    body = hook.payloads[0]
    assert set(body) == {"version", "groupKey", "truncatedAlerts", "status", "receiver", "groupLabels",
                         "commonLabels", "commonAnnotations", "externalURL", "alerts"}
    assert body["version"] == "4"
    assert body["groupKey"] == "3f1c0a9e5b7d2c48"
    assert body["truncatedAlerts"] == 0
    assert body["status"] == "firing"
    assert body["receiver"] == "management"
    assert body["externalURL"] == "http://mon1.example:9820"
    labels = {"alertname": "RedisDown", "severity": "P1", "check": "cache"}
    assert body["groupLabels"] == body["commonLabels"] == labels
    [alert] = body["alerts"]
    assert set(alert) == {"status", "labels", "annotations", "startsAt", "endsAt", "generatorURL",
                          "fingerprint"}
    assert alert["status"] == "firing"
    assert alert["labels"] == labels
    assert alert["startsAt"] == "2024-05-03T14:05:09Z"
    assert alert["endsAt"] == "0001-01-01T00:00:00Z"
    assert alert["generatorURL"] == "http://mon1.example:9820/incidents/12"
    assert alert["fingerprint"] == "3f1c0a9e5b7d2c48"
    ann = alert["annotations"]
    assert ann == body["commonAnnotations"]
    assert ann["summary"] == "Redis is down on cache"
    assert ann["description"].startswith("1. Check Redis connectivity")
    assert "runbook" not in ann and ann["runbook_url"] == \
        "https://wiki.example/runbooks/incident-response#3-redis-connection-failures"
    assert (ann["incident_id"], ann["escalation_level"], ann["incident_status"], ann["notification_kind"],
            ann["value"]) == ("12", "L3", "firing", "trigger", "0")
    assert ann["incident_url"] == "http://mon1.example:9820/incidents/12"
    assert ann["status_update"].startswith(
        "INCIDENT UPDATE - P1 - Redis is down on cache\nStatus: Investigating")
    assert "We will provide updates every 30 minutes." in ann["customer_communication"]
    assert all(isinstance(v, str) for v in ann.values())


async def test_resolved_body_has_ends_at_and_no_customer_draft_below_p2(hook: FakeWebhook) -> None:
    n = make_notification("resolve", severity="P3")
    await send(config(hook.url), n)
    body = hook.payloads[0]
    assert body["status"] == body["alerts"][0]["status"] == "resolved"
    assert body["alerts"][0]["endsAt"] == "2024-05-03T14:50:09Z"
    assert "customer_communication" not in body["commonAnnotations"]
    assert body["commonAnnotations"]["incident_status"] == "resolved"


async def test_acknowledged_stays_firing_with_our_status(hook: FakeWebhook) -> None:
    await send(config(hook.url), make_notification("acknowledge"))
    body = hook.payloads[0]
    assert body["status"] == "firing"
    assert body["commonAnnotations"]["incident_status"] == "acknowledged"
    assert "Status: Identified" in body["commonAnnotations"]["status_update"]


async def test_signed_request_verifies_at_the_consumer() -> None:
    async with FakeWebhook(secret=SECRET) as hook:
        await send(config(hook.url, secret=SECRET), make_notification())
        assert [r.status for r in hook.requests] == [200]
        rec = hook.requests[0]
    ts, sig = rec.headers[TIMESTAMP_HEADER], rec.headers[SIGNATURE_HEADER]
    assert ts.isdigit() and sig.startswith("sha256=") and len(sig) == len("sha256=") + 64
    assert verify_signature(SECRET, ts, rec.body, sig)
    assert not verify_signature(SECRET, ts, rec.body.replace(b"RedisDown", b"RedisDowm"), sig)
    assert not verify_signature(SECRET, str(int(ts) + 1), rec.body, sig)
    assert not verify_signature("another-secret", ts, rec.body, sig)


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    """The documented recipe, recomputed independently, with a fixed clock."""
    import hashlib
    import hmac

    r = WebhookReceiver("management", config("http://127.0.0.1:9/hook", secret=SECRET), ReceiverContext(now=lambda: NOW))
    body, headers = r.request(make_notification())
    ts = str(int(NOW.timestamp()))
    assert headers[TIMESTAMP_HEADER] == ts == "1714745110"
    expected = hmac.new(SECRET.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert headers[SIGNATURE_HEADER] == f"sha256={expected}" == sign(SECRET, ts, body)
    assert json.loads(body)["version"] == "4"
    assert verify_signature(SECRET, ts, body.decode(), headers[SIGNATURE_HEADER], now=NOW.timestamp() + 299)
    assert not verify_signature(SECRET, ts, body, headers[SIGNATURE_HEADER], now=NOW.timestamp() + 301)
    assert not verify_signature(SECRET, "not-a-number", body, headers[SIGNATURE_HEADER])


def test_unsigned_without_secret() -> None:
    r = WebhookReceiver("management", config("http://127.0.0.1:9/hook"))
    _, headers = r.request(make_notification())
    assert headers == {}


async def test_consumer_refusing_the_signature_is_permanent() -> None:
    async with FakeWebhook(secret=SECRET) as hook:
        with pytest.raises(DeliveryError) as info:
            await send(config(hook.url, secret="wrong-secret-value"), make_notification())
    assert info.value.permanent
    assert "HTTP 401" in str(info.value) and "signature does not verify" in str(info.value)


@pytest.mark.parametrize(("status", "permanent"), [(400, True), (404, True), (410, True), (408, False),
                                                   (500, False), (502, False), (503, False)])
async def test_reply_classification(hook: FakeWebhook, status: int, permanent: bool) -> None:
    hook.answer(status)
    with pytest.raises(DeliveryError) as info:
        await send(config(hook.url), make_notification())
    assert info.value.permanent is permanent
    assert f"HTTP {status}" in str(info.value)


async def test_429_honours_retry_after(hook: FakeWebhook) -> None:
    hook.answer(429, retry_after="12")
    with pytest.raises(DeliveryError) as info:
        await send(config(hook.url), make_notification())
    assert not info.value.permanent and info.value.retry_after == 12.0


async def test_503_with_retry_after_is_honoured(hook: FakeWebhook) -> None:
    hook.answer(503, retry_after="90")
    with pytest.raises(DeliveryError) as info:
        await send(config(hook.url), make_notification())
    assert info.value.retry_after == 90.0


async def test_redirect_is_permanent(hook: FakeWebhook) -> None:
    hook.answer(301, body="moved")
    with pytest.raises(DeliveryError) as info:
        await send(config(hook.url), make_notification())
    assert info.value.permanent and "redirect" in str(info.value)
    assert len(hook.requests) == 1  # not followed


async def test_hang_times_out_retryable(hook: FakeWebhook) -> None:
    hook.answer("hang")
    with pytest.raises(DeliveryError) as info:
        await send(config(hook.url, timeout="200ms"), make_notification())
    assert not info.value.permanent and "no reply within 0.2s" in str(info.value)


async def test_secrets_never_reach_messages_or_logs(hook: FakeWebhook) -> None:
    """The URL password and the HMAC secret, on every failure path."""
    url = hook.url.replace("http://", "http://alerts:pa55w0rd-xyz@")
    cfg = config(url, secret=SECRET, timeout="200ms")
    messages = []
    with structlog.testing.capture_logs() as logs:
        for status in (500, 429, 400, "hang"):
            hook.answer(status, body=f"echo {SECRET} pa55w0rd-xyz" if status != "hang" else None)
            with pytest.raises(DeliveryError) as info:
                await send(cfg, make_notification())
            messages.append(str(info.value))
        hook.reset()
    await send(cfg, make_notification())
    assert hook.requests[-1].headers["Authorization"].startswith("Basic ")
    assert all("alerts:***@127.0.0.1" in m for m in messages)
    for text in [*messages, *map(repr, logs)]:
        assert SECRET not in text and "pa55w0rd-xyz" not in text
    text = f"receivers:\n  m: {{type: webhook, url: '{url}', secret: '{SECRET}'}}\n"
    loaded = load_config_text(text, env={})
    assert {SECRET, "pa55w0rd-xyz"} <= loaded.secrets


def test_build_receiver_builds_a_webhook_receiver() -> None:
    r = build_receiver("vendors", config("http://127.0.0.1:9/hook"), host="h", external_url=None)
    assert isinstance(r, WebhookReceiver) and r.name == "vendors"


def test_started_at_without_timezone_is_taken_as_utc() -> None:
    naive = T0.replace(tzinfo=None)
    body = webhook.webhook_body(make_notification(started_at=naive, updated_at=naive + timedelta(seconds=1)),
                                "r", None)
    assert body["alerts"][0]["startsAt"] == "2024-05-03T14:05:09Z"
    assert body["alerts"][0]["generatorURL"] == "" and body["externalURL"] == ""
