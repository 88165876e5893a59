"""Footprint of a set of processes over a window: resident memory and CPU seconds (psutil).

What: `measure_footprints({"stack": [pid, ...]})` samples every named group (each pid and
all its descendants) over the same wall-clock window: RSS summed each second (end and peak),
USS at the end, user + system CPU seconds from start to end.

Why one function for both stacks: the reference's five processes and portal-monitor's one
are measured by the same code over the same seconds, so neither gets a kinder clock.

`import_floor()` shows where portal-monitor's share comes from: the RSS of a fresh interpreter
after each group of the libraries it is built on, then after its own modules.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class Footprint:
    """Resident memory and CPU of a set of processes over a window."""

    rss_bytes: float  # sum of RSS at the end of the window
    rss_peak_bytes: float  # largest sum seen while sampling
    cpu_seconds: float  # user + system over the window
    window_s: float
    per_process_rss: dict[str, float]
    uss_bytes: float  # sum of unique set sizes at the end: what exiting would free (shared pages not counted)

    @property
    def cpu_per_minute(self) -> float:
        return self.cpu_seconds * 60.0 / self.window_s


def _family(pids: list[int]) -> list[psutil.Process]:
    procs: list[psutil.Process] = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            procs += [p, *p.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
    return procs


def _total(procs: list[psutil.Process], measure: Callable[[psutil.Process], float]) -> float:
    """`measure` summed over the processes still alive."""
    total = 0.0
    for p in procs:
        try:
            total += measure(p)
        except psutil.NoSuchProcess:
            continue
    return total


def _cpu_seconds(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system


def _cpu(procs: list[psutil.Process]) -> float:
    return _total(procs, _cpu_seconds)


def _uss(procs: list[psutil.Process]) -> float:
    return _total(procs, lambda p: float(p.memory_full_info().uss))


def _rss(procs: list[psutil.Process]) -> dict[str, float]:
    out: dict[str, float] = {}
    for p in procs:
        try:
            key = f"{p.name()}[{p.pid}]"
            out[key] = float(p.memory_info().rss)
        except psutil.NoSuchProcess:
            continue
    return out


async def measure_footprints(groups: dict[str, list[int]], window_s: float, step_s: float = 1.0
                             ) -> dict[str, Footprint]:
    """Footprint of each named group of processes over the same `window_s` of wall time."""
    fams = {name: _family(pids) for name, pids in groups.items()}
    cpu0 = {name: _cpu(procs) for name, procs in fams.items()}
    peak = dict.fromkeys(groups, 0.0)
    t0 = time.monotonic()
    for _ in range(int(window_s / step_s)):
        await asyncio.sleep(step_s)  # sampling cadence of the steady-state window (real time is the point)
        for name, procs in fams.items():
            peak[name] = max(peak[name], sum(_rss(procs).values()))
    elapsed = time.monotonic() - t0
    out: dict[str, Footprint] = {}
    for name, procs in fams.items():
        rss = _rss(procs)
        out[name] = Footprint(sum(rss.values()), max(peak[name], sum(rss.values())),
                              _cpu(procs) - cpu0[name], elapsed, rss, _uss(procs))
    return out


# Where a Python daemon's memory goes before it does anything: RSS after each group of imports,
# in a fresh interpreter, in the order they stack up. The last stage is the project's own code.
IMPORT_STAGES: tuple[tuple[str, str], ...] = (
    ("Python 3 interpreter", ""),
    ("asyncio (with ssl, concurrent.futures)", "import asyncio, ssl"),
    ("aiohttp: client and server", "import aiohttp, aiohttp.web"),
    ("pydantic (config only; BaseModel loads most of it)", "from pydantic import BaseModel, Field, ValidationError"),
    ("prometheus-client", "import prometheus_client"),
    ("structlog, PyYAML, orjson, msgspec, psutil", "import structlog, yaml, orjson, msgspec, psutil"),
    ("redis-py (asyncio, hiredis), asyncpg", "import redis.asyncio, asyncpg"),
    ("portal-monitor's own modules and check models", "import monitor.daemon, checks"),
)

_STAGE_SCRIPT = """
import json, sys, psutil
p = psutil.Process()
out = []
for label, stmt in json.loads(sys.argv[1]):
    exec(stmt)
    out.append([label, p.memory_info().rss])
print(json.dumps(out))
"""


def import_floor(python: str, cwd: str) -> list[tuple[str, float]]:
    """(stage, RSS in bytes after it) for IMPORT_STAGES in a fresh `python` (psutil is loaded
    first to measure, and counted in the first stage)."""
    import json
    import subprocess

    done = subprocess.run([python, "-c", _STAGE_SCRIPT, json.dumps(IMPORT_STAGES)], cwd=cwd, capture_output=True,
                          text=True, timeout=120, check=True)
    return [(label, float(rss)) for label, rss in json.loads(done.stdout)]
