"""The process check against real child processes with a distinctive command line."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable

import psutil
import pydantic
import pytest

from checks import process
from checks.process import (
    DEFAULT_CMDLINE,
    MIN_AGE_S,
    ProcessCheck,
    ProcessSnapshot,
    cpu_ratio,
    describe_matches,
    program_of,
    scan,
)
from pathlib import Path

from monitor.model import CheckContext, CheckError, MemoryState, Sample

# Waits for "burn SECONDS" lines on stdin, burns that much CPU, answers "done": the test moves
# CPU time forward on demand and never waits for wall time to pass.
CHILD = """
import sys, time
print("ready", flush=True)
for line in sys.stdin:
    want = float(line.split()[1])
    start = time.process_time()
    while time.process_time() - start < want:
        pass
    print("done", flush=True)
"""


REPO = Path(__file__).resolve().parents[1]


class Child:
    """A python child whose argv carries a marker, burning CPU when told to."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def spawn(cls, marker: str, *, argv0: str | None = None, args: tuple[str, ...] | None = None) -> Child:
        """`argv0` replaces the program's name in the command line (`/srv/bff/node` for a python
        that reads, to /proc and psutil, like node); `args` replace `-c CHILD marker`."""
        argv = args if args is not None else ("-c", CHILD, marker)
        proc = await asyncio.create_subprocess_exec(
            argv0 or sys.executable, *argv, executable=sys.executable,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        child = cls(proc)
        assert await child._line() == "ready"
        return child

    async def _line(self) -> str:
        assert self.proc.stdout is not None
        return (await asyncio.wait_for(self.proc.stdout.readline(), 30)).decode().strip()

    async def burn(self, cpu_s: float) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"burn {cpu_s}\n".encode())
        await self.proc.stdin.drain()
        assert await self._line() == "done"

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t


def make_check(pattern: str, clock: Callable[[], float] = time.monotonic, **kw: int) -> ProcessCheck:
    cfg = process.Config(name="bff_process", type="process", cmdline=pattern)
    ctx = CheckContext(interval_s=10.0, timeout_s=5.0, state=MemoryState(), now=time.time)
    return ProcessCheck(cfg, ctx, clock=clock, **kw)


def values(samples: list[Sample]) -> dict[str, float]:
    assert all(s.labels == {} for s in samples)
    return {s.name: s.value for s in samples}


@pytest.fixture
def marker() -> str:
    """A command-line argument no other process has; letters, digits and '-' read as a regex too."""
    return f"portal-test-{uuid.uuid4().hex}"


async def test_counts_memory_and_cpu_of_a_matching_child(marker: str) -> None:
    child = await Child.spawn(marker)
    clock = FakeClock()
    check = make_check(marker, clock)
    try:
        first = values(await check.collect())
        assert first["portal_process_matching"] == 1
        rss = psutil.Process(child.proc.pid).memory_info().rss
        assert 0.5 * rss <= first["portal_process_resident_bytes"] <= 2 * rss
        # First run: the average since the child started, like `ps -o %cpu`.
        assert 0 <= first["portal_process_cpu_ratio"] <= 1.5

        await child.burn(0.3)
        clock.t += 2.0
        second = values(await check.collect())
        # 0.3 CPU seconds over 2 (fake) wall seconds; the child idles otherwise.
        assert 0.14 <= second["portal_process_cpu_ratio"] <= 0.25, second

        clock.t += 2.0
        idle = values(await check.collect())
        assert idle["portal_process_cpu_ratio"] <= 0.03
    finally:
        await child.stop()
        await check.aclose()


async def test_sums_over_several_matching_processes(marker: str) -> None:
    children = [await Child.spawn(marker) for _ in range(2)]
    clock = FakeClock()
    check = make_check(marker, clock)
    try:
        await check.collect()
        for c in children:
            await c.burn(0.2)
        clock.t += 1.0
        got = values(await check.collect())
        assert got["portal_process_matching"] == 2
        assert 0.35 <= got["portal_process_cpu_ratio"] <= 0.5, got
        assert got["portal_process_resident_bytes"] > 0
    finally:
        for c in children:
            await c.stop()


async def test_a_restarted_process_counts_its_whole_short_life(marker: str) -> None:
    """A new pid seen for the first time counts cpu / max(age, window): its whole life here."""
    old = await Child.spawn(marker)
    clock = FakeClock()
    check = make_check(marker, clock)
    await check.collect()
    await old.stop()
    new = await Child.spawn(marker)
    try:
        await new.burn(0.3)
        clock.t += 10.0  # the new child is younger than the window
        got = values(await check.collect())
        assert got["portal_process_matching"] == 1
        assert 0.025 <= got["portal_process_cpu_ratio"] <= 0.06, got  # ~0.3 s (+ start-up) over 10 s
    finally:
        await new.stop()


async def test_no_match_is_not_found(marker: str) -> None:
    check = make_check(marker)
    with pytest.raises(CheckError) as info:
        await check.collect()
    assert info.value.reason == "not_found"
    assert f"/{marker}/" in str(info.value)
    assert info.value.samples == [Sample("portal_process_matching", {}, 0.0)]


async def test_the_monitor_itself_never_matches() -> None:
    own = " ".join(psutil.Process().cmdline())
    pattern = f"^{re.escape(own)}$"
    with pytest.raises(CheckError) as info:
        await make_check(pattern).collect()
    assert info.value.reason == "not_found"
    found = values(await make_check(pattern, own_pid=-1).collect())
    assert found["portal_process_matching"] >= 1


async def test_the_process_table_is_walked_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """The scan blocks until a callback on the event loop runs: only a worker thread lets it."""
    gate = threading.Event()

    def blocking_scan(pattern: re.Pattern[str], exclude_pid: int) -> list[ProcessSnapshot]:
        if not gate.wait(10):
            raise AssertionError("the event loop was blocked while the process table was read")
        return [ProcessSnapshot(pid=4242, started_at=time.time() - 100, cpu_s=5.0, rss_bytes=1 << 20)]

    monkeypatch.setattr(process, "scan", blocking_scan)
    asyncio.get_running_loop().call_soon(gate.set)
    got = values(await make_check("anything").collect())
    assert got == {"portal_process_matching": 1, "portal_process_cpu_ratio": pytest.approx(0.05, rel=0.05),
                   "portal_process_resident_bytes": 1 << 20}


def test_invalid_pattern_is_refused_at_load() -> None:
    with pytest.raises(pydantic.ValidationError, match="is not a regular expression"):
        process.Config(name="p", type="process", cmdline="node(")


@pytest.mark.parametrize(("cmdline", "why"), [
    ("a{4294967296}", "a repeat count is too large"),  # re.compile raises OverflowError
    ("(" * 1000 + ")" * 1000, "groups are nested too deeply"),  # ... and RecursionError
    ("node [[a]", "Possible nested set"),  # ... and only warns (FutureWarning) here
])
def test_patterns_re_compile_cannot_take_are_refused_with_the_reason(cmdline: str, why: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=f"is not a regular expression: {re.escape(why)}"):
        process.Config(name="p", type="process", cmdline=cmdline)


# --- cpu_ratio: the pure arithmetic ------------------------------------------------------------

def snap(pid: int, started: float, cpu: float) -> ProcessSnapshot:
    return ProcessSnapshot(pid=pid, started_at=started, cpu_s=cpu, rss_bytes=0)


def test_cpu_ratio_first_run_is_the_lifetime_average() -> None:
    assert cpu_ratio([snap(1, 0.0, 50.0)], {}, None, wall_now=100.0) == 0.5
    # A process younger than MIN_AGE_S is not extrapolated from its start-up.
    assert cpu_ratio([snap(1, 99.9, 0.05)], {}, None, wall_now=100.0) == 0.05 / MIN_AGE_S


def test_cpu_ratio_known_process_uses_the_window() -> None:
    previous = {(1, 0.0): 50.0, (2, 5.0): 1.0}
    procs = [snap(1, 0.0, 55.0), snap(2, 5.0, 3.0)]
    assert cpu_ratio(procs, previous, 10.0, wall_now=110.0) == pytest.approx(0.7)


def test_cpu_ratio_reused_pid_is_a_new_process() -> None:
    """Same pid, later start: not a delta against the old process's CPU time."""
    previous = {(1, 0.0): 500.0}
    assert cpu_ratio([snap(1, 105.0, 2.0)], previous, 10.0, wall_now=110.0) == pytest.approx(0.2)


def test_cpu_ratio_clock_that_did_not_move_falls_back_to_lifetime() -> None:
    assert cpu_ratio([snap(1, 0.0, 50.0)], {(1, 0.0): 50.0}, 0.0, wall_now=100.0) == 0.5


def test_cpu_ratio_never_negative() -> None:
    assert cpu_ratio([snap(1, 0.0, 49.0)], {(1, 0.0): 50.0}, 10.0, wall_now=100.0) == 0.0


def test_own_pid_default_is_this_process() -> None:
    assert make_check("x")._own_pid == os.getpid()


# ------------------------------------------------------------------ which processes matched

@pytest.mark.parametrize(
    ("cmdline", "matches"),
    [
        ("node /srv/bff/dist/main.js", True),
        ("/usr/bin/node --max-old-space-size=512 /opt/customer-portal-bff/main.js", True),
        ("nodejs bff.js", True),
        ("/home/app/.nvm/versions/node/v20.1.0/bin/node dist/main.js --name portal-bff", True),
        # what `node.*bff` also matched:
        ("python3 tool.py --name node-bff", False),
        ("vim bff/node.ts", False),
        ("/usr/bin/python3 -m pytest tests -k node_bff", False),
        ("node /srv/frontend/server.js", False),
        ("nodemon --exec node bff.js", False),  # the watcher itself; its node child matches
    ],
)
def test_default_pattern_wants_node_running_a_bff_script(cmdline: str, matches: bool) -> None:
    assert bool(re.search(DEFAULT_CMDLINE, cmdline)) is matches


def test_default_pattern_is_the_config_default_and_the_shipped_one() -> None:
    assert process.Config(name="p", type="process").cmdline == DEFAULT_CMDLINE
    shipped = (REPO / "alert_rules.yaml").read_text()
    assert f'cmdline: "${{BFF_PROCESS_PATTERN:-{DEFAULT_CMDLINE}}}"' in shipped
    env = (REPO / "systemd" / "portal-monitor.env").read_text()
    assert f"BFF_PROCESS_PATTERN={DEFAULT_CMDLINE}\n" in env


async def test_default_pattern_on_real_processes_matches_node_not_a_python_named_node_bff(
    tmp_path: Path,
) -> None:
    tag = uuid.uuid4().hex
    script = tmp_path / f"bff-{tag}" / "main.js"
    script.parent.mkdir()
    script.write_text(CHILD)  # python code: only the command line has to look like node's
    # A node-looking BFF (argv[0] ends in /node, its script lives under .../bff-<tag>/), and a
    # python whose arguments contain "node-bff": `node.*bff` matched both.
    bff = await Child.spawn(tag, argv0="/srv/test/bin/node", args=(str(script), "--port=4000"))
    impostor = await Child.spawn(f"--name node-bff-{tag}")
    try:
        found = {p.pid: p for p in scan(re.compile(DEFAULT_CMDLINE), os.getpid())}
        assert bff.proc.pid in found
        assert impostor.proc.pid not in found
        assert found[bff.proc.pid].program == "node main.js"
    finally:
        await bff.stop()
        await impostor.stop()


async def test_describe_names_the_matched_pids_in_order(marker: str) -> None:
    children = [await Child.spawn(marker) for _ in range(2)]
    check = make_check(marker)
    try:
        assert process.ProcessCheck.describe(check) == "no process matched"
        await check.collect()
        pids = sorted(c.proc.pid for c in children)
        exe = os.path.basename(sys.executable)
        assert check.describe() == f"pid {pids[0]} ({exe} -c), pid {pids[1]} ({exe} -c)"
    finally:
        for c in children:
            await c.stop()
        await check.aclose()


async def test_describe_after_no_match_says_so_and_the_result_carries_it(marker: str) -> None:
    from monitor.scheduler import run_check

    check = make_check(marker)
    result = await run_check(check)
    assert not result.up and result.reason == "not_found"
    assert result.detail == "no process matched"


def test_program_of_never_shows_other_arguments() -> None:
    argv = ["/usr/bin/node", "--max-old-space-size=512", "/srv/bff/dist/main.js", "--token=s3cret"]
    assert program_of(argv) == "node main.js"
    assert program_of(["node", "-e", "require('x')('s3cret')"]) == "node -e"
    assert program_of(["/usr/local/bin/bff"]) == "bff"


def test_describe_counts_what_it_does_not_name() -> None:
    procs = [ProcessSnapshot(pid, 0.0, 0.0, 0, "node main.js") for pid in range(100, 108)]
    text = describe_matches(procs)
    assert text.startswith("pid 100 (node main.js), pid 101 (node main.js)")
    assert text.endswith("pid 104 (node main.js) and 3 more")
