"""Redis: PING, INFO memory/stats/clients, and the Salesforce Platform Event replay keys.

Runbook scenarios 1 (Platform Events not receiving) and 3 (Redis connection failures).

The BFF stores the last replay id of each Platform Event channel under
`sf:pe:replay:<channel>`. A channel whose id stops changing is a subscription that stopped
receiving, so the check remembers, per key, the last value and when it last changed, in the
durable `ctx.state`: a restart of the monitor during a stall does not restart the clock.

Failures raise `CheckError` with one of these reasons:
`connect` (refused, reset, DNS), `timeout`, `auth` (wrong password, NOAUTH, WRONGPASS,
NOPERM) and `bad_reply` (anything else the server said, e.g. LOADING).

Both connections speak RESP2: every Redis version understands it, and redis-py parses its
replies the same way in every release (redis-py 8 defaults to RESP3).
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal

import structlog
from pydantic import Field, field_validator

from checks.watch import Server, until_cancelled
from monitor.config.fields import CheckBase
from monitor.model import CheckContext, CheckError, Sample
from monitor.secrets import SecretURL, redact_url

if TYPE_CHECKING:
    from redis.asyncio import ConnectionPool, Redis
    from redis.asyncio.connection import AbstractConnection

log = structlog.get_logger()

METRICS: dict[str, tuple[str, str]] = {
    "portal_redis_up": ("gauge", "1 when the last Redis check succeeded"),
    "portal_redis_ping_seconds": ("gauge", "PING round trip"),
    "portal_redis_memory_used_bytes": ("gauge", "INFO used_memory"),
    "portal_redis_memory_max_bytes": ("gauge", "INFO maxmemory (0 = no limit)"),
    "portal_redis_memory_used_ratio": ("gauge", "used_memory / maxmemory (0 when no limit)"),
    "portal_redis_evicted_keys_total": ("counter", "INFO evicted_keys"),
    "portal_redis_connected_clients": ("gauge", "INFO connected_clients"),
    "portal_sf_replay_keys": ("gauge", "replay keys found by SCAN (at most max_keys)"),
    "portal_sf_replay_id": ("gauge", "the replay id stored under each replay key"),
    "portal_sf_replay_stalled_seconds": ("gauge", "seconds since the replay id of a channel last changed"),
    "portal_sf_replay_last_advance_timestamp_seconds": (
        "gauge",
        "when the replay id of a channel last changed (Unix time)",
    ),
}
# Labels of each series besides `check` and the check's `labels` (the store adds those); a
# metric not named here has none. With METRICS, the catalogue `check-config` checks rules against.
LABELS: dict[str, tuple[str, ...]] = {
    "portal_sf_replay_id": ("channel",),
    "portal_sf_replay_stalled_seconds": ("channel",),
    "portal_sf_replay_last_advance_timestamp_seconds": ("channel",),
}
KEY_METRICS = ("portal_redis_ping_seconds", "portal_redis_memory_used_ratio", "portal_sf_replay_keys")

SCAN_COUNT = 1000  # COUNT hint per SCAN call: keys the server looks at, not keys it returns
MGET_CHUNK = 500  # keys per MGET, so one reply stays small


class Config(CheckBase):
    type: Literal["redis"]
    url: SecretURL = "redis://127.0.0.1:6379/0"
    replay_pattern: str = "sf:pe:replay:*"
    max_keys: int = Field(1000, ge=1, le=100_000)
    watch: bool = True  # hold a connection and re-check at once when it drops

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"{redact_url(url)!r}: expected a redis://, rediss:// or unix:// URL")
        return url


def literal_prefix(pattern: str) -> str:
    """The part of a SCAN glob before its first wildcard: `sf:pe:replay:*` → `sf:pe:replay:`.

    A channel label is the key without this prefix, so that labels read like the BFF's
    channel names (`/event/OrderProvisionRequested__e`).
    """
    out: list[str] = []
    chars = iter(pattern)
    for ch in chars:
        if ch == "\\":
            out.append(next(chars, ""))
        elif ch in "*?[":
            break
        else:
            out.append(ch)
    return "".join(out)


def parse_replay_id(text: str) -> float | None:
    """A replay id as a number, or None when the value is not a finite number."""
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def classify(exc: BaseException) -> str:
    """The CheckError reason of a redis-py or socket error. Order matters: redis-py derives
    auth and LOADING errors from ConnectionError."""
    from redis import exceptions as rex

    if isinstance(
        exc,
        (
            rex.AuthenticationError,
            rex.AuthorizationError,
            rex.AuthenticationWrongNumberOfArgsError,
            rex.NoPermissionError,
        ),
    ):
        return "auth"
    if isinstance(exc, rex.ResponseError) and str(exc).startswith(("NOAUTH", "WRONGPASS")):
        return "auth"
    if isinstance(exc, rex.BusyLoadingError):
        return "bad_reply"
    if isinstance(exc, (rex.TimeoutError, TimeoutError)):
        return "timeout"
    if isinstance(exc, (rex.ConnectionError, OSError)):
        return "connect"
    return "bad_reply"


def _errors() -> tuple[type[BaseException], ...]:
    """What a Redis call may raise. redis-py is imported when the first Redis check is built,
    not with this module: a daemon without Redis checks (1000 http checks, say) saves its
    ~7 MB of memory."""
    from redis import exceptions as rex

    return (rex.RedisError, OSError, TimeoutError)


class RedisCheck:
    """Check + Watcher for one Redis server. One client, reused across runs; replaced after
    a connection-level failure so the next run starts from a fresh connection."""

    type = "redis"

    def __init__(
        self, cfg: Config, ctx: CheckContext, *, sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep
    ) -> None:
        self.name = cfg.name
        self.interval_s = ctx.interval_s
        self.timeout_s = ctx.timeout_s
        self.cfg = cfg
        self._ctx = ctx
        self._server = Server("redis", cfg.name, cfg.url, sleep)
        self._prefix = literal_prefix(cfg.replay_pattern)
        self._namespace = f"redis:{cfg.name}"
        self._client: Redis | None = None
        _errors()  # import redis-py now, not inside the first run's timeout
        self._seen = self._load_seen()  # key -> (last value, when it last changed)

    # ------------------------------------------------------------------ collect

    async def collect(self) -> list[Sample]:
        now = self._ctx.now()
        try:
            client = self._connect()
            async with client.pipeline(transaction=False) as pipe:
                for section in ("memory", "stats", "clients"):
                    pipe.info(section)
                memory, stats, clients = await pipe.execute()
            started = time.perf_counter()  # after INFO, so the PING does not include connecting
            await client.ping()
            ping_s = time.perf_counter() - started
            keys, complete = await self._scan(client)
            values = await self._mget(client, keys)
        except _errors() as e:
            raise await self._failed(e) from e
        samples = [
            Sample("portal_redis_ping_seconds", {}, ping_s),
            *self._info_samples(memory, stats, clients),
            Sample("portal_sf_replay_keys", {}, float(len(keys))),
        ]
        samples.extend(self._track(values, complete, now))
        self._server.rearm.seen()
        return samples

    def _connect(self) -> Redis:
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        if self._client is None:
            self._client = Redis.from_url(
                self.cfg.url,
                protocol=2,
                socket_timeout=self.timeout_s,
                socket_connect_timeout=self.timeout_s,
                retry=Retry(NoBackoff(), 0),
            )
        return self._client

    async def _failed(self, exc: BaseException) -> CheckError:
        reason = classify(exc)
        if reason in ("connect", "timeout", "auth"):
            await self._drop_client()
        return self._server.error(reason, exc)

    async def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.aclose()
            except _errors():
                pass  # the connection is already gone; nothing else holds resources

    def _info_samples(self, memory: dict[str, Any], stats: dict[str, Any], clients: dict[str, Any]) -> list[Sample]:
        try:
            used = float(memory["used_memory"])
            maxmemory = float(memory.get("maxmemory", 0))  # absent before Redis 3.2: no limit
            evicted = float(stats["evicted_keys"])
            connected = float(clients["connected_clients"])
        except (KeyError, TypeError, ValueError) as e:
            raise CheckError("bad_reply", f"{self._server.target}: INFO lacks a number for {e}") from e
        return [
            Sample("portal_redis_memory_used_bytes", {}, used),
            Sample("portal_redis_memory_max_bytes", {}, maxmemory),
            Sample("portal_redis_memory_used_ratio", {}, used / maxmemory if maxmemory > 0 else 0.0),
            Sample("portal_redis_evicted_keys_total", {}, evicted),
            Sample("portal_redis_connected_clients", {}, connected),
        ]

    async def _scan(self, client: Redis) -> tuple[list[bytes | str], bool]:
        """Keys matching the replay pattern, at most `max_keys`, sorted; and whether the scan
        saw the whole keyspace (only then may keys missing from it be forgotten).

        The loop ends when the cursor comes back to 0 (the server walked the whole keyspace)
        or max_keys keys were found; the run's timeout bounds a huge keyspace."""
        found: dict[bytes | str, None] = {}  # SCAN may return a key twice (bytes: no decode_responses)
        cursor = 0
        while True:
            cursor, batch = await client.scan(cursor, match=self.cfg.replay_pattern, count=SCAN_COUNT)
            found.update(dict.fromkeys(batch))
            if cursor == 0 or len(found) >= self.cfg.max_keys:
                break
        complete = cursor == 0 and len(found) <= self.cfg.max_keys
        return sorted(found)[: self.cfg.max_keys], complete

    async def _mget(self, client: Redis, keys: list[bytes | str]) -> dict[str, str | None]:
        values: dict[str, str | None] = {}
        for start in range(0, len(keys), MGET_CHUNK):
            chunk = keys[start : start + MGET_CHUNK]
            for key, raw in zip(chunk, await client.mget(chunk), strict=True):
                values[_text(key)] = None if raw is None else _text(raw)
        return values

    # ------------------------------------------------------------------ replay ids

    def _load_seen(self) -> dict[str, tuple[str, float]]:
        seen: dict[str, tuple[str, float]] = {}
        for key, entry in self._ctx.state.load(self._namespace).items():
            try:
                seen[key] = (str(entry["value"]), float(entry["changed_at"]))
            except (KeyError, TypeError, ValueError):
                log.warning("redis_replay_state_ignored", check=self.name, key=key)
        return seen

    def _track(self, values: dict[str, str | None], complete: bool, now: float) -> list[Sample]:
        """Series for each replay key, updating (and persisting) when each value last changed.

        A key seen for the first time counts as a change. A key whose value vanished between
        SCAN and GET, or that a complete scan no longer finds, is forgotten."""
        samples: list[Sample] = []
        for key, value in values.items():
            if value is None:
                continue
            previous = self._seen.get(key)
            if previous is None or previous[0] != value:
                self._seen[key] = (value, now)
                self._ctx.state.save(self._namespace, key, {"value": value, "changed_at": now})
            changed_at = self._seen[key][1]
            labels = {"channel": key.removeprefix(self._prefix)}
            replay_id = parse_replay_id(value)
            if replay_id is not None:
                samples.append(Sample("portal_sf_replay_id", labels, replay_id))
            samples.append(Sample("portal_sf_replay_stalled_seconds", labels, max(0.0, now - changed_at)))
            samples.append(Sample("portal_sf_replay_last_advance_timestamp_seconds", labels, changed_at))
        present = {k for k, v in values.items() if v is not None}
        gone = [k for k in self._seen if k not in present and (complete or k in values)]
        for key in gone:
            del self._seen[key]
            self._ctx.state.delete(self._namespace, key)
        return samples

    # ------------------------------------------------------------------ watch

    async def watch(self, wake: Callable[[], None]) -> None:
        """Hold a subscribed connection; `wake()` when it drops and again when it is back
        (also when the server was already down when the watch began).

        The connection SUBSCRIBEs to a random channel nobody publishes to, then waits for
        the server with no read timeout. A crash or shutdown closes the socket, the read
        ends at once with EOF or reset, and we wake the scheduler. SUBSCRIBE rather than
        an idle connection or BLPOP: Redis never closes subscribers for `timeout`
        idleness, it works on read-only replicas, writes nothing and does not show up in
        blocked_clients. If ACLs refuse the channel, the connection stays idle instead and
        still sees EOF. TLS and AUTH come from redis-py's own connection class for the URL.

        Reconnects follow `checks.watch.hold_and_watch`. A silent network partition is not
        seen here (TCP keepalive aside): the interval and the timeout cover it.
        """
        from redis.asyncio import ConnectionPool
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        if not self.cfg.watch:
            await until_cancelled()
        tcp = {} if self.cfg.url.startswith("unix://") else {"socket_keepalive": True}
        pool = ConnectionPool.from_url(
            self.cfg.url,
            protocol=2,
            socket_timeout=None,
            socket_connect_timeout=self.timeout_s,
            retry=Retry(NoBackoff(), 0),
            **tcp,
        )
        await self._server.watch(
            connect=lambda: self._subscribed(pool),
            hold=self._hold,
            close=_disconnect,
            errors=_errors(),
            classify=classify,
            wake=wake,
            interval_s=self.interval_s,
            on_lost=self._log_lost,
        )

    def _log_lost(self, exc: BaseException | None) -> None:
        why = {} if exc is None else {"reason": classify(exc), "error": self._server.scrub(str(exc))}
        log.warning("redis_watch_lost", check=self.name, target=self._server.target, **why)

    async def _subscribed(self, pool: ConnectionPool) -> AbstractConnection:
        """A new connection, SUBSCRIBEd to a fresh channel; disconnected again if that fails.
        connect + AUTH + SUBSCRIBE run under the timeout; the connection has no read timeout."""
        from redis import exceptions as rex

        conn: AbstractConnection = pool.make_connection()  # type: ignore[no-untyped-call]
        try:
            async with asyncio.timeout(self.timeout_s):
                await conn.connect()  # type: ignore[no-untyped-call]
                await conn.send_command("SUBSCRIBE", f"portal-monitor:watch:{uuid.uuid4().hex}")
                try:
                    await conn.read_response(disconnect_on_error=False)
                except rex.ResponseError as e:  # NOPERM on channels: stay connected, idle
                    log.info("redis_watch_unsubscribed", check=self.name, target=self._server.target, error=str(e))
        except BaseException:
            await _disconnect(conn)
            raise
        return conn

    async def _hold(self, conn: AbstractConnection) -> None:
        """Read until the connection ends (raises). A message on our channel is ignored."""
        while True:  # each pass blocks on the socket; ends with an error on EOF or reset
            await conn.read_response()

    async def aclose(self) -> None:
        await self._drop_client()


async def _disconnect(conn: AbstractConnection) -> None:
    await conn.disconnect(nowait=True)


def _text(raw: bytes | str) -> str:
    return raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else raw
