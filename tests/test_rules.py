"""The rule engine as a table of (samples, times) → transitions, with explicit datetimes."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from monitor.config.loader import ConfigError, load_config, load_config_text
from monitor.config.model import RuleConfig
from monitor.model import Sample, Transition
from monitor.rules.engine import (
    AlertStates,
    Rule,
    alert_rules,
    alert_samples,
    compile_rules,
    evaluate,
    fingerprint,
    firing,
    pending,
)

T0 = datetime(2025, 12, 1, 9, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parent.parent


def rule(expr: str = "portal_redis_up == 0", *, alert: str = "RedisDown", severity: str = "P1",
         for_: str = "0s", keep: str = "0s", **extra: object) -> Rule:
    cfg = RuleConfig.model_validate({"alert": alert, "expr": expr, "for": for_, "keep_firing_for": keep,
                                     "severity": severity, **extra})
    return Rule.from_config(cfg)


def up(value: float, check: str = "cache") -> list[Sample]:
    return [Sample("portal_redis_up", {"check": check}, value)]


def run(rules: Sequence[Rule], steps: Sequence[tuple[float, list[Sample]]], state: AlertStates | None = None
        ) -> tuple[AlertStates, list[tuple[float, str, str]]]:
    """Evaluate at T0 + seconds for each step; return the final state and (seconds, state, fingerprint)."""
    state = state or AlertStates()
    seen: list[tuple[float, str, str]] = []
    for seconds, samples in steps:
        state, transitions = evaluate(rules, samples, state, T0 + timedelta(seconds=seconds))
        seen.extend((seconds, t.state, t.alert.labels.get("check", "")) for t in transitions)
    return state, seen


# ---------------------------------------------------------------- for / keep_firing_for


def test_fires_only_after_for_duration() -> None:
    r = rule(for_="1m")
    _, seen = run([r], [(0, up(0)), (30, up(0)), (59, up(0)), (60, up(0)), (70, up(0))])
    assert seen == [(0, "pending", "cache"), (60, "firing", "cache")]


def test_for_zero_fires_on_the_first_evaluation_with_one_transition() -> None:
    state, transitions = evaluate([rule()], up(0), AlertStates(), T0)
    assert [(t.state, t.at, t.active_since) for t in transitions] == [("firing", T0, T0)]
    assert [a.name for a in firing(state)] == ["RedisDown"]


def test_pending_that_clears_disappears_without_a_transition() -> None:
    state, seen = run([rule(for_="1m")], [(0, up(0)), (30, up(1)), (90, up(1))])
    assert seen == [(0, "pending", "cache")]
    assert len(state) == 0


def test_resolves_on_the_first_false_evaluation_without_keep_firing_for() -> None:
    _, seen = run([rule()], [(0, up(0)), (10, up(0)), (20, up(1)), (30, up(1))])
    assert seen == [(0, "firing", "cache"), (20, "resolved", "cache")]


def test_a_series_that_disappears_from_an_answering_check_is_no_data_not_resolved() -> None:
    """The no-data policies in detail: tests/test_rules_no_data.py."""
    answered = [Sample("portal_check_up", {"check": "cache", "type": "redis"}, 1)]
    state, seen = run([rule()], [(0, up(0) + answered), (10, answered)])
    assert seen == [(0, "firing", "cache")]
    assert [a.no_data_since for a in firing(state)] == [T0 + timedelta(seconds=10)]
    _, seen = run([rule(no_data="resolve")], [(0, up(0) + answered), (10, answered)])
    assert seen == [(0, "firing", "cache"), (10, "resolved", "cache")]


def test_a_series_of_no_running_check_that_disappears_resolves_as_in_prometheus() -> None:
    _, seen = run([rule()], [(0, up(0)), (10, [])])
    assert seen == [(0, "firing", "cache"), (10, "resolved", "cache")]


STALL = "portal_sf_replay_stalled_seconds > 1800"


def stalled(seconds: float, *, check_up: float = 1) -> list[Sample]:
    return [Sample("portal_sf_replay_stalled_seconds", {"check": "cache", "channel": "orders"}, seconds),
            Sample("portal_check_up", {"check": "cache", "type": "redis"}, check_up)]


def check_down() -> list[Sample]:
    """What a failed redis check leaves: `up` 0, and none of its other series."""
    return [Sample("portal_check_up", {"check": "cache", "type": "redis"}, 0)]


def test_a_firing_alert_of_a_failed_check_stays_firing_until_the_check_answers() -> None:
    r = rule(STALL, alert="PlatformEventsStalled", severity="P2")
    _, seen = run([r], [(0, stalled(1900)), (10, check_down()), (600, check_down()), (610, stalled(2500)),
                        (620, stalled(0))])
    assert seen == [(0, "firing", "cache"), (620, "resolved", "cache")]


def test_a_pending_alert_of_a_failed_check_keeps_its_timer_and_fires_once_seen_again() -> None:
    r = rule(STALL, alert="PlatformEventsStalled", severity="P2", for_="5m")
    state, seen = run([r], [(0, stalled(1900)), (60, check_down()), (400, check_down())])
    assert seen == [(0, "pending", "cache")] and pending(state)  # not fired blind
    _, seen = run([r], [(410, stalled(2300))], state)
    assert seen == [(410, "firing", "cache")]


def test_a_failed_check_that_still_reports_the_series_resolves_it() -> None:
    """A /health answering 503 for the database still says the cache is fine again."""
    r = rule('portal_http_component_up == 0', alert="IntegrationDegraded", severity="P3")

    def health(cache: float) -> list[Sample]:
        return [Sample("portal_http_component_up", {"check": "bff", "component": "cache"}, cache),
                Sample("portal_http_component_up", {"check": "bff", "component": "database"}, 0),
                Sample("portal_check_up", {"check": "bff", "type": "http"}, 0)]
    _, seen = run([r], [(0, health(0)), (10, health(1))])
    assert [(t, s) for t, s, _ in seen] == [(0, "firing"), (0, "firing"), (10, "resolved")]


def test_a_failed_check_does_not_hold_other_checks_alerts_or_a_deleted_rules() -> None:
    r = rule(STALL, alert="PlatformEventsStalled", severity="P2", no_data="resolve")
    other = [Sample("portal_check_up", {"check": "db", "type": "postgres"}, 0)]
    _, seen = run([r], [(0, stalled(1900)), (10, other)])  # the cache check answered: its series are gone
    assert seen == [(0, "firing", "cache"), (10, "resolved", "cache")]
    state, _ = run([r], [(0, stalled(1900))])
    _, seen = run([], [(10, check_down())], state)  # the rule was deleted by a reload
    assert seen == [(10, "resolved", "cache")]


def test_keep_firing_for_counts_from_the_first_false_evaluation() -> None:
    """As Prometheus: kept while now - first_false < keep_firing_for."""
    _, seen = run([rule(keep="1m")], [(0, up(0)), (10, up(1)), (40, up(1)), (69, up(1)), (70, up(1))])
    assert seen == [(0, "firing", "cache"), (70, "resolved", "cache")]


def test_flapping_condition_with_keep_firing_for_pages_once() -> None:
    """Down/up every 10 s for 10 minutes: one firing, and one resolve a minute after it settles."""
    steps = [(float(s), up(0 if (s // 10) % 2 == 0 else 1)) for s in range(0, 600, 10)]
    steps += [(float(s), up(1)) for s in range(600, 700, 10)]
    _, seen = run([rule(keep="1m")], steps)
    assert seen == [(0, "firing", "cache"), (650, "resolved", "cache")]


def test_flapping_condition_without_keep_firing_for_pages_every_time() -> None:
    """The contrast: this is the noise keep_firing_for removes."""
    steps = [(float(s), up(0 if (s // 10) % 2 == 0 else 1)) for s in range(0, 100, 10)]
    _, seen = run([rule()], steps)
    assert [s for _, s, _ in seen].count("firing") == 5


def test_true_again_during_keep_firing_for_stays_one_alert() -> None:
    state, seen = run([rule(keep="1m")], [(0, up(0)), (10, up(1)), (50, up(0)), (60, up(1)), (115, up(1))])
    assert seen == [(0, "firing", "cache")]
    assert list(state.alerts.values())[0].keep_firing_since == T0 + timedelta(seconds=60)


def test_blip_shorter_than_for_never_fires() -> None:
    _, seen = run([rule(for_="1m")], [(0, up(0)), (50, up(0)), (60, up(1)), (70, up(0))])
    assert [s for _, s, _ in seen] == ["pending", "pending"]


# ---------------------------------------------------------------- series, labels, annotations


def test_each_matching_series_is_its_own_alert() -> None:
    """One channel recovers while another stalls: per-series alerts, fired and resolved separately."""
    r = rule("portal_sf_replay_stalled_seconds > 1800", alert="PlatformEventsStalled", severity="P2",
             vendor="Salesforce")

    def stalled(a: float, b: float) -> list[Sample]:
        return [Sample("portal_sf_replay_stalled_seconds", {"check": "cache", "channel": "A"}, a),
                Sample("portal_sf_replay_stalled_seconds", {"check": "cache", "channel": "B"}, b)]

    state = AlertStates()
    state, t1 = evaluate([r], stalled(2000, 10), state, T0)
    state, t2 = evaluate([r], stalled(10, 2000), state, T0 + timedelta(minutes=1))
    assert [(t.state, t.alert.labels["channel"]) for t in t1] == [("firing", "A")]
    assert sorted((t.state, t.alert.labels["channel"]) for t in t2) == [("firing", "B"), ("resolved", "A")]
    assert [a.labels["channel"] for a in firing(state)] == ["B"]


def test_alert_labels_annotations_and_vendor() -> None:
    r = rule("portal_sf_replay_stalled_seconds > 1800", alert="PlatformEventsStalled", severity="P2",
             vendor="Salesforce", labels={"team": "portal", "check": "overridden"},
             summary="No event on {{ $labels.channel }} for {{ $value }}s ({{ $labels.team }})",
             description="check {{ $labels.check }}",
             runbook="https://wiki.example/runbooks/incident-response#1-salesforce-platform-events-not-receiving")
    sample = Sample("portal_sf_replay_stalled_seconds", {"check": "cache", "channel": "/event/X"}, 2120.0)
    _, (t,) = evaluate([r], [sample], AlertStates(), T0)
    assert dict(t.alert.labels) == {
        "check": "overridden", "channel": "/event/X", "team": "portal",
        "alertname": "PlatformEventsStalled", "severity": "P2", "vendor": "Salesforce",
    }
    # templates see the series' labels, as in Prometheus (team is a rule label: empty)
    assert dict(t.alert.annotations) == {
        "summary": "No event on /event/X for 2120s ()",
        "description": "check cache",
        "runbook_url": "https://wiki.example/runbooks/incident-response#1-salesforce-platform-events-not-receiving",
    }
    assert (t.alert.severity, t.alert.vendor, t.alert.value) == ("P2", "Salesforce", 2120.0)
    assert t.alert.fingerprint == fingerprint("PlatformEventsStalled", t.alert.labels)


def test_annotations_follow_the_current_value_without_a_transition() -> None:
    r = rule("m > 1", alert="High", summary="at {{ $value }}")
    state, _ = evaluate([r], [Sample("m", {}, 2)], AlertStates(), T0)
    state, transitions = evaluate([r], [Sample("m", {}, 3)], state, T0 + timedelta(seconds=1))
    assert transitions == []
    assert firing(state)[0].annotations["summary"] == "at 3"


def test_fingerprint_is_stable_across_hosts_and_label_order() -> None:
    a = fingerprint("RedisDown", {"alertname": "RedisDown", "check": "cache", "severity": "P1"})
    b = fingerprint("RedisDown", {"severity": "P1", "check": "cache", "alertname": "RedisDown"})
    # pinned (= sha256 of '["RedisDown",[["alertname","RedisDown"],["check","cache"],["severity","P1"]]]'):
    # a change would re-page every open incident after an upgrade
    assert a == b == "4fa8c8fba99045c3be3b0da173ac1fd5"
    assert len(a) == 32
    assert fingerprint("RedisDown", {"alertname": "RedisDown", "check": "other", "severity": "P1"}) != a


def test_two_rules_with_the_same_labels_share_one_alert() -> None:
    first = rule("portal_redis_up == 0", summary="first")
    second = rule("portal_redis_up < 1", summary="second")
    state, transitions = evaluate([first, second], up(0), AlertStates(), T0)
    assert len(transitions) == 1 and len(state) == 1
    assert firing(state)[0].annotations["summary"] == "first"


def test_evaluate_does_not_change_the_state_it_was_given() -> None:
    before = AlertStates()
    after, _ = evaluate([rule()], up(0), before, T0)
    assert len(before) == 0 and len(after) == 1


def test_absent_rule_fires_with_the_selector_labels() -> None:
    r = rule('absent(portal_redis_up{check="cache"})', alert="RedisCheckMissing", severity="P4")
    _, (t,) = evaluate([r], [], AlertStates(), T0)
    assert dict(t.alert.labels) == {"check": "cache", "alertname": "RedisCheckMissing", "severity": "P4"}
    _, transitions = evaluate([r], up(1), AlertStates(), T0)
    assert transitions == []


# ---------------------------------------------------------------- state across restarts and reloads


def test_state_round_trips_through_json() -> None:
    r = rule("m > 0", alert="Odd", for_="1m", summary="v={{ $value }}")
    state, _ = evaluate([r, rule()], [Sample("m", {"k": "é"}, math.inf), *up(0)], AlertStates(), T0)
    text = json.dumps(state.to_json())
    restored = AlertStates.from_json(json.loads(text))
    assert restored == state
    assert math.isinf(pending(restored)[0].value)


def test_restored_pending_keeps_active_since_so_for_is_not_restarted() -> None:
    r = rule(for_="5m")
    state, _ = evaluate([r], up(0), AlertStates(), T0)
    restored = AlertStates.from_json(json.loads(json.dumps(state.to_json())))  # the daemon restarts
    _, transitions = evaluate([r], up(0), restored, T0 + timedelta(minutes=5))
    assert [(t.state, t.active_since) for t in transitions] == [("firing", T0)]


def test_restored_firing_alert_neither_repages_nor_forgets_to_resolve() -> None:
    r = rule()
    state, _ = evaluate([r], up(0), AlertStates(), T0)
    restored = AlertStates.from_json(json.loads(json.dumps(state.to_json())))
    still, transitions = evaluate([r], up(0), restored, T0 + timedelta(minutes=3))
    assert transitions == []
    _, transitions = evaluate([r], up(1), still, T0 + timedelta(minutes=4))
    assert [(t.state, t.active_since) for t in transitions] == [("resolved", T0)]


def test_long_outage_restarts_for_but_keeps_firing_alerts_firing() -> None:
    """Away longer than the outage tolerance (1h): pending alerts count `for` again."""
    slow, fast = rule(for_="5m", alert="Slow"), rule(alert="Fast")
    state, _ = evaluate([slow, fast], up(0), AlertStates(), T0)
    later = T0 + timedelta(hours=2)
    state, transitions = evaluate([slow, fast], up(0), state, later)
    assert transitions == []
    assert [a.name for a in pending(state)] == ["Slow"] and [a.name for a in firing(state)] == ["Fast"]
    _, transitions = evaluate([slow, fast], up(0), state, later + timedelta(minutes=5))
    assert [(t.alert.name, t.state, t.active_since) for t in transitions] == [("Slow", "firing", later)]


def test_deleted_rule_resolves_its_firing_alerts_and_drops_pending_ones() -> None:
    gone, waiting = rule(keep="1h"), rule(alert="Waiting", for_="1h")
    state, _ = evaluate([gone, waiting], up(0), AlertStates(), T0)
    state, transitions = evaluate([], up(0), state, T0 + timedelta(seconds=10))
    assert [(t.alert.name, t.state) for t in transitions] == [("RedisDown", "resolved")]
    assert len(state) == 0


def test_edited_expression_that_still_matches_keeps_the_alert() -> None:
    state, _ = evaluate([rule("portal_redis_up == 0")], up(0), AlertStates(), T0)
    _, transitions = evaluate([rule("portal_redis_up < 0.5")], up(0), state, T0 + timedelta(seconds=10))
    assert transitions == []


def test_from_json_refuses_unknown_versions_and_broken_items() -> None:
    with pytest.raises(ValueError, match="version"):
        AlertStates.from_json({"version": 99, "alerts": []})
    with pytest.raises(ValueError, match=r"alerts\[0\]"):
        AlertStates.from_json({"version": 1, "alerts": [{"state": "firing"}]})


def test_alert_samples_count_by_name_severity_and_state() -> None:
    r = rule("portal_redis_up == 0", for_="1m")
    state, _ = evaluate([r, rule(alert="Now")], up(0, "a") + up(0, "b"), AlertStates(), T0)
    assert [(s.labels["alertname"], s.labels["state"], s.value) for s in alert_samples(state)] == [
        ("Now", "firing", 2.0), ("RedisDown", "pending", 2.0)]


def test_transitions_are_model_transitions() -> None:
    _, (t,) = evaluate([rule()], up(0), AlertStates(), T0)
    assert isinstance(t, Transition)


# ---------------------------------------------------------------- compiling the config


def test_compile_reports_every_bad_rule_not_only_the_first() -> None:
    text = """
rules:
  - {alert: A, expr: "x[5m]", severity: P1}
  - {alert: B, expr: "x > 1", severity: P2, summary: "{{ .Nope }}"}
  - {alert: C, expr: "x >", severity: P3, labels: {alertname: X, "bad-name": y}}
  - {alert: D, expr: "x > 1", severity: P4}
"""
    cfg = load_config_text(text, name="bad.yaml", env={})
    with pytest.raises(ConfigError) as info:
        compile_rules(cfg)
    keys = [line.split(": ")[1] for line in info.value.errors]
    assert keys == ["rules[0].expr", "rules[1].summary", "rules[2].expr",
                    "rules[2].labels", "rules[2].labels"]
    assert all(line.startswith("bad.yaml:") for line in info.value.errors)


def test_shipped_rules_compile_and_cover_the_runbook() -> None:
    """Every scenario of the runbook has its rule, with severity, summary, steps and a runbook anchor."""
    cfg = load_config(ROOT / "alert_rules.yaml", env={})
    rules = alert_rules(compile_rules(cfg))  # the recording rules feed them: no severity, no page
    severities = {r.alert: r.severity for r in rules}
    assert severities == {
        "PortalUnreachable": "P1", "DatabaseDown": "P1", "RedisDown": "P1", "LoginFailureSpike": "P1",
        "PlatformEventsStalled": "P2", "PlatformEventsReplayKeysMissing": "P2", "WhmcsUnavailable": "P2",
        "DatabaseConnectionsSaturated": "P2",
        "HighErrorRate": "P3", "SlowResponses": "P3", "RedisMemoryHigh": "P3", "RedisMemoryFullSoon": "P3",
        "LongRunningQuery": "P3",
        "IntegrationDegraded": "P3", "DatabaseConnectionsHigh": "P3",
        "MonitorCheckFailing": "P4", "NotificationDeliveryFailing": "P4", "ConfigReloadFailed": "P4",
    }
    anchors = {  # the headings of RUNBOOK.md, as GitHub slugs them
        "1-salesforce-platform-events-not-receiving", "2-whmcs-api-unavailable",
        "3-redis-connection-failures", "4-database-connection-issues",
        "5-high-error-rate--performance-degradation", "6-security-incident",
        "incident-response-workflow",
    }
    for r in rules:
        runbook = r.annotations["runbook_url"].text
        assert runbook.startswith("https://wiki.example/runbooks/incident-response#"), r.alert
        assert runbook.split("#", 1)[1] in anchors, r.alert
        assert r.annotations["summary"].text, r.alert
        assert "\n1. " in r.annotations["description"].text, r.alert  # the runbook's first steps
    vendors = {r.alert: r.vendor for r in rules if r.vendor}
    assert vendors == {"PlatformEventsStalled": "Salesforce", "PlatformEventsReplayKeysMissing": "Salesforce",
                       "WhmcsUnavailable": "WHMCS"}
    by_name = {r.alert: r for r in rules}
    assert by_name["PortalUnreachable"].for_s == 60
    assert by_name["PlatformEventsStalled"].for_s == 0  # the latch is the wait
    assert by_name["DatabaseDown"].for_s == 30
    assert by_name["WhmcsUnavailable"].for_s == 120
    assert "token blacklist" in by_name["RedisDown"].annotations["description"].text
