"""Benchmark: N `http` checks at 1 s in one process against a local aiohttp server.

Measures, per N: CPU seconds per second of this process (the target server runs in a child
process and is not counted), peak RSS, and how late checks started against their schedule
(p50/p99), plus runs that were skipped because a run overran.

    .venv/bin/python bench/bench_scheduler.py [--seconds 30] [--n 10,100,1000]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import statistics
import sys
import time

import psutil

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from checks import http  # noqa: E402
from monitor.model import CheckContext, MemoryState  # noqa: E402
from monitor.scheduler import Scheduler  # noqa: E402
from monitor.store import Store  # noqa: E402


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


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else float("nan")


async def run_one(n: int, seconds: float, url: str) -> dict[str, float]:
    store = Store()
    counter = {"runs": 0}

    def count(_result: object) -> None:
        counter["runs"] += 1

    sched = Scheduler(store, on_result=count, delay_window=n * int(seconds + 5))
    for i in range(n):
        cfg = http.Config(name=f"h{i}", type="http", url=url, interval="1s")
        ctx = CheckContext(interval_s=1.0, timeout_s=1.0, state=MemoryState(), now=time.time)
        sched.add(http.HttpCheck(cfg, ctx))
    proc = psutil.Process()
    task = asyncio.create_task(sched.run())
    await asyncio.sleep(2.0)  # warm-up: connections open, first runs spread over the second
    sched.delays.clear()
    sched.skipped = 0
    runs0 = counter["runs"]
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    peak = proc.memory_info().rss
    while time.perf_counter() - t0 < seconds:  # a benchmark measures wall time; this is its clock
        await asyncio.sleep(0.5)
        peak = max(peak, proc.memory_info().rss)
    cpu1, t1 = cpu_seconds(), time.perf_counter()
    runs = counter["runs"] - runs0
    delays = list(sched.delays)
    up = sum(1 for r in store.results() if r.up)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    await sched.aclose()
    return {
        "n": n, "cpu_per_s": (cpu1 - cpu0) / (t1 - t0), "rss_mb": peak / 2**20,
        "p50_ms": pct(delays, 0.5) * 1000, "p99_ms": pct(delays, 0.99) * 1000,
        "runs_per_s": runs / (t1 - t0), "skipped": sched.skipped, "up": up,
        "median_delay_ms": statistics.median(delays) * 1000 if delays else float("nan"),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--n", default="10,100,1000")
    args = ap.parse_args()
    q: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    server = multiprocessing.Process(target=_serve, args=(q,), daemon=True)
    server.start()
    port = q.get(timeout=10)
    url = f"http://127.0.0.1:{port}/health"
    rows = []
    try:
        for n in (int(x) for x in args.n.split(",")):
            r = asyncio.run(run_one(n, args.seconds, url))
            rows.append(r)
            print(f"N={n}: {r}", file=sys.stderr)
    finally:
        server.terminate()
    print(f"\n`{' '.join(['.venv/bin/python', 'bench/bench_scheduler.py', *sys.argv[1:]])}` "
          f"({os.cpu_count()} cores, Python {sys.version.split()[0]}, {args.seconds:g} s per N)\n")
    print("| checks at 1 s | CPU s/s | peak RSS | delay p50 | delay p99 | runs/s | skipped | up at end |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['n']} | {r['cpu_per_s']:.3f} | {r['rss_mb']:.1f} MB | {r['p50_ms']:.1f} ms | "
              f"{r['p99_ms']:.1f} ms | {r['runs_per_s']:.0f} | {r['skipped']} | {r['up']}/{r['n']} |")


if __name__ == "__main__":
    main()
