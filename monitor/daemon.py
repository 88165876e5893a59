"""`portal-monitor run`: wires store, scheduler, alerting and server. The only place tasks start.

Start, run, stop (uvicorn's shape): `serve()` opens the state database, builds the checks,
binds the HTTP server, then runs the scheduler, the rule evaluation, the outbox and the
systemd loops in one TaskGroup until SIGTERM/SIGINT. SIGHUP reloads the config file: checks
added, changed and removed without disturbing the others, rules swapped at once, open
incidents kept; an invalid file changes nothing and says why.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

import checks
from monitor import alerting as alerting_mod
from monitor import heartbeat as heartbeat_mod
from monitor import scheduler as scheduler_mod
from monitor import store as store_mod
from monitor.alerting import Alerting
from monitor.clock import utc_now
from monitor.config.loader import ConfigError, load_config
from monitor.config.model import Config, RootConfig
from monitor.delivery import outbox as outbox_mod
from monitor.heartbeat import Heartbeat, progressing
from monitor.httpclient import HttpClient
from monitor.incidents import lifecycle as incidents_mod
from monitor.incidents import retention as retention_mod
from monitor.incidents.retention import Retention
from monitor.logs import REDACTOR
from monitor.model import Check, CheckContext, CheckResult, Sample, StateStore
from monitor.rules.engine import compile_rules
from monitor.scheduler import Scheduler
from monitor.statedb import Database, SqliteState
from monitor.store import Store
from monitor.systemd import Notifier, status_loop, status_summary, watchdog_loop
from monitor.web.api import Api
from monitor.web.metrics import make_metrics_handler
from monitor.web.server import bound_port, build_app, start_server

log = structlog.get_logger()

METRICS: dict[str, tuple[str, str]] = {
    "portal_monitor_config_last_reload_successful": ("gauge", "1 when the last config (re)load succeeded"),
    "portal_monitor_config_last_reload_timestamp_seconds": ("gauge", "when the config was last (re)loaded"),
}
# Every label of the series above (the daemon's own: no `check`).
LABELS: dict[str, tuple[str, ...]] = {}


def build_check(config: Config, cfg: Any, state: StateStore, http: HttpClient | None = None) -> Check:
    ctx = CheckContext(
        interval_s=config.interval(cfg), timeout_s=config.timeout(cfg), state=state, now=time.time, http=http
    )
    return checks.build_check(cfg, ctx)


def build_checks(
    config: Config, state: StateStore, http: HttpClient | None = None
) -> list[tuple[Check, dict[str, str]]]:
    """Instantiate every enabled check with its context and extra labels."""
    return [(build_check(config, cfg, state, http), dict(cfg.labels)) for cfg in config.checks]


def external_url(root: RootConfig, port: int) -> str:
    """`external_url` from the config, else http://<listen host, or this host's name>:<port>."""
    if root.external_url:
        return root.external_url
    host = root.listen.rpartition(":")[0].strip("[]")
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname()
    elif ":" in host:
        host = f"[{host}]"  # an IPv6 address, as a URL writes it
    return f"http://{host}:{port}"


class Daemon:
    """One monitoring daemon. `serve()` runs it; `stop()` and `reload()` steer it."""

    def __init__(
        self,
        config: Config,
        *,
        loader: Callable[[], Config] | None = None,
        notifier: Notifier | None = None,
        watch_file: bool = False,
    ) -> None:
        self.config = config
        self.watch_file = watch_file
        self._loader = loader or (lambda: load_config(config.path))
        self.notifier = notifier or Notifier()
        self.http = HttpClient()  # the one HTTP client of checks, receivers and the heartbeat
        self.store = Store()
        self.scheduler: Scheduler | None = None
        self.alerting: Alerting | None = None
        self.runner: web.AppRunner | None = None
        self.port: int | None = None
        self.reload_ok = True
        self.reloaded_at = time.time()
        self.reload_errors: Sequence[str] = []  # of the last failed reload, for POST /-/reload
        self._state: StateStore | None = None
        self._stop = asyncio.Event()
        self._first_round: set[str] = set()
        self._reload_lock = asyncio.Lock()

    # -------------------------------------------------------------- readiness and status

    def _check_error(self, check: str) -> str:
        """The last error of a check that is failing now, for the pages of the alerts on it."""
        result = self.store.result(check)
        return result.error if result is not None and not result.up else ""

    def ready(self) -> bool:
        """Config loaded and every enabled check has run at least once."""
        return self.scheduler is not None and self._first_round >= set(self.scheduler.checks)

    def _on_result(self, result: CheckResult) -> None:
        self._first_round.add(result.check)
        if self.alerting is not None:
            self.alerting.kick()

    def _config_samples(self) -> list[Sample]:
        return [
            Sample("portal_monitor_config_last_reload_successful", {}, 1.0 if self.reload_ok else 0.0),
            Sample("portal_monitor_config_last_reload_timestamp_seconds", {}, self.reloaded_at),
        ]

    def status_line(self) -> str:
        """One line for systemd's STATUS=: checks up/down, open incidents."""
        names = set(self.scheduler.checks) if self.scheduler else set()
        results = [r for r in self.store.results() if r.check in names]
        up = sum(1 for r in results if r.up)
        open_incidents = sum(self.alerting.open_counts().values()) if self.alerting else 0
        return status_summary(
            up,
            len(results) - up,
            open_incidents,
            pending=len(names) - len(results),
            disabled=len(self.config.disabled_checks()),
        )

    # -------------------------------------------------------------- life cycle

    def stop(self) -> None:
        self._stop.set()

    async def serve(self) -> None:
        root = self.config.root
        db = Database(root.state_dir)  # SQLite off the event loop: a writer and a reader thread
        conn = db.conn
        self._state = SqliteState(conn, db)
        self.scheduler = Scheduler(self.store, on_result=self._on_result)
        self.heartbeat = Heartbeat(root.heartbeat)
        self.store.add_source(self.scheduler.samples)
        self.store.add_source(self._config_samples)
        self.store.add_source(self.heartbeat.samples)
        for check, labels in build_checks(self.config, self._state, self.http):
            self.scheduler.add(check, labels)
        info = {
            **checks.METRICS,
            **store_mod.METRICS,
            **scheduler_mod.METRICS,
            **alerting_mod.METRICS,
            **incidents_mod.METRICS,
            **outbox_mod.METRICS,
            **heartbeat_mod.METRICS,
            **retention_mod.METRICS,
            **METRICS,
        }
        api = Api(self, external_url=root.external_url)
        app = build_app(make_metrics_handler(self.store.samples, info), ready=self.ready, api=api)
        self.runner = await start_server(app, root.listen)
        try:
            self.port = bound_port(self.runner)
            self.alerting = Alerting(
                conn,
                self.config,
                self.store.samples,
                external_url=external_url(root, self.port),
                http=self.http,
                check_error=self._check_error,
                db=db.write,
                reads=(db.reader, db.read),
            )
            self.store.add_source(self.alerting.samples)
            self.retention = Retention(conn, lambda: self.config.root.retention, db=db.write)
            self.store.add_source(self.retention.samples)
            await self._resolve_orphans()
            log.info(
                "started",
                listen=root.listen,
                port=self.port,
                state_dir=root.state_dir,
                checks=len(self.scheduler.checks),
                rules=len(self.alerting.rules),
                disabled=sorted(self.config.disabled),
            )
            await self._run(conn)
        finally:
            await self._shutdown(db)

    async def _run(self, conn: sqlite3.Connection) -> None:
        assert self.scheduler is not None and self.alerting is not None
        loop = asyncio.get_running_loop()
        handlers = {
            signal.SIGTERM: self.stop,
            signal.SIGINT: self.stop,
            signal.SIGHUP: lambda: asyncio.ensure_future(self.reload()),
        }
        for sig, handler in handlers.items():
            try:
                loop.add_signal_handler(sig, handler)
            except (NotImplementedError, RuntimeError):  # not the main thread (tests)
                pass
        scheduler = self.scheduler
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [
                    group.create_task(scheduler.run(), name="scheduler"),
                    group.create_task(self.alerting.run(self.ready), name="rules"),
                    group.create_task(self.alerting.outbox.run(self.alerting.outbox_wake), name="outbox"),
                    group.create_task(
                        watchdog_loop(self.notifier, lambda: scheduler.ticks, stalled=scheduler.stalled),
                        name="watchdog",
                    ),
                    group.create_task(status_loop(self.notifier, self.status_line), name="status"),
                    group.create_task(self.retention.run(), name="retention"),
                    group.create_task(
                        self.heartbeat.run(
                            progressing(lambda: scheduler.ticks, self.ready, scheduler.stalled), self.http
                        ),
                        name="heartbeat",
                    ),
                ]
                if self.watch_file:
                    tasks.append(group.create_task(self._watch_config(), name="watch-config"))
                self.notifier.ready()  # config loaded, HTTP listening, signal handlers in place
                await self._stop.wait()
                self.notifier.stopping()
                for task in tasks:
                    task.cancel()
        finally:
            for sig in handlers:
                try:
                    loop.remove_signal_handler(sig)
                except (NotImplementedError, RuntimeError):
                    pass

    async def _shutdown(self, db: Database) -> None:
        log.info("stopping")
        if self.scheduler is not None:
            await self.scheduler.aclose()
        if self.alerting is not None:
            await self.alerting.aclose()
        await self.http.aclose()  # last: the checks and receivers above no longer use it
        if self.runner is not None:
            await self.runner.cleanup()
        await db.aclose()
        self.notifier.close()

    # -------------------------------------------------------------- reload

    async def _resolve_orphans(self) -> None:
        assert self.alerting is not None
        names = {r.alert for r in self.config.root.rules}
        incidents = self.alerting.incidents
        if await self.alerting.db(lambda: incidents.resolve_orphans(names, utc_now())):
            self.alerting.outbox_wake.set()

    async def _watch_config(self, every_s: float = 2.0) -> None:
        """`run --watch`: reload when the config file changes (mtime, size or inode), checked
        every `every_s`; a file being rewritten is read once it has settled."""
        path = self.config.path

        def stamp() -> tuple[int, int, int] | None:
            try:
                st = path.stat()
            except OSError:
                return None  # being replaced (editors rename over it): look again next time
            return (st.st_mtime_ns, st.st_size, st.st_ino)

        last = stamp()
        while True:  # ends by cancellation; one stat() per pass
            await asyncio.sleep(every_s)
            now = stamp()
            if now is not None and now != last:
                last = now
                log.info("config_changed", path=str(path))
                await self.reload()

    async def reload(self) -> bool:
        """Re-read the config file. Invalid: nothing changes, every error is logged with its
        position, and portal_monitor_config_last_reload_successful goes to 0."""
        async with self._reload_lock:
            self.notifier.reloading()
            try:
                return await self._reload()
            finally:
                self.notifier.ready()

    async def _reload(self) -> bool:
        assert self.scheduler is not None and self.alerting is not None and self._state is not None
        self.reloaded_at = time.time()
        try:
            new = self._loader()
            compile_rules(new)
        except ConfigError as e:
            self.reload_ok = False
            self.reload_errors = list(e.errors)
            for line in e.errors:
                log.error("config_error", error=line)
            log.error("reload_failed", errors=len(e.errors), kept="the previous configuration")
            return False
        old = self.config
        if new.root.listen != old.root.listen or new.root.state_dir != old.root.state_dir:
            log.warning(
                "reload_needs_restart",
                keys="listen, state_dir",
                note="changed in the file; they apply at the next start",
            )
            new = replace(
                new, root=new.root.model_copy(update={"listen": old.root.listen, "state_dir": old.root.state_dir})
            )
        REDACTOR.update(new.secrets)
        before = {c.name: c for c in old.checks}
        after = {c.name: c for c in new.checks}
        changed = [
            n
            for n in after
            if n in before
            and (
                after[n] != before[n]
                or new.interval(after[n]) != old.interval(before[n])
                or new.timeout(after[n]) != old.timeout(before[n])
            )
        ]
        removed = [n for n in before if n not in after]
        added = [n for n in after if n not in before]
        for name in removed + changed:
            await self.scheduler.remove(name)
            self._first_round.discard(name)
        for name in changed + added:
            self.scheduler.add(build_check(new, after[name], self._state, self.http), dict(after[name].labels))
        self.config = new
        self.heartbeat.cfg = new.root.heartbeat  # the running loop reads it at the next beat
        await self.alerting.set_config(new)
        await self._resolve_orphans()
        self.reload_ok = True
        self.reload_errors = []
        log.info("reloaded", added=added, changed=changed, removed=removed, rules=len(self.alerting.rules))
        return True


def config_loader(path: Path, overrides: dict[str, Any]) -> Callable[[], Config]:
    """Load `path` again, with the command line's --listen/--state-dir applied."""

    def load() -> Config:
        cfg = load_config(path)
        return replace(cfg, root=cfg.root.model_copy(update=overrides)) if overrides else cfg

    return load
