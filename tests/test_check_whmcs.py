"""The whmcs check against a fake WHMCS that answers like the real one, errors included."""

from __future__ import annotations

import html
import time
from collections.abc import AsyncIterator
from urllib.parse import quote, quote_plus

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from checks import whmcs
from checks.whmcs import Verdict, WhmcsCheck, classify_reply
from monitor.httpclient import HttpClient
from monitor.model import CheckContext, CheckError, MemoryState
from tests.fakes import FakeWhmcs, closed_port_url

IDENT = "Xid-7f3a9c"
SECRET = "S3cr3t-do-not-leak-91b2"
ACCESSKEY = "AK-do-not-leak-55e1"
REASONS = {"auth", "ip_denied", "http_5xx", "timeout", "bad_reply", "connect"}


def make_check(url: str, *, timeout: float = 2.0, secret: str = SECRET, identifier: str = IDENT,
               accesskey: str | None = None) -> WhmcsCheck:
    cfg = whmcs.Config(name="billing", type="whmcs", url=url, identifier=identifier, secret=secret,
                       accesskey=accesskey)
    ctx = CheckContext(interval_s=30.0, timeout_s=timeout, state=MemoryState(), now=time.time)
    return WhmcsCheck(cfg, ctx)


@pytest.fixture
async def fake() -> AsyncIterator[FakeWhmcs]:
    async with FakeWhmcs(identifier=IDENT, secret=SECRET) as peer:
        yield peer


async def failure(check: WhmcsCheck) -> CheckError:
    try:
        with pytest.raises(CheckError) as info:
            await check.collect()
    finally:
        await check.aclose()
    err = info.value
    assert err.reason in REASONS
    for secret in (SECRET, IDENT, ACCESSKEY):
        assert secret not in str(err)
    return err


async def test_success_posts_the_getclients_form(fake: FakeWhmcs) -> None:
    check = make_check(fake.url)
    try:
        samples = await check.collect()
    finally:
        await check.aclose()
    assert [s.name for s in samples] == ["portal_whmcs_response_seconds"]
    assert 0 <= samples[0].value < 2
    assert samples[0].labels == {}
    assert fake.requests == [{
        "identifier": IDENT, "secret": SECRET, "action": "GetClients", "limitnum": "1",
        "responsetype": "json",
    }]


async def test_accesskey_is_sent_when_set() -> None:
    async with FakeWhmcs(identifier=IDENT, secret=SECRET, accesskey=ACCESSKEY) as fake:
        check = make_check(fake.url, accesskey=ACCESSKEY)
        try:
            await check.collect()
        finally:
            await check.aclose()
        assert fake.requests[-1]["accesskey"] == ACCESSKEY


async def test_missing_accesskey_is_ip_denied_with_403() -> None:
    """Without the access key WHMCS falls back to its IP allow-list, which refuses us."""
    async with FakeWhmcs(identifier=IDENT, secret=SECRET, accesskey=ACCESSKEY) as fake:
        err = await failure(make_check(fake.url))
    assert err.reason == "ip_denied"
    assert "Invalid IP 127.0.0.1" in str(err) and "HTTP 403" in str(err)
    assert "accesskey" not in fake.requests[-1]


async def test_wrong_secret_is_auth(fake: FakeWhmcs) -> None:
    err = await failure(make_check(fake.url, secret="wrong-secret"))
    assert err.reason == "auth"
    assert "'Authentication Failed'" in str(err)
    assert str(err).startswith(fake.url + ": ")


async def test_wrong_identifier_is_auth(fake: FakeWhmcs) -> None:
    err = await failure(make_check(fake.url, identifier="nobody"))
    assert err.reason == "auth"
    assert "Invalid or missing credentials" in str(err)


async def test_authentication_failed_with_200_is_auth_and_keeps_response_time(fake: FakeWhmcs) -> None:
    fake.fail_auth()
    err = await failure(make_check(fake.url))
    assert err.reason == "auth"
    assert "HTTP 200" in str(err)
    assert [s.name for s in err.samples] == ["portal_whmcs_response_seconds"]


async def test_invalid_ip_with_403_is_ip_denied(fake: FakeWhmcs) -> None:
    fake.deny_ip("203.0.113.9")
    err = await failure(make_check(fake.url))
    assert err.reason == "ip_denied"
    assert "'Invalid IP 203.0.113.9'" in str(err)
    assert [s.name for s in err.samples] == ["portal_whmcs_response_seconds"]


async def test_500_html_page_is_http_5xx(fake: FakeWhmcs) -> None:
    fake.answer(500, "<html><body><h1>500 Internal Server Error</h1></body></html>")
    err = await failure(make_check(fake.url))
    assert err.reason == "http_5xx"
    assert "HTTP 500 text/html" in str(err) and "Internal Server Error" in str(err)


async def test_200_html_page_is_bad_reply(fake: FakeWhmcs) -> None:
    fake.answer(200, "<!DOCTYPE html><html><title>Maintenance</title><body>Back soon</body></html>")
    err = await failure(make_check(fake.url))
    assert err.reason == "bad_reply"
    assert "HTTP 200 text/html, not a WHMCS JSON reply" in str(err) and "Maintenance" in str(err)


async def test_php_notice_before_json_is_bad_reply(fake: FakeWhmcs) -> None:
    """display_errors=On puts HTML in front of the JSON: the BFF cannot parse that either."""
    fake.answer(200, '<br /><b>Deprecated</b>: something<br />{"result":"success"}')
    assert (await failure(make_check(fake.url))).reason == "bad_reply"


async def test_json_without_result_is_bad_reply(fake: FakeWhmcs) -> None:
    fake.answer(200, {"clients": {"client": []}})
    err = await failure(make_check(fake.url))
    assert err.reason == "bad_reply" and "without 'result'" in str(err)


async def test_other_error_message_is_bad_reply(fake: FakeWhmcs) -> None:
    fake.answer(200, {"result": "error", "message": "Command Not Found"})
    err = await failure(make_check(fake.url))
    assert err.reason == "bad_reply" and "'Command Not Found'" in str(err)


async def test_hanging_reply_is_timeout(fake: FakeWhmcs) -> None:
    fake.hang()
    err = await failure(make_check(fake.url, timeout=0.2))
    assert err.reason == "timeout"
    assert "0.2s" in str(err) and fake.url in str(err)
    assert err.samples == []
    assert fake.request_seen.is_set()


async def test_refused_connection_is_connect() -> None:
    url = closed_port_url("/includes/api.php")
    err = await failure(make_check(url))
    assert err.reason == "connect"
    assert str(err).startswith(url + ": ")


async def test_unresolvable_host_is_connect() -> None:
    err = await failure(make_check("http://whmcs.invalid/includes/api.php"))
    assert err.reason == "connect"


async def test_secret_echoed_by_whmcs_is_scrubbed(fake: FakeWhmcs) -> None:
    fake.answer(200, {"result": "error", "message": f"Authentication Failed for {IDENT}:{SECRET}"})
    err = await failure(make_check(fake.url))
    assert err.reason == "auth"
    assert "***:***" in str(err)


async def test_form_encoded_credentials_quoted_by_an_error_page_are_scrubbed() -> None:
    """A proxy's 500 page quoting the posted body shows `secret=S3cr%2Bt%2Fx%3D`: scrubbed too,
    before the body is cut to its first 200 characters (no prefix of a secret is left)."""
    ident, secret = "Xid+7f/3a=", "S3cr3t+do/not=leak&91b2"
    async with FakeWhmcs(identifier=ident, secret=secret) as fake:
        body = f"identifier={quote_plus(ident)}&secret={quote_plus(secret)}&action=GetClients"
        fake.answer(500, f"<html><pre>{'x' * 120} POST /includes/api.php {body} "
                         f"{quote(secret, safe='')} {html.escape(secret)}</pre></html>")
        err = await failure(make_check(fake.url, identifier=ident, secret=secret))
    assert err.reason == "http_5xx"
    for form in (quote_plus(ident), quote_plus(secret), quote(secret, safe=""), html.escape(secret),
                 quote_plus(secret)[:9]):
        assert form not in str(err), str(err)
    assert "identifier=***&secret=***" in str(err)


async def test_password_in_url_is_redacted(fake: FakeWhmcs) -> None:
    url = fake.url.replace("http://", "http://proxyuser:hunter2@")
    fake.fail_auth()
    err = await failure(make_check(url))
    assert "hunter2" not in str(err) and "proxyuser:***@" in str(err)


async def test_long_message_is_truncated(fake: FakeWhmcs) -> None:
    fake.answer(200, {"result": "error", "message": "x" * 5000})
    err = await failure(make_check(fake.url))
    assert len(str(err)) < len(fake.url) + 300


async def test_session_is_reused_and_closed(fake: FakeWhmcs) -> None:
    check = make_check(fake.url)
    await check.collect()
    session = check._http.session()
    await check.collect()
    assert check._http.session() is session
    await check.aclose()
    assert session.closed
    await check.aclose()  # idempotent


async def test_every_probe_connects_afresh_on_a_shared_client(fake: FakeWhmcs) -> None:
    """`Connection: close`: the shared keep-alive pool never hands WHMCS probes an old socket."""
    client = HttpClient()
    cfg = whmcs.Config(name="whmcs", type="whmcs", url=fake.url, identifier=IDENT, secret=SECRET)
    check = whmcs.WhmcsCheck(cfg, CheckContext(30.0, 5.0, MemoryState(), time.time, http=client))
    try:
        for _ in range(3):
            await check.collect()
        assert len(set(fake.peers)) == 3, fake.peers
        await check.aclose()
        assert not client.closed  # the check does not close what it did not make
    finally:
        await client.aclose()


# --- classify_reply: the pure parser -----------------------------------------------------------

@pytest.mark.parametrize(
    ("status", "ctype", "body", "reason"),
    [
        (200, "application/json", b'{"result":"success","totalresults":0}', None),
        (200, "text/html", b'  {"result":"success"}', None),  # old WHMCS: JSON sent as text/html
        (403, "application/json", b'{"result":"error","message":"Invalid IP 2405:201:abcd::1"}', "ip_denied"),
        (200, "application/json", b'{"result":"error","message":"Forbidden IP 127.0.0.1"}', "ip_denied"),
        (200, "application/json", b'{"result":"error","message":"Authentication Failed"}', "auth"),
        (200, "application/json",
         b'{"result":"error","message":"Invalid Permissions: API action \\"getclients\\" is not allowed"}',
         "auth"),
        (500, "application/json", b'{"result":"error","message":"Authentication Failed"}', "auth"),
        (500, "application/json", b'{"result":"error","message":"SQL error"}', "http_5xx"),
        (502, "text/html", b"<html>Bad Gateway</html>", "http_5xx"),
        (503, "", b"", "http_5xx"),
        (200, "text/html", b"", "bad_reply"),
        (404, "text/html", b"<html>Not Found</html>", "bad_reply"),
        (200, "application/json", b'{"result":"error"}', "bad_reply"),
        (200, "application/json", b'["result"]', "bad_reply"),
        (200, "application/json", b'{"result":', "bad_reply"),
        (200, "text/plain", b"result=error;message=Authentication Failed", "auth"),
        (200, "text/plain", b"result=success;totalresults=1", None),
    ],
)
def test_classify_reply(status: int, ctype: str, body: bytes, reason: str | None) -> None:
    verdict = classify_reply(status, ctype, body)
    assert verdict.reason == reason
    assert verdict.ok is (reason is None)


@given(st.integers(100, 599), st.text(max_size=40), st.binary(max_size=400))
def test_classify_reply_is_total(status: int, ctype: str, body: bytes) -> None:
    verdict = classify_reply(status, ctype, body)
    assert isinstance(verdict, Verdict)
    assert verdict.ok is (verdict.reason is None)
    assert verdict.reason is None or verdict.reason in REASONS
    assert len(verdict.detail) < 600


@given(st.integers(100, 599), st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(["result", "message", "x"]),
                                                                 inner, max_size=3),
    max_leaves=10,
))
def test_classify_reply_is_total_on_json(status: int, doc: object) -> None:
    import json

    verdict = classify_reply(status, "application/json", json.dumps(doc).encode())
    assert verdict.reason is None or verdict.reason in REASONS


@pytest.mark.parametrize("url", ["whmcs.example/includes/api.php", "ftp://whmcs.example/api.php",
                                 "http://u:hunter2@[::1/api.php", "http:///api.php"])
def test_config_refuses_urls_that_are_not_http_without_quoting_the_password(url: str) -> None:
    with pytest.raises(pydantic.ValidationError, match="is not an http:// or https:// URL") as info:
        whmcs.Config(name="w", type="whmcs", url=url, identifier="i", secret="s")
    assert "hunter2" not in str(info.value.errors()[0]["msg"])
