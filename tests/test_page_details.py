"""Pages carry what the check knows: a firing alert on a failing check carries the check's last
error (`check_error`) into PagerDuty's custom_details, Slack and the incident page, redacted.

End to end: a real daemon polls a fake BFF whose /health answers 503 with a component down;
PagerDuty (fake) receives `PortalUnreachable` whose details say "HTTP 503 ... (components down:
cache)". In-process: the Alerting step scrubs secrets from the error before it is stored.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from monitor.alerting import Alerting
from monitor.delivery import slack
from monitor.statedb import open_db
from monitor.store import Store
from monitor.web.pages import notification_of
from tests.daemon_proc import DaemonProcess, clean_env
from tests.fake_receivers import FakePagerDuty
from tests.test_api import REDIS_PW, T0, rig_config, seed

ROUTING_KEY = "PAGEDETAILSkey0123456789abcdef01"


@pytest.fixture
async def sick_bff() -> AsyncIterator[str]:
    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "error", "checks": {"database": "ok", "cache": "down"}}, status=503)

    app = web.Application()
    app.router.add_get("/health", health)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/health"
    await runner.cleanup()


@pytest.fixture
async def pagerduty() -> AsyncIterator[Any]:
    async with FakePagerDuty() as pd:
        yield pd


async def test_portal_unreachable_pages_with_the_checks_error(tmp_path: Path, sick_bff: str, pagerduty: Any) -> None:
    config = tmp_path / "alert_rules.yaml"
    config.write_text(f"""\
listen: 127.0.0.1:0
state_dir: {tmp_path / 'state'}
checks:
  - {{name: bff_health, type: http, url: "{sick_bff}", components: checks, interval: 1s, timeout: 1s}}
rules:
  - alert: PortalUnreachable
    expr: portal_http_up{{check="bff_health"}} == 0
    severity: P1
    summary: "The portal's health endpoint fails"
    description: "1. curl {sick_bff}"
receivers:
  oncall: {{type: pagerduty, routing_key: "{ROUTING_KEY}", url: "{pagerduty.url}", timeout: 2s}}
escalation:
  - {{level: L1, after: 0s, severities: [P1, P2, P3, P4], receivers: [oncall]}}
""")
    d = await DaemonProcess.start(config, env=clean_env())
    try:
        await pagerduty.wait_until(lambda: len(pagerduty.triggers()) == 1, timeout=15)
        (event,) = pagerduty.triggers()
        error = event["payload"]["custom_details"]["check_error"]
        assert error == f"{sick_bff}: HTTP 503, expected 200 (components down: cache)"
    finally:
        assert await d.stop() == 0


async def test_the_error_is_scrubbed_and_reaches_slack(tmp_path: Path) -> None:
    cfg = rig_config(tmp_path)
    store = Store()
    seed(store)  # check `cache` failed with an error that quotes its password

    def check_error(name: str) -> str:
        r = store.result(name)
        return r.error if r is not None and not r.up else ""

    alerting = Alerting(open_db(cfg.root.state_dir), cfg, store.samples, now=lambda: T0, receivers={},
                        check_error=check_error)
    alerting.evaluate(T0)
    view = alerting.incidents.get(1)
    assert view is not None and view.alertname == "RedisDown"
    assert view.alert.annotations["check_error"] == "redis://:***@127.0.0.1:1/0: connection refused"
    assert REDIS_PW not in str(view.to_dict())
    text = str(slack.message(notification_of(view, T0)))
    assert "*The check says:*\\nredis://:***@127.0.0.1:1/0: connection refused" in text
