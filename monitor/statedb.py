"""The daemon's one SQLite file (WAL) under `state_dir`: check state, incidents, the outbox.

This module opens the file and owns the small key/value table the checks use (the replay
ids' last change). `incidents.py` and `outbox.py` create their own tables on the same
connection, so an incident change and its notifications commit in one transaction.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import orjson

DB_NAME = "portal-monitor.db"


def open_db(state_dir: str | Path) -> sqlite3.Connection:
    """Open (creating) the state database with WAL and a busy timeout.

    `isolation_level=None` leaves transactions to the callers (`BEGIN IMMEDIATE ... COMMIT`).
    """
    path = Path(state_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"state_dir {str(path)!r}: cannot create it: {e.strerror or e}") from e
    db_file = path / DB_NAME
    try:
        conn = sqlite3.connect(db_file, isolation_level=None, check_same_thread=False, timeout=5.0)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
    except sqlite3.Error as e:
        raise OSError(f"{db_file}: cannot open the state database: {e}") from e
    return conn


class SqliteState:
    """`monitor.model.StateStore` over the `check_state` table."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        conn.execute(
            "CREATE TABLE IF NOT EXISTS check_state ("
            " namespace TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,"
            " PRIMARY KEY (namespace, key))"
        )

    def load(self, namespace: str) -> dict[str, Any]:
        rows = self._conn.execute("SELECT key, value FROM check_state WHERE namespace = ?", (namespace,))
        return {key: orjson.loads(value) for key, value in rows}

    def save(self, namespace: str, key: str, value: Any) -> None:
        self._conn.execute(
            "INSERT INTO check_state (namespace, key, value) VALUES (?, ?, ?)"
            " ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value",
            (namespace, key, orjson.dumps(value)),
        )

    def delete(self, namespace: str, key: str) -> None:
        self._conn.execute("DELETE FROM check_state WHERE namespace = ? AND key = ?", (namespace, key))
