"""One row's world: the fakes, the derived config, the real daemon, and waits on what it paged.

    rig = Rig(workdir, redis=redis_up, postgres=postgres_up, process_pattern=...)
    await rig.start()                    # fakes up, config derived and written, daemon ready and quiet
    rig.redis.stop()                     # inject the fault (servers, fakes, files: see tests/)
    l1 = await rig.trigger("RedisDown", "oncall")               # the first page
    await rig.trigger("RedisDown", "management", timeout=...)    # L3, 1 h later (6 s)
    rig.redis.start()
    await rig.resolved(l1.dedup_key)                            # every paged receiver got the resolve
    rig.check(l1, triggers={("oncall", "L1"), ("lead", "L2"), ("management", "L3")})
    await rig.close()

Waiting is for events (a page arriving, a metric reaching a value), never a guess of how
long the daemon needs: each wait is bounded by `PAGE_TIMEOUT` (a minute), which only a hang
reaches, and names what it waited for. The only timed waits are the config's own shrunk
timers: `hold(...)` is how long an outage lasts; `past(...)` waits out a step's time and then
for the condition that shows it did *not* happen (the daemon has evaluated after it and
delivered everything it queued). A time the row asserts is measured from the daemon's own
record where one exists (an incident's `fired_at`, an alert's `no_data_since`, from the API),
not from when the test happened to see a page: a busy machine delivers late, never early, so
"not before its step" holds however slow the machine is. A step the row may or may not
reach, depending on how fast the machine clears the fault, is expected exactly when the
daemon logged that escalation (`escalated(...)`); a re-notification is accepted only at its
cadence. `rig.incidents()` reads what the daemon did with each alert (opened, held and why,
released, resolved) from its log; `rig.story()` is pages + incidents + check failures, the
message of every failed assertion.

A daemon that ignores SIGTERM gives a `DaemonDidNotStop` warning with its tasks' stacks.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import warnings
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from redis.asyncio import Redis

from tests.daemon_proc import DaemonProcess, clean_env
from tests.fake_receivers import FakePagerDuty, FakeWebhook
from tests.fakes import FakeBff, FakeWhmcs
from tests.faults.bff_log import BffLog
from tests.faults.derive import shrunk, write_config
from tests.faults.pages import LEAD_KEY, ONCALL_KEY, Page, check_incident, describe, ledger
from tests.servers import PostgresServer, RedisServer

WHMCS_IDENTIFIER = "fault-matrix-identifier"
WHMCS_SECRET = "fault-matrix-whmcs-secret"
MANAGEMENT_SECRET = "fault-matrix-management-hmac"
VENDOR_SECRET = "fault-matrix-vendor-hmac"
API_TOKEN = "fault-matrix-api-token-0123456789"  # MONITOR_API_TOKEN: POST /-/reload

# Escalation steps of the shipped file (runbook matrix), in test seconds.
L2_AFTER = shrunk("30m")
L3_AFTER = shrunk("1h")
STEP_AFTER = {"L1": 0.0, "L2": L2_AFTER, "L3": L3_AFTER, "L4": 0.0}
RENOTIFY = {sev: shrunk(v) for sev, v in {"P1": "30m", "P2": "1h", "P3": "4h", "P4": "24h"}.items()}
# Bounds of the waits, in real seconds: only a hang reaches them. A page the row expects comes
# within a second or two of its time on an idle machine, within a few on two cores kept busy.
PAGE_TIMEOUT = 60.0
START_TIMEOUT = 60.0  # the daemon's `started` log line
STOP_TIMEOUT = 30.0  # SIGTERM to exit (a clean stop takes ~0.2 s; receivers drain within their timeouts)
DUMP_TIMEOUT = 10.0  # SIGUSR1 to the end of the task dump
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=30)  # one request to the daemon's API
TASKDUMP = Path(__file__).resolve().parent / "taskdump"
TASKDUMP_END = "=== end of task dump ===\n"  # taskdump/sitecustomize.py's last line


def wall(perf: float) -> float:
    """A `time.perf_counter()` reading (a `Page.at`) as Unix time, to compare with the daemon's times."""
    return perf + time.time() - time.perf_counter()


def unix(iso: str) -> float:
    """An ISO-8601 time of the daemon's API as Unix time."""
    return datetime.fromisoformat(iso).timestamp()


class DaemonDidNotStop(UserWarning):
    """The daemon ignored SIGTERM (see `Rig.close`)."""


class Rig:
    """Fakes + derived config + daemon for one row (see the module docstring)."""

    def __init__(self, workdir: Path, *, redis: RedisServer, postgres: PostgresServer,
                 process_pattern: str, extra_rules: Sequence[Mapping[str, Any]] = (),
                 platform_events: bool = False, daemon_args: Sequence[str] = ()) -> None:
        assert len(ONCALL_KEY) == len(LEAD_KEY) == 32
        self.workdir = workdir
        self.redis = redis
        self.postgres = postgres
        self.process_pattern = process_pattern
        self.pd = FakePagerDuty()
        self.management = FakeWebhook(secret=MANAGEMENT_SECRET)
        self.vendors = FakeWebhook(secret=VENDOR_SECRET)
        self.whmcs = FakeWhmcs(identifier=WHMCS_IDENTIFIER, secret=WHMCS_SECRET)
        self.bff = FakeBff()
        self.log = BffLog(workdir / "bff-logs")
        self.config_path = workdir / "alert_rules.test.yaml"
        self.extra_rules = list(extra_rules)
        self.platform_events = platform_events  # the row writes replay ids: their rules stay on
        self.daemon_args = tuple(daemon_args)  # `portal-monitor run` options (--watch)
        self.notes: list[str] = []
        self._daemon: DaemonProcess | None = None
        self._fired_at: dict[str, float] = {}  # dedup key -> its incident's fired_at (Unix time)
        self._closed = False
        self._exit: int | None = None

    @property
    def daemon(self) -> DaemonProcess:
        assert self._daemon is not None, "start() the rig first"
        return self._daemon

    @asynccontextmanager
    async def redis_client(self) -> AsyncIterator[Redis]:
        """A client for the row's own Redis commands (not the daemon's), closed on exit."""
        r = Redis.from_url(self.redis.url, socket_timeout=5, socket_connect_timeout=5)
        try:
            yield r
        finally:
            await r.aclose()

    # -------------------------------------------------------------- life cycle

    def env(self) -> dict[str, str]:
        """The environment the shipped file reads, pointing at this row's servers and fakes."""
        return clean_env(
            PYTHONPATH=os.pathsep.join(p for p in (str(TASKDUMP), os.environ.get("PYTHONPATH", "")) if p),
            PORTAL_MONITOR_LISTEN="127.0.0.1:0",
            PORTAL_MONITOR_STATE_DIR=str(self.workdir / "state"),
            REDIS_URL=self.redis.url,
            DATABASE_URL=self.postgres.dsn,
            WHMCS_API_URL=self.whmcs.url,
            WHMCS_API_IDENTIFIER=WHMCS_IDENTIFIER,
            WHMCS_API_SECRET=WHMCS_SECRET,
            BFF_HEALTH_URL=self.bff.url,
            BFF_PROCESS_PATTERN=self.process_pattern,
            BFF_LOG_DIR=str(self.log.dir),
            PAGERDUTY_ROUTING_KEY=ONCALL_KEY,
            PAGERDUTY_LEAD_ROUTING_KEY=LEAD_KEY,
            MANAGEMENT_WEBHOOK_URL=self.management.url,
            MANAGEMENT_WEBHOOK_SECRET=MANAGEMENT_SECRET,
            VENDOR_WEBHOOK_URL=self.vendors.url,
            VENDOR_WEBHOOK_SECRET=VENDOR_SECRET,
            MONITOR_API_TOKEN=API_TOKEN,
            FAULT_MATRIX_TASKDUMP=str(self.taskdump_path),
        )

    @property
    def taskdump_path(self) -> Path:
        """Where the daemon writes its tasks' stacks on SIGUSR1 (see `taskdump/`)."""
        return self.workdir / "taskdump.txt"

    async def start(self) -> None:
        """Fakes up, config derived from the shipped file, daemon started, every check run
        once, and nothing pending or firing: the row starts from a healthy, quiet portal."""
        for fake in (self.pd, self.management, self.vendors, self.whmcs, self.bff):
            await fake.start()
        self.notes = write_config(self.config_path, pagerduty_url=self.pd.url, log_dir=self.log.dir,
                                  extra_rules=self.extra_rules, platform_events=self.platform_events)
        self._daemon = await DaemonProcess.start(self.config_path, *self.daemon_args, env=self.env(),
                                                 timeout=START_TIMEOUT)
        await self.wait(self._ready, "the daemon to be ready (every check run once)")

        async def quiet() -> bool:
            return await self.alerts() == []
        await self.wait(quiet, "the healthy portal to have no pending or firing alert")
        assert self.pages() == [], describe(self.pages())

    async def close(self) -> int | None:
        """Stop the daemon (SIGTERM; its exit code, None if it had to be killed) and the fakes.

        A daemon still running `STOP_TIMEOUT` s after SIGTERM is a defect of the daemon, not of
        the row: it gets SIGUSR1 (its asyncio tasks' stacks, see `taskdump/`), then SIGKILL, and
        the row ends with a `DaemonDidNotStop` warning carrying those stacks, so that the
        matrix stays about paging (`-W error::tests.faults.harness.DaemonDidNotStop` makes it
        fail instead)."""
        if self._closed:
            return self._exit
        self._closed = True
        try:
            if self._daemon is not None:
                self._exit = await self._stop_daemon(self._daemon)
        finally:
            for fake in (self.pd, self.management, self.vendors, self.whmcs, self.bff):
                await fake.close()
        return self._exit

    async def _stop_daemon(self, d: DaemonProcess) -> int | None:
        if d.proc.returncode is not None:
            return d.proc.returncode
        d.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(STOP_TIMEOUT):
                return await d.proc.wait()
        except TimeoutError:
            pass
        d.proc.send_signal(signal.SIGUSR1)
        dumped = await self._dumped()
        await d.kill()
        tail = "\n".join(json.dumps(e) for e in d.events[-10:])
        tasks = self.taskdump_path.read_text(errors="replace") if self.taskdump_path.exists() else ""
        if not dumped:
            tasks += (f"\n(no complete task dump within {DUMP_TIMEOUT}s of SIGUSR1: the main thread never ran "
                      "the handler, blocked outside Python?)")
        warnings.warn(DaemonDidNotStop(
            f"the daemon did not exit within {STOP_TIMEOUT}s of SIGTERM (killed); its last events:\n{tail}\n"
            f"its tasks:\n{tasks[-12000:]}\nits stderr:\n{d.stderr.decode(errors='replace')[-4000:]}"),
            stacklevel=1)
        return None

    async def _dumped(self) -> bool:
        """Until the daemon's SIGUSR1 handler has written its whole task dump (False after
        `DUMP_TIMEOUT` s: it never ran)."""
        def complete() -> bool:
            try:
                return self.taskdump_path.read_text(errors="replace").endswith(TASKDUMP_END)
            except FileNotFoundError:
                return False
        try:
            async with asyncio.timeout(DUMP_TIMEOUT):
                while not complete():
                    await asyncio.sleep(0.02)  # re-read as the handler writes; bounded above
        except TimeoutError:
            return False
        return True

    @asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        """The daemon stopped (SIGSTOP) inside the block and continued (SIGCONT) after it, so
        that changes the row makes one by one reach it as one, as a real fault makes them at
        once (seventeen sessions closing take longer than an evaluation on a busy machine).
        Nothing inside may wait on the daemon."""
        self.daemon.proc.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self.daemon.proc.send_signal(signal.SIGCONT)

    # -------------------------------------------------------------- reading the daemon

    async def _get(self, path: str) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as s, s.get(
                self.daemon.base + path, timeout=HTTP_TIMEOUT) as r:
            body = await r.text()
        try:
            return r.status, json.loads(body)
        except ValueError:
            return r.status, body

    async def _ready(self) -> bool:
        status, _ = await self._get("/-/ready")
        return status == 200

    async def alerts(self) -> list[tuple[str, str]]:
        """(alertname, state) of every pending or firing alert, from /metrics."""
        found = []
        for (name, labels), value in (await self.daemon.metrics()).items():
            if name == "portal_alerts" and value > 0:
                d = dict(labels)
                found.append((d["alertname"], d["state"]))
        return sorted(found)

    async def metric(self, name: str, **labels: str) -> float | None:
        return await self.daemon.metric(name, **labels)

    def checks_text(self) -> str:
        """The daemon's check failures so far, for assertion messages."""
        failed = [e for e in self.daemon.events if e.get("event") in ("check_failed", "check_recovered")]
        return "\n".join(f"  {e.get('event')} {e.get('check')} {e.get('reason', '')} {e.get('error', '')}"
                         for e in failed[-20:])

    def incidents(self) -> dict[str, list[str]]:
        """What happened to each incident, from the daemon's log, by alert: the alert name and
        its `check`, `component` or `channel` labels (`RedisDown{check=cache}`) -> 'opened',
        'held: <reason>', 'released', 'resolved' (an alert that opened twice lists both)."""
        labels_of = {e["dedup_key"]: e.get("labels", {}) for e in self.daemon.events
                     if e.get("event") == "alert_firing"}
        names: dict[int, str] = {}
        out: dict[str, list[str]] = {}
        for e in self.daemon.events:
            kind = e.get("event")
            if kind == "incident_opened":
                names[e["incident_id"]] = alert_key(e["alertname"], labels_of.get(e["dedup_key"], {}))
                out.setdefault(names[e["incident_id"]], []).append("opened")
            elif kind in ("incident_held", "incident_released", "incident_resolved"):
                name = names.get(e["incident_id"], f"incident {e['incident_id']}")
                what = {"incident_held": f"held: {e.get('reason')}", "incident_released": "released",
                        "incident_resolved": "resolved"}[kind]
                out.setdefault(name, []).append(what)
        return out

    # -------------------------------------------------------------- pages

    def pages(self) -> list[Page]:
        return ledger(self.pd, (self.management, self.vendors))

    def story(self) -> str:
        """Pages, incidents and check failures so far: the message of a failed assertion."""
        escalated = [(e.get("incident_id"), e.get("receivers")) for e in self.daemon.events
                     if e.get("event") == "incident_escalated"]
        return (f"pages:\n{describe(self.pages())}\nincidents: {self.incidents()}\n"
                f"escalated (incident, receivers): {escalated}\n"
                f"checks:\n{self.checks_text()}")

    async def wait(self, condition: Callable[[], Any], what: str, timeout: float = PAGE_TIMEOUT) -> None:
        """Until `condition()` (sync or async) is true; fails naming `what` after `timeout` s.

        A request of the condition that times out (a busy daemon answering slowly) counts as
        not yet, and is asked again; the failure names it."""
        slow = ""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    try:
                        result = condition()
                        if asyncio.iscoroutine(result):
                            result = await result
                    except TimeoutError as e:  # the request's own timeout, not this wait's (a cancellation)
                        result, slow = False, f" (a request to the daemon timed out: {e!r})"
                    if result:
                        return
                    await asyncio.sleep(0.02)  # re-check as pages and metrics arrive; bounded above
        except TimeoutError:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{slow}\n{self.story()}") from None

    async def trigger(self, alertname: str, receiver: str, timeout: float = PAGE_TIMEOUT) -> Page:
        """The first trigger of `alertname` to `receiver`, waiting for it."""
        def found() -> list[Page]:
            return [p for p in self.pages()
                    if p.action == "trigger" and p.alertname == alertname and p.receiver == receiver]
        await self.wait(found, f"a {alertname} trigger to {receiver}", timeout)
        page = found()[0]
        if page.dedup_key not in self._fired_at:
            await self._note_fired(page)
        return page

    async def _note_fired(self, page: Page) -> None:
        """Remember when the daemon fired the incident of `page` (its `fired_at`, from the API):
        escalation steps and re-notifications count from it (`check()`)."""
        status, doc = await self._get("/api/v1/incidents?state=all")
        assert status == 200, f"/api/v1/incidents: HTTP {status}: {doc}"
        fired = [unix(i["fired_at"]) for i in doc["incidents"] if i["dedup_key"] == page.dedup_key]
        assert fired, f"no incident with the key {page.dedup_key[:8]} of {page}\n{self.story()}"
        self._fired_at[page.dedup_key] = min(fired)

    async def resolved(self, key: str, timeout: float = PAGE_TIMEOUT) -> None:
        """Until every receiver that got a trigger for `key` also got its resolve, and the
        outbox is empty: a trigger queued before the resolve (a step due as the fault ended)
        has arrived too, so the pages are the whole story."""
        def done() -> bool:
            mine = [p for p in self.pages() if p.dedup_key == key]
            paged = {p.receiver for p in mine if p.action == "trigger"}
            return bool(paged) and paged <= {p.receiver for p in mine if p.action == "resolve"}
        await self.wait(done, f"the resolves of {key[:8]}", timeout)
        await self.wait_metric("portal_monitor_outbox_depth", 0.0, timeout)

    async def wait_metric(self, name: str, value: float, timeout: float = PAGE_TIMEOUT, **labels: str) -> None:
        """Until the daemon's /metrics shows `name{labels}` == `value`."""
        async def reached() -> bool:
            return await self.metric(name, **labels) == value
        await self.wait(reached, f"{name}{labels} == {value}", timeout)

    async def hold(self, since: float, after: float, margin: float = 0.0) -> None:
        """Wait until `after` (+ `margin`) test seconds past `since` (perf_counter): how long an
        outage lasts (a shrunk duration of the story, not a guess at the daemon's speed)."""
        delay = since + after + margin - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)

    async def past(self, instant: float, what: str) -> None:
        """Until the daemon has run its rules and escalation timers at a time after `instant`
        (perf_counter, e.g. `l1.at + L2_AFTER`) and delivered all they queued: whatever was
        due by then has been paged, so a step that did not page never will.

        The counter is read once `instant` has passed; the evaluation running then may have
        started before it, so two more must complete (the second started after the read)."""
        delay = instant - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)  # the config's own (shrunk) timer
        start = await self.metric("portal_monitor_rule_evaluations_total") or 0.0

        async def evaluated() -> bool:
            return (await self.metric("portal_monitor_rule_evaluations_total") or 0.0) >= start + 2
        await self.wait(evaluated, f"two rule evaluations after {what}")
        await self.wait_metric("portal_monitor_outbox_depth", 0.0)

    def escalated(self, first: Page, maybe: set[tuple[str, str]]) -> set[tuple[str, str]]:
        """Of `maybe` ((receiver, level) of a step the row may or may not reach, racing the
        fault's end), those the daemon escalated the incident of `first` to: by its log, or
        by the trigger that reached the receiver (the daemon queued it, whether or not the
        reader of its log has got that far). `check()` still asserts each came not before its
        step and was resolved once; call it after `resolved()`, which waits for the outbox to
        empty, so a logged step's page has arrived."""
        logged = self._escalated_receivers(first.dedup_key)
        paged = {(p.receiver, p.level) for p in self.pages()
                 if p.dedup_key == first.dedup_key and p.action == "trigger"}
        return {(r, level) for r, level in maybe if r in logged or (r, level) in paged}

    def _escalated_receivers(self, key: str) -> set[str]:
        """The receivers of every `incident_escalated` the daemon logged for the incidents of
        `key` (by receiver: the event's `level` field is the log level, `warning`)."""
        ids = {e["incident_id"] for e in self.daemon.events
               if e.get("event") == "incident_opened" and e.get("dedup_key") == key}
        return {r for e in self.daemon.events
                if e.get("event") == "incident_escalated" and e.get("incident_id") in ids
                for r in e.get("receivers", [])}

    def check(self, first: Page, triggers: set[tuple[str, str]]) -> None:
        """The incident of `first` paged exactly `triggers` (receiver, level), each not before
        its step, resolved each of them once, and nothing else was paged."""
        self.check_all((first, triggers))

    def check_all(self, *incidents: tuple[Page, set[tuple[str, str]]]) -> None:
        """`check()` for several incidents, each given by its first page: each one's story on
        its own, and no page for any other incident."""
        refused = [(f.url, r.status) for f in (self.pd, self.management, self.vendors) for r in f.requests
                   if r.status not in (200, 202)]
        assert not refused, f"receivers refused notifications: {refused}\n{self.story()}"
        pages = self.pages()
        keys = {first.dedup_key for first, _ in incidents}
        assert {p.dedup_key for p in pages} <= keys, f"pages for other incidents:\n{describe(pages)}"
        for first, triggers in incidents:
            assert first.dedup_key in self._fired_at, f"{first}: not a page that rig.trigger() returned"
            fired_at = self._fired_at[first.dedup_key] - wall(0.0)  # on the pages' clock (perf_counter)
            try:
                check_incident([p for p in pages if p.dedup_key == first.dedup_key], first.dedup_key,
                               alertname=first.alertname, severity=first.severity, triggers=triggers,
                               fired_at=fired_at, after_s=STEP_AFTER, renotify_s=RENOTIFY[first.severity])
            except AssertionError as e:
                raise AssertionError(f"{e}\n{self.story()}") from None


def alert_key(alertname: str, labels: Mapping[str, str]) -> str:
    """`RedisDown{check=cache}`: an alert by its name and the labels that tell its series apart."""
    shown = ",".join(f"{k}={labels[k]}" for k in ("check", "component", "channel") if k in labels)
    return f"{alertname}{{{shown}}}"
