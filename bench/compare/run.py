"""Side by side: portal-monitor vs Prometheus + Alertmanager + exporters (+ mtail), one run.

What, in order (see README.md beside this file):
1. installs the reference packages when missing (root; else a clear error);
2. starts a disposable Redis, a PostgreSQL with max_connections=40, a fake BFF /health and
   three webhook receivers that timestamp arrivals; then the reference stack (1 s scrape
   and evaluation, group_wait 0 s) and two portal-monitor daemons (the default config with
   all three checks at 1 s; a Redis-only one with `watch: false` for equal polling);
3. 60 s of steady state: RSS and CPU seconds of each stack's processes (psutil);
4. each fault `--runs` times at a random phase, every stack watching it at once;
5. mtail vs the logfile check on the same 2,000,000-line file;
6. writes the table to `--out` (bench/compare/RESULTS.md) and prints it.
Every process it starts is stopped in `finally` blocks, and dies with it (PDEATHSIG).

    .venv/bin/python bench/compare/run.py [--runs 10] [--steady 60] [--log-lines 2000000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import string
import sys
import tempfile
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from bench.compare import detect, footprint, logs, refstack, report  # noqa: E402
from tests.daemon_proc import DaemonProcess  # noqa: E402
from tests.fake_receivers import FakeWebhook  # noqa: E402
from tests.fakes import FakeBff  # noqa: E402
from tests.servers import PostgresServer, RedisServer  # noqa: E402

MAX_CONNECTIONS = 40  # as the anchor's bench cluster: threshold 32 connections


def render_daemon_config(workdir: Path, name: str, values: dict[str, str]) -> Path:
    src = (refstack.CONFIG_DIR / f"{name}.yaml").read_text()
    path = workdir / f"{name}.yaml"
    path.write_text(string.Template(src).substitute({**values, "state_dir": str(workdir / f"state-{name}")}))
    return path


class Health:
    """Do all stacks see a fault's target healthy right now? One method per fault.

    The reference stack is asked through Prometheus' query API, portal-monitor through its
    /metrics; the PostgreSQL check also brings the held sessions back to their level."""

    def __init__(self, stack: refstack.ReferenceStack, daemons: dict[str, DaemonProcess],
                 pg_fault: detect.PostgresSaturation) -> None:
        self.stack = stack
        self.pm = daemons["portal-monitor"]
        self.poll = daemons["portal-monitor-poll"]
        self.pg_fault = pg_fault
        self.session = aiohttp.ClientSession()

    async def close(self) -> None:
        await self.session.close()

    async def _ref(self, expr: str) -> list[float]:
        return await self.stack.query(self.session, expr)

    async def redis(self) -> bool:
        return (await self._ref("redis_up") == [1.0]
                and await self.pm.metric("portal_redis_up", check="cache") == 1
                and await self.poll.metric("portal_redis_up", check="cache") == 1)

    async def pg(self) -> bool:
        if not await self.pg_fault.settle():
            return False
        level = float(self.pg_fault.level)
        ratio = await self.pm.metric("portal_postgres_connections_used_ratio", check="db")
        return (await self._ref("pg_up") == [1.0]
                and await self._ref('sum(pg_stat_activity_count{job="postgres"})') == [level]
                and ratio is not None and round(ratio * MAX_CONNECTIONS) == level)

    async def http(self) -> bool:
        return (await self._ref('probe_success{job="blackbox_http"}') == [1.0]
                and await self.pm.metric("portal_http_up", check="bff_health") == 1)

    async def everything(self) -> bool:
        up = await self._ref("up")
        return len(up) == 3 and all(v == 1.0 for v in up) and await self.redis() and await self.http()


async def run_live(args: argparse.Namespace, workdir: Path, rng: random.Random) -> report.LiveResults:
    redis = RedisServer(workdir / "redis")
    pg = PostgresServer(Path(tempfile.mkdtemp(prefix="bench-compare-pg-")), max_connections=MAX_CONNECTIONS)
    stack: refstack.ReferenceStack | None = None
    daemons: dict[str, DaemonProcess] = {}
    health: Health | None = None
    pg_fault = detect.PostgresSaturation(pg.dsn, MAX_CONNECTIONS)
    bff = FakeBff()
    hooks = {k: FakeWebhook() for k in ("reference", "portal-monitor", "portal-monitor-poll")}
    try:
        redis.start()
        pg.start()
        await bff.start()
        for h in hooks.values():
            await h.start()
        stack = refstack.ReferenceStack(workdir, redis.url, pg.dsn, bff.url, hooks["reference"].url)
        await stack.start()
        for name in ("portal-monitor", "portal-monitor-poll"):
            cfg = render_daemon_config(workdir, name, {"redis_url": redis.url, "postgres_dsn": pg.dsn,
                                                       "health_url": bff.url, "webhook_url": hooks[name].url})
            daemons[name] = await DaemonProcess.start(cfg)
        health = Health(stack, daemons, pg_fault)
        await detect.wait_for(health.everything, "all targets up in Prometheus and both daemons")
        await detect.wait_for(health.pg, "PostgreSQL sessions held at their steady level")
        print(f"steady state: {args.steady:.0f} s", file=sys.stderr)
        groups = {"reference": stack.pids(), "portal-monitor": [daemons["portal-monitor"].proc.pid]}
        steady = await footprint.measure_footprints(groups, args.steady)
        offsets = await stack.eval_offsets(health.session)
        print("prometheus scrape→evaluation offsets: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in
                                                                    offsets.items()), file=sys.stderr)

        ref, pm, poll = hooks["reference"], hooks["portal-monitor"], hooks["portal-monitor-poll"]
        plan = [
            (detect.RedisCrash(redis), "RedisDown", health.redis,
             [("reference", ref), ("portal-monitor, watch: false", poll), ("portal-monitor, watch: true", pm)]),
            (pg_fault, "PostgresConnectionsSaturated", health.pg, [("reference", ref), ("portal-monitor", pm)]),
            (detect.HealthFailing(bff), "HttpHealthFailing", health.http,
             [("reference", ref), ("portal-monitor", pm)]),
        ]
        results = []
        for fault, alertname, ok, who in plan:
            watchers = [detect.Watcher(stack_name, hook, alertname) for stack_name, hook in who]
            results.append(await detect.measure(fault, watchers, ok, args.runs, rng))
        after = await footprint.measure_footprints(groups, 10.0)
        floor = footprint.import_floor(sys.executable, str(ROOT))
        return report.LiveResults(steady, after, results, pg_fault.open_times, refstack.versions(), offsets, floor)
    finally:
        await pg_fault.close()
        if health is not None:
            await health.close()
        for d in daemons.values():
            try:
                await d.stop()
            except (TimeoutError, ProcessLookupError):
                await d.kill()
        if stack is not None:
            stack.stop()
        for h in hooks.values():
            await h.close()
        await bff.close()
        redis.stop()
        pg.stop()
        shutil.rmtree(pg.workdir, ignore_errors=True)


def _sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through every finally: all children are stopped


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=30, help="faults of each kind (30: a p50 to about ±0.09 s)")
    ap.add_argument("--steady", type=float, default=60.0, help="seconds of steady state for RSS and CPU")
    ap.add_argument("--log-lines", type=int, default=2_000_000)
    ap.add_argument("--log-repeat", type=int, default=3, help="best of this many runs, mtail and ours")
    ap.add_argument("--seed", type=int, default=6)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "compare" / "RESULTS.md")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, _sigterm)
    try:
        refstack.require_servers()
        installed = refstack.ensure_installed()
    except refstack.SetupError as e:
        print(f"bench-compare: {e}", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="bench-compare-"))
    try:
        live = asyncio.run(run_live(args, workdir, random.Random(args.seed)))
        print(f"logs: {args.log_lines:,} lines, best of {args.log_repeat}", file=sys.stderr)
        mtail, ours, size = logs.compare(workdir, args.log_lines, args.log_repeat)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    extra = " ".join(sys.argv[1:])
    if os.environ.get("BENCH_COMPARE_MAKE"):
        command = "make bench-compare" + (f' ARGS="{extra}"' if extra else "")
    else:
        command = ".venv/bin/python bench/compare/run.py" + (f" {extra}" if extra else "")
    text = report.render(live, report.LogResults(mtail, ours, size), command=command, runs=args.runs,
                         steady_s=args.steady, installed=installed)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
