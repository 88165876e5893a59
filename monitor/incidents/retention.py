"""Retention: what is older than `retention` leaves the state file, a small batch at a time.

One `prune()` pass, in one short transaction, deletes at most `batch` of each:
- outbox rows of open incidents delivered more than `retention` ago (an incident open for
  months re-notifies every half hour: its old pages go, the incident and its timeline stay);
- incidents resolved more than `retention` ago, with their timeline, the receivers they reached
  and all their outbox rows (delivered, failed, expired). An incident keeps everything while one
  of its rows is still pending or a manual hold still names it. A resolved incident's delivered
  rows stay with it until it goes (its record stays whole; found through the incident, the
  delivered rows need no index of their own).
Then `PRAGMA incremental_vacuum(vacuum_pages)` hands at most that many free pages back to the
file system (the file has `auto_vacuum = INCREMENTAL`: `monitor.statedb` migration 2), so the
file shrinks with its contents instead of keeping its high-water mark.

`Retention.run()` repeats passes while they come back full (at most `max_passes` in a row,
each its own transaction on the writer thread, so other writes interleave), then waits
`every_s`. Open incidents, acknowledged ones, silences, pending pages and the rule engine's
state are never touched. Time is injected (`now`), so tests move it by argument.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog

from monitor.clock import utc_now
from monitor.incidents.records import iso, transaction
from monitor.model import Sample
from monitor.statedb import Runner, inline

log = structlog.get_logger()

DEFAULT_RETENTION_S = 90 * 86400.0
BATCH = 500  # rows of each kind per pass: a pass holds the write lock for milliseconds
VACUUM_PAGES = 512  # free pages returned per pass (2 MiB at the default 4 KiB page)

METRICS: dict[str, tuple[str, str]] = {
    "portal_monitor_retention_deleted_total": (
        "counter",
        "rows removed by retention, by table (outbox, incidents, timeline, incident_receivers)",
    ),
    "portal_monitor_state_file_bytes": ("gauge", "size of the state file (pages in use and free), last pass"),
}


@dataclass(frozen=True, slots=True)
class Pruned:
    """What one pass removed; `full` when a batch limit was reached (more may be waiting)."""

    outbox: int = 0
    incidents: int = 0
    timeline: int = 0
    incident_receivers: int = 0
    pages_freed: int = 0
    full: bool = False

    def __bool__(self) -> bool:
        return bool(self.outbox or self.incidents or self.timeline or self.incident_receivers or self.pages_freed)


def prune(
    conn: sqlite3.Connection,
    now: datetime,
    retention: timedelta,
    *,
    batch: int = BATCH,
    vacuum_pages: int = VACUUM_PAGES,
) -> Pruned:
    """One bounded pass (see the module docstring)."""
    cutoff = iso(now - retention)
    with transaction(conn):
        outbox = conn.execute(
            "DELETE FROM outbox WHERE id IN (SELECT o.id FROM incidents AS i CROSS JOIN outbox AS o"
            " ON o.incident_id = i.id WHERE i.state = 'open' AND o.state = 'delivered' AND o.finished_at < ?"
            " ORDER BY o.id LIMIT ?)",
            (cutoff, batch),
        ).rowcount  # delivered rows have no payload left
        ids = [
            i
            for (i,) in conn.execute(
                "SELECT id FROM incidents AS i WHERE state = 'resolved' AND resolved_at < ?"
                " AND NOT EXISTS (SELECT 1 FROM outbox AS o WHERE o.incident_id = i.id AND o.state = 'pending')"
                " AND NOT EXISTS (SELECT 1 FROM manual_holds AS h WHERE h.incident_id = i.id)"
                " ORDER BY id LIMIT ?",
                (cutoff, batch),
            )
        ]
        timeline = receivers = 0
        if ids:
            marks = ",".join("?" * len(ids))
            timeline = conn.execute(f"DELETE FROM timeline WHERE incident_id IN ({marks})", ids).rowcount
            receivers = conn.execute(f"DELETE FROM incident_receivers WHERE incident_id IN ({marks})", ids).rowcount
            conn.execute(
                f"DELETE FROM outbox_payload WHERE id IN (SELECT id FROM outbox WHERE incident_id IN ({marks}))", ids
            )
            conn.execute(f"DELETE FROM outbox WHERE incident_id IN ({marks})", ids)
            conn.execute(f"DELETE FROM incidents WHERE id IN ({marks})", ids)
    free_before = _pragma(conn, "freelist_count")
    if free_before:
        # executescript steps the pragma to the end; execute() frees one page and stops.
        conn.executescript(f"PRAGMA incremental_vacuum({int(vacuum_pages)});")
    freed = free_before - _pragma(conn, "freelist_count")
    return Pruned(
        outbox=outbox,
        incidents=len(ids),
        timeline=timeline,
        incident_receivers=receivers,
        pages_freed=freed,
        full=outbox >= batch or len(ids) >= batch,
    )


def file_bytes(conn: sqlite3.Connection) -> int:
    """The main file's size as SQLite sees it (page_count × page_size)."""
    return _pragma(conn, "page_count") * _pragma(conn, "page_size")


def _pragma(conn: sqlite3.Connection, name: str) -> int:
    row = conn.execute(f"PRAGMA {name}").fetchone()
    return int(row[0]) if row else 0


class Retention:
    """Prunes the state file periodically; `samples()` for /metrics.

    `db` runs each pass where the connection lives (the daemon's writer thread); `retention`
    is read at every pass, so a reload that changes it applies at the next one."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        retention: Callable[[], float],
        *,
        db: Runner = inline,
        now: Callable[[], datetime] = utc_now,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        every_s: float = 300.0,
        batch: int = BATCH,
        vacuum_pages: int = VACUUM_PAGES,
        max_passes: int = 20,
    ) -> None:
        self._conn = conn
        self._retention = retention
        self._db = db
        self._now = now
        self._sleep = sleep
        self._every_s = every_s
        self._batch = batch
        self._vacuum_pages = vacuum_pages
        self._max_passes = max_passes
        self.deleted: Counter[str] = Counter()
        self.size_bytes = 0.0

    def _pass(self) -> tuple[Pruned, int]:
        pruned = prune(
            self._conn,
            self._now(),
            timedelta(seconds=self._retention()),
            batch=self._batch,
            vacuum_pages=self._vacuum_pages,
        )
        return pruned, file_bytes(self._conn)

    async def run_once(self) -> Pruned:
        """Passes until one is not full (at most `max_passes`); the total removed."""
        total = Counter[str]()
        freed = 0
        full = False
        for _ in range(self._max_passes):
            pruned, size = await self._db(self._pass)
            self.size_bytes = float(size)
            for table in ("outbox", "incidents", "timeline", "incident_receivers"):
                total[table] += getattr(pruned, table)
            freed += pruned.pages_freed
            full = pruned.full
            if not full:
                break
        self.deleted.update(total)
        done = Pruned(**total, pages_freed=freed, full=full)
        if done:
            log.info("state_pruned", retention_s=self._retention(), more_waiting=full, pages_freed=freed, **total)
        return done

    async def run(self) -> None:
        """Prune every `every_s` until cancelled; a failed pass is logged and tried again later."""
        while True:
            try:
                await self.run_once()
            except (sqlite3.Error, OSError) as e:
                log.error("state_prune_failed", error=f"{type(e).__name__}: {e}")
            await self._sleep(self._every_s)

    def samples(self) -> list[Sample]:
        out = [
            Sample("portal_monitor_retention_deleted_total", {"table": t}, float(self.deleted[t]))
            for t in ("outbox", "incidents", "timeline", "incident_receivers")
        ]
        if self.size_bytes:
            out.append(Sample("portal_monitor_state_file_bytes", {}, self.size_bytes))
        return out
