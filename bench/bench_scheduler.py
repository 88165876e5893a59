"""Benchmark: the real daemon with N `http` checks at 1 s against a local aiohttp server.

The daemon runs as a child process exactly as `portal-monitor run` (rules, outbox, /metrics
and all); the target server runs in another process. Per N, over a steady window after a
warm-up: the daemon's CPU seconds per second and peak RSS (psutil), and how late checks
started against their schedule, from the daemon's own `portal_monitor_schedule_delay_seconds`
(p50/p99 of the last 1000 runs, read once a second as Prometheus would scrape it), plus runs
skipped because a run overran.

    .venv/bin/python bench/bench_scheduler.py [--seconds 30] [--n 10,100,1000]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from tests.daemon_proc import DaemonProcess  # noqa: E402


def _serve(port_queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    from aiohttp import web

    body = b'{"status":"ok","checks":{"database":{"status":"ok"},"cache":"ok"}}'

    async def health(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/health", health)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
        await site.start()
        port_queue.put(runner.addresses[0][1])
        await asyncio.Event().wait()

    asyncio.run(main())


def write_config(workdir: Path, n: int, url: str) -> Path:
    lines = [f"listen: 127.0.0.1:0\nstate_dir: {workdir / 'state'}\nchecks:"]
    lines += [f'  - {{name: h{i}, type: http, url: "{url}", interval: 1s}}' for i in range(n)]
    lines.append("rules:\n  - {alert: Down, expr: 'portal_http_up == 0', for: 1m, severity: P3, summary: down}")
    lines.append("receivers:\n  console: {type: log}")
    lines.append("escalation:\n  - {level: L1, after: 0s, severities: [P1, P2, P3, P4], receivers: [console]}")
    path = workdir / "alert_rules.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def run_one(n: int, seconds: float, url: str) -> dict[str, float]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-sched-"))
    d = await DaemonProcess.start(write_config(workdir, n, url), timeout=60)
    proc = psutil.Process(d.proc.pid)
    try:
        await asyncio.sleep(3.0)  # warm-up: connections open, runs spread over the second
        skipped0 = await d.metric("portal_monitor_checks_skipped_total") or 0.0
        cpu0 = sum(proc.cpu_times()[:2])
        t0 = time.perf_counter()
        peak, p50s, p99s, maxes = 0, [], [], []
        while time.perf_counter() - t0 < seconds:  # a benchmark measures wall time: this is its clock
            await asyncio.sleep(1.0)
            peak = max(peak, proc.memory_info().rss)
            m = await d.metrics()
            p50s.append(m[("portal_monitor_schedule_delay_seconds", (("quantile", "0.5"),))])
            p99s.append(m[("portal_monitor_schedule_delay_seconds", (("quantile", "0.99"),))])
            maxes.append(m[("portal_monitor_schedule_delay_seconds", (("quantile", "1.0"),))])
        cpu = sum(proc.cpu_times()[:2]) - cpu0
        elapsed = time.perf_counter() - t0
        m = await d.metrics()
        up = sum(1 for (name, _), v in m.items() if name == "portal_http_up" and v == 1)
        skipped = m[("portal_monitor_checks_skipped_total", ())] - skipped0
    finally:
        await d.stop()
    return {"n": n, "cpu_per_s": cpu / elapsed, "rss_mb": peak / 2**20,
            "p50_ms": statistics.median(p50s) * 1000, "p99_ms": statistics.median(p99s) * 1000,
            "worst_p99_ms": max(p99s) * 1000, "max_ms": max(maxes) * 1000, "skipped": skipped, "up": up}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--n", default="10,100,1000")
    args = ap.parse_args()
    q: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    server = multiprocessing.Process(target=_serve, args=(q,), daemon=True)
    server.start()
    url = f"http://127.0.0.1:{q.get(timeout=10)}/health"
    rows = []
    try:
        for n in (int(x) for x in args.n.split(",")):
            r = asyncio.run(run_one(n, args.seconds, url))
            rows.append(r)
            print(f"N={n}: {r}", file=sys.stderr)
    finally:
        server.terminate()
    print(f"\n`{' '.join(['.venv/bin/python', 'bench/bench_scheduler.py', *sys.argv[1:]])}` "
          f"({os.cpu_count()} cores, Python {sys.version.split()[0]}, {args.seconds:g} s per N after 3 s warm-up; "
          "the whole daemon: checks, rules, outbox, /metrics scraped once a second)\n")
    print("| http checks at 1 s | CPU s/s | peak RSS | delay p50 | delay p99 (median / worst second) "
          "| max delay | skipped runs | up at end |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['n']} | {r['cpu_per_s']:.3f} | {r['rss_mb']:.1f} MB | {r['p50_ms']:.1f} ms | "
              f"{r['p99_ms']:.1f} / {r['worst_p99_ms']:.1f} ms | {r['max_ms']:.1f} ms | {r['skipped']:.0f} | "
              f"{r['up']}/{r['n']} |")


if __name__ == "__main__":
    main()
