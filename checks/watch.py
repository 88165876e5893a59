"""The watch loop shared by the redis and postgres checks: hold one connection, wake the
scheduler when it ends and again when one is back, and back off in between.

Why one loop: the two checks hold different connections (a SUBSCRIBEd redis-py connection;
an idle asyncpg session with a termination listener), but must react to losing them in the
same way, and the reconnect rules are where the subtle cases live:

- `wake()` when a held connection ends, so the next run does not wait for the interval;
- `wake()` again on the first connection that works after a loss or a failed attempt,
  including when the server was already down when the watch began: its arrival is news;
- reconnects back off from 0.1 s, doubling, to at most min(interval, 5 s). The delay starts
  over only after a connection was held that long, so a server that accepts and drops at
  once is retried at the capped pace, never in a tight loop: every pass ends in `sleep`;
- cancellation (the only way out) closes the connection held at the time.

A check passes its own `connect`, `hold` and `close`, and logs through the `on_*` callbacks,
so its log events keep its own names (`redis_watch_lost`, `postgres_watch_lost`, ...).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import structlog

from monitor.model import CheckError
from monitor.secrets import Redactor, redact_url, url_password

log = structlog.get_logger()

BACKOFF_INITIAL_S = 0.1
BACKOFF_MAX_S = 5.0

C = TypeVar("C")


def backoff_cap(interval_s: float) -> float:
    """The longest reconnect delay: the check's interval, but at most 5 s and at least 0.1 s.

    A watch never retries less often than the check itself runs, and never waits so long
    that a recovery is seen much later than a loss."""
    return max(BACKOFF_INITIAL_S, min(interval_s, BACKOFF_MAX_S))


def _ignore(*_args: object) -> None:
    return None


async def hold_and_watch(
    *,
    connect: Callable[[], Awaitable[C]],
    hold: Callable[[C], Awaitable[object]],
    close: Callable[[C], Awaitable[None]],
    errors: tuple[type[BaseException], ...],
    wake: Callable[[], None],
    interval_s: float,
    sleep: Callable[[float], Awaitable[Any]],
    monotonic: Callable[[], float],
    on_connect_failed: Callable[[BaseException, float], None] = _ignore,
    on_lost: Callable[[BaseException | None], None] = _ignore,
    on_restored: Callable[[], None] = _ignore,
) -> NoReturn:
    """Hold a connection from `connect()` until it ends, forever; returns only by raising.

    `connect()` returns an open connection or raises; on raising it has closed whatever it
    opened. `hold(conn)` returns or raises one of `errors` when the connection ends.
    `close(conn)` releases it without waiting for the server and must not raise. Exceptions
    outside `errors` (a bug, CancelledError) leave the loop, after `close`.

    The callbacks are for logging: `on_connect_failed(exc, retry_in_s)` after an attempt
    that failed, `on_lost(exc or None)` when a held connection ended (before `wake()`), and
    `on_restored()` before the `wake()` for a connection that works again.
    """
    cap = backoff_cap(interval_s)
    delay = BACKOFF_INITIAL_S
    lost = False  # the server went away or never answered: the next connection is a recovery
    while True:  # ends by cancellation; every pass awaits connect (and hold), then sleep
        try:
            conn = await connect()
        except errors as e:
            lost = True  # also when the server was down from the start: its arrival is news
            on_connect_failed(e, delay)
        else:
            if lost:
                on_restored()
                wake()
            held_since = monotonic()
            try:
                ended = await _until_lost(hold, conn, errors)
                held_s = monotonic() - held_since
            finally:
                await close(conn)
            on_lost(ended)
            lost = True
            wake()
            if held_s >= cap:  # a connection that lasted: start the backoff over
                delay = BACKOFF_INITIAL_S
        await sleep(delay)
        delay = min(delay * 2, cap)


async def _until_lost(
    hold: Callable[[C], Awaitable[object]], conn: C, errors: tuple[type[BaseException], ...]
) -> BaseException | None:
    """Run `hold(conn)`; the error that ended the connection, or None if it just returned."""
    try:
        await hold(conn)
    except errors as e:
        return e
    return None


async def until_cancelled() -> NoReturn:
    """Wait for cancellation: the watch of a check configured with `watch: false`."""
    await asyncio.get_running_loop().create_future()
    raise AssertionError("unreachable: the future is never set")


class Rearm:
    """A reconnect pause that ends early when a check run has just reached the server.

    The watch backs off while its server is down (up to 5 s). When the server comes back, the
    check's own run may see it before the watch's next attempt; without this, a crash in that
    gap would be seen only at the next interval. `seen()` (called by a successful run) ends
    the current pause, so the watch is holding a connection again at once.
    """

    def __init__(self, sleep: Callable[[float], Awaitable[Any]]) -> None:
        self._sleep = sleep
        self._seen = asyncio.Event()

    def seen(self) -> None:
        self._seen.set()

    async def pause(self, seconds: float) -> None:
        self._seen.clear()
        sleeper = asyncio.ensure_future(self._sleep(seconds))
        waiter = asyncio.ensure_future(self._seen.wait())
        try:
            await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, waiter):
                task.cancel()
            await asyncio.gather(sleeper, waiter, return_exceptions=True)


class Server:
    """What a check that holds a connection knows of its server, beside the connection itself.

    `target` is the URL with its password replaced (for every message), `scrub` removes the
    password from a library's error text (asyncpg and redis-py may quote the DSN), `rearm` ends
    the watch's reconnect pause when a check run reached the server, and `sleep`/`monotonic`
    are the clocks the watch loop is driven by (fakes in tests).
    """

    def __init__(
        self,
        kind: str,
        check: str,
        url: str,
        sleep: Callable[[float], Awaitable[Any]],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kind = kind
        self.check = check
        self.target = redact_url(url)
        self.redactor = Redactor([url_password(url)])
        self.sleep = sleep
        self.monotonic = monotonic
        self.rearm = Rearm(sleep)

    def scrub(self, text: str) -> str:
        return self.redactor.scrub(text)

    def error(self, reason: str, exc: BaseException) -> CheckError:
        """The check's error for `exc`: the target, the exception's type and its scrubbed text."""
        return CheckError(reason, f"{self.target}: {self.scrub(f'{type(exc).__name__}: {exc}')}")

    def log_connect_failed(self, reason: str, exc: BaseException, retry_in_s: float) -> None:
        """One debug line per failed watch connection (the check's own run reports the outage)."""
        log.debug(
            f"{self.kind}_watch_connect_failed",
            check=self.check,
            target=self.target,
            reason=reason,
            error=self.scrub(str(exc)),
            retry_in_s=retry_in_s,
        )

    async def watch(
        self,
        *,
        connect: Callable[[], Awaitable[C]],
        hold: Callable[[C], Awaitable[object]],
        close: Callable[[C], Awaitable[None]],
        errors: tuple[type[BaseException], ...],
        classify: Callable[[BaseException], str],
        wake: Callable[[], None],
        interval_s: float,
        on_lost: Callable[[BaseException | None], None],
    ) -> NoReturn:
        """`hold_and_watch` paced by this server's clocks and `rearm`, logging failed connects
        (debug), a lost connection (`on_lost`) and its return (info) under the check's name."""
        await hold_and_watch(
            connect=connect,
            hold=hold,
            close=close,
            errors=errors,
            wake=wake,
            interval_s=interval_s,
            sleep=self.rearm.pause,
            monotonic=self.monotonic,
            on_connect_failed=lambda exc, wait: self.log_connect_failed(classify(exc), exc, wait),
            on_lost=on_lost,
            on_restored=lambda: log.info(f"{self.kind}_watch_restored", check=self.check, target=self.target),
        )
