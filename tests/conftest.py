"""Shared fixtures: a disposable Redis and a throwaway PostgreSQL cluster for the whole session.

Fixtures (see `tests/servers.py` for the server objects: `.url`/`.dsn`, `.port`, `.stop()`,
`.kill()`, `.start()`, `.ensure_running()`):

- `redis_server` (session): a `redis-server` on a free loopback port, no persistence.
  Stopped at the end of the session, whatever the tests did.
- `redis_up` (function): `redis_server`, running (restarted if a previous test stopped or
  killed it) and reset: FLUSHALL, `maxmemory 0`, `noeviction`, CONFIG RESETSTAT.
  Use this one in tests.
- `postgres_server` (session): an initdb'd cluster, trust auth, superuser `postgres`,
  database `postgres`, **max_connections = 20** so that saturating it is cheap.
- `postgres_up` (function): `postgres_server`, running (restarted if needed).

Tests that stop or kill a server need do nothing to put it back: the next test's `*_up`
fixture does. A missing `redis-server` or PostgreSQL installation skips the tests that
need it, with the reason in the summary.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.servers import PG_MAX_CONNECTIONS, PostgresServer, RedisServer, pg_bin_dir


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_up(redis_server: RedisServer) -> RedisServer:
    """The session Redis, running, empty, no memory limit, `noeviction`, statistics reset."""
    redis_server.ensure_running()
    with redis.Redis(host="127.0.0.1", port=redis_server.port, socket_timeout=5) as client:
        client.flushall()
        client.config_set("maxmemory", 0)
        client.config_set("maxmemory-policy", "noeviction")
        client.config_resetstat()
    return redis_server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    if pg_bin_dir() is None:
        pytest.skip("PostgreSQL server binaries are not installed (/usr/lib/postgresql/*/bin)")
    # Under /tmp, not pytest's tmp_path: its base directory is 0700 root and the server may
    # run as the `postgres` user. Removed at the end (a pytest killed by a signal leaves it;
    # the server itself dies with pytest, see servers.py).
    workdir = Path(tempfile.mkdtemp(prefix="portal-monitor-pg-"))
    try:
        server = PostgresServer(workdir, max_connections=PG_MAX_CONNECTIONS)
        try:
            server.start()
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def postgres_up(postgres_server: PostgresServer) -> PostgresServer:
    """The session PostgreSQL, running."""
    postgres_server.ensure_running()
    return postgres_server
