"""The incident page `/incidents/N`, sign-in and its buttons, served in-process over a real
Store, real Alerting and a SQLite file, with an injected clock (the rig of tests/test_api.py).

What the page must hold for the person paged (runbook steps, the check's error, the timeline,
the runbook's texts), that nothing acts without a signed session and the page's CSRF field,
that the buttons do what the API does (ack queues PagerDuty's `acknowledge`, silences hold),
that a path prefix in `external_url` works, and that no secret reaches the HTML.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from monitor.alerting import Alerting
from monitor.statedb import open_db
from monitor.store import Store
from monitor.web.api import Api
from monitor.web.auth import SESSION_COOKIE, new_session, read_session, token_matches
from monitor.web.incidentpage import sparkline_svg
from monitor.web.metrics import make_metrics_handler
from monitor.web.server import build_app
from tests.test_api import REDIS_PW, SECRETS, T0, TOKEN, Clock, FakeDaemon, rig_config, seed


@dataclass
class PageRig:
    client: TestClient
    alerting: Alerting
    clock: Clock
    base: str
    state_dir: Path

    async def get(self, path: str, status: int = 200) -> str:
        async with self.client.get(self.base + path, allow_redirects=False) as r:
            body = await r.text()
            assert r.status == status, f"GET {path}: {r.status} {body[:300]}"
            return body

    async def post(self, path: str, data: dict[str, str], **kw: Any) -> tuple[int, str, str]:
        async with self.client.post(self.base + path, data=data, allow_redirects=False, **kw) as r:
            return r.status, r.headers.get("Location", ""), await r.text()

    async def sign_in(self, who: str = "alice") -> str:
        status, location, _ = await self.post("/sign-in", {"token": TOKEN, "who": who,
                                                            "next": f"{self.base}/incidents/1"})
        assert status == 303 and location == f"{self.base}/incidents/1?done=signed-in"
        page = await self.get("/incidents/1")
        found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
        assert found, "signed in, the page carries the CSRF field"
        return found.group(1)


async def make_page_rig(tmp_path: Path, *, external_url: str = "", token: str | None = TOKEN) -> PageRig:
    cfg = rig_config(tmp_path, token=token)
    clock = Clock()
    store = Store()
    seed(store)
    alerting = Alerting(open_db(cfg.root.state_dir), cfg, store.samples, now=clock, receivers={})
    alerting.evaluate(T0)  # RedisDown (P1, check `cache`) fires: incident 1
    app = build_app(make_metrics_handler(store.samples, {}),
                    api=Api(FakeDaemon(cfg, store, alerting), now=clock, external_url=external_url))
    client = TestClient(TestServer(app))
    await client.start_server()
    base = external_url.split("://", 1)[1].partition("/")[2] if external_url else ""
    return PageRig(client, alerting, clock, f"/{base}" if base else "", Path(cfg.root.state_dir))


@pytest.fixture
async def rig(tmp_path: Path) -> Any:
    r = await make_page_rig(tmp_path)
    yield r
    await r.client.close()


# ---------------------------------------------------------------------- what the page shows


async def test_the_page_shows_what_to_do_what_the_check_says_and_the_texts(rig: PageRig) -> None:
    rig.clock.t = T0 + timedelta(minutes=12, seconds=5)
    page = await rig.get("/incidents/1")
    assert "P1 · RedisDown" in page and ">firing<" in page
    assert "firing for 12m05s" in page and "escalation L1" in page
    # the check's error right now, redacted like everywhere else
    assert "connect: redis://:***@127.0.0.1:1/0: connection refused" in page
    # the timeline: who was told what
    assert "<strong>detected</strong>" in page and "<strong>fired</strong>" in page
    # the runbook's own texts, ready to copy
    assert "INCIDENT UPDATE - P1 - Redis cache is down" in page
    assert "We are currently experiencing issues with the Customer Portal." in page
    assert 'href="https://wiki.example/runbooks/incident-response#3-redis-connection-failures"' in page
    assert "Sign in to acknowledge, resolve or silence" in page and 'name="csrf"' not in page
    for secret in SECRETS:
        assert secret not in page
    assert REDIS_PW not in page


async def test_an_unknown_incident_is_a_404_page(rig: PageRig) -> None:
    assert "Incident 7 does not exist" in await rig.get("/incidents/7", 404)
    assert "does not exist" in await rig.get("/incidents/x", 404)


async def test_without_a_token_the_page_is_read_only_and_says_how_to_set_one(tmp_path: Path) -> None:
    rig = await make_page_rig(tmp_path, token=None)
    try:
        page = await rig.get("/incidents/1")
        assert "This page is read-only" in page and "MONITOR_API_TOKEN" in page and "state/api-token" in page
        status, _, body = await rig.post("/sign-in", {"token": "anything-at-all-1234", "who": "x"})
        assert status == 403 and "nobody can sign in" in body
    finally:
        await rig.client.close()


# ---------------------------------------------------------------------- sign-in and the buttons


async def test_sign_in_sets_a_strict_httponly_cookie_and_refuses_a_wrong_token(rig: PageRig) -> None:
    status, _, body = await rig.post("/sign-in", {"token": "wrong-token-0123456789", "who": "mallory"})
    assert status == 401 and "wrong token" in body
    async with rig.client.post("/sign-in", data={"token": TOKEN, "who": "alice", "next": "//evil.example/x"},
                               allow_redirects=False) as r:
        assert r.status == 303
        assert r.headers["Location"] == "/"  # never sent to another site
        cookie = r.headers["Set-Cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Path=/" in cookie and TOKEN not in cookie


async def test_acknowledge_from_the_page_queues_pagerduty_acknowledge(rig: PageRig) -> None:
    csrf = await rig.sign_in("alice")
    rig.clock.t = T0 + timedelta(minutes=3)
    status, location, _ = await rig.post("/incidents/1/ack", {"csrf": csrf})
    assert status == 303 and location == "/incidents/1?done=acknowledged"
    view = rig.alerting.incidents.get(1)
    assert view is not None and view.acked_by == "alice"
    assert [(d.receiver, d.kind) for d in view.deliveries] == [("oncall", "trigger"), ("oncall", "acknowledge")]
    # the acknowledgement names who took it, for chat and the console
    import json
    import sqlite3

    from monitor.delivery.slack import message
    from monitor.incidents.records import notification_from_json

    conn = sqlite3.connect(rig.state_dir / "portal-monitor.db")
    (payload,) = conn.execute(
        "SELECT p.payload FROM outbox o JOIN outbox_payload p ON p.id = o.id WHERE o.kind = 'acknowledge'"
    ).fetchone()
    conn.close()
    n = notification_from_json(payload)
    assert n.alert.annotations["acknowledged_by"] == "alice"
    assert "Acknowledged by alice: on-call is working on it" in json.dumps(message(n))
    page = await rig.get("/incidents/1?done=acknowledged")
    assert "Acknowledged: PagerDuty" in page and ">acknowledged<" in page and "acknowledged by alice" in page
    assert ">Acknowledge</button>" not in page  # done: the button goes


async def test_silence_1h_and_a_note_from_the_page(rig: PageRig) -> None:
    csrf = await rig.sign_in("bob")
    status, location, _ = await rig.post("/incidents/1/silence", {"csrf": csrf, "duration": "1h"})
    assert (status, location) == (303, "/incidents/1?done=silenced")
    (silence,) = rig.alerting.incidents.list_silences(now=T0)
    assert silence.author == "bob" and silence.ends_at == T0 + timedelta(hours=1)
    assert silence.matchers["alertname"] == ("RedisDown",) and silence.matchers["check"] == ("cache",)
    status, location, _ = await rig.post("/incidents/1/silence", {"csrf": csrf, "duration": "99h"})
    assert status == 303 and "error=" in location and "99h" in location
    status, location, _ = await rig.post("/incidents/1/note", {"csrf": csrf, "note": "restarted  redis\non db1"})
    assert (status, location) == (303, "/incidents/1?done=noted")
    view = rig.alerting.incidents.get(1)
    assert view is not None and view.timeline[-1].kind == "note"
    assert view.timeline[-1].detail == "bob: restarted redis on db1"


async def test_resolve_from_the_page(rig: PageRig) -> None:
    csrf = await rig.sign_in()
    status, location, _ = await rig.post("/incidents/1/resolve", {"csrf": csrf})
    assert (status, location) == (303, "/incidents/1?done=resolved")
    page = await rig.get("/incidents/1")
    assert ">resolved<" in page and "resolved 0s ago by alice" in page and 'id="actions"' not in page


async def test_a_form_without_session_csrf_or_from_another_site_is_refused(rig: PageRig) -> None:
    status, location, _ = await rig.post("/incidents/1/ack", {})
    assert status == 303 and location == "/sign-in?next=/incidents/1"
    csrf = await rig.sign_in()
    status, _, body = await rig.post("/incidents/1/ack", {"csrf": "0" * 32})
    assert status == 403 and "stale or cross-site" in body
    status, _, _ = await rig.post("/incidents/1/ack", {"csrf": csrf}, headers={"Origin": "https://evil.example"})
    assert status == 403
    # the bearer header is the API's, not the pages': it does not stand in for a session
    rig.client.session.cookie_jar.clear()
    status, location, _ = await rig.post("/incidents/1/ack", {"csrf": csrf},
                                         headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 303 and location.startswith("/sign-in")
    view = rig.alerting.incidents.get(1)
    assert view is not None and view.acked_at is None


async def test_pages_live_under_the_external_urls_path(tmp_path: Path) -> None:
    rig = await make_page_rig(tmp_path, external_url="https://ops.example.com/monitor")
    try:
        page = await rig.get("/incidents/1")  # /monitor/incidents/1
        assert 'href="/monitor/sign-in?next=/monitor/incidents/1"' in page
        assert 'href="/monitor/"' in page
        async with rig.client.post("/monitor/sign-in", data={"token": TOKEN, "who": "carol",
                                                              "next": "/monitor/incidents/1"},
                                   allow_redirects=False) as r:
            cookie = r.headers["Set-Cookie"]
        assert "Path=/monitor/" in cookie and "Secure" in cookie  # https external URL
        # a proxy that strips the prefix reaches the same pages
        async with rig.client.get("/incidents/1") as r:
            assert r.status == 200
    finally:
        await rig.client.close()


# ---------------------------------------------------------------------- sessions and the chart


def test_a_session_is_signed_by_the_token_and_expires() -> None:
    session, cookie = new_session(TOKEN, "  alice   smith ", 1000.0)
    assert session.who == "alice smith"
    assert read_session(cookie, TOKEN, 1001.0) == session
    assert read_session(cookie, TOKEN, session.expires + 1) is None  # expired
    assert read_session(cookie, "another-token-0123456789", 1001.0) is None  # the token changed
    expires, nonce, name, sig = cookie.split(".")
    assert read_session(f"{int(expires) + 999}.{nonce}.{name}.{sig}", TOKEN, 1001.0) is None  # tampered
    assert read_session(cookie, "", 1001.0) is None and read_session("x", TOKEN, 0) is None
    assert session.csrf(TOKEN) != session.csrf("another-token-0123456789")
    assert token_matches(f" {TOKEN} ", TOKEN) and not token_matches("", "") and not token_matches("x", TOKEN)


def test_sparkline_scales_to_the_window_and_leaves_gaps() -> None:
    svg = sparkline_svg([(0, 1.0), (30, 3.0), (60, float("nan")), (90, 2.0)], label="x_ratio", start=0, end=90)
    assert svg.count("<polyline") == 2  # the NaN splits the line
    assert 'points="4.0,86.0 108.0,4.0"' in svg
    assert "min 100.0% · max 300.0% · last 200.0%" in svg
    assert "no samples" in sparkline_svg([], label="x")


# ---------------------------------------------------------------------- make run's token file


def test_run_api_token_file_is_created_once_private_and_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from monitor.cli.main import _token_from_file
    from monitor.config.loader import ConfigError

    monkeypatch.delenv("MONITOR_API_TOKEN", raising=False)
    where = tmp_path / "state" / "api-token"
    _token_from_file(str(where))
    token = where.read_text().strip()
    assert re.fullmatch(r"[0-9a-f]{64}", token) and where.stat().st_mode & 0o777 == 0o600
    assert f"API token written to {where}" in capsys.readouterr().err
    import os

    assert os.environ["MONITOR_API_TOKEN"] == token
    monkeypatch.delenv("MONITOR_API_TOKEN")
    _token_from_file(str(where))  # the second start reads the same token
    assert os.environ["MONITOR_API_TOKEN"] == token and f"read from {where}" in capsys.readouterr().err
    monkeypatch.setenv("MONITOR_API_TOKEN", TOKEN)  # an explicit token wins; the file is not touched
    _token_from_file(str(tmp_path / "other"))
    assert not (tmp_path / "other").exists() and os.environ["MONITOR_API_TOKEN"] == TOKEN
    monkeypatch.delenv("MONITOR_API_TOKEN")
    (tmp_path / "short").write_text("abc\n")
    with pytest.raises(ConfigError, match="shorter than 16"):
        _token_from_file(str(tmp_path / "short"))


def test_make_run_passes_the_token_file_in_the_state_directory() -> None:
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    assert "portal-monitor run -c alert_rules.yaml --api-token-file state/api-token" in makefile


# ---------------------------------------------------------------------- check-config on links


@pytest.mark.parametrize(("env", "warned"), [
    ({}, False),  # only the console receiver: read on this host
    ({"PAGERDUTY_ROUTING_KEY": "0123456789abcdef0123456789abcdef"}, True),
    ({"PAGERDUTY_ROUTING_KEY": "0123456789abcdef0123456789abcdef",
      "PORTAL_MONITOR_LISTEN": "[::1]:9820"}, True),
    ({"PAGERDUTY_ROUTING_KEY": "0123456789abcdef0123456789abcdef",
      "PORTAL_MONITOR_EXTERNAL_URL": "https://ops.example.com/monitor"}, False),
    ({"PAGERDUTY_ROUTING_KEY": "0123456789abcdef0123456789abcdef",
      "PORTAL_MONITOR_EXTERNAL_URL": "http://localhost:9820"}, True),
])
def test_check_config_warns_when_pages_would_link_to_loopback(env: dict[str, str], warned: bool) -> None:
    import subprocess
    import sys

    from tests.daemon_proc import ROOT, clean_env

    proc = subprocess.run([sys.executable, "-m", "monitor", "check-config", "-c", "alert_rules.yaml"], cwd=ROOT,
                          env=clean_env(**env), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert ("a loopback address no phone can open" in proc.stderr) is warned, proc.stderr
    if warned:
        assert "pages to oncall" in proc.stderr and "console" not in proc.stderr.split("will link")[0]
