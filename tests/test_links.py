"""Links that open: every URL a receiver sends is the incident page under `external_url` or the
rule's runbook link, and the shipped rules take their runbook links and the steps' URLs from the
environment (`RUNBOOK_BASE_URL`, `BFF_HEALTH_URL`) instead of hard-coding them."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from monitor.config.loader import load_config
from monitor.delivery import alertmanager, pagerduty, slack, webhook
from monitor.incidents.messages import incident_url
from monitor.model import ReceiverContext
from tests.fake_receivers import T0, make_notification

REPO = Path(__file__).resolve().parents[1]
EXTERNAL = "https://ops.example.com/monitor"
RUNBOOK = "https://wiki.example/runbooks/incident-response#3-redis-connection-failures"
URL = re.compile(r"https?://[^\s\\\"'<>|)]+")


def _urls(doc: Any) -> list[str]:
    return URL.findall(json.dumps(doc, ensure_ascii=False))


def _payloads(kind: str) -> dict[str, Any]:
    n = make_notification(kind, runbook=RUNBOOK, description="1. Check Redis connectivity: redis-cli ping")
    ctx = ReceiverContext(host="mon1", external_url=EXTERNAL, now=lambda: T0 + timedelta(minutes=1))
    pd = pagerduty.PagerDutyReceiver(
        "oncall", pagerduty.Config(type="pagerduty", routing_key="0123456789abcdef0123456789abcdef"), ctx)
    return {
        "pagerduty": pd.event(n),
        "slack": slack.message(n, EXTERNAL),
        "webhook": webhook.webhook_body(n, "mgmt", EXTERNAL),
        "alertmanager": alertmanager.alert_body(n, now=T0, resend_ttl=300.0, external_url=EXTERNAL),
    }


@pytest.mark.parametrize("kind", ["trigger", "acknowledge", "resolve"])
def test_every_link_in_every_receivers_payload_is_the_page_or_the_runbook(kind: str) -> None:
    page = incident_url(EXTERNAL, 12)
    assert page == f"{EXTERNAL}/incidents/12"
    for receiver, payload in _payloads(kind).items():
        if payload is None:
            continue
        urls = _urls(payload)
        for url in urls:
            assert url.startswith(EXTERNAL) or url == RUNBOOK, f"{receiver} ({kind}) sends {url}"
        if kind == "trigger":
            assert page in urls, f"{receiver} does not link to the incident page: {urls}"


def test_pagerduty_client_url_and_links_are_built_from_external_url() -> None:
    event = _payloads("trigger")["pagerduty"]
    assert event["client_url"] == EXTERNAL
    assert event["links"] == [{"href": RUNBOOK, "text": "Runbook: RedisDown"},
                              {"href": f"{EXTERNAL}/incidents/12", "text": "Incident 12"}]


def test_shipped_runbook_links_and_steps_come_from_the_environment(tmp_path: Path) -> None:
    env = {"RUNBOOK_BASE_URL": "https://wiki.acme.test/ir", "BFF_HEALTH_URL": "http://bff.acme.test:4000/health",
           "PORTAL_MONITOR_STATE_DIR": str(tmp_path)}
    cfg = load_config(REPO / "alert_rules.yaml", env=env)
    runbooks = [r.runbook for r in cfg.root.rules if r.runbook]
    assert len(runbooks) >= 10
    assert all(r.startswith("https://wiki.acme.test/ir#") for r in runbooks), runbooks
    descriptions = "\n".join(r.description or "" for r in cfg.root.rules)
    assert "http://bff.acme.test:4000/health" in descriptions
    assert "localhost:4000" not in descriptions and "wiki.example" not in "\n".join(runbooks)
    # unset, the defaults are the runbook's own
    cfg = load_config(REPO / "alert_rules.yaml", env={"PORTAL_MONITOR_STATE_DIR": str(tmp_path)})
    assert all(r.runbook.startswith("https://wiki.example/runbooks/incident-response#")
               for r in cfg.root.rules if r.runbook)
