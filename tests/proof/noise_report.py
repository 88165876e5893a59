"""Pages per day over seeded normal days, and recall on seeded fault days, with the shipped rules.

Each normal day is `seed_day.normal_day(seed)` run through `portal_day.simulate` exactly as
`test_noise_day.py` runs the hand-written day (the shipped `alert_rules.yaml`, every receiver
on; a page is a trigger to the on-call PagerDuty receiver). Each fault day is the same seeded
day plus `test_noise_day.FAULTS`: recall is the share of faults paged exactly once by their
expected alert. Every page that is not a fault's is listed with the episode that caused it.

    .venv/bin/python -m tests.proof.noise_report [--seeds 30] [--fault-seeds 10] [--jobs 2]
    make noise-report

About 50 s of CPU per simulated day.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from tests.proof.seed_day import normal_day
from tests.proof.test_noise_day import FAULTS, caused_by, clock, judge, run_day, shipped


def one_day(seed: int, with_faults: bool) -> dict[str, object]:
    episodes = normal_day(seed) + (FAULTS if with_faults else [])
    with tempfile.TemporaryDirectory(prefix=f"noise-{seed}-") as tmp:
        report = asyncio.run(run_day(episodes, shipped(), Path(tmp)))
    hits, noise = judge(report, episodes)
    return {
        "seed": seed,
        "faults": with_faults,
        "recall": sum(len(h) == 1 for h in hits.values()),
        "missed": [name for name, h in hits.items() if len(h) != 1],
        "noise": [(clock(p.at), p.alertname, caused_by(p, episodes)) for p in noise],
        "seconds": report.seconds,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=30)
    ap.add_argument("--fault-seeds", type=int, default=10)
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    args = ap.parse_args()
    jobs = [(s, False) for s in range(args.seeds)] + [(s, True) for s in range(args.fault_seeds)]
    results = []
    with ProcessPoolExecutor(args.jobs) as pool:
        for r in pool.map(one_day, *zip(*jobs, strict=True)):  # in order; each day logged as it ends
            results.append(r)
            kind = "fault day" if r["faults"] else "normal day"
            print(f"{kind} {r['seed']}: {len(r['noise'])} other pages {r['noise']}, recall {r['recall']}, "  # type: ignore[arg-type]
                  f"{r['seconds']:.0f} s", file=sys.stderr, flush=True)
    normal = [r for r in results if not r["faults"]]
    faulty = [r for r in results if r["faults"]]
    cmd = " ".join([".venv/bin/python -m tests.proof.noise_report", *sys.argv[1:]])
    print(f"`{cmd}`: shipped alert_rules.yaml, seeded normal days (tests/proof/seed_day.py)\n")
    print("| seed | pages | pages: time, alert <- episode |")
    print("|---:|---:|---|")
    for r in normal:
        noise = r["noise"]
        assert isinstance(noise, list)
        print(f"| {r['seed']} | {len(noise)} | {'; '.join(f'{t} {a} <- {c}' for t, a, c in noise) or '-'} |")
    quiet = sum(1 for r in normal if not r["noise"])
    total = sum(len(r["noise"]) for r in normal)  # type: ignore[arg-type]
    by_rule = Counter(a for r in normal for _, a, _ in r["noise"])  # type: ignore[attr-defined]
    print(f"\nNormal days: {quiet}/{len(normal)} without a page (goal: at least 29 of 30); {total} pages in "
          f"{len(normal)} days ({total / max(len(normal), 1):.2f} per day)"
          + (f"; by rule: {dict(by_rule)}" if by_rule else ""))
    if faulty:
        n = len(FAULTS)
        recall = sum(r["recall"] for r in faulty) / (n * len(faulty))  # type: ignore[misc]
        print(f"\nFault days (seeded day + the {n} faults of test_noise_day.FAULTS), seeds 0-{len(faulty) - 1}:\n")
        print("| seed | faults paged exactly once | missed | other pages |")
        print("|---:|---:|---|---|")
        for r in faulty:
            missed = ", ".join(r["missed"]) or "-"  # type: ignore[arg-type]
            noise = "; ".join(f"{t} {a} <- {c}" for t, a, c in r["noise"]) or "-"  # type: ignore[attr-defined]
            print(f"| {r['seed']} | {r['recall']}/{n} | {missed} | {noise} |")
        print(f"\nRecall over the fault days: {recall:.3f}")


if __name__ == "__main__":
    main()
