"""The status page: rendering rules (escaping, severity colours, safe links) and a real page load
of the running daemon's `/` in headless Chromium, with a phone-sized screenshot kept in
tests/artifacts/ and the rendered DOM searched for every configured secret."""

from __future__ import annotations

import asyncio
import struct
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from monitor.web.statuspage import format_age, format_value, render_page
from tests.conftest import require_tool
from tests.daemon_proc import DaemonProcess, clean_env

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def check(name: str, state: str, **kw: Any) -> dict[str, Any]:
    base = {"check": name, "type": "redis", "state": state, "up": {"up": True, "down": False}.get(state),
            "reason": None, "error": None, "duration_seconds": 0.002, "last_run": "2025-06-01T11:59:58+00:00",
            "age_seconds": 2.0, "interval_seconds": 10.0, "disabled": None, "values": {}, "samples": []}
    return {**base, **kw}


def alert(name: str, severity: str, state: str = "firing", **annotations: str) -> dict[str, Any]:
    return {"labels": {"alertname": name, "severity": severity, "check": "cache"},
            "annotations": {"summary": f"{name} summary", **annotations}, "state": state,
            "activeAt": "2025-06-01T11:55:00Z", "value": "0e+00", "name": name, "severity": severity,
            "fired_at": "2025-06-01T11:55:00Z" if state == "firing" else None, "fingerprint": "f" * 32}


def page(checks: list[dict[str, Any]], alerts: list[dict[str, Any]] = (), incidents: list[dict[str, Any]] = (),
         silences: list[dict[str, Any]] = (), ready: bool = True) -> str:
    summary = {s: sum(1 for c in checks if c["state"] == s) for s in ("up", "down", "pending", "disabled")}
    return render_page(checks={"ok": not summary["down"], "summary": summary, "checks": list(checks)},
                       alerts={"status": "success", "data": {"alerts": list(alerts)}}, incidents={"incidents": list(incidents)},
                       silences={"silences": list(silences)}, now=NOW, ready=ready)


def test_page_is_phone_sized_and_refreshes_itself() -> None:
    html = page([check("cache", "up")])
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    assert '<meta http-equiv="refresh" content="10">' in html
    assert "<script" not in html
    assert '<header class="overall ok" id="overall"><h1>All checks up, nothing firing</h1>' in html


def test_everything_from_outside_is_escaped() -> None:
    evil = '<script>alert("x")</script>'
    html = page([check("cache", "down", reason="connect", error=evil)],
                [alert("RedisDown", "P1", summary=f'"><img src=x onerror=alert(1)>{evil}')],
                silences=[{"id": 1, "state": "active", "matchers": {"alertname": ["<b>"]}, "author": "<i>a</i>",
                           "comment": evil, "starts_at": "2025-06-01T11:00:00+00:00",
                           "ends_at": "2025-06-01T14:00:00+00:00", "created_at": "2025-06-01T11:00:00+00:00"}])
    assert "<script" not in html and "<img" not in html and "<b>" not in html and "<i>a" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert "#1 alertname=&lt;b&gt;" in html and "until 2025-06-01 14:00 UTC (2h00m left)" in html


def test_runbook_links_only_for_http_urls() -> None:
    html = page([check("cache", "down", reason="connect", error="x")],
                [alert("A", "P1", runbook="https://wiki.example/rb?a=1&b=2"),
                 alert("B", "P2", runbook="javascript:alert(1)")])
    assert '<a class="button" href="https://wiki.example/rb?a=1&amp;b=2" rel="noopener noreferrer">Runbook</a>' in html
    assert 'href="javascript' not in html and "runbook: javascript:alert(1)" in html


@pytest.mark.parametrize(("severities", "header"), [
    (["P4", "P2", "P3"], "p2"), (["P1", "P4"], "p1"), (["P3"], "p3"), (["P4"], "p4"), ([], "warn"),
])
def test_severity_colours(severities: list[str], header: str) -> None:
    html = page([check("cache", "down", reason="connect", error="refused")],
                [alert(f"A{s}", s) for s in severities])
    assert f'<header class="overall {header}"' in html
    for s in severities:
        assert f'<li class="card alert {s.lower()}"><div class="row"><span class="badge {s.lower()}">{s}</span>' in html
    if not severities:
        assert "<h1>1 check down: cache</h1>" in html


def test_checks_down_first_with_value_error_and_age() -> None:
    html = page([check("b_up", "up", values={"portal_redis_ping_seconds": 0.0003,
                                             "portal_redis_memory_used_ratio": 0.125}),
                 check("a_off", "disabled", disabled="disabled until WHMCS_API_URL is set", up=None),
                 check("c_down", "down", reason="timeout", error="redis://127.0.0.1:1: no reply", age_seconds=75.0),
                 check("d_new", "pending", up=None)])
    order = [html.index(f'<span class="name">{n}</span>') for n in ("c_down", "d_new", "b_up", "a_off")]
    assert order == sorted(order)
    assert "redis_ping_seconds 0.3ms · redis_memory_used_ratio 12.5%" in html
    assert '<div class="error">timeout: redis://127.0.0.1:1: no reply</div>' in html
    assert "ran 1m15s ago · took 2.0ms · every 10s" in html
    assert "disabled until WHMCS_API_URL is set" in html and "not run yet" in html


def test_a_check_card_says_what_the_run_found() -> None:
    html = page([check("bff_process", "up", detail="pid 4242 (node main.js) & <1 more>")])
    assert '<div class="muted">pid 4242 (node main.js) &amp; &lt;1 more&gt;</div>' in html
    assert 'class="muted">pid' not in page([check("cache", "up")])


def test_incident_age_level_and_ack_state() -> None:
    inc = {"id": 7, "alertname": "RedisDown", "severity": "P2", "summary": "Redis down", "runbook": "",
           "fired_at": "2025-06-01T10:30:00+00:00", "level": "L2", "acked_at": "2025-06-01T11:50:00+00:00",
           "acked_by": "alice", "held": ""}
    html = page([check("cache", "up")], incidents=[inc, {**inc, "id": 8, "acked_at": None, "acked_by": None,
                                                         "level": "", "held": "inhibited by RedisDown"}])
    assert "open 1h30m · level L2 · acknowledged by alice 10m00s ago" in html
    assert "open 1h30m · level -- · not acknowledged" in html and "held: inhibited by RedisDown" in html


def test_a_firing_alert_says_what_to_do_and_opens_its_incident() -> None:
    steps = "Check Redis.\n1. redis-cli ping\n2. redis-cli info memory\n3. restart it"
    inc = {"id": 7, "alertname": "RedisDown", "severity": "P1", "summary": "Redis down", "runbook": "",
           "fired_at": "2025-06-01T11:55:00+00:00", "level": "L1", "acked_at": None, "acked_by": None,
           "held": "", "dedup_key": "f" * 32}
    html = render_page(checks={"ok": True, "summary": {"up": 1, "down": 0, "pending": 0, "disabled": 0},
                               "checks": [check("cache", "up")]},
                       alerts={"status": "success", "data": {"alerts": [alert("RedisDown", "P1", description=steps)]}},
                       incidents={"incidents": [inc]}, silences={"silences": []}, now=NOW, base="/monitor",
                       sparklines={"cache": '<svg class="spark"></svg>'})
    # the first two steps (the incident page has them all), and the way to the incident's page
    assert '<ol class="steps"><li>Check Redis.</li><li>redis-cli ping</li></ol>' in html
    assert html.count('href="/monitor/incidents/7">Open the incident</a>') == 2  # the alert and the incident
    assert '<svg class="spark"></svg>' in html  # the check card's last hour


def test_keep_firing_and_pending_say_how_long() -> None:
    held = {**alert("HighErrorRate", "P3"), "keep_firing_until": "2025-06-01T12:01:40Z", "for_seconds": 300.0}
    waiting = {**alert("DbBusy", "P3", state="pending"), "activeAt": "2025-06-01T11:59:20Z", "for_seconds": 300.0}
    html = page([check("cache", "up")], alerts=[held, waiting])
    assert "condition cleared · clearing in 1m40s (keep_firing_for)" in html
    assert "pending for 40s of 5m00s" in html


def test_value_and_age_formats() -> None:
    assert [format_value("x_seconds", 0.0004), format_value("x_seconds", 2.5), format_value("x_ratio", 0.5),
            format_value("x_bytes", 3 * 1024 ** 3), format_value("x", 3), format_value("x", None)] == \
        ["0.4ms", "2.5s", "50.0%", "3.0GiB", "3", "n/a"]
    assert [format_age(5), format_age(125), format_age(3 * 3600 + 300), format_age(2 * 86400 + 7200)] == \
        ["5s", "2m05s", "3h05m", "2d2h"]


# ---------------------------------------------------------------------- headless Chromium

TOKEN = "page-T0KEN-0123456789abcdef"
REDIS_PW = "page-redis-PW-3141"
WHMCS_SECRET = "page-whmcs-SECRET-2718"
ROUTING_KEY = "PAGEROUTINGKEYsecret0123456789ab"
RUNBOOK = "https://wiki.example/runbooks/incident-response#3-redis-connection-failures"


def chromium() -> str:
    return require_tool("chromium", "headless Chromium is not installed here (Debian: apt-get install -y chromium)",
                        alternatives=("chromium-browser",))


async def run_chromium(binary: str, profile: Path, *args: str, size: str = "390,844") -> bytes:
    proc = await asyncio.create_subprocess_exec(
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", f"--window-size={size}", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(90):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, err.decode()[-2000:]
    return out


def write_config(tmp_path: Path, redis_url: str) -> Path:
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
  - {{alert: VaultDown, expr: 'portal_redis_up{{check="vault"}} == 0', severity: P1,
     summary: "Redis {{{{ $labels.check }}}} is down", runbook: "{RUNBOOK}"}}
  - {{alert: VaultCheckFailing, expr: 'portal_check_up{{check="vault"}} == 0', severity: P2,
     summary: "Check vault failing"}}
  - {{alert: NoReplayKeys, expr: 'portal_sf_replay_keys == 0', severity: P3,
     summary: "No replay keys <i>yet</i>"}}
  - {{alert: WhmcsNotMonitored, expr: 'absent(portal_whmcs_up)', severity: P4, summary: "WHMCS is not monitored"}}
receivers:
  oncall: {{type: pagerduty, routing_key: "{ROUTING_KEY}", url: "http://127.0.0.1:1/v2/enqueue", timeout: 1s}}
escalation:
  - {{level: L1, after: 0s, severities: [P1, P2, P3, P4], receivers: [oncall]}}
""")
    return path


async def call(d: DaemonProcess, method: str, path: str, body: Any = None) -> Any:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s, \
            s.request(method, d.base + path, json=body, headers={"Authorization": f"Bearer {TOKEN}"}) as r:
        assert r.status < 300, await r.text()
        return await r.json()


async def test_status_page_in_headless_chromium(tmp_path: Path, redis_up: Any) -> None:
    binary = chromium()
    d = await DaemonProcess.start(write_config(tmp_path, redis_up.url), env=clean_env(MONITOR_API_TOKEN=TOKEN))
    try:
        async with asyncio.timeout(15):
            while len([a for a in (await call(d, "GET", "/api/v1/alerts"))["data"]["alerts"] if a["state"] == "firing"]) < 4 \
                    or len((await call(d, "GET", "/api/v1/incidents"))["incidents"]) < 4:
                await asyncio.sleep(0.1)  # polling the daemon until all four rules fire, bounded above
        incidents = {i["alertname"]: i for i in (await call(d, "GET", "/api/v1/incidents"))["incidents"]}
        await call(d, "POST", f"/api/v1/incidents/{incidents['VaultDown']['id']}/ack", {"who": "alice"})
        await call(d, "POST", "/api/v1/silences", {"matchers": {"alertname": "WhmcsNotMonitored"}, "duration": "4h",
                                                    "author": "bob", "comment": "WHMCS not set up yet"})

        dom = (await run_chromium(binary, tmp_path / "profile-dom", "--dump-dom", d.base + "/")).decode()
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "statuspage-dom.html").write_text(dom)
        shot = ARTIFACTS / "statuspage-phone.png"
        shot.unlink(missing_ok=True)
        await run_chromium(binary, tmp_path / "profile-shot", f"--screenshot={shot}", d.base + "/")
        # The whole page at phone width, for a person to look at (not asserted on).
        await run_chromium(binary, tmp_path / "profile-long", f"--screenshot={ARTIFACTS / 'statuspage-phone-full.png'}",
                           d.base + "/", size="390,2600")
    finally:
        assert await d.stop() == 0

    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png[16:24]) == (390, 844)  # a phone-sized viewport

    assert '<header class="overall p1" id="overall"><h1>P1 firing: VaultDown (+3 more)</h1>' in dom
    for sev, name in (("p1", "VaultDown"), ("p2", "VaultCheckFailing"), ("p3", "NoReplayKeys"),
                      ("p4", "WhmcsNotMonitored")):
        assert f'<li class="card alert {sev}"><div class="row"><span class="badge {sev}">{sev.upper()}</span>' \
               f'<span class="name">{name}</span>' in dom
    assert f'href="{RUNBOOK}"' in dom
    assert "No replay keys &lt;i&gt;yet&lt;/i&gt;" in dom  # escaped, not markup
    assert f"#{incidents['VaultDown']['id']} VaultDown" in dom and "acknowledged by alice" in dom
    assert "level L1 · not acknowledged" in dom
    assert "held: silence 1 (alertname=WhmcsNotMonitored; bob: WHMCS not set up yet)" in dom
    assert "#1 alertname=WhmcsNotMonitored" in dom and "bob: WHMCS not set up yet" in dom
    assert '<span class="name">cache</span><span class="muted">redis</span><span class="badge up">UP</span>' in dom
    assert "redis_ping_seconds " in dom
    assert '<span class="name">vault</span><span class="muted">redis</span><span class="badge down">DOWN</span>' in dom
    assert "connect: redis://:***@127.0.0.1:1/0" in dom
    assert "disabled until WHMCS_API_URL is set" in dom
    for secret in (TOKEN, REDIS_PW, WHMCS_SECRET, ROUTING_KEY):
        assert secret not in dom, secret


def test_undelivered_pages_show_as_a_banner_above_everything() -> None:
    undelivered = [{"incident_id": 12, "severity": "P1", "alertname": "PortalUnreachable", "receiver": "oncall",
                    "level": "L1", "state": "pending", "attempts": 4,
                    "last_error": "pagerduty receiver 'oncall' (<x>): HTTP 503", "since": "2025-06-01T11:57:00+00:00",
                    "next_attempt_at": "2025-06-01T12:00:30+00:00"},
                   {"incident_id": 12, "severity": "P1", "alertname": "PortalUnreachable", "receiver": "chat",
                    "level": "L1", "state": "failed", "attempts": 1, "last_error": "", "since":
                    "2025-06-01T11:59:00+00:00", "next_attempt_at": None}]
    summary = {"up": 1, "down": 0, "pending": 0, "disabled": 0}
    html = render_page(checks={"ok": True, "summary": summary, "checks": [check("cache", "up")]},
                       alerts={"status": "success", "data": {"alerts": []}}, incidents={"incidents": [], "undelivered": undelivered},
                       silences={"silences": []}, now=NOW)
    banner = html[html.index('<section class="banner" id="undelivered">'):]
    assert html.index("</header>") < html.index('id="undelivered"') < html.index('id="alerts"')
    assert "<h2>2 pages not delivered</h2>" in banner
    assert ("#12 P1 PortalUnreachable → <b>oncall</b>: not delivered for 3m00s, 4 attempts: "
            "pagerduty receiver &#x27;oncall&#x27; (&lt;x&gt;): HTTP 503") in banner
    assert "<b>chat</b>: not delivered for 1m00s, 1 attempt (failed, not retried)" in banner
    assert 'id="undelivered"' not in page([check("cache", "up")])  # nothing undelivered: no banner
