"""The comparison as Markdown: detection, footprint, log throughput, and each issue-6 target.

What: pure functions from measured numbers to the text of RESULTS.md (nothing measured
here). Why apart from run.py: the numbers and their presentation change for different
reasons, and a target verdict should be computed in one obvious place.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass

from bench.compare.detect import Result
from bench.compare.logs import Throughput
from bench.compare.footprint import Footprint

MIB = 2**20
REFERENCE = "reference"


@dataclass(frozen=True)
class LiveResults:
    steady: dict[str, Footprint]  # stack -> footprint over the steady window
    after: dict[str, Footprint]  # stack -> footprint over 10 s after all fault runs
    detection: list[Result]
    pg_open_times: list[float]  # seconds to open the extra PostgreSQL connections, per run
    versions: dict[str, str]
    offsets: dict[str, float]  # scrape job -> Prometheus' scrape-to-evaluation offset (s)
    import_floor: list[tuple[str, float]]  # (stage, RSS bytes after it) of a fresh interpreter


@dataclass(frozen=True)
class LogResults:
    mtail: Throughput
    ours: Throughput
    file_bytes: int


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def detection_rows(results: list[Result]) -> list[str]:
    rows = ["| fault | stack | runs | min | p50 | max | p50 vs reference | max vs reference |",
            "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        ref = r.latencies[REFERENCE]
        for stack, xs in r.latencies.items():
            ratio = "—" if stack == REFERENCE else (
                f"{statistics.median(xs) / statistics.median(ref):.2f}× "
                f"({statistics.median(ref) / statistics.median(xs):.1f}× faster)")
            max_ratio = "—" if stack == REFERENCE else f"{max(xs) / max(ref):.2f}×"
            rows.append(f"| {r.fault} | {stack} | {len(xs)} | {_ms(min(xs))} | {_ms(statistics.median(xs))} "
                        f"| {_ms(max(xs))} | {ratio} | {max_ratio} |")
    return rows


def footprint_rows(live: LiveResults, steady_s: float) -> list[str]:
    rows = [f"| stack | processes | RSS, end of {steady_s:.0f} s steady | peak RSS in it | CPU s per minute "
            "| share of one core | RSS after the fault runs | USS, end of steady |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for stack, fp in live.steady.items():
        after = live.after[stack]
        rows.append(f"| {stack} | {len(fp.per_process_rss)} | {fp.rss_bytes / MIB:.1f} MiB "
                    f"| {fp.rss_peak_bytes / MIB:.1f} MiB | {fp.cpu_per_minute:.2f} "
                    f"| {fp.cpu_per_minute / 60 * 100:.1f}% | {after.rss_bytes / MIB:.1f} MiB "
                    f"| {fp.uss_bytes / MIB:.1f} MiB |")
    return rows


def targets(live: LiveResults, logs: LogResults) -> list[str]:
    by_fault = {r.fault: r for r in live.detection}
    rows = ["| target (issue 6) | measured | verdict |", "|---|---|---|"]
    for r in live.detection:
        ref = statistics.median(r.latencies[REFERENCE])
        polled = next(s for s in r.latencies if s != REFERENCE and "watch: true" not in s)
        ours = statistics.median(r.latencies[polled])
        offset = live.offsets.get(r.reference_job, 0.0)
        rows.append(f"| detection p50 no worse than the reference at equal 1 s polling: {r.fault} "
                    f"| {polled} {_ms(ours)} vs {_ms(ref)} ({ours / ref:.2f}×); the reference less its "
                    f"{_ms(offset)} scrape→evaluation offset: {_ms(ref - offset)} | {_verdict(ours <= ref)} |")
    crash = by_fault.get("Redis killed")
    if crash is not None:
        ref = statistics.median(crash.latencies[REFERENCE])
        watch = statistics.median(crash.latencies["portal-monitor, watch: true"])
        rows.append(f"| a server crash seen from its connection loss ≥ 5× faster (p50) "
                    f"| {_ms(watch)} vs {_ms(ref)}: {ref / watch:.1f}× faster | {_verdict(ref / watch >= 5)} |")
    ref_fp, pm_fp = live.steady[REFERENCE], live.steady["portal-monitor"]
    share = pm_fp.rss_bytes / ref_fp.rss_bytes
    rows.append(f"| at most a third of the reference's resident memory "
                f"| {pm_fp.rss_bytes / MIB:.1f} vs {ref_fp.rss_bytes / MIB:.1f} MiB = {share:.2f} "
                f"(limit {ref_fp.rss_bytes / 3 / MIB:.1f} MiB)"
                + (f"; the libraries it is built on take {live.import_floor[-2][1] / MIB:.1f} MiB before its own "
                   "code (see Footprint)" if len(live.import_floor) >= 2 else "")
                + f" | {_verdict(share <= 1 / 3)} |")
    cpu = pm_fp.cpu_per_minute / ref_fp.cpu_per_minute if ref_fp.cpu_per_minute else float("inf")
    rows.append(f"| less CPU for the same work | {pm_fp.cpu_per_minute:.2f} vs {ref_fp.cpu_per_minute:.2f} "
                f"CPU s/min = {cpu:.2f}× | {_verdict(cpu < 1)} |")
    speed = logs.ours.lines_per_s / logs.mtail.lines_per_s
    per_cpu = logs.ours.lines_per_cpu_s / logs.mtail.lines_per_cpu_s
    cores = logs.mtail.cpu_seconds / logs.mtail.seconds if logs.mtail.seconds else float("nan")
    rows.append(f"| log throughput ≥ 10× mtail's | {logs.ours.lines_per_s:,.0f} vs {logs.mtail.lines_per_s:,.0f} "
                f"lines/s = {speed:.1f}× (per CPU second {per_cpu:.1f}×: mtail kept {cores:.1f} cores busy, "
                f"the check one) | {_verdict(speed >= 10)} |")
    return rows


def floor_rows(live: LiveResults) -> list[str]:
    limit = live.steady[REFERENCE].rss_bytes / 3
    rows = ["| after importing | RSS | added | within a third of the reference |", "|---|---:|---:|---|"]
    previous = 0.0
    for label, rss in live.import_floor:
        rows.append(f"| {label} | {rss / MIB:.1f} MiB | +{(rss - previous) / MIB:.1f} MiB "
                    f"| {'yes' if rss <= limit else 'no'} |")
        previous = rss
    return rows


def log_rows(logs: LogResults) -> list[str]:
    rows = ["| tool | lines | wall time | lines/s | CPU seconds | lines per CPU second |",
            "|---|---:|---:|---:|---:|---:|"]
    for t in (logs.mtail, logs.ours):
        rows.append(f"| {t.tool} | {t.lines:,} | {t.seconds:.2f} s | {t.lines_per_s:,.0f} | {t.cpu_seconds:.2f} "
                    f"| {t.lines_per_cpu_s:,.0f} |")
    return rows


def render(live: LiveResults, logs: LogResults, *, command: str, runs: int, steady_s: float,
           installed: list[str]) -> str:
    v = live.versions
    ref_procs = ", ".join(f"{name.split('[')[0]} {rss / MIB:.0f}"
                          for name, rss in live.steady[REFERENCE].per_process_rss.items())
    pg_open = statistics.median(live.pg_open_times) if live.pg_open_times else float("nan")
    load = os.getloadavg()
    lines = [
        "# portal-monitor vs the reference stack: measured side by side",
        "",
        f"Command: `{command}`, from the repository root.",
        "",
        f"Machine: {os.cpu_count()} cores ({_cpu_model()}), Linux {platform.release()}, "
        f"Python {sys.version.split()[0]}; measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"load average at the end {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1/5/15 min: "
        "other work on the machine slows both stacks alike, since they ran at the same time).",
        "",
        "Reference components (Debian packages, run directly on 127.0.0.1, not through systemd): "
        f"prometheus {v.get('prometheus')}, prometheus-alertmanager {v.get('prometheus-alertmanager')} "
        f"(clustering off), prometheus-redis-exporter {v.get('prometheus-redis-exporter')}, "
        f"prometheus-postgres-exporter {v.get('prometheus-postgres-exporter')}, "
        f"prometheus-blackbox-exporter {v.get('prometheus-blackbox-exporter')}, mtail {v.get('mtail')}."
        + (f" Installed by this run: {', '.join(installed)}." if installed else ""),
        "",
        "Set-up: Prometheus scrape and evaluation 1 s (scrape timeout 1 s), Alertmanager "
        "`group_wait: 0s`, `group_interval: 1s`, rules `for: 0s`, a webhook receiver; portal-monitor "
        "with the same three targets and rules, checks every 1 s with a 1 s timeout, a webhook "
        "receiver. Both stacks run at the same time against the same disposable Redis, PostgreSQL "
        "(max_connections = 40) and fake `/health`, and see every fault at the same instant.",
        "",
        "## Targets",
        "",
        *targets(live, logs),
        "",
        f"## Detection latency: fault → notification received ({runs} runs per fault)",
        "",
        "Each fault at a random phase of the 1 s interval; latency from just before the fault "
        "to the arrival of the firing webhook (`time.perf_counter()` in the receiver). "
        "`watch: false` is polling alone (equal 1 s polling); `watch: true` is portal-monitor's "
        "default, which also holds a connection and re-checks the moment it drops.",
        "",
        *detection_rows(live.detection),
        "",
        "Prometheus' scrape → rule evaluation offset in this run, per job: "
        + ", ".join(f"{job} {d * 1000:.0f} ms" for job, d in sorted(live.offsets.items()))
        + ". Prometheus fixes the phase of each target's scrapes (a hash of the target, whose port "
        "changes every run) and of the rule group's evaluations (a hash of the group), so this "
        "offset is constant within a run and the reference's latency is about uniform over "
        "[offset, offset + 1 s] plus delivery: its p50 moves between ≈ 0.5 s and ≈ 1.5 s from one "
        "run to the next (≈ 1 s on average over offsets). portal-monitor evaluates its rules as soon "
        "as a check returns, so it has no such offset: its polling latency is uniform over [0, 1 s]. "
        f"With {runs} runs, the p50 of a latency spread uniformly over 1 s is known to about "
        f"±{0.5 / math.sqrt(runs):.2f} s (one standard error): use `--runs 30` or more to separate "
        "close p50s.",
        "",
        f"PostgreSQL: the runner holds client sessions at 31 of 40 (threshold: more than 32), then "
        f"opens 4 more at once; opening them took {_ms(pg_open)} (median), included in both stacks' "
        "latency.",
        "",
        f"## Footprint: {steady_s:.0f} s of steady state, no fault, same targets, 1 s intervals",
        "",
        "RSS is the sum over every process of the stack (psutil); CPU is user + system seconds "
        "over the window. Reference processes, RSS in MiB: " + ref_procs + ". portal-monitor is one "
        "process (the default config: Redis and PostgreSQL watch connections held). USS (pages "
        "no other process shares) is for context: the Go binaries share next to nothing, a Python "
        "process shares the interpreter's and libraries' file pages; the target is on RSS.",
        "",
        *footprint_rows(live, steady_s),
        "",
        "Where portal-monitor's resident memory comes from: a fresh interpreter of the same Python, "
        "RSS after each group of the libraries the project is built on (aiohttp, pydantic, "
        "prometheus-client, structlog, PyYAML, orjson, psutil, redis-py, asyncpg; msgspec for the "
        "log check), then after its own modules, before any check runs. The limit of a third of the "
        f"reference is {live.steady[REFERENCE].rss_bytes / 3 / MIB:.1f} MiB.",
        "",
        *floor_rows(live),
        "",
        f"## Log lines per second: the same {logs.mtail.lines:,}-line winston file "
        f"({logs.file_bytes / MIB:.0f} MiB), best of the runs",
        "",
        "mtail: `mtail -one_shot` with the anchor's `bff.mtail` (lines by level and by status "
        "class, duration histogram), spawn to exit. portal-monitor: a full `LogfileCheck.collect()` "
        "from the start of the file (`preset: winston`), via `bench/bench_logfile.py`'s `rate_check`. "
        "Both checked to have counted every line.",
        "",
        *log_rows(logs),
        "",
    ]
    return "\n".join(lines)
