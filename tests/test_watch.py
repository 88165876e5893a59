"""The shared watch loop (checks/watch.py) with a scripted fake server, a fake clock and a fake sleep.

Each test scripts what every connection attempt does: refused, or accepted and held for some
seconds of fake time before it ends. The fake sleep advances the clock and stops the loop
after a bounded number of passes, so no test waits for real time."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from checks.watch import BACKOFF_INITIAL_S, BACKOFF_MAX_S, backoff_cap, hold_and_watch, until_cancelled


class Stop(Exception):
    """Raised by the fake sleep to end a test's loop after enough passes (not in `errors`)."""


@dataclass(frozen=True, slots=True)
class Refuse:
    """The attempt fails: connect() raises ConnectionRefusedError."""


@dataclass(frozen=True, slots=True)
class Hold:
    """The attempt succeeds; the connection lasts `seconds` of fake time, then ends by
    raising `error` (a reset) or, with error=None, by hold() returning (a clean EOF)."""

    seconds: float = 0.0
    error: BaseException | None = field(default_factory=lambda: ConnectionResetError("reset by peer"))


@dataclass(slots=True)
class Conn:
    n: int
    closed: bool = False


class FakeServer:
    """connect/hold/close/wake/sleep/monotonic for hold_and_watch, following a script.

    `events` records, in order, what the loop did: "connect n", "refused", "hold n",
    "close n", "wake", "lost", "restored", "sleep <delay>"."""

    def __init__(self, script: list[Refuse | Hold], *, max_sleeps: int | None = None) -> None:
        self._script: Iterator[Refuse | Hold] = iter(script)
        self.max_sleeps = max_sleeps if max_sleeps is not None else len(script)
        self.t = 1000.0
        self.events: list[str] = []
        self.delays: list[float] = []
        self.conns: list[Conn] = []
        self.failures: list[tuple[str, float]] = []  # (error, retry_in_s) of each failed attempt
        self.lost_with: list[BaseException | None] = []
        self._holding: dict[int, Hold] = {}

    async def connect(self) -> Conn:
        step = next(self._script, None)
        if step is None:  # the loop connects more often than it sleeps: fail instead of spinning
            raise AssertionError(f"script exhausted after {len(self.delays)} sleeps: a tight loop?")
        if isinstance(step, Refuse):
            self.events.append("refused")
            raise ConnectionRefusedError("connection refused")
        conn = Conn(len(self.conns))
        self.conns.append(conn)
        self._holding[conn.n] = step
        self.events.append(f"connect {conn.n}")
        return conn

    async def hold(self, conn: Conn) -> None:
        step = self._holding[conn.n]
        self.events.append(f"hold {conn.n}")
        self.t += step.seconds
        if step.error is not None:
            raise step.error

    async def close(self, conn: Conn) -> None:
        conn.closed = True
        self.events.append(f"close {conn.n}")

    def wake(self) -> None:
        self.events.append("wake")

    async def sleep(self, delay: float) -> None:
        self.events.append(f"sleep {delay:g}")
        self.delays.append(delay)
        self.t += delay
        if len(self.delays) >= self.max_sleeps:
            raise Stop

    def monotonic(self) -> float:
        return self.t

    def on_connect_failed(self, exc: BaseException, retry_in_s: float) -> None:
        self.failures.append((str(exc), retry_in_s))

    def on_lost(self, exc: BaseException | None) -> None:
        self.lost_with.append(exc)
        self.events.append("lost")

    def on_restored(self) -> None:
        self.events.append("restored")

    async def run(self, *, interval_s: float = 10.0) -> None:
        """The loop until the fake sleep stops it."""
        with pytest.raises(Stop):
            await hold_and_watch(
                connect=self.connect, hold=self.hold, close=self.close, errors=(OSError,),
                wake=self.wake, interval_s=interval_s, sleep=self.sleep, monotonic=self.monotonic,
                on_connect_failed=self.on_connect_failed, on_lost=self.on_lost, on_restored=self.on_restored,
            )

    @property
    def wakes(self) -> int:
        return self.events.count("wake")


# ---------------------------------------------------------------- backoff


@pytest.mark.parametrize(("interval_s", "cap"), [
    (10.0, 5.0), (5.0, 5.0), (3.0, 3.0), (0.5, 0.5), (0.01, 0.1)])
def test_backoff_cap_is_the_interval_within_bounds(interval_s: float, cap: float) -> None:
    assert backoff_cap(interval_s) == cap
    assert (BACKOFF_INITIAL_S, BACKOFF_MAX_S) == (0.1, 5.0)


async def test_backoff_doubles_to_five_seconds_while_down() -> None:
    server = FakeServer([Refuse()] * 9)
    await server.run(interval_s=10.0)
    assert server.delays == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]
    assert server.wakes == 0
    assert [retry for _err, retry in server.failures] == server.delays  # retry_in_s is the next sleep
    assert server.failures[0][0] == "connection refused"


async def test_backoff_caps_at_a_short_interval() -> None:
    server = FakeServer([Refuse()] * 8)
    await server.run(interval_s=3.0)
    assert server.delays == [0.1, 0.2, 0.4, 0.8, 1.6, 3.0, 3.0, 3.0]


async def test_backoff_resets_only_after_a_connection_held_as_long_as_the_cap() -> None:
    """A connection held 4.9 s (under the 5 s cap) keeps the backoff growing; one held 5 s resets it."""
    server = FakeServer([Refuse(), Refuse(), Refuse(), Hold(4.9), Refuse(), Hold(5.0), Refuse(), Refuse()])
    await server.run(interval_s=10.0)
    assert server.delays == [0.1, 0.2, 0.4, 0.8, 1.6, 0.1, 0.2, 0.4]


async def test_backoff_reset_uses_the_interval_cap() -> None:
    """With a 2 s interval, a connection held 2 s is long enough to start the backoff over."""
    server = FakeServer([Refuse(), Refuse(), Refuse(), Refuse(), Hold(2.0), Refuse()])
    await server.run(interval_s=2.0)
    assert server.delays == [0.1, 0.2, 0.4, 0.8, 0.1, 0.2]


async def test_a_long_held_connection_at_start_sleeps_the_initial_delay_after_loss() -> None:
    server = FakeServer([Hold(3600.0), Refuse()])
    await server.run()
    assert server.delays == [0.1, 0.2]


# ---------------------------------------------------------------- wake


async def test_wakes_once_on_loss_and_once_on_restore() -> None:
    server = FakeServer([Hold(60.0), Refuse(), Refuse(), Hold(60.0)])
    await server.run()
    assert server.events == [
        "connect 0", "hold 0", "close 0", "lost", "wake", "sleep 0.1",  # up at start: no wake until it drops
        "refused", "sleep 0.2",
        "refused", "sleep 0.4",
        "connect 1", "restored", "wake", "hold 1", "close 1", "lost", "wake", "sleep 0.1",
    ]


async def test_wakes_when_the_server_arrives_after_being_down_at_start() -> None:
    """The watch began during an outage: the first connection that works is a recovery too."""
    server = FakeServer([Refuse(), Hold(60.0)])
    await server.run()
    assert server.events[:4] == ["refused", "sleep 0.1", "connect 0", "restored"]
    assert server.events[4] == "wake"
    assert server.wakes == 2  # the arrival, then the loss


async def test_reconnect_after_a_loss_is_a_restore_even_without_a_failed_attempt() -> None:
    """Lost, then the very next attempt works: that connection wakes the scheduler again."""
    server = FakeServer([Hold(60.0), Hold(60.0)])
    await server.run()
    assert server.events == [
        "connect 0", "hold 0", "close 0", "lost", "wake", "sleep 0.1",
        "connect 1", "restored", "wake", "hold 1", "close 1", "lost", "wake", "sleep 0.1",
    ]


async def test_on_lost_gets_the_error_or_none_for_a_clean_end() -> None:
    reset = ConnectionResetError("reset")
    server = FakeServer([Hold(1.0, error=reset), Hold(1.0, error=None)])
    await server.run()
    assert server.lost_with == [reset, None]
    assert server.wakes == 3
    assert all(c.closed for c in server.conns)


# ---------------------------------------------------------------- no tight loop


async def test_a_server_that_accepts_and_drops_at_once_is_retried_at_the_capped_pace() -> None:
    """Every pass ends in a sleep, and the delay never resets: the drops never lasted."""
    server = FakeServer([Hold(0.0)] * 10)
    await server.run(interval_s=3.0)
    assert server.delays == [0.1, 0.2, 0.4, 0.8, 1.6, 3.0, 3.0, 3.0, 3.0, 3.0]
    assert len(server.conns) == len(server.delays) == 10  # one sleep per connection
    assert all(c.closed for c in server.conns)
    assert server.wakes == 2 * 10 - 1  # a loss each time, a restore from the second on


async def test_a_connect_that_fails_at_once_still_sleeps_every_pass() -> None:
    server = FakeServer([Refuse()] * 20)
    await server.run()
    assert server.events.count("refused") == server.events.count("sleep 5") + 6 == 20


# ---------------------------------------------------------------- exit


async def test_cancellation_while_holding_closes_the_connection() -> None:
    holding = asyncio.Event()
    never = asyncio.Event()
    closed: list[int] = []
    sleeps: list[float] = []

    async def connect() -> int:
        return 7

    async def hold(conn: int) -> None:
        holding.set()
        await never.wait()

    async def close(conn: int) -> None:
        closed.append(conn)

    async def sleep(delay: float) -> None:
        sleeps.append(delay)

    woke: list[int] = []
    task = asyncio.create_task(hold_and_watch(
        connect=connect, hold=hold, close=close, errors=(OSError,), wake=lambda: woke.append(1),
        interval_s=10.0, sleep=sleep, monotonic=lambda: 0.0))
    await asyncio.wait_for(holding.wait(), 1.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert closed == [7]
    assert woke == [] and sleeps == []  # cancellation is not a loss


async def test_cancellation_while_sleeping_leaves_nothing_open() -> None:
    sleeping = asyncio.Event()
    closed: list[int] = []
    attempts: list[int] = []

    async def connect() -> int:
        attempts.append(1)
        assert len(attempts) == 1, "retried without sleeping"
        raise ConnectionRefusedError("refused")

    async def sleep(delay: float) -> None:
        sleeping.set()
        await asyncio.Event().wait()

    async def close(conn: int) -> None:
        closed.append(conn)

    async def hold(conn: int) -> None:
        raise AssertionError("never connected")

    task = asyncio.create_task(hold_and_watch(
        connect=connect, hold=hold, close=close, errors=(OSError,), wake=lambda: None,
        interval_s=10.0, sleep=sleep, monotonic=lambda: 0.0))
    await asyncio.wait_for(sleeping.wait(), 1.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert closed == []


async def test_an_unexpected_error_in_hold_closes_and_propagates() -> None:
    """Only `errors` mean "lost": a bug leaves the loop (the scheduler logs it) after closing."""
    closed: list[int] = []

    async def hold(conn: int) -> None:
        raise ValueError("bug")

    async def close(conn: int) -> None:
        closed.append(conn)

    async def connect() -> int:
        return 1

    async def sleep(delay: float) -> None:
        raise AssertionError("no sleep after a bug")

    with pytest.raises(ValueError, match="bug"):
        await hold_and_watch(connect=connect, hold=hold, close=close, errors=(OSError,), wake=lambda: None,
                             interval_s=10.0, sleep=sleep, monotonic=lambda: 0.0)
    assert closed == [1]


async def test_an_unexpected_error_in_connect_propagates() -> None:
    async def connect() -> int:
        raise KeyError("bug")

    async def never(*_args: object) -> None:
        raise AssertionError("not reached")

    with pytest.raises(KeyError):
        await hold_and_watch(connect=connect, hold=never, close=never, errors=(OSError,), wake=lambda: None,
                             interval_s=10.0, sleep=never, monotonic=lambda: 0.0)


async def test_until_cancelled_waits_for_cancellation() -> None:
    task = asyncio.create_task(until_cancelled())
    for _ in range(10):
        await asyncio.sleep(0)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_rearm_cuts_a_reconnect_pause_short_when_a_run_reached_the_server() -> None:
    from checks.watch import Rearm

    never = asyncio.Event()
    slept: list[float] = []

    async def long_sleep(seconds: float) -> None:
        slept.append(seconds)
        await never.wait()  # a pause that would outlast the test

    rearm = Rearm(long_sleep)
    pause = asyncio.create_task(rearm.pause(5.0))
    await asyncio.sleep(0)
    assert not pause.done()
    rearm.seen()
    await asyncio.wait_for(pause, 1.0)
    assert slept == [5.0]
    # A `seen()` before the pause began does not end the next pause.
    rearm.seen()
    pause = asyncio.create_task(rearm.pause(5.0))
    await asyncio.sleep(0)
    assert not pause.done()
    pause.cancel()
