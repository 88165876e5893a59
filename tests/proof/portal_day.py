"""A day of the Customer Portal, compressed: what every check would have seen, every 10 s.

`simulate(episodes, config, workdir)` runs 24 h of simulated time (8,640 steps of 10 s) through
the daemon's own path: each step runs the checks (`monitor.scheduler.run_check`) into a
`monitor.store.Store`, then `monitor.alerting.Alerting.evaluate(now)` (rules -> incidents ->
outbox, in the state database under `workdir`), then delivers the queued notifications to
recording receivers through the real `Outbox`. Time is a fake clock; nothing sleeps.

The checks: `bff_logs` is the real `checks.logfile.check.LogfileCheck` (time_source: line) over a
`combined.log` that `bff_traffic.Traffic` writes as the day goes; the others are stand-ins that
return, or raise as `CheckError`, exactly the series their real check emits (DESIGN.md's
metric names), computed from the world's state:

- `cache` (redis): ping, memory ratio (daily 45-60% of maxmemory), one Platform Event channel
  (`/event/OrderProvisionRequested__e`) whose replay id advances with each event; stalled
  seconds are counted from the first run that saw the new value, as `checks/redis.py` does.
  Events follow the order traffic, at least one every 15 minutes, except while an episode
  freezes them. While Redis is down the check fails and the BFF cannot store replay ids.
- `db` (postgres): connections (8 + 30 x traffic share, of max 100), longest query.
- `whmcs`: every 30 s (its interval); fails with the episode's reason.
- `bff_health` (http): 200 with `checks.database`/`checks.cache`; the BFF mirrors its
  dependencies, so while Redis is down it answers 503 with `cache: fail` (as
  `tests/fakes.FakeBff.component_down` models it); a deploy restart refuses connections.
- `bff_process`: CPU follows traffic; not found during a restart.

An `Episode` changes the world between `start` and `end` (seconds after midnight); a fault
names the alert it must page (`expect`), a blip has `expect=None` and must page nothing.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from checks.logfile.check import Config as LogfileConfig
from checks.logfile.check import LogfileCheck
from monitor.alerting import Alerting
from monitor.config.model import Config
from monitor.model import CheckContext, CheckError, MemoryState, Notification, Sample
from monitor.scheduler import run_check
from monitor.statedb import open_db
from monitor.store import Store
from tests.proof.bff_traffic import Mix, Traffic, traffic_rate

DAY = datetime(2025, 12, 3, tzinfo=UTC)  # a Wednesday; the portal's day is taken as UTC
STEP_S = 10.0
CHANNEL = "/event/OrderProvisionRequested__e"
ATTACKER = "203.0.113.66"


@dataclass(frozen=True)
class Episode:
    """Something that happens between `start` and `end` (seconds after midnight).

    kind: redis_down, replay_frozen, pg_connections (value: used ratio), pg_query (a query
    running since `start`), whmcs_fail (reason), bff_503, bff_restart, errors (value: 5xx
    fraction), slow (value: duration factor), logins (value: failed logins from `ip`, spread
    evenly), failed_requests (value: 500s from `ip`, spread evenly), redis_memory (value: used
    ratio)."""

    name: str
    kind: str
    start: float
    end: float
    value: float = 0.0
    reason: str = ""
    ip: str = ATTACKER
    expect: str | None = None  # the alert this must page once; None: must page nothing


def hm(hh: int, mm: int = 0, ss: int = 0) -> float:
    """Seconds after midnight."""
    return hh * 3600.0 + mm * 60.0 + ss


@dataclass(frozen=True)
class Page:
    """One trigger to the on-call PagerDuty service (L1): what wakes someone up."""

    at: float  # seconds after midnight
    alertname: str
    labels: tuple[tuple[str, str], ...]
    dedup_key: str


@dataclass
class DayReport:
    """What a simulated day produced. Times are seconds after midnight."""

    pages: list[Page]
    notifications: list[tuple[float, Notification]]  # every delivery, every receiver
    incidents: list[tuple[str, float, float | None, str]]  # (alertname, fired, resolved, labels), paged or held
    lines: int = 0  # log lines the logfile check read
    steps: int = 0  # evaluations
    seconds: float = 0.0  # real time the simulation took


class SimClock:
    """The simulated wall clock: epoch seconds for the checks, a datetime for the rules."""

    def __init__(self, t: float) -> None:
        self.t = t

    def epoch(self) -> float:
        return self.t

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.t, UTC)


class Recorder:
    """A receiver that records what it was sent, at simulated time."""

    def __init__(self, name: str, clock: SimClock, into: list[tuple[float, Notification]]) -> None:
        self.name = name
        self.timeout_s = 5.0
        self._clock = clock
        self._into = into

    async def send(self, notification: Notification) -> None:
        self._into.append((self._clock.t, notification))

    async def aclose(self) -> None:
        pass


class World:
    """The portal's state at a time of day: which episodes run, replay ids, traffic share."""

    def __init__(self, episodes: Sequence[Episode]) -> None:
        self.episodes = list(episodes)
        self.replay_id = 1000
        self.last_event = 0.0

    def active(self, kind: str, sod: float) -> Episode | None:
        for e in self.episodes:
            if e.kind == kind and e.start <= sod < e.end:
                return e
        return None

    def share(self, sod: float) -> float:
        """Traffic as a share of the day's peak (0..1)."""
        return traffic_rate(sod / 3600) / 8.4

    def platform_events(self, sod: float, rng_value: float) -> None:
        """Advance the replay id if an event arrived in this step (and could be stored)."""
        if self.active("replay_frozen", sod) or self.active("redis_down", sod):
            return
        # about one order event per 2 minutes at the peak; never a gap over 15 minutes otherwise
        if rng_value < STEP_S / 120 * self.share(sod) or sod - self.last_event >= 900:
            self.replay_id += 1
            self.last_event = sod


class StandIn:
    """A check that reports what the world says (see the module docstring)."""

    def __init__(self, name: str, type_: str, world: World, clock: SimClock, day0: float) -> None:
        self.name = name
        self.type = type_
        self.interval_s = STEP_S
        self.timeout_s = STEP_S
        self._world = world
        self._clock = clock
        self._day0 = day0
        self._seen: tuple[int, float] | None = None  # replay id, when it was first seen

    async def aclose(self) -> None:
        pass

    async def collect(self) -> list[Sample]:
        w, now = self._world, self._clock.t
        sod = now - self._day0
        share = w.share(sod)
        match self.type:
            case "redis":
                if w.active("redis_down", sod):
                    raise CheckError("connect", "redis://127.0.0.1:6379/0: Connection refused")
                if self._seen is None or self._seen[0] != w.replay_id:
                    self._seen = (w.replay_id, now)
                mem = w.active("redis_memory", sod)
                ratio = mem.value if mem else 0.45 + 0.15 * share
                labels = {"channel": CHANNEL}
                return [
                    Sample("portal_redis_ping_seconds", {}, 0.0004),
                    Sample("portal_sf_replay_keys", {}, 1.0),
                    Sample("portal_redis_memory_used_bytes", {}, ratio * 256e6),
                    Sample("portal_redis_memory_max_bytes", {}, 256e6),
                    Sample("portal_redis_memory_used_ratio", {}, ratio),
                    Sample("portal_redis_evicted_keys_total", {}, 0.0),
                    Sample("portal_redis_connected_clients", {}, 12.0),
                    Sample("portal_sf_replay_id", labels, float(self._seen[0])),
                    Sample("portal_sf_replay_stalled_seconds", labels, now - self._seen[1]),
                    Sample("portal_sf_replay_last_advance_timestamp_seconds", labels, self._seen[1]),
                ]
            case "postgres":
                ep = w.active("pg_connections", sod)
                ratio = ep.value if ep else (8 + 30 * share) / 100
                q = w.active("pg_query", sod)
                longest = sod - q.start if q else 0.05 + 0.3 * share
                active = round(ratio * 100 * 0.3)
                return [
                    Sample("portal_postgres_ping_seconds", {}, 0.0008),
                    Sample("portal_postgres_connections", {"state": "active"}, float(active)),
                    Sample("portal_postgres_connections", {"state": "idle"}, float(round(ratio * 100) - active)),
                    Sample("portal_postgres_connections_max", {}, 100.0),
                    Sample("portal_postgres_connections_used_ratio", {}, round(ratio * 100) / 100),
                    Sample("portal_postgres_longest_query_seconds", {}, longest),
                ]
            case "whmcs":
                ep = w.active("whmcs_fail", sod)
                if ep:
                    raise CheckError(ep.reason, f"https://billing.example/includes/api.php: {ep.name}",
                                     [Sample("portal_whmcs_response_seconds", {}, 0.3)])
                return [Sample("portal_whmcs_response_seconds", {}, 0.25 + 0.2 * share)]
            case "http":
                if w.active("bff_restart", sod):
                    raise CheckError("connect", "http://localhost:4000/health: Connection refused")
                timing = Sample("portal_http_response_seconds", {}, 0.02 + 0.03 * share)
                if w.active("bff_503", sod):
                    raise CheckError("http_status", "http://localhost:4000/health: HTTP 503, expected 200",
                                     [Sample("portal_http_status_code", {}, 503.0), timing])
                cache = 0.0 if w.active("redis_down", sod) else 1.0
                samples = [Sample("portal_http_status_code", {}, 200.0 if cache else 503.0), timing,
                           Sample("portal_http_component_up", {"component": "database"}, 1.0),
                           Sample("portal_http_component_up", {"component": "cache"}, cache)]
                if not cache:
                    raise CheckError("http_status", "http://localhost:4000/health: HTTP 503, expected 200 "
                                     "(components down: cache)", samples)
                return samples
            case "process":
                if w.active("bff_restart", sod):
                    raise CheckError("not_found", "no process command line matches /node.*bff/",
                                     [Sample("portal_process_matching", {}, 0.0)])
                return [Sample("portal_process_matching", {}, 1.0),
                        Sample("portal_process_cpu_ratio", {}, 0.05 + 0.5 * share),
                        Sample("portal_process_resident_bytes", {}, 310e6 + 60e6 * share)]
        raise AssertionError(self.type)


def _mix(world: World, sod: float, day0: float) -> Mix:
    """How the requests of the step ending at `sod` deviate from normal."""
    mix = Mix()
    if ep := world.active("errors", sod):
        mix.error_fraction = ep.value
    if ep := world.active("slow", sod):
        mix.slow_factor = ep.value
    for e in world.episodes:  # `value` lines spread evenly over the episode: failed logins, 500s
        if e.kind in ("logins", "failed_requests") and e.start < sod and e.end > sod - STEP_S:
            status, path = (401, "/api/auth/login") if e.kind == "logins" else (500, "/api/orders")
            gap = (e.end - e.start) / e.value
            times = (e.start + (i + 0.5) * gap for i in range(int(e.value)))
            mix.extra += [(day0 + t, status, path, e.ip) for t in times if sod - STEP_S < t <= sod]
    return mix


PAGE_RECEIVER = "oncall"


async def simulate(episodes: Sequence[Episode], cfg: Config, workdir: Path, *, seed: int = 6,
                   silences: Sequence[tuple[dict[str, str], float, float, str]] = ()) -> DayReport:
    """Run the day; return the pages, every delivery and every incident.

    `silences` are (matchers, start, end, comment) in seconds after midnight, added before the
    day starts (the state a daily `portal-monitor silence add` timer would leave)."""
    started = time.perf_counter()
    day0 = DAY.timestamp()
    clock = SimClock(day0)
    world = World(episodes)
    traffic = Traffic(seed)
    log_path = workdir / "combined.log"
    log_path.touch()
    # The config's own bff_logs check (window, min_requests, auth_failure, patterns), reading
    # the generated day by the lines' own times.
    shipped = next((c for c in cfg.root.checks if c.type == "logfile"), None) or LogfileConfig.model_validate(
        {"name": "bff_logs", "type": "logfile", "paths": ["-"], "window": "5m"})
    logs = LogfileCheck(
        shipped.model_copy(update={"name": "bff_logs", "paths": [str(log_path)], "time_source": "line",
                                   "from_": "start"}),
        CheckContext(STEP_S, STEP_S, MemoryState(), clock.epoch),
    )
    stand_ins = [StandIn(n, t, world, clock, day0) for n, t in
                 (("cache", "redis"), ("db", "postgres"), ("whmcs", "whmcs"), ("bff_health", "http"),
                  ("bff_process", "process"))]
    store = Store()
    store.add_source(lambda: [Sample("portal_monitor_config_last_reload_successful", {}, 1.0)])
    delivered: list[tuple[float, Notification]] = []
    names = {n for n in cfg.root.receivers if n not in cfg.disabled}
    conn = open_db(workdir / "state")
    alerting = Alerting(conn, cfg, store.samples, now=clock.now,
                        receivers={n: Recorder(n, clock, delivered) for n in names})
    store.add_source(alerting.samples)
    for matchers, start, end, comment in silences:
        alerting.incidents.silences.add(matchers, starts_at=DAY + timedelta(seconds=start),
                                       ends_at=DAY + timedelta(seconds=end), author="nightly-timer",
                                       comment=comment, now=DAY)
    rng = random.Random(seed + 1)
    steps = int(86400 / STEP_S)
    with log_path.open("ab") as fh:
        for step in range(1, steps + 1):
            clock.t = day0 + step * STEP_S
            sod = step * STEP_S
            world.platform_events(sod, rng.random())
            if not world.active("bff_restart", sod):
                fh.write(traffic.lines(clock.t - STEP_S, clock.t, _mix(world, sod, day0)))
                fh.flush()
            for check in (*stand_ins, logs):
                if check.type == "whmcs" and step % 3:
                    continue  # interval 30 s: the last result stays in the store
                store.put(await run_check(check, wall=clock.epoch))
            if alerting.evaluate(clock.now()):
                await alerting.outbox.drain()
    await logs.aclose()
    pages = [Page(t - day0, n.alert.name, tuple(sorted(n.alert.labels.items())), n.dedup_key)
             for t, n in delivered if n.receiver == PAGE_RECEIVER and n.kind == "trigger"]
    incidents = [(i.alertname, i.fired_at.timestamp() - day0,
                  i.resolved_at.timestamp() - day0 if i.resolved_at else None,
                  ",".join(f"{k}={v}" for k, v in sorted(i.alert.labels.items())
                           if k not in ("alertname", "severity")))
                 for i in reversed(alerting.incidents.list_incidents(open_only=False, limit=10_000))]
    conn.close()
    return DayReport(pages, [(t - day0, n) for t, n in delivered], incidents, lines=traffic.written,
                     steps=steps, seconds=time.perf_counter() - started)
