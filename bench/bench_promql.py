"""Benchmark: the PromQL engine, 200 rules over 5,000 series with 1 h of 1 s history.

The history is filled the way the daemon fills it (`History.append`, one call per second with
every series' sample). The rules are the shipped ones (`alert_rules.yaml`) plus generated ones
using ranges (`rate`, `increase`, `*_over_time`, `predict_linear`, subqueries), aggregations
(`sum/max/avg by`, `topk`, `quantile`, `histogram_quantile`) and joins (`/ on(...)`,
`group_left`, `and`/`unless`). One cycle evaluates every rule once at the newest second, as a
rule group does; the cycle is repeated and timed.

Reports: ingestion rate, bytes per sample of the history (sample arrays), the process RSS, and
evaluation time per cycle (p50/p99), plus the slowest rules.

    .venv/bin/python bench/bench_promql.py [--series 5000] [--seconds 3600] [--rules 200] [--cycles 20]
        [--rules-out FILE]

`--rules-out FILE` writes the generated rule group as a Prometheus rule file, and the series
are named so that an exporter can serve the same values: the entry point for running the
same group in a real Prometheus side by side (bench/compare).
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import random
import statistics
import sys
import time
from pathlib import Path

import psutil
import yaml

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from monitor.history import History  # noqa: E402
from monitor.model import Sample  # noqa: E402
from monitor.rules.promql import Engine, parse, selected_series  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
GAUGES = 26  # generic gauge families of 100 instances each


def shipped_exprs() -> list[str]:
    doc = yaml.safe_load((ROOT / "alert_rules.yaml").read_text())
    return [r["expr"] for r in doc.get("rules", []) if isinstance(r, dict) and "expr" in r]


def series_plan(n_series: int, shipped: list[str]) -> list[tuple[str, dict[str, str], str]]:
    """(name, labels, kind) for every series; kind: counter, gauge, bucket or flag."""
    plan: list[tuple[str, dict[str, str], str]] = []
    for expr in shipped:
        for sel in selected_series(parse(expr)):
            labels = {m.name: m.value for m in sel.matchers if m.op == "=" and m.name != "__name__"}
            if sel.metric and (sel.metric, labels, "flag") not in plan:
                plan.append((sel.metric, labels, "flag"))
    inst = [f"i{i:03d}" for i in range(100)]
    for i in inst:
        for code in ("200", "301", "404", "500", "503"):
            plan.append(("bench_requests_total", {"instance": i, "code": code}, "counter"))
        plan.append(("bench_memory_bytes", {"instance": i}, "gauge"))
        plan.append(("bench_memory_limit_bytes", {"instance": i}, "flag"))
        plan.append(("bench_connections", {"instance": i}, "gauge"))
        plan.append(("bench_max_connections", {"instance": i}, "flag"))
        for le in ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf"):
            plan.append(("bench_latency_seconds_bucket", {"instance": i, "le": le}, "bucket"))
    for ip in range(500):
        plan.append(("bench_login_failures_total", {"ip": f"10.0.{ip // 256}.{ip % 256}"}, "counter"))
    g = 0
    while len(plan) < n_series:
        plan.append(
            (f"bench_gauge_{g % GAUGES}", {"instance": inst[(g // GAUGES) % 100], "n": str(g // 2600)}, "gauge")
        )
        g += 1
    return plan[:n_series]


def generated_rules(n: int) -> list[str]:
    templates = [
        'sum by (instance) (rate(bench_requests_total{{code=~"5.."}}[5m])) / sum by (instance) (rate(bench_requests_total[5m])) > 0.{k}',
        'rate(bench_requests_total{{code="500"}}[{w}m]) > {k}',
        "increase(bench_login_failures_total[5m]) > 5{k}",
        "predict_linear(bench_memory_bytes[1h], 4 * 3600) > on(instance) bench_memory_limit_bytes",
        "bench_connections / on(instance) bench_max_connections > 0.{k}",
        "avg_over_time(bench_gauge_{g}[{w}m]) > 5{k}",
        "max_over_time(bench_gauge_{g}[{w}m]) - min_over_time(bench_gauge_{g}[{w}m]) > {k}0",
        "histogram_quantile(0.99, sum by (le) (rate(bench_latency_seconds_bucket[5m]))) > 0.{k}",
        "topk(5, sum by (instance) (rate(bench_requests_total[5m])))",
        "quantile(0.9, bench_gauge_{g}) > 9{k}",
        "bench_gauge_{g} > 90 and on(instance) bench_connections > 50",
        "bench_gauge_{g} unless on(instance) bench_gauge_{h} > 5{k}",
        "sum by (instance) (bench_gauge_{g}) * on(instance) group_left bench_memory_limit_bytes > 1e{k}",
        "deriv(bench_gauge_{g}[10m]) > 0.{k}",
        "max_over_time(rate(bench_requests_total[5m])[30m:1m]) > {k}",
        "count(bench_gauge_{g} > 5{k}) > 10",
        "stddev_over_time(bench_gauge_{g}[{w}m]) > {k}",
        "quantile_over_time(0.9, bench_gauge_{g}[{w}m]) > 9{k}",
        "changes(bench_gauge_{g}[5m]) > {k}",
        'absent(bench_gauge_{g}{{instance="missing"}})',
    ]
    out = []
    for i in range(n):
        t = templates[i % len(templates)]
        out.append(t.format(k=i % 10, w=(5, 10, 15)[i % 3], g=i % GAUGES, h=(i + 1) % GAUGES))
    return out


class Feed:
    """The series' values second by second (counters rise and sometimes reset, gauges wander)."""

    def __init__(self, plan: list[tuple[str, dict[str, str], str]], seed: int = 1) -> None:
        self.plan = plan
        self.rnd = random.Random(seed)
        self.state = [self.rnd.uniform(0, 100) for _ in plan]
        self.bucket_base = [0.0] * len(plan)
        self.t = 0

    def next(self, history: History) -> None:
        rnd, state, bucket_base = self.rnd, self.state, self.bucket_base
        samples = []
        for idx, (name, labels, kind) in enumerate(self.plan):
            if kind == "counter":
                state[idx] += rnd.random() * 10
                if rnd.random() < 0.0002:
                    state[idx] = 0.0  # a counter reset now and then
            elif kind == "gauge":
                state[idx] = min(100.0, max(0.0, state[idx] + rnd.uniform(-1, 1)))
            elif kind == "bucket":
                le = labels["le"]
                bound = math.inf if le == "+Inf" else float(le)
                bucket_base[idx] += 10 * min(1.0, (bound / 2.5) ** 0.5 if bound != math.inf else 1.0)
                state[idx] = bucket_base[idx]
            else:
                state[idx] = 100.0
            samples.append(Sample(name, labels, state[idx]))
        history.append(float(self.t), samples, source="bench")
        self.t += 1


def percentiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--series", type=int, default=5000)
    ap.add_argument("--seconds", type=int, default=3600)
    ap.add_argument("--rules", type=int, default=200)
    ap.add_argument("--cycles", type=int, default=20)
    ap.add_argument("--rules-out", default=None)
    args = ap.parse_args()

    shipped = shipped_exprs()
    rules = shipped + generated_rules(args.rules - len(shipped))
    exprs = [parse(r) for r in rules]
    plan = series_plan(args.series, shipped)
    history = History(retention_s=args.seconds + 600, max_samples=args.series * (args.seconds + 10))
    rss0 = psutil.Process().memory_info().rss
    feed = Feed(plan)
    started = time.perf_counter()
    cpu_started = time.process_time()
    for _ in range(args.seconds):
        feed.next(history)
    ingest = time.perf_counter() - started
    ingest_cpu = time.process_time() - cpu_started
    gc.collect()
    rss1 = psutil.Process().memory_info().rss
    samples, nbytes = history.usage()
    engine = Engine(history)
    per_rule = [0.0] * len(exprs)
    alone: list[tuple[float, float]] = []  # (wall, cpu) per cycle
    shared: list[tuple[float, float]] = []
    results = 0
    for _ in range(args.cycles):
        # a rule group's cycle: one more second of samples arrives, then every rule runs at it
        feed.next(history)
        now = float(feed.t - 1)
        w0, c0 = time.perf_counter(), time.process_time()
        for i, e in enumerate(exprs):
            t0 = time.process_time()
            v = engine.instant(e, now)
            per_rule[i] += time.process_time() - t0
            results += len(v) if isinstance(v, list) else 1
        alone.append((time.perf_counter() - w0, time.process_time() - c0))
        w0, c0 = time.perf_counter(), time.process_time()
        cycle = engine.cycle(now)
        for e in exprs:
            cycle.instant(e)
        shared.append((time.perf_counter() - w0, time.process_time() - c0))
    load = os.getloadavg()[0]
    print(f"series {history.series_count}, samples {samples:,}, rules {len(exprs)} ({len(shipped)} shipped)")
    print(
        f"ingestion: {samples / ingest_cpu:,.0f} samples per CPU second "
        f"({ingest:.1f} s wall, {ingest_cpu:.1f} s CPU for {args.seconds} appends of {args.series} samples)"
    )
    print(
        f"history: {nbytes / samples:.2f} bytes/sample (sample arrays), "
        f"RSS growth {(rss1 - rss0) / samples:.2f} bytes/sample, RSS {rss1 / 2**20:.0f} MiB"
    )
    for label, runs in (
        ("each rule alone (Engine.instant)", alone),
        ("one Engine.cycle (shared subexpressions)", shared),
    ):
        w50, w99 = percentiles([w for w, _ in runs])
        c50, c99 = percentiles([c for _, c in runs])
        print(
            f"eval per cycle, {label}: CPU p50 {c50 * 1000:.0f} ms, p99 {c99 * 1000:.0f} ms; "
            f"wall p50 {w50 * 1000:.0f} ms, p99 {w99 * 1000:.0f} ms"
        )
    print(
        f"{results / args.cycles:.0f} result elements per cycle; 1-min load average at the end {load:.1f} on {os.cpu_count()} CPUs"
    )
    slow = sorted(range(len(exprs)), key=lambda i: -per_rule[i])[:8]
    print("slowest rules alone (mean CPU ms per evaluation):")
    for i in slow:
        print(f"  {per_rule[i] / args.cycles * 1000:8.2f}  {rules[i]}")
    if args.rules_out:
        group = {
            "groups": [
                {
                    "name": "bench",
                    "interval": "1s",
                    "rules": [{"alert": f"Bench{i}", "expr": r} for i, r in enumerate(rules)],
                }
            ]
        }
        Path(args.rules_out).write_text(yaml.safe_dump(group, sort_keys=False))
        print(f"rule group written to {args.rules_out}")


if __name__ == "__main__":
    main()
