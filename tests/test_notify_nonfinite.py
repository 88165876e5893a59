"""Alert values that are NaN or ±Inf reach every receiver as valid JSON.

A ratio over zero requests is NaN and a rate over a gap can be +Inf; Python's `json.dumps`
writes those as bare `NaN` / `Infinity`, which is not JSON: PagerDuty answers 400 and the page
is lost. Every fake parses strictly (as the real services do), so an invalid body is refused
there; the value arrives as the string Prometheus writes ("NaN", "+Inf", "-Inf").
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from typing import Any

import pytest
import structlog

from monitor.delivery import alertmanager, build_receiver, log, pagerduty, slack, webhook
from monitor.delivery.transport import format_value, json_body, json_value
from tests.fake_receivers import FakeAlertmanager, FakePagerDuty, FakePeer, FakeSlack, FakeWebhook, make_notification

VALUES = {"NaN": math.nan, "+Inf": math.inf, "-Inf": -math.inf}
KEY = "N0nF1n1teR0ut1ngKey0123456789abc"


def strict(raw: bytes | str) -> Any:
    def refuse(constant: str) -> Any:
        raise ValueError(f"bare {constant} in the body")

    return json.loads(raw, parse_constant=refuse)


def _pd(fake: FakePeer) -> Any:
    return pagerduty.Config(type="pagerduty", routing_key=KEY, url=fake.url)


def _slack(fake: FakePeer) -> Any:
    return slack.Config(type="slack", url=fake.url)


def _webhook(fake: FakePeer) -> Any:
    return webhook.Config(type="webhook", url=fake.url, secret="nonfinite-hmac")


def _am(fake: FakePeer) -> Any:
    return alertmanager.Config(type="alertmanager", urls=[fake.base_url])


def _pd_value(body: Any) -> Any:
    return body["payload"]["custom_details"]["value"]


def _webhook_value(body: Any) -> Any:
    return body["commonAnnotations"]["value"]


def _am_value(body: Any) -> Any:
    return body[0]["annotations"]["value"]


def _slack_value(body: Any) -> Any:
    return None  # the chat message is text: no value field to read


HTTP_RECEIVERS: dict[str, tuple[Callable[[], FakePeer], Callable[[FakePeer], Any], Callable[[Any], Any]]] = {
    "pagerduty": (FakePagerDuty, _pd, _pd_value),
    "slack": (FakeSlack, _slack, _slack_value),
    "webhook": (lambda: FakeWebhook(secret="nonfinite-hmac"), _webhook, _webhook_value),
    "alertmanager": (FakeAlertmanager, _am, _am_value),
}


@pytest.mark.parametrize("text", list(VALUES))
@pytest.mark.parametrize("kind", list(HTTP_RECEIVERS))
async def test_non_finite_values_reach_every_http_receiver_as_valid_json(kind: str, text: str) -> None:
    make_fake, make_cfg, value_of = HTTP_RECEIVERS[kind]
    async with make_fake() as fake:
        r = build_receiver(kind, make_cfg(fake), host="mon1", external_url="http://mon1:9820")
        try:
            await r.send(make_notification(value=VALUES[text], summary=f"error ratio is {text}"))
        finally:
            await r.aclose()
        assert [rec.status for rec in fake.requests] in ([200], [202]), fake.requests
        body = strict(fake.requests[0].body)
        assert body == fake.requests[0].json
        if kind != "slack":
            assert value_of(body) == text


@pytest.mark.parametrize("text", list(VALUES))
async def test_non_finite_values_reach_the_log_receiver_as_valid_json(text: str) -> None:
    """The log receiver's line, rendered as the daemon renders it (JSON), parses strictly."""
    out = io.StringIO()
    saved = structlog.get_config()
    structlog.configure(processors=[structlog.processors.JSONRenderer()],
                        logger_factory=structlog.PrintLoggerFactory(out), cache_logger_on_first_use=False)
    try:
        r = build_receiver("console", log.Config(type="log"), host="mon1", external_url=None)
        await r.send(make_notification(value=VALUES[text]))
    finally:
        structlog.configure(**saved)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert strict(lines[0])["event"] == "notification"


@pytest.mark.parametrize("make_fake", [FakePagerDuty, FakeSlack, FakeWebhook, FakeAlertmanager])
async def test_every_fake_refuses_a_bare_nan_as_the_real_services_do(make_fake: Callable[[], FakePeer]) -> None:
    """What the receivers sent before: `json.dumps` of a NaN value. PagerDuty answers 400."""
    import aiohttp

    async with make_fake() as fake, aiohttp.ClientSession() as s:
        body = json.dumps({"value": math.nan}).encode()
        assert b"NaN" in body
        async with s.post(fake.url, data=body, headers={"Content-Type": "application/json"}) as resp:
            assert resp.status == 400


def test_json_body_turns_every_non_finite_float_into_its_prometheus_string() -> None:
    doc = {"a": [math.nan, {"b": math.inf}], "c": (-math.inf, 1.5), "d": "NaN", "e": 3}
    assert strict(json_body(doc)) == {"a": ["NaN", {"b": "+Inf"}], "c": ["-Inf", 1.5], "d": "NaN", "e": 3}
    assert [json_value(v) for v in VALUES.values()] == list(VALUES)
    assert [format_value(v) for v in (*VALUES.values(), 0.25)] == [*VALUES, "0.25"]
