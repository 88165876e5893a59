"""Delivery under faults: a PagerDuty outage, kill -9 during deliveries, kill -9 during writes.

(a) PagerDuty answers 500, then 429 with `Retry-After: 60` for two minutes, then recovers; the
    real outbox and PagerDuty receiver over HTTP to the fake, on a fake clock (its `sleep`
    advances time, so the two minutes take milliseconds). Every trigger and resolve of six
    incidents, some opened and resolved during the outage, arrives exactly once, in order.
(b) `kill -9` of a child running the outbox (`killable deliver`) at random points while it
    delivers 50 notifications (25 incidents: trigger + resolve), restarted each time: nothing
    is lost, and every duplicate is the documented at-least-once window (PagerDuty accepted
    the event, the child died before committing `delivered`), so PagerDuty merges it.
(c) `kill -9` of a child writing incidents and deliveries (`killable write`) at random points:
    `PRAGMA integrity_check` is ok and no incident, timeline or outbox row is half-written.
(d) PagerDuty and Slack both answer 503 for 5 minutes during a P1, on virtual time (the outbox
    sleeps on a clock the test moves, one evaluation step at a time, once every worker is
    asleep or done): the escalation step's fallback gets the page within `fallback_after` plus
    one step, and after the recovery every receiver has the trigger and the resolve once.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import statistics
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from monitor.config.loader import load_config_text
from monitor.config.model import Config
from monitor.delivery import build_receivers
from monitor.delivery.outbox import Outbox, list_rows
from monitor.delivery.pagerduty import PagerDutyReceiver
from monitor.incidents.lifecycle import Incidents
from monitor.model import Alert, Notification, ReceiverContext, Transition
from monitor.rules.engine import fingerprint
from monitor.statedb import DB_NAME, open_db
from tests.daemon_proc import ROOT, clean_env
from tests.fake_receivers import FakePagerDuty, FakeSlack
from tests.proof import killable

ROUTING_KEY = "De1iveryR0ut1ngKey0123456789abcd"
T0 = datetime(2025, 12, 5, 9, 0, 0, tzinfo=UTC)
KILLS = 50
RETRY_AFTER_S = 60
INCIDENTS = 25  # x (trigger + resolve) = 50 notifications


def config(pd_url: str) -> Config:
    return load_config_text(f"""
receivers:
  oncall: {{type: pagerduty, routing_key: "{ROUTING_KEY}", url: "{pd_url}", timeout: 2s}}
escalation:
  - {{level: L1, after: 0s, severities: [P1, P2, P3, P4], receivers: [oncall]}}
""", env={})


def alert(n: int) -> Alert:
    labels = {"alertname": "RedisDown", "severity": "P1", "check": f"cache-{n}"}
    return Alert(name="RedisDown", labels=labels, annotations={"summary": f"Redis cache-{n} is down"},
                 severity="P1", value=0.0, vendor=None, fingerprint=fingerprint("RedisDown", labels))


def fired(a: Alert, at: datetime) -> Transition:
    return Transition(a, "firing", at, at)


def resolved(a: Alert, at: datetime) -> Transition:
    return Transition(a, "resolved", at, at)


class ObservedPagerDuty(FakePagerDuty):
    """The fake PagerDuty, also saying how many requests it is handling and connections it holds,
    so a test can wait until everything a killed client sent has been answered; `on_arrival` is
    called once, when the next request arrives (before it is read or answered)."""

    def __init__(self) -> None:
        super().__init__()
        self.handling = 0
        self.on_arrival: Callable[[], object] | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self.on_arrival is not None:
            hook, self.on_arrival = self.on_arrival, None
            hook()
        self.handling += 1
        try:
            return await super()._handle(request)
        finally:
            self.handling -= 1

    @property
    def connections(self) -> int:
        runner = self._runner
        return len(runner.server.connections) if runner is not None and runner.server is not None else 0

    async def settle(self, timeout: float = 5.0) -> None:
        """Until no connection is open and no request is being handled."""
        async with asyncio.timeout(timeout):
            while self.connections or self.handling:
                await asyncio.sleep(0.001)  # the dead client's EOF reaches the server within a few loop turns
            for _ in range(5):
                await asyncio.sleep(0)


@pytest.fixture
def quiet() -> Iterator[list[dict[str, Any]]]:
    """This process's log events, captured instead of printed (the numbers are the output)."""
    with capture_logs() as events:
        yield events


# ---------------------------------------------------------------- (a) PagerDuty outage


class FakeTime:
    """The outbox's clock; `sleep` moves it and runs `on_tick` (the outage's script)."""

    def __init__(self) -> None:
        self.t = T0
        self.on_tick: Callable[[], None] = lambda: None

    def now(self) -> datetime:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)
        self.on_tick()
        await asyncio.sleep(0)


class Timed:
    """The PagerDuty receiver, noting the fake time and PagerDuty's answer of every attempt."""

    def __init__(self, inner: PagerDutyReceiver, clock: FakeTime, pd: FakePagerDuty) -> None:
        self.name = inner.name
        self.timeout_s = inner.cfg.timeout
        self.attempts: list[tuple[float, int | None]] = []  # (seconds after T0, PagerDuty's status)
        self._inner, self._clock, self._pd = inner, clock, pd

    async def send(self, notification: Notification) -> None:
        at, before = (self._clock.t - T0).total_seconds(), len(self._pd.requests)
        try:
            await self._inner.send(notification)
        finally:
            rec = self._pd.requests[-1] if len(self._pd.requests) > before else None
            self.attempts.append((at, rec.status if rec else None))

    async def aclose(self) -> None:
        await self._inner.aclose()


async def test_pagerduty_500_then_429_for_two_minutes_delivers_everything_once_in_order(
        tmp_path: Path, quiet: list[dict[str, Any]], record_property) -> None:
    started = time.perf_counter()
    async with FakePagerDuty() as pd:
        cfg = config(pd.url)
        conn = open_db(tmp_path / "state")
        incidents = Incidents(conn, cfg)
        clock = FakeTime()
        receiver = Timed(PagerDutyReceiver("oncall", cfg.root.receivers["oncall"], ReceiverContext(host="proof")), clock, pd)
        outbox = Outbox(conn, {"oncall": receiver}, now=clock.now, sleep=clock.sleep, rng=random.Random(6))
        a = [alert(i) for i in range(6)]
        done: set[str] = set()

        def script() -> None:
            """The outage, in fake time: 500 for 30 s, 429 + Retry-After: 60 until 2m30s, then fine;
            incidents keep changing meanwhile."""
            s = (clock.t - T0).total_seconds()
            if s >= 30 and "429" not in done:
                done.add("429")
                pd.answer(429, retry_after=str(RETRY_AFTER_S))
            if s >= 150 and "ok" not in done:
                done.add("ok")
                pd.reset()
            if s >= 20 and "t20" not in done:  # two resolve and a new one fires, during the 500s
                done.add("t20")
                incidents.update(a[2:5], [resolved(a[0], clock.t), resolved(a[1], clock.t), fired(a[4], clock.t)],
                                 clock.t)
            if s >= 90 and "t90" not in done:  # during the 429s
                done.add("t90")
                incidents.update(a[3:6], [resolved(a[2], clock.t), fired(a[5], clock.t)], clock.t)

        clock.on_tick = script
        pd.answer(500)
        incidents.update(a[:4], [fired(x, T0) for x in a[:4]], T0)
        async with asyncio.timeout(30):  # seconds of real time: the fake clock covers minutes
            await outbox.drain()
            assert {"429", "ok", "t20", "t90"} <= done
            incidents.update([], [resolved(x, clock.t) for x in a[3:6]], clock.t)  # after the recovery
            await outbox.drain()
        await receiver.aclose()

        keys = [x.fingerprint for x in a]
        assert {k: pd.actions(k) for k in keys} == {k: ["trigger", "resolve"] for k in keys}
        assert pd.opened == 6 and set(pd.alerts.values()) == {"resolved"}
        assert [r.state for r in list_rows(conn)] == ["delivered"] * 12
        statuses = Counter(status for _, status in receiver.attempts)
        assert statuses[500] >= 3 and statuses[429] >= 2 and statuses[202] == 12
        refused = [(at, status) for at, status in receiver.attempts if status != 202]
        assert receiver.attempts[:len(refused)] == refused  # the head row, retried until the outage ended
        for n, ((at, status), (next_at, _)) in enumerate(zip(refused, receiver.attempts[1:]), start=1):
            backoff = min(300.0, 2.0 ** (n - 1))  # base 1 s, doubling, capped at 5 min; jitter in [d/2, d]
            if status == 429:  # the peer's Retry-After, as it said, whatever the backoff had grown to
                assert next_at - at == pytest.approx(RETRY_AFTER_S), f"attempt {n + 1} at {next_at} s"
            else:
                assert backoff / 2 <= next_at - at <= backoff + 1e-6, f"attempt {n + 1} at {next_at} s"
        assert len(refused) <= 9  # 2.5 minutes of outage cost 9 requests at most: no storm
        recovered = next(at for at, status in receiver.attempts if status == 202)
        conn.close()
    elapsed = time.perf_counter() - started
    record_property("outage_attempts", dict(statuses))
    print(f"\nPagerDuty outage 0-150 s (fake time): {statuses[500]} x 500, {statuses[429]} x 429 (Retry-After "
          f"{RETRY_AFTER_S} s honoured), {statuses[202]} accepted; first delivery at +{recovered:.0f} s "
          f"({recovered - 150:.0f} s after PagerDuty recovered); "
          f"6 incidents, 12 events, each exactly once, in order; {elapsed:.2f} s real")


# ---------------------------------------------------------------- (b) kill -9 while delivering


async def spawn(mode: str, state_dir: Path, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-u", "-m", "tests.proof.killable", mode, str(state_dir), *args, cwd=ROOT,
        env=clean_env(PROOF_ROUTING_KEY=ROUTING_KEY), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


@contextlib.asynccontextmanager
async def running(child: asyncio.subprocess.Process) -> AsyncIterator[asyncio.subprocess.Process]:
    """The child, SIGKILLed on the way out if it still runs: a failing test leaves no process behind."""
    try:
        yield child
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()


def outbox_rows(db: sqlite3.Connection) -> dict[int, tuple[str, str, str]]:
    """Row id -> (dedup_key, kind, state), read by the parent between two runs of the child. A
    delivered row no longer holds its dedup key (only sending needs it): its incident's is the one
    it was sent with, which a pending row shows."""
    rows = db.execute(
        "SELECT o.id, o.dedup_key, i.dedup_key, o.kind, o.state FROM outbox o JOIN incidents i ON i.id = o.incident_id"
    ).fetchall()
    for row_id, own, incident_key, _, st in rows:
        assert st == "delivered" or own == incident_key, f"row {row_id}: dedup key {own} != its incident's"
    return {row_id: (own or incident_key, kind, st) for row_id, own, incident_key, kind, st in rows}


def queue_incidents(conn: sqlite3.Connection, pd_url: str, n: int, rng: random.Random) -> list[Alert]:
    """`n` incidents opened, then resolved in random order: 2n notifications queued for `oncall`."""
    alerts = [alert(i) for i in range(n)]
    start = datetime.now(UTC) - timedelta(minutes=5)  # the child delivers on the real clock (max_age 24 h)
    closing = [resolved(x, start + timedelta(minutes=4)) for x in alerts]
    rng.shuffle(closing)
    incidents = Incidents(conn, config(pd_url))
    incidents.update(alerts, [fired(x, start) for x in alerts], start)
    incidents.update([], closing, start + timedelta(minutes=4))
    return alerts


async def delivery_cycle(state_dir: Path) -> float:
    """Median seconds between two requests of a `killable deliver` child left alone (20 notifications)."""
    async with FakePagerDuty() as pd:
        conn = open_db(state_dir)
        queue_incidents(conn, pd.url, 10, random.Random(0))
        conn.close()
        async with running(await spawn("deliver", state_dir, pd.url)) as child, asyncio.timeout(30):
            await child.communicate()
        assert child.returncode == 0 and len(pd.events) == 20
        arrivals = [r.at for r in pd.requests]
        return statistics.median(b - a for a, b in zip(arrivals, arrivals[1:], strict=False))


async def test_kill_9_at_random_points_of_50_deliveries_loses_nothing(
        tmp_path: Path, quiet: list[dict[str, Any]], record_property) -> None:
    """Each kill lands at a uniformly random moment of one delivery cycle, counted from the
    arrival of the run's first request at PagerDuty (so before or after PagerDuty's answer,
    before or after the child's commit), or at the run's second request if that comes first:
    a killed run completes at most one delivery, so the 50 kills spread over the 50 deliveries."""
    rng = random.Random(50)
    loop = asyncio.get_running_loop()
    cycle = await delivery_cycle(tmp_path / "calibration")
    state = tmp_path / "state"
    pd = ObservedPagerDuty()
    await pd.start()
    try:
        conn = open_db(state)
        alerts = queue_incidents(conn, pd.url, INCIDENTS, rng)
        assert len(outbox_rows(conn)) == 2 * INCIDENTS

        accepted: Counter[tuple[str, str]] = Counter()  # (dedup_key, action) -> events PagerDuty accepted
        windows: Counter[int] = Counter()  # row id -> kills that left it accepted by PagerDuty but pending
        kills = runs = by_killed_runs = 0
        started = time.perf_counter()
        while True:
            runs += 1
            assert runs <= 4 * KILLS, "the child makes no progress"
            async with running(await spawn("deliver", state, pd.url)) as child:
                if kills < KILLS:
                    sent: list[bool] = []

                    def kill(child: asyncio.subprocess.Process = child, sent: list[bool] = sent) -> None:
                        # once: a second kill() of a dead child that asyncio has not reaped yet
                        # reaps it inside Popen.send_signal (its poll()), and asyncio's watcher
                        # then reports exit status 255 ("Unknown child process pid"); two kills
                        # (the timer and the next arrival) meet when the machine is busy
                        if child.returncode is None and not sent:
                            sent.append(True)
                            child.kill()

                    def arm(delay: float = rng.uniform(0, cycle), kill: Callable[[], None] = kill) -> None:
                        loop.call_later(delay, kill)
                        pd.on_arrival = kill  # a second request came first: the first delivery is over

                    pd.on_arrival = arm
                async with asyncio.timeout(30):  # killed, or finished: nothing left to deliver
                    _, err = await child.communicate()
                pd.on_arrival = None
            kills += child.returncode == -9
            assert child.returncode in (0, -9), f"the child failed ({child.returncode}): {err.decode()[-2000:]}"
            await pd.settle()
            now_accepted = Counter((e["dedup_key"], e["event_action"]) for e in pd.events)
            for row_id, (key, kind, st) in outbox_rows(conn).items():
                if st == "delivered":
                    assert now_accepted[(key, kind)] >= 1, f"row {row_id} marked delivered, PagerDuty never got it"
                elif now_accepted[(key, kind)] > accepted[(key, kind)]:
                    windows[row_id] += 1  # sent in this run, accepted, not committed: will be sent again
            accepted = now_accepted
            if child.returncode == 0:
                break
            by_killed_runs = sum(st == "delivered" for _, _, st in outbox_rows(conn).values())
        elapsed = time.perf_counter() - started

        rows = outbox_rows(conn)
        assert all(st == "delivered" for _, _, st in rows.values()), "a notification was not delivered"
        keys = [x.fingerprint for x in alerts]
        for k in keys:  # in order per key, each at least once
            assert list(dict.fromkeys(pd.actions(k))) == ["trigger", "resolve"]
        assert pd.opened == INCIDENTS  # a repeated trigger merged into its open alert: nobody paged twice
        assert kills == KILLS, f"only {kills} kills: the queue emptied first"
        duplicates = {row_id: accepted[(k, kind)] - 1 for row_id, (k, kind, _) in rows.items()
                      if accepted[(k, kind)] > 1}
        # every duplicate is the at-least-once window, and every window case was re-sent exactly once
        assert duplicates == {row_id: n for row_id, n in windows.items() if n}
        dup_triggers = sum(n for row_id, n in duplicates.items() if rows[row_id][1] == "trigger")
        conn.close()
    finally:
        await pd.close()
    record_property("kill9_kills", kills)
    record_property("kill9_duplicates", sum(duplicates.values()))
    dups = sum(duplicates.values())
    print(f"\nkill -9 during delivery: {kills} kills over {runs} runs (one delivery cycle: {cycle * 1000:.1f} ms), "
          f"{2 * INCIDENTS} notifications all delivered ({by_killed_runs} by runs that were then killed), "
          f"{len(pd.events)} events accepted by PagerDuty: {dups} duplicates ({dup_triggers} triggers, "
          f"{dups - dup_triggers} resolves), every one a kill after PagerDuty accepted the event and before "
          f"the child committed it; opened {pd.opened} alerts for {INCIDENTS} incidents; {elapsed:.1f} s")


# ---------------------------------------------------------------- (c) kill -9 while writing


async def first_of(*aws: Any) -> None:
    """Until the first of `aws` is done (the others are cancelled)."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def read_markers(stream: asyncio.StreamReader, into: list[str], first: asyncio.Event) -> None:
    """The child's `B n` / `C n` lines (its log lines are skipped), until it dies."""
    while line := await stream.readline():
        text = line.decode(errors="replace").strip()
        if text[:2] in ("B ", "C ") and text[2:].isdigit():
            into.append(text)
            first.set()


async def test_kill_9_during_writes_leaves_a_sound_database(tmp_path: Path, record_property) -> None:
    rng = random.Random(9)
    state = tmp_path / "state"
    inside = kills = 0
    for _ in range(20):
        markers: list[str] = []
        first = asyncio.Event()
        async with running(await spawn("write", state)) as child:
            assert child.stdout is not None
            reader = asyncio.create_task(read_markers(child.stdout, markers, first))
            async with asyncio.timeout(20):
                await first_of(first.wait(), child.wait())
            assert child.returncode is None, (await child.communicate())[1].decode()[-2000:]
            await asyncio.sleep(rng.uniform(0.002, 0.08))  # a random point of the writing
            child.kill()
            kills += 1
            await child.wait()
            await reader
        inside += markers[-1].startswith("B")  # killed inside Incidents.update (its transaction)

    db = sqlite3.connect(state / DB_NAME)
    try:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        n_incidents, n_resolved = db.execute(
            "SELECT count(*), count(resolved_at) FROM incidents").fetchone()
        assert n_incidents > 0 and n_incidents % killable.BATCH == 0  # every update whole, or not at all
        assert n_resolved % killable.BATCH == 0
        receivers = len(killable.WRITER_RECEIVERS)
        per_incident = db.execute("""
            SELECT i.id, i.state,
              (SELECT count(*) FROM timeline t WHERE t.incident_id = i.id AND t.kind = 'detected'),
              (SELECT count(*) FROM timeline t WHERE t.incident_id = i.id AND t.kind = 'fired'),
              (SELECT count(*) FROM timeline t WHERE t.incident_id = i.id AND t.kind = 'resolved'),
              (SELECT count(*) FROM outbox o WHERE o.incident_id = i.id AND o.kind = 'trigger'),
              (SELECT count(*) FROM outbox o WHERE o.incident_id = i.id AND o.kind = 'resolve'),
              (SELECT count(*) FROM incident_receivers r WHERE r.incident_id = i.id),
              (SELECT count(*) FROM outbox o WHERE o.incident_id = i.id AND o.state = 'delivered'),
              (SELECT count(*) FROM timeline t WHERE t.incident_id = i.id AND t.kind = 'notified')
            FROM incidents i""").fetchall()
        for iid, st, detected, fired_, resolved_, triggers, resolves, reached, delivered, notified in per_incident:
            closed = st == "resolved"
            assert (detected, fired_, resolved_) == (1, 1, int(closed)), f"incident {iid}: timeline half-written"
            assert (triggers, reached) == (receivers, receivers), f"incident {iid}: triggers half-written"
            assert resolves == (receivers if closed else 0), f"incident {iid}: resolves half-written"
            assert delivered == notified, f"incident {iid}: a delivery without its timeline entry, or the reverse"
        orphans = db.execute("SELECT count(*) FROM outbox WHERE incident_id NOT IN (SELECT id FROM incidents)")
        assert orphans.fetchone() == (0,)
    finally:
        db.close()
    record_property("write_kills", kills)
    record_property("write_kills_inside_update", inside)
    print(f"\nkill -9 during writes: {kills} kills ({inside} inside an Incidents.update transaction), "
          f"{n_incidents} incidents ({n_resolved} resolved): integrity_check ok, nothing half-written")


# ---------------------------------------------------------------- (d) PagerDuty and Slack down 5 minutes

FALLBACK_AFTER_S = 120.0
STEP_S = 1.0  # the daemon evaluates at least every second: one step of virtual time
OUTAGE_S = 300.0


def fallback_config(pd_url: str, slack_url: str) -> Config:
    return load_config_text(f"""
fallback_after: 2m
receivers:
  oncall:  {{type: pagerduty, routing_key: "{ROUTING_KEY}", url: "{pd_url}", timeout: 2s}}
  chat:    {{type: slack, url: "{slack_url}", timeout: 2s}}
  console: {{type: log}}
escalation:
  - {{level: L1, after: 0s, severities: [P1, P2, P3, P4], receivers: [oncall, chat], fallback: [console]}}
""", env={})


class VirtualTime:
    """Time that moves only when the test moves it. `sleep` waits until the clock reaches its
    deadline; `advance` moves the clock and wakes the sleepers that are due. `asleep` holds
    the tasks waiting on the clock, so the test can wait until every worker is either asleep
    or done (`settled`) before moving time again: a condition, not a real-time margin."""

    def __init__(self) -> None:
        self.t = T0
        self.asleep: dict[asyncio.Task[Any], tuple[datetime, asyncio.Future[None]]] = {}

    def now(self) -> datetime:
        return self.t

    async def sleep(self, seconds: float) -> None:
        task = asyncio.current_task()
        assert task is not None
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.asleep[task] = (self.t + timedelta(seconds=seconds), done)
        try:
            await done
        finally:
            self.asleep.pop(task, None)

    def advance(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)
        for task, (deadline, done) in list(self.asleep.items()):
            if deadline <= self.t:
                del self.asleep[task]
                done.set_result(None)


async def settled(outbox: Outbox, clock: VirtualTime) -> None:
    """Until every receiver's worker is asleep on the virtual clock or finished (new rows start
    their workers first), re-checked as tasks finish; at most 30 s of real time."""
    async with asyncio.timeout(30):
        while True:
            await outbox._start_workers()
            busy = [t for t in outbox._workers.values() if not t.done() and t not in clock.asleep]
            if not busy:
                return
            await asyncio.wait(busy, timeout=0.005)  # woken by a finished task, else re-check the clock


async def test_pagerduty_and_slack_down_5_minutes_the_fallback_pages_and_everything_arrives_once(
        tmp_path: Path, quiet: list[dict[str, Any]], record_property) -> None:
    """A P1 fires while PagerDuty and Slack both answer 503, for 5 minutes of virtual time. The
    escalation step's fallback (`console`, the log receiver) gets the page once its receivers
    have failed it for `fallback_after` (2 min), within one evaluation step of it; each failed
    attempt is a warning naming the incident; the undelivered pages are listed (banner, API)
    until the outage ends; then PagerDuty and Slack get the trigger, and later every receiver
    the resolve, each exactly once."""
    started = time.perf_counter()
    async with FakePagerDuty() as pd, FakeSlack() as slack:
        cfg = fallback_config(pd.url, slack.url)
        conn = open_db(tmp_path / "state")
        incidents = Incidents(conn, cfg)
        clock = VirtualTime()
        receivers = build_receivers(cfg.root.receivers, host="proof", external_url=None, now=clock.now)
        outbox = Outbox(conn, receivers, now=clock.now, sleep=clock.sleep, rng=random.Random(5))
        a = Alert(name="PortalUnreachable", labels={"alertname": "PortalUnreachable", "severity": "P1",
                                                     "check": "bff_health"},
                  annotations={"summary": "The portal does not answer"}, severity="P1", value=0.0, vendor=None,
                  fingerprint=fingerprint("PortalUnreachable", {"check": "bff_health"}))
        pd.answer(503)
        slack.answer(503)
        seen: dict[str, list[tuple[float, str]]] = {"oncall": [], "chat": [], "console": []}  # (s after T0, kind)
        undelivered_at: dict[float, list[str]] = {}
        resolve_at = OUTAGE_S + 60

        def note_arrivals(s: float) -> None:
            got = {"oncall": [e["event_action"] for e in pd.events],
                   "chat": ["resolve" if "\nStatus: Resolved\n" in m["text"] else "trigger" for m in slack.messages],
                   "console": [e["kind"] for e in quiet if e["event"] == "notification"]}
            for name, kinds in got.items():
                seen[name] += [(s, k) for k in kinds[len(seen[name]):]]

        s = 0.0
        incidents.update([a], [fired(a, T0)], T0)
        async with asyncio.timeout(120):  # real seconds for 30 virtual minutes
            while s < 1800:
                await settled(outbox, clock)
                note_arrivals(s)
                if s in (60.0, 180.0, OUTAGE_S - 1):
                    undelivered_at[s] = sorted(p.receiver for p in incidents.undelivered_pages())
                if not list_rows(conn, state="pending") and s > resolve_at:
                    break
                clock.advance(STEP_S)
                s += STEP_S
                if s == OUTAGE_S:
                    pd.reset()
                    slack.reset()
                firing = [] if s >= resolve_at else [a]
                incidents.update(firing, [resolved(a, clock.t)] if s == resolve_at else [], clock.t)
        for r in receivers.values():
            await r.aclose()

        fallback = [t for t, kind in seen["console"] if kind == "trigger"]
        assert len(fallback) == 1, seen
        assert FALLBACK_AFTER_S <= fallback[0] <= FALLBACK_AFTER_S + STEP_S, seen
        for name in ("oncall", "chat", "console"):
            assert [k for _, k in seen[name]] == ["trigger", "resolve"], (name, seen)
        assert min(t for t, _ in seen["oncall"]) >= OUTAGE_S and min(t for t, _ in seen["chat"]) >= OUTAGE_S
        assert pd.opened == 1 and pd.alerts == {a.fingerprint: "resolved"}
        assert {r.state for r in list_rows(conn)} == {"delivered"}
        assert undelivered_at == {60.0: ["chat", "oncall"], 180.0: ["chat", "oncall"],
                                  OUTAGE_S - 1: ["chat", "oncall"]}
        assert incidents.undelivered_pages() == []
        warnings = [e for e in quiet if e["event"] == "notification_retry"]
        assert warnings and all(e["log_level"] == "warning" for e in warnings)
        assert {e["receiver"] for e in warnings} == {"oncall", "chat"}
        first_pd = next(e for e in warnings if e["receiver"] == "oncall")
        assert first_pd["message"].startswith(
            "page for incident 1 (P1 PortalUnreachable) not delivered to oncall: pagerduty receiver 'oncall'")
        assert ": HTTP 503" in first_pd["message"] and first_pd["message"].endswith(
            f", attempt 1, next in {first_pd['retry_in_s']:.1f}s")
        refused = Counter(r.status for r in [*pd.requests, *slack.requests] if r.status != 202 and r.status != 200)
        assert set(refused) == {503} and refused[503] <= 2 * 10  # backoff: no storm during 5 minutes
        conn.close()
    elapsed = time.perf_counter() - started
    record_property("fallback_at_s", fallback[0])
    print(f"\nPagerDuty and Slack down {OUTAGE_S:.0f} s (virtual): fallback console paged at +{fallback[0]:.0f} s "
          f"(fallback_after {FALLBACK_AFTER_S:.0f} s), {refused[503]} refused attempts, PagerDuty trigger at "
          f"+{seen['oncall'][0][0]:.0f} s, Slack at +{seen['chat'][0][0]:.0f} s; trigger and resolve once each "
          f"to all three; {elapsed:.2f} s real")
