"""The outbox: durable, ordered per receiver, receivers independent, bounded retries.

Time is a fake clock; `sleep` advances it, so an hour of backoff runs in milliseconds.
Receivers are small fakes with `send` (the real receivers are tested against their HTTP fakes).
"""

from __future__ import annotations

import asyncio
import math
import random
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from monitor.delivery.outbox import (
    Outbox,
    enqueue,
    list_rows,
    notification_from_json,
    notification_to_json,
    transaction,
)
from monitor.incidents.records import add_timeline
from monitor.model import Alert, DeliveryError, Notification, ReceiverContext
from monitor.statedb import open_db

T0 = datetime(2025, 12, 5, 9, 0, 0, tzinfo=UTC)


class Clock:
    """A fake wall clock; `sleep` moves it forward instead of waiting."""

    def __init__(self, t: datetime = T0) -> None:
        self.t = t
        self.sleeps: list[float] = []

    def now(self) -> datetime:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += timedelta(seconds=seconds)
        await asyncio.sleep(0)


class FakeReceiver:
    """Records what it got (with the fake time); `plan` says how each call ends."""

    def __init__(self, name: str, clock: Clock, plan: list[BaseException | None] | None = None, *,
                 fail_always: BaseException | None = None, timeout_s: float = 5.0) -> None:
        self.name = name
        self.clock = clock
        self.plan = list(plan or [])
        self.fail_always = fail_always
        self.timeout_s = timeout_s
        self.got: list[Notification] = []
        self.attempts: list[datetime] = []
        self.hold: asyncio.Event | None = None

    async def send(self, notification: Notification) -> None:
        self.attempts.append(self.clock.now())
        if self.hold is not None:
            await self.hold.wait()
        if self.plan:
            outcome = self.plan.pop(0)
            if outcome is not None:
                raise outcome
        elif self.fail_always is not None:
            raise self.fail_always
        self.got.append(notification)

    async def aclose(self) -> None:
        pass


def notification(
    receiver: str = "oncall", kind: str = "trigger", incident_id: int = 0, n: int = 0, value: float = 1.0
) -> Notification:
    alert = Alert(name="RedisDown",
                  labels={"alertname": "RedisDown", "severity": "P1", "check": "cache", "n": str(n)},
                  annotations={"summary": f"Redis down #{n}", "runbook": "https://wiki.example/rb#3"},
                  severity="P1", value=value, vendor=None, fingerprint=f"fp{n}")
    return Notification(id=0, receiver=receiver, kind=kind, incident_id=incident_id, dedup_key=f"fp{n}",
                        level="L1", status="firing", alert=alert, started_at=T0, updated_at=T0)


def put(conn: sqlite3.Connection, *ns: Notification, at: datetime = T0) -> list[int]:
    with transaction(conn):
        return [enqueue(conn, n, at) for n in ns]


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    c = open_db(tmp_path)
    yield c
    c.close()


def sample(outbox: Outbox, name: str, **labels: str) -> float | None:
    for s in outbox.samples():
        if s.name == name and dict(s.labels) == labels:
            return s.value
    return None


# ---------------------------------------------------------------- serialisation


def test_notification_json_round_trip_keeps_every_field() -> None:
    n = replace(notification(), resolved_at=T0 + timedelta(minutes=3), next_update_at=T0 + timedelta(hours=1),
                status="resolved", kind="resolve")
    back = notification_from_json(notification_to_json(n), id=7)
    assert back == replace(n, id=7)
    assert '"started_at":"2025-12-05T09:00:00.000000+00:00"' in notification_to_json(n)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 0.5])
def test_notification_json_keeps_non_finite_values(value: float) -> None:
    back = notification_from_json(notification_to_json(notification(value=value)))
    assert (math.isnan(back.alert.value) and math.isnan(value)) or back.alert.value == value


# ---------------------------------------------------------------- order and independence


async def test_rows_are_delivered_in_order_per_receiver(conn: sqlite3.Connection) -> None:
    clock = Clock()
    rx = FakeReceiver("oncall", clock, plan=[DeliveryError("503"), DeliveryError("503"), None])
    put(conn, *(notification(n=i) for i in range(5)))
    outbox = Outbox(conn, {"oncall": rx}, now=clock.now, sleep=clock.sleep, rng=random.Random(1))
    await outbox.drain()
    assert [n.alert.labels["n"] for n in rx.got] == ["0", "1", "2", "3", "4"]
    assert len(rx.attempts) == 7  # row 0 took three attempts; the others waited for it
    assert {r.state for r in list_rows(conn)} == {"delivered"}


async def test_a_hanging_receiver_does_not_hold_up_another(conn: sqlite3.Connection) -> None:
    clock = Clock()
    slow = FakeReceiver("slow", clock)
    slow.hold = asyncio.Event()
    fast = FakeReceiver("fast", clock)
    put(conn, notification("slow", n=1), notification("fast", n=2), notification("fast", n=3))
    outbox = Outbox(conn, {"slow": slow, "fast": fast}, now=clock.now, sleep=clock.sleep)
    drain = asyncio.create_task(outbox.drain())
    async with asyncio.timeout(2):
        while len(fast.got) < 2:
            await asyncio.sleep(0)
    assert slow.got == [] and len(slow.attempts) == 1  # still inside its send
    slow.hold.set()
    await drain
    assert len(slow.got) == 1


async def test_a_failing_receiver_does_not_delay_another(conn: sqlite3.Connection) -> None:
    """`broken` fails for a simulated day; `chat` gets its rows at the start, unharmed."""
    clock = Clock()
    broken = FakeReceiver("broken", clock, fail_always=DeliveryError("500 from peer"))
    chat = FakeReceiver("chat", clock)
    put(conn, notification("broken", n=1), notification("chat", n=2), notification("chat", n=3))
    outbox = Outbox(conn, {"broken": broken, "chat": chat}, now=clock.now, sleep=clock.sleep)
    await outbox.drain()
    assert [n.alert.labels["n"] for n in chat.got] == ["2", "3"]
    assert chat.attempts[-1] - T0 < timedelta(seconds=5)
    assert [r.state for r in list_rows(conn, receiver="broken")] == ["expired"]


async def test_rows_of_one_receiver_run_one_at_a_time(conn: sqlite3.Connection) -> None:
    clock = Clock()
    rx = FakeReceiver("oncall", clock)
    rx.hold = asyncio.Event()
    put(conn, notification(n=1), notification(n=2))
    outbox = Outbox(conn, {"oncall": rx}, now=clock.now, sleep=clock.sleep)
    drain = asyncio.create_task(outbox.drain())
    for _ in range(20):
        await asyncio.sleep(0)
    assert len(rx.attempts) == 1  # the second row waits for the first
    rx.hold.set()
    await drain
    assert [n.alert.labels["n"] for n in rx.got] == ["1", "2"]


# ---------------------------------------------------------------- retries


async def test_backoff_keeps_a_broken_receiver_to_a_few_attempts_per_minute(conn: sqlite3.Connection) -> None:
    clock = Clock()
    rx = FakeReceiver("oncall", clock, fail_always=DeliveryError("502 Bad Gateway"))
    put(conn, notification())
    outbox = Outbox(conn, {"oncall": rx}, now=clock.now, sleep=clock.sleep, rng=random.Random(7),
                    max_age=timedelta(hours=1))
    await outbox.drain()
    times = [(t - T0).total_seconds() for t in rx.attempts]
    assert times[0] == 0
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    for i, gap in enumerate(gaps, start=1):  # attempt i+1 waits backoff(i) in [d/2, d]
        d = min(300.0, 2.0 ** (i - 1))
        assert d / 2 <= gap <= d + 1e-6, (i, gap)
    per_minute = max(sum(1 for t in times if s <= t < s + 60) for s in times)
    assert per_minute <= 8
    assert len(times) <= 8 + 3600 / 150  # after the ramp, at most one attempt per 150 s
    assert list_rows(conn)[0].state == "expired"


async def test_retry_after_is_honoured(conn: sqlite3.Connection) -> None:
    clock = Clock()
    rx = FakeReceiver("oncall", clock, plan=[DeliveryError("429 Too Many Requests", retry_after=120)])
    put(conn, notification())
    outbox = Outbox(conn, {"oncall": rx}, now=clock.now, sleep=clock.sleep)
    with capture_logs() as logs:
        await outbox.drain()
    assert rx.attempts == [T0, T0 + timedelta(seconds=120)]
    retry = [e for e in logs if e["event"] == "notification_retry"]
    assert retry and retry[0]["retry_after"] == 120 and "429" in retry[0]["error"]
    assert sample(outbox, "portal_monitor_notifications_total", receiver="oncall", result="retried") == 1
    assert sample(outbox, "portal_monitor_notifications_total", receiver="oncall", result="delivered") == 1
    assert sample(outbox, "portal_monitor_receiver_failing", receiver="oncall") == 0


async def test_unexpected_errors_are_retried(conn: sqlite3.Connection) -> None:
    clock = Clock()
    rx = FakeReceiver("oncall", clock, plan=[RuntimeError("bug in receiver")])
    put(conn, notification("oncall"))
    with capture_logs() as logs:
        await Outbox(conn, {"oncall": rx}, now=clock.now, sleep=clock.sleep).drain()
    assert len(rx.got) == 1
    assert any("RuntimeError: bug in receiver" in e.get("error", "") for e in logs)
    row = list_rows(conn)[0]
    assert row.state == "delivered" and row.attempts == 2


async def test_a_send_that_hangs_is_cut_off_by_the_receiver_timeout(conn: sqlite3.Connection) -> None:
    clock = Clock()
    hanging = FakeReceiver("chat", clock, timeout_s=0.2)
    hanging.hold = asyncio.Event()  # never set: only the timeout ends the attempt
    put(conn, notification("chat"))
    outbox = Outbox(
        conn, {"chat": hanging}, now=clock.now, sleep=clock.sleep, max_age=timedelta(milliseconds=500)
    )
    await outbox.drain()
    row = list_rows(conn)[0]
    assert row.state == "expired" and "receiver 'chat': no answer within 0.2s" in row.last_error
    assert len(hanging.attempts) == 1


async def test_permanent_failure_fails_the_row_and_moves_on(conn: sqlite3.Connection) -> None:
    clock = Clock()
    reply = (
        'pagerduty receiver \'oncall\': 400 {"status":"invalid event","errors":["payload.summary is blank"]}'
    )
    rx = FakeReceiver("oncall", clock, plan=[DeliveryError(reply, permanent=True)])
    create_incident_timeline_row(conn)
    put(conn, notification(incident_id=1, n=1), notification(incident_id=1, n=2))
    outbox = Outbox(conn, {"oncall": rx}, now=clock.now, sleep=clock.sleep)
    with capture_logs() as logs:
        await outbox.drain()
    first, second = list_rows(conn)
    assert (first.state, first.attempts, first.last_error) == ("failed", 1, reply)
    assert second.state == "delivered"
    assert len(rx.attempts) == 2  # never retried
    failed = [e for e in logs if e["event"] == "notification_failed"]
    assert failed and failed[0]["error"] == reply and failed[0]["log_level"] == "error"
    assert sample(outbox, "portal_monitor_notifications_total", receiver="oncall", result="failed") == 1
    notes = [r[0] for r in conn.execute("SELECT detail FROM timeline WHERE kind = 'note'")]
    assert any("failed" in d and "payload.summary is blank" in d for d in notes)


def create_incident_timeline_row(conn: sqlite3.Connection) -> None:
    """Timeline rows only need an incident id; the outbox does not look the incident up."""
    with transaction(conn):
        add_timeline(conn, 1, T0, "fired", "RedisDown")


async def test_failing_gauge_is_one_while_the_last_attempt_failed(conn: sqlite3.Connection) -> None:
    clock = Clock()
    rx = FakeReceiver("oncall", clock, plan=[DeliveryError("500"), DeliveryError("500")])
    put(conn, notification())
    outbox = Outbox(conn, {"oncall": rx}, now=clock.now, sleep=clock.sleep)
    assert sample(outbox, "portal_monitor_receiver_failing", receiver="oncall") == 0
    seen: list[float | None] = []

    async def sleep(s: float) -> None:
        seen.append(sample(outbox, "portal_monitor_receiver_failing", receiver="oncall"))
        await clock.sleep(s)

    outbox._sleep = sleep
    await outbox.drain()
    assert seen == [1.0, 1.0]
    assert sample(outbox, "portal_monitor_receiver_failing", receiver="oncall") == 0


async def test_old_rows_expire_with_a_log_event(conn: sqlite3.Connection) -> None:
    clock = Clock()
    rx = FakeReceiver("oncall", clock, fail_always=DeliveryError("connection refused"))
    put(conn, notification(n=1), notification(n=2))
    outbox = Outbox(conn, {"oncall": rx}, now=clock.now, sleep=clock.sleep, max_age=timedelta(hours=24))
    with capture_logs() as logs:
        await outbox.drain()
    rows = list_rows(conn)
    assert [r.state for r in rows] == ["expired", "expired"]
    assert rows[0].last_error == "connection refused"
    assert T0 + timedelta(hours=24) <= clock.t <= T0 + timedelta(hours=24, minutes=6)
    expired = [e for e in logs if e["event"] == "notification_expired"]
    assert len(expired) == 2 and expired[0]["age_s"] >= 24 * 3600
    assert sample(outbox, "portal_monitor_notifications_total", receiver="oncall", result="expired") == 2
    assert sample(outbox, "portal_monitor_outbox_depth") == 0


async def test_a_receiver_removed_by_reload_fails_its_rows_clearly(conn: sqlite3.Connection) -> None:
    clock = Clock()
    put(conn, notification("gone"))
    outbox = Outbox(conn, {}, now=clock.now, sleep=clock.sleep)
    with capture_logs() as logs:
        await outbox.drain()
    row = list_rows(conn)[0]
    assert row.state == "failed" and "receiver 'gone' is not configured" in row.last_error
    assert any(e["event"] == "notification_failed" and e["receiver"] == "gone" for e in logs)


# ---------------------------------------------------------------- durability


async def test_pending_rows_survive_a_restart_with_their_backoff(tmp_path: Path) -> None:
    clock = Clock()
    c1 = open_db(tmp_path)
    put(c1, notification(n=1), notification(n=2))
    broken = FakeReceiver("oncall", clock, fail_always=DeliveryError("503"))
    killed = asyncio.Event()

    async def sleep(s: float) -> None:
        if len(broken.attempts) == 3:
            killed.set()
            await asyncio.Event().wait()  # the daemon dies during the third backoff
        await clock.sleep(s)

    first = Outbox(c1, {"oncall": broken}, now=clock.now, sleep=sleep, rng=random.Random(3))
    task = asyncio.create_task(first.drain())
    await killed.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    c1.close()

    c2 = open_db(tmp_path)
    row = list_rows(c2)[0]
    assert row.state == "pending" and row.attempts == 3 and row.next_attempt_at > clock.t
    rx = FakeReceiver("oncall", clock)
    second = Outbox(c2, {"oncall": rx}, now=clock.now, sleep=clock.sleep)
    assert sample(second, "portal_monitor_receiver_failing", receiver="oncall") == 1
    due = row.next_attempt_at
    await second.drain()
    assert rx.attempts[0] == due  # waited for the stored backoff, not from scratch
    assert [n.alert.labels["n"] for n in rx.got] == ["1", "2"]
    assert [n.id for n in rx.got] == [r.id for r in list_rows(c2)]
    c2.close()


async def test_delivery_writes_notified_in_the_same_transaction(conn: sqlite3.Connection) -> None:
    clock = Clock(T0 + timedelta(seconds=2))
    rx = FakeReceiver("oncall", clock)
    put(conn, notification(incident_id=42))
    outbox = Outbox(conn, {"oncall": rx}, now=clock.now, sleep=clock.sleep)
    await outbox.drain()
    rows = conn.execute("SELECT incident_id, at, kind, receiver, level, detail FROM timeline").fetchall()
    assert rows == [(42, "2025-12-05T09:00:02.000000+00:00", "notified", "oncall", "L1", "trigger → oncall")]


async def test_a_failed_commit_leaves_the_row_pending(conn: sqlite3.Connection) -> None:
    """If the 'notified' entry cannot be written, the row is not marked delivered either."""
    clock = Clock()
    rx = FakeReceiver("oncall", clock)
    put(conn, notification(incident_id=5))
    conn.execute(
        "CREATE TRIGGER no_timeline BEFORE INSERT ON timeline BEGIN SELECT RAISE(ABORT, 'disk full'); END"
    )
    outbox = Outbox(conn, {"oncall": rx}, now=clock.now, sleep=clock.sleep)
    with pytest.raises(sqlite3.IntegrityError):
        await outbox._worker("oncall")
    assert list_rows(conn)[0].state == "pending"
    conn.execute("DROP TRIGGER no_timeline")
    await outbox.drain()
    assert list_rows(conn)[0].state == "delivered"  # at least once: sent again


# ---------------------------------------------------------------- the run loop and metrics


async def test_run_delivers_at_once_when_woken(conn: sqlite3.Connection) -> None:
    clock = Clock()
    rx = FakeReceiver("oncall", clock)
    outbox = Outbox(conn, {"oncall": rx}, now=clock.now, sleep=clock.sleep, poll_interval_s=3600)
    wake = asyncio.Event()
    runner = asyncio.create_task(outbox.run(wake))
    await asyncio.sleep(0)
    put(conn, notification(n=1))
    wake.set()
    async with asyncio.timeout(2):  # no polling: the wake starts the delivery
        while not rx.got:
            await asyncio.sleep(0)
    put(conn, notification(n=2))
    wake.set()
    async with asyncio.timeout(2):
        while len(rx.got) < 2:
            await asyncio.sleep(0)
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner


async def test_run_picks_up_rows_left_from_before_the_start(conn: sqlite3.Connection) -> None:
    clock = Clock()
    put(conn, notification(n=1))
    rx = FakeReceiver("oncall", clock)
    outbox = Outbox(conn, {"oncall": rx}, now=clock.now, sleep=clock.sleep, poll_interval_s=3600)
    runner = asyncio.create_task(outbox.run(asyncio.Event()))
    async with asyncio.timeout(2):
        while not rx.got:
            await asyncio.sleep(0)
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner


async def test_depth_and_oldest_age(conn: sqlite3.Connection) -> None:
    clock = Clock(T0 + timedelta(seconds=90))
    outbox = Outbox(conn, {"oncall": FakeReceiver("oncall", clock)}, now=clock.now, sleep=clock.sleep)
    assert sample(outbox, "portal_monitor_outbox_depth") == 0
    assert sample(outbox, "portal_monitor_outbox_oldest_seconds") == 0
    put(conn, notification(n=1), at=T0)
    put(conn, notification(n=2), at=T0 + timedelta(seconds=60))
    assert sample(outbox, "portal_monitor_outbox_depth") == 2
    assert sample(outbox, "portal_monitor_outbox_oldest_seconds") == 90
    for result in ("delivered", "retried", "failed", "expired"):
        assert sample(outbox, "portal_monitor_notifications_total", receiver="oncall", result=result) == 0
    await outbox.drain()
    assert sample(outbox, "portal_monitor_outbox_depth") == 0
    assert sample(outbox, "portal_monitor_notifications_total", receiver="oncall", result="delivered") == 2


# ---------------------------------------------------------------- with the real PagerDuty receiver


async def test_pagerduty_failing_500_gets_the_trigger_once_after_it_recovers(tmp_path: Path) -> None:
    """Incidents → outbox → the real receiver → a fake PagerDuty that answers 500 three times,
    then a restart while the incident is open, then the resolve: one trigger, one resolve."""
    from monitor.delivery.pagerduty import Config as PagerDutyConfig
    from monitor.delivery.pagerduty import PagerDutyReceiver
    from monitor.incidents.lifecycle import Incidents
    from tests.fake_receivers import FakePagerDuty
    from tests.incident_helpers import KEY, alert, config, fired, resolved

    text = (
        f'receivers:\n  oncall: {{type: pagerduty, routing_key: "{KEY}"}}\n'
        "escalation:\n  - {level: L1, after: 0s, severities: [P1, P2, P3, P4], receivers: [oncall]}\n"
    )
    a = alert("RedisDown", "P1", check="cache")
    t0 = datetime.now(UTC)  # the outbox runs on the real clock here (rows older than a day expire)
    async with FakePagerDuty() as pd:
        pd.answer(500, times=3)
        rx = PagerDutyReceiver("oncall", PagerDutyConfig.model_validate(
                {"type": "pagerduty", "routing_key": KEY, "url": pd.url, "timeout": "2s"}
            ), ReceiverContext(host="monitor-test"))

        def outbox(c: sqlite3.Connection) -> Outbox:
            return Outbox(c, {"oncall": rx}, base_backoff=timedelta(milliseconds=5),
                          max_backoff=timedelta(milliseconds=20))

        try:
            c1 = open_db(tmp_path)
            assert Incidents(c1, config(text)).update([a], [fired(a, t0)], t0) == 1
            await outbox(c1).drain()
            assert [r.status for r in pd.requests] == [500, 500, 500, 202]
            c1.close()  # restart while the incident is open

            c2 = open_db(tmp_path)
            inc = Incidents(c2, config(text))
            assert inc.update([a], [fired(a, t0)], datetime.now(UTC)) == 0
            now = datetime.now(UTC)
            assert inc.update([], [resolved(a, now)], now) == 1
            await outbox(c2).drain()
            c2.close()
        finally:
            await rx.aclose()
        assert pd.actions(a.fingerprint) == ["trigger", "resolve"]
        assert pd.opened == 1 and pd.alerts[a.fingerprint] == "resolved"
        assert pd.triggers()[0]["payload"]["severity"] == "critical"


async def test_pagerduty_400_is_failed_at_once_and_kept_visible(conn: sqlite3.Connection) -> None:
    from monitor.delivery.pagerduty import Config as PagerDutyConfig
    from monitor.delivery.pagerduty import PagerDutyReceiver
    from tests.fake_receivers import FakePagerDuty
    from tests.incident_helpers import KEY

    async with FakePagerDuty() as pd:
        pd.answer(400, times=1)
        rx = PagerDutyReceiver("oncall", PagerDutyConfig.model_validate(
                {"type": "pagerduty", "routing_key": KEY, "url": pd.url, "timeout": "2s"}
            ), ReceiverContext(host="monitor-test"))
        put(conn, notification(n=1), notification(n=2), at=datetime.now(UTC))
        outbox = Outbox(conn, {"oncall": rx})
        try:
            await outbox.drain()
        finally:
            await rx.aclose()
        first, second = list_rows(conn)
        assert (
            first.state == "failed"
            and "400" in first.last_error
            and "Event object is invalid" in first.last_error
        )
        assert KEY not in first.last_error
        assert second.state == "delivered"
        assert len(pd.requests) == 2
        assert sample(outbox, "portal_monitor_notifications_total", receiver="oncall", result="failed") == 1


async def test_our_own_rate_limit_waits_without_counting_a_failure(conn: sqlite3.Connection) -> None:
    """PagerDuty's client-side limit holds a row back: it waits for the slot, the receiver is
    not 'failing' (NotificationDeliveryFailing must not fire in a mass incident), and the
    attempt is not counted toward backoff."""
    clock = Clock()
    pd = FakeReceiver("oncall", clock, plan=[DeliveryError("limit reached", retry_after=7.0, throttled=True)])
    put(conn, notification())
    outbox = Outbox(conn, {"oncall": pd}, now=clock.now, sleep=clock.sleep, rng=random.Random(1))
    await outbox.drain()
    assert [a - T0 for a in pd.attempts] == [timedelta(0), timedelta(seconds=7)]
    assert len(pd.got) == 1
    assert sample(outbox, "portal_monitor_receiver_failing", receiver="oncall") == 0.0
    assert sample(outbox, "portal_monitor_notifications_total", receiver="oncall", result="throttled") == 1.0
    assert sample(outbox, "portal_monitor_notifications_total", receiver="oncall", result="retried") == 0.0
    (row,) = list_rows(conn)
    assert row.attempts == 1


async def test_retry_after_wins_over_a_grown_backoff(conn: sqlite3.Connection) -> None:
    """After many 500s the backoff is minutes long; a 429 saying Retry-After: 5 is tried again
    after 5 s, not after the grown backoff."""
    clock = Clock()
    plan: list[BaseException | None] = [DeliveryError("500", retry_after=None) for _ in range(8)]
    plan.append(DeliveryError("429", retry_after=5))
    rx = FakeReceiver("oncall", clock, plan=plan)
    put(conn, notification())
    await Outbox(conn, {"oncall": rx}, now=clock.now, sleep=clock.sleep, rng=random.Random(3)).drain()
    assert rx.attempts[-1] - rx.attempts[-2] == timedelta(seconds=5)
    assert rx.attempts[-2] - rx.attempts[-3] > timedelta(seconds=60)  # the backoff had grown
    assert len(rx.got) == 1
