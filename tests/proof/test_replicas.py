"""Two replicas: two real daemons, one config, one Redis, one PagerDuty -> one alert, and a
replica killed mid-incident leaves the other to resolve it.

Each daemon has its own state directory (replicas share nothing but the targets and the
receiver); the dedup key is a hash of the alert's name and labels (`monitor.rules.engine.fingerprint`),
the same on both, so PagerDuty merges their triggers into one alert.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.daemon_proc import DaemonProcess
from tests.fake_receivers import FakePagerDuty
from tests.servers import RedisServer
from tests.test_e2e_alerting import write_config


@pytest.fixture
async def pagerduty():
    async with FakePagerDuty() as pd:
        yield pd


async def test_two_replicas_page_one_alert_and_the_survivor_resolves_it(
        tmp_path: Path, redis_up: RedisServer, pagerduty: FakePagerDuty, record_property) -> None:
    # The same config but for the state directory (listen is 127.0.0.1:0).
    a_cfg = write_config(tmp_path, redis_up.url, pagerduty.url, name="a.yaml", state="state-a")
    b_cfg = write_config(tmp_path, redis_up.url, pagerduty.url, name="b.yaml", state="state-b")
    started = await asyncio.gather(DaemonProcess.start(a_cfg), DaemonProcess.start(b_cfg), return_exceptions=True)
    daemons = [d for d in started if isinstance(d, DaemonProcess)]
    if len(daemons) < 2:  # one did not start: stop the other, say why
        for d in daemons:
            await d.kill()
        raise next(e for e in started if isinstance(e, BaseException))
    a, b = daemons
    try:
        await asyncio.gather(a.wait_ready(), b.wait_ready())
        assert a.port != b.port
        killed_at = time.perf_counter()
        redis_up.kill()
        # both replicas see it and each delivers its own trigger (their logs say so) ...
        await asyncio.gather(a.wait_event("notification_delivered", kind="trigger"),
                             b.wait_event("notification_delivered", kind="trigger"))
        await pagerduty.wait_until(lambda: len(pagerduty.triggers()) == 2, timeout=10)
        first_page_s = min(r.at for r in pagerduty.requests) - killed_at
        keys = {t["dedup_key"] for t in pagerduty.triggers()}
        # ... with one dedup key: PagerDuty has one alert, not two
        assert len(keys) == 1
        (key,) = keys
        assert pagerduty.opened == 1
        assert pagerduty.alerts == {key: "triggered"}
        assert (await a.wait_event("alert_firing"))["dedup_key"] == key
        assert (await b.wait_event("alert_firing"))["dedup_key"] == key

        await a.kill()  # SIGKILL one replica mid-incident
        redis_up.start()
        await pagerduty.wait_until(lambda: pagerduty.alerts[key] == "resolved", timeout=15)
        assert pagerduty.actions(key) == ["trigger", "trigger", "resolve"]
        resolve = next(r for r in pagerduty.requests if r.json and r.json.get("event_action") == "resolve")
        assert resolve.json["dedup_key"] == key
        assert pagerduty.opened == 1
        await b.wait_event("incident_resolved")
        await b.wait_metric("portal_incidents_open", 0, severity="P1")
        assert "incident_resolved" not in a.names()  # the killed replica did not do it
        record_property("replicas_first_trigger_after_s", round(first_page_s, 3))
        print(f"\ntwo replicas: Redis killed -> first trigger after {first_page_s * 1000:.0f} ms; "
              f"PagerDuty: {len(pagerduty.triggers())} triggers, opened {pagerduty.opened} alert, "
              f"resolved by the surviving replica")
    finally:
        await a.kill()
        assert await b.stop() == 0
