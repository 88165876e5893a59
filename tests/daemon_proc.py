"""The real daemon as a child process, for end-to-end tests.

    d = await DaemonProcess.start(config_path)    # returns once it logged `started`
    d.base                                        # http://127.0.0.1:PORT (listen: 127.0.0.1:0 in the config)
    await d.metric("portal_redis_up", check="cache")
    d.events                                      # every JSON log event so far (read in the background)
    await d.kill()                                # SIGKILL: a crash, no cleanup
    await d.stop()                                # SIGTERM, waits; returns the exit code
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import _die_with_parent

ROOT = Path(__file__).resolve().parent.parent


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without the variables the shipped config reads."""
    drop = ("WHMCS_", "REDIS_", "DATABASE_", "PORTAL_", "PAGERDUTY_", "SLACK_", "MANAGEMENT_", "VENDOR_",
            "ALERTMANAGER_", "BFF_", "MONITOR_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(extra)
    return env


class DaemonProcess:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[dict[str, Any]] = []
        self.raw: list[bytes] = []  # every stdout line as written (JSON or not)
        self.port = 0
        self._reader: asyncio.Task[None] | None = None
        self._started = asyncio.Event()
        self.stderr = b""

    @classmethod
    async def start(cls, config: Path, *extra_args: str, env: dict[str, str] | None = None,
                    timeout: float = 20.0) -> DaemonProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "monitor", "run", "-c", str(config), "--log-format", "json", *extra_args,
            cwd=ROOT, env=env or clean_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            start_new_session=True, preexec_fn=_die_with_parent)  # no daemon outlives a killed pytest
        d = cls(proc)
        d._reader = asyncio.create_task(d._read())
        try:
            async with asyncio.timeout(timeout):
                await d._started.wait()
        except TimeoutError:
            await d.kill()
            raise RuntimeError(f"daemon did not start: {d.stderr.decode()[-2000:]}") from None
        return d

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.raw.append(line)
            try:
                event = json.loads(line)
            except ValueError:
                continue
            self.events.append(event)
            if event.get("event") == "started":
                self.port = int(event["port"])
                self._started.set()
        assert self.proc.stderr is not None
        self.stderr = await self.proc.stderr.read()

    async def wait_ready(self, timeout: float = 15.0) -> None:
        """Until /-/ready answers 200: config loaded and every check has run once."""
        async with asyncio.timeout(timeout), aiohttp.ClientSession() as s:
            while True:
                async with s.get(f"{self.base}/-/ready", timeout=aiohttp.ClientTimeout(total=2)) as r:
                    if r.status == 200:
                        return
                await asyncio.sleep(0.05)  # polling the daemon's readiness, bounded above

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def wait_event(self, name: str, timeout: float = 10.0, **fields: Any) -> dict[str, Any]:
        """The first logged event called `name` (with these fields), waiting for it if need be."""
        async with asyncio.timeout(timeout):
            while True:
                for e in self.events:
                    if e.get("event") == name and all(e.get(k) == v for k, v in fields.items()):
                        return e
                await asyncio.sleep(0.02)  # the reader task appends as lines arrive

    def names(self) -> list[str]:
        return [e.get("event", "") for e in self.events]

    async def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        async with aiohttp.ClientSession() as s, s.get(f"{self.base}/metrics",
                                                      timeout=aiohttp.ClientTimeout(total=5)) as r:
            text = await r.text()
        return {(smp.name, tuple(sorted(smp.labels.items()))): smp.value
                for fam in text_string_to_metric_families(text) for smp in fam.samples}

    async def metric(self, name: str, **labels: str) -> float | None:
        return (await self.metrics()).get((name, tuple(sorted(labels.items()))))

    async def wait_metric(self, name: str, value: float, timeout: float = 15.0, **labels: str) -> None:
        async with asyncio.timeout(timeout):
            while await self.metric(name, **labels) != value:
                await asyncio.sleep(0.05)  # polling a live process for a state change, bounded above

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()
        if self._reader is not None:
            await self._reader

    async def stop(self) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(20):
                rc = await self.proc.wait()
        except TimeoutError:
            await self.kill()  # never leave a daemon behind
            raise
        if self._reader is not None:
            await self._reader
        return rc
