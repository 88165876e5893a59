"""Dead man's switch: ping an external heartbeat URL (healthchecks.io-style) while healthy.

A monitor that dies cannot page about its own death. With `heartbeat: {url: ...}` the daemon
calls the URL every `interval` while it is healthy (the scheduler made progress since the last
beat and every check has run once); when the daemon dies, hangs or stops checking, the pings
stop and the external service pages someone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import aiohttp
import structlog

from monitor.config.fields import Duration, StrictModel
from monitor.httpclient import HttpClient, own_or_shared
from monitor.model import Sample
from monitor.secrets import SecretMarker

log = structlog.get_logger()

METRICS: dict[str, tuple[str, str]] = {
    "portal_monitor_heartbeat_last_success_timestamp_seconds": (
        "gauge",
        "when the heartbeat URL last accepted a ping (0: never)",
    ),
    "portal_monitor_heartbeats_total": ("counter", "heartbeat pings by result (ok, failed, skipped)"),
}
# Every label of the series above (the daemon's own: no `check`).
LABELS: dict[str, tuple[str, ...]] = {"portal_monitor_heartbeats_total": ("result",)}


class HeartbeatConfig(StrictModel):
    # The URL usually embeds its own token (healthchecks.io, Dead Man's Snitch): a secret.
    url: Annotated[str, SecretMarker()] = ""  # empty: no heartbeat
    interval: Duration = 60.0
    method: Literal["GET", "POST"] = "GET"
    timeout: Duration = 10.0


class Heartbeat:
    """`run(healthy)` pings while `healthy()` says so; `samples()` for /metrics."""

    def __init__(
        self,
        cfg: HeartbeatConfig,
        *,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self._sleep = sleep
        self._wall = wall
        self.last_success = 0.0
        self.counts = {"ok": 0, "failed": 0, "skipped": 0}
        self._failing = False

    async def beat(self, session: aiohttp.ClientSession) -> bool:
        """One ping; True when the URL answered 2xx."""
        parts = urlsplit(self.cfg.url)
        target = f"{parts.scheme}://{parts.hostname}"  # the path is the secret token: never logged
        try:
            async with session.request(
                self.cfg.method, self.cfg.url, timeout=aiohttp.ClientTimeout(total=self.cfg.timeout)
            ) as resp:
                await resp.read()
                ok = 200 <= resp.status < 300
                error = "" if ok else f"answered HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError) as e:
            ok, error = False, f"{type(e).__name__}"
        if ok:
            self.counts["ok"] += 1
            self.last_success = self._wall()
            if self._failing:
                log.info("heartbeat_recovered")
            self._failing = False
        else:
            self.counts["failed"] += 1
            if not self._failing:  # once per outage, not once per ping
                log.warning("heartbeat_failed", error=f"heartbeat {target}: {error}")
            self._failing = True
        return ok

    async def run(self, healthy: Callable[[], bool], http: HttpClient | None = None) -> None:
        """Ping while `healthy()`, every `interval`, over `http` (the daemon's shared client)."""
        if not self.cfg.url:
            await asyncio.get_running_loop().create_future()  # off: wait to be cancelled
        client, owned = own_or_shared(http)
        try:
            while True:
                if healthy():
                    await self.beat(client.session())
                else:
                    self.counts["skipped"] += 1
                await self._sleep(self.cfg.interval)
        finally:
            if owned:
                await client.aclose()

    def samples(self) -> list[Sample]:
        if not self.cfg.url:
            return []
        return [Sample("portal_monitor_heartbeat_last_success_timestamp_seconds", {}, self.last_success)] + [
            Sample("portal_monitor_heartbeats_total", {"result": k}, float(v)) for k, v in self.counts.items()
        ]


def progressing(
    progress: Callable[[], int], ready: Callable[[], bool], stalled: Callable[[], str] = lambda: ""
) -> Callable[[], bool]:
    """A health test for `Heartbeat.run`: ready, `progress()` moved since the last call, and no
    check wedged (`stalled()` empty: `Scheduler.stalled`)."""
    last = [-1]

    def healthy() -> bool:
        now = progress()
        moved = now != last[0]
        last[0] = now
        return moved and ready() and not stalled()

    return healthy
