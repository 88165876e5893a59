"""Live reload against the real daemon: invalid files change nothing, checks come and go
without disturbing the others, an incident whose rule vanished is resolved (once confirmed:
removing every rule is refused without it), a refused reload pages `ConfigReloadFailed` and
keeps the reload timestamp, 40 reloads changing 32 checks neither resolve nor re-page the
alerts that fire meanwhile, and a second daemon on the same state directory exits."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp

from tests.daemon_proc import ROOT, DaemonProcess, clean_env
from tests.fake_receivers import FakePagerDuty
from tests.fakes import FakeBff

KEY = "R0UT1NGKEY0123456789abcdefABCDEF"
TOKEN = "reload-test-token-0123456789abcdef"
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


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "monitor", *args], capture_output=True, text=True, cwd=ROOT,
                          env=clean_env(**env), timeout=60)


async def test_an_incident_whose_rule_vanished_resolves_with_a_note(tmp_path, redis_up) -> None:
    """Deleting the only rule is a mass removal: SIGHUP is refused, `reload --confirm` applies it."""
    async with FakePagerDuty() as pd:
        path = config(tmp_path, redis_up.url, pd.url, "")
        d = await DaemonProcess.start(path, env=clean_env(MONITOR_API_TOKEN=TOKEN))
        try:
            await d.wait_metric("portal_redis_up", 1, check="cache")
            redis_up.kill()
            await pd.wait_until(lambda: pd.actions() == ["trigger"], timeout=10)
            path.write_text(path.read_text().replace(REDIS_RULE, ""))
            d.proc.send_signal(signal.SIGHUP)
            refused = await d.wait_event("reload_refused")
            assert refused["would_remove_rules"] == ["RedisDown"] and refused["would_remove_checks"] == []
            await d.wait_metric("portal_monitor_config_last_reload_successful", 0)
            plain = cli("reload", "--url", d.base, MONITOR_API_TOKEN=TOKEN)
            assert plain.returncode == 1
            assert "reload refused: it would remove 0 of 1 running checks and 1 of 1 rules (RedisDown)" in plain.stderr
            assert "portal-monitor reload --confirm" in plain.stderr
            assert pd.actions() == ["trigger"]  # nothing resolved by the refused reloads
            done = cli("reload", "--url", d.base, "--confirm", MONITOR_API_TOKEN=TOKEN)
            assert (done.returncode, done.stdout.strip()) == (0, "reloaded: removed_rules RedisDown"), done.stderr
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


# ---------------------------------------------------------------- refused reloads


GUARDED = """\
listen: 127.0.0.1:0
state_dir: {state}
checks:
  - {{name: cache, type: redis, url: "{redis}", interval: 200ms, timeout: 500ms}}
rules:
  - alert: RedisDown
    expr: portal_redis_up == 0
    severity: P1
  - alert: ConfigReloadFailed
    expr: portal_monitor_config_last_reload_successful == 0
    severity: P4
receivers:
  oncall: {{type: pagerduty, routing_key: "{key}", url: "{pd}", timeout: 2s}}
escalation:
  - {{level: L1, after: 0s, severities: [P1, P2, P3, P4], receivers: [oncall]}}
"""


async def api_reload(d: DaemonProcess, query: str = "") -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.post(
            f"{d.base}/-/reload{query}", headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=aiohttp.ClientTimeout(total=30)) as r:
        return r.status, await r.json()


async def test_a_refused_reload_keeps_the_config_and_its_timestamp_and_pages_config_reload_failed(
        tmp_path, redis_up) -> None:
    async with FakePagerDuty() as pd:
        path = tmp_path / "alert_rules.yaml"
        good = GUARDED.format(state=tmp_path / "state", redis=redis_up.url, key=KEY, pd=pd.url)
        path.write_text(good)
        d = await DaemonProcess.start(path, env=clean_env(MONITOR_API_TOKEN=TOKEN))
        try:
            await d.wait_ready()
            loaded_at = await d.metric("portal_monitor_config_last_reload_timestamp_seconds")
            assert loaded_at is not None and loaded_at > 0
            path.write_text("")  # an editor that truncated the file and has not written it yet
            d.proc.send_signal(signal.SIGHUP)
            error = await d.wait_event("config_error")
            assert error["error"] == ("alert_rules.yaml:1:1: the file is empty (no checks, rules or receivers): "
                                      "a half-written save? it needs at least `checks:`")
            await pd.wait_until(lambda: [t["payload"]["class"] for t in pd.triggers()] == ["ConfigReloadFailed"],
                                timeout=10)
            assert await d.metric("portal_monitor_config_last_reload_successful") == 0
            assert await d.metric("portal_monitor_config_last_reload_timestamp_seconds") == loaded_at
            assert await d.metric("portal_redis_up", check="cache") == 1  # the old config runs on

            status, body = await api_reload(d)  # the same refusal through the API: 400 with the errors
            assert status == 400 and body["errors"] == [error["error"]] and "would_remove" not in body
            assert await d.metric("portal_monitor_config_last_reload_timestamp_seconds") == loaded_at

            path.write_text(good)
            status, body = await api_reload(d)
            assert (status, body["ok"]) == (200, True)
            assert (await d.metric("portal_monitor_config_last_reload_timestamp_seconds") or 0) > loaded_at
            await pd.wait_until(lambda: pd.actions() == ["trigger", "resolve"], timeout=10)
        finally:
            assert await d.stop() == 0


# ---------------------------------------------------------------- atomic for the rules


def many_checks(tmp_path: Path, redis_url: str, pd_url: str, timeout: str) -> str:
    """32 redis checks; 5 rules that hold for as long as Redis answers (5 alerts firing)."""
    checks = "\n".join(f'  - {{name: c{i:02d}, type: redis, url: "{redis_url}", interval: 250ms, timeout: {timeout}}}'
                       for i in range(32))
    rules = "\n".join(f"  - {{alert: Watched{i}, expr: 'portal_redis_up{{check=\"c{i:02d}\"}} == 1', severity: P3}}"
                      for i in range(5))
    return f"""\
listen: 127.0.0.1:0
state_dir: {tmp_path / 'state'}
checks:
{checks}
rules:
{rules}
receivers:
  oncall: {{type: pagerduty, routing_key: "{KEY}", url: "{pd_url}", timeout: 2s}}
escalation:
  - {{level: L1, after: 0s, severities: [P1, P2, P3, P4], receivers: [oncall]}}
"""


async def test_40_reloads_changing_32_checks_neither_resolve_nor_repage_firing_alerts(tmp_path, redis_up) -> None:
    """Each reload changes every check's timeout (their series stay the same); after each one
    the test waits for the rules to be evaluated again, so a resolve would have its chance."""
    async with FakePagerDuty() as pd:
        path = tmp_path / "alert_rules.yaml"
        path.write_text(many_checks(tmp_path, redis_up.url, pd.url, "900ms"))
        d = await DaemonProcess.start(path, env=clean_env(MONITOR_API_TOKEN=TOKEN))
        try:
            await pd.wait_until(lambda: len(pd.events) == 5, timeout=15)
            for n in range(40):
                path.write_text(many_checks(tmp_path, redis_up.url, pd.url, "800ms" if n % 2 == 0 else "900ms"))
                status, body = await api_reload(d)
                assert status == 200 and len(body["changed"]) == 32, body
                seen = await d.metric("portal_monitor_rule_evaluations_total") or 0
                async with asyncio.timeout(15):
                    while (await d.metric("portal_monitor_rule_evaluations_total") or 0) < seen + 2:
                        await asyncio.sleep(0.02)  # polling the daemon for the next evaluations, bounded above
            assert d.names().count("reloaded") == 40
            assert sorted(e["payload"]["class"] for e in pd.events) == [f"Watched{i}" for i in range(5)]
            assert pd.actions() == ["trigger"] * 5  # no resolve, no second trigger
            assert not any(e.get("event") == "alert_resolved" for e in d.events)
        finally:
            assert await d.stop() == 0


# ---------------------------------------------------------------- one daemon per state directory


async def test_a_second_daemon_on_the_same_state_dir_exits_1_naming_the_first(tmp_path, redis_up) -> None:
    async with FakePagerDuty() as pd:
        path = config(tmp_path, redis_up.url, pd.url, "")
        first = await DaemonProcess.start(path)
        try:
            second = subprocess.run([sys.executable, "-m", "monitor", "run", "-c", str(path)], capture_output=True,
                                    text=True, cwd=ROOT, env=clean_env(), timeout=60)
            assert second.returncode == 1
            assert second.stderr.strip() == (
                f"portal-monitor: state directory {tmp_path / 'state'} is in use by pid {first.proc.pid} "
                f"(another portal-monitor run; lock file {tmp_path / 'state' / 'portal-monitor.lock'})")
            listed = cli("incidents", "list", "-c", str(path))  # the on-call commands share the state file
            assert (listed.returncode, listed.stdout.strip()) == (0, "no open incidents"), listed.stderr
            assert first.proc.returncode is None
        finally:
            assert await first.stop() == 0
        again = await DaemonProcess.start(path)  # the lock went with the first daemon
        assert await again.stop() == 0
