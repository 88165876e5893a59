"""The redis check against a real, disposable redis-server (tests/servers.py)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from checks.redis import Config, RedisCheck, literal_prefix, parse_replay_id
from monitor.model import Check, CheckContext, CheckError, MemoryState, Sample, StateStore, Watcher
from monitor.statedb import SqliteState, open_db
from tests.conftest import require_tool
from tests.servers import RedisServer, free_port

T0 = 1_750_000_000.0
ORDER = "/event/OrderProvisionRequested__e"
ORDER_KEY = f"sf:pe:replay:{ORDER}"


class FakeClock:
    """Wall clock that moves only when the test says so."""

    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def make_check(url: str, *, state: StateStore | None = None, clock: Callable[[], float] | None = None,
               timeout_s: float = 2.0, interval_s: float = 10.0,
               sleep: Callable[[float], Awaitable[Any]] | None = None, **cfg: Any) -> RedisCheck:
    ctx = CheckContext(interval_s=interval_s, timeout_s=timeout_s, state=state or MemoryState(),
                       now=clock or FakeClock())
    return RedisCheck(Config(name="cache", type="redis", url=url, **cfg), ctx, sleep=sleep or asyncio.sleep)


def value(samples: list[Sample], name: str, **labels: str) -> float:
    found = [s.value for s in samples if s.name == name and dict(s.labels) == labels]
    assert len(found) == 1, f"{name}{labels}: {len(found)} samples in {samples}"
    return found[0]


def names(samples: list[Sample], name: str) -> dict[str, float]:
    return {s.labels["channel"]: s.value for s in samples if s.name == name}


@pytest.fixture
async def client(redis_up: RedisServer) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis(host="127.0.0.1", port=redis_up.port, socket_timeout=5, decode_responses=True)
    yield c
    await c.aclose()


@pytest.fixture
async def check(redis_up: RedisServer) -> AsyncIterator[RedisCheck]:
    c = make_check(redis_up.url)
    yield c
    await c.aclose()


# ---------------------------------------------------------------- pure helpers


@pytest.mark.parametrize(("pattern", "prefix"), [
    ("sf:pe:replay:*", "sf:pe:replay:"),
    ("sf:pe:replay:/event/*__e", "sf:pe:replay:/event/"),
    ("a?b*", "a"),
    ("x[ab]*", "x"),
    (r"lit\*eral:*", "lit*eral:"),
    ("*", ""),
])
def test_literal_prefix_stops_at_first_wildcard(pattern: str, prefix: str) -> None:
    assert literal_prefix(pattern) == prefix


@pytest.mark.parametrize(("text", "expected"), [
    ("1234", 1234.0), (" 42 ", 42.0), ("abc", None), ("nan", None), ("", None), ("inf", None),
])
def test_parse_replay_id(text: str, expected: float | None) -> None:
    assert parse_replay_id(text) == expected


def test_redis_check_is_a_check_and_a_watcher() -> None:
    c = make_check("redis://127.0.0.1:1/0")
    assert isinstance(c, Check) and isinstance(c, Watcher)
    assert (c.name, c.type, c.interval_s, c.timeout_s) == ("cache", "redis", 10.0, 2.0)


def test_config_refuses_other_schemes() -> None:
    with pytest.raises(ValueError, match="redis://"):
        Config(name="cache", type="redis", url="http://user:pw@127.0.0.1:6379")


# ---------------------------------------------------------------- INFO and PING


async def test_reports_ping_memory_and_clients(check: RedisCheck, client: aioredis.Redis) -> None:
    samples = await check.collect()
    info = await client.info()
    assert 0 < value(samples, "portal_redis_ping_seconds") < 1.0
    used = value(samples, "portal_redis_memory_used_bytes")
    assert 100_000 < used < 1_000_000_000
    assert abs(used - info["used_memory"]) < 1_000_000  # the same server, moments apart
    assert value(samples, "portal_redis_memory_max_bytes") == 0
    assert value(samples, "portal_redis_memory_used_ratio") == 0  # no limit: no ratio
    assert value(samples, "portal_redis_evicted_keys_total") == 0
    assert value(samples, "portal_sf_replay_keys") == 0
    assert not [s for s in samples if s.name == "portal_redis_up" or "check" in s.labels]


async def test_counts_connected_clients(check: RedisCheck, redis_up: RedisServer) -> None:
    before = value(await check.collect(), "portal_redis_connected_clients")
    assert before >= 1  # at least the check itself
    extra = [aioredis.Redis.from_url(redis_up.url, single_connection_client=True) for _ in range(3)]
    for c in extra:
        await c.ping()
    assert value(await check.collect(), "portal_redis_connected_clients") == before + 3
    for c in extra:
        await c.aclose()


async def test_memory_ratio_follows_maxmemory(check: RedisCheck, client: aioredis.Redis) -> None:
    await client.config_set("maxmemory", 100 * 1024 * 1024)
    samples = await check.collect()
    used = value(samples, "portal_redis_memory_used_bytes")
    assert value(samples, "portal_redis_memory_max_bytes") == 100 * 1024 * 1024
    assert value(samples, "portal_redis_memory_used_ratio") == pytest.approx(used / (100 * 1024 * 1024))
    assert 0 < value(samples, "portal_redis_memory_used_ratio") < 1


async def test_counts_evicted_keys(check: RedisCheck, client: aioredis.Redis) -> None:
    await client.mset({f"fill:{i}": "x" * 10_000 for i in range(100)})
    used = (await client.info("memory"))["used_memory"]
    await client.config_set("maxmemory-policy", "allkeys-random")
    await client.config_set("maxmemory", used - 300_000)
    await client.set("one:more", "y" * 10_000)  # over the limit: Redis evicts to make room
    await client.config_set("maxmemory", 0)  # no more evictions while we compare
    samples = await check.collect()
    evicted = value(samples, "portal_redis_evicted_keys_total")
    assert evicted >= 30
    assert evicted == (await client.info("stats"))["evicted_keys"]


# ---------------------------------------------------------------- replay ids


async def test_replay_ids_per_channel(client: aioredis.Redis, redis_up: RedisServer) -> None:
    clock = FakeClock()
    check = make_check(redis_up.url, clock=clock)
    await client.set(ORDER_KEY, "1234")
    await client.set("sf:pe:replay:/event/Text__e", "not-a-number")
    await client.set("unrelated:key", "5")
    samples = await check.collect()
    await check.aclose()
    assert value(samples, "portal_sf_replay_keys") == 2
    assert names(samples, "portal_sf_replay_id") == {ORDER: 1234.0}  # the non-numeric value has no id series
    assert names(samples, "portal_sf_replay_stalled_seconds") == {ORDER: 0.0, "/event/Text__e": 0.0}
    assert names(samples, "portal_sf_replay_last_advance_timestamp_seconds") == {
        ORDER: T0, "/event/Text__e": T0}


async def test_stall_grows_until_the_id_advances(client: aioredis.Redis, redis_up: RedisServer) -> None:
    clock = FakeClock()
    check = make_check(redis_up.url, clock=clock)
    await client.set(ORDER_KEY, "100")
    await check.collect()
    clock.advance(60)
    samples = await check.collect()
    assert value(samples, "portal_sf_replay_stalled_seconds", channel=ORDER) == 60
    assert value(samples, "portal_sf_replay_last_advance_timestamp_seconds", channel=ORDER) == T0
    clock.advance(1800)
    samples = await check.collect()
    assert value(samples, "portal_sf_replay_stalled_seconds", channel=ORDER) == 1860

    await client.set(ORDER_KEY, "101")
    clock.advance(5)
    samples = await check.collect()
    assert value(samples, "portal_sf_replay_id", channel=ORDER) == 101
    assert value(samples, "portal_sf_replay_stalled_seconds", channel=ORDER) == 0
    assert value(samples, "portal_sf_replay_last_advance_timestamp_seconds", channel=ORDER) == T0 + 1865
    clock.advance(10)
    samples = await check.collect()
    assert value(samples, "portal_sf_replay_stalled_seconds", channel=ORDER) == 10
    await check.aclose()


async def test_non_numeric_value_still_tracks_change(client: aioredis.Redis, redis_up: RedisServer) -> None:
    clock = FakeClock()
    check = make_check(redis_up.url, clock=clock)
    await client.set(ORDER_KEY, "opaque-a")
    await check.collect()
    clock.advance(30)
    assert value(await check.collect(), "portal_sf_replay_stalled_seconds", channel=ORDER) == 30
    await client.set(ORDER_KEY, "opaque-b")
    clock.advance(1)
    samples = await check.collect()
    assert value(samples, "portal_sf_replay_stalled_seconds", channel=ORDER) == 0
    assert names(samples, "portal_sf_replay_id") == {}
    await check.aclose()


async def test_restart_keeps_the_stall_clock(client: aioredis.Redis, redis_up: RedisServer,
                                             tmp_path: Path) -> None:
    """A new check over the reopened state database (a monitor restart) does not reset the stall."""
    clock = FakeClock()
    await client.set(ORDER_KEY, "500")
    db = open_db(tmp_path)
    first = make_check(redis_up.url, state=SqliteState(db), clock=clock)
    await first.collect()
    clock.advance(600)
    await first.collect()
    await first.aclose()
    db.close()

    clock.advance(900)
    db = open_db(tmp_path)
    second = make_check(redis_up.url, state=SqliteState(db), clock=clock)
    samples = await second.collect()
    await second.aclose()
    assert value(samples, "portal_sf_replay_stalled_seconds", channel=ORDER) == 1500
    assert value(samples, "portal_sf_replay_last_advance_timestamp_seconds", channel=ORDER) == T0
    assert SqliteState(db).load("redis:cache") == {ORDER_KEY: {"value": "500", "changed_at": T0}}
    db.close()


class CountingState(MemoryState):
    """MemoryState that counts writes, to see that unchanged values are not saved again."""

    def __init__(self) -> None:
        super().__init__()
        self.saves = 0

    def save(self, namespace: str, key: str, value: Any) -> None:
        self.saves += 1
        super().save(namespace, key, value)


async def test_state_is_saved_only_on_change_and_forgotten_with_the_key(
        client: aioredis.Redis, redis_up: RedisServer) -> None:
    state, clock = CountingState(), FakeClock()
    check = make_check(redis_up.url, state=state, clock=clock)
    await client.set(ORDER_KEY, "1")
    await check.collect()
    await check.collect()
    assert state.saves == 1
    await client.set(ORDER_KEY, "2")
    await check.collect()
    assert state.saves == 2

    await client.delete(ORDER_KEY)
    samples = await check.collect()
    assert state.load("redis:cache") == {}
    assert names(samples, "portal_sf_replay_stalled_seconds") == {}
    clock.advance(100)
    await client.set(ORDER_KEY, "2")  # back with the same value: a new key, a fresh clock
    samples = await check.collect()
    assert value(samples, "portal_sf_replay_last_advance_timestamp_seconds", channel=ORDER) == T0 + 100
    await check.aclose()


async def test_max_keys_bounds_the_scan(client: aioredis.Redis, redis_up: RedisServer) -> None:
    await client.mset({f"sf:pe:replay:/event/E{i}__e": str(i) for i in range(5000)})
    await client.config_resetstat()
    state = MemoryState()
    check = make_check(redis_up.url, state=state, max_keys=10)
    samples = await check.collect()
    await check.aclose()
    assert value(samples, "portal_sf_replay_keys") == 10
    assert len(names(samples, "portal_sf_replay_stalled_seconds")) == 10
    assert len(state.load("redis:cache")) == 10
    # One SCAN (COUNT 1000) already finds more than 10 keys: the check stops there,
    # where walking 5000 keys takes at least five.
    scans = (await client.info("commandstats"))["cmdstat_scan"]["calls"]
    assert scans == 1


async def test_incomplete_scan_does_not_forget_unseen_keys(client: aioredis.Redis,
                                                            redis_up: RedisServer) -> None:
    await client.mset({f"sf:pe:replay:/event/E{i}__e": str(i) for i in range(3000)})
    state = MemoryState()
    state.save("redis:cache", "sf:pe:replay:/event/Unseen__e", {"value": "7", "changed_at": T0 - 100})
    await client.set("sf:pe:replay:/event/Unseen__e", "7")
    check = make_check(redis_up.url, state=state, max_keys=5)
    await check.collect()
    await check.aclose()
    assert "sf:pe:replay:/event/Unseen__e" in state.load("redis:cache")


# ---------------------------------------------------------------- failures


async def test_down_then_back_with_the_same_check(redis_up: RedisServer, client: aioredis.Redis) -> None:
    check = make_check(redis_up.url)
    await client.set(ORDER_KEY, "9")
    await check.collect()
    redis_up.stop()
    with pytest.raises(CheckError) as err:
        await check.collect()
    assert err.value.reason == "connect"
    assert redis_up.url in str(err.value)
    redis_up.start()
    await client.set(ORDER_KEY, "10")  # the restarted server lost its data (no persistence)
    samples = await check.collect()
    assert value(samples, "portal_sf_replay_id", channel=ORDER) == 10
    await check.aclose()


async def test_refused_port_is_connect() -> None:
    check = make_check(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(CheckError) as err:
        await check.collect()
    assert err.value.reason == "connect"


@pytest.fixture
def redis_with_password(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis-auth", args=["--requirepass", "s3cret-pw"])
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize("userinfo", [":wrong-pw@", "default:wrong-pw@", ""])
async def test_wrong_or_missing_password_is_auth(redis_with_password: RedisServer, userinfo: str) -> None:
    url = f"redis://{userinfo}127.0.0.1:{redis_with_password.port}/0"
    check = make_check(url)
    with pytest.raises(CheckError) as err:
        await check.collect()
    await check.aclose()
    assert err.value.reason == "auth"
    assert "wrong-pw" not in str(err.value)
    assert f"127.0.0.1:{redis_with_password.port}" in str(err.value)


async def test_right_password_works(redis_with_password: RedisServer) -> None:
    check = make_check(f"redis://:s3cret-pw@127.0.0.1:{redis_with_password.port}/0")
    samples = await check.collect()
    await check.aclose()
    assert value(samples, "portal_redis_connected_clients") >= 1


async def _fake_server(reply: bytes | None) -> asyncio.Server:
    """A TCP peer that answers every read with `reply`, or never answers (None)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.read(4096):
                if reply is not None:
                    writer.write(reply)
                    await writer.drain()
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def test_silent_peer_is_timeout() -> None:
    server = await _fake_server(None)
    port = server.sockets[0].getsockname()[1]
    check = make_check(f"redis://127.0.0.1:{port}/0", timeout_s=0.2)
    with pytest.raises(CheckError) as err:
        await check.collect()
    server.close()
    assert err.value.reason == "timeout"


async def test_loading_reply_is_bad_reply() -> None:
    server = await _fake_server(b"-LOADING Redis is loading the dataset in memory\r\n")
    port = server.sockets[0].getsockname()[1]
    check = make_check(f"redis://127.0.0.1:{port}/0")
    with pytest.raises(CheckError) as err:
        await check.collect()
    server.close()
    assert err.value.reason == "bad_reply"
    assert "loading the dataset" in str(err.value)


# ---------------------------------------------------------------- watch


class GatedSleep:
    """An injected sleep that records each delay and returns only once the test opens the gate."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.gate = asyncio.Event()
        self.called = asyncio.Event()

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        self.called.set()
        await self.gate.wait()


async def _until_subscribed(url: str) -> None:
    """Poll the server until the watch connection has subscribed (bounded)."""
    async with aioredis.Redis.from_url(url, socket_timeout=5) as c:
        async with asyncio.timeout(5):
            while not await c.pubsub_channels("portal-monitor:watch:*"):
                await asyncio.sleep(0.005)


@pytest.mark.parametrize("how", ["kill", "stop"])
async def test_watch_wakes_at_once_on_crash_and_again_on_recovery(redis_up: RedisServer, how: str) -> None:
    sleep = GatedSleep()
    woke = asyncio.Event()
    check = make_check(redis_up.url, sleep=sleep)
    task = asyncio.create_task(check.watch(woke.set))
    try:
        await _until_subscribed(redis_up.url)
        assert not woke.is_set()
        started = time.perf_counter()
        getattr(redis_up, how)()
        await asyncio.wait_for(woke.wait(), 1.0)
        elapsed = time.perf_counter() - started
        assert elapsed < 0.5, f"wake {elapsed:.3f}s after {how}"

        await asyncio.wait_for(sleep.called.wait(), 1.0)  # backing off, not spinning
        assert sleep.delays == [0.1]
        woke.clear()
        redis_up.start()
        sleep.gate.set()
        await asyncio.wait_for(woke.wait(), 2.0)  # recovery is seen as soon as the backoff ends
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await check.aclose()


async def test_watch_started_while_down_wakes_when_the_server_arrives(redis_up: RedisServer) -> None:
    """The monitor started during an outage: the first connection that works is a recovery too."""
    sleep = GatedSleep()
    woke = asyncio.Event()
    redis_up.stop()
    check = make_check(redis_up.url, sleep=sleep)
    task = asyncio.create_task(check.watch(woke.set))
    try:
        await asyncio.wait_for(sleep.called.wait(), 1.0)  # the first attempt failed; backing off
        assert not woke.is_set()
        redis_up.start()
        sleep.gate.set()
        await asyncio.wait_for(woke.wait(), 2.0)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_watch_backs_off_to_a_cap_while_down() -> None:
    """Against a dead port the watch retries with doubling delays up to min(interval, 5s), never waking."""
    delays: list[float] = []
    enough = asyncio.Event()

    async def sleep(delay: float) -> None:
        delays.append(delay)
        if len(delays) >= 9:
            enough.set()
            await asyncio.Event().wait()

    woke: list[int] = []
    check = make_check(f"redis://127.0.0.1:{free_port()}/0", sleep=sleep)
    task = asyncio.create_task(check.watch(lambda: woke.append(1)))
    await asyncio.wait_for(enough.wait(), 5.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]
    assert woke == []


async def test_watch_authenticates(redis_with_password: RedisServer) -> None:
    woke = asyncio.Event()
    url = f"redis://:s3cret-pw@127.0.0.1:{redis_with_password.port}/0"
    check = make_check(url)
    task = asyncio.create_task(check.watch(woke.set))
    try:
        await _until_subscribed(url)
        redis_with_password.kill()
        await asyncio.wait_for(woke.wait(), 1.0)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


class SteppedSleep:
    """An injected sleep that reports each delay on a queue and returns only when the test
    lets one sleep through (`step()`)."""

    def __init__(self) -> None:
        self.called: asyncio.Queue[float] = asyncio.Queue()
        self._steps = asyncio.Semaphore(0)

    async def __call__(self, delay: float) -> None:
        self.called.put_nowait(delay)
        await self._steps.acquire()

    def step(self) -> None:
        self._steps.release()


async def test_watch_logs_loss_failed_retry_and_restore_without_the_password(
        redis_with_password: RedisServer) -> None:
    """The watch's log events keep their names, give a reason, and show the target redacted."""
    url = f"redis://:s3cret-pw@127.0.0.1:{redis_with_password.port}/0"
    sleep, woke = SteppedSleep(), asyncio.Event()
    check = make_check(url, sleep=sleep)
    with capture_logs() as logs:
        task = asyncio.create_task(check.watch(woke.set))
        try:
            await _until_subscribed(url)
            redis_with_password.kill()
            await asyncio.wait_for(woke.wait(), 1.0)
            assert await asyncio.wait_for(sleep.called.get(), 1.0) == 0.1
            sleep.step()  # retry while the server is still down
            assert await asyncio.wait_for(sleep.called.get(), 2.0) == 0.2
            woke.clear()
            redis_with_password.start()
            sleep.step()
            await asyncio.wait_for(woke.wait(), 2.0)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    watch_logs = [e for e in logs if e["event"].startswith("redis_watch")]
    assert [(e["event"], e["log_level"], e.get("reason")) for e in watch_logs] == [
        ("redis_watch_lost", "warning", "connect"),
        ("redis_watch_connect_failed", "debug", "connect"),
        ("redis_watch_restored", "info", None),
    ]
    assert watch_logs[1]["retry_in_s"] == 0.2
    assert {e["target"] for e in watch_logs} == {f"redis://:***@127.0.0.1:{redis_with_password.port}/0"}
    assert all(e["check"] == "cache" for e in watch_logs)
    assert "s3cret-pw" not in repr(logs)


async def test_watch_disabled_only_waits_for_cancellation() -> None:
    check = make_check(f"redis://127.0.0.1:{free_port()}/0", watch=False)
    woke: list[int] = []
    task = asyncio.create_task(check.watch(lambda: woke.append(1)))
    for _ in range(10):
        await asyncio.sleep(0)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert woke == []


@pytest.fixture
def redis_tls(tmp_path: Path) -> Iterator[tuple[RedisServer, Path]]:
    """A TLS-only redis-server with a throwaway self-signed certificate for 127.0.0.1."""
    openssl = require_tool("openssl", "openssl is not installed (Debian package `openssl`)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=60)
    server = RedisServer(tmp_path / "redis-tls", tls=(cert, key), args=["--requirepass", "tls-pw"])
    server.start()
    yield server, cert
    server.stop()


async def test_tls_and_password_for_collect_and_watch(redis_tls: tuple[RedisServer, Path]) -> None:
    """rediss:// with a CA file and a password: collect works and the watch connection sees a crash."""
    server, cert = redis_tls
    url = f"rediss://:tls-pw@127.0.0.1:{server.port}/0?ssl_ca_certs={cert}"
    check = make_check(url)
    samples = await check.collect()
    assert value(samples, "portal_redis_connected_clients") == 1
    woke = asyncio.Event()
    task = asyncio.create_task(check.watch(woke.set))
    try:
        await _until_subscribed(url)
        server.kill()
        await asyncio.wait_for(woke.wait(), 1.0)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await check.aclose()
