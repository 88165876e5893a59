"""The BFF's winston log for the fault matrix: request lines, appends, rotation, paced traffic.

Lines are what the BFF's request logger writes with winston's JSON format (the `winston`
preset of `checks/logfile/check.py`): `level`, `message`, `url`, `statusCode`, `duration` (ms),
`ip`, `timestamp`. Each `write()` is one `write(2)` of whole lines, as a logger's is, so
the daemon never reads half a burst.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson

LOGIN_PATH = "/api/auth/login"
ATTACKER_IP = "203.0.113.66"


def request_line(status: int, ms: float, *, path: str = "/api/invoices", ip: str = "198.51.100.7") -> bytes:
    """One request as the BFF logs it (error level for 5xx, warn for 4xx, info otherwise)."""
    level = "error" if status >= 500 else "warn" if status >= 400 else "info"
    return orjson.dumps({
        "level": level, "message": f"GET {path} {status}", "url": path, "statusCode": status,
        "duration": ms, "ip": ip, "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
    }) + b"\n"


def failed_logins(n: int, ip: str = ATTACKER_IP) -> list[bytes]:
    """`n` refused logins from one address (the brute-force shape of runbook 6)."""
    return [request_line(401, 30, path=LOGIN_PATH, ip=ip) for _ in range(n)]


class BffLog:
    """The BFF's log directory with `combined.log` (created empty: the daemon reads from its end)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "combined.log"
        self.path.touch()
        self.rotations = 0

    def write(self, lines: list[bytes]) -> None:
        """Append whole lines in one write(2)."""
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, b"".join(lines))
        finally:
            os.close(fd)

    def rotate(self) -> Path:
        """logrotate's `create`: rename the file away and create an empty one at the path."""
        self.rotations += 1
        old = self.dir / f"combined.log.{self.rotations}"
        os.rename(self.path, old)
        self.path.touch()
        return old

    async def traffic(self, lines: Callable[[], list[bytes]], stop: asyncio.Event, *, every_s: float = 0.05,
                      max_ticks: int = 2000) -> int:
        """Append `lines()` every `every_s` until `stop` is set (at most `max_ticks` times):
        traffic paced in the shrunk time of the matrix. Returns the number of lines written."""
        written = 0
        for _ in range(max_ticks):
            if stop.is_set():
                break
            batch = lines()
            self.write(batch)
            written += len(batch)
            try:
                async with asyncio.timeout(every_s):
                    await stop.wait()
            except TimeoutError:
                pass
        return written
