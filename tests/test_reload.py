"""Live reload with SIGHUP against the real daemon: invalid files change nothing, checks come
and go without disturbing the others, and an incident whose rule vanished is resolved."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from tests.daemon_proc import ROOT, DaemonProcess, clean_env
from tests.fake_receivers import FakePagerDuty
from tests.fakes import FakeBff

KEY = "R0UT1NGKEY0123456789abcdefABCDEF"
REDIS_RULE = """\
  - alert: RedisDown
    expr: portal_redis_up == 0
    severity: P1
    summary: "Redis down"
"""


def config(tmp_path: Path, redis_url: str, pd_url: str, checks: str, rules: str = REDIS_RULE) -> Path:
    path = tmp_path / "alert_rules.yaml"
    path.write_text(f"""\
listen: 127.0.0.1:0
state_dir: {tmp_path / 'state'}
checks:
  - {{name: cache, type: redis, url: "{redis_url}", interval: 1s, timeout: 500ms}}
{checks}
rules:
{rules or "  []"}
receivers:
  oncall: {{type: pagerduty, routing_key: "{KEY}", url: "{pd_url}", timeout: 2s}}
escalation:
  - {{level: L1, after: 0s, severities: [P1, P2, P3, P4], receivers: [oncall]}}
""")
    return path


async def test_reload_adds_removes_checks_and_refuses_an_invalid_file(tmp_path, redis_up, postgres_up) -> None:
    async with FakePagerDuty() as pd, FakeBff() as bff:
        web = f'  - {{name: web, type: http, url: "{bff.url}", interval: 1s}}'
        path = config(tmp_path, redis_up.url, pd.url, web)
        d = await DaemonProcess.start(path)
        try:
            await d.wait_metric("portal_http_up", 1, check="web")
            await d.wait_metric("portal_redis_up", 1, check="cache")
            runs_before = await d.metric("portal_check_runs_total", check="cache", type="redis")

            good = path.read_text()
            path.write_text(good.replace("interval: 1s, timeout: 500ms", "interval: 1 s"))
            d.proc.send_signal(signal.SIGHUP)
            failed = await d.wait_event("reload_failed")
            assert failed["errors"] == 1
            error = await d.wait_event("config_error")
            assert error["error"].startswith("alert_rules.yaml:4:")
            assert "checks[0].interval: '1 s' is not a duration" in error["error"]
            await d.wait_metric("portal_monitor_config_last_reload_successful", 0)
            await d.wait_metric("portal_http_up", 1, check="web")  # still running the old config

            db = f'  - {{name: db, type: postgres, dsn: "{postgres_up.dsn}", interval: 1s}}'
            path.write_text(good.replace(web, db))
            d.proc.send_signal(signal.SIGHUP)
            done = await d.wait_event("reloaded")
            assert (done["added"], done["removed"], done["changed"]) == (["db"], ["web"], [])
            await d.wait_metric("portal_postgres_up", 1, check="db")
            await d.wait_metric("portal_monitor_config_last_reload_successful", 1)
            metrics = await d.metrics()
            assert not any(name == "portal_http_up" for name, _ in metrics)
            # The untouched check kept running, with its counters.
            assert metrics[("portal_check_runs_total", (("check", "cache"), ("type", "redis")))] >= runs_before
        finally:
            assert await d.stop() == 0


async def test_an_incident_whose_rule_vanished_resolves_with_a_note(tmp_path, redis_up) -> None:
    async with FakePagerDuty() as pd:
        path = config(tmp_path, redis_up.url, pd.url, "")
        d = await DaemonProcess.start(path)
        try:
            await d.wait_metric("portal_redis_up", 1, check="cache")
            redis_up.kill()
            await pd.wait_until(lambda: pd.actions() == ["trigger"], timeout=10)
            path.write_text(path.read_text().replace(REDIS_RULE, ""))
            d.proc.send_signal(signal.SIGHUP)
            await pd.wait_until(lambda: pd.actions() == ["trigger", "resolve"], timeout=10)
            await d.wait_metric("portal_incidents_open", 0, severity="P1")
        finally:
            assert await d.stop() == 0
    shown = subprocess.run([sys.executable, "-m", "monitor", "incidents", "show", "1", "--json", "-c", str(path)],
                           capture_output=True, text=True, cwd=ROOT, env=clean_env(), timeout=30)
    assert shown.returncode == 0, shown.stderr
    incident = json.loads(shown.stdout)
    assert incident["state"] == "resolved"
    notes = [e["detail"] for e in incident["timeline"]]
    assert any("rule 'RedisDown' no longer exists" in n for n in notes), notes


async def test_run_watch_reloads_when_the_file_changes(tmp_path, redis_up, postgres_up) -> None:
    async with FakePagerDuty() as pd:
        path = config(tmp_path, redis_up.url, pd.url, "")
        d = await DaemonProcess.start(path, "--watch")
        try:
            await d.wait_metric("portal_redis_up", 1, check="cache")
            db = f'  - {{name: db, type: postgres, dsn: "{postgres_up.dsn}", interval: 1s}}'
            text = path.read_text().replace("rules:", db + "\nrules:", 1)
            path.write_text(text)
            await d.wait_event("config_changed")
            done = await d.wait_event("reloaded")
            assert done["added"] == ["db"]
            await d.wait_metric("portal_postgres_up", 1, check="db")
        finally:
            assert await d.stop() == 0
