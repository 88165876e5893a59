"""`portal-monitor run`: wires store, scheduler and server; SIGTERM stops. The only place tasks start."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import structlog
from aiohttp import web

import checks
from monitor import scheduler as scheduler_mod
from monitor import store as store_mod
from monitor.config import Config
from monitor.metrics import build_registry
from monitor.model import Check, CheckContext, CheckResult
from monitor.scheduler import Scheduler
from monitor.server import bound_port, build_app, start_server
from monitor.statedb import SqliteState, open_db
from monitor.store import Store

log = structlog.get_logger()


def build_checks(config: Config, state: Any) -> list[tuple[Check, dict[str, str]]]:
    """Instantiate every enabled check with its context and extra labels."""
    out = []
    for cfg in config.checks:
        ctx = CheckContext(interval_s=config.interval(cfg), timeout_s=config.timeout(cfg), state=state, now=time.time)
        out.append((checks.build_check(cfg, ctx), dict(cfg.labels)))
    return out


class Daemon:
    """Start, run, stop — in that order, from one coroutine (`serve`)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.store = Store()
        self.scheduler: Scheduler | None = None
        self.runner: web.AppRunner | None = None
        self.port: int | None = None
        self._stop = asyncio.Event()
        self._first_round: set[str] = set()

    # -------------------------------------------------------------- readiness

    def ready(self) -> bool:
        """Config loaded and every enabled check has run at least once."""
        return self.scheduler is not None and self._first_round >= set(self.scheduler.checks)

    def _on_result(self, result: CheckResult) -> None:
        self._first_round.add(result.check)

    # -------------------------------------------------------------- life cycle

    def stop(self) -> None:
        self._stop.set()

    async def serve(self) -> None:
        root = self.config.root
        conn = open_db(root.state_dir)
        state = SqliteState(conn)
        self.scheduler = Scheduler(self.store, on_result=self._on_result)
        self.store.add_source(self.scheduler.samples)
        for check, labels in build_checks(self.config, state):
            self.scheduler.add(check, labels)
        info = {**checks.METRICS, **store_mod.METRICS, **scheduler_mod.METRICS}
        registry = build_registry(self.store.samples, info)
        app = build_app(registry, ready=self.ready)
        self.runner = await start_server(app, root.listen)
        self.port = bound_port(self.runner)
        log.info("started", listen=root.listen, port=self.port, state_dir=root.state_dir,
                 checks=len(self.scheduler.checks), disabled=sorted(self.config.disabled))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.stop)
            except (NotImplementedError, RuntimeError):  # not the main thread (tests)
                pass
        try:
            async with asyncio.TaskGroup() as group:
                sched_task = group.create_task(self.scheduler.run(), name="scheduler")
                await self._stop.wait()
                sched_task.cancel()
        finally:
            log.info("stopping")
            await self.scheduler.aclose()
            await self.runner.cleanup()
            conn.close()
            for sig in (signal.SIGTERM, signal.SIGINT):
                try:
                    loop.remove_signal_handler(sig)
                except (NotImplementedError, RuntimeError):
                    pass
