"""/metrics of a running daemon passes `promtool check metrics` (Debian's promtool, for real).

The daemon runs every check type that can run here (Redis, PostgreSQL, an HTTP health endpoint,
a log file, a process) plus a firing rule and a failing receiver, so that every family the
daemon exports in normal operation is on the page promtool reads, counters, the histogram and
the schedule-delay summary included.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import aiohttp
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import require_tool
from tests.daemon_proc import DaemonProcess

WINSTON = [
    {"level": "info", "message": "GET /api/orders 200 35ms", "status": 200, "duration": 35},
    {"level": "error", "message": "POST /auth/login 401", "status": 401, "path": "/auth/login", "ip": "10.0.0.9"},
    {"level": "info", "message": "Platform Event received"},
]


async def _health() -> web.AppRunner:
    app = web.Application()

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "checks": {"database": "ok", "cache": "down"}})

    app.router.add_get("/health", health)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


def _port(runner: web.AppRunner) -> int:
    server = runner.addresses[0]
    return int(server[1])


def _config(tmp_path: Path, redis_url: str, pg_dsn: str, health_port: int, log: Path) -> Path:
    path = tmp_path / "alert_rules.yaml"
    path.write_text(f"""\
listen: 127.0.0.1:0
state_dir: {tmp_path / "state"}
checks:
  - {{name: cache, type: redis, url: "{redis_url}", interval: 1s, timeout: 900ms}}
  - {{name: db, type: postgres, dsn: "{pg_dsn}", interval: 1s, timeout: 900ms}}
  - {{name: bff_health, type: http, url: "http://127.0.0.1:{health_port}/health", components: checks, interval: 1s}}
  - {{name: bff_logs, type: logfile, paths: ["{log}"], preset: winston, window: 1m, interval: 1s,
      auth_failure: {{status: [401], path: "/auth/login"}}, patterns: {{platform_event: "Platform Event"}}}}
  - {{name: me, type: process, cmdline: "pytest|python", interval: 1s}}
rules:
  - alert: AlwaysFiring
    expr: portal_check_up > 0
    severity: P4
    summary: "{{{{ $labels.check }}}} answers"
receivers:
  hook: {{type: webhook, url: "http://127.0.0.1:9/nowhere", timeout: 500ms}}
escalation:
  - {{level: L1, after: 0s, severities: [P1, P2, P3, P4], receivers: [hook]}}
""")
    return path


async def test_metrics_of_a_running_daemon_pass_promtool_check_metrics(tmp_path, redis_up, postgres_up) -> None:
    promtool = require_tool("promtool", "promtool is not installed (Debian package: prometheus)")
    log = tmp_path / "combined.log"
    log.write_text("")
    health = await _health()
    d = await DaemonProcess.start(_config(tmp_path, redis_up.url, postgres_up.dsn, _port(health), log))
    try:
        await d.wait_ready()
        with log.open("a") as f:  # the log check follows the file from its end, as tail -F
            f.write("".join(json.dumps(line) + "\n" for line in WINSTON))
        # Every check has run twice (the log check has read the file) and the rule has fired.
        for check in ("cache", "db", "bff_health", "bff_logs", "me"):
            await d.wait_metric("portal_check_up", 1, check=check, type=_type(check))
        async with asyncio.timeout(15):
            while (await d.metric("portal_monitor_schedule_delay_seconds_count")) is None or (
                await d.metric("portal_log_lines_total", check="bff_logs", level="error")
            ) != 1:
                await asyncio.sleep(0.05)  # polling a live process, bounded above
        async with aiohttp.ClientSession() as s, s.get(f"{d.base}/metrics") as r:
            assert r.status == 200
            text = await r.text()
    finally:
        assert await d.stop() == 0
        await health.cleanup()
    families = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert families["portal_monitor_schedule_delay_seconds"] == "summary"
    assert families["portal_log_request_duration_seconds"] == "histogram"
    assert families["portal_check_runs"] == "counter"
    assert len(families) >= 40, sorted(families)
    done = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60,
        env={**os.environ, "LC_ALL": "C"},
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def _type(check: str) -> str:
    return {"cache": "redis", "db": "postgres", "bff_health": "http", "bff_logs": "logfile", "me": "process"}[check]
