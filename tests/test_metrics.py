"""/metrics renders the store: types and help from the METRICS tables, text and OpenMetrics."""

from __future__ import annotations

import aiohttp
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

import checks
from monitor import store as store_mod
from monitor.web.metrics import make_metrics_handler
from monitor.model import CheckResult, Sample
from monitor.web.server import bound_port, build_app, split_listen, start_server
from monitor.store import Store

INFO = {**checks.METRICS, **store_mod.METRICS,
        "portal_test_duration_seconds": ("histogram", "a histogram"),
        "portal_test_lines_total": ("counter", "a counter")}


def filled_store() -> Store:
    store = Store()
    store.put(CheckResult("cache", "redis", True, [
        Sample("portal_redis_ping_seconds", {}, 0.0012),
        Sample("portal_redis_evicted_keys_total", {}, 7),
        Sample("portal_sf_replay_id", {"channel": "/event/Order__e"}, 42),
    ], started_at=1_700_000_000.0, duration_s=0.003))
    store.put(CheckResult("db", "postgres", False, [], 1_700_000_000.0, 0.2, "connect", "refused"))
    store.add_source(lambda: [
        Sample("portal_test_lines_total", {"level": "error"}, 3),
        Sample("portal_test_duration_seconds_bucket", {"le": "0.1"}, 1),
        Sample("portal_test_duration_seconds_bucket", {"le": "+Inf"}, 2),
        Sample("portal_test_duration_seconds_sum", {}, 0.55),
        Sample("portal_test_duration_seconds_count", {}, 2),
    ])
    return store


async def serve(store: Store, ready: bool = True):
    app = build_app(make_metrics_handler(store.samples, INFO), ready=lambda: ready)
    runner = await start_server(app, "127.0.0.1:0")
    return runner, f"http://127.0.0.1:{bound_port(runner)}"


async def test_metrics_parse_with_types_and_labels() -> None:
    runner, base = await serve(filled_store())
    try:
        async with aiohttp.ClientSession() as s, s.get(f"{base}/metrics") as r:
            assert r.status == 200
            text = await r.text()
    finally:
        await runner.cleanup()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert fams["portal_redis_ping_seconds"].type == "gauge"
    assert fams["portal_redis_ping_seconds"].documentation == "PING round trip"
    assert fams["portal_redis_evicted_keys"].type == "counter"
    assert fams["portal_test_duration_seconds"].type == "histogram"
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in fams.values() for s in f.samples}
    assert values[("portal_redis_up", (("check", "cache"),))] == 1
    assert values[("portal_postgres_up", (("check", "db"),))] == 0
    assert values[("portal_sf_replay_id", (("channel", "/event/Order__e"), ("check", "cache")))] == 42
    assert values[("portal_check_errors_total", (("check", "db"), ("reason", "connect"), ("type", "postgres")))] == 1
    assert values[("portal_test_duration_seconds_count", ())] == 2


async def test_openmetrics_when_asked() -> None:
    runner, base = await serve(filled_store())
    try:
        headers = {"Accept": "application/openmetrics-text; version=1.0.0"}
        async with aiohttp.ClientSession() as s, s.get(f"{base}/metrics", headers=headers) as r:
            assert r.headers["Content-Type"].startswith("application/openmetrics-text")
            text = await r.text()
    finally:
        await runner.cleanup()
    assert text.endswith("# EOF\n")
    fams = {f.name: f for f in parse_openmetrics(text)}
    assert fams["portal_test_lines"].type == "counter"


async def test_health_and_readiness_endpoints() -> None:
    runner, base = await serve(Store(), ready=False)
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{base}/-/healthy") as r:
                assert r.status == 200
            async with s.get(f"{base}/-/ready") as r:
                assert r.status == 503
    finally:
        await runner.cleanup()


def test_listen_forms() -> None:
    assert split_listen("127.0.0.1:9820") == ("127.0.0.1", 9820)
    assert split_listen("[::1]:9820") == ("::1", 9820)
    assert split_listen(":9820") == ("0.0.0.0", 9820)
