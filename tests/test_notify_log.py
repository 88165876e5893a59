"""Log receiver: one structured `notification` event per notification; it never fails."""

from __future__ import annotations

import io

import structlog

from monitor.delivery import build_receiver, log
from monitor.delivery.log import LogReceiver
from monitor.model import ReceiverContext
from tests.fake_receivers import make_notification


async def test_each_notification_is_one_structured_event() -> None:
    r = build_receiver("local", log.Config(type="log"), host="h", external_url=None)
    with structlog.testing.capture_logs() as logs:
        await r.send(make_notification(level="L2"))
        await r.send(make_notification("resolve"))
    await r.aclose()
    assert logs[0] == {
        "event": "notification", "log_level": "warning", "receiver": "local", "kind": "trigger",
        "escalation_level": "L2", "severity": "P1", "alertname": "RedisDown", "dedup_key": "3f1c0a9e5b7d2c48",
        "summary": "Redis is down on cache", "status": "firing", "incident_id": 12,
    }
    assert (logs[1]["event"], logs[1]["log_level"], logs[1]["kind"], logs[1]["status"]) == \
        ("notification", "info", "resolve", "resolved")


async def test_stream_gets_the_status_update_text() -> None:
    out = io.StringIO()
    r = LogReceiver("local", log.Config(type="log"), ReceiverContext(stream=out))
    with structlog.testing.capture_logs():
        await r.send(make_notification())
    assert out.getvalue().startswith("INCIDENT UPDATE - P1 - Redis is down on cache\nStatus: Investigating\n")


async def test_never_fails_even_when_its_stream_does() -> None:
    out = io.StringIO()
    out.close()  # writing raises ValueError
    r = LogReceiver("local", log.Config(type="log"), ReceiverContext(stream=out))
    with structlog.testing.capture_logs() as logs:
        await r.send(make_notification())
    assert logs[0]["event"] == "notification"
