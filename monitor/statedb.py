"""The daemon's one SQLite file (WAL) under `state_dir`, and the one owner of its schema.

`open_db()` opens the file and brings it to the latest schema with `MIGRATIONS`: numbered SQL
scripts, each applied in its own transaction and recorded in `schema_version` (version,
description, applied_at). Every other module (the checks' state below, incidents, silences,
the outbox) only reads and writes rows on the connection it is given, so an incident change
and its notifications still commit in one transaction. A schema change is a new migration
appended here, never a CREATE elsewhere.

- A file written by a newer portal-monitor (a version this one does not know) is refused:
  this release cannot know what the newer one changed, and writing to it could lose pages.
- A file written by the release before numbered migrations (the same tables, and a
  `schema_version (component, version)` table with incidents, outbox and silences at 1) is
  adopted as version 1: the tables it lacks are created, no row is touched.
- Two processes opening the file at once (the daemon and the CLI) do not both migrate: each
  step re-reads the version under the write lock (`BEGIN IMMEDIATE`).

The daemon never touches the file from its event loop: `Database` owns one writer thread (the
connection `open_db` returned, every write and the reads inside a transaction) and one reader
thread (a second, read-only connection for the API and the status page). `await db.write(fn)`
runs `fn` on the writer, in submission order; a write that meets another process's lock (the
CLI's `BEGIN IMMEDIATE`) waits there, under a long busy timeout, while the loop keeps running
the checks, /metrics and the watchdog. In WAL mode a reader never waits for a writer.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import orjson
import structlog

from monitor.clock import utc_now

DB_NAME = "portal-monitor.db"
BUSY_TIMEOUT_S = 5.0  # the CLI: a person waits at most this for the daemon's write
DAEMON_BUSY_TIMEOUT_S = 60.0  # the daemon's writer thread: waiting there stalls nothing else

T = TypeVar("T")

log = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered step of the schema: an SQL script, applied in one transaction.

    `before`: statements SQLite cannot run inside a transaction (`VACUUM`), run first, outside
    it; they must be harmless to repeat (a crash before the version is recorded runs them again).
    `after`: statements run once the step has committed (`PRAGMA incremental_vacuum`, which hands
    the pages a rebuild freed back to the file system); a crash before them only leaves free
    pages for retention's next pass."""

    version: int
    description: str
    script: str
    before: tuple[str, ...] = ()
    after: tuple[str, ...] = ()


class SchemaError(OSError):
    """The state file's schema is not one this release can use (newer, or not ours)."""


# Version 1 is the schema of the release before numbered migrations, statement for statement
# (so a file it wrote and a new file have the same tables, and adopting one is a no-op).
# `IF NOT EXISTS` lets the adoption create only what such a file lacks.
_V1 = (
    ";\n".join(
        (
            # The checks' durable key/values (the redis replay ids' last change).
            "CREATE TABLE IF NOT EXISTS check_state ("
            " namespace TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,"
            " PRIMARY KEY (namespace, key))",
            # Incidents: one open incident per dedup key.
            "CREATE TABLE IF NOT EXISTS incidents ("
            " id INTEGER PRIMARY KEY AUTOINCREMENT, dedup_key TEXT NOT NULL, alertname TEXT NOT NULL,"
            " severity TEXT NOT NULL, vendor TEXT, alert TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'open',"
            " detected_at TEXT NOT NULL, fired_at TEXT NOT NULL, acked_at TEXT, acked_by TEXT,"
            " resolved_at TEXT, resolved_by TEXT, held TEXT NOT NULL DEFAULT '')",
            "CREATE UNIQUE INDEX IF NOT EXISTS incidents_one_open ON incidents (dedup_key) WHERE state = 'open'",
            # Who got a trigger, at which level, and when they last heard (re-notify cadence).
            "CREATE TABLE IF NOT EXISTS incident_receivers ("
            " incident_id INTEGER NOT NULL REFERENCES incidents (id), level TEXT NOT NULL, receiver TEXT NOT NULL,"
            " triggered_at TEXT NOT NULL, last_sent_at TEXT NOT NULL, PRIMARY KEY (incident_id, level, receiver))",
            # Keys resolved by hand while firing: not re-opened until the alert has cleared once.
            "CREATE TABLE IF NOT EXISTS manual_holds (dedup_key TEXT PRIMARY KEY, incident_id INTEGER NOT NULL,"
            " since TEXT NOT NULL)",
            # The rule engine's `for` timers (AlertStates JSON), saved with the incidents.
            "CREATE TABLE IF NOT EXISTS alert_states (id INTEGER PRIMARY KEY CHECK (id = 1), json TEXT NOT NULL,"
            " saved_at TEXT NOT NULL)",
            # Each incident's history.
            "CREATE TABLE IF NOT EXISTS timeline ("
            " id INTEGER PRIMARY KEY AUTOINCREMENT, incident_id INTEGER NOT NULL, at TEXT NOT NULL,"
            " kind TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '', receiver TEXT, level TEXT)",
            "CREATE INDEX IF NOT EXISTS timeline_incident ON timeline (incident_id, id)",
            # The durable notification queue.
            "CREATE TABLE IF NOT EXISTS outbox ("
            " id INTEGER PRIMARY KEY AUTOINCREMENT, receiver TEXT NOT NULL, kind TEXT NOT NULL,"
            " incident_id INTEGER NOT NULL, dedup_key TEXT NOT NULL, payload TEXT NOT NULL,"
            " created_at TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at TEXT NOT NULL,"
            " last_error TEXT NOT NULL DEFAULT '', state TEXT NOT NULL DEFAULT 'pending',"
            " finished_at TEXT)",
            "CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (state, receiver, id)",
            "CREATE INDEX IF NOT EXISTS outbox_incident ON outbox (incident_id)",
            # Silences: matcher-based mutes for a time range.
            "CREATE TABLE IF NOT EXISTS silences (id INTEGER PRIMARY KEY AUTOINCREMENT,"
            " matchers TEXT NOT NULL, starts_at TEXT NOT NULL, ends_at TEXT NOT NULL,"
            " author TEXT NOT NULL, comment TEXT NOT NULL, created_at TEXT NOT NULL)",
        )
    )
    + ";\n"
)

# Version 3 rebuilds the outbox (its payloads move to outbox_payload, kept while a row is not
# delivered; dedup_key and next_attempt_at NULL once it is), the timeline and
# incident_receivers (WITHOUT ROWID, keyed by incident).
_V3 = (
    ";\n".join(
        (
            "CREATE TABLE outbox_v3 ("
            " id INTEGER PRIMARY KEY AUTOINCREMENT, receiver TEXT NOT NULL, kind TEXT NOT NULL,"
            " incident_id INTEGER NOT NULL, level TEXT NOT NULL DEFAULT '', dedup_key TEXT,"
            " created_at TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at TEXT,"
            " last_error TEXT NOT NULL DEFAULT '', state TEXT NOT NULL DEFAULT 'pending',"
            " finished_at TEXT)",
            "INSERT INTO outbox_v3 (id, receiver, kind, incident_id, level, dedup_key, created_at, attempts,"
            " next_attempt_at, last_error, state, finished_at)"
            " SELECT id, receiver, kind, incident_id, coalesce(json_extract(payload, '$.level'), ''),"
            " CASE WHEN state = 'delivered' THEN NULL ELSE dedup_key END,"
            " created_at, attempts,"
            " CASE WHEN state = 'delivered' THEN NULL ELSE next_attempt_at END,"
            " last_error, state, finished_at FROM outbox ORDER BY id",
            # The notification to send, by outbox id, while the row is not delivered: kept apart
            # so the outbox's own pages hold only small rows (a payload dropped from inside a
            # row would leave its page mostly empty).
            "CREATE TABLE outbox_payload (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)",
            "INSERT INTO outbox_payload (id, payload) SELECT id, payload FROM outbox WHERE state != 'delivered'",
            # An id a pruned row had is never handed out again (the receivers' logs name ids).
            "INSERT INTO sqlite_sequence (name, seq) SELECT 'outbox_v3', 0"
            " WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'outbox_v3')",
            "UPDATE sqlite_sequence SET seq = max(seq,"
            " coalesce((SELECT s.seq FROM sqlite_sequence s WHERE s.name = 'outbox'), 0)) WHERE name = 'outbox_v3'",
            "DROP TABLE outbox",
            "ALTER TABLE outbox_v3 RENAME TO outbox",
            # The queue is the pending rows: the index holds only them.
            "CREATE INDEX outbox_pending ON outbox (receiver, id) WHERE state = 'pending'",
            "CREATE INDEX outbox_incident ON outbox (incident_id)",
            "CREATE TABLE timeline_v3 ("
            " incident_id INTEGER NOT NULL, id INTEGER NOT NULL, at TEXT NOT NULL,"
            " kind TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '', receiver TEXT, level TEXT,"
            " PRIMARY KEY (incident_id, id)) WITHOUT ROWID",
            "INSERT INTO timeline_v3 (incident_id, id, at, kind, detail, receiver, level)"
            " SELECT incident_id, id, at, kind, detail, receiver, level FROM timeline",
            "DROP TABLE timeline",
            "ALTER TABLE timeline_v3 RENAME TO timeline",
            "CREATE TABLE incident_receivers_v3 ("
            " incident_id INTEGER NOT NULL REFERENCES incidents (id), level TEXT NOT NULL, receiver TEXT NOT NULL,"
            " triggered_at TEXT NOT NULL, last_sent_at TEXT NOT NULL,"
            " PRIMARY KEY (incident_id, level, receiver)) WITHOUT ROWID",
            "INSERT INTO incident_receivers_v3 SELECT incident_id, level, receiver, triggered_at, last_sent_at"
            " FROM incident_receivers",
            "DROP TABLE incident_receivers",
            "ALTER TABLE incident_receivers_v3 RENAME TO incident_receivers",
            # The status page's open incidents, newest first, without reading the resolved ones.
            "CREATE INDEX incidents_open ON incidents (id) WHERE state = 'open'",
            "UPDATE incidents SET alert = json_remove(alert, '$.name') WHERE json_extract(alert, '$.name') = alertname",
            "UPDATE incidents SET alert = json_remove(alert, '$.severity')"
            " WHERE json_extract(alert, '$.severity') = severity",
            "UPDATE incidents SET alert = json_remove(alert, '$.vendor')"
            " WHERE json_type(alert, '$.vendor') IS NOT NULL AND json_extract(alert, '$.vendor') IS vendor",
            "UPDATE incidents SET alert = json_remove(alert, '$.fingerprint')"
            " WHERE json_extract(alert, '$.fingerprint') = dedup_key",
        )
    )
    + ";\n"
)

# Append only: a released migration never changes (files in the field already ran it).
MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "check state, incidents, timeline, silences, outbox, rule engine state", _V1),
    # Retention deletes old rows; with incremental auto-vacuum the freed pages can be handed back
    # to the file system a few at a time (`PRAGMA incremental_vacuum`). An existing file only
    # changes its auto_vacuum mode by a VACUUM (a rewrite of the file, once).
    Migration(
        2,
        "incremental auto-vacuum and age indexes, for retention",
        # What retention looks up: delivered rows and resolved incidents by age.
        "CREATE INDEX IF NOT EXISTS outbox_delivered ON outbox (finished_at) WHERE state = 'delivered';\n"
        "CREATE INDEX IF NOT EXISTS incidents_resolved ON incidents (resolved_at) WHERE state = 'resolved';\n",
        before=("PRAGMA auto_vacuum = INCREMENTAL", "VACUUM"),
    ),
    # A delivered page keeps what the incident's record shows (receiver, kind, level, attempts,
    # when queued and delivered; the timeline has its "notified" entry) and drops what only a send
    # needs: its payload (the notification, which repeats the alert; in outbox_payload until
    # then), dedup key and next attempt time. Rows still to deliver, failed and expired keep
    # everything.
    # The stored alert of an incident leaves out what its own columns say (name, severity,
    # vendor, fingerprint = dedup_key), where they agree. Timeline and receivers are keyed by
    # incident (no rowid, no second index). Outbox, timeline and receivers are rebuilt, so the
    # file is compact afterwards; the outbox keeps its id sequence.
    Migration(
        3,
        "slim delivered pages, compact alerts, timeline and receivers keyed by incident",
        _V3,
        after=("PRAGMA incremental_vacuum",),
    ),
)

_SCHEMA_VERSION_DDL = (
    "CREATE TABLE IF NOT EXISTS schema_version ("
    " version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL)"
)


def check_migrations(migrations: Sequence[Migration]) -> None:
    """Refuse a list that is not 1, 2, 3, ... in order, or a script that does not parse into
    complete statements (checked at import, so a bad list never reaches a state file)."""
    for expected, m in enumerate(migrations, start=1):
        if m.version != expected:
            raise ValueError(f"migration {m.version} where {expected} was expected: versions must be 1, 2, 3, ...")
        statements(m.script)


def statements(script: str) -> list[str]:
    """The statements of an SQL script, one per `execute()` (`executescript()` would commit
    the migration's transaction before running it)."""
    out: list[str] = []
    buf = ""
    pieces = script.split(";")
    for piece in pieces[:-1]:
        buf += piece + ";"
        if sqlite3.complete_statement(buf):  # not a `;` inside a string, comment or trigger
            if buf.strip(" \t\r\n;"):
                out.append(buf.strip())
            buf = ""
    tail = buf + pieces[-1]
    if any(line.strip() and not line.strip().startswith("--") for line in tail.splitlines()):
        raise ValueError(f"migration script ends inside a statement: {tail.strip()[:80]!r}")
    return out


check_migrations(MIGRATIONS)
LATEST = MIGRATIONS[-1].version


def open_db(state_dir: str | Path, *, busy_timeout_s: float = BUSY_TIMEOUT_S) -> sqlite3.Connection:
    """Open (creating) the state database with WAL and a busy timeout, at the latest schema.

    `isolation_level=None` leaves transactions to the callers (`BEGIN IMMEDIATE ... COMMIT`).
    Raises OSError (SchemaError for a file this release must not use) with the file's name.
    """
    path = Path(state_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"state_dir {str(path)!r}: cannot create it: {e.strerror or e}") from e
    db_file = path / DB_NAME
    try:
        conn = sqlite3.connect(db_file, isolation_level=None, check_same_thread=False, timeout=busy_timeout_s)
    except sqlite3.Error as e:
        raise OSError(f"{db_file}: cannot open the state database: {e}") from e
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        migrate(conn, str(db_file))
    except sqlite3.Error as e:
        conn.close()
        raise OSError(f"{db_file}: cannot open the state database: {e}") from e
    except BaseException:
        conn.close()
        raise
    return conn


def applied_version(conn: sqlite3.Connection) -> int | None:
    """The applied version: 0 for an empty file, None for a file of the release before
    numbered migrations (tables, but not our `schema_version`)."""
    tables = {
        name
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND substr(name, 1, 7) != 'sqlite_'"
        )
    }
    if "schema_version" in tables and "component" not in _columns(conn, "schema_version"):
        version: int = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]
        return version
    return None if tables else 0


def migrate(conn: sqlite3.Connection, where: str = "state database") -> int:
    """Apply the pending migrations, one transaction each; return the version reached.

    `where` names the file in errors. Refuses (SchemaError) a newer file, and a previous
    release's file whose tables do not have the columns version 1 expects."""
    if applied_version(conn) == LATEST:
        return LATEST  # the usual open: no write lock taken
    while True:
        seen = applied_version(conn)
        if seen is not None and seen < LATEST:
            for stmt in MIGRATIONS[seen].before:  # outside the transaction, as VACUUM must be
                conn.execute(stmt)
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = applied_version(conn)  # again, under the lock: another process may have migrated
            if current is None:
                step: Migration | None = _adopt(conn, where)
            elif current > LATEST:
                raise SchemaError(
                    f"{where}: the state database is schema version {current}, written by a newer "
                    f"portal-monitor; this one knows versions up to {LATEST}. Run the newer release "
                    "(or move the file away to start afresh, losing its incidents, silences and queue)"
                )
            elif current == LATEST:
                step = None
            else:
                step = MIGRATIONS[current]  # version current + 1: the list is contiguous from 1
                _apply(conn, step, step.description)
        except BaseException:
            if conn.in_transaction:  # SQLite may already have rolled back (a full disk, say)
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        if step is None:
            return LATEST
        for stmt in step.after:
            conn.executescript(stmt + ";")  # executescript steps a pragma to its end
        log.info("state_db_migrated", file=where, version=step.version, description=step.description)


def _apply(conn: sqlite3.Connection, m: Migration, description: str) -> None:
    conn.execute(_SCHEMA_VERSION_DDL)
    for stmt in statements(m.script):
        conn.execute(stmt)
    conn.execute(
        "INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)",
        (m.version, description, utc_now().isoformat(timespec="microseconds")),
    )


def _adopt(conn: sqlite3.Connection, where: str) -> Migration:
    """Take a file of the release before numbered migrations as version 1 (inside the caller's
    transaction): check its tables, replace its per-component version table, add what is missing."""
    first = MIGRATIONS[0]
    old: dict[str, int] = {}
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'").fetchone():
        old = {str(c): int(v) for c, v in conn.execute("SELECT component, version FROM schema_version")}
        newer = {c: v for c, v in old.items() if v > first.version}
        if newer:
            found = ", ".join(f"{c} {v}" for c, v in sorted(newer.items()))
            raise SchemaError(
                f"{where}: the state database has per-component schema versions ({found}) this "
                f"portal-monitor does not know (it knows schema versions up to {LATEST})"
            )
    reference = sqlite3.connect(":memory:")
    try:
        for stmt in statements(first.script):
            reference.execute(stmt)
        for (table,) in reference.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name != 'sqlite_sequence' ORDER BY name"
        ):
            have = _columns(conn, table)
            if have and have != _columns(reference, table):
                raise SchemaError(
                    f"{where}: table {table} has columns {list(have)}, not those of schema version 1 "
                    f"({list(_columns(reference, table))}); not adopting this file"
                )
    finally:
        reference.close()
    conn.execute("DROP TABLE IF EXISTS schema_version")
    components = ", ".join(f"{c} {v}" for c, v in sorted(old.items())) or "none recorded"
    _apply(conn, first, f"{first.description} (adopted from the previous release; components: {components})")
    log.info("state_db_adopted", file=where, components=old)
    return first


def _columns(conn: sqlite3.Connection, table: str) -> dict[str, tuple[Any, ...]]:
    """name → (type, notnull, default, pk) of `table` (empty when it does not exist)."""
    return {r[1]: (r[2], r[3], r[4], r[5]) for r in conn.execute("SELECT * FROM pragma_table_info(?)", (table,))}


class SqliteState:
    """`monitor.model.StateStore` over the `check_state` table.

    With `db` (the daemon), the table is read once here and kept in memory: `load` answers from
    memory and `save`/`delete` are queued on the writer thread, so a check never waits for the
    file. Without it, every call goes to `conn` directly."""

    def __init__(self, conn: sqlite3.Connection, db: Database | None = None) -> None:
        self._conn = conn
        self._db = db
        self._mem: dict[str, dict[str, Any]] | None = None
        if db is not None:
            self._mem = {}
            for namespace, key, value in conn.execute("SELECT namespace, key, value FROM check_state"):
                self._mem.setdefault(namespace, {})[key] = orjson.loads(value)

    def load(self, namespace: str) -> dict[str, Any]:
        if self._mem is not None:
            copy: dict[str, Any] = orjson.loads(orjson.dumps(self._mem.get(namespace, {})))  # as from the file
            return copy
        rows = self._conn.execute("SELECT key, value FROM check_state WHERE namespace = ?", (namespace,))
        return {key: orjson.loads(value) for key, value in rows}

    def save(self, namespace: str, key: str, value: Any) -> None:
        blob = orjson.dumps(value)
        if self._mem is not None and self._db is not None:
            self._mem.setdefault(namespace, {})[key] = orjson.loads(blob)
            self._db.submit(lambda: self._save(namespace, key, blob), f"check state {namespace} {key}")
        else:
            self._save(namespace, key, blob)

    def _save(self, namespace: str, key: str, blob: bytes) -> None:
        self._conn.execute(
            "INSERT INTO check_state (namespace, key, value) VALUES (?, ?, ?)"
            " ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value",
            (namespace, key, blob),
        )

    def delete(self, namespace: str, key: str) -> None:
        if self._mem is not None and self._db is not None:
            self._mem.get(namespace, {}).pop(key, None)
            self._db.submit(lambda: self._delete(namespace, key), f"check state {namespace} {key}")
        else:
            self._delete(namespace, key)

    def _delete(self, namespace: str, key: str) -> None:
        self._conn.execute("DELETE FROM check_state WHERE namespace = ? AND key = ?", (namespace, key))


# ---------------------------------------------------------------------- off the event loop


class Runner(Protocol):
    """Runs a function that uses the state database and hands back its result: `Database.write`
    in the daemon, `inline` (on the caller's thread) in tests and the CLI."""

    def __call__(self, fn: Callable[[], T], /) -> Awaitable[T]: ...


async def inline(fn: Callable[[], T]) -> T:
    """A `Runner` that runs `fn` right here: for single-threaded use (tests, one-shot commands)."""
    return fn()


class Database:
    """The daemon's state file: the writer connection on one thread, a reader on another.

    `conn` is the writer connection: objects built on it (incidents, outbox, check state) are
    only used through `write()` once the daemon runs; objects built on `reader` (the read-only
    connection) only through `read()`. Both threads run one job at a time in submission order; `aclose()`
    finishes the queued jobs and closes both connections."""

    def __init__(self, state_dir: str | Path, *, busy_timeout_s: float = DAEMON_BUSY_TIMEOUT_S) -> None:
        self.conn = open_db(state_dir, busy_timeout_s=busy_timeout_s)
        self.path = Path(state_dir) / DB_NAME
        try:
            self.reader = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode=ro",
                uri=True,
                isolation_level=None,
                check_same_thread=False,
                timeout=busy_timeout_s,
            )
        except sqlite3.Error as e:
            self.conn.close()
            raise OSError(f"{self.path}: cannot open the state database for reading: {e}") from e
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="statedb-write")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="statedb-read")
        self._closed = False

    async def write(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the writer thread (in order with every other write); its result or error."""
        return await asyncio.wrap_future(self._writer.submit(fn))

    async def read(self, fn: Callable[[], T]) -> T:
        """Run `fn` (which uses `reader`) on the reader thread: committed data, never waiting
        for a writer."""
        return await asyncio.wrap_future(self._reader.submit(fn))

    def submit(self, fn: Callable[[], object], what: str) -> None:
        """Queue a write nobody waits for (a check's saved state); a failure is logged with `what`."""
        if self._closed:
            log.error("state_db_write_after_close", what=what)
            return
        self._writer.submit(fn).add_done_callback(lambda f: _log_failure(f, what))

    async def aclose(self) -> None:
        """Finish the queued writes, then close both connections (idempotent)."""
        if self._closed:
            return
        self._closed = True
        await asyncio.wrap_future(self._writer.submit(self.conn.close))
        await asyncio.wrap_future(self._reader.submit(self.reader.close))
        self._writer.shutdown(wait=False)
        self._reader.shutdown(wait=False)


def _log_failure(f: Future[object], what: str) -> None:
    e = f.exception()
    if e is not None:
        log.error("state_db_write_failed", what=what, error=f"{type(e).__name__}: {e}")
