"""The state file's schema: numbered migrations owned by `monitor.statedb`.

`tests/fixtures/state_v0.sql` is a state file written by the release before numbered
migrations (per-component `schema_version`, no migrations table). Restored and opened, it
must keep every incident, timeline entry, silence, outbox row and replay clock, as read
through the same APIs the daemon and the CLI use.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from structlog.testing import capture_logs

from checks.redis import Config as RedisConfig
from checks.redis import RedisCheck
from monitor import statedb
from monitor.delivery.outbox import Outbox, list_rows
from monitor.incidents.lifecycle import Incidents
from monitor.incidents.records import parse_iso
from monitor.incidents.silences import Silences
from monitor.model import CheckContext, Notification, Sample
from monitor.statedb import (
    DB_NAME,
    LATEST,
    MIGRATIONS,
    Migration,
    SchemaError,
    SqliteState,
    applied_version,
    check_migrations,
    open_db,
    statements,
)
from tests.incident_helpers import T0, alert, at, config, fired
from tests.servers import RedisServer

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = Path(__file__).parent / "fixtures" / "state_v0.sql"
ORDER_KEY = "sf:pe:replay:/event/OrderProvisionRequested__e"
CASE_KEY = "sf:pe:replay:/event/CaseCreated__e"
R0 = T0.timestamp()  # when the fixture's redis check first saw the replay ids


def restore_v0(state_dir: Path) -> Path:
    """The fixture as a state file in `state_dir` (as the previous release left it)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    db_file = state_dir / DB_NAME
    db = sqlite3.connect(db_file)
    db.executescript(FIXTURE.read_text(encoding="utf-8"))
    db.close()
    return db_file


def raw(db_file: Path, sql: str) -> list[tuple[Any, ...]]:
    """Read the file with a plain connection (no migration)."""
    db = sqlite3.connect(db_file)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def all_rows(db_file: Path) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table but the version bookkeeping (column → value), in a fixed order
    whatever the table's column order or keys."""
    tables = raw(
        db_file, "SELECT name FROM sqlite_master WHERE type = 'table' AND name != 'schema_version' ORDER BY name"
    )
    out: dict[str, list[dict[str, Any]]] = {}
    for (t,) in tables:
        names = [n for (n,) in raw(db_file, f"SELECT name FROM pragma_table_info('{t}')")]
        rows = [dict(zip(names, r, strict=True)) for r in raw(db_file, f'SELECT * FROM "{t}"')]
        out[t] = sorted(rows, key=lambda r: repr(sorted(r.items())))
    return out


def schema(db_file: Path) -> dict[str, str]:
    """name → CREATE statement of every table and index but the version bookkeeping."""
    return dict(
        raw(
            db_file,
            "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL"
            " AND name != 'schema_version' AND tbl_name != 'schema_version'",
        )
    )


def versions(db_file: Path) -> list[tuple[Any, ...]]:
    return raw(db_file, "SELECT version, description, applied_at FROM schema_version ORDER BY version")


@pytest.fixture
def v0(tmp_path: Path) -> Path:
    return restore_v0(tmp_path / "state")


@pytest.fixture
def adopted(v0: Path) -> Iterator[sqlite3.Connection]:
    conn = open_db(v0.parent)
    yield conn
    conn.close()


# ---------------------------------------------------------------- a previous release's file


def test_the_fixture_is_a_previous_release_file(v0: Path) -> None:
    assert raw(v0, "SELECT component, version FROM schema_version ORDER BY component") == [
        ("incidents", 1),
        ("outbox", 1),
        ("silences", 1),
    ]
    assert raw(v0, "PRAGMA user_version") == [(0,)]


def test_migration_1_is_exactly_the_previous_release_schema(
    v0: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as m:
        m.setattr(statedb, "MIGRATIONS", MIGRATIONS[:1])
        m.setattr(statedb, "LATEST", 1)
        open_db(tmp_path / "v1").close()
    assert schema(tmp_path / "v1" / DB_NAME) == schema(v0)
    open_db(tmp_path / "fresh").close()
    open_db(v0.parent).close()
    assert schema(v0) == schema(tmp_path / "fresh" / DB_NAME)  # adopted and migrated: as a new file


def test_adopting_keeps_every_row(v0: Path) -> None:
    before = all_rows(v0)
    assert {t: len(r) for t, r in before.items()} == {
        "alert_states": 1,
        "check_state": 2,
        "incident_receivers": 6,
        "incidents": 4,
        "manual_holds": 1,
        "outbox": 12,
        "silences": 2,
        "sqlite_sequence": 4,
        "timeline": 17,
    }
    open_db(v0.parent).close()
    after = all_rows(v0)
    # Migration 3 slims delivered pages and stored alerts (tests/test_statefile.py), moves the
    # other payloads to outbox_payload, and keys the timeline by incident (no id sequence).
    slimmed = {"outbox", "incidents", "outbox_payload", "sqlite_sequence"}
    assert {t: r for t, r in after.items() if t not in slimmed} == {t: r for t, r in before.items() if t not in slimmed}
    assert {t: len(after[t]) for t in ("outbox", "incidents")} == {t: len(before[t]) for t in ("outbox", "incidents")}
    assert after["sqlite_sequence"] == [r for r in before["sqlite_sequence"] if r["name"] != "timeline"]
    undelivered = {r["id"]: r["payload"] for r in before["outbox"] if r["state"] != "delivered"}
    assert {r["id"]: r["payload"] for r in after["outbox_payload"]} == undelivered
    (version, description, applied_at), *later = versions(v0)
    assert version == 1 and [v for v, _, _ in later] == list(range(2, LATEST + 1))
    assert "adopted from the previous release; components: incidents 1, outbox 1, silences 1" in description
    assert parse_iso(applied_at).tzinfo is not None


def test_adopted_incidents_and_timelines_read_as_before(adopted: sqlite3.Connection) -> None:
    inc = Incidents(adopted, config())
    views = {v.id: v for v in inc.list_incidents(open_only=False)}
    assert {i: (v.alertname, v.severity, v.state) for i, v in views.items()} == {
        1: ("RedisDown", "P1", "resolved"),
        2: ("PostgresDown", "P2", "open"),
        3: ("WhmcsDown", "P3", "open"),
        4: ("DiskFull", "P4", "resolved"),
    }
    assert (views[2].acked_by, views[2].acked_at) == ("bob@ops", at(10))
    assert views[3].held == "silence 1 (alertname=WhmcsDown; alice@ops: WHMCS upgrade)"
    assert views[4].resolved_by == "carol@ops"
    assert views[1].receivers == {"oncall": "L1", "chat": "L1"}
    assert views[3].alert.vendor == "whmcs"
    one = inc.get(1)
    assert one is not None
    assert [(e.kind, e.at, e.receiver) for e in one.timeline] == [
        ("detected", at(-1), None),
        ("fired", T0, None),
        ("notified", at(2), "chat"),
        ("notified", at(2), "oncall"),
        ("resolved", at(20), None),
    ]
    two = inc.get(2)
    assert two is not None
    assert [e.kind for e in two.timeline] == ["detected", "fired", "acknowledged", "note", "note"]
    assert sum(len(v.timeline) for v in (inc.get(i) for i in views) if v is not None) == 17
    assert inc.load_alert_states() == '{"v": 2}'
    assert inc.open_counts_by_severity() == {"P1": 0, "P2": 1, "P3": 1, "P4": 0}


def test_adopted_manual_hold_still_holds(adopted: sqlite3.Connection) -> None:
    """DiskFull was resolved by hand while firing: it still does not re-open."""
    inc = Incidents(adopted, config())
    assert inc.update([alert("DiskFull", "P4", check="root")], [], at(30)) == 0
    assert len(inc.list_incidents(open_only=False)) == 4


def test_adopted_silences_read_as_before(adopted: sqlite3.Connection) -> None:
    every = Silences(adopted).find(now=at(30), active_only=False)
    assert [(s.id, dict(s.matchers), s.author, s.comment) for s in every] == [
        (2, {"alertname": ("Old", "Older"), "check": ("x",)}, "dave@ops", "expired long ago"),
        (1, {"alertname": ("WhmcsDown",)}, "alice@ops", "WHMCS upgrade"),
    ]
    (active,) = Silences(adopted).find(now=at(30))
    assert (active.id, active.starts_at, active.ends_at) == (1, at(1), at(120))


def test_adopted_outbox_rows_read_and_deliver(adopted: sqlite3.Connection) -> None:
    rows = list_rows(adopted)
    assert [(r.id, r.receiver, r.kind, r.state, r.attempts) for r in rows] == [
        (1, "oncall", "trigger", "delivered", 1),
        (2, "chat", "trigger", "delivered", 1),
        (3, "oncall", "trigger", "pending", 1),
        (4, "chat", "trigger", "failed", 1),
        (5, "chat", "acknowledge", "failed", 1),
        (6, "oncall", "acknowledge", "pending", 0),
        (7, "chat", "resolve", "pending", 0),
        (8, "oncall", "resolve", "pending", 0),
        (9, "oncall", "trigger", "pending", 0),
        (10, "chat", "trigger", "pending", 0),
        (11, "chat", "resolve", "pending", 0),
        (12, "oncall", "resolve", "pending", 0),
    ]
    assert rows[2].last_error == "503 unavailable" and rows[2].next_attempt_at > at(16)
    assert rows[3].last_error == "400 bad payload" and rows[3].finished_at == at(16)
    assert rows[5].notification.status == "acknowledged" and rows[5].notification.level == "L1"

    class Rx:
        def __init__(self, name: str) -> None:
            self.name = name
            self.got: list[Notification] = []

        async def send(self, notification: Notification) -> None:
            self.got.append(notification)

        async def aclose(self) -> None:
            pass

    now = at(40)

    async def sleep(_: float) -> None:
        pass

    receivers = {"oncall": Rx("oncall"), "chat": Rx("chat")}
    asyncio.run(Outbox(adopted, receivers, now=lambda: now, sleep=sleep, rng=random.Random(1)).drain())
    assert [n.kind for n in receivers["oncall"].got] == ["trigger", "acknowledge", "resolve", "trigger", "resolve"]
    assert [r.state for r in list_rows(adopted)].count("pending") == 0
    assert list_rows(adopted, state="failed", receiver="chat")[0].id == 4


def value(samples: list[Sample], name: str, **labels: str) -> float:
    (found,) = [s.value for s in samples if s.name == name and dict(s.labels) == labels]
    return found


def test_adopted_replay_clocks_keep_the_stall(adopted: sqlite3.Connection, redis_up: RedisServer) -> None:
    """The redis check over the adopted file times the stall from the previous release's clock."""
    assert SqliteState(adopted).load("redis:cache") == {
        ORDER_KEY: {"value": "500", "changed_at": R0},
        CASE_KEY: {"value": "78", "changed_at": R0 + 120},
    }
    with redis.Redis(host="127.0.0.1", port=redis_up.port) as r:
        r.set(ORDER_KEY, "500")
        r.set(CASE_KEY, "78")
    ctx = CheckContext(interval_s=10, timeout_s=2, state=SqliteState(adopted), now=lambda: R0 + 1800)
    check = RedisCheck(RedisConfig.model_validate({"name": "cache", "type": "redis", "url": redis_up.url}), ctx)

    async def collect() -> list[Sample]:
        try:
            return await check.collect()
        finally:
            await check.aclose()

    samples = asyncio.run(collect())
    stalled = "portal_sf_replay_stalled_seconds"
    assert value(samples, stalled, channel="/event/OrderProvisionRequested__e") == 1800
    assert value(samples, stalled, channel="/event/CaseCreated__e") == 1800 - 120


def test_a_partial_previous_file_gets_the_missing_tables(tmp_path: Path) -> None:
    """A file where the previous release only wrote check state (no version table at all)."""
    state = tmp_path / "state"
    state.mkdir()
    db = sqlite3.connect(state / DB_NAME)
    db.execute(
        "CREATE TABLE check_state ( namespace TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,"
        " PRIMARY KEY (namespace, key))"
    )
    db.execute("INSERT INTO check_state VALUES ('redis:cache', 'k', ?)", (b'{"value":"1","changed_at":5.0}',))
    db.commit()
    db.close()
    conn = open_db(state)
    assert SqliteState(conn).load("redis:cache") == {"k": {"value": "1", "changed_at": 5.0}}
    assert Incidents(conn, config()).update([a := alert()], [fired(a)], T0) == 2
    conn.close()
    assert schema(state / DB_NAME) == schema(_fresh(tmp_path / "fresh"))
    assert "components: none recorded" in versions(state / DB_NAME)[0][1]


def test_a_previous_file_with_other_columns_is_not_adopted(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    db = sqlite3.connect(state / DB_NAME)
    db.execute("CREATE TABLE outbox (id INTEGER PRIMARY KEY, receiver TEXT)")
    db.commit()
    db.close()
    with pytest.raises(SchemaError, match=r"state.*portal-monitor\.db: table outbox has columns"):
        open_db(state)
    assert raw(state / DB_NAME, "SELECT name FROM sqlite_master") == [("outbox",)]  # untouched


def test_a_previous_file_with_a_newer_component_is_refused(v0: Path) -> None:
    db = sqlite3.connect(v0)
    db.execute("UPDATE schema_version SET version = 2 WHERE component = 'outbox'")
    db.commit()
    db.close()
    with pytest.raises(SchemaError, match="per-component schema versions \\(outbox 2\\)"):
        open_db(v0.parent)


# ---------------------------------------------------------------- new files, re-opening, newer files


def _fresh(state: Path) -> Path:
    open_db(state).close()
    return state / DB_NAME


def test_a_new_file_gets_the_latest_schema(tmp_path: Path) -> None:
    db_file = _fresh(tmp_path)
    assert [(v, d) for v, d, _ in versions(db_file)] == [(m.version, m.description) for m in MIGRATIONS]
    tables = {n for (n,) in raw(db_file, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables >= {
        "schema_version",
        "check_state",
        "incidents",
        "incident_receivers",
        "manual_holds",
        "alert_states",
        "timeline",
        "outbox",
        "silences",
    }
    assert raw(db_file, "PRAGMA journal_mode") == [("wal",)]


def test_the_pragmas_are_set(tmp_path: Path) -> None:
    conn = open_db(tmp_path)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert conn.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
    assert conn.execute("PRAGMA foreign_keys").fetchone() == (1,)
    assert conn.isolation_level is None and not conn.in_transaction
    assert applied_version(conn) == LATEST
    conn.close()


@pytest.mark.parametrize("start", ["fresh", "previous release"])
def test_reopening_changes_nothing(start: str, tmp_path: Path) -> None:
    state = tmp_path / "state"
    db_file = restore_v0(state) if start == "previous release" else _fresh(state)
    conn = open_db(state)
    Incidents(conn, config()).update([a := alert("NewOne", "P3")], [fired(a, at(50))], at(50))
    conn.close()
    rows, tables, applied = all_rows(db_file), schema(db_file), versions(db_file)
    for _ in range(2):
        open_db(state).close()
    assert (all_rows(db_file), schema(db_file), versions(db_file)) == (rows, tables, applied)


def test_a_newer_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    db_file = _fresh(tmp_path)
    db = sqlite3.connect(db_file)
    db.execute(
        "INSERT INTO schema_version VALUES (?, 'from the future', '2030-01-01T00:00:00.000000+00:00')", (LATEST + 1,)
    )
    db.commit()
    db.close()
    before = all_rows(db_file), versions(db_file)
    with pytest.raises(SchemaError) as refused:
        open_db(tmp_path)
    message = str(refused.value)
    assert str(db_file) in message
    assert f"schema version {LATEST + 1}" in message and f"versions up to {LATEST}" in message
    assert isinstance(refused.value, OSError)  # `portal-monitor run` prints it in one line
    assert (all_rows(db_file), versions(db_file)) == before


# ---------------------------------------------------------------- the migration list


def test_the_migration_list_is_contiguous() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert LATEST == MIGRATIONS[-1].version == len(MIGRATIONS)
    for m in MIGRATIONS:
        assert m.description and statements(m.script)
        assert all(sqlite3.complete_statement(s) for s in statements(m.script))
    with pytest.raises(ValueError, match="migration 3 where 2 was expected"):
        check_migrations([MIGRATIONS[0], Migration(3, "gap", "SELECT 1;")])
    with pytest.raises(ValueError, match="ends inside a statement"):
        check_migrations([Migration(1, "unterminated", "CREATE TABLE t (a)")])


def test_statements_split_on_statement_ends_only() -> None:
    script = (
        "-- a comment; with a semicolon\nCREATE TABLE t (a TEXT DEFAULT 'x;y');\n\n"
        "INSERT INTO t VALUES ('1;2');\n-- end\n"
    )
    assert statements(script) == [
        "-- a comment; with a semicolon\nCREATE TABLE t (a TEXT DEFAULT 'x;y');",
        "INSERT INTO t VALUES ('1;2');",
    ]


def test_a_later_migration_applies_in_one_transaction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db_file = _fresh(tmp_path)
    n = LATEST + 1
    broken = Migration(
        n, "add a table, then fail", "CREATE TABLE extra (a INTEGER);\nINSERT INTO nowhere VALUES (1);\n"
    )
    monkeypatch.setattr(statedb, "MIGRATIONS", (*MIGRATIONS, broken))
    monkeypatch.setattr(statedb, "LATEST", n)
    with pytest.raises(OSError, match="no such table: nowhere"):
        open_db(tmp_path)
    assert [v for v, _, _ in versions(db_file)] == list(range(1, n))
    assert raw(db_file, "SELECT name FROM sqlite_master WHERE name = 'extra'") == []

    good = Migration(n, "add a table", "CREATE TABLE extra (a INTEGER);\nINSERT INTO extra VALUES (1);\n")
    monkeypatch.setattr(statedb, "MIGRATIONS", (*MIGRATIONS, good))
    conn = open_db(tmp_path)
    assert conn.execute("SELECT a FROM extra").fetchall() == [(1,)]
    conn.close()
    assert [(v, d) for v, d, _ in versions(db_file)] == [
        *((m.version, m.description) for m in MIGRATIONS),
        (n, "add a table"),
    ]
    applied = [parse_iso(t) for _, _, t in versions(db_file)]
    assert applied[0] <= applied[1]


def test_processes_opening_a_new_file_at_once_migrate_it_once(tmp_path: Path) -> None:
    """The daemon and the CLI may start together: each step re-reads the version under the lock."""
    code = "import sys; from monitor.statedb import open_db; open_db(sys.argv[1]).close()"
    children = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT) for _ in range(4)]
    assert [c.wait(timeout=60) for c in children] == [0, 0, 0, 0]
    assert [v for v, _, _ in versions(tmp_path / DB_NAME)] == [m.version for m in MIGRATIONS]


# ---------------------------------------------------------------- migration 2: incremental auto-vacuum


def test_a_previous_release_file_gets_incremental_auto_vacuum_once(v0: Path) -> None:
    """auto_vacuum only changes on an existing file by a VACUUM: migration 2 runs one (outside
    its transaction), keeps every row, and later opens do not run it again."""
    assert raw(v0, "PRAGMA auto_vacuum") == [(0,)]  # NONE, as the previous release made it
    before = all_rows(v0)
    open_db(v0.parent).close()
    assert raw(v0, "PRAGMA auto_vacuum") == [(2,)]  # INCREMENTAL
    counts = {t: len(r) for t, r in all_rows(v0).items() if t not in ("outbox_payload", "sqlite_sequence")}
    assert counts == {t: len(r) for t, r in before.items() if t != "sqlite_sequence"}  # every row kept
    assert [(v, d) for v, d, _ in versions(v0)][1] == (2, "incremental auto-vacuum and age indexes, for retention")
    with capture_logs() as logs:
        open_db(v0.parent).close()
    assert [e for e in logs if e["event"] == "state_db_migrated"] == []


def test_a_new_file_has_incremental_auto_vacuum(tmp_path: Path) -> None:
    open_db(tmp_path).close()
    assert raw(tmp_path / DB_NAME, "PRAGMA auto_vacuum") == [(2,)]
