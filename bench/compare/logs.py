"""Log throughput: mtail vs portal-monitor's `logfile` check on the same winston-style file.

What: writes N lines with `bench/bench_logfile.py`'s generator (the BFF's winston JSON:
request lines with level, statusCode and duration, Platform Event and WHMCS lines), then
- mtail: `mtail -one_shot` with the anchor stack's `bff.mtail` (lines by level and by
  status class, a duration histogram), timed from spawn to exit; its CPU from getrusage;
- ours: `bench_logfile.rate_check` (a full `LogfileCheck.collect()` from the start of the
  file, `preset: winston`: the same counts plus the window, the error ratio and p95),
  timed in this process.
Each is the best of `repeat` runs (other load on the machine only slows a run) and checks
that every line was counted.

Why here and not in bench_logfile.py: that file measures our parser against Python
baselines; this one puts the reference tool beside it, in the same run as the rest of the
comparison.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench.bench_logfile import rate_check, winston_line, write_log
from bench.compare.refstack import CONFIG_DIR

MTAIL_TIMEOUT_S = 900.0
_LINES_TOTAL = re.compile(rb"^bff_log_lines_total\{[^}]*\}\s+([0-9.eE+]+)", re.M)


@dataclass(frozen=True)
class Throughput:
    tool: str
    lines: int
    seconds: float  # wall clock of the best run
    cpu_seconds: float  # CPU of that run (user + system, all threads)

    @property
    def lines_per_s(self) -> float:
        return self.lines / self.seconds

    @property
    def lines_per_cpu_s(self) -> float:
        return self.lines / self.cpu_seconds if self.cpu_seconds > 0 else float("nan")


def make_log(path: Path, lines: int) -> None:
    write_log(str(path), winston_line, lines)


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def mtail_once(path: Path, lines: int) -> Throughput:
    argv = ["mtail", "-one_shot", "-one_shot_format", "prometheus", "-progs", str(CONFIG_DIR / "mtail"),
            "-logs", str(path), "-logtostderr", "-address", "127.0.0.1", "-port", "0"]
    cpu0 = _children_cpu()
    t = time.perf_counter()
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=MTAIL_TIMEOUT_S)
    seconds = time.perf_counter() - t
    if done.returncode != 0:
        raise RuntimeError(f"mtail on {path} exited {done.returncode}: {done.stderr.decode(errors='replace')[-1500:]}")
    m = _LINES_TOTAL.search(done.stdout)
    counted = float(m.group(1)) if m else -1.0
    if counted != lines:
        raise RuntimeError(f"mtail counted {counted:.0f} lines of {lines} in {path}")
    return Throughput("mtail", lines, seconds, _children_cpu() - cpu0)


def ours_once(path: Path, lines: int) -> Throughput:
    cpu0 = time.process_time()
    t = time.perf_counter()
    rate_check(str(path), lines, preset="winston")  # asserts that every line was counted
    seconds = time.perf_counter() - t
    return Throughput("portal-monitor logfile check", lines, seconds, time.process_time() - cpu0)


def compare(workdir: Path, lines: int, repeat: int) -> tuple[Throughput, Throughput, int]:
    """(mtail, ours, file size in bytes): best of `repeat` runs each, alternating."""
    path = workdir / "winston.log"
    make_log(path, lines)
    size = os.path.getsize(path)
    best: dict[str, Throughput] = {}
    try:
        for _ in range(repeat):
            for run in (mtail_once, ours_once):
                t = run(path, lines)
                if t.tool not in best or t.seconds < best[t.tool].seconds:
                    best[t.tool] = t
    finally:
        path.unlink(missing_ok=True)
    return best["mtail"], best["portal-monitor logfile check"], size
