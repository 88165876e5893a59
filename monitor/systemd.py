"""sd_notify spoken directly: READY, RELOADING, STOPPING, STATUS and a progress-gated WATCHDOG.

The protocol is a few newline-separated `KEY=VALUE` lines in one datagram to the AF_UNIX
socket named by `$NOTIFY_SOCKET` (a leading `@` is the Linux abstract namespace), so it is
spoken here in a few lines instead of pulling in a dependency (sd_notify(3)). Without
`NOTIFY_SOCKET` (not under systemd, or `Type=` is not `notify`) every call does nothing.

A notification is a courtesy to the service manager, never a reason to stop monitoring:
`Notifier` never raises. A failed send is logged once (then only counted), and the socket is
non-blocking, so a service manager that stops reading can never stall the event loop.

The watchdog is the point of the exercise: `watchdog_loop` pings `WATCHDOG=1` only while the
daemon shows progress (the scheduler's tick counter moved) and no check is wedged (every check
completed a run within a bound derived from its interval and timeout: `Scheduler.stalled`), so
a blocked event loop *or* checks that stopped completing both stop the pings, and systemd kills
and restarts the service after `WatchdogSec=`.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping

import structlog

log = structlog.get_logger()

MAX_STATUS_CHARS = 512  # STATUS= is one line for `systemctl status`; keep a datagram small


def _monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, the clock systemd compares `MONOTONIC_USEC=` against."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def socket_address(value: str) -> str | bytes | None:
    """`$NOTIFY_SOCKET` → an AF_UNIX address: a path, or abstract-namespace bytes for `@name`.

    Returns None for anything we cannot speak to (empty, relative, `vsock:`), so the caller
    logs it once and stays quiet instead of failing on every send.
    """
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None


class Notifier:
    """Sends sd_notify messages to `$NOTIFY_SOCKET`; inert without it.

    Built from an environment mapping (default `os.environ`) so tests pass their own socket;
    `pid` is injectable for the `WATCHDOG_PID` check and `monotonic_usec` for RELOADING.
    """

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        *,
        pid: Callable[[], int] = os.getpid,
        monotonic_usec: Callable[[], int] = _monotonic_usec,
    ) -> None:
        env = os.environ if env is None else env
        self._raw = env.get("NOTIFY_SOCKET", "")
        self._address = socket_address(self._raw) if self._raw else None
        self._watchdog_usec = env.get("WATCHDOG_USEC", "")
        self._watchdog_pid = env.get("WATCHDOG_PID", "")
        self._pid = pid
        self._monotonic_usec = monotonic_usec
        self._sock: socket.socket | None = None
        self.errors = 0  # failed sends since start; only the first is logged
        if self._raw and self._address is None:
            log.warning(
                "sd_notify_unsupported_socket",
                notify_socket=self._raw,
                hint="expected an absolute path or @abstract name",
            )

    @property
    def enabled(self) -> bool:
        """True when there is a socket to talk to (we run under systemd with Type=notify)."""
        return self._address is not None

    # ------------------------------------------------------------------ messages

    def ready(self) -> bool:
        """Startup (or a reload) is finished: config loaded, HTTP server listening."""
        return self.send("READY=1")

    def reloading(self) -> bool:
        """A reload starts; systemd wants the CLOCK_MONOTONIC time in the same datagram."""
        return self.send("RELOADING=1", f"MONOTONIC_USEC={self._monotonic_usec()}")

    def stopping(self) -> bool:
        """Shutdown starts (SIGTERM received)."""
        return self.send("STOPPING=1")

    def status(self, text: str) -> bool:
        """One line for `systemctl status`: newlines folded to spaces, length bounded."""
        line = " ".join(text.split())[:MAX_STATUS_CHARS]
        return self.send(f"STATUS={line}")

    def watchdog(self) -> bool:
        """Keep-alive ping; call it only when the daemon has shown progress."""
        return self.send("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        """`WatchdogSec=` in seconds from `WATCHDOG_USEC`, or None when no watchdog applies to us.

        `WATCHDOG_PID`, when set, names the process the watchdog is meant for; if that is not
        us (an inherited environment), pinging would keep the wrong process alive.
        """
        try:
            usec = int(self._watchdog_usec)
        except ValueError:
            return None
        if usec <= 0:
            return None
        if self._watchdog_pid:
            try:
                if int(self._watchdog_pid) != self._pid():
                    return None
            except ValueError:
                return None
        return usec / 1_000_000

    # ------------------------------------------------------------------ transport

    def send(self, *lines: str) -> bool:
        """Send one datagram of `KEY=VALUE` lines; True if it was sent, False if not (never raises)."""
        if self._address is None:
            return False
        payload = "\n".join(lines).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)  # never stall the event loop on a full queue
            self._sock.sendto(payload, self._address)
        except OSError as e:
            self.errors += 1
            if self.errors == 1:
                log.warning(
                    "sd_notify_failed",
                    notify_socket=self._raw,
                    message=lines[0].split("=")[0],
                    error=f"{type(e).__name__}: {e}",
                )
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


# ---------------------------------------------------------------------- loops

MIN_WATCHDOG_S = 1.0  # below this, a 250 ms progress tick may not advance between two pings


async def watchdog_loop(
    notifier: Notifier,
    progress: Callable[[], int],
    *,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
    stalled: Callable[[], str] = lambda: "",
) -> None:
    """Ping `WATCHDOG=1` every half `WatchdogSec=`, but only if `progress()` moved since the last
    ping and `stalled()` is empty.

    `progress` is the scheduler's tick counter, `stalled` its `Scheduler.stalled` (which checks
    have not completed a run for too long). This coroutine runs on the same event loop, so a
    blocked loop stops it outright; a loop that runs while a check runner is wedged keeps it
    running, but `stalled()` names the check and the pings are withheld. Either way systemd
    sees silence for `WatchdogSec=` and restarts the service. Returns at once when no watchdog
    is configured; otherwise runs until cancelled (one sleep per iteration, nothing unbounded).
    """
    interval = notifier.watchdog_interval()
    if interval is None or not notifier.enabled:
        return
    period = interval / 2
    if interval < MIN_WATCHDOG_S:
        log.warning("watchdog_interval_short", watchdog_s=interval, minimum_s=MIN_WATCHDOG_S)
    last = progress()
    last_change = clock()
    withheld = False
    log.info("watchdog_started", watchdog_s=interval, ping_every_s=period)
    while True:
        await sleep(period)
        now_progress = progress()
        moved = now_progress != last
        if moved:
            last, last_change = now_progress, clock()
        wedged = stalled()
        if moved and not wedged:
            notifier.watchdog()
            if withheld:
                log.info("watchdog_resumed")
                withheld = False
        elif not withheld:
            withheld = True
            log.error(
                "watchdog_withheld",
                reason=f"checks wedged: {wedged}" if wedged else "scheduler made no progress",
                stalled_s=round(clock() - last_change, 3),
                watchdog_s=interval,
            )


def status_summary(up: int, down: int, open_incidents: int, *, pending: int = 0, disabled: int = 0) -> str:
    """The one-line STATUS: `5 checks: 4 up, 1 down; 0 open incidents`.

    `pending` counts checks that have not finished their first run (just after start or a
    reload), so the line never claims "0 checks" for a daemon that is still starting.
    """
    total = up + down + pending
    line = f"{total} check{'' if total == 1 else 's'}: {up} up, {down} down"
    if pending:
        line += f", {pending} pending"
    if disabled:
        line += f", {disabled} disabled"
    line += f"; {open_incidents} open incident{'' if open_incidents == 1 else 's'}"
    return line


async def status_loop(
    notifier: Notifier,
    summary: Callable[[], str],
    *,
    every: float = 5.0,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> None:
    """Send `STATUS=summary()` every `every` seconds, only when the text changed; until cancelled."""
    if not notifier.enabled:
        return
    sent: str | None = None
    while True:
        try:
            text = summary()
        except Exception as e:  # a status line is not worth stopping the daemon for
            text = f"status unavailable: {type(e).__name__}"
            if text != sent:  # log a failure once, not every few seconds
                log.warning("status_summary_failed", error=f"{type(e).__name__}: {e}")
        if text != sent:
            notifier.status(text)
            sent = text
        await sleep(every)
