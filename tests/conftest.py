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
fixture does.

Missing tools: every test that needs a program from outside Python (`redis-server`,
PostgreSQL's `initdb`, `chromium`, `promtool`, `amtool`, `wrk`, `systemd-analyze`, `openssl`) asks for
it through `require_tool()`. Where the program is missing the test is skipped, with the
reason in the summary; under `CI=true` it fails with the same reason instead, because CI
installs those programs first (`.ci/run`) and a green run must not hide a part of the suite.

The quick layer (`make test-quick`, `pytest -m "not slow"`): every test is quick except
those marked `slow`, which this file adds to the tests in `tests/faults`, `tests/proof`,
`tests/load` and `tests/fuzz`, to every test that uses a real server fixture (`SLOW_FIXTURES`:
the browser test and the container's fresh venv among them), and to the modules and tests
named in `SLOW_MODULES` and `SLOW_TESTS` (the CLI or the daemon as a process).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.servers import PG_MAX_CONNECTIONS, PostgresServer, RedisServer

TESTS = Path(__file__).resolve().parent

# ---------------------------------------------------------------------- tools from outside Python

REDIS_MISSING = "redis-server is not installed (Debian package `redis-server`)"
POSTGRES_MISSING = "PostgreSQL is not installed (initdb in /usr/lib/postgresql/*/bin; Debian package `postgresql`)"


def running_in_ci() -> bool:
    """`CI` set to a true value, as CI services (and our `.ci/run`'s caller) set it."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def postgres_bin_path() -> str:
    """Every /usr/lib/postgresql/<version>/bin, as a PATH string, for `require_tool("initdb", ...)`."""
    return os.pathsep.join(str(d) for d in sorted(Path("/usr/lib/postgresql").glob("*/bin")))


def require_tool(name: str, reason: str, *, alternatives: tuple[str, ...] = (), path: str | None = None) -> str:
    """The path of program `name` (or of the first of `alternatives` found), looked up in `path`
    (default: $PATH). Where none is found the calling test is skipped with `reason`, or, under
    CI, fails with it: CI installs these programs first, so a missing one is a broken run."""
    __tracebackhide__ = True  # the skip or failure points at the caller, not at this file
    for candidate in (name, *alternatives):
        found = shutil.which(candidate, path=path)
        if found is not None:
            return found
    if running_in_ci():
        pytest.fail(f"{reason} (CI=true: a missing tool fails instead of skipping)", pytrace=False)
    pytest.skip(reason)


# ---------------------------------------------------------------------- the quick layer

# Tests in these folders start real servers and the daemon, or search for minutes.
SLOW_DIRS = ("faults", "proof", "load", "fuzz")
# A test that uses one of these (directly or through another fixture) runs against a real server.
SLOW_FIXTURES = frozenset(
    {
        "redis_server",  # this file
        "redis_up",
        "postgres_server",
        "postgres_up",
        "redis_with_password",  # test_check_redis.py
        "redis_tls",
        "secured_redis",  # test_no_secrets.py
        "secured_postgres",
        "image",  # test_container.py: a fresh venv with the package installed
    }
)
# Modules whose tests run the CLI as a process, one Python start-up per command.
SLOW_MODULES = frozenset({"test_cli.py", "test_oncall.py", "test_e2e_logfile_node.py"})
# Tests that start the daemon or a crashing child process, or generate large logs.
SLOW_TESTS = frozenset(
    {
        "test_cli_backend.py::test_the_same_scenario_prints_the_same_through_both_backends",
        "test_cli_backend.py::test_both_backends_read_the_same_values_from_one_state_file",
        "test_systemd.py::test_daemon_notifies_ready_watchdog_and_stopping",
        "test_incidents.py::test_kill_9_mid_transaction_leaves_a_consistent_file",
        "test_check_logfile.py::test_memory_does_not_grow_with_the_backlog",
        "test_check_logfile.py::test_fast_and_general_agree_on_generated_logs_with_tricky_lines",
    }
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(item.path).resolve()
        if TESTS not in path.parents:
            continue
        rel = path.relative_to(TESTS)
        name = f"{rel.as_posix()}::{item.name.partition('[')[0]}"
        if (
            rel.parts[0] in SLOW_DIRS
            or rel.as_posix() in SLOW_MODULES
            or name in SLOW_TESTS
            or SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        ):
            item.add_marker(pytest.mark.slow)


# ---------------------------------------------------------------------- servers


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    require_tool("redis-server", REDIS_MISSING)
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
    require_tool("initdb", POSTGRES_MISSING, path=postgres_bin_path())
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
