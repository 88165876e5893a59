"""Benchmark: the state file after 30 simulated days of a flapping alert, and the API over it.

Phase 1, in-process with an injected clock: the real rule engine, incidents, outbox and
retention (`monitor.alerting.Alerting`, `monitor.incidents.retention.Retention`) see a check go
down for `--down` seconds every `--period` seconds for `--days` days (with the defaults, 10,800
incidents in 30 days), evaluated every 30 s; two receivers take every page at once (a trigger
and a resolve each: four delivered rows per incident); retention runs every simulated 5
minutes, as in the daemon, with the shipped default (90 days) unless `--retention` says
otherwise. Reported: incidents made, rows left, the file's size (main file + WAL) at the end.

Phase 2: the real daemon (`portal-monitor run`, a child process) starts on that state file and
each of the status page `/`, `/api/v1/incidents?state=all` (the default page of 50 and a page of 200), `/api/v1/incidents/{newest}` and
`/metrics` is fetched `--requests` times in turn, one at a time: median and p99 latency.

    .venv/bin/python bench/bench_statefile.py [--days 30] [--period 240] [--down 60] [--requests 300]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import aiohttp
import structlog

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from monitor.alerting import Alerting  # noqa: E402
from monitor.clock import utc_now  # noqa: E402
from monitor.config.fields import parse_duration  # noqa: E402
from monitor.config.loader import load_config  # noqa: E402
from monitor.incidents.retention import Retention  # noqa: E402
from monitor.model import Notification, Sample  # noqa: E402
from monitor.statedb import DB_NAME, open_db  # noqa: E402
from tests.daemon_proc import DaemonProcess  # noqa: E402

STEP_S = 30.0  # evaluation cadence of the simulation (the check's interval)
RETENTION_EVERY_S = 300.0


class Taker:
    """A receiver that accepts every notification at once."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sent = 0

    async def send(self, n: Notification) -> None:
        self.sent += 1

    async def aclose(self) -> None:
        pass


def write_config(workdir: Path, retention: str) -> Path:
    path = workdir / "alert_rules.yaml"
    path.write_text(f"""\
listen: 127.0.0.1:0
state_dir: {workdir / "state"}
retention: {retention}
checks:
  - {{name: web, type: http, url: "http://127.0.0.1:9/health", interval: 30s, timeout: 1s}}
rules:
  - alert: WebDown
    expr: portal_http_up == 0
    severity: P2
    summary: "web {{{{ $labels.check }}}} is down"
    description: "1. curl the health endpoint"
    runbook: "https://wiki.example/runbooks/incident-response#web"
receivers:
  oncall: {{type: log}}
  chat: {{type: log}}
escalation:
  - {{level: L1, after: 0s, severities: [P1, P2, P3, P4], receivers: [oncall, chat]}}
""")
    return path


def file_size(state: Path) -> int:
    return sum(
        (state / (DB_NAME + suffix)).stat().st_size for suffix in ("", "-wal") if (state / (DB_NAME + suffix)).exists()
    )


async def simulate(config_path: Path, days: float, period_s: float, down_s: float) -> dict[str, float]:
    cfg = load_config(config_path)
    state = Path(cfg.root.state_dir)
    conn = open_db(state)
    t0 = utc_now() - timedelta(days=days)  # the simulated days end now, where the daemon takes over
    clock = {"now": t0}
    up = {"value": 1.0}

    def samples() -> list[Sample]:
        return [Sample("portal_http_up", {"check": "web"}, up["value"])]

    receivers = {"oncall": Taker("oncall"), "chat": Taker("chat")}
    alerting = Alerting(conn, cfg, samples, now=lambda: clock["now"], receivers=dict(receivers))
    retention = Retention(conn, lambda: cfg.root.retention, now=lambda: clock["now"])
    steps = int(days * 86400 / STEP_S)
    next_prune = RETENTION_EVERY_S
    started = time.perf_counter()
    peak = 0
    for i in range(steps):
        t = i * STEP_S
        clock["now"] = t0 + timedelta(seconds=t)
        up["value"] = 0.0 if (t % period_s) < down_s else 1.0
        if alerting.evaluate(clock["now"]):
            await alerting.outbox.drain()
        if t >= next_prune:
            await retention.run_once()
            next_prune += RETENTION_EVERY_S
        if i % 2880 == 0:  # once a simulated day
            peak = max(peak, file_size(state))
    await alerting.outbox.drain()
    await retention.run_once()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    incidents_made = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'incidents'").fetchone()[0]
    rows = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("incidents", "timeline", "outbox")}
    conn.close()
    return {
        "incidents_made": incidents_made,
        "pages": sum(r.sent for r in receivers.values()),
        "rows_incidents": rows["incidents"],
        "rows_timeline": rows["timeline"],
        "rows_outbox": rows["outbox"],
        "size": file_size(state),
        "peak": max(peak, file_size(state)),
        "sim_s": time.perf_counter() - started,
    }


async def measure_api(config_path: Path, requests: int) -> dict[str, tuple[float, float]]:
    d = await DaemonProcess.start(config_path)
    out: dict[str, tuple[float, float]] = {}
    try:
        await d.wait_ready()
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{d.base}/api/v1/incidents?state=all") as r:
                newest = (await r.json())["incidents"][0]["id"]
            paths = ["/", "/api/v1/incidents?state=all", "/api/v1/incidents?state=all&limit=200",
                     f"/api/v1/incidents/{newest}", "/metrics"]
            times: dict[str, list[float]] = {p: [] for p in paths}
            for _ in range(requests):
                for p in paths:
                    t0 = time.perf_counter()
                    async with s.get(d.base + p, timeout=aiohttp.ClientTimeout(total=10)) as r:
                        await r.read()
                        assert r.status == 200, (p, r.status)
                    times[p].append(time.perf_counter() - t0)
        for p, ts in times.items():
            ts.sort()
            out[p] = (statistics.median(ts) * 1000, ts[min(len(ts) - 1, int(len(ts) * 0.99))] * 1000)
    finally:
        await d.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=float, default=30.0)
    ap.add_argument("--period", type=float, default=240.0, help="seconds between two outages")
    ap.add_argument("--down", type=float, default=60.0, help="seconds each outage lasts")
    ap.add_argument("--retention", default="90d")
    ap.add_argument("--requests", type=int, default=300)
    args = ap.parse_args()
    parse_duration(args.retention)
    # 10,000 incidents make 100,000 log lines: keep errors only.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    with tempfile.TemporaryDirectory(prefix="bench-statefile-") as tmp:
        config_path = write_config(Path(tmp), args.retention)
        sim = asyncio.run(simulate(config_path, args.days, args.period, args.down))
        print(f"simulated: {sim}", file=sys.stderr)
        api = asyncio.run(measure_api(config_path, args.requests))
        print(f"api: {api}", file=sys.stderr)
    mib = 1024 * 1024
    print(
        f"\n`{' '.join(['.venv/bin/python', 'bench/bench_statefile.py', *sys.argv[1:]])}` "
        f"({os.cpu_count()} cores, Python {sys.version.split()[0]}; {args.days:g} days, down {args.down:g} s every "
        f"{args.period:g} s, evaluated every {STEP_S:g} s, retention {args.retention}, simulated in "
        f"{sim['sim_s']:.0f} s)\n"
    )
    print(
        "| incidents made | pages delivered | incidents kept | timeline rows | outbox rows "
        "| file at end | largest seen |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {sim['incidents_made']:,.0f} | {sim['pages']:,.0f} | {sim['rows_incidents']:,.0f} | "
        f"{sim['rows_timeline']:,.0f} | {sim['rows_outbox']:,.0f} | {sim['size'] / mib:.1f} MiB | "
        f"{sim['peak'] / mib:.1f} MiB |"
    )
    print(f"\nThe real daemon on that file, {args.requests} requests per path, one at a time:\n")
    print("| path | median | p99 |")
    print("|---|---:|---:|")
    for p, (med, p99) in api.items():
        print(f"| `{p}` | {med:.1f} ms | {p99:.1f} ms |")


if __name__ == "__main__":
    main()
