"""`portal-monitor run`: wires store, scheduler and server; SIGTERM stops. The only place tasks start."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from typing import Any

import structlog
from aiohttp import web

import checks
from monitor import alerting as alerting_mod
from monitor import incidents as incidents_mod
from monitor import outbox as outbox_mod
from monitor import scheduler as scheduler_mod
from monitor import store as store_mod
from monitor.alerting import Alerting
from monitor.config import Config
from monitor.metrics import build_registry
from monitor.model import Check, CheckContext, CheckResult, Sample
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


METRICS: dict[str, tuple[str, str]] = {
    "portal_monitor_config_last_reload_successful": ("gauge", "1 when the last config (re)load succeeded"),
    "portal_monitor_config_last_reload_timestamp_seconds": ("gauge", "when the config was last (re)loaded"),
}


def _external_url(listen: str, port: int) -> str:
    host = listen.rpartition(":")[0].strip("[]")
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname()
    return f"http://{host}:{port}"


class Daemon:
    """Start, run, stop — in that order, from one coroutine (`serve`)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.store = Store()
        self.scheduler: Scheduler | None = None
        self.alerting: Alerting | None = None
        self.runner: web.AppRunner | None = None
        self.config_loaded_at = time.time()
        self.port: int | None = None
        self._stop = asyncio.Event()
        self._first_round: set[str] = set()

    # -------------------------------------------------------------- readiness

    def ready(self) -> bool:
        """Config loaded and every enabled check has run at least once."""
        return self.scheduler is not None and self._first_round >= set(self.scheduler.checks)

    def _on_result(self, result: CheckResult) -> None:
        self._first_round.add(result.check)
        if self.alerting is not None:
            self.alerting.kick()

    def _config_samples(self) -> list[Sample]:
        return [
            Sample("portal_monitor_config_last_reload_successful", {}, 1.0),
            Sample("portal_monitor_config_last_reload_timestamp_seconds", {}, self.config_loaded_at),
        ]

    # -------------------------------------------------------------- life cycle

    def stop(self) -> None:
        self._stop.set()

    async def serve(self) -> None:
        root = self.config.root
        conn = open_db(root.state_dir)
        state = SqliteState(conn)
        self.scheduler = Scheduler(self.store, on_result=self._on_result)
        self.store.add_source(self.scheduler.samples)
        self.store.add_source(self._config_samples)
        for check, labels in build_checks(self.config, state):
            self.scheduler.add(check, labels)
        info = {**checks.METRICS, **store_mod.METRICS, **scheduler_mod.METRICS, **alerting_mod.METRICS,
                **incidents_mod.METRICS, **outbox_mod.METRICS, **METRICS}
        registry = build_registry(self.store.samples, info)
        app = build_app(registry, ready=self.ready)
        self.runner = await start_server(app, root.listen)
        self.port = bound_port(self.runner)
        self.alerting = Alerting(conn, self.config, self.store.samples, external_url=_external_url(root.listen, self.port))
        self.store.add_source(self.alerting.samples)
        orphans = self.alerting.incidents.resolve_orphans({r.alert for r in root.rules}, alerting_mod.utc_now())
        if orphans:
            self.alerting.outbox_wake.set()
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
                tasks = [
                    group.create_task(self.scheduler.run(), name="scheduler"),
                    group.create_task(self.alerting.run(self.ready), name="rules"),
                    group.create_task(self.alerting.outbox.run(self.alerting.outbox_wake), name="outbox"),
                ]
                await self._stop.wait()
                for task in tasks:
                    task.cancel()
        finally:
            log.info("stopping")
            await self.scheduler.aclose()
            if self.alerting is not None:
                await self.alerting.aclose()
            await self.runner.cleanup()
            conn.close()
            for sig in (signal.SIGTERM, signal.SIGINT):
                try:
                    loop.remove_signal_handler(sig)
                except (NotImplementedError, RuntimeError):
                    pass
