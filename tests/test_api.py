"""The JSON API: auth on every mutating call, every reply's shape, and no secret anywhere.

In-process tests serve `Api` over a real Store, real Alerting and a SQLite file in tmp_path,
with an injected clock (`ApiRig`). End-to-end tests run the real daemon (tests/daemon_proc.py)
with a disposable Redis and a fake PagerDuty: a silence made through the API holds the page
back, an ack through the API reaches PagerDuty as `acknowledge`, reload answers 200/400, and
the CLI's `--url` mode works against it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from monitor.alerting import Alerting
from monitor.web.api import Api
from monitor.config.loader import load_config_text
from monitor.config.model import Config
from monitor.web.metrics import make_metrics_handler
from monitor.model import CheckResult, Sample
from monitor.web.server import build_app
from monitor.statedb import open_db
from monitor.store import Store
from tests.daemon_proc import ROOT, DaemonProcess, clean_env
from tests.fake_receivers import FakePagerDuty
from tests.fakes import closed_port_url

TOKEN = "t0ken-0123456789abcdef-API"
REDIS_PW = "r3dis-PW-secret-9731"
WHMCS_SECRET = "whmcs-SECRET-4410"
ROUTING_KEY = "R0UT1NGKEYsecret0123456789abcdef"
METRICS_PW = "metrics-PW-secret-55"
METRICS_BEARER = "scrape-BEARER-secret-77"
SECRETS = (TOKEN, REDIS_PW, WHMCS_SECRET, ROUTING_KEY, METRICS_PW, METRICS_BEARER)
RUNBOOK = "https://wiki.example/runbooks/incident-response#3-redis-connection-failures"
T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def rig_config(tmp_path: Path, *, token: str | None = TOKEN, metrics_auth: str = "") -> Config:
    """Secrets in every place a config can hold one; the token comes from the environment."""
    api = f"api: {{metrics_auth: {metrics_auth}}}\n" if metrics_auth else ""
    text = f"""\
listen: 127.0.0.1:0
state_dir: {tmp_path / 'state'}
{api}checks:
  - {{name: cache, type: redis, url: "redis://:{REDIS_PW}@127.0.0.1:1/0", interval: 10s}}
  - {{name: db, type: postgres, dsn: "postgresql://postgres@127.0.0.1:1/postgres", interval: 5s}}
  - {{name: web, type: http, url: "http://127.0.0.1:1/health", interval: 30s}}
  - {{name: whmcs, type: whmcs, url: "http://127.0.0.1:1/includes/api.php", identifier: id,
      secret: "{WHMCS_SECRET}"}}
  - {{name: bff, type: http, enabled: false, url: "http://127.0.0.1:1/"}}
rules:
  - alert: RedisDown
    expr: portal_redis_up == 0
    severity: P1
    summary: "Redis {{{{ $labels.check }}}} is down"
    runbook: "{RUNBOOK}"
  - alert: DbBusy
    expr: portal_postgres_connections_used_ratio > 0.2
    for: 5m
    severity: P3
    summary: "db busy"
receivers:
  oncall: {{type: pagerduty, routing_key: "{ROUTING_KEY}"}}
escalation:
  - {{level: L1, after: 0s, severities: [P1, P2, P3, P4], receivers: [oncall]}}
"""
    env = {} if token is None else {"MONITOR_API_TOKEN": token}
    return load_config_text(text, env=env, path=tmp_path / "alert_rules.yaml")


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> datetime:
        return self.t


@dataclass
class FakeDaemon:
    """The part of `Daemon` the API uses; `reload()` answers what the test says."""

    config: Config
    store: Store
    alerting: Alerting | None
    scheduler: None = None
    reload_errors: list[str] = field(default_factory=list)
    reload_detail: dict[str, list[str]] = field(default_factory=dict)
    reload_answer: bool | Exception = True
    reloads: int = 0
    confirmed: list[bool] = field(default_factory=list)

    def ready(self) -> bool:
        return True

    async def reload(self, confirm: bool = False) -> bool:
        self.reloads += 1
        self.confirmed.append(confirm)
        if isinstance(self.reload_answer, Exception):
            raise self.reload_answer
        self.reload_errors = [] if self.reload_answer else ["alert_rules.yaml:3:5: checks[0].interval: bad"]
        return self.reload_answer


@dataclass
class ApiRig:
    client: TestClient
    daemon: FakeDaemon
    alerting: Alerting
    clock: Clock

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKEN}"}

    async def json(self, method: str, path: str, status: int = 200, **kw: Any) -> Any:
        async with self.client.request(method, path, **kw) as r:
            body = await r.text()
            assert r.status == status, f"{method} {path}: {r.status} {body}"
            assert r.content_type == "application/json"
            return json.loads(body)


def seed(store: Store) -> None:
    """cache down (its error leaks the password: the API must redact it), db up, whmcs down, web not run."""
    ran = T0.timestamp() - 2
    store.put(CheckResult("cache", "redis", False, [], ran, 0.5, "connect",
                          f"redis://:{REDIS_PW}@127.0.0.1:1/0: connection refused"))
    store.put(CheckResult("db", "postgres", True, [
        Sample("portal_postgres_ping_seconds", {}, 0.002),
        Sample("portal_postgres_connections_used_ratio", {}, 0.25),
        Sample("portal_postgres_longest_query_seconds", {}, 0.0),
        Sample("portal_postgres_connections", {"state": "idle"}, 5.0)], ran, 0.01,
        detail=f"found it with secret={WHMCS_SECRET}"))
    store.put(CheckResult("whmcs", "whmcs", False, [], ran, 0.2, "auth",
                          f"WHMCS said: Authentication Failed for secret={WHMCS_SECRET}"))


async def make_rig(tmp_path: Path, **cfg_kw: Any) -> ApiRig:
    cfg = rig_config(tmp_path, **cfg_kw)
    clock = Clock()
    store = Store()
    seed(store)
    alerting = Alerting(open_db(cfg.root.state_dir), cfg, store.samples, now=clock, receivers={})
    store.add_source(alerting.samples)
    alerting.evaluate(T0)  # RedisDown fires (incident 1); DbBusy pending
    daemon = FakeDaemon(cfg, store, alerting)
    app = build_app(make_metrics_handler(store.samples, {}), api=Api(daemon, now=clock))
    client = TestClient(TestServer(app))
    await client.start_server()
    return ApiRig(client, daemon, alerting, clock)


@pytest.fixture
async def rig(tmp_path: Path) -> Any:
    r = await make_rig(tmp_path)
    yield r
    await r.client.close()


# ---------------------------------------------------------------------- auth

MUTATING = [
    ("POST", "/api/v1/incidents/1/ack"),
    ("POST", "/api/v1/incidents/1/resolve"),
    ("POST", "/api/v1/silences"),
    ("DELETE", "/api/v1/silences/1"),
    ("POST", "/api/v1/silences/1/expire"),
    ("POST", "/-/reload"),
]


def untouched(rig: ApiRig) -> None:
    """Nothing a refused call could have changed did change."""
    inc = rig.alerting.incidents.get(1)
    assert inc is not None and inc.state == "open" and inc.acked_at is None
    assert rig.alerting.incidents.list_silences(active_only=False) == []
    assert rig.daemon.reloads == 0


@pytest.mark.parametrize(("method", "path"), MUTATING)
async def test_mutating_call_without_or_with_a_wrong_token_gets_401(rig: ApiRig, method: str, path: str) -> None:
    body = b'{"matchers": {"alertname": "RedisDown"}, "duration": "1h", "author": "a", "comment": "c"}'
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": TOKEN},
                    {"Authorization": f"Bearer {TOKEN[:-1]}"}, {"Authorization": f"Bearer {TOKEN}x"},
                    {"Authorization": "Basic " + base64.b64encode(f"x:{TOKEN}".encode()).decode()}):
        async with rig.client.request(method, path, data=body, headers=headers) as r:
            assert r.status == 401, (headers, await r.text())
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
            assert "MONITOR_API_TOKEN" in (await r.json())["error"]
    untouched(rig)


@pytest.mark.parametrize(("method", "path"), MUTATING)
async def test_a_body_that_is_not_json_still_gets_401_not_400(rig: ApiRig, method: str, path: str) -> None:
    """The refusal comes before the body is parsed; with the right token the same body is a 400."""
    async with rig.client.request(method, path, data=b"{not json", headers={"Content-Type": "application/json"}) as r:
        assert r.status == 401
    async with rig.client.request(method, path, data=b"{not json", headers=rig.auth) as r:
        assert r.status == (200 if path == "/-/reload" else 404 if "silences/1" in path else 400), await r.text()


async def test_401_is_sent_without_waiting_for_the_body(rig: ApiRig) -> None:
    """A request announcing 10 MB and sending 10 bytes is refused at once: the body is never read."""
    reader, writer = await asyncio.open_connection(rig.client.host, rig.client.port)
    try:
        writer.write(b"POST /api/v1/silences HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 10000000\r\n\r\n{\"matchers\"")
        await writer.drain()
        async with asyncio.timeout(5):
            status = await reader.readline()
    finally:
        writer.close()
    assert status.startswith(b"HTTP/1.1 401"), status
    untouched(rig)


@pytest.mark.parametrize(("method", "path"), MUTATING)
async def test_without_a_configured_token_mutating_calls_are_refused(tmp_path: Path, method: str, path: str) -> None:
    rig = await make_rig(tmp_path, token=None)
    try:
        for headers in ({}, {"Authorization": f"Bearer {TOKEN}"}, {"Authorization": "Bearer "}):
            async with rig.client.request(method, path, data=b"{}", headers=headers) as r:
                assert r.status == 403
                assert "set MONITOR_API_TOKEN" in (await r.json())["error"]
        untouched(rig)
        async with rig.client.get("/api/v1/incidents") as r:  # reads stay open
            assert r.status == 200
    finally:
        await rig.client.close()


@pytest.mark.parametrize(("method", "path", "status"), [
    ("POST", "/api/v1/incidents/1/ack", 200), ("POST", "/api/v1/incidents/1/resolve", 200),
    ("POST", "/-/reload", 200), ("DELETE", "/api/v1/silences/1", 404), ("POST", "/api/v1/silences/1/expire", 404),
])
async def test_the_right_token_is_let_through(rig: ApiRig, method: str, path: str, status: int) -> None:
    await rig.json(method, path, status, headers=rig.auth)


def test_a_short_token_is_a_config_error(tmp_path: Path) -> None:
    from monitor.config.loader import ConfigError

    with pytest.raises(ConfigError) as e:
        rig_config(tmp_path, token="short")
    assert "api.token: the API token ($MONITOR_API_TOKEN" in e.value.errors[0]
    assert "short" not in str(e.value)


def test_the_token_is_monitor_api_token_unless_the_file_names_another_variable(tmp_path: Path) -> None:
    env = {"MONITOR_API_TOKEN": TOKEN, "OTHER_TOKEN": "other-token-0123456789"}
    assert load_config_text("checks: []\n", env=env).root.api.token == TOKEN
    assert load_config_text("api:\n", env=env).root.api.token == TOKEN
    cfg = load_config_text('api: {token: "${OTHER_TOKEN}"}\n', env=env)
    assert cfg.root.api.token == "other-token-0123456789" and "other-token-0123456789" in cfg.secrets
    assert load_config_text("checks: []\n", env={}).root.api.token == ""


async def test_metrics_auth_bearer_or_basic(tmp_path: Path) -> None:
    auth = f'{{bearer: "{METRICS_BEARER}", basic: {{username: prom, password: "{METRICS_PW}"}}}}'
    rig = await make_rig(tmp_path, metrics_auth=auth)

    def basic(user: str, pw: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()}

    try:
        for headers, want in [({}, 401), ({"Authorization": f"Bearer {METRICS_BEARER}"}, 200),
                              ({"Authorization": f"Bearer {TOKEN}"}, 401), (basic("prom", METRICS_PW), 200),
                              (basic("prom", "nope"), 401), (basic("other", METRICS_PW), 401),
                              ({"Authorization": "Basic !!!"}, 401)]:
            async with rig.client.get("/metrics", headers=headers) as r:
                assert r.status == want, headers
                text = await r.text()
            if want == 401:
                assert r.headers["WWW-Authenticate"] == \
                    'Bearer realm="portal-monitor metrics", Basic realm="portal-monitor metrics"'
            else:
                assert "portal_incidents_open" in text
        async with rig.client.get("/-/healthy") as r:  # only /metrics is guarded
            assert r.status == 200
    finally:
        await rig.client.close()


async def test_metrics_stay_open_without_metrics_auth(rig: ApiRig) -> None:
    async with rig.client.get("/metrics") as r:
        assert r.status == 200


# ---------------------------------------------------------------------- GET shapes


async def test_checks_shape(rig: ApiRig) -> None:
    rig.clock.t = T0 + timedelta(seconds=3)
    doc = await rig.json("GET", "/api/v1/checks")
    assert doc["ok"] is False
    assert doc["summary"] == {"up": 1, "down": 2, "pending": 1, "disabled": 1}
    by = {c["check"]: c for c in doc["checks"]}
    assert [c["check"] for c in doc["checks"]] == ["cache", "db", "web", "whmcs", "bff"]
    assert by["cache"] == {
        "check": "cache", "type": "redis", "state": "down", "up": False, "reason": "connect",
        "error": "redis://:***@127.0.0.1:1/0: connection refused", "detail": None, "duration_seconds": 0.5,
        "last_run": "2025-06-01T11:59:58.000000+00:00", "age_seconds": 5.0, "interval_seconds": 10.0,
        "disabled": None, "values": {}, "samples": []}
    assert by["db"]["state"] == "up" and by["db"]["up"] is True and by["db"]["interval_seconds"] == 5.0
    assert by["db"]["detail"] == "found it with secret=***"  # what the run found, redacted like errors
    assert by["db"]["values"] == {"portal_postgres_ping_seconds": 0.002, "portal_postgres_connections_used_ratio": 0.25,
                                  "portal_postgres_longest_query_seconds": 0.0}
    assert {"name": "portal_postgres_connections", "labels": {"state": "idle"}, "value": 5.0} in by["db"]["samples"]
    assert by["web"]["state"] == "pending" and by["web"]["up"] is None and by["web"]["last_run"] is None
    assert by["whmcs"]["error"] == "WHMCS said: Authentication Failed for secret=***"
    assert by["bff"]["state"] == "disabled" and by["bff"]["disabled"] == "disabled" and by["bff"]["up"] is None
    assert set(by["bff"]) == set(by["cache"])


async def test_alerts_shape_firing_first(rig: ApiRig) -> None:
    doc = await rig.json("GET", "/api/v1/alerts")
    assert doc["status"] == "success"
    firing, pending = doc["data"]["alerts"]
    assert firing == {  # Prometheus's alert object, with our name, severity, fired_at and fingerprint
        "labels": {"alertname": "RedisDown", "check": "cache", "severity": "P1"},
        "annotations": {"summary": "Redis cache is down", "runbook_url": RUNBOOK},
        "state": "firing", "activeAt": "2025-06-01T12:00:00Z", "value": "0e+00",
        "name": "RedisDown", "severity": "P1", "fired_at": "2025-06-01T12:00:00Z",
        "fingerprint": firing["fingerprint"], "for_seconds": 0.0, "keep_firing_until": None,
        "no_data": "", "no_data_since": None, "no_data_why": ""}
    assert len(firing["fingerprint"]) == 32
    assert (pending["name"], pending["state"], pending["fired_at"], pending["severity"]) == \
        ("DbBusy", "pending", None, "P3")
    assert pending["for_seconds"] == 300.0  # the status page says "pending for 40s of 5m"


async def test_incidents_list_one_and_errors(rig: ApiRig) -> None:
    (inc,) = (await rig.json("GET", "/api/v1/incidents"))["incidents"]
    assert inc["id"] == 1 and inc["alertname"] == "RedisDown" and inc["state"] == "open"
    assert inc["level"] == "L1" and inc["receivers"] == {"oncall": "L1"} and inc["acked_at"] is None
    assert "timeline" not in inc and "deliveries" not in inc
    one = await rig.json("GET", "/api/v1/incidents/1")
    assert [e["kind"] for e in one["timeline"]] == ["detected", "fired"]
    assert [(d["receiver"], d["kind"], d["state"]) for d in one["deliveries"]] == [("oncall", "trigger", "pending")]
    assert {k: v for k, v in one.items() if k not in ("timeline", "deliveries")} == inc
    assert (await rig.json("GET", "/api/v1/incidents/7", 404)) == {"error": "incident 7 does not exist"}
    assert "not a number" in (await rig.json("GET", "/api/v1/incidents/x1", 400))["error"]
    assert "expected one of open, all" in (await rig.json("GET", "/api/v1/incidents?state=closed", 400))["error"]


async def test_incidents_list_pages_by_limit_and_before(rig: ApiRig) -> None:
    assert [i["id"] for i in (await rig.json("GET", "/api/v1/incidents?state=all&limit=1"))["incidents"]] == [1]
    assert (await rig.json("GET", "/api/v1/incidents?state=all&before=1"))["incidents"] == []
    assert [i["id"] for i in (await rig.json("GET", "/api/v1/incidents?before=2"))["incidents"]] == [1]
    for bad in ("limit=0", "limit=1001", "limit=x", "before=0", "before=-3"):
        assert "expected a whole number" in (await rig.json("GET", f"/api/v1/incidents?{bad}", 400))["error"]


async def test_ack_then_resolve_by_hand(rig: ApiRig) -> None:
    rig.clock.t = T0 + timedelta(minutes=2)
    reply = await rig.json("POST", "/api/v1/incidents/1/ack", headers=rig.auth, json={"who": "alice"})
    assert reply["ok"] is True and reply["notifications_queued"] == 1
    assert reply["incident"]["acked_by"] == "alice"
    assert reply["incident"]["acked_at"] == "2025-06-01T12:02:00.000000+00:00"
    assert reply["incident"]["timeline"][-1]["kind"] == "acknowledged"
    assert rig.alerting.outbox_wake.is_set()
    again = await rig.json("POST", "/api/v1/incidents/1/ack", headers=rig.auth)
    assert again["notifications_queued"] == 0 and again["incident"]["acked_by"] == "alice"
    done = await rig.json("POST", "/api/v1/incidents/1/resolve", headers=rig.auth)  # no body: who defaults
    assert done["incident"]["state"] == "resolved" and done["incident"]["resolved_by"] == "api@127.0.0.1"
    assert "already resolved" in (await rig.json("POST", "/api/v1/incidents/1/ack", 409, headers=rig.auth))["error"]
    assert (await rig.json("POST", "/api/v1/incidents/9/resolve", 404, headers=rig.auth))["error"] == \
        "incident 9 does not exist"
    bad = await rig.json("POST", "/api/v1/incidents/1/ack", 400, headers=rig.auth, json={"who": 3})
    assert "who must be" in bad["error"]
    bad = await rig.json("POST", "/api/v1/incidents/1/ack", 400, headers=rig.auth, json={"by": "x"})
    assert bad["error"] == "unknown key 'by' (allowed: who)"
    bad = await rig.json("POST", "/api/v1/incidents/1/ack", 400, headers=rig.auth, json=["who"])
    assert bad["error"] == "the request body must be a JSON object"


GOOD_SILENCE = {"matchers": {"alertname": "RedisDown"}, "duration": "2h", "author": "alice", "comment": "upgrade"}


@pytest.mark.parametrize(("change", "message"), [
    ({"matchers": {}}, "matchers must be a non-empty object"),
    ({"matchers": "alertname=RedisDown"}, "matchers must be a non-empty object"),
    ({"matchers": {"alert name": "x"}}, "matcher label 'alert name' is not a label name"),
    ({"matchers": {"check": []}}, "must be a string or a non-empty list of strings"),
    ({"ends_at": "2025-06-01T18:00:00Z"}, 'give either "duration"'),
    ({"duration": 5}, "duration must be a string"),
    ({"duration": "2 hours"}, "'2 hours' is not a duration"),
    ({"duration": "0s"}, "must be more than 0s"),
    ({"author": ""}, "a silence needs an author and a comment"),
    ({"comment": "  "}, "a silence needs an author and a comment"),
    ({"starts_at": "yesterday"}, "'yesterday' is neither a time"),
    ({"colour": "red"}, "unknown key 'colour'"),
])
async def test_silence_validation(rig: ApiRig, change: dict[str, Any], message: str) -> None:
    body = {**GOOD_SILENCE, **change}
    reply = await rig.json("POST", "/api/v1/silences", 400, headers=rig.auth, json=body)
    assert message in reply["error"]
    assert rig.alerting.incidents.list_silences(active_only=False) == []


async def test_silence_neither_end_and_end_in_the_past(rig: ApiRig) -> None:
    body = {k: v for k, v in GOOD_SILENCE.items() if k != "duration"}
    assert 'give either "duration"' in (await rig.json("POST", "/api/v1/silences", 400, headers=rig.auth,
                                                       json=body))["error"]
    past = await rig.json("POST", "/api/v1/silences", 400, headers=rig.auth,
                          json={**body, "ends_at": "2025-06-01T11:00:00Z"})
    assert "silence ends at 2025-06-01T11:00:00" in past["error"]


async def test_silence_add_list_expire(rig: ApiRig) -> None:
    made = await rig.json("POST", "/api/v1/silences", 201, headers=rig.auth,
                          json={**GOOD_SILENCE, "matchers": {"alertname": "RedisDown", "check": ["cache", "db"]}})
    assert made == {"ok": True, "silence": {
        "id": 1, "state": "active", "matchers": {"alertname": ["RedisDown"], "check": ["cache", "db"]},
        "starts_at": "2025-06-01T12:00:00.000000+00:00", "ends_at": "2025-06-01T14:00:00.000000+00:00",
        "author": "alice", "comment": "upgrade", "created_at": "2025-06-01T12:00:00.000000+00:00"}}
    later = await rig.json("POST", "/api/v1/silences", 201, headers=rig.auth,
                           json={**GOOD_SILENCE, "starts_at": "2025-06-01T13:00:00Z", "duration": "30m"})
    assert later["silence"]["state"] == "pending" and later["silence"]["ends_at"].startswith("2025-06-01T13:30:00")
    assert [s["id"] for s in (await rig.json("GET", "/api/v1/silences"))["silences"]] == [1]
    assert [s["id"] for s in (await rig.json("GET", "/api/v1/silences?state=all"))["silences"]] == [2, 1]
    # The silence holds the incident's notifications back at the next evaluation.
    rig.alerting.evaluate(T0 + timedelta(seconds=1))
    assert rig.alerting.incidents.get(1).held.startswith("silence 1")  # type: ignore[union-attr]

    gone = await rig.json("DELETE", "/api/v1/silences/1", headers=rig.auth)
    assert gone["expired"] is True and gone["silence"]["state"] == "expired"
    again = await rig.json("POST", "/api/v1/silences/1/expire", headers=rig.auth)
    assert again["expired"] is False
    assert (await rig.json("DELETE", "/api/v1/silences/99", 404, headers=rig.auth))["error"] == \
        "silence 99 does not exist"
    assert (await rig.json("GET", "/api/v1/silences"))["silences"] == []


async def test_reload_answers_200_400_or_500_never_200_on_failure(rig: ApiRig) -> None:
    assert await rig.json("POST", "/-/reload", headers=rig.auth) == {"ok": True}
    rig.daemon.reload_answer = False
    assert await rig.json("POST", "/-/reload", 400, headers=rig.auth) == {
        "ok": False, "errors": ["alert_rules.yaml:3:5: checks[0].interval: bad"]}
    rig.daemon.reload_answer = RuntimeError(f"boom near {REDIS_PW}")
    reply = await rig.json("POST", "/-/reload", 500, headers=rig.auth)
    assert reply == {"ok": False, "errors": ["RuntimeError: boom near ***"]}
    assert rig.daemon.reloads == 3
    assert rig.daemon.confirmed == [False, False, False]


async def test_reload_refused_by_the_guard_says_what_would_go_and_confirm_passes_through(rig: ApiRig) -> None:
    rig.daemon.reload_answer = False
    rig.daemon.reload_detail = {"checks": [], "rules": ["RedisDown", "DatabaseDown"]}
    reply = await rig.json("POST", "/-/reload", 400, headers=rig.auth)
    assert reply["would_remove"] == {"checks": [], "rules": ["RedisDown", "DatabaseDown"]}
    assert reply["confirm"] == "POST /-/reload?confirm=1"
    rig.daemon.reload_answer, rig.daemon.reload_detail = True, {"added": [], "removed_rules": ["RedisDown"]}
    done = await rig.json("POST", "/-/reload?confirm=1", headers=rig.auth)
    assert done == {"ok": True, "added": [], "removed_rules": ["RedisDown"]}
    assert (await rig.json("POST", "/-/reload?confirm=yes", 400, headers=rig.auth))["error"].startswith("confirm=")
    assert rig.daemon.confirmed == [False, True]


async def test_no_secret_in_any_reply(rig: ApiRig) -> None:
    """Every GET, the page, error replies and mutating replies, with secrets planted in check errors,
    a silence comment and a refused call."""
    await rig.json("POST", "/api/v1/silences", 201, headers=rig.auth,
                   json={**GOOD_SILENCE, "comment": f"pasted by mistake: {ROUTING_KEY}"})
    texts = []
    for method, path, kw in [
        ("GET", "/", {}), ("GET", "/api/v1/checks", {}), ("GET", "/api/v1/alerts", {}),
        ("GET", "/api/v1/incidents?state=all", {}), ("GET", "/api/v1/incidents/1", {}),
        ("GET", "/api/v1/silences?state=all", {}), ("GET", "/metrics", {}), ("GET", "/-/ready", {}),
        ("POST", "/api/v1/incidents/1/ack", {"headers": rig.auth, "json": {"who": "bob"}}),
        ("POST", "/api/v1/incidents/1/ack", {"headers": {"Authorization": f"Bearer {TOKEN[:-2]}"}}),
        ("POST", "/api/v1/silences", {"headers": rig.auth, "json": {"matchers": {"a": WHMCS_SECRET}}}),
        ("DELETE", "/api/v1/silences/1", {"headers": rig.auth}),
    ]:
        async with rig.client.request(method, path, **kw) as r:
            texts.append(f"{method} {path} {r.status} {dict(r.headers)} {await r.text()}")
    joined = "\n".join(texts)
    assert "pasted by mistake: ***" in joined and "redis://:***@" in joined
    for secret in SECRETS:
        assert secret not in joined, secret


# ---------------------------------------------------------------------- end to end: the real daemon


def daemon_config(tmp_path: Path, redis_url: str, pd_url: str, *, for_: str = "0s") -> Path:
    path = tmp_path / "alert_rules.yaml"
    path.write_text(f"""\
listen: 127.0.0.1:0
state_dir: {tmp_path / 'state'}
checks:
  - {{name: cache, type: redis, url: "{redis_url}", interval: 1s, timeout: 500ms}}
  - {{name: vault, type: redis, url: "redis://:{REDIS_PW}@127.0.0.1:1/0", interval: 1s, timeout: 500ms}}
  - {{name: whmcs, type: whmcs, enabled: auto, url: "${{WHMCS_API_URL}}", identifier: id,
      secret: "{WHMCS_SECRET}"}}
rules:
  - alert: RedisDown
    expr: portal_redis_up{{check="cache"}} == 0
    for: {for_}
    severity: P1
    summary: "Redis {{{{ $labels.check }}}} is down"
    runbook: "{RUNBOOK}"
receivers:
  oncall: {{type: pagerduty, routing_key: "{ROUTING_KEY}", url: "{pd_url}", timeout: 2s}}
escalation:
  - {{level: L1, after: 0s, severities: [P1, P2, P3, P4], receivers: [oncall]}}
""")
    return path




async def api(d: DaemonProcess, method: str, path: str, *, token: str | None = TOKEN, body: Any = None
              ) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s, \
            s.request(method, d.base + path, json=body, headers=headers) as r:
        return r.status, await r.json()


async def open_incident(d: DaemonProcess) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while True:
            _, doc = await api(d, "GET", "/api/v1/incidents")
            if doc["incidents"]:
                return doc["incidents"][0]
            await asyncio.sleep(0.05)  # polling the daemon for the incident, bounded above


@pytest.fixture
async def pagerduty() -> Any:
    async with FakePagerDuty() as pd:
        yield pd


async def start(path: Path, **env: str) -> DaemonProcess:
    d = await DaemonProcess.start(path, env=clean_env(**env))
    await d.wait_ready()
    return d


async def test_silence_through_the_api_holds_the_page_back(tmp_path: Path, redis_up: Any, pagerduty: Any) -> None:
    d = await start(daemon_config(tmp_path, redis_up.url, pagerduty.url), MONITOR_API_TOKEN=TOKEN)
    try:
        status, made = await api(d, "POST", "/api/v1/silences", body={
            "matchers": {"alertname": "RedisDown"}, "duration": "1h", "author": "alice", "comment": "upgrade"})
        assert status == 201, made
        redis_up.kill()
        async with asyncio.timeout(10):
            while not (inc := await open_incident(d))["held"]:
                await asyncio.sleep(0.05)  # polling the daemon, bounded above
        assert inc["held"].startswith(f"silence {made['silence']['id']} (alertname=RedisDown")
        # Held in the evaluation that opened it: no trigger was ever queued, so none can be sent.
        _, full = await api(d, "GET", f"/api/v1/incidents/{inc['id']}")
        assert full["deliveries"] == [] and pagerduty.requests == []
        # Still visible in the metrics.
        await d.wait_metric("portal_alerts", 1, alertname="RedisDown", severity="P1", state="firing")
        await d.wait_metric("portal_incidents_open", 1, severity="P1")
        # Expiring the silence releases the page.
        status, gone = await api(d, "DELETE", f"/api/v1/silences/{made['silence']['id']}")
        assert status == 200 and gone["expired"] is True
        await pagerduty.wait_until(lambda: len(pagerduty.triggers()) == 1, timeout=10)
    finally:
        assert await d.stop() == 0


async def test_ack_through_the_api_acknowledges_in_pagerduty(tmp_path: Path, redis_up: Any, pagerduty: Any) -> None:
    d = await start(daemon_config(tmp_path, redis_up.url, pagerduty.url), MONITOR_API_TOKEN=TOKEN)
    try:
        redis_up.kill()
        await pagerduty.wait_until(lambda: len(pagerduty.triggers()) == 1, timeout=10)
        inc = await open_incident(d)
        assert (await api(d, "POST", f"/api/v1/incidents/{inc['id']}/ack", token="wrong-wrong-wrong-wrong"))[0] == 401
        status, reply = await api(d, "POST", f"/api/v1/incidents/{inc['id']}/ack", body={"who": "alice"})
        assert status == 200 and reply["notifications_queued"] == 1
        await pagerduty.wait_until(lambda: pagerduty.actions() == ["trigger", "acknowledge"], timeout=10)
        assert pagerduty.alerts == {inc["dedup_key"]: "acknowledged"}
    finally:
        assert await d.stop() == 0


async def test_reload_through_the_api(tmp_path: Path, redis_up: Any, pagerduty: Any) -> None:
    path = daemon_config(tmp_path, redis_up.url, pagerduty.url)
    d = await start(path, MONITOR_API_TOKEN=TOKEN)
    try:
        good = path.read_text()
        path.write_text(good.replace("interval: 1s, timeout: 500ms}", "interval: 1 s}", 1))
        status, reply = await api(d, "POST", "/-/reload")
        assert status == 400 and reply["ok"] is False
        (error,) = reply["errors"]
        assert error.startswith("alert_rules.yaml:4:") and "checks[0].interval: '1 s' is not a duration" in error
        await d.wait_metric("portal_monitor_config_last_reload_successful", 0)
        path.write_text(good.replace("for: 0s", "for: 1m"))
        assert await api(d, "POST", "/-/reload") == (
            200, {"ok": True, "added": [], "changed": [], "removed": [], "removed_rules": []})
        await d.wait_metric("portal_monitor_config_last_reload_successful", 1)
        assert (await d.wait_event("reloaded"))["changed"] == []
        # The token comes with the config: without MONITOR_API_TOKEN in the daemon's environment,
        # a reload would not open the API (tested in-process); a wrong token still gets 401 here.
        assert (await api(d, "POST", "/-/reload", token=None))[0] == 401
    finally:
        assert await d.stop() == 0


async def test_no_secret_in_the_real_daemons_replies(tmp_path: Path, redis_up: Any, pagerduty: Any) -> None:
    d = await start(daemon_config(tmp_path, redis_up.url, pagerduty.url), MONITOR_API_TOKEN=TOKEN,
                    WHMCS_API_URL=closed_port_url("/includes/api.php"))
    try:
        redis_up.kill()
        await open_incident(d)
        texts = []
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
            for path in ("/", "/api/v1/checks", "/api/v1/alerts", "/api/v1/incidents?state=all",
                         "/api/v1/incidents/1", "/api/v1/silences?state=all", "/metrics"):
                async with s.get(d.base + path) as r:
                    texts.append(await r.text())
        joined = "\n".join(texts)
        assert "redis://:***@127.0.0.1:1/0" in joined  # the vault check's error, redacted
        for secret in SECRETS:
            assert secret not in joined, secret
    finally:
        assert await d.stop() == 0
    logs = "\n".join(json.dumps(e) for e in d.events) + d.stderr.decode()
    for secret in SECRETS:
        assert secret not in logs, secret


# ---------------------------------------------------------------------- the CLI's remote mode


async def cli(*args: str, **env: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "monitor", *args, cwd=ROOT, env=clean_env(**env),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_remote_cli_against_a_running_daemon(tmp_path: Path, redis_up: Any, pagerduty: Any) -> None:
    d = await start(daemon_config(tmp_path, redis_up.url, pagerduty.url), MONITOR_API_TOKEN=TOKEN)
    url = d.base
    try:
        # once --url: the same table and JSON as the local `once`; exit 1 because `vault` is down.
        rc, out, err = await cli("once", "--url", url)
        assert rc == 1, err
        lines = out.splitlines()
        assert lines[0].split() == ["check", "type", "state", "values", "detail"]
        cache = next(line for line in lines if line.startswith("  cache"))
        assert "UP" in cache and "redis_ping_seconds=" in cache
        vault = next(line for line in lines if line.startswith("  vault"))
        assert "DOWN" in vault and "connect: redis://:***@127.0.0.1:1/0" in vault
        assert "1 up, 1 down, 1 disabled" in out
        rc, out, _ = await cli("once", "--json", "--url", url)
        doc = json.loads(out)
        by = {c["check"]: c for c in doc["checks"]}
        assert rc == 1 and doc["ok"] is False
        assert set(by["cache"]) == {"check", "type", "up", "reason", "error", "detail", "duration_seconds", "values", "samples"}
        assert by["cache"]["up"] is True and by["cache"]["values"]["portal_redis_ping_seconds"] > 0
        assert by["whmcs"] == {"check": "whmcs", "type": "whmcs", "up": None,
                               "disabled": "disabled until WHMCS_API_URL is set"}

        redis_up.kill()
        inc = await open_incident(d)
        rc, out, _ = await cli("incidents", "list", "--url", url)
        assert rc == 0 and f"#{inc['id']}" in out and "RedisDown: Redis cache is down" in out and "not acked" in out
        rc, out, _ = await cli("incidents", "show", str(inc["id"]), "--url", url)
        assert rc == 0 and "timeline (UTC):" in out and f"runbook: {RUNBOOK}" in out
        rc, out, _ = await cli("incidents", "show", str(inc["id"]), "--json", "--url", url)
        assert json.loads(out)["dedup_key"] == inc["dedup_key"]

        # Mutating calls: no token, a wrong token, then the right one.
        rc, _, err = await cli("incidents", "ack", str(inc["id"]), "--url", url)
        assert rc == 1 and "401 Unauthorized: set MONITOR_API_TOKEN" in err and url in err
        rc, _, err = await cli("incidents", "ack", str(inc["id"]), "--url", url,
                               MONITOR_API_TOKEN="not-the-token-0123456789")
        assert rc == 1 and "the token in MONITOR_API_TOKEN is not the daemon's" in err
        rc, out, err = await cli("incidents", "ack", str(inc["id"]), "--who", "alice", "--url", url,
                                 MONITOR_API_TOKEN=TOKEN)
        assert rc == 0, err
        assert out.startswith(f"incident {inc['id']} acknowledged by alice; 1 notification queued")
        await pagerduty.wait_until(lambda: pagerduty.actions() == ["trigger", "acknowledge"], timeout=10)

        rc, out, err = await cli("silence", "add", "alertname=RedisDown", "check=cache|db", "--duration", "30m",
                                 "--comment", "upgrade", "--who", "alice", "--url", url, MONITOR_API_TOKEN=TOKEN)
        assert rc == 0 and out.startswith("silence 1 added until "), err
        rc, out, _ = await cli("silence", "list", "--url", url)
        assert out.strip() == "silence 1 (alertname=RedisDown, check=cache|db; alice: upgrade)"
        rc, out, _ = await cli("silence", "list", "--json", "--url", url)
        assert json.loads(out)[0]["matchers"] == {"alertname": ["RedisDown"], "check": ["cache", "db"]}
        rc, out, _ = await cli("silence", "expire", "1", "--url", url, MONITOR_API_TOKEN=TOKEN)
        assert rc == 0 and out.strip() == "silence 1 expired"
        rc, _, err = await cli("silence", "expire", "1", "--url", url, MONITOR_API_TOKEN=TOKEN)
        assert rc == 1 and "already expired" in err
        rc, _, err = await cli("silence", "add", "--comment", "x", "--url", url, MONITOR_API_TOKEN=TOKEN)
        assert rc == 2 and "give at least one matcher" in err

        rc, out, err = await cli("incidents", "resolve", str(inc["id"]), "--url", url, MONITOR_API_TOKEN=TOKEN)
        assert rc == 0, err
        await pagerduty.wait_until(lambda: pagerduty.actions() == ["trigger", "acknowledge", "resolve"], timeout=10)
        rc, _, err = await cli("incidents", "resolve", str(inc["id"]), "--url", url, MONITOR_API_TOKEN=TOKEN)
        assert rc == 1 and "HTTP 409" in err and "already resolved" in err
        rc, _, err = await cli("incidents", "show", "99", "--url", url)
        assert rc == 1 and "HTTP 404: incident 99 does not exist" in err
    finally:
        assert await d.stop() == 0


async def test_remote_cli_errors_name_the_url(tmp_path: Path, redis_up: Any, pagerduty: Any) -> None:
    dead = closed_port_url("").rstrip("/")
    for args in (("once",), ("incidents", "list"), ("silence", "list")):
        rc, _, err = await cli(*args, "--url", dead)
        assert rc in (1, 2) and f"cannot connect to {dead}: connection refused" in err, err
    d = await start(daemon_config(tmp_path, redis_up.url, pagerduty.url))  # no MONITOR_API_TOKEN
    try:
        rc, _, err = await cli("silence", "expire", "1", "--url", d.base, MONITOR_API_TOKEN=TOKEN)
        assert rc == 1 and "403 Forbidden" in err and "the daemon has no API token; set MONITOR_API_TOKEN" in err
    finally:
        assert await d.stop() == 0
    rc, _, err = await cli("once", "--url", "ftp://example")
    assert rc == 2 and "expected http://HOST:PORT" in err
