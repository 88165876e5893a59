"""The scheduler: intervals, timeouts, no overlap, isolation of slow checks, wake-ups, logging.

These tests use short real intervals (tens of milliseconds) and wait for events ("the fast
check ran ten times"), never for a fixed time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from structlog.testing import capture_logs

from monitor.model import CheckError, Sample
from monitor.scheduler import Scheduler, run_check
from monitor.store import Store


class FakeCheck:
    def __init__(self, name: str, interval: float, timeout: float = 1.0, type: str = "fake") -> None:
        self.name, self.type, self.interval_s, self.timeout_s = name, type, interval, timeout
        self.runs = 0
        self.active = 0
        self.max_active = 0
        self.behaviour: Callable[[], object] | None = None
        self.ran = asyncio.Event()
        self.closed = False

    async def collect(self) -> list[Sample]:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            self.runs += 1
            self.ran.set()
            if self.behaviour is not None:
                result = self.behaviour()
                if asyncio.iscoroutine(result):
                    await result
            return [Sample("portal_fake_value", {"k": "v"}, float(self.runs))]
        finally:
            self.active -= 1

    async def aclose(self) -> None:
        self.closed = True


async def wait_runs(check: FakeCheck, n: int, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while check.runs < n:
            check.ran.clear()
            await check.ran.wait()


async def running(scheduler: Scheduler) -> asyncio.Task[None]:
    return asyncio.create_task(scheduler.run())


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_check_never_overlaps_itself() -> None:
    store = Store()
    slow = FakeCheck("slow", interval=0.01, timeout=5)
    gate = asyncio.Event()
    slow.behaviour = gate.wait
    clock_check = FakeCheck("clock", interval=0.01)
    sched = Scheduler(store)
    sched.add(slow)
    sched.add(clock_check)
    task = await running(sched)
    await wait_runs(slow, 1)
    # While the run holds the gate, several of its intervals pass (the other check ran
    # five times); no second run may start meanwhile.
    await wait_runs(clock_check, clock_check.runs + 5)
    assert slow.runs == 1
    gate.set()
    await wait_runs(slow, 3)
    await stop(task)
    assert slow.max_active == 1
    assert sched.skipped >= 1  # the overrun slots were skipped, not piled up


async def test_a_hung_check_delays_no_other() -> None:
    store = Store()
    hung = FakeCheck("hung", interval=0.05, timeout=2.0)
    never = asyncio.Event()
    hung.behaviour = never.wait
    fast = FakeCheck("fast", interval=0.02)
    sched = Scheduler(store)
    sched.add(hung)
    sched.add(fast)
    task = await running(sched)
    await wait_runs(fast, 15)
    await stop(task)
    assert hung.runs == 1 and store.result("hung") is None  # still hanging when we stopped
    assert max(sched.delays) < 0.1


async def test_timeout_marks_the_check_down_with_reason_timeout() -> None:
    hung = FakeCheck("hung", interval=1, timeout=0.05, type="redis")
    hung.behaviour = asyncio.Event().wait
    result = await run_check(hung)
    assert (result.up, result.reason) == (False, "timeout")
    assert "did not finish within 0.05s" in result.error
    store = Store()
    store.put(result)
    names = {(s.name, s.value) for s in store.samples()}
    assert ("portal_redis_up", 0.0) in names
    assert not any(n == "portal_fake_value" for n, _ in names)  # its other series are gone
    errors = [s for s in store.samples() if s.name == "portal_check_errors_total"]
    assert [(dict(s.labels), s.value) for s in errors] == [
        ({"check": "hung", "type": "redis", "reason": "timeout"}, 1.0)]


async def test_check_error_keeps_the_samples_it_carries() -> None:
    check = FakeCheck("h", interval=1, type="http")

    def fail() -> None:
        raise CheckError("http_status", "http://x/health answered 503",
                         samples=[Sample("portal_http_status_code", {}, 503)])

    check.behaviour = fail
    result = await run_check(check)
    store = Store()
    store.put(result, {"env": "prod"})
    got = {s.name: (dict(s.labels), s.value) for s in store.samples()}
    assert got["portal_http_status_code"] == ({"check": "h", "env": "prod"}, 503)
    assert got["portal_http_up"] == ({"check": "h", "env": "prod"}, 0.0)


async def test_a_crashing_check_is_reported_as_internal_not_raised() -> None:
    check = FakeCheck("bug", interval=1)
    check.behaviour = lambda: 1 / 0
    with capture_logs() as logs:
        result = await run_check(check)
    assert (result.up, result.reason) == (False, "internal")
    assert "ZeroDivisionError" in result.error
    assert logs[0]["event"] == "check_crashed"


async def test_failure_and_recovery_are_logged_once_each() -> None:
    store = Store()
    check = FakeCheck("c", interval=0.01)
    state = {"fail": True}

    def maybe_fail() -> None:
        if state["fail"]:
            raise CheckError("connect", "127.0.0.1:1: connection refused")

    check.behaviour = maybe_fail
    sched = Scheduler(store)
    sched.add(check)
    with capture_logs() as logs:
        task = await running(sched)
        await wait_runs(check, 4)
        state["fail"] = False
        n = check.runs
        await wait_runs(check, n + 3)
        await stop(task)
    events = [(e["event"], e.get("reason")) for e in logs if e["event"].startswith("check_")]
    assert events == [("check_failed", "connect"), ("check_recovered", None)]


async def test_watch_wake_runs_the_check_at_once() -> None:
    class Watching(FakeCheck):
        wake: Callable[[], None] | None = None
        armed = asyncio.Event()

        async def watch(self, wake: Callable[[], None]) -> None:
            self.wake = wake
            self.armed.set()
            await asyncio.Event().wait()

    check = Watching("w", interval=3600)
    sched = Scheduler(Store(), max_phase_s=0.0)
    sched.add(check)
    task = await running(sched)
    await wait_runs(check, 1)
    await check.armed.wait()
    assert check.wake is not None
    check.wake()
    await wait_runs(check, 2, timeout=1.0)  # an hour-long interval, yet it ran again
    await stop(task)


async def test_checks_can_be_added_and_removed_while_running() -> None:
    store = Store()
    a, b = FakeCheck("a", interval=0.01), FakeCheck("b", interval=0.01)
    sched = Scheduler(store)
    sched.add(a)
    task = await running(sched)
    await wait_runs(a, 2)
    sched.add(b)
    await wait_runs(b, 2)
    await sched.remove("a")
    assert a.closed and store.result("a") is None
    runs = a.runs
    await wait_runs(b, b.runs + 3)
    assert a.runs == runs
    with pytest.raises(ValueError, match="already scheduled"):
        sched.add(b)
    await stop(task)


async def test_event_loop_lag_is_measured_with_the_injected_sleep() -> None:
    clock = {"t": 0.0}

    async def slow_sleep(seconds: float) -> None:
        clock["t"] += seconds + 0.3  # the loop woke 300 ms late
        await asyncio.sleep(0)

    sched = Scheduler(Store(), clock=lambda: clock["t"], sleep=slow_sleep)
    task = asyncio.create_task(sched._measure_lag())
    async with asyncio.timeout(2):
        while sched.ticks < 3:
            await asyncio.sleep(0)
    task.cancel()
    assert sched.loop_lag_s == pytest.approx(0.3)
    assert {s.name: s.value for s in sched.samples()}["portal_monitor_event_loop_lag_seconds"] == pytest.approx(0.3)
