"""End to end: the real daemon, a disposable Redis, a fake PagerDuty speaking Events API v2.

A fault pages exactly once, its recovery resolves the same dedup key, a PagerDuty outage
delays the page but never duplicates or loses it, and a `kill -9` of the daemon mid-incident
neither re-pages nor forgets the resolve.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.daemon_proc import DaemonProcess
from tests.fake_receivers import FakePagerDuty

ROUTING_KEY = "R0UT1NGKEY0123456789abcdefABCDEF"
RUNBOOK = "https://wiki.example/runbooks/incident-response#3-redis-connection-failures"


def write_config(tmp_path: Path, redis_url: str, pd_url: str, *, name: str = "alert_rules.yaml",
                 state: str = "state") -> Path:
    """RedisDown to one PagerDuty receiver; `name`/`state` let several daemons share a directory."""
    path = tmp_path / name
    path.write_text(f"""\
listen: 127.0.0.1:0
state_dir: {tmp_path / state}
checks:
  - {{name: cache, type: redis, url: "{redis_url}", interval: 1s, timeout: 500ms}}
rules:
  - alert: RedisDown
    expr: portal_redis_up == 0
    severity: P1
    summary: "Redis {{{{ $labels.check }}}} is down"
    description: "1. redis-cli ping"
    runbook: "{RUNBOOK}"
receivers:
  oncall: {{type: pagerduty, routing_key: "{ROUTING_KEY}", url: "{pd_url}", timeout: 2s}}
escalation:
  - {{level: L1, after: 0s, severities: [P1, P2, P3, P4], receivers: [oncall]}}
""")
    return path


@pytest.fixture
async def pagerduty():
    async with FakePagerDuty() as pd:
        yield pd


async def test_redis_down_pages_once_and_recovery_resolves(tmp_path, redis_up, pagerduty) -> None:
    d = await DaemonProcess.start(write_config(tmp_path, redis_up.url, pagerduty.url))
    try:
        await d.wait_ready()
        redis_up.kill()
        await pagerduty.wait_until(lambda: len(pagerduty.triggers()) == 1, timeout=10)
        (trigger,) = pagerduty.triggers()
        assert trigger["routing_key"] == ROUTING_KEY
        assert trigger["payload"]["severity"] == "critical"
        assert trigger["payload"]["summary"] == "Redis cache is down"
        assert RUNBOOK in [link["href"] for link in trigger["links"]]
        redis_up.start()
        await pagerduty.wait_until(lambda: pagerduty.actions() == ["trigger", "resolve"], timeout=10)
        key = trigger["dedup_key"]
        assert pagerduty.actions(key) == ["trigger", "resolve"]
        assert pagerduty.alerts == {key: "resolved"}
        await d.wait_metric("portal_incidents_open", 0, severity="P1")
    finally:
        assert await d.stop() == 0


async def test_pagerduty_outage_delays_the_page_but_sends_it_once(tmp_path, redis_up, pagerduty) -> None:
    d = await DaemonProcess.start(write_config(tmp_path, redis_up.url, pagerduty.url))
    try:
        await d.wait_ready()
        pagerduty.answer(500)
        redis_up.kill()
        await pagerduty.wait_for(3, timeout=15)  # three refused attempts, backing off
        assert pagerduty.triggers() == []
        assert await d.metric("portal_monitor_receiver_failing", receiver="oncall") == 1
        pagerduty.reset()
        await pagerduty.wait_until(lambda: len(pagerduty.triggers()) == 1, timeout=20)
        redis_up.start()
        await pagerduty.wait_until(lambda: pagerduty.actions() == ["trigger", "resolve"], timeout=20)
        assert pagerduty.opened == 1
        assert await d.metric("portal_monitor_notifications_total", receiver="oncall", result="delivered") == 2
    finally:
        assert await d.stop() == 0


async def test_kill_9_mid_incident_neither_repages_nor_forgets_the_resolve(tmp_path, redis_up, pagerduty) -> None:
    config = write_config(tmp_path, redis_up.url, pagerduty.url)
    d = await DaemonProcess.start(config)
    await d.wait_ready()
    redis_up.kill()
    await pagerduty.wait_until(lambda: len(pagerduty.triggers()) == 1, timeout=10)
    # Once the daemon has recorded the delivery. (Killed between PagerDuty's 202 and that
    # commit, it sends the trigger again after the restart: at least once, by design; the
    # same dedup_key makes PagerDuty merge it into the open alert, as `opened` shows.)
    await d.wait_event("notification_delivered")
    await d.kill()  # SIGKILL while the incident is open
    d = await DaemonProcess.start(config)
    try:
        await d.wait_ready()
        await d.wait_metric("portal_incidents_open", 1, severity="P1")
        await d.wait_metric("portal_alerts", 1, alertname="RedisDown", severity="P1", state="firing")
        redis_up.start()
        await pagerduty.wait_until(lambda: pagerduty.actions() == ["trigger", "resolve"], timeout=10)
        assert pagerduty.opened == 1 and len(pagerduty.triggers()) == 1
    finally:
        assert await d.stop() == 0
