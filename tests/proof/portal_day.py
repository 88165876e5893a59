"""A day of the Customer Portal, compressed: what every check would have seen, every 10 s.

`simulate(episodes, config, workdir)` runs 24 h of simulated time (8,640 steps of 10 s), after
the 12 h before it (`WARMUP_S`: an evening with no episode, so that the rules read a day's history
as on any day but a daemon's first; its pages are reported apart), through the daemon's own path: each step runs the checks (`monitor.scheduler.run_check`) into a
`monitor.store.Store`, then `monitor.alerting.Alerting.evaluate(now)` (rules -> incidents ->
outbox, in the state database under `workdir`), then delivers the queued notifications to
recording receivers through the real `Outbox`. Time is a fake clock; nothing sleeps.

The checks: `bff_logs` is the real `checks.logfile.check.LogfileCheck` (time_source: line) over a
`combined.log` that `bff_traffic.Traffic` writes as the day goes; the others are stand-ins that
return, or raise as `CheckError`, exactly the series their real check emits (DESIGN.md's
metric names), computed from the world's state:

- `cache` (redis): ping, memory ratio (daily 45-60% of maxmemory), and the replay key of each
  Platform Event channel in `CHANNELS` (a busy, a medium and a rare one), exported as
  `checks/redis.py` exports them (`portal_sf_replay_keys`, and per `channel` the replay id, the
  stalled seconds and the last advance). Events arrive at random (Poisson) per channel, at the
  channel's own daily volume shaped by the day's traffic curve (`event_rate`): the busy channel
  sees about one an hour at night and 40 an hour at the evening peak, the rare one a few a day.
  Stalled seconds are counted from the first run that saw a new value, as `checks/redis.py`
  does; at midnight each channel's last event is where the same process, run backwards over the
  evening before, put it (the check's state survives the night). While Redis is down the check
  fails and the BFF cannot store replay ids; `replay_frozen` stops one channel, `sf_stopped`
  every channel (Salesforce delivers nothing).
- `db` (postgres): connections (8 + 30 x traffic share, of max 100), longest query; fails
  (connection refused) while PostgreSQL is down.
- `whmcs`: every 30 s (its interval); fails with the episode's reason.
- `bff_health` (http): 200 with `checks.database`/`checks.cache`/`checks.whmcs`; the BFF mirrors
  its dependencies, so while Redis or PostgreSQL is down it answers 503 with that component
  `fail` (as `tests/fakes.FakeBff.component_down` models it), and while WHMCS fails it answers
  200 with `whmcs: fail` (an integration, not the BFF's own store); a deploy restart refuses
  connections.
- `bff_process`: CPU follows traffic; not found during a restart.
- The BFF's requests fail with 500 while its stores are down: every API request while
  PostgreSQL is down (`PG_DOWN_ERRORS`), a third of them while Redis is down (`REDIS_DOWN_ERRORS`:
  sessions, the token blacklist and rate limits live there; cached reads fall back to the source).

An `Episode` changes the world between `start` and `end` (seconds after midnight); a fault
names the alert it must page (`expect`), a blip has `expect=None` and must page nothing.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import random
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from checks.logfile.check import Config as LogfileConfig
from checks.logfile.check import LogfileCheck
from monitor.alerting import Alerting
from monitor.config.model import Config
from monitor.history import STALE_NAN, History
from monitor.model import CheckContext, CheckError, CheckResult, MemoryState, Notification, Sample
from monitor.scheduler import run_check
from monitor.statedb import open_db
from monitor.store import Store
from tests.proof.bff_traffic import Mix, Traffic, poisson, traffic_rate

DAY = datetime(2025, 12, 3, tzinfo=UTC)  # a Wednesday; the portal's day is taken as UTC
STEP_S = 10.0
# The daemon has been running since noon the day before: its rules read the evening's history (a
# channel's usual share of the traffic, over a day) as they would on any day but the first. The
# evening has no episode; pages and incidents before midnight are not the day's.
WARMUP_S = 12 * 3600.0
ATTACKER = "203.0.113.66"
# Platform Event channels and their mean events a day (the shape of the day: `event_rate`).
CHANNELS: tuple[tuple[str, float], ...] = (
    ("/event/OrderProvisionRequested__e", 400.0),  # busy: every order placed in the portal
    ("/event/AccountUpdated__e", 60.0),  # medium: account changes made in Salesforce
    ("/event/ContractCancelled__e", 8.0),  # rare: a few cancellations a day
)
CHANNEL = CHANNELS[0][0]  # the channel an episode stops when it names none
PG_DOWN_ERRORS = 1.0  # share of API requests answered 500 while PostgreSQL is down
REDIS_DOWN_ERRORS = 1 / 3  # ... while Redis is down


@dataclass(frozen=True)
class Episode:
    """Something that happens between `start` and `end` (seconds after midnight).

    kind: redis_down, pg_down, replay_frozen (one channel: `channel`, default `CHANNEL`, stores
    no event), sf_stopped (no channel receives events), pg_connections (value: used ratio),
    pg_query (a query running since `start`), whmcs_fail (reason), bff_503, bff_restart, errors
    (value: 5xx fraction), slow (value: duration factor), logins (value: failed logins from
    `ip`, spread evenly), failed_requests (value: 500s from `ip`, spread evenly), redis_memory
    (value: used ratio)."""

    name: str
    kind: str
    start: float
    end: float
    value: float = 0.0
    reason: str = ""
    ip: str = ATTACKER
    expect: str | None = None  # the alert this must page once; None: must page nothing
    channel: str = ""  # replay_frozen: the channel that stops (empty: `CHANNEL`)
    severity: str = ""  # the severity `expect` pages with, when the day states it


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


@dataclass(frozen=True, order=True)
class FiringAlert:
    """A firing alert as the rule engine holds it after an evaluation."""

    alertname: str
    labels: tuple[tuple[str, str], ...]  # alertname and severity included
    annotations: tuple[tuple[str, str], ...]
    no_data: bool  # held by the rule's no_data policy while its series is missing


@dataclass
class DayReport:
    """What a simulated day produced. Times are seconds after midnight."""

    pages: list[Page]
    notifications: list[tuple[float, Notification]]  # every delivery, every receiver
    incidents: list[tuple[str, float, float | None, str]]  # (alertname, fired, resolved, labels), paged or held
    lines: int = 0  # log lines the logfile check read (the evening before included)
    steps: int = 0  # evaluations
    seconds: float = 0.0  # real time the simulation took
    history: DayHistory | None = None  # every series of the day (simulate(keep_day=True))
    alerts: list[tuple[float, tuple[FiringAlert, ...]]] = field(default_factory=list)  # after each evaluation
    evening_pages: list[Page] = field(default_factory=list)  # pages of the evening before (`WARMUP_S`)


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


def _share(sod: float) -> float:
    """Traffic as a share of the day's peak (0..1)."""
    return traffic_rate((sod % 86400) / 3600) / 8.4


SHARE_SECONDS = sum(_share(i * STEP_S) for i in range(int(86400 / STEP_S))) * STEP_S  # a day's integral


def event_rate(per_day: float, sod: float) -> float:
    """Platform Events a second on a channel of `per_day` events, at `sod`: the traffic's shape."""
    return per_day * _share(sod) / SHARE_SECONDS


class World:
    """The portal's state at a time of day: which episodes run, replay ids, traffic share.

    `rng` draws the Platform Events (per step, per channel, in `CHANNELS` order)."""

    def __init__(self, episodes: Sequence[Episode], rng: random.Random | None = None) -> None:
        self.episodes = list(episodes)
        self.rng = rng if rng is not None else random.Random(0)
        self.replay_ids = {name: 1000 + 100_000 * i for i, (name, _) in enumerate(CHANNELS)}
        # When each channel's last event before midnight arrived (seconds after midnight, <= 0):
        # the same Poisson process walked back over the day before (its curve is the same).
        self.last_event: dict[str, float] = {}
        for name, per_day in CHANNELS:
            back = 0
            while back < 86400 / STEP_S and not poisson(
                    self.rng, event_rate(per_day, -WARMUP_S - back * STEP_S) * STEP_S):
                back += 1
            self.last_event[name] = -WARMUP_S - back * STEP_S

    @property
    def replay_id(self) -> int:
        """The busy channel's replay id (the day had one channel before)."""
        return self.replay_ids[CHANNEL]

    def active(self, kind: str, sod: float) -> Episode | None:
        for e in self.episodes:
            if e.kind == kind and e.start <= sod < e.end:
                return e
        return None

    def share(self, sod: float) -> float:
        """Traffic as a share of the day's peak (0..1)."""
        return _share(sod)

    def stopped(self, channel: str, sod: float) -> bool:
        """No event of `channel` is stored at `sod` (Salesforce, the channel, or Redis)."""
        if self.active("sf_stopped", sod) or self.active("redis_down", sod):
            return True
        return any(e.kind == "replay_frozen" and e.start <= sod < e.end and (e.channel or CHANNEL) == channel
                   for e in self.episodes)

    def platform_events(self, sod: float) -> None:
        """Advance each channel's replay id by the events that arrived in the step ending at `sod`
        (and could be stored: events sent while a channel is stopped are not replayed)."""
        for name, per_day in CHANNELS:
            n = poisson(self.rng, event_rate(per_day, sod - STEP_S / 2) * STEP_S)
            if n and not self.stopped(name, sod):
                self.replay_ids[name] += n
                self.last_event[name] = sod


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
        # channel -> (replay id, when this check first saw it); the state from the night before
        self._seen = {c: (world.replay_ids[c], day0 + world.last_event[c]) for c, _ in CHANNELS}

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
                mem = w.active("redis_memory", sod)
                ratio = mem.value if mem else 0.45 + 0.15 * share
                replay: list[Sample] = []
                for channel, _ in CHANNELS:
                    if self._seen[channel][0] != w.replay_ids[channel]:
                        self._seen[channel] = (w.replay_ids[channel], now)
                    replay_id, changed_at = self._seen[channel]
                    labels = {"channel": channel}
                    replay += [Sample("portal_sf_replay_id", labels, float(replay_id)),
                               Sample("portal_sf_replay_stalled_seconds", labels, max(0.0, now - changed_at)),
                               Sample("portal_sf_replay_last_advance_timestamp_seconds", labels, changed_at)]
                return [
                    Sample("portal_redis_ping_seconds", {}, 0.0004),
                    Sample("portal_redis_memory_used_bytes", {}, ratio * 256e6),
                    Sample("portal_redis_memory_max_bytes", {}, 256e6),
                    Sample("portal_redis_memory_used_ratio", {}, ratio),
                    Sample("portal_redis_evicted_keys_total", {}, 0.0),
                    Sample("portal_redis_connected_clients", {}, 12.0),
                    Sample("portal_sf_replay_keys", {}, float(len(CHANNELS))),
                    *replay,
                ]
            case "postgres":
                if w.active("pg_down", sod):
                    raise CheckError("connect", "postgresql://portal@127.0.0.1:5432/portal: Connection refused")
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
                down = [c for c, kind in (("database", "pg_down"), ("cache", "redis_down")) if w.active(kind, sod)]
                whmcs = 0.0 if w.active("whmcs_fail", sod) else 1.0
                samples = [Sample("portal_http_status_code", {}, 503.0 if down else 200.0), timing,
                           *(Sample("portal_http_component_up", {"component": c}, float(c not in down))
                             for c in ("database", "cache")),
                           Sample("portal_http_component_up", {"component": "whmcs"}, whmcs)]
                if down:
                    raise CheckError("http_status", "http://localhost:4000/health: HTTP 503, expected 200 "
                                     f"(components down: {', '.join(down)})", samples)
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
    if world.active("redis_down", sod):
        mix.error_fraction = max(mix.error_fraction, REDIS_DOWN_ERRORS)
    if world.active("pg_down", sod):
        mix.error_fraction = max(mix.error_fraction, PG_DOWN_ERRORS)
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
STEPS = int(86400 / STEP_S)
FIRST_STEP = 1 - int(WARMUP_S / STEP_S)  # the evening before: steps FIRST_STEP..0
WORLD_CODE = ("tests/proof/portal_day.py", "tests/proof/bff_traffic.py", "checks/logfile", "monitor/scheduler.py")


def _logfile_config(cfg: Config) -> LogfileConfig:
    """The config's own bff_logs check (window, min_requests, auth_failure, patterns)."""
    return next((c for c in cfg.root.checks if c.type == "logfile"), None) or LogfileConfig.model_validate(
        {"name": "bff_logs", "type": "logfile", "paths": ["-"], "window": "5m"})


def world_key(episodes: Sequence[Episode], cfg: Config, seed: int) -> str:
    """What a day's check results depend on: the world's code, the logfile check's config, the
    episodes and the seed (a SHA-256, hex). The rules are not part of it."""
    root = Path(__file__).resolve().parents[2]
    h = hashlib.sha256()
    for name in WORLD_CODE:
        for f in sorted((root / name).rglob("*.py")) if (root / name).is_dir() else [root / name]:
            h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    h.update(_logfile_config(cfg).model_dump_json(exclude={"paths"}).encode())
    h.update(repr((seed, STEP_S, list(episodes))).encode())
    return h.hexdigest()[:32]


@dataclass
class WorldDay:
    """Where a day's check results come from; `lines` is known once the steps are exhausted."""

    steps: AsyncIterator[list[CheckResult]]
    lines: list[int]


def run_world(episodes: Sequence[Episode], cfg: Config, workdir: Path, clock: SimClock, seed: int) -> WorldDay:
    """Every step's check results of the day: the world advanced, the log written, the checks run."""
    lines: list[int] = []

    async def steps() -> AsyncIterator[list[CheckResult]]:
        day0 = DAY.timestamp()
        world = World(episodes, random.Random(seed + 1))
        traffic = Traffic(seed)
        log_path = workdir / "combined.log"
        log_path.touch()
        # The config's own bff_logs check, reading the generated day by the lines' own times.
        logs = LogfileCheck(
            _logfile_config(cfg).model_copy(update={"name": "bff_logs", "paths": [str(log_path)],
                                                    "time_source": "line", "from_": "start"}),
            CheckContext(STEP_S, STEP_S, MemoryState(), clock.epoch),
        )
        stand_ins = [StandIn(n, t, world, clock, day0) for n, t in
                     (("cache", "redis"), ("db", "postgres"), ("whmcs", "whmcs"), ("bff_health", "http"),
                      ("bff_process", "process"))]
        try:
            with log_path.open("ab") as fh:
                for step in range(FIRST_STEP, STEPS + 1):
                    clock.t = day0 + step * STEP_S
                    sod = step * STEP_S
                    world.platform_events(sod)
                    if not world.active("bff_restart", sod):
                        fh.write(traffic.lines(clock.t - STEP_S, clock.t, _mix(world, sod, day0)))
                        fh.flush()
                    # whmcs: interval 30 s, the last result stays in the store
                    yield [await run_check(check, wall=clock.epoch) for check in (*stand_ins, logs)
                           if check.type != "whmcs" or step % 3 == 0]
        finally:
            await logs.aclose()
        lines.append(traffic.written)

    return WorldDay(steps(), lines)


def cached_world(world: WorldDay, path: Path) -> WorldDay:
    """`world`'s steps, written to `path` (gzip'd pickles, one a step, then the line count) as
    they pass; the file appears (atomically) only when the day is complete."""

    async def steps() -> AsyncIterator[list[CheckResult]]:
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        try:
            with gzip.open(tmp, "wb", compresslevel=1) as out:
                async for results in world.steps:
                    pickle.dump(results, out, protocol=pickle.HIGHEST_PROTOCOL)
                    yield results
                pickle.dump(("lines", world.lines[0]), out, protocol=pickle.HIGHEST_PROTOCOL)
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)

    return WorldDay(steps(), world.lines)


def replayed_world(path: Path, clock: SimClock) -> WorldDay:
    """The steps `cached_world` wrote, at the same simulated times."""
    lines: list[int] = []

    async def steps() -> AsyncIterator[list[CheckResult]]:
        day0 = DAY.timestamp()
        with gzip.open(path, "rb") as f:
            for step in range(FIRST_STEP, STEPS + 1):
                clock.t = day0 + step * STEP_S
                yield pickle.load(f)
            tag, n = pickle.load(f)
            if tag != "lines":
                raise ValueError(f"{path}: not a cached day (ends with {tag!r}, not the line count)")
            lines.append(n)

    return WorldDay(steps(), lines)


class DayHistory(History):
    """The rules' history, also kept whole for the day: every appended sample by series and
    step (`day`), for exporting the day as a rule test (`tests/proof/export_day.py`)."""

    def __init__(self) -> None:
        super().__init__()
        self.day: dict[tuple[tuple[str, str], ...], dict[int, float]] = {}
        self._last: dict[str, set[tuple[tuple[str, str], ...]]] = {}

    def append(self, t: float, samples: Iterable[Sample], source: str = "") -> None:
        samples = list(samples)
        super().append(t, samples, source)
        step = round((t - DAY.timestamp()) / STEP_S)
        seen = set()
        for s in samples:
            key = tuple(sorted({**s.labels, "__name__": s.name}.items()))
            seen.add(key)
            self.day.setdefault(key, {})[step] = s.value
        for key in self._last.get(source, set()) - seen:  # a staleness marker, as History writes
            self.day.setdefault(key, {})[step] = STALE_NAN
        self._last[source] = seen


async def simulate(episodes: Sequence[Episode], cfg: Config, workdir: Path, *, seed: int = 6,
                   silences: Sequence[tuple[dict[str, str], float, float, str]] = (),
                   cache: Path | None = None, keep_day: bool = False) -> DayReport:
    """Run the day; return the pages, every delivery and every incident.

    `silences` are (matchers, start, end, comment) in seconds after midnight, added before the
    day starts (the state a daily `portal-monitor silence add` timer would leave). `cache`: a
    file with this day's check results (`world_key` names it): replayed when it exists, else
    written as the world runs. `keep_day`: the report carries every series of the day
    (`DayReport.history`) and the alert states of every evaluation (`DayReport.alerts`)."""
    started = time.perf_counter()
    day0 = DAY.timestamp()
    clock = SimClock(day0 + (FIRST_STEP - 1) * STEP_S)
    if cache is not None and cache.exists():
        world = replayed_world(cache, clock)
    else:
        world = run_world(episodes, cfg, workdir, clock, seed)
        if cache is not None:
            world = cached_world(world, cache)
    history = DayHistory() if keep_day else None
    store = Store(history)
    store.add_source(lambda: [Sample("portal_monitor_config_last_reload_successful", {}, 1.0)])
    delivered: list[tuple[float, Notification]] = []
    names = {n for n in cfg.root.receivers if n not in cfg.disabled}
    conn = open_db(workdir / "state")
    alerting = Alerting(conn, cfg, store, now=clock.now,
                        receivers={n: Recorder(n, clock, delivered) for n in names})
    store.add_source(alerting.samples)
    for matchers, start, end, comment in silences:
        alerting.incidents.silences.add(matchers, starts_at=DAY + timedelta(seconds=start),
                                       ends_at=DAY + timedelta(seconds=end), author="nightly-timer",
                                       comment=comment, now=DAY)
    alerts: list[tuple[float, tuple[FiringAlert, ...]]] = []
    async for results in world.steps:
        for result in results:
            store.put(result)
        if alerting.evaluate(clock.now()):
            await alerting.outbox.drain()
        if keep_day and clock.t > day0:
            alerts.append((clock.t - day0, tuple(sorted(
                FiringAlert(a.alert.name, tuple(sorted(a.alert.labels.items())),
                            tuple(sorted(a.alert.annotations.items())), a.alert.no_data_since is not None)
                for a in alerting.state.alerts.values() if a.state == "firing"))))
    all_pages = [Page(t - day0, n.alert.name, tuple(sorted(n.alert.labels.items())), n.dedup_key)
                 for t, n in delivered if n.receiver == PAGE_RECEIVER and n.kind == "trigger"]
    incidents = [(i.alertname, i.fired_at.timestamp() - day0,
                  i.resolved_at.timestamp() - day0 if i.resolved_at else None,
                  ",".join(f"{k}={v}" for k, v in sorted(i.alert.labels.items())
                           if k not in ("alertname", "severity")))
                 for i in reversed(alerting.incidents.list_incidents(open_only=False, limit=10_000))]
    conn.close()
    # The day is midnight to midnight: what the evening before paged or delivered is kept apart.
    return DayReport([p for p in all_pages if p.at > 0], [(t - day0, n) for t, n in delivered if t > day0],
                     [i for i in incidents if i[1] > 0 or i[2] is None or i[2] > 0], lines=world.lines[0],
                     steps=STEPS, seconds=time.perf_counter() - started, history=history, alerts=alerts,
                     evening_pages=[p for p in all_pages if p.at <= 0])
