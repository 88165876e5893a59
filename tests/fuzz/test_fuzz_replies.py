"""Fuzzing the WHMCS and health-endpoint reply parsers (`checks.whmcs`, `checks.http`).

Property: `classify_reply(status, content_type, body)` is total (a `Verdict`: ok exactly when
there is no reason, the reason one of the documented ones, a bounded one-line-per-quote
detail); `parse_components(body, key)` gives {name: bool} with at most `MAX_COMPONENTS`
entries or raises `ValueError` saying what is wrong, never anything else.

Inputs: arbitrary bytes, WHMCS-shaped JSON with every type in `result`/`message`, legacy
`result=...;message=...` replies with invalid UTF-8, HTML error pages, JSON that JSON parsers
disagree on (huge numbers, `NaN`, duplicate keys, deep nesting, a BOM), random content types.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from checks.http import MAX_COMPONENTS, parse_components
from checks.whmcs import MESSAGE_LIMIT, Verdict, classify_reply
from tests.fuzz import Outcomes

REASONS = ("auth", "ip_denied", "http_5xx", "bad_reply")  # what a reply alone can mean (no timeout/connect)

_TEXT = st.one_of(
    st.sampled_from(["success", "SUCCESS", "error", "Authentication Failed", "Invalid IP 203.0.113.9",
                     "Invalid or missing credentials", 'Invalid Permissions: API action "getclients" is not allowed',
                     "IP 10.0.0.1 not allowed", "Banned IP", "Access Denied", "x" * 500, "", "\u2028", "\ud800"]),
    st.text(max_size=30),
)
_RAW = st.sampled_from(["1" + "0" * 400, "1e999", "-1e999", "NaN", "Infinity", "18446744073709551616", "-0",
                        "[" * 2000 + "]" * 2000, "[" * 500 + "]" * 500, '{"a":' * 300 + "1" + "}" * 300])
_JSONISH = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30), st.floats(allow_nan=False), _TEXT),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["result", "message", "checks", "status", "name", "a", "b", "details"]), inner, max_size=4),
    max_leaves=10,
)


@st.composite
def _json_body(draw: Any) -> bytes:
    """JSON text, sometimes with a value JSON parsers disagree on spliced in, a BOM or leading junk."""
    doc = draw(_JSONISH)
    text = json.dumps(doc, ensure_ascii=draw(st.booleans()))
    if draw(st.integers(0, 2)) == 0:
        raw = draw(_RAW)
        key = draw(st.sampled_from(["result", "message", "checks", "x"]))
        text = "{" + json.dumps(key) + ":" + raw + ("," + text[1:] if text.startswith("{") and text != "{}" else "}")
    prefix = draw(st.sampled_from(["", "", " \n", "\ufeff", "<br />\n<b>Notice</b>: x\n", "Warning: y"]))
    return (prefix + text).encode("utf-8", "surrogatepass")


_LEGACY = st.tuples(_TEXT, _TEXT, st.binary(max_size=10)).map(
    lambda t: f"result={t[0]};message={t[1]};".encode("utf-8", "surrogatepass") + t[2])
_HTML = st.sampled_from([b"<html><body><h1>503 Service Unavailable</h1></body></html>", b"<!DOCTYPE html>",
                         b"Maintenance", b"", b"   ", b"\xff\xfe\x00{"])
_BODY = st.one_of(st.binary(max_size=300), _json_body(), _LEGACY, _HTML)
_ENTRY = st.one_of(_JSONISH, st.sampled_from(["ok", "OK ", "pass", "up", "healthy", True, "fail", "degraded", 1]),
                   st.fixed_dictionaries({}, optional={"status": st.one_of(_TEXT, _JSONISH),
                                                       "name": st.one_of(_TEXT, st.integers())}))
_COMPONENTS = st.one_of(st.dictionaries(_TEXT, _ENTRY, max_size=5), st.lists(_ENTRY, max_size=5),
                        st.dictionaries(st.integers(0, 3).map(str), _ENTRY, max_size=3),
                        st.just({f"c{i}": "ok" for i in range(MAX_COMPONENTS + 5)}), _JSONISH)
_HEALTH = st.one_of(
    st.builds(lambda c, s: {"status": s, "checks": c}, _COMPONENTS, _TEXT),
    st.builds(lambda c: {"details": {"checks": c}}, _COMPONENTS),
    st.builds(lambda c: {"details.checks": c, "details": {"checks": "shadowed"}}, _COMPONENTS),
).map(lambda doc: json.dumps(doc).encode())
_CONTENT_TYPE = st.one_of(st.sampled_from(["application/json", "text/html; charset=utf-8", "", "text/plain;",
                                           "application/json; charset=latin-1", ";;;", "\x00"]), st.text(max_size=20))


def test_classify_reply_fuzz() -> None:
    """Any status, content type and body gives a Verdict with a documented reason."""
    out = Outcomes("whmcs classify_reply")

    @settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                       HealthCheck.data_too_large])
    @given(st.integers(0, 999), _CONTENT_TYPE, _BODY)
    def run(status: int, content_type: str, body: bytes) -> None:
        try:
            verdict = classify_reply(status, content_type, body)
        except Exception as e:
            raise AssertionError(f"classify_reply({status}, {content_type!r}, {body!r:.2000}) raised "
                                 f"{type(e).__name__}: {e}") from e
        assert isinstance(verdict, Verdict)
        assert verdict.ok is (verdict.reason is None)
        assert verdict.reason is None or verdict.reason in REASONS, verdict
        assert len(verdict.detail) <= 2 * MESSAGE_LIMIT + 200, len(verdict.detail)
        out.add("ok" if verdict.ok else verdict.reason or "")

    run()
    print(out.report())
    assert out.counts["ok"] > 10 and out.counts["bad_reply"] > 100, out.report()


def test_parse_components_fuzz() -> None:
    """Any body and key: {name: bool} (bounded) or a ValueError that says what is wrong."""
    out = Outcomes("http parse_components")

    @settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                       HealthCheck.data_too_large])
    @given(st.one_of(_HEALTH, _HEALTH, _BODY),
           st.sampled_from(["checks", "details.checks", "status", "a.b", "", ".", "checks."]))
    def run(body: bytes, key: str) -> None:
        try:
            result = parse_components(body, key)
        except ValueError as e:
            assert str(e), "an empty error message"
            out.add("value_error")
            return
        except Exception as e:
            raise AssertionError(f"parse_components({body!r:.2000}, {key!r}) raised {type(e).__name__}: {e}") from e
        assert isinstance(result, dict) and len(result) <= MAX_COMPONENTS
        assert all(isinstance(k, str) and isinstance(v, bool) for k, v in result.items()), result
        out.add("components")

    run()
    print(out.report())
    assert out.counts["components"] > 50 and out.counts["value_error"] > 100, out.report()
