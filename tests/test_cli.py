"""The CLI as a user runs it: check-config, once (table and JSON), run (real /metrics)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from checks import CHECK_TYPES

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "monitor"]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WHMCS_", "REDIS_", "DATABASE_", "PORTAL_"))}
    env.update(extra)
    return env


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=ROOT, env=env or clean_env(),
                          timeout=timeout)


def write_config(path: Path, redis_url: str, dsn: str, extra: str = "") -> Path:
    path.write_text(f"""\
listen: 127.0.0.1:0
state_dir: {path.parent / 'state'}
checks:
  - {{name: cache, type: redis, url: "{redis_url}", interval: 1s}}
  - {{name: db, type: postgres, dsn: "{dsn}", interval: 1s}}
  - name: whmcs
    type: whmcs
    enabled: auto
    url: "${{WHMCS_API_URL}}"
    identifier: "${{WHMCS_API_IDENTIFIER:-monitor}}"
    secret: "${{WHMCS_API_SECRET:-not-set}}"
{extra}""")
    return path


def test_check_config_on_the_shipped_file_with_no_environment() -> None:
    r = cli("check-config", "-c", "alert_rules.yaml")
    assert r.returncode == 0, r.stderr
    assert "alert_rules.yaml: OK" in r.stdout
    assert "whmcs" in r.stdout and "disabled until WHMCS_API_IDENTIFIER, WHMCS_API_SECRET and WHMCS_API_URL are set" \
        in r.stdout


def test_check_config_lists_time_intervals_and_what_they_mute(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"  # no inhibit rules: the intervals are listed all the same
    cfg.write_text("checks:\n  - {name: cache, type: redis, url: 'redis://127.0.0.1:1'}\n"
                   "receivers:\n  oncall: {type: log}\n"
                   "time_intervals:\n  - {name: night, time_intervals: [{times: [{start_time: '00:00', "
                   "end_time: '06:00'}], location: Europe/London}]}\n  - {name: spare, time_intervals: [{}]}\n"
                   "rules:\n  - {alert: A, expr: 'x > 1', severity: P3, mute_time_intervals: [night]}\n")
    r = cli("check-config", "-c", str(cfg))
    assert r.returncode == 0, r.stderr
    assert "time interval night (00:00-06:00 Europe/London): mutes A\n" in r.stdout
    assert "time interval spare (UTC): mutes nothing\n" in r.stdout


def test_check_config_prints_every_error_and_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("checks:\n  - {name: a, type: redis, interval: 10 s}\n  - {name: b, type: smtp}\n")
    r = cli("check-config", "-c", str(bad))
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        "bad.yaml:2:38: checks[0].interval: '10 s' is not a duration (use e.g. 250ms, 10s, 5m, 1h)",
        "bad.yaml:3:21: checks[1].type: 'smtp' is not one of " + ", ".join(repr(t) for t in CHECK_TYPES),
        "2 errors",
    ]


def test_config_path_from_the_environment(tmp_path: Path) -> None:
    cfg = tmp_path / "x.yaml"
    cfg.write_text("checks:\n  - {name: cache, type: redis, url: 'redis://127.0.0.1:1'}\n")
    r = cli("check-config", env=clean_env(PORTAL_MONITOR_CONFIG=str(cfg)))
    assert r.returncode == 0 and f"{cfg}: OK" in r.stdout
    assert r.stderr == "warning: x.yaml:1:1: no rules: nothing will page (fine if Prometheus alerts on /metrics)\n"


def test_check_config_refuses_a_file_unfit_to_run(tmp_path: Path) -> None:
    cfg = tmp_path / "x.yaml"
    cfg.write_text("checks: []\nrules:\n  - {alert: A, expr: 'portal_redis_up == 0', severity: P1}\n")
    r = cli("check-config", "-c", str(cfg))
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        "x.yaml:1:9: checks: no check is defined: the daemon would watch nothing",
        "x.yaml:3:56: rules[0].severity: P1 rule 'A' reaches no enabled receiver: L1 oncall (not defined under "
        "receivers:); L2 lead (not defined under receivers:); L3 management (not defined under receivers:)",
        "2 errors",
    ]


def test_once_json_all_up(tmp_path: Path, redis_up, postgres_up) -> None:
    cfg = write_config(tmp_path / "c.yaml", redis_up.url, postgres_up.dsn)
    r = cli("once", "--json", "-c", str(cfg))
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)  # exactly one JSON document
    by = {c["check"]: c for c in doc["checks"]}
    assert doc["ok"] is True
    assert by["cache"]["up"] is True and by["cache"]["values"]["portal_redis_ping_seconds"] > 0
    assert by["db"]["up"] is True and 0 < by["db"]["values"]["portal_postgres_connections_used_ratio"] < 1
    assert by["whmcs"] == {"check": "whmcs", "type": "whmcs", "up": None,
                           "disabled": "disabled until WHMCS_API_URL is set"}


def test_once_table_and_exit_1_when_a_check_is_down(tmp_path: Path, redis_up, postgres_up) -> None:
    cfg = write_config(tmp_path / "c.yaml", redis_up.url, postgres_up.dsn)
    redis_up.stop()
    r = cli("once", "-c", str(cfg))
    assert r.returncode == 1
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["check", "type", "state", "values", "detail"]
    cache = next(line for line in lines if line.startswith("  cache"))
    assert "DOWN" in cache and "connect" in cache
    db = next(line for line in lines if line.startswith("  db"))
    assert "UP" in db and "postgres_connections_used_ratio=" in db
    assert "1 up, 1 down, 1 disabled" in r.stdout


def test_once_never_prints_a_secret(tmp_path: Path, redis_up, postgres_up) -> None:
    cfg = write_config(tmp_path / "c.yaml", "redis://:hunter2-secret@127.0.0.1:1/0", postgres_up.dsn)
    r = cli("once", "--json", "-c", str(cfg))
    assert r.returncode == 1
    assert "hunter2-secret" not in r.stdout + r.stderr
    assert "redis://:***@127.0.0.1:1/0" in r.stdout


async def read_metrics(session: aiohttp.ClientSession, base: str) -> dict[tuple[str, str], float]:
    async with session.get(f"{base}/metrics") as resp:
        text = await resp.text()
    return {(s.name, s.labels.get("check", "")): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


async def wait_metric(session: aiohttp.ClientSession, base: str, key: tuple[str, str], want: float,
                      timeout: float = 15.0) -> dict[tuple[str, str], float]:
    async with asyncio.timeout(timeout):
        while True:
            values = await read_metrics(session, base)
            if values.get(key) == want:
                return values
            await asyncio.sleep(0.05)  # polling a live daemon for a state change, bounded above


async def test_run_serves_real_values_and_follows_outages(tmp_path: Path, redis_up, postgres_up) -> None:
    cfg = write_config(tmp_path / "c.yaml", redis_up.url, postgres_up.dsn)
    proc = await asyncio.create_subprocess_exec(
        *CLI, "run", "-c", str(cfg), "--log-format", "json", cwd=ROOT, env=clean_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(20):
            while True:
                line = await proc.stdout.readline()
                assert line, (await proc.stderr.read()).decode()
                event = json.loads(line)
                if event["event"] == "started":
                    break
        base = f"http://127.0.0.1:{event['port']}"
        async with aiohttp.ClientSession() as session:
            values = await wait_metric(session, base, ("portal_redis_up", "cache"), 1)
            values = await wait_metric(session, base, ("portal_postgres_up", "db"), 1)
            assert values[("portal_redis_memory_used_bytes", "cache")] > 0
            assert values[("portal_postgres_connections_max", "db")] == 20
            redis_up.kill()
            await wait_metric(session, base, ("portal_redis_up", "cache"), 0)
            redis_up.start()
            await wait_metric(session, base, ("portal_redis_up", "cache"), 1)
            postgres_up.stop()
            await wait_metric(session, base, ("portal_postgres_up", "db"), 0)
            postgres_up.start()
            await wait_metric(session, base, ("portal_postgres_up", "db"), 1)
            async with session.get(f"{base}/-/ready") as resp:
                assert resp.status == 200
    finally:
        proc.terminate()
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    events = [json.loads(x)["event"] for x in out.decode().splitlines() if x.startswith("{")]
    assert events.count("check_failed") == 2 and events.count("check_recovered") == 2
    assert events[-1] == "stopping"
