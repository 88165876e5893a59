"""Benchmark: detection latency from fault to page, as a user would see it.

The real daemon (a child process) watches a disposable Redis or PostgreSQL; the rule fires
with `for: 0s`; a fake PagerDuty in this process timestamps each trigger on arrival. For
each run: kill -9 the server, measure until the trigger arrives, start the server, wait for
the resolve. Three set-ups:

- redis, 1 s interval, watch off: pure polling (the reference stack's floor is ~0.5 s p50)
- redis, 10 s interval, watch on: the held connection sees the crash at once
- postgres, 10 s interval, watch on: asyncpg's termination listener

    .venv/bin/python bench/bench_detection.py [--runs 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from tests.daemon_proc import DaemonProcess  # noqa: E402
from tests.fake_receivers import FakePagerDuty  # noqa: E402
from tests.servers import PostgresServer, RedisServer  # noqa: E402

KEY = "R0UT1NGKEY0123456789abcdefABCDEF"


def config(workdir: Path, check: str, pd_url: str) -> Path:
    path = workdir / "alert_rules.yaml"
    path.write_text(f"""\
listen: 127.0.0.1:0
state_dir: {workdir / 'state'}
checks:
  - {check}
rules:
  - {{alert: RedisDown, expr: "portal_redis_up == 0", severity: P1, summary: down}}
  - {{alert: DatabaseDown, expr: "portal_postgres_up == 0", severity: P1, summary: down}}
receivers:
  oncall: {{type: pagerduty, routing_key: "{KEY}", url: "{pd_url}", timeout: 2s}}
escalation:
  - {{level: L1, after: 0s, severities: [P1], receivers: [oncall]}}
""")
    return path


async def measure(name: str, server: RedisServer | PostgresServer, check: str, up_metric: str,
                  runs: int) -> list[float]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-detect-"))
    rng = random.Random(runs)
    latencies: list[float] = []
    async with FakePagerDuty() as pd:
        d = await DaemonProcess.start(config(workdir, check, pd.url))
        try:
            for i in range(runs):
                await d.wait_metric(up_metric, 1, timeout=30, check="target")
                # The metric turns 1 right after a run: fault at a random point of the interval
                # instead, as a real fault would (else polling looks like a full interval).
                await asyncio.sleep(rng.uniform(1.0, 2.0))
                triggers = len(pd.triggers())
                t0 = time.perf_counter()
                server.kill()
                await pd.wait_until(lambda n=triggers: len(pd.triggers()) > n, timeout=30)
                arrived = next(r.at for r in reversed(pd.requests)
                               if r.json and r.json.get("event_action") == "trigger")
                latencies.append(arrived - t0)
                resolves = pd.actions().count("resolve")
                server.start()
                await pd.wait_until(lambda n=resolves: pd.actions().count("resolve") > n, timeout=30)
                print(f"{name} run {i + 1}: {latencies[-1] * 1000:.0f} ms", file=sys.stderr)
        finally:
            await d.stop()
            shutil.rmtree(workdir, ignore_errors=True)
    return latencies


def row(name: str, values: list[float]) -> str:
    return (f"| {name} | {len(values)} | {min(values) * 1000:.0f} ms | {statistics.median(values) * 1000:.0f} ms | "
            f"{max(values) * 1000:.0f} ms |")


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-servers-"))
    redis = RedisServer(tmp / "redis")
    pg = PostgresServer(Path(tempfile.mkdtemp(prefix="bench-pg-")))
    redis.start()
    pg.start()
    rows = []
    try:
        setups = [
            ("Redis killed, 1 s interval, polling only", redis,
             f'{{name: target, type: redis, url: "{redis.url}", interval: 1s, timeout: 500ms, watch: false}}',
             "portal_redis_up"),
            ("Redis killed, 10 s interval, watch", redis,
             f'{{name: target, type: redis, url: "{redis.url}", interval: 10s, timeout: 1s}}', "portal_redis_up"),
            ("PostgreSQL killed, 10 s interval, watch", pg,
             f'{{name: target, type: postgres, dsn: "{pg.dsn}", interval: 10s, timeout: 1s}}',
             "portal_postgres_up"),
        ]
        for name, server, check, metric in setups:
            rows.append(row(name, await measure(name, server, check, metric, args.runs)))
    finally:
        redis.stop()
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n`.venv/bin/python bench/bench_detection.py --runs {args.runs}` "
          f"({os.cpu_count()} cores, Python {sys.version.split()[0]}): fault (SIGKILL) → trigger received by a "
          "local fake PagerDuty, `for: 0s`\n")
    print("| fault | runs | min | p50 | max |")
    print("|---|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    asyncio.run(main())
