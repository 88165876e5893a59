"""The postgres check against a real, throwaway PostgreSQL cluster (tests/servers.py, max_connections 20)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest
from structlog.testing import capture_logs

from checks.postgres import STATES, WATCH_APPLICATION_NAME, Config, PostgresCheck
from monitor.model import Check, CheckContext, CheckError, MemoryState, Sample, Watcher
from tests.servers import PG_MAX_CONNECTIONS, PostgresServer, free_port

PW_ROLE, PW = "pw_user", "right-pw"


def make_check(dsn: str, *, timeout_s: float = 2.0, interval_s: float = 10.0,
               sleep: Callable[[float], Any] | None = None, **cfg: Any) -> PostgresCheck:
    ctx = CheckContext(interval_s=interval_s, timeout_s=timeout_s, state=MemoryState(), now=lambda: 0.0)
    cfg_ = Config(name="db", type="postgres", dsn=dsn, **cfg)
    return PostgresCheck(cfg_, ctx, sleep=sleep or asyncio.sleep)


def value(samples: list[Sample], name: str, **labels: str) -> float:
    found = [s.value for s in samples if s.name == name and dict(s.labels) == labels]
    assert len(found) == 1, f"{name}{labels}: {len(found)} samples in {samples}"
    return found[0]


def states(samples: list[Sample]) -> dict[str, float]:
    return {s.labels["state"]: s.value for s in samples if s.name == "portal_postgres_connections"}


@pytest.fixture
async def check(postgres_up: PostgresServer) -> AsyncIterator[PostgresCheck]:
    c = make_check(postgres_up.dsn)
    yield c
    await c.aclose()


@pytest.fixture
async def open_conns(postgres_up: PostgresServer) -> AsyncIterator[Callable[[], Any]]:
    """Open extra sessions on the test server; all are closed after the test."""
    conns: list[asyncpg.Connection] = []

    async def open_one() -> asyncpg.Connection:
        conn = await asyncpg.connect(postgres_up.dsn, timeout=5)
        conns.append(conn)
        return conn

    yield open_one
    for conn in conns:
        conn.terminate()


async def _until(conn: asyncpg.Connection, sql: str, *args: Any) -> None:
    """Poll a query until it returns true (bounded): the server has caught up with the test."""
    async with asyncio.timeout(5):
        while not await conn.fetchval(sql, *args):
            await asyncio.sleep(0.005)


def test_postgres_check_is_a_check_and_a_watcher() -> None:
    c = make_check("postgresql://postgres@127.0.0.1:1/postgres")
    assert isinstance(c, Check) and isinstance(c, Watcher)
    assert (c.name, c.type, c.interval_s, c.timeout_s) == ("db", "postgres", 10.0, 2.0)


def test_config_refuses_other_schemes() -> None:
    with pytest.raises(ValueError, match="postgresql://"):
        Config(name="db", type="postgres", dsn="mysql://u:secret@h/db")


# ---------------------------------------------------------------- measurements


async def test_reports_ping_connections_and_max(check: PostgresCheck) -> None:
    samples = await check.collect()
    assert 0 < value(samples, "portal_postgres_ping_seconds") < 1.0
    assert value(samples, "portal_postgres_connections_max") == PG_MAX_CONNECTIONS
    by_state = states(samples)
    assert set(STATES) <= set(by_state)  # every known state, 0 when empty
    assert by_state["active"] >= 1  # the check's own query
    assert value(samples, "portal_postgres_connections_used_ratio") == pytest.approx(
        sum(by_state.values()) / PG_MAX_CONNECTIONS)
    assert value(samples, "portal_postgres_longest_query_seconds") == 0  # its own query does not count
    assert not [s for s in samples if s.name == "portal_postgres_up" or "check" in s.labels]


async def test_counts_connections_by_state(check: PostgresCheck, open_conns: Callable[[], Any]) -> None:
    before = states(await check.collect())
    for _ in range(3):
        await open_conns()
    for _ in range(2):
        conn = await open_conns()
        tx = conn.transaction()
        await tx.start()
        await conn.execute("SELECT 1")
    aborted = await open_conns()
    await (aborted.transaction()).start()
    with pytest.raises(asyncpg.DivisionByZeroError):
        await aborted.execute("SELECT 1/0")

    samples = await check.collect()
    after = states(samples)
    assert after["idle"] == before["idle"] + 3
    assert after["idle in transaction"] == before["idle in transaction"] + 2
    assert after["idle in transaction (aborted)"] == before["idle in transaction (aborted)"] + 1
    assert after["active"] == before["active"]
    assert sum(after.values()) == sum(before.values()) + 6
    assert value(samples, "portal_postgres_connections_used_ratio") == pytest.approx(
        sum(after.values()) / PG_MAX_CONNECTIONS)


async def test_longest_query_is_the_running_pg_sleep(check: PostgresCheck,
                                                     open_conns: Callable[[], Any]) -> None:
    sleeper, observer = await open_conns(), await open_conns()
    pid = sleeper.get_server_pid()
    query = asyncio.create_task(sleeper.execute("SELECT pg_sleep(60)"))
    try:
        await _until(observer, "SELECT state = 'active' FROM pg_stat_activity WHERE pid = $1", pid)
        first = value(await check.collect(), "portal_postgres_longest_query_seconds")
        second = value(await check.collect(), "portal_postgres_longest_query_seconds")
        server_age = await observer.fetchval(
            "SELECT EXTRACT(EPOCH FROM clock_timestamp() - query_start)::float8"
            " FROM pg_stat_activity WHERE pid = $1", pid)
        assert 0 < first <= second <= server_age < 60
    finally:
        await observer.execute("SELECT pg_cancel_backend($1)", pid)  # do not wait the minute
        with pytest.raises(asyncpg.QueryCanceledError):
            await query
    assert value(await check.collect(), "portal_postgres_longest_query_seconds") == 0


async def test_session_has_the_statement_timeout(postgres_up: PostgresServer) -> None:
    check = make_check(postgres_up.dsn, statement_timeout="1500ms")
    await check.collect()
    assert check._conn is not None
    assert await check._conn.fetchval("SHOW statement_timeout") == "1500ms"
    await check.aclose()


async def test_connection_is_reused_across_runs(check: PostgresCheck, open_conns: Callable[[], Any]) -> None:
    await check.collect()
    observer = await open_conns()
    sql = "SELECT array_agg(pid) FROM pg_stat_activity WHERE application_name = 'portal-monitor'"
    first = await observer.fetchval(sql)
    await check.collect()
    await check.collect()
    assert await observer.fetchval(sql) == first
    assert len(first) == 1


# ---------------------------------------------------------------- failures


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_down_then_back_with_the_same_check(postgres_up: PostgresServer, how: str) -> None:
    check = make_check(postgres_up.dsn)
    await check.collect()
    getattr(postgres_up, how)()
    with pytest.raises(CheckError) as err:
        await check.collect()
    assert err.value.reason == "connect"
    assert postgres_up.dsn in str(err.value)
    postgres_up.start()
    samples = await check.collect()
    assert value(samples, "portal_postgres_connections_max") == PG_MAX_CONNECTIONS
    await check.aclose()


async def test_refused_port_is_connect() -> None:
    check = make_check(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres")
    with pytest.raises(CheckError) as err:
        await check.collect()
    assert err.value.reason == "connect"


@pytest.fixture(scope="module")
async def password_role(postgres_server: PostgresServer) -> AsyncIterator[None]:
    """A role that must give its password (scram), on a cluster where everyone else is trusted.

    The pg_hba.conf line for this one role goes first, so it wins; the others keep trust."""

    async def run(sql: str) -> None:
        postgres_server.ensure_running()
        conn = await asyncpg.connect(postgres_server.dsn, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    hba = postgres_server.data_dir / "pg_hba.conf"
    original = hba.read_text()
    hba.write_text(f"host all {PW_ROLE} 127.0.0.1/32 scram-sha-256\n" + original)  # same file, same owner
    await run(f"DROP ROLE IF EXISTS {PW_ROLE}; CREATE ROLE {PW_ROLE} LOGIN PASSWORD '{PW}';"
              " SELECT pg_reload_conf()")
    yield
    hba.write_text(original)
    await run(f"DROP ROLE IF EXISTS {PW_ROLE}; SELECT pg_reload_conf()")


@pytest.mark.parametrize(("user", "password"), [(PW_ROLE, "wrong-pw"), (PW_ROLE, ""), ("no_such_role", "x")])
async def test_bad_credentials_are_auth(postgres_up: PostgresServer, password_role: None,
                                        user: str, password: str) -> None:
    check = make_check(f"postgresql://{user}:{password}@127.0.0.1:{postgres_up.port}/postgres")
    with pytest.raises(CheckError) as err:
        await check.collect()
    assert err.value.reason == "auth"
    assert f"127.0.0.1:{postgres_up.port}" in str(err.value)
    assert "wrong-pw" not in str(err.value)


async def test_right_password_works(postgres_up: PostgresServer, password_role: None) -> None:
    check = make_check(f"postgresql://{PW_ROLE}:{PW}@127.0.0.1:{postgres_up.port}/postgres")
    samples = await check.collect()
    await check.aclose()
    assert value(samples, "portal_postgres_connections_max") == PG_MAX_CONNECTIONS


async def test_full_server_is_too_many_connections_and_ratio_one(
        check: PostgresCheck, postgres_up: PostgresServer, open_conns: Callable[[], Any]) -> None:
    """A check that holds its session still measures a full server; a new one cannot get in."""
    await check.collect()
    with pytest.raises(asyncpg.TooManyConnectionsError):
        for _ in range(PG_MAX_CONNECTIONS + 1):  # bounded: the server refuses before the end
            await open_conns()
    samples = await check.collect()
    assert value(samples, "portal_postgres_connections_used_ratio") == 1.0
    assert sum(states(samples).values()) == PG_MAX_CONNECTIONS

    newcomer = make_check(postgres_up.dsn)
    with pytest.raises(CheckError) as err:
        await newcomer.collect()
    assert err.value.reason == "too_many_connections"


async def _silent_peer() -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.read(4096):
                pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def test_silent_peer_is_timeout() -> None:
    server = await _silent_peer()
    port = server.sockets[0].getsockname()[1]
    check = make_check(f"postgresql://postgres@127.0.0.1:{port}/postgres?sslmode=disable", timeout_s=0.2)
    with pytest.raises(CheckError) as err:
        await check.collect()
    server.close()
    assert err.value.reason == "timeout"


async def lock_activity_view(open_conns: Callable[[], Any]) -> Any:
    """Another session takes an exclusive lock on pg_stat_activity (and the catalogs under it),
    so the check's queries wait. New sessions cannot log in meanwhile: connect first.
    Returns the transaction; roll it back to release the lock."""
    locker = await open_conns()
    tx = locker.transaction()
    await tx.start()
    await locker.execute("LOCK TABLE pg_stat_activity IN ACCESS EXCLUSIVE MODE")
    return tx


async def test_command_timeout_is_timeout_and_the_next_run_works(postgres_up: PostgresServer,
                                                                 open_conns: Callable[[], Any]) -> None:
    check = make_check(postgres_up.dsn, timeout_s=0.3, statement_timeout="10s")
    await check.collect()
    tx = await lock_activity_view(open_conns)
    with pytest.raises(CheckError) as err:
        await check.collect()
    await tx.rollback()
    assert err.value.reason == "timeout"
    assert postgres_up.dsn in str(err.value)
    samples = await check.collect()
    assert value(samples, "portal_postgres_connections_max") == PG_MAX_CONNECTIONS
    await check.aclose()


async def test_statement_timeout_is_timeout(postgres_up: PostgresServer,
                                            open_conns: Callable[[], Any]) -> None:
    check = make_check(postgres_up.dsn, timeout_s=5.0, statement_timeout="200ms")
    await check.collect()
    tx = await lock_activity_view(open_conns)
    with pytest.raises(CheckError) as err:
        await check.collect()
    await tx.rollback()
    assert err.value.reason == "timeout"
    assert "statement timeout" in str(err.value)
    await check.collect()  # the session survives a cancelled statement
    await check.aclose()


async def test_cancelled_run_leaves_a_usable_check(postgres_up: PostgresServer,
                                                   open_conns: Callable[[], Any]) -> None:
    """The scheduler's own timeout cancels collect() mid-query; the next run must not inherit the mess."""
    check = make_check(postgres_up.dsn, timeout_s=5.0, statement_timeout="10s")
    await check.collect()
    tx = await lock_activity_view(open_conns)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await check.collect()
    await tx.rollback()
    samples = await check.collect()
    assert value(samples, "portal_postgres_connections_max") == PG_MAX_CONNECTIONS
    await check.aclose()


async def test_missing_database_is_bad_reply(postgres_up: PostgresServer) -> None:
    """A database that does not exist is the server's answer, not a connection problem."""
    missing = make_check(f"postgresql://postgres@127.0.0.1:{postgres_up.port}/no_such_db")
    with pytest.raises(CheckError) as err:
        await missing.collect()
    assert err.value.reason == "bad_reply"
    assert "no_such_db" in str(err.value)


# ---------------------------------------------------------------- watch


class GatedSleep:
    """An injected sleep that records each delay and returns only once the test opens the gate."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.gate = asyncio.Event()
        self.called = asyncio.Event()

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        self.called.set()
        await self.gate.wait()


async def _until_watching(dsn: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        await _until(conn, "SELECT count(*) > 0 FROM pg_stat_activity WHERE application_name = $1",
                     WATCH_APPLICATION_NAME)
    finally:
        await conn.close()


@pytest.mark.parametrize("how", ["kill", "stop"])
async def test_watch_wakes_at_once_on_crash_and_again_on_recovery(postgres_up: PostgresServer,
                                                                  how: str) -> None:
    sleep = GatedSleep()
    woke = asyncio.Event()
    check = make_check(postgres_up.dsn, sleep=sleep)
    task = asyncio.create_task(check.watch(woke.set))
    try:
        await _until_watching(postgres_up.dsn)
        assert not woke.is_set()
        started = time.perf_counter()
        getattr(postgres_up, how)()
        await asyncio.wait_for(woke.wait(), 1.0)
        elapsed = time.perf_counter() - started
        assert elapsed < 0.5, f"wake {elapsed:.3f}s after {how}"

        await asyncio.wait_for(sleep.called.wait(), 1.0)  # backing off, not spinning
        assert sleep.delays == [0.1]
        woke.clear()
        postgres_up.start()
        sleep.gate.set()
        await asyncio.wait_for(woke.wait(), 2.0)  # recovery is seen as soon as the backoff ends
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    await check.aclose()


async def test_watch_wakes_when_its_session_is_terminated(postgres_up: PostgresServer,
                                                          open_conns: Callable[[], Any]) -> None:
    """pg_terminate_backend: wake, reconnect after the backoff, wake again; the old session is gone."""
    wakes: list[int] = []
    two = asyncio.Event()
    check = make_check(postgres_up.dsn, sleep=lambda _d: asyncio.sleep(0))

    def wake() -> None:
        wakes.append(1)
        if len(wakes) == 2:
            two.set()

    task = asyncio.create_task(check.watch(wake))
    try:
        await _until_watching(postgres_up.dsn)
        admin = await open_conns()
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                            " WHERE application_name = $1", WATCH_APPLICATION_NAME)
        await asyncio.wait_for(two.wait(), 2.0)
        count = await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                                     WATCH_APPLICATION_NAME)
        assert count == 1
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_watch_session_is_exempt_from_idle_session_timeout(postgres_up: PostgresServer) -> None:
    """A server-side idle_session_timeout must not end the watch session (and wake the scheduler).

    The server's timer cannot take our fake clock, so the server sleeps 0.4 s past a 0.15 s limit."""
    woke: list[int] = []
    admin = await asyncpg.connect(postgres_up.dsn, timeout=5)
    await admin.execute("ALTER DATABASE postgres SET idle_session_timeout = '150ms'")
    await admin.close()
    check = make_check(postgres_up.dsn)
    task = asyncio.create_task(check.watch(lambda: woke.append(1)))
    try:
        await _until_watching(postgres_up.dsn)
        observer = await asyncpg.connect(postgres_up.dsn, timeout=5)
        await observer.execute("SELECT pg_sleep(0.4)")
        count = await observer.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                                        WATCH_APPLICATION_NAME)
        await observer.close()
        assert woke == []
        assert count == 1
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        admin = await asyncpg.connect(postgres_up.dsn, timeout=5)
        await admin.execute("ALTER DATABASE postgres RESET idle_session_timeout")
        await admin.close()


async def test_watch_started_while_down_wakes_when_the_server_arrives(postgres_up: PostgresServer) -> None:
    """The monitor started during an outage: the first session that works is a recovery too."""
    sleep = GatedSleep()
    woke = asyncio.Event()
    postgres_up.stop()
    check = make_check(postgres_up.dsn, sleep=sleep)
    task = asyncio.create_task(check.watch(woke.set))
    try:
        await asyncio.wait_for(sleep.called.wait(), 1.0)  # the first attempt failed; backing off
        assert not woke.is_set()
        postgres_up.start()
        sleep.gate.set()
        await asyncio.wait_for(woke.wait(), 2.0)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_watch_backs_off_to_a_cap_while_down() -> None:
    """Against a dead port the watch retries with doubling delays up to min(interval, 5s), never waking."""
    delays: list[float] = []
    enough = asyncio.Event()

    async def sleep(delay: float) -> None:
        delays.append(delay)
        if len(delays) >= 9:
            enough.set()
            await asyncio.Event().wait()

    woke: list[int] = []
    check = make_check(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres", sleep=sleep, interval_s=3.0)
    task = asyncio.create_task(check.watch(lambda: woke.append(1)))
    await asyncio.wait_for(enough.wait(), 5.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.6, 3.0, 3.0, 3.0, 3.0]  # capped at the 3 s interval
    assert woke == []


async def test_watch_cancellation_closes_its_session(postgres_up: PostgresServer,
                                                     open_conns: Callable[[], Any]) -> None:
    check = make_check(postgres_up.dsn)
    task = asyncio.create_task(check.watch(lambda: None))
    await _until_watching(postgres_up.dsn)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    admin = await open_conns()
    await _until(admin, "SELECT count(*) = 0 FROM pg_stat_activity WHERE application_name = $1",
                 WATCH_APPLICATION_NAME)


async def test_watch_logs_loss_failed_retry_and_restore(postgres_up: PostgresServer) -> None:
    """The watch's log events keep their names; a failed attempt gives its reason and next delay."""
    called: asyncio.Queue[float] = asyncio.Queue()
    steps = asyncio.Semaphore(0)

    async def sleep(delay: float) -> None:
        called.put_nowait(delay)
        await steps.acquire()

    woke = asyncio.Event()
    check = make_check(postgres_up.dsn, sleep=sleep)
    with capture_logs() as logs:
        task = asyncio.create_task(check.watch(woke.set))
        try:
            await _until_watching(postgres_up.dsn)
            postgres_up.kill()
            await asyncio.wait_for(woke.wait(), 1.0)
            assert await asyncio.wait_for(called.get(), 1.0) == 0.1
            steps.release()  # retry while the server is still down
            assert await asyncio.wait_for(called.get(), 2.0) == 0.2
            woke.clear()
            postgres_up.start()
            steps.release()
            await asyncio.wait_for(woke.wait(), 2.0)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    watch_logs = [e for e in logs if e["event"].startswith("postgres_watch")]
    assert [(e["event"], e["log_level"], e.get("reason")) for e in watch_logs] == [
        ("postgres_watch_lost", "warning", None),
        ("postgres_watch_connect_failed", "debug", "connect"),
        ("postgres_watch_restored", "info", None),
    ]
    assert watch_logs[1]["retry_in_s"] == 0.2
    assert {(e["check"], e["target"]) for e in watch_logs} == {("db", postgres_up.dsn)}


async def test_watch_disabled_only_waits_for_cancellation() -> None:
    check = make_check(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres", watch=False)
    woke: list[int] = []
    task = asyncio.create_task(check.watch(lambda: woke.append(1)))
    for _ in range(10):
        await asyncio.sleep(0)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert woke == []
