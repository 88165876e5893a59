"""Secrets never appear in any output: logs, /metrics, the API, the status page, the CLI.

The real daemon runs with a config holding a distinctive value for every kind of secret,
and every failure path that could quote one is made to run: a WHMCS that echoes the
credentials back (in its JSON error and, form-encoded, in an HTML error page), a Redis and a
PostgreSQL refusing a wrong password (real servers, `--requirepass` and scram-sha-256),
PagerDuty answering 400 with the routing key in the body, Slack answering 404 for a webhook
path that is the credential, a heartbeat URL whose token path answers 500 quoting itself,
API calls with a wrong token. Then every output is searched for each secret, raw and
URL-encoded: the daemon's stdout and stderr, `/metrics`, every `/api/v1/*` reply, the status
page, and `once`, `once --json`, `once --url`, `check-config`, `incidents list/show --json`,
`export-rules`, `notify-test`.
"""

from __future__ import annotations

import asyncio
import base64
import html
import json
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import POSTGRES_MISSING, REDIS_MISSING, postgres_bin_path, require_tool
from tests.daemon_proc import ROOT, DaemonProcess, clean_env
from tests.fake_receivers import FakeAlertmanager, FakePagerDuty, FakeSlack, FakeWebhook
from tests.fakes import FakeBff, FakeWhmcs
from tests.servers import PostgresServer, RedisServer

# Every secret is distinctive (so a hit is never a coincidence) and holds characters that
# URL and form encoding change, so that the encoded forms are searched for too.
SECRETS: dict[str, str] = {
    "WHMCS_API_IDENTIFIER": "whmcsIdent+Q7kZ/ab=",
    "WHMCS_API_SECRET": "whmcsSecret+V9xR/cd=",
    "WHMCS_API_ACCESS_KEY": "whmcsAccess+L2pW/ef=",
    "WHMCS_URL_PASSWORD": "whmcsUrlPass3Tq",  # in the URL's userinfo
    "REDIS_PASSWORD": "redisPass5Hc-8Nz",
    "REDIS_WRONG_PASSWORD": "redisWrong4Jd-2Kx",
    "PG_PASSWORD": "pgPass6Rb-1Mw",
    "PG_WRONG_PASSWORD": "pgWrong7Sy-3Lv",
    "PAGERDUTY_ROUTING_KEY": "pdOncallKey0123456789abcdefABCDE",  # 32 characters
    "PAGERDUTY_LEAD_ROUTING_KEY": "pdLeadKey9876543210fedcbaFEDCBA9",  # 32 characters
    "SLACK_TOKEN": "slackHookTok8Gx2Vq",  # the webhook URL's last path segment
    "WEBHOOK_HMAC_SECRET": "hookHmac+Sec/4Fz=",
    "WEBHOOK_URL_PASSWORD": "hookUrlPass9Wm",
    "ALERTMANAGER_PASSWORD": "amPass2Yk7Pn",
    "HTTP_HEADER_TOKEN": "bffHeaderTok1Dr5",
    "MONITOR_API_TOKEN": "apiToken+0123456789/abcdefXYZ=",
    "HEARTBEAT_TOKEN": "hbTok3Nf6Uu9Ee",
    "METRICS_PASSWORD": "metricsPass8Zq+/=",
}
assert len(SECRETS["PAGERDUTY_ROUTING_KEY"]) == 32 and len(SECRETS["PAGERDUTY_LEAD_ROUTING_KEY"]) == 32
# Passwords sent as HTTP basic credentials, with their user: `user:password` in base64 is a leak too.
BASIC_USERS = {"WHMCS_URL_PASSWORD": "whuser", "WEBHOOK_URL_PASSWORD": "hookuser",
               "ALERTMANAGER_PASSWORD": "amuser", "METRICS_PASSWORD": "scraper"}


def forms(name: str, secret: str) -> set[str]:
    """The secret and its encodings as they could show up in a URL, a form body, JSON, HTML or
    an Authorization header."""
    out = {secret, quote(secret, safe=""), quote(secret), quote_plus(secret), html.escape(secret),
           json.dumps(secret)[1:-1], base64.b64encode(secret.encode()).decode()}
    if name in BASIC_USERS:
        out.add(base64.b64encode(f"{BASIC_USERS[name]}:{secret}".encode()).decode())
    return out


# ---------------------------------------------------------------- servers and fakes


@pytest.fixture(scope="module")
def secured_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    require_tool("redis-server", REDIS_MISSING)
    server = RedisServer(tmp_path_factory.mktemp("redis-auth"), args=["--requirepass", SECRETS["REDIS_PASSWORD"]])
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
async def secured_postgres() -> AsyncIterator[PostgresServer]:
    """A throwaway cluster where TCP logins need the password (scram-sha-256)."""
    import asyncpg

    require_tool("initdb", POSTGRES_MISSING, path=postgres_bin_path())
    workdir = Path(tempfile.mkdtemp(prefix="portal-monitor-pg-secrets-"))
    server = PostgresServer(workdir)
    try:
        server.start()
        conn = await asyncpg.connect(host="127.0.0.1", port=server.port, user="postgres", database="postgres",
                                     timeout=10)
        try:
            await conn.execute(f"ALTER USER postgres PASSWORD '{SECRETS['PG_PASSWORD']}'")
            hba = server.data_dir / "pg_hba.conf"
            hba.write_text("local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
                           "host all all ::1/128 scram-sha-256\n")
            await conn.execute("SELECT pg_reload_conf()")
        finally:
            await conn.close(timeout=5)
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


class EchoingWhmcs(FakeWhmcs):
    """A WHMCS (or a proxy in front of it) that quotes the request back in its errors: the raw
    form-encoded body in an HTML 500 page, then the decoded credentials in a JSON
    `Authentication Failed`, alternately."""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        form = self.requests[-1]
        if len(self.requests) % 2 == 0:
            return web.json_response({"result": "error", "message": f"Authentication Failed for {form}"})
        raw = await request.text()
        return web.Response(status=500, content_type="text/html",
                            text=f"<html><body><h1>Fatal error</h1><pre>POST {request.path_qs}\n{raw}\n"
                                 f"{dict(request.headers)}</pre></body></html>")


class EchoingHeartbeat(FakeBff):
    """A dead man's switch endpoint that refuses the ping, quoting the URL (its token) back."""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=500, text=f"no such check: {request.url}")


@pytest.fixture
async def fakes() -> AsyncIterator[dict[str, Any]]:
    peers: dict[str, Any] = {
        "whmcs": EchoingWhmcs(identifier=SECRETS["WHMCS_API_IDENTIFIER"], secret=SECRETS["WHMCS_API_SECRET"],
                              accesskey=SECRETS["WHMCS_API_ACCESS_KEY"]),
        "pd_oncall": FakePagerDuty(), "pd_lead": FakePagerDuty(), "slack": FakeSlack(),
        "hook": FakeWebhook(secret=SECRETS["WEBHOOK_HMAC_SECRET"]), "am": FakeAlertmanager(),
        "bff": FakeBff(), "heartbeat": EchoingHeartbeat(path=f"/ping/{SECRETS['HEARTBEAT_TOKEN']}"),
    }
    started = []
    try:
        for peer in peers.values():
            await peer.start()
            started.append(peer)
        for name, key in (("pd_oncall", "PAGERDUTY_ROUTING_KEY"), ("pd_lead", "PAGERDUTY_LEAD_ROUTING_KEY")):
            peers[name].answer(400, body={"status": "invalid event", "message": "Event object is invalid",
                                          "errors": [f"routing_key {SECRETS[key]} is not an integration key"]})
        peers["bff"].component_down("database", {"status": "fail", "error": "timeout"}, 503)
        yield peers
    finally:
        for peer in started:
            await peer.close()


def write_config(tmp_path: Path, redis: RedisServer, pg: PostgresServer, f: dict[str, Any]) -> Path:
    whmcs_url = f["whmcs"].url.replace("http://", f"http://whuser:{SECRETS['WHMCS_URL_PASSWORD']}@")
    hook_url = f["hook"].url.replace("http://", f"http://hookuser:{SECRETS['WEBHOOK_URL_PASSWORD']}@")
    am_url = f["am"].base_url.replace("http://", f"http://amuser:{SECRETS['ALERTMANAGER_PASSWORD']}@")
    slack_url = f"{f['slack'].base_url}/services/T000/B000/{SECRETS['SLACK_TOKEN']}"
    path = tmp_path / "alert_rules.yaml"
    path.write_text(f"""\
listen: 127.0.0.1:0
state_dir: {tmp_path / 'state'}
api:
  metrics_auth: {{basic: {{username: scraper, password: "${{METRICS_PASSWORD}}"}}}}
heartbeat: {{url: "${{HEARTBEAT_URL}}", interval: 1s, timeout: 2s}}
checks:
  - {{name: cache, type: redis, url: "redis://:${{REDIS_PASSWORD}}@127.0.0.1:{redis.port}/0", interval: 1s}}
  - {{name: cache_badpw, type: redis, url: "redis://:${{REDIS_WRONG_PASSWORD}}@127.0.0.1:{redis.port}/0",
     interval: 1s}}
  - {{name: db, type: postgres, dsn: "postgresql://postgres:${{PG_PASSWORD}}@127.0.0.1:{pg.port}/postgres",
     interval: 1s}}
  - {{name: db_badpw, type: postgres,
     dsn: "postgresql://postgres:${{PG_WRONG_PASSWORD}}@127.0.0.1:{pg.port}/postgres", interval: 1s}}
  - {{name: whmcs, type: whmcs, url: "{whmcs_url}", identifier: "${{WHMCS_API_IDENTIFIER}}",
     secret: "${{WHMCS_API_SECRET}}", accesskey: "${{WHMCS_API_ACCESS_KEY}}", interval: 1s}}
  - {{name: bff, type: http, url: "{f['bff'].url}", components: checks, interval: 1s,
     headers: {{Authorization: "Bearer ${{HTTP_HEADER_TOKEN}}"}}}}
rules:
  - alert: WhmcsDown
    expr: portal_whmcs_up == 0
    severity: P1
    summary: "WHMCS {{{{ $labels.check }}}} is down"
  - alert: RedisAuth
    expr: portal_redis_up{{check="cache_badpw"}} == 0
    severity: P2
    summary: "Redis {{{{ $labels.check }}}} refuses us"
receivers:
  oncall: {{type: pagerduty, routing_key: "${{PAGERDUTY_ROUTING_KEY}}", url: "{f['pd_oncall'].url}", timeout: 2s}}
  lead: {{type: pagerduty, routing_key: "${{PAGERDUTY_LEAD_ROUTING_KEY}}", url: "{f['pd_lead'].url}", timeout: 2s}}
  chat: {{type: slack, url: "${{SLACK_WEBHOOK_URL}}", timeout: 2s}}
  hook: {{type: webhook, url: "{hook_url}", secret: "${{WEBHOOK_HMAC_SECRET}}", timeout: 2s}}
  am: {{type: alertmanager, urls: ["{am_url}"], timeout: 2s}}
escalation:
  - {{level: L1, after: 0s, severities: [P1, P2], receivers: [oncall, lead, chat, hook, am]}}
""")
    env = {**{k: v for k, v in SECRETS.items()}, "SLACK_WEBHOOK_URL": slack_url,
           "HEARTBEAT_URL": f"{f['heartbeat'].url}"}
    (tmp_path / "env.json").write_text(json.dumps(env))
    return path




async def cli(env: dict[str, str], *args: str) -> str:
    """`portal-monitor ARGS`: stdout and stderr together, with the exit code."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "monitor", *args, cwd=ROOT, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    return f"$ portal-monitor {' '.join(args)}  (exit {proc.returncode})\n{out.decode(errors='replace')}\n" \
           f"{err.decode(errors='replace')}"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def fetch(session: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> tuple[int, str]:
    async with session.request(method, url, timeout=aiohttp.ClientTimeout(total=10), **kw) as r:
        return r.status, f"{r.status} {dict(r.headers)}\n{await r.text()}"


async def test_no_secret_in_any_output(tmp_path: Path, secured_redis: RedisServer,
                                       secured_postgres: PostgresServer, fakes: dict[str, Any]) -> None:
    config = write_config(tmp_path, secured_redis, secured_postgres, fakes)
    env = clean_env(**json.loads((tmp_path / "env.json").read_text()))
    outputs: dict[str, str] = {}
    d = await DaemonProcess.start(config, env=env)
    try:
        # Every failure path ran: refused logins, the echoing WHMCS (both replies), PagerDuty's
        # 400, Slack's 404, the heartbeat's 500, a delivered signed webhook and Alertmanager post.
        await fakes["pd_oncall"].wait_until(lambda: len(fakes["pd_oncall"].requests) >= 1, timeout=20)
        await fakes["pd_lead"].wait_until(lambda: len(fakes["pd_lead"].requests) >= 1, timeout=20)
        await fakes["slack"].wait_until(lambda: len(fakes["slack"].requests) >= 1, timeout=20)
        await fakes["hook"].wait_until(lambda: len(fakes["hook"].payloads) >= 1, timeout=20)
        await fakes["am"].wait_until(lambda: len(fakes["am"].requests) >= 1, timeout=20)
        async with asyncio.timeout(20):
            while len(fakes["whmcs"].requests) < 4 or fakes["heartbeat"].hits < 1:
                await asyncio.sleep(0.1)  # waiting for the daemon's own 1 s schedule, bounded above
        await d.wait_event("pagerduty_rejected", timeout=20)
        await d.wait_event("heartbeat_failed", timeout=20)
        assert fakes["pd_oncall"].requests[0].json["routing_key"] == SECRETS["PAGERDUTY_ROUTING_KEY"]
        assert fakes["whmcs"].requests[0]["secret"] == SECRETS["WHMCS_API_SECRET"]
        assert fakes["slack"].requests[0].status == 404
        assert fakes["bff"].last_headers["Authorization"] == f"Bearer {SECRETS['HTTP_HEADER_TOKEN']}"

        metrics_auth = {"Authorization": basic("scraper", SECRETS["METRICS_PASSWORD"])}
        bearer = {"Authorization": f"Bearer {SECRETS['MONITOR_API_TOKEN']}"}
        async with aiohttp.ClientSession() as s:
            base = d.base
            status, outputs["GET /metrics"] = await fetch(s, "GET", f"{base}/metrics", headers=metrics_auth)
            assert status == 200
            _, outputs["GET /metrics (no credentials)"] = await fetch(s, "GET", f"{base}/metrics")
            _, outputs["GET /metrics (wrong password)"] = await fetch(
                s, "GET", f"{base}/metrics",
                headers={"Authorization": basic("scraper", SECRETS["METRICS_PASSWORD"] + "x")})
            for path in ("/", "/-/healthy", "/-/ready", "/api/v1/checks", "/api/v1/alerts",
                         "/api/v1/incidents?state=all", "/api/v1/silences?state=all"):
                status, outputs[f"GET {path}"] = await fetch(s, "GET", base + path)
                assert status == 200, outputs[f"GET {path}"]
            checks = json.loads(outputs["GET /api/v1/checks"].split("\n", 1)[1])["checks"]
            state = {c["check"]: (c["up"], c["reason"]) for c in checks}
            assert state["cache"] == (True, None) and state["db"] == (True, None), state
            assert state["cache_badpw"][0] is False and state["db_badpw"] == (False, "auth"), state
            assert state["whmcs"][0] is False, state
            incidents = json.loads(outputs["GET /api/v1/incidents?state=all"].split("\n", 1)[1])["incidents"]
            assert incidents, "no incident opened"
            iid = incidents[0]["id"]
            _, outputs[f"GET /api/v1/incidents/{iid}"] = await fetch(s, "GET", f"{base}/api/v1/incidents/{iid}")
            _, outputs["POST ack (wrong token)"] = await fetch(
                s, "POST", f"{base}/api/v1/incidents/{iid}/ack",
                headers={"Authorization": f"Bearer {SECRETS['MONITOR_API_TOKEN']}x"})
            _, outputs["POST ack (no token)"] = await fetch(s, "POST", f"{base}/api/v1/incidents/{iid}/ack")
            status, outputs["POST ack"] = await fetch(s, "POST", f"{base}/api/v1/incidents/{iid}/ack",
                                                      headers=bearer, json={"who": "alice"})
            assert status == 200, outputs["POST ack"]
            status, outputs["POST silence"] = await fetch(
                s, "POST", f"{base}/api/v1/silences", headers=bearer,
                json={"matchers": {"alertname": "RedisAuth"}, "ends_at": "2099-01-01T00:00:00Z",
                      "author": "alice", "comment": "testing"})
            status, outputs["POST /-/reload"] = await fetch(s, "POST", f"{base}/-/reload", headers=bearer)
            assert status == 200, outputs["POST /-/reload"]
            _, outputs[f"GET /api/v1/incidents/{iid} (after ack)"] = await fetch(
                s, "GET", f"{base}/api/v1/incidents/{iid}")
            _, outputs["GET / (after ack)"] = await fetch(s, "GET", base + "/")
            _, outputs["GET /metrics (after ack)"] = await fetch(s, "GET", f"{base}/metrics", headers=metrics_auth)

        c = str(config)
        for args in (("once", "-c", c), ("once", "--json", "-c", c), ("once", "--url", d.base),
                     ("once", "--json", "--url", d.base), ("check-config", "-c", c),
                     ("incidents", "list", "--all", "--json", "-c", c),
                     ("incidents", "show", str(iid), "--json", "-c", c),
                     ("incidents", "list", "--all", "--json", "--url", d.base),
                     ("incidents", "show", str(iid), "-c", c),
                     ("silence", "list", "--json", "-c", c), ("export-rules", "-c", c),
                     ("notify-test", "oncall", "-c", c), ("notify-test", "chat", "-c", c),
                     ("notify-test", "hook", "-c", c), ("notify-test", "am", "-c", c)):
            outputs[" ".join(args)] = await cli(env, *args)
        assert "DOWN" in outputs[f"once -c {c}"] and "FAILED" in outputs[f"notify-test oncall -c {c}"]
    finally:
        rc = await d.stop()
    outputs["daemon stdout"] = b"".join(d.raw).decode(errors="replace")
    outputs["daemon stderr"] = d.stderr.decode(errors="replace")
    assert rc == 0, outputs["daemon stderr"][-2000:]
    names = {e.get("event") for e in d.events}
    assert {"check_failed", "pagerduty_rejected", "heartbeat_failed", "incident_opened"} <= names, names

    leaks, known = [], []
    for name, secret in SECRETS.items():
        for form in forms(name, secret):
            for where, text in outputs.items():
                at = text.find(form)
                if at >= 0:
                    leak = f"{name} ({form!r}) in {where}: …{text[max(0, at - 150):at + 60]!r}…"
                    (known if (name, form != secret) in KNOWN_LEAKS else leaks).append(leak)
    if known:
        print(f"{len(known)} known leaks (see KNOWN_LEAKS):\n" + "\n".join(known))
    assert not leaks, f"{len(leaks)} leaks:\n" + "\n".join(leaks[:40])
    assert sum(len(t) for t in outputs.values()) > 20_000  # the outputs searched were not empty


# ---------------------------------------------------------------- known leaks, reported, not fixed yet

# (secret, encoded?) pairs found leaking and not fixed yet; the daemon test reports them
# instead of failing (add a strict xfail replaying the smallest case with each; delete both when fixed).
KNOWN_LEAKS: set[tuple[str, bool]] = set()


async def test_whmcs_error_never_quotes_the_form_encoded_credentials() -> None:
    """A WHMCS or proxy error page quoting the posted form body (`secret=whmcsSecret%2BV9xR...`)
    reaches the check's error with every form of the credentials scrubbed."""
    from checks.whmcs import Config, WhmcsCheck
    from monitor.model import CheckContext, CheckError, MemoryState

    async with EchoingWhmcs(identifier=SECRETS["WHMCS_API_IDENTIFIER"], secret=SECRETS["WHMCS_API_SECRET"]) as fake:
        cfg = Config(name="whmcs", type="whmcs", url=fake.url, identifier=SECRETS["WHMCS_API_IDENTIFIER"],
                     secret=SECRETS["WHMCS_API_SECRET"])
        check = WhmcsCheck(cfg, CheckContext(interval_s=1.0, timeout_s=5.0, state=MemoryState(), now=lambda: 0.0))
        try:
            with pytest.raises(CheckError) as info:
                await check.collect()
        finally:
            await check.aclose()
    assert info.value.reason == "http_5xx"
    for name in ("WHMCS_API_IDENTIFIER", "WHMCS_API_SECRET"):
        for form in forms(name, SECRETS[name]):
            assert form not in str(info.value), (form, str(info.value))
