"""The durable notification queue: rows written with the incident change, delivered per receiver.

`Incidents` writes a row per notification with `enqueue()` (in `monitor.incidents.records`:
what must be sent is part of the incident's record) inside its own transaction, so an incident
change and its pages commit together or not at all. `Outbox.run()` then delivers: one
task per receiver, each row in order (a receiver's next row waits for its previous one), each
send under the receiver's timeout. A receiver that fails is retried with exponential backoff
and jitter (at least its `Retry-After`), so a broken peer sees a bounded number of attempts per
minute and never holds up the other receivers. Every failed attempt is a warning in the
log (`notification_retry`) whose `message` a person reads at once: "page for incident 12 (P1
PortalUnreachable) not delivered to oncall: <the receiver's error>, attempt 4, next in 30s".
`DeliveryError(permanent=True)` (PagerDuty 400)
fails the row at once: logged with the reply, counted and kept visible. Rows older than
`max_age` expire. Pending rows survive restarts: a row is delivered at least once (a crash
during a send sends it again; PagerDuty and Alertmanager deduplicate on the dedup key).

On delivery the row is marked delivered and the incident timeline gets "notified <receiver>"
in the same transaction; the row's payload (kept in `outbox_payload` until then) is dropped, so
a delivered page costs the state file only who got what when. Failed and expired rows keep it.
Every database step goes through `db` (a `monitor.statedb.Runner`: the daemon's writer thread),
so a locked file delays a delivery, never the event loop.
`enqueue`, `list_rows`, `OutboxRow` and the payload format
(`notification_to_json`/`notification_from_json`) live in `monitor.incidents.records` and are
importable from here. The tables are
`monitor.statedb`'s migrations.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import suppress
from datetime import datetime, timedelta
from typing import Any

import structlog

from monitor.clock import utc_now
from monitor.incidents.records import (
    OutboxRow,
    add_timeline,
    enqueue,
    iso,
    list_rows,
    mark_delivered,
    next_pending,
    notification_from_json,
    notification_to_json,
    parse_iso,
    transaction,
)
from monitor.model import DeliveryError, Receiver, Sample
from monitor.statedb import Runner, inline

__all__ = [
    "LABELS",
    "METRICS",
    "Outbox",
    "OutboxRow",
    "enqueue",
    "list_rows",
    "notification_from_json",
    "notification_to_json",
    "send_timeout",
    "transaction",
]

log = structlog.get_logger()

DEFAULT_SEND_TIMEOUT_S = 30.0  # when a receiver does not say (`timeout_s`)
RESULTS = ("delivered", "retried", "throttled", "failed", "expired")

METRICS: dict[str, tuple[str, str]] = {
    "portal_monitor_notifications_total": (
        "counter",
        "notification attempts by receiver and result (delivered, retried, failed, expired)",
    ),
    "portal_monitor_outbox_depth": ("gauge", "notifications waiting for delivery"),
    "portal_monitor_outbox_oldest_seconds": ("gauge", "age of the oldest waiting notification (0 when none)"),
    "portal_monitor_receiver_failing": ("gauge", "1 while the receiver's last delivery attempt failed"),
}
# Every label of the series above (the daemon's own: no `check`).
LABELS: dict[str, tuple[str, ...]] = {
    "portal_monitor_notifications_total": ("receiver", "result"),
    "portal_monitor_receiver_failing": ("receiver",),
}


# ---------------------------------------------------------------- delivery


def undelivered(row: OutboxRow) -> str:
    """ "page for incident 12 (P1 PortalUnreachable) not delivered to oncall": the start of the
    warning every failed attempt logs (a trigger is a page; other kinds say their kind)."""
    a = row.notification.alert
    what = "page" if row.kind == "trigger" else row.kind
    return f"{what} for incident {row.incident_id} ({a.severity} {a.name}) not delivered to {row.receiver}"


def _seconds(s: float) -> str:
    return f"{s:.0f}s" if s >= 10 else f"{s:.1f}s"


def send_timeout(receiver: Receiver) -> float:
    """The receiver's own timeout (`timeout_s`, or its config's `timeout`), else 30 s."""
    value = getattr(receiver, "timeout_s", None) or getattr(getattr(receiver, "cfg", None), "timeout", None)
    return float(value) if value else DEFAULT_SEND_TIMEOUT_S


class Outbox:
    """Delivers the queued rows: per receiver in order, receivers independent of each other.

    `now` and `sleep` are injected so tests move a fake clock; `rng` draws the jitter.
    `poll_interval_s` only matters for rows written by another process (the CLI's
    `incidents ack` while the daemon runs): the daemon's own rows set `wake` at once.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        receivers: Mapping[str, Receiver],
        *,
        now: Callable[[], datetime] = utc_now,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        rng: random.Random | None = None,
        max_age: timedelta = timedelta(hours=24),
        base_backoff: timedelta = timedelta(seconds=1),
        max_backoff: timedelta = timedelta(minutes=5),
        poll_interval_s: float = 5.0,
        db: Runner = inline,
    ) -> None:
        self._conn = conn
        self._db = db
        self._receivers: dict[str, Receiver] = dict(receivers)
        self._now = now
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._max_age = max_age
        self._base = base_backoff.total_seconds()
        self._max = max_backoff.total_seconds()
        self._poll = poll_interval_s
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._inflight: dict[int, asyncio.Event] = {}  # id(receiver) -> set when its send ends
        self._counts: Counter[tuple[str, str]] = Counter()
        # A receiver whose oldest waiting row already failed before a restart is still failing.
        self._failing: dict[str, bool] = {name: False for name in self._receivers}
        for (name,) in conn.execute(
            "SELECT DISTINCT receiver FROM outbox WHERE state = 'pending' AND attempts > 0 AND last_error != ''"
        ):
            self._failing[name] = True

    def set_receivers(self, receivers: Mapping[str, Receiver]) -> None:
        """After a reload: every attempt from now on goes to these receivers (a send already
        under way finishes on the old one, see `retire`); rows for a receiver that is gone
        fail with a clear error."""
        self._receivers = dict(receivers)
        self._failing = {name: self._failing.get(name, False) for name in self._receivers}

    async def retire(self, receivers: Iterable[Receiver]) -> list[str]:
        """Wait until none of `receivers` (replaced by a reload) has a send under way, each for
        at most its send timeout (the backstop `_attempt` applies): their owner may close them
        then. Return the names of those still sending (their rows are retried)."""

        async def finished(r: Receiver, done: asyncio.Event) -> str | None:
            try:
                async with asyncio.timeout(send_timeout(r) * 1.1 + 0.1):
                    await done.wait()
            except TimeoutError:
                return r.name
            return None

        waits = [finished(r, done) for r in receivers if (done := self._inflight.get(id(r))) is not None]
        return [name for name in await asyncio.gather(*waits) if name is not None]

    # -- running

    async def run(self, wake: asyncio.Event) -> None:
        """Deliver until cancelled; `wake` says new rows are waiting (set by the daemon)."""
        try:
            while True:
                wake.clear()
                await self._start_workers()
                with suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), self._poll)
        finally:
            workers = list(self._workers.values())
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            self._workers.clear()

    async def drain(self) -> None:
        """Deliver until no row is pending (each one delivered, failed or expired).

        For tests and one-shot use; with the real `sleep` this waits out the backoff.
        """
        await self._start_workers()
        while self._workers:
            await asyncio.gather(*self._workers.values())
            await self._start_workers()

    async def _start_workers(self) -> None:
        for name, task in list(self._workers.items()):
            if task.done():
                del self._workers[name]
                if not task.cancelled() and task.exception() is not None:
                    log.error("outbox_worker_crashed", receiver=name, error=repr(task.exception()))
        pending = await self._db(self._pending_receivers)
        for name in pending:
            if name not in self._workers:
                self._workers[name] = asyncio.create_task(self._worker(name), name=f"outbox:{name}")

    def _pending_receivers(self) -> list[str]:
        return [r[0] for r in self._conn.execute("SELECT DISTINCT receiver FROM outbox WHERE state = 'pending'")]

    def _next(self, receiver: str) -> OutboxRow | None:
        return next_pending(self._conn, receiver)

    async def _worker(self, name: str) -> None:
        """Deliver `name`'s rows in order until none is pending."""
        while (row := await self._db(lambda: self._next(name))) is not None:
            now = self._now()
            expires_at = row.created_at + self._max_age
            if now >= expires_at:
                await self._finish(row, "expired", now, row.last_error or "not delivered in time")
                continue
            if row.attempts and row.next_attempt_at > now:  # a new row goes at once, whatever the clocks say
                wait = min(row.next_attempt_at, expires_at) - now
                await self._sleep(max(wait.total_seconds(), 0.0))
                continue  # read the row again: another process may have changed it
            receiver = self._receivers.get(name)
            if receiver is None:
                await self._finish(
                    row,
                    "failed",
                    now,
                    f"receiver {name!r} is not configured (removed or disabled by a reload?); notification dropped",
                )
                continue
            await self._attempt(receiver, row)

    async def _attempt(self, receiver: Receiver, row: OutboxRow) -> None:
        timeout = send_timeout(receiver)
        n = row.notification
        done = self._inflight[id(receiver)] = asyncio.Event()
        try:
            try:
                async with asyncio.timeout(timeout * 1.1 + 0.1):  # the receiver applies its own; a backstop
                    await receiver.send(n)
            finally:
                self._inflight.pop(id(receiver), None)
                done.set()
        except DeliveryError as e:
            if e.permanent:
                await self._finish(row, "failed", self._now(), str(e))
            elif e.throttled:
                await self._throttle(row, e.retry_after or self._base)
            else:
                await self._retry(row, str(e), e.retry_after)
        except TimeoutError:
            await self._retry(row, f"receiver {row.receiver!r}: no answer within {timeout:g}s", None)
        except Exception as e:  # a receiver bug must not stop the queue: retry, loudly
            await self._retry(row, f"receiver {row.receiver!r}: {type(e).__name__}: {e}", None)
        else:
            now = self._now()

            def delivered() -> None:
                with transaction(self._conn):
                    if mark_delivered(self._conn, row.id, now) and row.incident_id:
                        add_timeline(
                            self._conn,
                            row.incident_id,
                            now,
                            "notified",
                            f"{row.kind} → {row.receiver}",
                            receiver=row.receiver,
                            level=n.level,
                        )

            self._counts[(row.receiver, "delivered")] += 1  # sent: counted before the row is marked
            self._failing[row.receiver] = False
            await self._db(delivered)
            log.info(
                "notification_delivered",
                receiver=row.receiver,
                kind=row.kind,
                incident_id=row.incident_id,
                dedup_key=row.dedup_key,
                attempts=row.attempts + 1,
            )

    def backoff(self, attempts: int) -> float:
        """Seconds before attempt `attempts + 1`: exponential, capped, with jitter in [d/2, d]
        so a broken receiver sees at most ~60 / (max_backoff / 2) attempts per minute."""
        d = min(self._max, self._base * 2.0 ** min(attempts - 1, 30))
        return d / 2 + self._rng.uniform(0, d / 2)

    async def _throttle(self, row: OutboxRow, wait: float) -> None:
        """Our own rate limit (PagerDuty's ~120/min per key) held the row back: wait for the
        slot without counting an attempt or calling the receiver failing. The row stays as it
        is in the database, so a restart meanwhile simply tries it again."""
        self._counts[(row.receiver, "throttled")] += 1
        await self._sleep(wait)

    async def _retry(self, row: OutboxRow, error: str, retry_after: float | None) -> None:
        now = self._now()
        attempts = row.attempts + 1
        # The peer's Retry-After is its word on when it can take the message again: use it
        # rather than an exponential backoff that may have grown past it (after a long 500
        # outage, max() of the two delayed the first page by a minute after recovery). At
        # least base_backoff, so a peer saying "0" cannot make us hammer it.
        delay = max(retry_after, self._base) if retry_after is not None else self.backoff(attempts)
        self._counts[(row.receiver, "retried")] += 1
        self._failing[row.receiver] = True
        await self._db(
            lambda: self._conn.execute(
                "UPDATE outbox SET attempts = ?, next_attempt_at = ?, last_error = ?"
                " WHERE id = ? AND state = 'pending'",
                (attempts, iso(now + timedelta(seconds=delay)), error, row.id),
            )
        )
        n = row.notification
        log.warning(
            "notification_retry",
            message=f"{undelivered(row)}: {error}, attempt {attempts}, next in {_seconds(delay)}",
            receiver=row.receiver,
            kind=row.kind,
            incident_id=row.incident_id,
            severity=n.alert.severity,
            alertname=n.alert.name,
            attempts=attempts,
            retry_in_s=round(delay, 3),
            retry_after=retry_after,
            error=error,
        )

    async def _finish(self, row: OutboxRow, state: str, now: datetime, error: str) -> None:
        """Mark a row failed or expired (kept visible), note it on the incident, count it."""
        attempts = row.attempts + (1 if state == "failed" and row.receiver in self._receivers else 0)

        def finished() -> None:
            with transaction(self._conn):
                cur = self._conn.execute(
                    "UPDATE outbox SET state = ?, attempts = ?, last_error = ?, finished_at = ?"
                    " WHERE id = ? AND state = 'pending'",
                    (state, attempts, error, iso(now), row.id),
                )
                if cur.rowcount and row.incident_id:
                    add_timeline(
                        self._conn,
                        row.incident_id,
                        now,
                        "note",
                        f"{row.kind} to {row.receiver} {state}: {error}",
                        receiver=row.receiver,
                    )

        await self._db(finished)
        self._counts[(row.receiver, state)] += 1
        if row.receiver in self._receivers:
            self._failing[row.receiver] = True
        event = "notification_failed" if state == "failed" else "notification_expired"
        log.error(
            event,
            message=f"{undelivered(row)}: {error}, {state} after {attempts} attempt{'s' if attempts != 1 else ''}",
            receiver=row.receiver,
            kind=row.kind,
            incident_id=row.incident_id,
            dedup_key=row.dedup_key,
            attempts=attempts,
            age_s=round((now - row.created_at).total_seconds(), 3),
            error=error,
        )

    # -- metrics

    def samples(self) -> list[Sample]:
        """The delivery series for /metrics and the rules (NotificationDeliveryFailing)."""
        return [*self.queue_samples(), *self.delivery_samples()]

    def queue_samples(self) -> list[Sample]:
        """The series read from the file: queue depth and the oldest waiting row's age."""
        now = self._now()
        depth, oldest = self._conn.execute(
            "SELECT count(*), min(created_at) FROM outbox WHERE state = 'pending'"
        ).fetchone()
        age = max((now - parse_iso(oldest)).total_seconds(), 0.0) if oldest else 0.0
        return [
            Sample("portal_monitor_outbox_depth", {}, float(depth)),
            Sample("portal_monitor_outbox_oldest_seconds", {}, age),
        ]

    def delivery_samples(self) -> list[Sample]:
        """The series kept in memory: attempts by result, receivers failing."""
        out: list[Sample] = []
        names = sorted(set(self._receivers) | {r for r, _ in self._counts})
        for name in names:
            for result in RESULTS:
                out.append(
                    Sample(
                        "portal_monitor_notifications_total",
                        {"receiver": name, "result": result},
                        float(self._counts[(name, result)]),
                    )
                )
        for name in sorted(self._failing):
            out.append(
                Sample("portal_monitor_receiver_failing", {"receiver": name}, 1.0 if self._failing[name] else 0.0)
            )
        return out
