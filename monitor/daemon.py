"""`portal-monitor run`: wires store, scheduler, alerting and server. The only place tasks start.

Start, run, stop (uvicorn's shape): `serve()` opens the state database, builds the checks,
binds the HTTP server, then runs the scheduler, the rule evaluation, the outbox and the
systemd loops in one TaskGroup until SIGTERM/SIGINT. The rules' history is restored from
`<state_dir>/history.msgpack` at start and written there every `history.save_every` (1 min)
and at stop (a kill -9 loses at most that; the time the daemon was away stays a gap), from a
thread: the event loop only takes the snapshot (`History.save`).
SIGHUP reloads the config file: checks added, changed and removed without disturbing the
others, rules swapped at once, open incidents kept; an invalid file changes nothing and says why.

A reload is all or nothing: the new file is validated whole (the loader's errors, the rule
expressions, `runnable_errors`) and a file that would remove more than half of the running
checks or rules is refused unless confirmed (`POST /-/reload?confirm=1`, `portal-monitor reload
--confirm`). A refused reload keeps the running config and its reload timestamp and sets
portal_monitor_config_last_reload_successful to 0. No rule evaluation runs while the checks
and rules change (`Alerting.held`); replaced receivers are closed once their in-flight sends
have finished. The state directory is locked (`flock`) for the daemon's life: a second daemon
on it exits at start.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import socket
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
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
from monitor.history import History
from monitor.httpclient import HttpClient
from monitor.incidents import lifecycle as incidents_mod
from monitor.incidents import retention as retention_mod
from monitor.incidents.retention import Retention
from monitor.logs import REDACTOR
from monitor.model import Check, CheckContext, CheckResult, Sample, StateStore
from monitor.rules.engine import require_runnable_rules
from monitor.scheduler import Scheduler
from monitor.statedb import Database, SqliteState
from monitor.store import Store
from monitor.systemd import Notifier, status_loop, status_summary, watchdog_loop
from monitor.web.api import Api
from monitor.web.metrics import make_metrics_handler
from monitor.web.server import bound_port, build_app, start_server

log = structlog.get_logger()

HISTORY_FILE = "history.msgpack"

METRICS: dict[str, tuple[str, str]] = {
    "portal_monitor_config_last_reload_successful": ("gauge", "1 when the last config (re)load succeeded"),
    "portal_monitor_config_last_reload_timestamp_seconds": (
        "gauge",
        "when the running config was loaded (a refused reload leaves it)",
    ),
}
# Every label of the series above (the daemon's own: no `check`).
LABELS: dict[str, tuple[str, ...]] = {}

LOCK_NAME = "portal-monitor.lock"
CONFIRM_HINT = "confirm with `portal-monitor reload --confirm` or POST /-/reload?confirm=1"


def build_check(
    config: Config, cfg: Any, state: StateStore, http: HttpClient | None = None, *, one_shot: bool = False
) -> Check:
    ctx = CheckContext(
        interval_s=config.interval(cfg),
        timeout_s=config.timeout(cfg),
        state=state,
        now=time.time,
        http=http,
        one_shot=one_shot,
    )
    return checks.build_check(cfg, ctx)


def build_checks(
    config: Config, state: StateStore, http: HttpClient | None = None, *, one_shot: bool = False
) -> list[tuple[Check, dict[str, str]]]:
    """Instantiate every enabled check with its context and extra labels (`one_shot`: for
    a single run, `once`)."""
    return [(build_check(config, cfg, state, http, one_shot=one_shot), dict(cfg.labels)) for cfg in config.checks]


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


def lock_state_dir(state_dir: str | Path) -> int:
    """Take the state directory for this process (an advisory `flock` on `portal-monitor.lock`,
    released when the process ends however it ends); return the lock file's descriptor.
    OSError "state directory X is in use by pid N" when another daemon holds it. Only `run`
    locks: the CLI's on-call commands share the state file with the running daemon."""
    path = Path(state_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise OSError(f"state_dir {str(path)!r}: cannot create {LOCK_NAME}: {e.strerror or e}") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
        os.close(fd)
        raise OSError(
            f"state directory {path} is in use by pid {holder} (another portal-monitor run; "
            f"lock file {path / LOCK_NAME})"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


Stamp = tuple[int, int, int]


class FileWatch:
    """`run --watch`: polls a file's (mtime, size, inode) every `every_s`; `changed()` returns
    once it changed and then held still, the same on two polls `settle_s` apart, so a save
    still being written is not read half-way. A file that keeps changing is read after
    `max_settle_polls` anyway (the reload validates whatever it reads)."""

    def __init__(
        self,
        path: Path,
        *,
        every_s: float = 2.0,
        settle_s: float = 0.5,
        max_settle_polls: int = 20,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        stat: Callable[[Path], os.stat_result] = os.stat,
    ) -> None:
        self.path = path
        self.every_s = every_s
        self.settle_s = settle_s
        self.max_settle_polls = max_settle_polls
        self._sleep = sleep
        self._stat = stat
        self._last = self.stamp()

    def stamp(self) -> Stamp | None:
        try:
            st = self._stat(self.path)
        except OSError:
            return None  # being replaced (editors rename over it): look again next time
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    async def changed(self) -> bool:
        """Wait for the next settled change; False when the file was still changing after
        `max_settle_polls` (it is read all the same)."""
        while True:  # ends by cancellation; one stat() per pass
            await self._sleep(self.every_s)
            seen = self.stamp()
            if seen is not None and seen != self._last:
                break
        for _ in range(self.max_settle_polls):
            await self._sleep(self.settle_s)
            again = self.stamp()
            if again is not None and again == seen:
                self._last = seen
                return True
            seen = again
        self._last = seen
        return False


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
        self.store = Store(History(max_samples=config.root.history.max_samples))
        self.scheduler: Scheduler | None = None
        self.alerting: Alerting | None = None
        self.runner: web.AppRunner | None = None
        self.port: int | None = None
        self.reload_ok = True
        self.reloaded_at = time.time()
        self.reload_errors: Sequence[str] = []  # of the last failed reload, for POST /-/reload
        # What the last reload refused by the mass-removal guard would have removed ({"checks": [...],
        # "rules": [...]}), or what the last successful one did ({"added": ..., ...}), for POST /-/reload.
        self.reload_detail: dict[str, list[str]] = {}
        self._state: StateStore | None = None
        self._stop = asyncio.Event()
        self._first_round: set[str] = set()
        self._reload_lock = asyncio.Lock()
        self._reload_wanted = asyncio.Event()  # SIGHUP: the `reloader` task reloads
        self._lock_fd: int | None = None

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
        self._lock_fd = lock_state_dir(root.state_dir)
        try:
            db = Database(root.state_dir)  # SQLite off the event loop: a writer and a reader thread
        except BaseException:
            self._unlock()
            raise
        conn = db.conn
        self._state = SqliteState(conn, db)
        self._restore_history()
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
        app = build_app(make_metrics_handler(self._metrics_samples, info), ready=self.ready, api=api)
        self.runner = await start_server(app, root.listen)
        try:
            self.port = bound_port(self.runner)
            self.alerting = Alerting(
                conn,
                self.config,
                self.store,
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
            signal.SIGHUP: self._reload_wanted.set,
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
                    group.create_task(self._reloader(), name="reloader"),
                    group.create_task(self._dump_history_loop(), name="history"),
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
        await self._dump_history()
        await self.http.aclose()  # last: the checks and receivers above no longer use it
        if self.runner is not None:
            await self.runner.cleanup()
        await db.aclose()
        self.notifier.close()
        self._unlock()

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def _metrics_samples(self) -> list[Sample]:
        """/metrics: the store's series and the recording rules' latest values."""
        recorded = self.alerting.recorded_samples() if self.alerting is not None else []
        return [*self.store.samples(), *recorded]

    # -------------------------------------------------------------- history

    @property
    def history(self) -> History:
        return self.store.history

    def _history_path(self) -> Path:
        return Path(self.config.root.state_dir) / HISTORY_FILE

    def _restore_history(self) -> None:
        path = self._history_path()
        if not path.exists():
            return
        try:
            samples = self.history.load(path)
        except (OSError, ValueError) as e:
            log.warning("history_not_restored", path=str(path), error=str(e))
            self.history.clear()
            return
        log.info("history_restored", path=str(path), samples=samples, series=self.history.series_count)

    async def _dump_history(self) -> None:
        path = self._history_path()
        try:
            await self.history.save(path)
        except OSError as e:
            log.warning("history_not_saved", path=str(path), error=str(e))

    async def _dump_history_loop(self) -> None:
        while True:  # ends by cancellation
            await asyncio.sleep(self.config.root.history.save_every)
            await self._dump_history()

    def series_window(self, labels: Mapping[str, str], start: float, end: float) -> list[tuple[float, float]]:
        """The incident page's chart: the alert's rule evaluated over [start, end] from the
        history, the series whose labels the alert carries."""
        if self.alerting is None:
            return []
        return self.alerting.series_window(labels, start, end)

    # -------------------------------------------------------------- reload

    async def _resolve_orphans(self) -> None:
        assert self.alerting is not None
        names = {r.alert for r in self.config.root.rules if r.alert}
        incidents = self.alerting.incidents
        if await self.alerting.db(lambda: incidents.resolve_orphans(names, utc_now())):
            self.alerting.outbox_wake.set()

    async def _reloader(self) -> None:
        """Reload after each SIGHUP (several before it gets to run make one reload)."""
        while True:  # ends by cancellation
            await self._reload_wanted.wait()
            self._reload_wanted.clear()
            log.info("reload_requested", by="SIGHUP")
            await self._reload_logged()

    async def _watch_config(self, watch: FileWatch | None = None) -> None:
        """`run --watch`: reload when the config file changed and has settled (`FileWatch`)."""
        watch = watch or FileWatch(self.config.path)
        while True:  # ends by cancellation
            settled = await watch.changed()
            if settled:
                log.info("config_changed", path=str(watch.path))
            else:
                log.warning("config_changed", path=str(watch.path), note="still changing; read as it is")
            await self._reload_logged()

    async def _reload_logged(self) -> bool:
        """`reload()` for the daemon's own tasks: a bug in it is logged and counted as a refusal."""
        try:
            return await self.reload()
        except Exception as e:
            log.exception("reload_crashed")
            self.reload_ok = False
            self.reload_errors = [f"{type(e).__name__}: {e}"]
            return False

    async def reload(self, confirm: bool = False) -> bool:
        """Re-read the config file. Invalid, or removing more than half of the running checks
        or rules without `confirm`: nothing changes, every error is logged (with its position),
        and portal_monitor_config_last_reload_successful goes to 0."""
        async with self._reload_lock:
            self.notifier.reloading()
            try:
                return await self._reload(confirm)
            finally:
                self.notifier.ready()

    def _refuse(self, errors: Sequence[str], detail: dict[str, list[str]] | None = None) -> bool:
        self.reload_ok = False
        self.reload_errors = list(errors)
        self.reload_detail = detail or {}
        for line in errors:
            log.error("config_error", error=line)
        log.error("reload_failed", errors=len(errors), kept="the previous configuration")
        return False

    async def _reload(self, confirm: bool) -> bool:
        assert self.scheduler is not None and self.alerting is not None and self._state is not None
        try:
            new = self._loader()
            require_runnable_rules(new)
        except ConfigError as e:
            return self._refuse(e.errors)
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
        old_rules = list(dict.fromkeys(r.name for r in old.root.rules))
        new_rules = {r.name for r in new.root.rules}
        removed_rules = [n for n in old_rules if n not in new_rules]
        if not confirm and (2 * len(removed) > len(before) or 2 * len(removed_rules) > len(old_rules)):
            return self._refuse_mass_removal(removed, len(before), removed_rules, len(old_rules))
        REDACTOR.update(new.secrets)
        with self.alerting.held():
            for name in removed + changed:
                await self.scheduler.remove(name)
                self._first_round.discard(name)
            for name in changed + added:
                self.scheduler.add(build_check(new, after[name], self._state, self.http), dict(after[name].labels))
            self.config = new
            self.heartbeat.cfg = new.root.heartbeat  # the running loop reads it at the next beat
            old_receivers = self.alerting.swap_config(new)
            await self._resolve_orphans()
        self.reload_ok = True
        self.reload_errors = []
        self.reload_detail = {"added": added, "changed": changed, "removed": removed, "removed_rules": removed_rules}
        self.reloaded_at = time.time()
        log.info(
            "reloaded",
            added=added,
            changed=changed,
            removed=removed,
            removed_rules=removed_rules,
            rules=len(self.alerting.rules),
            confirmed=confirm,
        )
        await self.alerting.retire_receivers(old_receivers)
        return True

    def _refuse_mass_removal(self, checks: list[str], of_checks: int, rules: list[str], of_rules: int) -> bool:
        def named(names: list[str]) -> str:
            shown = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
            return f" ({shown})" if names else ""

        message = (
            f"{self.config.path.name}: reload refused: it would remove {len(checks)} of {of_checks} running "
            f"checks{named(checks)} and {len(rules)} of {of_rules} rules{named(rules)}, more than half; "
            f"if that is intended, {CONFIRM_HINT} (SIGHUP and --watch cannot confirm)"
        )
        log.error("reload_refused", would_remove_checks=checks, would_remove_rules=rules, hint=CONFIRM_HINT)
        return self._refuse([message], {"checks": checks, "rules": rules})


def config_loader(path: Path, overrides: dict[str, Any]) -> Callable[[], Config]:
    """Load `path` again, with the command line's --listen/--state-dir applied."""

    def load() -> Config:
        cfg = load_config(path)
        return replace(cfg, root=cfg.root.model_copy(update=overrides)) if overrides else cfg

    return load
