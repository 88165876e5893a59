"""Slack incoming-webhook receiver: the Internal Status Update layout and Slack's error replies."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
import structlog

from monitor.config.loader import load_config_text
from monitor.delivery import build_receiver, slack
from monitor.delivery.slack import SlackReceiver
from monitor.model import DeliveryError, ReceiverContext
from tests.fake_receivers import T0, FakeSlack, make_notification

SLACK_SECRET_PATH = "/services/T000/B000/XXXX"


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as s:
        yield s


async def send(url: str, n: Any, **cfg: Any) -> None:
    r = SlackReceiver("chat", slack.Config(type="slack", url=url, **cfg), ReceiverContext(external_url="http://mon1.example:9820"))
    try:
        await r.send(n)
    finally:
        await r.aclose()


def fields(msg: dict[str, Any]) -> dict[str, str]:
    out = {}
    for block in msg["blocks"]:
        for f in block.get("fields", []):
            label, _, value = f["text"].partition(":*\n")
            out[label.strip("*")] = value
    return out


async def test_text_has_every_field_of_the_status_update_and_the_p1_customer_draft(fake: FakeSlack) -> None:
    await send(fake.url, make_notification(next_update_at=T0 + timedelta(minutes=30)))
    assert [r.status for r in fake.requests] == [200]
    msg = fake.messages[0]
    text = msg["text"]
    for line in [
        "INCIDENT UPDATE - P1 - Redis is down on cache",
        "Status: Investigating",
        "Impact: Complete service outage or data loss",
        "Started: 2024-05-03 14:05:09 UTC",
        "Last Update: 2024-05-03 14:05:14 UTC",
        "Current Actions:\n- Check Redis connectivity: redis-cli ping\n- Check Redis memory usage",
        "- Runbook: https://wiki.example/runbooks/incident-response#3-redis-connection-failures",
        "Next Update: 2024-05-03 14:35:09 UTC",
        "We are currently experiencing issues with the Customer Portal.",
        "What's happening: ",
        "Status: Our team is actively working to resolve this issue.",
        "We will provide updates every 30 minutes.",
        "We apologize for any inconvenience.",
    ]:
        assert line in text, line
    blocks = msg["blocks"]
    header = {"type": "plain_text", "text": "INCIDENT UPDATE - P1 - Redis is down on cache"}
    assert blocks[0] == {"type": "header", "text": header}
    assert fields(msg) == {
        "Status": "Investigating", "Impact": "Complete service outage or data loss",
        "Started": "2024-05-03 14:05:09 UTC", "Last Update": "2024-05-03 14:05:14 UTC",
        "Next Update": "2024-05-03 14:35:09 UTC", "Escalation": "L1 · incident 12",
    }
    body = "\n".join(b["text"]["text"] for b in blocks if b["type"] == "section" and "text" in b)
    assert "*Current Actions:*\n• Check Redis connectivity: redis-cli ping" in body
    assert "*Customer Communication (draft):*" in body
    context = blocks[-1]["elements"][0]["text"]
    assert "<https://wiki.example/runbooks/incident-response#3-redis-connection-failures|Runbook>" in context
    assert "<http://mon1.example:9820/incidents/12|Incident 12>" in context


async def test_p2_draft_promises_hourly_updates(fake: FakeSlack) -> None:
    await send(fake.url, make_notification(severity="P2"))
    assert "We will provide updates every 1 hour." in fake.messages[0]["text"]


@pytest.mark.parametrize("severity", ["P3", "P4"])
async def test_no_customer_draft_below_p2(fake: FakeSlack, severity: str) -> None:
    await send(fake.url, make_notification(severity=severity))
    msg = fake.messages[0]
    assert f"INCIDENT UPDATE - {severity} - " in msg["text"]
    assert "We are currently experiencing" not in msg["text"]
    assert "Customer Communication" not in str(msg["blocks"])


@pytest.mark.parametrize(("kind", "word"), [("trigger", "Investigating"), ("acknowledge", "Identified"),
                                            ("resolve", "Resolved")])
async def test_status_follows_the_incident(fake: FakeSlack, kind: str, word: str) -> None:
    await send(fake.url, make_notification(kind))
    msg = fake.messages[0]
    assert f"Status: {word}" in msg["text"]
    assert fields(msg)["Status"] == word


async def test_resolved_has_no_next_update_and_names_the_review(fake: FakeSlack) -> None:
    await send(fake.url, make_notification("resolve"))
    text = fake.messages[0]["text"]
    assert "Next Update: none (resolved)" in text
    assert "- Fault cleared at 2024-05-03 14:50:09 UTC" in text
    assert "Post-incident review due 2024-05-08" in text  # Friday → Wednesday
    assert "which are now resolved" in text


async def test_long_and_special_text_stays_within_slacks_limits(fake: FakeSlack) -> None:
    """The fake refuses blocks over Slack's limits with `invalid_blocks`, as Slack does."""
    n = make_notification(summary="<!channel> & " + "y" * 400,
                          description="\n".join(f"step {i}" for i in range(500)))
    await send(fake.url, n)
    msg = fake.messages[0]
    assert len(msg["blocks"][0]["text"]["text"]) == 150
    assert "&lt;!channel&gt; &amp; " in msg["text"]
    assert "<!channel>" not in msg["text"]


@pytest.mark.parametrize(("status", "code"), [(400, "invalid_payload"), (403, "invalid_token"),
                                              (404, "no_service"), (410, "channel_is_archived")])
async def test_slack_errors_are_permanent(fake: FakeSlack, status: int, code: str) -> None:
    fake.answer(status)
    with pytest.raises(DeliveryError) as info:
        await send(fake.url, make_notification())
    assert info.value.permanent
    assert f"HTTP {status}: {code}" in str(info.value)
    assert "slack receiver 'chat'" in str(info.value)


async def test_unknown_webhook_path_is_no_service(fake: FakeSlack) -> None:
    with pytest.raises(DeliveryError) as info:
        await send(fake.base_url + "/services/T000/B000/REVOKED", make_notification())
    assert info.value.permanent and "no_service" in str(info.value)
    assert "REVOKED" not in str(info.value)


async def test_429_is_retried_after_retry_after(fake: FakeSlack) -> None:
    fake.answer(429, retry_after="30", times=1)
    with pytest.raises(DeliveryError) as info:
        await send(fake.url, make_notification())
    assert not info.value.permanent and info.value.retry_after == 30.0
    await send(fake.url, make_notification())
    assert [r.status for r in fake.requests] == [429, 200]


@pytest.mark.parametrize("status", [500, 503])
async def test_5xx_is_retryable(fake: FakeSlack, status: int) -> None:
    fake.answer(status)
    with pytest.raises(DeliveryError) as info:
        await send(fake.url, make_notification())
    assert not info.value.permanent and "internal_error" in str(info.value)


async def test_hang_times_out_retryable(fake: FakeSlack) -> None:
    fake.answer("hang")
    with pytest.raises(DeliveryError) as info:
        await send(fake.url, make_notification(), timeout="200ms")
    assert not info.value.permanent and "no reply within 0.2s" in str(info.value)


async def test_webhook_url_never_reaches_messages_or_logs(fake: FakeSlack) -> None:
    messages = []
    with structlog.testing.capture_logs() as logs:
        for status in (400, 403, 429, 500, "hang"):
            fake.answer(status, body=f"echo {fake.url}" if status == 400 else None)
            with pytest.raises(DeliveryError) as info:
                await send(fake.url, make_notification(), timeout="200ms")
            messages.append(str(info.value))
        fake.reset()
        closed = FakeSlack()
        await closed.start()
        closed_url = closed.url
        await closed.close()
        with pytest.raises(DeliveryError) as info:
            await send(closed_url, make_notification())
        messages.append(str(info.value))
    assert all("http://127.0.0.1:" in m and "/***" in m for m in messages)
    for text in [*messages, *map(repr, logs)]:
        assert SLACK_SECRET_PATH not in text
    loaded = load_config_text(f"receivers:\n  chat: {{type: slack, url: '{fake.url}'}}\n", env={})
    assert fake.url in loaded.secrets


def test_build_receiver_builds_a_slack_receiver() -> None:
    r = build_receiver("chat", slack.Config(type="slack", url="https://hooks.slack.com/services/A/B/C"),
                       host="h", external_url=None)
    assert isinstance(r, SlackReceiver) and r.name == "chat"
