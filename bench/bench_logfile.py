"""Benchmark: the `logfile` check's throughput, and the scheduler's punctuality during a burst.

Part 1, lines per second over 2,000,000 lines written by the real loggers (`bench/node`:
`npm ci` there, then `write_corpus.js`): the BFF's winston request logger (status,
fractional responseTime, ip, url, method, userAgent; app events between) and pino-http's
default lines, all measured in the same run, on one core. Each rate is given in CPU time
(`time.process_time`: what one core does, whatever else the machine runs) and wall time:

- `iterate`: a Python loop over the file's lines (`for line in f`), doing nothing;
- `orjson.loads`: the same loop calling `orjson.loads(line)` (the issue's reference);
- `general`: the check with `fast_path: false` (line by line, every failure classified);
- `fast`: the check as configured by default (whole chunks decoded at once);
- `fast, line time`: the same with `time_source: line` (times parsed per distinct second);
- `fast, +patterns`: the default check plus two named patterns.

Each check row is a full `collect()` from the start of the file: reading, parsing,
counting, window and samples included.

Part 2: a writer process appends 100,000 lines/s to a log while the real scheduler runs the
logfile check and a dummy check at 1 s; reports the dummy check's scheduling delay p50/p99
(how late it started against its schedule), the logfile check's run times, and whether the
check kept up (unread bytes at the end).

    .venv/bin/python bench/bench_logfile.py [--lines 2000000] [--seconds 20] [--rate 100000]
        [--corpus DIR] [--variants fast,general,...] [--baseline OTHER_CHECKOUT]

`--corpus` keeps the corpora in a folder and reuses them (writing 2 M lines through Node
takes minutes); `--baseline` runs another checkout's `fast` variant in each repeat too,
interleaved with this one's, so that a change is measured before and after in one run.

`winston_line`/`pino_line` (Python templates of the same shapes, integer durations) stay for
the tests and `bench/compare`, which need lines without Node.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import msgspec
import orjson

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from checks.logfile.check import SLICE_BYTES, Config, LogfileCheck  # noqa: E402
from monitor.model import CheckContext, MemoryState, Sample  # noqa: E402
from monitor.scheduler import Scheduler  # noqa: E402
from monitor.store import Store  # noqa: E402

PATHS = [
    "/api/invoices",
    "/api/invoices/{id}",
    "/api/services",
    "/api/tickets/{id}",
    "/api/auth/login",
    "/api/auth/refresh",
    "/api/orders/{id}/provision",
    "/health",
]
STATUSES = [200] * 85 + [201, 204, 301, 304, 400, 401, 401, 403, 404, 404, 500, 502, 503]
UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0"
T0_MS = 1_714_564_800_000  # 2024-05-01T12:00:00Z


def _iso(ms: int) -> str:
    s, ms = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + f".{ms:03d}Z"


def winston_line(i: int, rng: random.Random) -> bytes:
    """One line as the BFF's winston logger writes it: mostly request lines, some app events."""
    ms = T0_MS + i
    r = rng.random()
    if r < 0.85:
        status = rng.choice(STATUSES)
        path = rng.choice(PATHS).replace("{id}", str(rng.randint(1, 99999)))
        duration = int(rng.lognormvariate(4.5, 1.0))
        level = "error" if status >= 500 else "warn" if status >= 400 else "info"
        doc = {
            "level": level,
            "message": f"GET {path} {status} {duration}ms",
            "method": "GET",
            "url": path,
            "statusCode": status,
            "duration": duration,
            "ip": f"203.0.113.{rng.randint(1, 254)}",
            "userAgent": UA,
            "requestId": f"{rng.getrandbits(64):016x}",
            "timestamp": _iso(ms),
        }
    elif r < 0.95:
        doc = {
            "level": "info",
            "message": "Platform Event received",
            "channel": "/event/Order_Provisioned__e",
            "replayId": 1000 + i,
            "timestamp": _iso(ms),
        }
    elif r < 0.98:
        doc = {
            "level": "debug",
            "message": "WHMCS GetClientsProducts",
            "service": "whmcs",
            "duration": int(rng.lognormvariate(5, 0.7)),
            "timestamp": _iso(ms),
        }
    else:
        doc = {
            "level": "error",
            "message": "WHMCS API error: Invalid IP 198.51.100.4",
            "service": "whmcs",
            "error": {"code": "ip_denied", "result": "error"},
            "timestamp": _iso(ms),
        }
    return orjson.dumps(doc)


def pino_line(i: int, rng: random.Random) -> bytes:
    """One line as pino + pino-http write it (numeric level, req/res objects, headers)."""
    ms = T0_MS + i
    r = rng.random()
    base = {"level": 30, "time": ms, "pid": 4242, "hostname": "bff-1"}
    if r < 0.85:
        status = rng.choice(STATUSES)
        path = rng.choice(PATHS).replace("{id}", str(rng.randint(1, 99999)))
        base["level"] = 50 if status >= 500 else 40 if status >= 400 else 30
        doc = {
            **base,
            "req": {
                "id": i,
                "method": "GET",
                "url": path,
                "headers": {"host": "portal.example", "user-agent": UA},
                "remoteAddress": f"203.0.113.{rng.randint(1, 254)}",
                "remotePort": 40000 + i % 20000,
            },
            "res": {"statusCode": status},
            "responseTime": int(rng.lognormvariate(4.5, 1.0)),
            "msg": "request completed",
        }
    elif r < 0.97:
        doc = {
            **base,
            "channel": "/event/Order_Provisioned__e",
            "replayId": 1000 + i,
            "msg": "Platform Event received",
        }
    else:
        doc = {
            **base,
            "level": 50,
            "err": {"type": "Error", "message": "WHMCS timeout", "stack": "Error: x\n    at y"},
            "msg": "WHMCS API error",
        }
    return orjson.dumps(doc)


def write_log(path: str, make: Callable[[int, random.Random], bytes], n: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    with open(path, "wb") as f:
        for start in range(0, n, 100_000):
            f.write(b"".join(make(i, rng) + b"\n" for i in range(start, min(n, start + 100_000))))


def _ctx(now: Callable[[], float] = time.time, timeout_s: float = 10_000.0) -> CheckContext:
    return CheckContext(interval_s=1.0, timeout_s=timeout_s, state=MemoryState(), now=now)


NODE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "node")


def node_corpus(kind: str, path: str, n: int, seed: int = 1) -> None:
    """`n` lines written by real winston (`kind` "winston") or pino-http ("pino")."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise SystemExit("bench_logfile: node and npm are needed to write the corpus (apt-get install nodejs npm)")
    if not os.path.isdir(os.path.join(NODE_DIR, "node_modules")):
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True, timeout=600)
    script = os.path.join(NODE_DIR, "write_corpus.js")
    subprocess.run([node, script, kind, path, str(n), str(seed)], check=True, timeout=1800)


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of fn()."""
    c, w = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - c, time.perf_counter() - w


def rate_iterate(path: str) -> float:
    return rates_iterate(path)[1]


def rates_iterate(path: str) -> tuple[float, float]:
    n = 0

    def run() -> None:
        nonlocal n
        with open(path, "rb") as f:
            for _line in f:
                n += 1

    cpu, wall = _timed(run)
    return n / cpu, n / wall


def rate_orjson(path: str) -> float:
    return rates_orjson(path)[1]


def rates_orjson(path: str) -> tuple[float, float]:
    """(lines per CPU second, lines per wall second) of `orjson.loads` over every line."""
    loads = orjson.loads
    n = 0

    def run() -> None:
        nonlocal n
        with open(path, "rb") as f:
            for line in f:
                loads(line)
                n += 1

    cpu, wall = _timed(run)
    return n / cpu, n / wall


def rate_check(path: str, n: int, **options: object) -> tuple[float, list[Sample]]:
    cfg = Config.model_validate({"name": "bench", "type": "logfile", "paths": [path], "from": "start", **options})
    check = LogfileCheck(cfg, _ctx(now=lambda: T0_MS / 1000 + 60))

    async def run() -> list[Sample]:
        try:
            return await check.collect()
        finally:
            await check.aclose()

    t, c = time.perf_counter(), time.process_time()
    samples = asyncio.run(run())
    rate = n / (time.perf_counter() - t)
    rate_check.cpu = n / (time.process_time() - c)  # type: ignore[attr-defined]
    lines = sum(s.value for s in samples if s.name == "portal_log_lines_total")
    errors = sum(s.value for s in samples if s.name == "portal_log_parse_errors_total")
    assert lines + errors == n, f"{path}: counted {lines} lines and {errors} errors of {n}"
    return rate, samples


def _same_counts(a: list[Sample], b: list[Sample]) -> bool:
    def key(samples: list[Sample]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {
            (s.name, tuple(sorted(s.labels.items()))): round(s.value, 6)
            for s in samples
            if s.name != "portal_log_requests_per_second"
        }

    return key(a) == key(b)


VARIANTS: dict[str, dict[str, object]] = {
    "general": {"fast_path": False},
    "fast": {},
    "line time": {"time_source": "line"},
    "patterns": {"patterns": {"platform_event": "Platform Event", "whmcs": "WHMCS"}},
}


def _lines_in(path: str) -> int:
    n = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            n += block.count(b"\n")
    return n


def rates_baseline(tree: str, path: str, n: int, preset: str) -> tuple[float, float]:
    """(lines per CPU second, per wall second) of the `fast` variant of another checkout of
    the project (`tree`, e.g. the code before a change), in a child process so that its
    modules are its own; timed inside the child, as `rate_check` times this tree's."""
    code = (
        "import sys; sys.path[:0] = [sys.argv[1], sys.argv[1] + '/bench']; import bench_logfile as b; "
        "rate, _ = b.rate_check(sys.argv[2], int(sys.argv[3]), preset=sys.argv[4]); print(b.rate_check.cpu, rate)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, os.path.abspath(tree), path, str(n), preset],
        cwd=tree,
        check=True,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    cpu, wall = out.stdout.split()
    return float(cpu), float(wall)


def part1(
    n: int, tmp: str, repeat: int, variants: list[str], corpus: str | None = None, baseline: str | None = None
) -> list[str]:
    """Each rate is the median of `repeat` runs, the variants interleaved (the machine is
    shared: its load varies); `cpu` rates are lines per CPU second of this process, `wall`
    per elapsed second. `corpus`: a folder where the corpora are kept (written when missing);
    `baseline`: another checkout whose `fast` variant runs in each repeat too."""
    head = ["iterate", "orjson.loads", "general", "fast", "fast, line time", "fast, +patterns"]
    ratios = ["fast / orjson", "general / orjson"]
    if baseline is not None:
        head.insert(4, "fast, baseline")
        ratios.append("fast / baseline")
    rows = [
        "| log (written by) | rate | " + " | ".join(head + ratios) + " |",
        "|---|---|" + "---:|" * len(head + ratios),
    ]
    for name, kind, preset in (("BFF winston request logger", "winston", "winston"), ("pino-http", "pino", "pino")):
        path = os.path.join(corpus or tmp, f"{kind}.log")
        t = time.perf_counter()
        if corpus is None or not os.path.exists(path) or _lines_in(path) != n:
            node_corpus(kind, path, n)
            print(f"{kind}: wrote {n:,} lines in {time.perf_counter() - t:.1f}s", file=sys.stderr)
        size = os.path.getsize(path)
        runs: dict[str, list[tuple[float, float]]] = {}
        samples: dict[str, list[Sample]] = {}

        def keep(key: str, cpu: float, wall: float, runs: dict[str, list[tuple[float, float]]] = runs) -> None:
            runs.setdefault(key, []).append((cpu, wall))

        for _ in range(repeat):
            keep("iterate", *rates_iterate(path))
            keep("orjson", *rates_orjson(path))
            if baseline is not None:
                keep("baseline", *rates_baseline(baseline, path, n, preset))
            for variant in variants:
                rate, samples[variant] = rate_check(path, n, preset=preset, **VARIANTS[variant])
                keep(variant, rate_check.cpu, rate)  # type: ignore[attr-defined]
            print(f"{kind}: {len(runs['iterate'])} of {repeat} runs, load {os.getloadavg()[0]:.1f}", file=sys.stderr)
        if "general" in samples and "fast" in samples:
            assert _same_counts(samples["general"], samples["fast"]), (
                f"{name}: the fast path counted differently from the general path"
            )
        for i, clock in enumerate(("cpu", "wall")):
            b = {k: statistics.median(r[i] for r in v) for k, v in runs.items()}

            def rate(key: str, b: dict[str, float] = b) -> str:
                return f"{b[key]:,.0f}" if key in b else "-"

            def ratio(a: str, c: str, b: dict[str, float] = b) -> str:
                return f"{b[a] / b[c]:.2f}" if a in b and c in b else "-"

            cells = [rate(k) for k in ("iterate", "orjson", "general", "fast", "line time", "patterns")]
            cells += [ratio("fast", "orjson"), ratio("general", "orjson")]
            if baseline is not None:
                cells.insert(4, rate("baseline"))
                cells.append(ratio("fast", "baseline"))
            rows.append(f"| {name} ({size / n:.0f} B/line) | {clock} | " + " | ".join(cells) + " |")
        if kind == "winston":
            with open(path, "rb") as f:  # part 2's writer repeats these real lines
                _REAL_WINSTON[:] = [line for _, line in zip(range(20_000), f, strict=False)]
        if corpus is None:
            os.unlink(path)
    return rows


_REAL_WINSTON: list[bytes] = []


# --- part 2: scheduling delay during a burst -------------------------------------------------


def _writer(path: str, rate: int, seconds: float, ready: multiprocessing.Event) -> None:  # type: ignore[valid-type]
    rng = random.Random(2)
    real = _REAL_WINSTON
    block = [real[i % len(real)] if real else winston_line(i, rng) + b"\n" for i in range(rate // 10)]
    batch = b"".join(block)  # a tenth of a second of lines
    with open(path, "ab", buffering=0) as f:
        ready.set()
        start = time.monotonic()
        k = 0
        while (elapsed := time.monotonic() - start) < seconds:
            due = int(elapsed * 10) + 1
            while k < due:
                f.write(batch)
                k += 1
            time.sleep(0.01)


class _Dummy:
    """A 1 s check that does nothing: its start delay is what we measure."""

    type = "dummy"
    name = "dummy"
    interval_s = 1.0
    timeout_s = 1.0

    def __init__(self) -> None:
        self.starts: list[float] = []

    async def collect(self) -> list[Sample]:
        self.starts.append(time.monotonic())
        return []

    async def aclose(self) -> None:
        return None


def part2(rate: int, seconds: float, tmp: str) -> list[str]:
    path = os.path.join(tmp, "burst.log")
    open(path, "wb").close()
    ready = multiprocessing.Event()
    writer = multiprocessing.Process(target=_writer, args=(path, rate, seconds + 2, ready), daemon=True)
    writer.start()
    ready.wait(30)

    async def run() -> tuple[list[float], list[float], list[float], float, float]:
        store = Store()
        durations: list[float] = []
        sched = Scheduler(
            store,
            rng=random.Random(3),
            on_result=lambda r: durations.append(r.duration_s) if r.check == "burst" else None,
        )
        cfg = Config.model_validate({"name": "burst", "type": "logfile", "paths": [path]})
        check = LogfileCheck(cfg, _ctx(timeout_s=1.0))
        dummy = _Dummy()
        sched.add(check)
        sched.add(dummy)
        task = asyncio.create_task(sched.run())
        await asyncio.sleep(seconds)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        await sched.aclose()
        first = dummy.starts[0]  # the dummy's own lateness against its first start + k seconds
        dummy_delays = sorted(max(0.0, s - first - round(s - first)) for s in dummy.starts)
        unread = next((s.value for s in store.samples() if s.name == "portal_log_unread_bytes"), 0.0)
        lines = sum(s.value for s in store.samples() if s.name == "portal_log_lines_total")
        return sorted(sched.delays), dummy_delays, durations, unread, lines

    delays, dummy_delays, durations, unread, lines = asyncio.run(run())
    writer.join(10)

    def ms(xs: list[float], q: float) -> str:
        return f"{xs[min(len(xs) - 1, int(len(xs) * q))] * 1000:.1f} ms" if xs else "-"

    return [
        "| writer rate | run | scheduled runs | delay p50 | delay p99 | delay max | dummy p99 "
        "| logfile run p50 / max | lines counted | unread at end |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {rate:,} lines/s | {seconds:.0f} s | {len(delays)} | {ms(delays, 0.5)} | {ms(delays, 0.99)} "
        f"| {ms(delays, 1.0)} | {ms(dummy_delays, 0.99)} "
        f"| {statistics.median(durations) * 1000:.0f} / {max(durations) * 1000:.0f} ms "
        f"| {lines:,.0f} | {unread / 2**20:.1f} MiB |",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=2_000_000)
    ap.add_argument("--repeat", type=int, default=3, help="the median of this many runs per rate")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rate", type=int, default=100_000)
    ap.add_argument("--skip-burst", action="store_true")
    ap.add_argument("--corpus", help="keep the corpora in this folder (written when missing) and reuse them")
    ap.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"which of the check's variants to run ({','.join(VARIANTS)})"
    )
    ap.add_argument("--baseline", help="another checkout (e.g. the code before a change): its fast variant too")
    args = ap.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    if unknown := set(variants) - set(VARIANTS):
        ap.error(f"--variants: unknown {sorted(unknown)}")
    cmd = " ".join([".venv/bin/python bench/bench_logfile.py", *sys.argv[1:]])
    with tempfile.TemporaryDirectory(prefix="bench-logfile-") as tmp:
        python = sys.version.split()[0]
        print(f"`{cmd}` ({os.cpu_count()} CPUs, Python {python}, msgspec {msgspec.__version__})\n")
        print(f"Lines per second, median of {args.repeat} runs:\n")
        print("\n".join(part1(args.lines, tmp, args.repeat, variants, args.corpus, args.baseline)))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"\nPeak RSS of the bench process (checks read {SLICE_BYTES >> 20} MiB at a time): {peak:.0f} MiB")
        if not args.skip_burst:
            print("\nScheduling during a burst (writer in another process; checks at 1 s):\n")
            print("\n".join(part2(args.rate, args.seconds, tmp)))


if __name__ == "__main__":
    main()
