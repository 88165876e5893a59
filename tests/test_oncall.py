"""The on-call CLI working on the state file: incidents list/show/ack/resolve/review,
silence add/list/expire, notify-test against a fake PagerDuty."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from monitor.config.loader import load_config
from monitor.incidents.lifecycle import Incidents
from monitor.model import Transition
from monitor.delivery.outbox import list_rows
from monitor.statedb import open_db
from tests.daemon_proc import ROOT, clean_env
from tests.fake_receivers import FakePagerDuty
from tests.incident_helpers import KEY, alert


def write_config(tmp_path: Path, pd_url: str = "http://127.0.0.1:9/v2/enqueue") -> Path:
    path = tmp_path / "alert_rules.yaml"
    path.write_text(f"""\
state_dir: {tmp_path / 'state'}
rules:
  - {{alert: RedisDown, expr: "portal_redis_up == 0", severity: P1, summary: down}}
receivers:
  oncall: {{type: pagerduty, routing_key: "{KEY}", url: "{pd_url}", timeout: 2s}}
  console: {{type: log}}
escalation:
  - {{level: L1, after: 0s, severities: [P1, P2, P3, P4], receivers: [oncall]}}
""")
    return path


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "monitor", *args], capture_output=True, text=True, cwd=ROOT,
                          env=clean_env(), timeout=60)


@pytest.fixture
def with_incident(tmp_path: Path) -> Path:
    """A config whose state file holds one open P1 incident, triggered to `oncall`."""
    path = write_config(tmp_path)
    cfg = load_config(path, env={})
    conn = open_db(cfg.root.state_dir)
    fired = datetime.now(UTC) - timedelta(minutes=3)
    a = alert("RedisDown", "P1", check="cache")
    Incidents(conn, cfg).update([a], [Transition(a, "firing", fired, fired)], fired)
    conn.close()
    return path


def test_incidents_list_show_ack_resolve_review(with_incident: Path) -> None:
    cfg = str(with_incident)
    listed = cli("incidents", "list", "-c", cfg)
    assert listed.returncode == 0, listed.stderr
    assert "#1" in listed.stdout and "P1" in listed.stdout and "RedisDown" in listed.stdout
    assert "not acked" in listed.stdout

    shown = json.loads(cli("incidents", "show", "1", "--json", "-c", cfg).stdout)
    assert shown["state"] == "open" and shown["level"] == "L1" and shown["receivers"] == {"oncall": "L1"}

    acked = cli("incidents", "ack", "1", "--who", "alice", "-c", cfg)
    assert acked.returncode == 0, acked.stderr
    assert "acknowledged by alice; 1 notification queued" in acked.stdout
    assert "acked by alice" in cli("incidents", "list", "-c", cfg).stdout

    resolved = cli("incidents", "resolve", "1", "--who", "alice", "-c", cfg)
    assert resolved.returncode == 0 and "resolved by alice" in resolved.stdout
    again = cli("incidents", "resolve", "1", "-c", cfg)
    assert again.returncode == 1 and "incident 1:" in again.stderr

    conn = open_db(with_incident.parent / "state")
    kinds = [(r.receiver, r.kind) for r in list_rows(conn)]
    conn.close()
    assert kinds == [("oncall", "trigger"), ("oncall", "acknowledge"), ("oncall", "resolve")]

    review = cli("incidents", "review", "1", "-c", cfg)
    assert review.returncode == 0
    assert "RedisDown" in review.stdout and "Timeline" in review.stdout and "due" in review.stdout.lower()

    missing = cli("incidents", "show", "99", "-c", cfg)
    assert missing.returncode == 1 and "incident 99 not found" in missing.stderr
    assert cli("incidents", "list", "-c", cfg).stdout.strip() == "no open incidents"


def test_silence_add_list_expire(with_incident: Path) -> None:
    cfg = str(with_incident)
    added = cli("silence", "add", "alertname=RedisDown", "check=cache|db", "--duration", "2h",
                "--comment", "Redis upgrade", "--who", "bob", "-c", cfg)
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("silence 1 added until ")
    listed = json.loads(cli("silence", "list", "--json", "-c", cfg).stdout)
    assert [(s["id"], s["author"], s["comment"]) for s in listed] == [(1, "bob", "Redis upgrade")]
    assert listed[0]["matchers"] == {"alertname": ["RedisDown"], "check": ["cache", "db"]}
    no_comment = cli("silence", "add", "alertname=X", "-c", cfg)
    assert no_comment.returncode == 2 and "--comment is required" in no_comment.stderr
    bad = cli("silence", "add", "alertname", "--comment", "x", "-c", cfg)
    assert bad.returncode == 2 and "expected label=value" in bad.stderr
    assert cli("silence", "expire", "1", "-c", cfg).stdout.strip() == "silence 1 expired"
    assert cli("silence", "list", "-c", cfg).stdout.strip() == "no active silences"
    assert cli("silence", "expire", "1", "-c", cfg).returncode == 1


async def test_notify_test_reports_delivery_and_refusal(tmp_path: Path) -> None:
    async with FakePagerDuty() as pd:
        cfg = str(write_config(tmp_path, pd.url))
        import asyncio

        ok = await asyncio.to_thread(cli, "notify-test", "oncall", "-c", cfg)
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.strip() == "oncall (pagerduty): delivered"
        (event,) = pd.events
        assert event["event_action"] == "trigger" and event["payload"]["summary"].startswith("[TEST]")
        pd.answer(400, body={"status": "invalid event", "message": "Event object is invalid",
                             "errors": ["'payload.summary' is missing"]})
        refused = await asyncio.to_thread(cli, "notify-test", "oncall", "-c", cfg)
        assert refused.returncode == 1
        assert "FAILED (permanent)" in refused.stderr and "payload.summary" in refused.stderr
        assert KEY not in refused.stdout + refused.stderr
    unknown = cli("notify-test", "pager", "-c", cfg)
    assert unknown.returncode == 1 and "receiver 'pager': not in the config (receivers: console, oncall)" \
        in unknown.stderr
