"""Runs each check at its interval, under its timeout, never overlapping itself.

One task per check: a slow or hung check only delays itself. Each check gets a fixed random
phase within its first interval (at most 1 s), so a thousand 1 s checks spread over the
second instead of firing together. A check that can watch its target (`Watcher`) is re-run
at once when the watch says the target went away or came back.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping

import structlog

from monitor.model import Check, CheckError, CheckResult, Described, Sample, Watcher
from monitor.store import Store

log = structlog.get_logger()

METRICS: dict[str, tuple[str, str]] = {
    "portal_monitor_event_loop_lag_seconds": (
        "gauge",
        "how late the event loop woke up for a 250 ms timer, last second's max",
    ),
    "portal_monitor_schedule_delay_seconds": (
        "summary",
        "how late checks started against their schedule: quantiles 0.5, 0.99 and 1 (max) of the last 1000 runs; "
        "sum and count of every run",
    ),
    "portal_monitor_checks_skipped_total": ("counter", "scheduled runs skipped because the previous run overran"),
}
# Every label of the series above (the daemon's own: no `check`).
LABELS: dict[str, tuple[str, ...]] = {}


async def run_check(
    check: Check, *, clock: Callable[[], float] = time.perf_counter, wall: Callable[[], float] = time.time
) -> CheckResult:
    """Run one check once under its timeout; whatever goes wrong becomes a failed result."""
    started_wall = wall()
    t0 = clock()
    up, reason, error = True, "", ""
    samples: list[Sample] = []
    try:
        async with asyncio.timeout(check.timeout_s):
            samples = await check.collect()
    except CheckError as e:
        up, reason, error, samples = False, e.reason, str(e), e.samples
    except TimeoutError:
        up, reason = False, "timeout"
        error = f"{check.type} check {check.name!r} did not finish within {check.timeout_s:g}s"
    except Exception as e:  # a bug in a check must not stop the daemon; say where it happened
        up, reason, error = False, "internal", f"{type(e).__name__}: {e}"
        log.exception("check_crashed", check=check.name, type=check.type)
    detail = check.describe() if isinstance(check, Described) else ""
    return CheckResult(
        check=check.name,
        type=check.type,
        up=up,
        samples=samples,
        started_at=started_wall,
        duration_s=clock() - t0,
        reason=reason,
        error=error,
        detail=detail,
    )


class Scheduler:
    """Owns one task per check; `run()` until cancelled. Checks can be added and removed live."""

    def __init__(
        self,
        store: Store,
        *,
        labels: Mapping[str, Mapping[str, str]] | None = None,
        on_result: Callable[[CheckResult], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        rng: random.Random | None = None,
        max_phase_s: float = 1.0,
        delay_window: int = 1000,
    ) -> None:
        self.store = store
        self._labels = dict(labels or {})
        self._on_result = on_result
        self._clock = clock
        self._wall = wall
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._max_phase_s = max_phase_s
        self._checks: dict[str, Check] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._last_up: dict[str, bool] = {}
        self.delays: deque[float] = deque(maxlen=delay_window)  # how late each scheduled run started
        self.delay_sum = 0.0  # of every run since start (the summary's _sum and _count)
        self.delay_count = 0
        self.skipped = 0
        self.loop_lag_s = 0.0
        self.ticks = 0  # grows while the event loop runs (the lag timer) and as checks complete
        self._last_done: dict[str, float] = {}  # check -> clock() of its last completed run (or of add)
        self._group: asyncio.TaskGroup | None = None
        self._started = asyncio.Event()

    # -------------------------------------------------------------- membership

    @property
    def checks(self) -> dict[str, Check]:
        return dict(self._checks)

    def add(self, check: Check, labels: Mapping[str, str] | None = None) -> None:
        if check.name in self._checks:
            raise ValueError(f"check {check.name!r} is already scheduled")
        self._checks[check.name] = check
        self._labels[check.name] = dict(labels or {})
        self._last_done[check.name] = self._clock()
        if self._group is not None:
            self._tasks[check.name] = self._group.create_task(self._loop(check), name=f"check:{check.name}")

    async def remove(self, name: str) -> None:
        """Stop a check's task, close its clients and forget its series."""
        check = self._checks.pop(name, None)
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        if check is not None:
            await _close(check)
        self._labels.pop(name, None)
        self._last_up.pop(name, None)
        self._last_done.pop(name, None)
        self.store.remove(name)

    # -------------------------------------------------------------- running

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                for check in self._checks.values():
                    self._tasks[check.name] = group.create_task(self._loop(check), name=f"check:{check.name}")
                group.create_task(self._measure_lag(), name="loop-lag")
                self._started.set()
        finally:
            self._group = None
            self._tasks.clear()

    async def aclose(self) -> None:
        for check in list(self._checks.values()):
            await _close(check)

    async def _loop(self, check: Check) -> None:
        wake = asyncio.Event()
        watch_task = None
        if isinstance(check, Watcher) and getattr(getattr(check, "cfg", None), "watch", True):
            watch_task = asyncio.create_task(self._watch(check, wake), name=f"watch:{check.name}")
        interval = check.interval_s
        next_at = self._clock() + self._rng.uniform(0, min(interval, self._max_phase_s))
        try:
            while True:
                delay = next_at - self._clock()
                if delay > 0 and not wake.is_set():
                    try:
                        async with asyncio.timeout(delay):
                            await wake.wait()
                    except TimeoutError:
                        pass
                woken = wake.is_set()
                wake.clear()
                now = self._clock()
                if not woken or now >= next_at:
                    delay = max(0.0, now - next_at)
                    self.delays.append(delay)
                    self.delay_sum += delay
                    self.delay_count += 1
                await self._run_and_store(check)
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    # A client library swallowed our cancellation (redis-py can, mid-command):
                    # honour it here, or SIGTERM would wait for a run that never ends.
                    raise asyncio.CancelledError
                if now >= next_at:
                    next_at += interval
                    after = self._clock()
                    if next_at <= after:  # the run overran its slot(s): skip, don't pile up
                        missed = int((after - next_at) // interval) + 1
                        self.skipped += missed
                        next_at += missed * interval
        finally:
            if watch_task is not None:
                watch_task.cancel()
                try:
                    await watch_task
                except (asyncio.CancelledError, Exception):
                    pass

    async def _watch(self, check: Watcher, wake: asyncio.Event) -> None:
        try:
            await check.watch(wake.set)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.warning("check_watch_failed", check=getattr(check, "name", "?"), error=f"{type(e).__name__}: {e}")

    async def _run_and_store(self, check: Check) -> None:
        result = await run_check(check, wall=self._wall)
        self.ticks += 1
        if check.name in self._last_done:  # not removed meanwhile
            self._last_done[check.name] = self._clock()
        self.store.put(result, self._labels.get(check.name))
        previous = self._last_up.get(check.name)
        self._last_up[check.name] = result.up
        if not result.up and previous is not False:
            log.warning("check_failed", check=check.name, type=check.type, reason=result.reason, error=result.error)
        elif result.up and previous is False:
            log.info("check_recovered", check=check.name, type=check.type)
        if self._on_result is not None:
            self._on_result(result)

    async def _measure_lag(self, period: float = 0.25) -> None:
        window: deque[float] = deque(maxlen=4)
        while True:
            t0 = self._clock()
            await self._sleep(period)
            window.append(max(0.0, self._clock() - t0 - period))
            self.loop_lag_s = max(window)
            self.ticks += 1

    # -------------------------------------------------------------- liveness

    def stalled(self) -> str:
        """Empty while every check completes its runs; otherwise which checks have not.

        A check's runs end within its timeout (`run_check`), so one that has not completed a
        run for `stall_bound(check)` is wedged (a client that swallows cancellation, a task
        blocked forever): its series stand still and nothing would say so. The systemd
        watchdog withholds its pings on this, so the service manager restarts the daemon."""
        now = self._clock()
        late = [
            f"{name} ({now - done:.1f}s > {stall_bound(self._checks[name]):g}s)"
            for name, done in sorted(self._last_done.items())
            if name in self._checks and now - done > stall_bound(self._checks[name])
        ]
        return ("no completed run: " + ", ".join(late)) if late else ""

    # -------------------------------------------------------------- metrics

    def samples(self) -> list[Sample]:
        out = [
            Sample("portal_monitor_event_loop_lag_seconds", {}, self.loop_lag_s),
            Sample("portal_monitor_checks_skipped_total", {}, float(self.skipped)),
        ]
        if self.delays:
            ordered = sorted(self.delays)
            for q in (0.5, 0.99, 1.0):
                out.append(
                    Sample(
                        "portal_monitor_schedule_delay_seconds",
                        {"quantile": str(q)},
                        ordered[min(len(ordered) - 1, int(len(ordered) * q))],
                    )
                )
            out.append(Sample("portal_monitor_schedule_delay_seconds_sum", {}, self.delay_sum))
            out.append(Sample("portal_monitor_schedule_delay_seconds_count", {}, float(self.delay_count)))
        return out


STALL_GRACE_S = 1.0  # scheduling slack on top of two intervals and a timeout


def stall_bound(check: Check) -> float:
    """How long a check may go without a completed run before it counts as wedged: its first
    run starts within one interval, the next one interval after it, and each ends within the
    timeout."""
    return 2 * check.interval_s + check.timeout_s + STALL_GRACE_S


async def _close(check: Check) -> None:
    try:
        await check.aclose()
    except Exception as e:
        log.warning("check_close_failed", check=check.name, error=f"{type(e).__name__}: {e}")
