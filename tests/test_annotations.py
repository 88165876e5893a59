"""Prometheus's `annotations:` map on alert rules: from the config to the alert, every receiver
and `export-rules`; `summary`, `description` and `runbook` stay shorthands."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
import yaml

from monitor.config.loader import ConfigError, load_config_text
from monitor.delivery import pagerduty
from monitor.delivery.alertmanager import alert_annotations as am_annotations  # the same function, re-exported
from monitor.delivery.pagerduty import PagerDutyReceiver
from monitor.delivery.slack import message
from monitor.delivery.webhook import alert_annotations
from monitor.model import ReceiverContext, Sample
from monitor.rules.engine import AlertStates, compile_rules, evaluate
from monitor.rules.export import export_prometheus, prometheus_rules
from monitor.rules.templates import Context
from tests.fake_receivers import make_notification

T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
RULES = """
rules:
  - alert: RedisMemoryHigh
    expr: portal_redis_memory_used_ratio > 0.9
    severity: P3
    summary: "Redis {{ $labels.check }} at {{ $value | humanizePercentage }}"
    runbook: https://wiki.example/rb#3
    annotations:
      dashboard: "{{ $externalURL }}/status#{{ $labels.check }}"
      impact: "Sessions may be evicted"
  - alert: OnlyTheMap
    expr: portal_redis_memory_used_ratio > 0.5
    severity: P4
    annotations:
      summary: "half full ({{ humanize $value }})"
      runbook_url: https://wiki.example/rb#map
"""


def _alerts() -> dict[str, dict[str, str]]:
    cfg = load_config_text(RULES, env={})
    rules = compile_rules(cfg, Context(external_url="http://mon:9820"))
    sample = Sample("portal_redis_memory_used_ratio", {"check": "cache"}, 0.93456)
    state, _ = evaluate(rules, [sample], AlertStates(), T0)
    return {st.alert.name: dict(st.alert.annotations) for st in state.alerts.values()}


def test_the_map_and_the_shorthands_reach_the_alert_under_prometheus_names() -> None:
    alerts = _alerts()
    assert alerts["RedisMemoryHigh"] == {
        "summary": "Redis cache at 93.46%",
        "runbook_url": "https://wiki.example/rb#3",
        "dashboard": "http://mon:9820/status#cache",
        "impact": "Sessions may be evicted",
    }
    assert alerts["OnlyTheMap"] == {"summary": "half full (934.6m)", "runbook_url": "https://wiki.example/rb#map"}


def test_a_shorthand_and_the_same_annotation_in_the_map_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"`runbook:` and `annotations.runbook_url` say the same thing"):
        load_config_text(
            "rules:\n  - {alert: A, expr: x > 1, severity: P3, runbook: a, annotations: {runbook_url: b}}\n", env={}
        )


def test_an_annotation_name_must_be_a_label_name() -> None:
    cfg = load_config_text("rules:\n  - {alert: A, expr: x > 1, severity: P3, annotations: {bad-name: b}}\n", env={})
    with pytest.raises(ConfigError, match=r"rules\[0\]\.annotations\.bad-name: annotation name 'bad-name'"):
        compile_rules(cfg)


def test_export_writes_every_annotation_and_the_runbook_as_runbook_url() -> None:
    cfg = load_config_text(RULES, env={})
    first, second = prometheus_rules(cfg)["groups"][0]["rules"]
    assert first["annotations"] == {
        "summary": "Redis {{ $labels.check }} at {{ $value | humanizePercentage }}",
        "runbook_url": "https://wiki.example/rb#3",
        "dashboard": "{{ $externalURL }}/status#{{ $labels.check }}",
        "impact": "Sessions may be evicted",
    }
    assert second["annotations"] == {"summary": "half full ({{ humanize $value }})", "runbook_url": "https://wiki.example/rb#map"}
    assert yaml.safe_load(export_prometheus(cfg))["groups"][0]["rules"][0] == first


def _notification():
    n = make_notification()
    ann = {**n.alert.annotations, "dashboard": "http://mon:9820/status#cache", "impact": "Sessions may be evicted"}
    return replace(n, alert=replace(n.alert, annotations=ann))


def test_pagerduty_custom_details_carry_the_other_annotations() -> None:
    r = PagerDutyReceiver("oncall", pagerduty.Config(type="pagerduty", routing_key="R" * 32), ReceiverContext(host="h"))
    ev = r.event(_notification())
    assert ev is not None
    details = ev["payload"]["custom_details"]
    assert details["annotations"] == {"dashboard": "http://mon:9820/status#cache", "impact": "Sessions may be evicted"}
    assert details["runbook"] == "https://wiki.example/runbooks/incident-response#3-redis-connection-failures"
    assert ev["links"][0]["href"] == details["runbook"]
    plain = r.event(make_notification())
    assert plain is not None and "annotations" not in plain["payload"]["custom_details"]


def test_slack_shows_the_other_annotations_and_the_runbook_link() -> None:
    msg = message(_notification())
    texts = [b["text"]["text"] for b in msg["blocks"] if b["type"] == "section" and "text" in b]
    assert "*dashboard:* http://mon:9820/status#cache\n*impact:* Sessions may be evicted" in texts
    context = msg["blocks"][-1]["elements"][0]["text"]
    assert "<https://wiki.example/runbooks/incident-response#3-redis-connection-failures|Runbook>" in context


def test_webhook_and_alertmanager_annotations_are_the_rules_plus_ours() -> None:
    ann = alert_annotations(_notification(), "http://mon:9820")
    assert ann["dashboard"] == "http://mon:9820/status#cache" and ann["impact"] == "Sessions may be evicted"
    assert ann["runbook_url"] == "https://wiki.example/runbooks/incident-response#3-redis-connection-failures"
    assert "runbook" not in ann and ann["incident_id"] == "12"
    assert am_annotations is alert_annotations


def test_a_state_saved_with_the_old_runbook_key_still_links_the_runbook() -> None:
    n = make_notification()
    old = replace(n, alert=replace(n.alert, annotations={"summary": "s", "runbook": "https://wiki.example/rb"}))
    assert old.alert.runbook == "https://wiki.example/rb"
    ann = alert_annotations(old, None)
    assert ann["runbook_url"] == "https://wiki.example/rb" and "runbook" not in ann


async def test_the_daemons_external_url_is_externalurl_in_templates_also_after_a_reload(tmp_path) -> None:
    from monitor.alerting import Alerting
    from monitor.statedb import open_db

    text = f"""
state_dir: {tmp_path / "state"}
rules:
  - alert: A
    expr: portal_redis_memory_used_ratio > 0.9
    severity: P4
    annotations: {{page: "{{{{ $externalURL }}}}/status"}}
"""
    cfg = load_config_text(text, env={})
    sample = Sample("portal_redis_memory_used_ratio", {"check": "cache"}, 0.95)
    alerting = Alerting(
        open_db(cfg.root.state_dir), cfg, lambda: [sample], receivers={}, external_url="https://mon.example"
    )
    alerting.evaluate(T0)
    (st,) = alerting.state.alerts.values()
    assert st.alert.annotations == {"page": "https://mon.example/status"}
    await alerting.set_config(load_config_text(text.replace("/status", "/s"), env={}))
    alerting.evaluate(T0)
    (st,) = alerting.state.alerts.values()
    assert st.alert.annotations == {"page": "https://mon.example/s"}
