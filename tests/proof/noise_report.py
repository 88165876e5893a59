"""The benchmark days of the shipped rules: pages per normal day, recall and pages per fault.

Normal days are `seed_day.normal_day(seed)`, fault days `fault_day.fault_day(seed)` (the same
seeded day plus one of every runbook fault, distributions stated there), each run through
`portal_day.simulate` as `test_noise_day.py` runs the hand-written day: the shipped
`alert_rules.yaml`, every receiver on; a page is a trigger to the on-call PagerDuty receiver.

Printed: the pages of each normal day with the episode that caused them, the quiet days (goal:
at least 29 of 30), recall per runbook fault (the share of its faults paged by the alert it
must page, in the fault's window: start to end + `fault_day.TAIL_S`), pages per fault (every
page to on-call in that window, whatever its alertname: mean and max; goal 1), detection
latency, and the false pages by rule (normal days, and fault days outside every fault's window).

The world of a day (traffic, the real logfile check over ~250,000 lines, the stand-in checks)
costs about two thirds of a day's time and does not depend on the rules, so each day's per-step
check results are cached (`--cache`, default `bench/out/days-cache/`, a gzip'd pickle of about
3 MB a day) under a hash of the world's code, the logfile check's config, the day's episodes and
the seed (`portal_day.world_key`): re-running with other rules only re-evaluates the rules
(measured on one day: 536 s simulated, 190 s replayed, on a loaded 2-core machine). Change
anything in the world and the key changes; `--no-cache` ignores the cache. Ctrl-C prints the
figures of the days that finished.

    .venv/bin/python -m tests.proof.noise_report [--seeds 30] [--fault-seeds 30] [--jobs 2]
    make noise-report
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from monitor.config.loader import load_config_text
from tests.proof.fault_day import TAIL_S, fault_day
from tests.proof.portal_day import Episode, Page, world_key
from tests.proof.seed_day import normal_day
from tests.proof.test_noise_day import ENV, RULES_FILE, caused_by, clock, run_day

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / "bench" / "out" / "days-cache"


def fault_pages(pages: list[Page], episodes: list[Episode]) -> tuple[dict[int, list[Page]], list[Page]]:
    """Pages in each fault's window (by index into `episodes`), and the pages in none."""
    faults = {i: e for i, e in enumerate(episodes) if e.expect}
    inside: dict[int, list[Page]] = {i: [] for i in faults}
    outside: list[Page] = []
    for p in pages:
        owner = next((i for i, f in faults.items() if f.start <= p.at <= f.end + TAIL_S), None)
        if owner is None:
            outside.append(p)
        else:
            inside[owner].append(p)
    return inside, outside


def one_day(seed: int, with_faults: bool, cache: str, rules: str) -> dict[str, object]:
    episodes = fault_day(seed) if with_faults else normal_day(seed)
    cfg = load_config_text(rules, name=RULES_FILE.name, path=RULES_FILE, env=ENV)
    cached = Path(cache) / f"{world_key(episodes, cfg, seed)}.pickle.gz" if cache else None
    hit = cached is not None and cached.exists()
    with tempfile.TemporaryDirectory(prefix=f"days-{seed}-") as tmp:
        report = asyncio.run(run_day(episodes, cfg, Path(tmp), seed=seed, cache=cached))
    inside, outside = fault_pages(report.pages, episodes)
    faults = []
    for i, got in inside.items():
        f = episodes[i]
        assert f.expect is not None
        hits = [p for p in got if re.fullmatch(f.expect, p.alertname)]
        severity = dict(hits[0].labels).get("severity", "") if hits else ""
        faults.append({"name": f.name, "expect": f.expect, "start": f.start, "pages": len(got),
                       "paged": bool(hits), "latency": hits[0].at - f.start if hits else None,
                       "severity_ok": not hits or not f.severity or severity == f.severity,
                       "alerts": [p.alertname for p in got]})
    return {
        "seed": seed,
        "faults": with_faults,
        "fault_rows": faults,
        "noise": [(clock(p.at), p.alertname, caused_by(p, episodes)) for p in outside],
        "evening": [(clock(p.at), p.alertname) for p in report.evening_pages],
        "seconds": report.seconds,
        "cached": hit,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--seeds", type=int, default=30, help="normal days (seeds 0..N-1)")
    ap.add_argument("--fault-seeds", type=int, default=30, help="fault days (seeds 0..N-1)")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="days simulated at once")
    ap.add_argument("--cache", type=Path, default=CACHE, help="where each day's check results are cached")
    ap.add_argument("--no-cache", action="store_true", help="simulate every day's world again")
    args = ap.parse_args()
    cache = "" if args.no_cache else str(args.cache)
    if cache:
        args.cache.mkdir(parents=True, exist_ok=True)
    # normal and fault days interleaved, so that an interrupted run has figures of both
    jobs = sorted([(s, False) for s in range(args.seeds)] + [(s, True) for s in range(args.fault_seeds)])
    results: list[dict[str, object]] = []
    started = time.perf_counter()
    interrupted = False
    pool = ProcessPoolExecutor(args.jobs)
    try:
        rules = RULES_FILE.read_text(encoding="utf-8")  # read once: edits during the run change nothing
        pending = [pool.submit(one_day, s, f, cache, rules) for s, f in jobs]
        for done in as_completed(pending):  # each day logged as it ends
            r = done.result()
            results.append(r)
            rows = r["fault_rows"]
            assert isinstance(rows, list)
            print(f"{'fault' if r['faults'] else 'normal'} day {r['seed']}: {len(r['noise'])} other pages "  # type: ignore[arg-type]
                  f"{r['noise']}, {sum(f['paged'] for f in rows)}/{len(rows)} faults paged, "
                  f"{len(r['evening'])} pages the evening before, "  # type: ignore[arg-type]
                  f"{r['seconds']:.0f} s{' (cached world)' if r['cached'] else ''}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:  # Ctrl-C: the figures of the days that finished
        interrupted = True
        for proc in list((pool._processes or {}).values()):  # the days still running are dropped
            proc.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
    else:
        pool.shutdown()
    results.sort(key=lambda r: (bool(r["faults"]), r["seed"]))  # type: ignore[arg-type]
    wall = time.perf_counter() - started
    cmd = " ".join([".venv/bin/python -m tests.proof.noise_report", *sys.argv[1:]])
    print(f"`{cmd}`: {wall:.0f} s wall" + (f"; INTERRUPTED: {len(results)} of {len(jobs)} days finished"
                                           if interrupted else ""))
    print_report(results)


def print_report(results: list[dict[str, object]]) -> None:
    """The tables and figures of the days in `results` (as `one_day` returns them)."""
    normal = [r for r in results if not r["faults"]]
    faulty = [r for r in results if r["faults"]]
    print(f"shipped alert_rules.yaml; {len(normal)} normal days (tests/proof/seed_day.py), "
          f"{len(faulty)} fault days (tests/proof/fault_day.py); "
          f"{sum(bool(r['cached']) for r in results)} of {len(results)} worlds from the cache\n")
    if normal:
        print("| normal day (seed) | pages | pages: time, alert <- episode |")
        print("|---:|---:|---|")
        for r in normal:
            noise = r["noise"]
            assert isinstance(noise, list)
            print(f"| {r['seed']} | {len(noise)} | {'; '.join(f'{t} {a} <- {c}' for t, a, c in noise) or '-'} |")
        quiet = sum(1 for r in normal if not r["noise"])
        total = sum(len(r["noise"]) for r in normal)  # type: ignore[arg-type]
        by_rule = Counter(a for r in normal for _, a, _ in r["noise"])  # type: ignore[attr-defined]
        print(f"\nNormal days: {quiet}/{len(normal)} without a page (goal: at least 29 of 30); {total} pages in "
              f"{len(normal)} days ({total / len(normal):.2f} per day); false pages by rule: "
              f"{dict(by_rule.most_common()) or '-'}")
        evening = [(r["seed"], t, a) for r in normal for t, a in r["evening"]]  # type: ignore[attr-defined]
        print(f"The evenings before them (12 h each, no episode, `portal_day.WARMUP_S`): {len(evening)} pages"
              + (f": {evening}" if evening else ""))
    if faulty:
        rows: dict[str, list[dict[str, object]]] = defaultdict(list)
        for r in faulty:
            for f in r["fault_rows"]:  # type: ignore[attr-defined]
                rows[f["expect"]].append(f)
        print(f"\nFault days: {len(faulty)} (seeds {', '.join(str(r['seed']) for r in faulty)}), one of each fault "
              f"a day; a fault's pages are every page to on-call from its start to {TAIL_S / 60:.0f} min after its end\n")
        print("| fault must page | recall | pages per fault: mean, max | median latency | wrong severity | "
              "missed (seed: fault) | more than one page (seed: alerts) |")
        print("|---|---:|---:|---:|---:|---|---|")
        for expect, fs in rows.items():
            seeds = [r["seed"] for r in faulty for f in r["fault_rows"] if f["expect"] == expect]  # type: ignore[attr-defined]
            lat = [f["latency"] for f in fs if f["latency"] is not None]
            missed = "; ".join(f"{s}: {f['name']}" for s, f in zip(seeds, fs, strict=True) if not f["paged"]) or "-"
            multi = "; ".join(f"{s}: {'+'.join(f['alerts'])}" for s, f in zip(seeds, fs, strict=True)  # type: ignore[arg-type]
                              if f["pages"] > 1) or "-"  # type: ignore[operator]
            pages = [f["pages"] for f in fs]
            print(f"| {expect} | {sum(bool(f['paged']) for f in fs)}/{len(fs)} | "
                  f"{statistics.mean(pages):.2f}, {max(pages)} | "  # type: ignore[type-var,arg-type]
                  f"{f'{statistics.median(lat):.0f} s' if lat else '-'} | "  # type: ignore[type-var,arg-type]
                  f"{sum(not f['severity_ok'] for f in fs)} | {missed} | {multi} |")
        every = [f for fs in rows.values() for f in fs]
        pages = [f["pages"] for f in every]
        recall = sum(bool(f["paged"]) for f in every) / len(every)
        print(f"\nRecall over {len(every)} faults: {recall:.3f}; pages per fault: mean "
              f"{statistics.mean(pages):.2f}, max {max(pages)}; faults paged exactly once: "  # type: ignore[type-var,arg-type]
              f"{sum(p == 1 for p in pages)}/{len(every)}")
        outside = Counter(a for r in faulty for _, a, _ in r["noise"])  # type: ignore[attr-defined]
        print(f"Fault days, pages outside every fault's window: {sum(outside.values())}; by rule: "
              f"{dict(outside.most_common()) or '-'}")
        for r in faulty:
            for t, a, c in r["noise"]:  # type: ignore[attr-defined]
                print(f"- fault day {r['seed']}: {t} {a} <- {c}")


if __name__ == "__main__":
    main()
