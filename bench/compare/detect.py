"""Detection latency, fault → notification received, for every stack watching one fault.

What: a `Fault` breaks a target and repairs it (Redis SIGKILL and restart; PostgreSQL
connections pushed over 80% of max_connections and released; the /health fake switched to
500 and back). `measure()` injects it `runs` times at a random phase of the 1 s polling
interval and, for each `Watcher` (a stack's webhook receiver and the alert name it should
send), records the arrival time of the first firing notification after the fault, then
waits for every stack's resolve before the next run.

Why every stack at once: all stacks see the very same fault at the very same instant, so
the comparison does not depend on one stack having had a luckier phase or a quieter
machine. Both receivers speak Alertmanager's webhook JSON (ours is that format by design),
so one parser reads both.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg

from tests.fake_receivers import FakeWebhook, Recorded
from tests.fakes import FakeBff
from tests.servers import RedisServer

NOTIFY_TIMEOUT_S = 30.0
READY_TIMEOUT_S = 60.0


class Fault(Protocol):
    name: str
    reference_job: str  # the Prometheus scrape job that sees this fault

    async def inject(self) -> None: ...

    async def recover(self) -> None: ...


@dataclass(frozen=True)
class Watcher:
    """One stack's receiver for one fault: `stack` is the row label in the results."""

    stack: str
    hook: FakeWebhook
    alertname: str


def _alert_status(rec: Recorded, alertname: str) -> str | None:
    """The status ('firing'/'resolved') of `alertname` in an Alertmanager-format webhook body."""
    body: Any = rec.json
    if not isinstance(body, dict):
        return None
    for alert in body.get("alerts") or []:
        if isinstance(alert, dict) and (alert.get("labels") or {}).get("alertname") == alertname:
            return str(alert.get("status") or body.get("status"))
    return None


def first_arrival(w: Watcher, status: str, start: int) -> float | None:
    """`Recorded.at` of the first `status` notification for the watcher's alert from index `start` on."""
    for rec in w.hook.requests[start:]:
        if _alert_status(rec, w.alertname) == status:
            return rec.at
    return None


def last_status(w: Watcher) -> str | None:
    for rec in reversed(w.hook.requests):
        status = _alert_status(rec, w.alertname)
        if status is not None:
            return status
    return None


async def wait_arrival(w: Watcher, status: str, start: int, timeout_s: float = NOTIFY_TIMEOUT_S) -> float:
    try:
        await w.hook.wait_until(lambda: first_arrival(w, status, start) is not None, timeout_s)
    except TimeoutError:
        raise TimeoutError(f"{w.stack}: no {status} {w.alertname} at {w.hook.url} within {timeout_s:.0f}s") from None
    at = first_arrival(w, status, start)
    assert at is not None
    return at


async def wait_for(condition: Callable[[], Awaitable[bool]], what: str, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Until `condition()` is true, re-checked every 0.1 s (a live system settling), bounded."""
    deadline = time.monotonic() + timeout_s
    while not await condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not true after {timeout_s:.0f}s")
        await asyncio.sleep(0.1)


@dataclass
class Result:
    fault: str
    reference_job: str
    latencies: dict[str, list[float]] = field(default_factory=dict)  # stack -> seconds, one per run


async def measure(fault: Fault, watchers: list[Watcher], healthy: Callable[[], Awaitable[bool]], runs: int,
                  rng: random.Random) -> Result:
    """`runs` faults; each stack's latency from the fault to its firing notification."""
    result = Result(fault.name, fault.reference_job, {w.stack: [] for w in watchers})
    for i in range(runs):
        await wait_for(healthy, f"{fault.name}: every stack sees the target healthy")
        for w in watchers:
            if last_status(w) == "firing":
                raise RuntimeError(f"{w.stack}: {w.alertname} still firing before run {i + 1} of {fault.name}")
        # A random phase of the 1 s polling interval, as a real fault would have (not right
        # after a scrape or a check run): uniform over one full interval.
        await asyncio.sleep(rng.uniform(1.0, 2.0))
        starts = [len(w.hook.requests) for w in watchers]
        t0 = time.perf_counter()
        await fault.inject()
        arrivals = await asyncio.gather(*(wait_arrival(w, "firing", s) for w, s in zip(watchers, starts)))
        for w, at in zip(watchers, arrivals):
            result.latencies[w.stack].append(at - t0)
        starts = [len(w.hook.requests) for w in watchers]
        await fault.recover()
        await asyncio.gather(*(wait_arrival(w, "resolved", s) for w, s in zip(watchers, starts)))
        shown = ", ".join(f"{w.stack} {(at - t0) * 1000:.0f} ms" for w, at in zip(watchers, arrivals))
        print(f"{fault.name} run {i + 1}/{runs}: {shown}", file=sys.stderr)
    return result


# ---------------------------------------------------------------- the three faults


class RedisCrash:
    """SIGKILL the Redis server (and wait until it is dead); recovery starts it again."""

    name = "Redis killed"
    reference_job = "redis"

    def __init__(self, server: RedisServer) -> None:
        self.server = server

    async def inject(self) -> None:
        self.server.kill()

    async def recover(self) -> None:
        self.server.start()


class HealthFailing:
    """The BFF /health fake answers 500 instead of 200; recovery makes it healthy again."""

    name = "/health 200 → 500"
    reference_job = "blackbox_http"

    def __init__(self, bff: FakeBff) -> None:
        self.bff = bff

    async def inject(self) -> None:
        self.bff.answer(500, {"status": "error", "checks": {"database": {"status": "fail"}, "cache": "ok"}})

    async def recover(self) -> None:
        self.bff.healthy()


COUNT_SQL = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"


class PostgresSaturation:
    """Client connections held by the runner: `level` of them in steady state (just under
    the 80% threshold), `extra` more opened at once to push over it.

    Both stacks count the same client sessions of the same server (the exporter's, the
    daemon's, ours), so the threshold falls at the same connection count for both."""

    name = "PostgreSQL connections > 80%"
    reference_job = "postgres"

    def __init__(self, dsn: str, max_connections: int, extra: int = 4, margin: int = 1) -> None:
        self.dsn = dsn
        self.threshold = int(0.8 * max_connections)  # firing when count > threshold
        self.level = self.threshold - margin
        self.extra = extra
        self.held: list[asyncpg.Connection] = []
        self.pushed: list[asyncpg.Connection] = []
        self.open_times: list[float] = []  # how long opening the extra connections took, per run

    async def _connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.dsn, timeout=5, server_settings={"application_name": "bench-compare"})

    async def count(self) -> int:
        if not self.held:
            self.held.append(await self._connect())
        return int(await self.held[0].fetchval(COUNT_SQL, timeout=5))

    async def settle(self) -> bool:
        """Hold connections so that the server has `level` client sessions; True when it has."""
        n = await self.count()
        while n < self.level and len(self.held) < self.level:
            self.held.append(await self._connect())
            n += 1
        while n > self.level and len(self.held) > 1:
            await self.held.pop().close(timeout=5)
            n -= 1
        return await self.count() == self.level

    async def inject(self) -> None:
        t = time.perf_counter()
        self.pushed = list(await asyncio.gather(*(self._connect() for _ in range(self.extra))))
        self.open_times.append(time.perf_counter() - t)

    async def recover(self) -> None:
        await asyncio.gather(*(c.close(timeout=5) for c in self.pushed))
        self.pushed = []

    async def close(self) -> None:
        for c in [*self.pushed, *self.held]:
            c.terminate()
        self.pushed, self.held = [], []
