"""PostgreSQL: SELECT 1, connections by state against max_connections, the longest query.

Runbook scenario 4 (database connection issues): `psql -c "SELECT 1"`, the connection count
of pg_stat_activity, long-running queries.

What counts as a connection: client backends only (`backend_type = 'client backend'`), the
sessions that `max_connections` limits. Background workers, parallel workers, autovacuum and
WAL senders have limits of their own (max_worker_processes, autovacuum_max_workers,
max_wal_senders), so counting them would overstate how close clients are to "too many
clients". The check's own two sessions (the one that queries, the one that watches) are
client backends and count: they do use slots. The ratio compares all client backends with
max_connections; ordinary roles hit the wall `superuser_reserved_connections` earlier.

Without `pg_read_all_stats` (or `pg_monitor`), PostgreSQL hides the state and query start of
other roles' sessions: they count under `state="unknown"` and cannot be the longest query.
Grant `pg_monitor` to the monitoring role.

Failures raise `CheckError` with one of these reasons: `connect` (refused, reset, DNS,
server starting or shutting down), `timeout` (our timeout or statement_timeout), `auth`
(wrong password, unknown role, pg_hba refusal), `too_many_connections` (the server is full:
the runbook's "check connection pool limits", worth its own label) and `bad_reply`
(any other server error).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal

import structlog
from pydantic import field_validator

from checks.watch import Server, until_cancelled
from monitor.config.fields import CheckBase, Duration
from monitor.model import CheckContext, CheckError, Sample
from monitor.secrets import SecretURL, redact_url

if TYPE_CHECKING:
    import asyncpg

log = structlog.get_logger()

METRICS: dict[str, tuple[str, str]] = {
    "portal_postgres_up": ("gauge", "1 when the last PostgreSQL check succeeded"),
    "portal_postgres_ping_seconds": ("gauge", "SELECT 1 round trip"),
    "portal_postgres_connections": ("gauge", "server connections by pg_stat_activity state"),
    "portal_postgres_connections_max": ("gauge", "max_connections as the server reports it"),
    "portal_postgres_connections_used_ratio": ("gauge", "connections / max_connections"),
    "portal_postgres_longest_query_seconds": ("gauge", "age of the longest running active query"),
}
# Labels of each series besides `check` and the check's `labels` (the store adds those); a
# metric not named here has none. With METRICS, the catalogue `check-config` checks rules against.
LABELS: dict[str, tuple[str, ...]] = {"portal_postgres_connections": ("state",)}
KEY_METRICS = (
    "portal_postgres_ping_seconds",
    "portal_postgres_connections_used_ratio",
    "portal_postgres_longest_query_seconds",
)

# pg_stat_activity.state values, exported as 0 when no session is in them.
STATES = (
    "active",
    "idle",
    "idle in transaction",
    "idle in transaction (aborted)",
    "fastpath function call",
    "disabled",
)
UNKNOWN_STATE = "unknown"  # state is NULL: hidden by privileges, or still authenticating

CONNECTIONS_SQL = """
SELECT state, count(*)::int AS n
FROM pg_stat_activity
WHERE backend_type = 'client backend'
GROUP BY state
"""
LIMITS_SQL = """
SELECT current_setting('max_connections')::int AS max_connections,
       COALESCE(EXTRACT(EPOCH FROM max(clock_timestamp() - query_start)), 0)::float8 AS longest_s
FROM pg_stat_activity
WHERE backend_type = 'client backend' AND state = 'active' AND pid <> pg_backend_pid()
"""

APPLICATION_NAME = "portal-monitor"
WATCH_APPLICATION_NAME = "portal-monitor (watch)"


class Config(CheckBase):
    type: Literal["postgres"]
    dsn: SecretURL = "postgresql://postgres@127.0.0.1:5432/postgres"
    statement_timeout: Duration = 5.0
    watch: bool = True  # hold a connection and re-check at once when it drops

    @field_validator("dsn")
    @classmethod
    def _known_scheme(cls, dsn: str) -> str:
        if not dsn.startswith(("postgresql://", "postgres://")):
            raise ValueError(f"{redact_url(dsn)!r}: expected a postgresql:// URL")
        return dsn


def classify(exc: BaseException) -> str:
    """The CheckError reason of an asyncpg or socket error."""
    from asyncpg import exceptions as pgex

    if isinstance(exc, (pgex.InvalidPasswordError, pgex.InvalidAuthorizationSpecificationError)):
        return "auth"
    if isinstance(exc, pgex.TooManyConnectionsError):
        return "too_many_connections"
    if isinstance(exc, (TimeoutError, pgex.QueryCanceledError)):
        return "timeout"
    if isinstance(
        exc,
        (
            OSError,
            pgex.ConnectionDoesNotExistError,
            pgex.PostgresConnectionError,
            pgex.CannotConnectNowError,
            pgex.OperatorInterventionError,
        ),
    ):
        return "connect"
    if isinstance(exc, pgex.InterfaceError) and "connection is closed" in str(exc):
        return "connect"
    return "bad_reply"


def _errors() -> tuple[type[BaseException], ...]:
    """What an asyncpg call may raise. asyncpg is imported when the first PostgreSQL check is
    built, not with this module: a daemon without one does not carry it."""
    from asyncpg import exceptions as pgex

    return (pgex.PostgresError, pgex.InterfaceError, pgex.InternalClientError, OSError, TimeoutError)


class PostgresCheck:
    """Check + Watcher for one PostgreSQL server. One connection, reused across runs and
    re-opened after a connection-level failure."""

    type = "postgres"

    def __init__(
        self, cfg: Config, ctx: CheckContext, *, sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep
    ) -> None:
        self.name = cfg.name
        self.interval_s = ctx.interval_s
        self.timeout_s = ctx.timeout_s
        self.cfg = cfg
        self._server = Server("postgres", cfg.name, cfg.dsn, sleep)
        self._conn: asyncpg.Connection | None = None
        _errors()  # import asyncpg now, not inside the first run's timeout

    async def collect(self) -> list[Sample]:
        try:
            conn = await self._connection()
            started = time.perf_counter()
            await conn.fetchval("SELECT 1")
            ping_s = time.perf_counter() - started
            by_state = await conn.fetch(CONNECTIONS_SQL)
            limits = await conn.fetchrow(LIMITS_SQL)
        except _errors() as e:
            raise await self._failed(e) from e
        except asyncio.CancelledError:  # the scheduler's timeout cut a query off mid-way
            self._drop_connection()
            raise
        self._server.rearm.seen()
        if limits is None:  # one aggregate row always comes back; a server that says otherwise is broken
            raise CheckError("bad_reply", f"{self._server.target}: the max_connections query returned no row")
        counts = dict.fromkeys(STATES, 0)
        for row in by_state:
            state = row["state"] or UNKNOWN_STATE
            counts[state] = counts.get(state, 0) + row["n"]
        total = sum(counts.values())
        max_connections = float(limits["max_connections"])
        return [
            Sample("portal_postgres_ping_seconds", {}, ping_s),
            *(Sample("portal_postgres_connections", {"state": s}, float(n)) for s, n in counts.items()),
            Sample("portal_postgres_connections_max", {}, max_connections),
            Sample(
                "portal_postgres_connections_used_ratio", {}, total / max_connections if max_connections > 0 else 0.0
            ),
            Sample("portal_postgres_longest_query_seconds", {}, max(0.0, float(limits["longest_s"]))),
        ]

    async def _open(self) -> asyncpg.Connection:
        """A session with our timeouts. statement_timeout is SET after connecting, not sent as a
        startup parameter, which PgBouncer would refuse."""
        conn = await self._connect(APPLICATION_NAME)
        try:
            await conn.execute(f"SET statement_timeout = {int(self.cfg.statement_timeout * 1000)}")
        except BaseException:
            conn.terminate()
            raise
        return conn

    async def _connect(self, application_name: str) -> asyncpg.Connection:
        """application_name tells the sessions apart in pg_stat_activity (PgBouncer passes it on)."""
        import asyncpg

        return await asyncpg.connect(
            self.cfg.dsn,
            timeout=self.timeout_s,
            command_timeout=self.timeout_s,
            server_settings={"application_name": application_name},
        )

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = None
            self._conn = await self._open()
        return self._conn

    async def _failed(self, exc: BaseException) -> CheckError:
        reason = classify(exc)
        if reason == "bad_reply" and self._conn is not None and self._conn.is_closed():
            reason = "connect"  # the session died under the query; asyncpg words that in several ways
        from asyncpg import exceptions as pgex

        if reason != "bad_reply" or isinstance(exc, (pgex.InterfaceError, pgex.InternalClientError)):
            self._drop_connection()  # client-side errors leave the session in an unknown state
        return self._server.error(reason, exc)

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()  # after a failure a polite close could wait for a dead server

    # ------------------------------------------------------------------ watch

    async def watch(self, wake: Callable[[], None]) -> None:
        """Hold a dedicated idle session; `wake()` when it ends and again when one is back
        (also when the server was already down when the watch began).

        asyncpg notices the socket closing as soon as the server goes (a crash, a fast
        shutdown that sends "terminating connection due to administrator command", a
        pg_terminate_backend) and calls the connection's termination listeners. A
        dedicated session rather than the check's own keeps the two lifetimes apart: the
        check may drop its connection after a timeout without the watch noticing a "loss".

        Reconnects follow `checks.watch.hold_and_watch`. A silent network partition is left
        to the interval and the timeout, and behind PgBouncer the session watched is
        PgBouncer's, not the server's.
        """
        if not self.cfg.watch:
            await until_cancelled()
        await self._server.watch(
            connect=self._open_watch_session,
            hold=self._hold,
            close=_terminate,
            errors=_errors(),
            classify=classify,
            wake=wake,
            interval_s=self.interval_s,
            on_lost=lambda _exc: log.warning("postgres_watch_lost", check=self.name, target=self._server.target),
        )

    @staticmethod
    async def _hold(conn: asyncpg.Connection) -> None:
        """Return when the session ends: asyncpg calls termination listeners on any close."""
        ended = asyncio.Event()
        conn.add_termination_listener(lambda _conn: ended.set())
        if not conn.is_closed():  # else it ended before the listener was in place
            await ended.wait()

    async def _open_watch_session(self) -> asyncpg.Connection:
        """A session of its own, exempt from `idle_session_timeout` (PostgreSQL 14+), which
        would otherwise end it, and wake us, every time it runs out. Older servers lack the
        setting. Terminated again if the SET fails."""
        from asyncpg.exceptions import UndefinedObjectError

        conn = await self._connect(WATCH_APPLICATION_NAME)
        try:
            await conn.execute("SET idle_session_timeout = 0")
        except UndefinedObjectError:
            pass
        except BaseException:
            conn.terminate()
            raise
        return conn

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await conn.close(timeout=self.timeout_s)
            except _errors():
                pass  # close() has already aborted the connection


async def _terminate(conn: asyncpg.Connection) -> None:
    conn.terminate()  # a polite close could wait for a dead server
