"""The BFF process, found by command-line regex: up, CPU ratio, resident memory.

Runbook scenario 5 (`top -p $(pgrep -f "node.*bff")`).

Like `pgrep -f`, `cmdline` is searched (not anchored) in each process's arguments joined by
spaces; the monitor's own process never matches, and processes without a readable command
line (kernel threads, zombies, other users' processes under hidepid) are skipped. No match
raises `CheckError("not_found")`, keeping `portal_process_matching 0`.

The default pattern, `DEFAULT_CMDLINE`, wants the program itself to be `node` (any path, or
`nodejs`) and a later argument to contain `bff`: `node /srv/bff/dist/main.js` matches, while
`python3 tool.py --name node-bff` or `vim bff/node.ts` do not (`node.*bff`, `pgrep -f`'s habit,
matched both). `describe()` names the PIDs that matched and their program and script, so a wrong
pattern shows at once in `once`, the API and the status page (no other arguments: they may
carry secrets).

`portal_process_cpu_ratio` is CPU seconds (user + system) per wall second, summed over the
matching processes (1 = one core busy):

- a process seen on the previous run counts the CPU it used since then, over the time since
  then (what `top` shows);
- a process seen for the first time, on the first run or after a restart, counts its average
  since it started, `cpu / age` (what `ps -o %cpu` shows), where age is at least the time since
  the previous run and at least `MIN_AGE_S`. A restarted process's whole life lies inside the
  window, so this is exact for it, and the first run reports a real measurement instead of the
  0 that psutil's `cpu_percent()` gives before it is primed.

Processes are matched by (pid, start time), so a reused pid is a new process. Walking
/proc is blocking, so it runs in a worker thread and never stalls the event loop.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import psutil
from pydantic import field_validator

from monitor.config.fields import CheckBase, compile_regex
from monitor.model import CheckContext, CheckError, Sample

METRICS: dict[str, tuple[str, str]] = {
    "portal_process_up": ("gauge", "1 when a process matching the pattern runs"),
    "portal_process_matching": ("gauge", "processes matching the pattern"),
    "portal_process_cpu_ratio": ("gauge", "CPU time per wall second since the last check (1 = one core)"),
    "portal_process_resident_bytes": ("gauge", "resident memory of the matching processes"),
}
# Labels of each series besides `check` and the check's `labels` (the store adds those); a
# metric not named here has none. With METRICS, the catalogue `check-config` checks rules against.
LABELS: dict[str, tuple[str, ...]] = {}
KEY_METRICS = ("portal_process_matching", "portal_process_cpu_ratio", "portal_process_resident_bytes")

DEFAULT_CMDLINE = r"^([^ ]*/)?node(js)? (.* )?[^ ]*bff"
MAX_DESCRIBED = 5  # PIDs named by describe(); the rest are counted

MIN_AGE_S = 1.0  # a process seconds old has spent them starting up: don't extrapolate from less


class Config(CheckBase):
    type: Literal["process"]
    cmdline: str = DEFAULT_CMDLINE  # regex searched in the joined command line, like pgrep -f

    @field_validator("cmdline")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            compile_regex(value)
        except ValueError as e:
            raise ValueError(f"{value!r} is not a regular expression: {e}") from None
        return value


@dataclass(frozen=True, slots=True)
class ProcessSnapshot:
    """One matching process at one moment."""

    pid: int
    started_at: float  # psutil create_time: wall clock, seconds since the epoch
    cpu_s: float  # user + system CPU seconds since it started
    rss_bytes: int
    program: str = ""  # argv[0]'s base name and the first argument that is not an option's


def scan(pattern: re.Pattern[str], exclude_pid: int) -> list[ProcessSnapshot]:
    """The processes whose joined command line matches `pattern` (blocking: reads /proc)."""
    found: list[ProcessSnapshot] = []
    for proc in psutil.process_iter(["cmdline"]):  # bounded by the process table
        if proc.pid == exclude_pid:
            continue
        argv = proc.info.get("cmdline")
        if not argv or not pattern.search(" ".join(argv)):
            continue
        try:
            with proc.oneshot():
                times = proc.cpu_times()
                rss = proc.memory_info().rss
                started = proc.create_time()
        except (psutil.NoSuchProcess, psutil.AccessDenied):  # exited or hidden since the listing
            continue
        found.append(ProcessSnapshot(proc.pid, started, times.user + times.system, rss, program_of(argv)))
    return found


def program_of(argv: Sequence[str]) -> str:
    """`node main.js` for `/usr/bin/node --max-old-space-size=512 /srv/bff/dist/main.js --token=x`:
    the program's and the script's base names only, never the other arguments (they may be secrets)."""
    words = [os.path.basename(argv[0]) or argv[0]]
    if len(argv) > 1 and argv[1] in ("-c", "-e", "--eval", "-p", "--print"):
        words.append(argv[1])  # inline code: the option, not the code
        script = None
    else:
        script = next((a for a in argv[1:] if a and not a.startswith("-")), None)
    if script is not None:
        words.append(os.path.basename(script.rstrip("/")) or script)
    return " ".join(w[:60] for w in words)


def describe_matches(procs: Sequence[ProcessSnapshot]) -> str:
    """`pid 4242 (node main.js), pid 4250 (node main.js)`, at most `MAX_DESCRIBED` named."""
    if not procs:
        return "no process matched"
    shown = ", ".join(f"pid {p.pid} ({p.program})" if p.program else f"pid {p.pid}" for p in procs[:MAX_DESCRIBED])
    more = len(procs) - MAX_DESCRIBED
    return f"{shown} and {more} more" if more > 0 else shown


def cpu_ratio(
    procs: Sequence[ProcessSnapshot],
    previous: Mapping[tuple[int, float], float],
    elapsed_s: float | None,
    wall_now: float,
) -> float:
    """CPU seconds per wall second of `procs` (see the module docstring). Pure.

    `previous` maps (pid, started_at) to the CPU seconds of the previous run, `elapsed_s` the
    time since it (None on the first run).
    """
    window = elapsed_s if elapsed_s is not None and elapsed_s > 0 else None
    total = 0.0
    for p in procs:
        before = previous.get((p.pid, p.started_at)) if window is not None else None
        if before is not None and window is not None:
            total += max(0.0, p.cpu_s - before) / window
        else:
            total += p.cpu_s / max(wall_now - p.started_at, window or 0.0, MIN_AGE_S)
    return total


class ProcessCheck:
    """Count, CPU and memory of the processes matching a command-line pattern."""

    type = "process"

    def __init__(
        self,
        cfg: Config,
        ctx: CheckContext,
        *,
        clock: Callable[[], float] = time.monotonic,
        own_pid: int | None = None,
    ) -> None:
        self.name = cfg.name
        self.interval_s = ctx.interval_s
        self.timeout_s = ctx.timeout_s
        self._pattern = re.compile(cfg.cmdline)
        self._clock = clock  # for the CPU window; ctx.now (wall) only for process ages
        self._now = ctx.now
        self._own_pid = os.getpid() if own_pid is None else own_pid
        self._previous: dict[tuple[int, float], float] = {}
        self._previous_at: float | None = None
        self._matched: list[ProcessSnapshot] = []

    def describe(self) -> str:
        """Which processes the last run matched (see `describe_matches`)."""
        return describe_matches(self._matched)

    async def collect(self) -> list[Sample]:
        procs = await asyncio.to_thread(scan, self._pattern, self._own_pid)
        self._matched = sorted(procs, key=lambda p: p.pid)
        at = self._clock()
        elapsed = at - self._previous_at if self._previous_at is not None else None
        ratio = cpu_ratio(procs, self._previous, elapsed, self._now())
        self._previous = {(p.pid, p.started_at): p.cpu_s for p in procs}
        self._previous_at = at
        if not procs:
            where = f"/{self._pattern.pattern}/"
            raise CheckError(
                "not_found",
                f"no process command line matches {where} (like pgrep -f, excluding the monitor)",
                [Sample("portal_process_matching", {}, 0.0)],
            )
        return [
            Sample("portal_process_matching", {}, float(len(procs))),
            Sample("portal_process_cpu_ratio", {}, ratio),
            Sample("portal_process_resident_bytes", {}, float(sum(p.rss_bytes for p in procs))),
        ]

    async def aclose(self) -> None:
        """Nothing to release: psutil holds no handles between runs."""
