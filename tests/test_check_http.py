"""The http check against a fake BFF /health: status, time, components, shared keep-alive session."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from checks import http
from checks.http import MAX_COMPONENTS, HttpCheck, component_ok, parse_components
from monitor.httpclient import HttpClient
from monitor.model import CheckContext, CheckError, MemoryState, Sample
from tests.fakes import FakeBff, closed_port_url


def make_check(
    url: str, *, timeout: float = 2.0, name: str = "bff_health", client: HttpClient | None = None, **fields: Any
) -> HttpCheck:
    cfg = http.Config(name=name, type="http", url=url, **fields)
    ctx = CheckContext(interval_s=10.0, timeout_s=timeout, state=MemoryState(), now=time.time, http=client)
    return HttpCheck(cfg, ctx)


def by_name(samples: list[Sample]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in samples}


@pytest.fixture
async def bff() -> AsyncIterator[FakeBff]:
    async with FakeBff() as peer:
        yield peer


async def collect(check: HttpCheck) -> list[Sample]:
    try:
        return await check.collect()
    finally:
        await check.aclose()


async def failure(check: HttpCheck) -> CheckError:
    with pytest.raises(CheckError) as info:
        await collect(check)
    return info.value


async def test_healthy_reply_gives_status_time_and_components(bff: FakeBff) -> None:
    samples = await collect(make_check(bff.url, components="checks"))
    values = by_name(samples)
    assert values[("portal_http_status_code", ())] == 200
    assert 0 <= values[("portal_http_response_seconds", ())] < 2
    assert values[("portal_http_component_up", (("component", "database"),))] == 1
    assert values[("portal_http_component_up", (("component", "cache"),))] == 1
    assert len(samples) == 4
    assert bff.last_method == "GET"


async def test_503_with_a_failed_component_keeps_status_time_and_components(bff: FakeBff) -> None:
    bff.component_down("database", "fail", status=503)
    err = await failure(make_check(bff.url, components="checks"))
    assert err.reason == "http_status"
    assert str(err) == f"{bff.url}: HTTP 503, expected 200 (components down: database)"
    values = by_name(err.samples)
    assert values[("portal_http_status_code", ())] == 503
    assert ("portal_http_response_seconds", ()) in values
    assert values[("portal_http_component_up", (("component", "database"),))] == 0
    assert values[("portal_http_component_up", (("component", "cache"),))] == 1


async def test_component_object_with_non_ok_status_is_down(bff: FakeBff) -> None:
    bff.component_down("cache", {"status": "degraded", "latency": 900}, status=200)
    values = by_name(await collect(make_check(bff.url, components="checks")))
    assert values[("portal_http_component_up", (("component", "cache"),))] == 0
    assert values[("portal_http_component_up", (("component", "database"),))] == 1


async def test_wrong_status_without_components_is_http_status(bff: FakeBff) -> None:
    bff.answer(404, "<html>Not Found</html>", "text/html")
    err = await failure(make_check(bff.url))
    assert err.reason == "http_status"
    assert str(err) == f"{bff.url}: HTTP 404, expected 200"
    assert by_name(err.samples)[("portal_http_status_code", ())] == 404


async def test_expected_status_list(bff: FakeBff) -> None:
    bff.answer(204, b"", "text/plain")
    samples = await collect(make_check(bff.url, expected_status=[200, 204]))
    assert by_name(samples)[("portal_http_status_code", ())] == 204
    bff.healthy()
    err = await failure(make_check(bff.url, expected_status=204))
    assert err.reason == "http_status" and "HTTP 200, expected 204" in str(err)


async def test_non_json_body_with_components_is_bad_reply(bff: FakeBff) -> None:
    bff.answer(200, "<html>It works!</html>", "text/html")
    err = await failure(make_check(bff.url, components="checks"))
    assert err.reason == "bad_reply"
    assert "not JSON" in str(err) and "It works!" in str(err)
    assert by_name(err.samples)[("portal_http_status_code", ())] == 200


async def test_missing_components_key_is_bad_reply(bff: FakeBff) -> None:
    bff.answer(200, {"status": "ok"})
    err = await failure(make_check(bff.url, components="checks"))
    assert err.reason == "bad_reply" and "no 'checks' member" in str(err)


async def test_wrong_status_wins_over_an_unparseable_body(bff: FakeBff) -> None:
    """A 502 HTML page from a proxy is a status problem, not a malformed health reply."""
    bff.answer(502, "<html>Bad Gateway</html>", "text/html")
    err = await failure(make_check(bff.url, components="checks"))
    assert err.reason == "http_status"
    assert [s.name for s in err.samples] == ["portal_http_status_code", "portal_http_response_seconds"]


async def test_body_is_not_parsed_without_components(bff: FakeBff) -> None:
    bff.answer(200, "not json at all", "text/plain")
    samples = await collect(make_check(bff.url))
    assert [s.name for s in samples] == ["portal_http_status_code", "portal_http_response_seconds"]


async def test_hang_is_timeout(bff: FakeBff) -> None:
    bff.hang()
    err = await failure(make_check(bff.url, timeout=0.2, components="checks"))
    assert err.reason == "timeout"
    assert str(err) == f"{bff.url}: no full reply within 0.2s"
    assert err.samples == []


async def test_refused_connection_is_connect() -> None:
    url = closed_port_url("/health")
    err = await failure(make_check(url))
    assert err.reason == "connect"
    assert str(err).startswith(url + ": ")


async def test_headers_and_method_are_sent(bff: FakeBff) -> None:
    bff.answer(401, {"error": "unauthorized"})
    err = await failure(make_check(bff.url, method="HEAD", headers={"Authorization": "Bearer tok-123"}))
    assert bff.last_method == "HEAD"
    assert bff.last_headers["Authorization"] == "Bearer tok-123"
    assert "tok-123" not in str(err)


async def test_password_in_url_is_sent_as_basic_auth_and_redacted(bff: FakeBff) -> None:
    url = bff.url.replace("http://", "http://probe:hunter2@")
    bff.answer(401, {"error": "unauthorized"})
    err = await failure(make_check(url))
    assert bff.last_headers["Authorization"] == "Basic cHJvYmU6aHVudGVyMg=="
    assert "hunter2" not in str(err) and str(err).startswith(bff.url.replace("http://", "http://probe:***@"))


def test_url_credentials_and_authorization_header_are_refused_at_load() -> None:
    with pytest.raises(ValueError, match="credentials in the url and an Authorization header"):
        http.Config(name="x", type="http", url="http://u:p@h/health", headers={"authorization": "Bearer t"})


async def test_checks_share_one_keep_alive_session(bff: FakeBff) -> None:
    """Two checks given the daemon's client, several runs: one session, one connection; closing
    a check leaves the shared client open, closing the client closes its session."""
    client = HttpClient()
    one = make_check(bff.url, name="one", client=client)
    two = make_check(bff.url, name="two", client=client)
    for _ in range(3):
        await one.collect()
        await two.collect()
    session = client.session()
    assert len(set(bff.peers)) == 1, bff.peers  # every request on the same client socket
    await one.aclose()
    assert not session.closed
    await two.collect()
    await two.aclose()
    assert not session.closed and client.session() is session  # the owner closes it, not a check
    await client.aclose()
    assert session.closed and client.closed
    await client.aclose()  # idempotent
    again = make_check(bff.url, client=client)  # a fresh session after the owner closed the last one
    await collect(again)
    assert client.session() is not session
    await client.aclose()


async def test_a_check_without_a_client_owns_and_closes_its_own(bff: FakeBff) -> None:
    check = make_check(bff.url)
    await check.collect()
    own = check._http
    assert not own.closed
    await check.aclose()
    assert own.closed
    await check.aclose()  # idempotent


async def test_tls_verify_off_uses_its_own_connections(bff: FakeBff) -> None:
    """One session, but a verified and an unverified check never share a connection."""
    client = HttpClient()
    verified = make_check(bff.url, client=client)
    unverified = make_check(bff.url, tls_verify=False, client=client)
    try:
        for _ in range(2):
            await verified.collect()
            await unverified.collect()
        assert len(set(bff.peers)) == 2, bff.peers
        assert bff.peers[0] == bff.peers[2] and bff.peers[1] == bff.peers[3]
    finally:
        await client.aclose()


async def test_concurrent_checks_do_not_queue(bff: FakeBff) -> None:
    """The shared connector has no connection cap: 150 hanging requests are all in flight."""
    bff.hang()
    client = HttpClient()
    checks = [make_check(bff.url, name=f"c{i}", timeout=5.0, client=client) for i in range(150)]
    tasks = [asyncio.create_task(c.collect()) for c in checks]
    try:
        while bff.hits < len(checks):  # bounded by the hang: every request arrives or the test times out
            bff.request_seen.clear()
            await asyncio.wait_for(bff.request_seen.wait(), 5)
        bff.release()
        results = await asyncio.gather(*tasks)
        assert all(by_name(r)[("portal_http_status_code", ())] == 200 for r in results)
    finally:
        bff.release()
        for c in checks:
            await c.aclose()
        await client.aclose()


# --- parse_components: the pure parser ---------------------------------------------------------

@pytest.mark.parametrize(
    ("entry", "ok"),
    [("ok", True), ("OK", True), ("pass", True), ("Up", True), ("healthy", True), ("true", True),
     (True, True),
     ({"status": "ok", "latency": 3}, True), ({"status": "UP"}, True), ({"status": True}, True),
     ("fail", False), ("down", False), (False, False), (1, False), (None, False), ({"latency": 3}, False),
     ({"status": "error"}, False), ([], False)],
)
def test_component_ok(entry: Any, ok: bool) -> None:
    assert component_ok(entry) is ok


def test_parse_components_shapes() -> None:
    bff = b'{"status":"ok","checks":{"database":{"status":"ok"},"cache":"fail"}}'
    assert parse_components(bff, "checks") == {"database": True, "cache": False}
    microprofile = (b'{"status":"DOWN","checks":[{"name":"db","status":"UP"},'
                    b'{"name":"mq","status":"DOWN"},{"x":1}]}')
    assert parse_components(microprofile, "checks") == {"db": True, "mq": False}
    nested = b'{"details":{"checks":{"redis":"up"}}}'
    assert parse_components(nested, "details.checks") == {"redis": True}
    dotted = b'{"a.b":{"x":"ok"}}'
    assert parse_components(dotted, "a.b") == {"x": True}


@pytest.mark.parametrize(
    ("body", "error"),
    [(b"<html>", "not JSON"), (b"", "not JSON"), (b'{"status":"ok"}', "no 'checks' member"),
     (b'["checks"]', "no 'checks' member"), (b'{"checks":"ok"}', "is a JSON str"),
     (b'{"checks":3}', "JSON int")],
)
def test_parse_components_errors(body: bytes, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_components(body, "checks")


def test_parse_components_caps_the_number_of_series() -> None:
    body = json.dumps({"checks": {f"c{i}": "ok" for i in range(MAX_COMPONENTS * 3)}}).encode()
    assert len(parse_components(body, "checks")) == MAX_COMPONENTS


@given(st.binary(max_size=300), st.sampled_from(["checks", "a.b", ""]))
def test_parse_components_raises_only_value_error_on_bytes(body: bytes, key: str) -> None:
    try:
        result = parse_components(body, key)
    except ValueError:
        return
    assert all(isinstance(k, str) and isinstance(v, bool) for k, v in result.items())


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["checks", "status", "name", "a", "b"]), inner, max_size=4),
    max_leaves=20,
)


@given(_json, st.sampled_from(["checks", "a.b", "status"]))
def test_parse_components_raises_only_value_error_on_json(doc: Any, key: str) -> None:
    try:
        result = parse_components(json.dumps(doc).encode(), key)
    except ValueError:
        return
    assert all(isinstance(k, str) and isinstance(v, bool) for k, v in result.items())


@pytest.mark.parametrize("url", ["localhost:4000/health", "http://u:hunter2@[::1/health"])
def test_config_refuses_urls_that_are_not_http(url: str) -> None:
    with pytest.raises(pydantic.ValidationError, match="is not an http:// or https:// URL") as info:
        http.Config(name="h", type="http", url=url)
    assert "hunter2" not in str(info.value.errors()[0]["msg"])


def test_config_refuses_line_breaks_in_headers() -> None:
    with pytest.raises(ValueError, match="line break"):
        http.Config(name="h", type="http", url="http://h/health", headers={"X-Token": "a\r\nInjected: 1"})
