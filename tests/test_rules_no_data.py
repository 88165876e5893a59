"""No data is not "resolved": the rule engine's `no_data` policies (keep, resolve, alert), the
no-data timeout, pending alerts without data, restarts, and reloads that remove or change a
rule. Pure: explicit datetimes, no clock."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from monitor.config.loader import load_config_text
from monitor.config.model import RuleConfig
from monitor.model import Sample, Transition
from monitor.rules.engine import (
    NO_DATA_ALERT,
    AlertStates,
    Rule,
    compile_rules,
    evaluate,
    firing,
    no_data_samples,
    pending,
)

T0 = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)
STALL = "portal_sf_replay_stalled_seconds > 1800"
ORDERS = "/event/OrderProvisionRequested__e"


def rule(expr: str = STALL, *, alert: str = "PlatformEventsStalled", severity: str = "P2", for_: str = "0s",
         keep: str = "0s", **extra: object) -> Rule:
    cfg = RuleConfig.model_validate({"alert": alert, "expr": expr, "for": for_, "keep_firing_for": keep,
                                     "severity": severity, **extra})
    return Rule.from_config(cfg)


def check_up(value: float = 1, check: str = "cache") -> Sample:
    return Sample("portal_check_up", {"check": check, "type": "redis"}, value)


def stalled(seconds: float) -> list[Sample]:
    """The redis check's answer with ORDERS' stall clock."""
    return [Sample("portal_sf_replay_stalled_seconds", {"check": "cache", "channel": ORDERS}, seconds), check_up()]


KEYS_GONE = [Sample("portal_sf_replay_keys", {"check": "cache"}, 0), check_up()]  # Redis restarted empty
CHECK_DOWN = [check_up(0)]


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def run(rules: Sequence[Rule], steps: Sequence[tuple[float, list[Sample]]], state: AlertStates | None = None
        ) -> tuple[AlertStates, list[tuple[float, str, str, str]]]:
    """Evaluate at T0 + minutes for each step: the final state and (minutes, alert, state, reason)."""
    state = state or AlertStates()
    seen: list[tuple[float, str, str, str]] = []
    for minutes, samples in steps:
        state, transitions = evaluate(rules, samples, state, at(minutes))
        seen.extend((minutes, t.alert.name, t.state, t.reason) for t in transitions)
    return state, seen


WHY = f'check cache answered without portal_sf_replay_stalled_seconds{{channel="{ORDERS}"}}'


# ---------------------------------------------------------------- telling no data from "false"


def test_condition_false_on_present_data_resolves_as_a_fix() -> None:
    _, seen = run([rule()], [(0, stalled(1900)), (1, stalled(0))])
    assert seen == [(0, "PlatformEventsStalled", "firing", ""), (1, "PlatformEventsStalled", "resolved", "")]


# ---------------------------------------------------------------- keep (the default)


def test_keep_a_firing_alert_whose_series_vanished_stays_firing_marked_since_and_why() -> None:
    state, seen = run([rule()], [(0, stalled(1900)), (1, KEYS_GONE), (30, KEYS_GONE)])
    assert seen == [(0, "PlatformEventsStalled", "firing", "")]
    (alert,) = firing(state)
    assert alert.no_data_since == at(1) and alert.no_data_why == WHY
    assert alert.no_data == f"no data since 2026-03-02T14:01:00+00:00 ({WHY})"
    assert [(s.labels["alertname"], s.value) for s in no_data_samples(state)] == [("PlatformEventsStalled", 1.0)]


def test_keep_series_back_with_the_condition_true_clears_the_mark_without_a_transition() -> None:
    state, seen = run([rule()], [(0, stalled(1900)), (1, KEYS_GONE), (2, stalled(2000))])
    assert seen == [(0, "PlatformEventsStalled", "firing", "")]
    assert [a.no_data_since for a in firing(state)] == [None] and no_data_samples(state) == []


def test_keep_series_back_with_the_condition_false_resolves_as_a_fix() -> None:
    _, seen = run([rule()], [(0, stalled(1900)), (1, KEYS_GONE), (20, stalled(0))])
    assert seen == [(0, "PlatformEventsStalled", "firing", ""), (20, "PlatformEventsStalled", "resolved", "")]


def test_keep_closes_after_no_data_timeout_saying_so() -> None:
    state, seen = run([rule()], [(0, stalled(1900)), (1, KEYS_GONE), (60.9, KEYS_GONE), (61, KEYS_GONE)])
    assert seen == [(0, "PlatformEventsStalled", "firing", ""),
                    (61, "PlatformEventsStalled", "resolved", "closed: no data for 1h")]
    assert len(state) == 0


def test_no_data_timeout_per_rule_and_from_defaults() -> None:
    _, seen = run([rule(no_data_timeout="10m")], [(0, stalled(1900)), (1, KEYS_GONE), (11, KEYS_GONE)])
    assert seen[-1] == (11, "PlatformEventsStalled", "resolved", "closed: no data for 10m")
    cfg = load_config_text(
        "defaults: {no_data: keep, no_data_timeout: 2h}\n"
        f"rules:\n  - {{alert: S, expr: '{STALL}', severity: P2}}\n"
        f"  - {{alert: R, expr: '{STALL}', severity: P2, no_data: resolve, no_data_timeout: 5m}}\n", env={})
    s, r = compile_rules(cfg)
    assert (s.no_data, s.no_data_timeout_s, r.no_data, r.no_data_timeout_s) == ("keep", 7200.0, "resolve", 300.0)
    assert (rule().no_data, rule().no_data_timeout_s) == ("keep", 3600.0)  # without defaults: keep, 1h


def test_an_invalid_policy_is_a_positioned_config_error() -> None:
    from monitor.config.loader import ConfigError
    with pytest.raises(ConfigError, match=r"rules\[0\]\.no_data"):
        load_config_text(f"rules:\n  - {{alert: S, expr: '{STALL}', severity: P2, no_data: ignore}}\n", env={})


def test_pending_without_data_stays_pending_then_goes_silently_at_the_timeout() -> None:
    r = rule(for_="5m")
    state, seen = run([r], [(0, stalled(1900)), (1, KEYS_GONE), (10, KEYS_GONE)])
    assert seen == [(0, "PlatformEventsStalled", "pending", "")]  # `for` did not advance: not fired blind
    (p,) = pending(state)
    assert p.no_data_since == at(1)
    state, seen = run([r], [(61, KEYS_GONE)], state)
    assert seen == [] and len(state) == 0
    state, seen = run([r], [(0, stalled(1900)), (1, KEYS_GONE), (3, stalled(2000)), (5, stalled(2100))])
    assert seen == [(0, "PlatformEventsStalled", "pending", ""), (5, "PlatformEventsStalled", "firing", "")]


def test_a_failed_check_keeps_its_alerts_as_they_were_without_a_timeout() -> None:
    state, seen = run([rule()], [(0, stalled(1900)), (1, CHECK_DOWN), (300, CHECK_DOWN)])
    assert seen == [(0, "PlatformEventsStalled", "firing", "")]
    assert [a.no_data_since for a in firing(state)] == [None]  # unknown (RedisDown says why), not missing


def test_keep_firing_for_started_on_present_data_still_ends_as_a_fix() -> None:
    """Known false before the series went: keep_firing_for runs out and it resolves."""
    _, seen = run([rule(keep="5m")], [(0, stalled(1900)), (1, stalled(0)), (2, KEYS_GONE), (6, KEYS_GONE)])
    assert seen == [(0, "PlatformEventsStalled", "firing", ""), (6, "PlatformEventsStalled", "resolved", "")]


def test_a_check_that_no_longer_runs_resolves_its_alerts_saying_so() -> None:
    """Removed by a reload (or promtool-style input without portal_check_up): nothing will ever
    answer for the series, so it resolves as in Prometheus, after keep_firing_for, with why."""
    _, seen = run([rule(keep="5m")], [(0, stalled(1900)), (1, [check_up(1, "db")]), (6, [check_up(1, "db")])])
    assert seen == [(0, "PlatformEventsStalled", "firing", ""),
                    (6, "PlatformEventsStalled", "resolved", "closed: no data (check cache no longer runs)")]


def test_a_series_of_the_daemon_itself_resolves_when_gone() -> None:
    r = rule("portal_monitor_receiver_failing == 1", alert="NotificationDeliveryFailing", severity="P4")
    failing = [Sample("portal_monitor_receiver_failing", {"receiver": "chat"}, 1)]
    _, seen = run([r], [(0, failing), (1, [])])  # the receiver was removed by a reload
    assert seen == [(0, "NotificationDeliveryFailing", "firing", ""),
                    (1, "NotificationDeliveryFailing", "resolved",
                     'closed: no data (portal_monitor_receiver_failing{receiver="chat"} is no longer reported)')]


# ---------------------------------------------------------------- resolve


def test_resolve_closes_at_once_saying_no_data() -> None:
    _, seen = run([rule(no_data="resolve")], [(0, stalled(1900)), (1, KEYS_GONE)])
    assert seen == [(0, "PlatformEventsStalled", "firing", ""),
                    (1, "PlatformEventsStalled", "resolved", f"closed: no data ({WHY})")]


def test_resolve_after_keep_firing_for() -> None:
    _, seen = run([rule(no_data="resolve", keep="5m")], [(0, stalled(1900)), (1, KEYS_GONE), (5, KEYS_GONE),
                                                          (6, KEYS_GONE)])
    assert seen[1:] == [(6, "PlatformEventsStalled", "resolved", f"closed: no data ({WHY})")]


# ---------------------------------------------------------------- alert (DatasourceNoData)


def test_alert_raises_datasource_no_data_beside_the_kept_alert_until_the_data_is_back() -> None:
    r = rule(no_data="alert", vendor="Salesforce")
    state, seen = run([r], [(0, stalled(1900)), (1, KEYS_GONE)])
    assert seen == [(0, "PlatformEventsStalled", "firing", ""), (1, NO_DATA_ALERT, "firing", "")]
    kept, nd = sorted(firing(state), key=lambda a: a.name != "PlatformEventsStalled")
    assert kept.no_data_since == at(1)
    assert nd.labels == {"alertname": NO_DATA_ALERT, "rulename": "PlatformEventsStalled", "severity": "P2",
                         "check": "cache", "channel": ORDERS}  # no vendor: missing data is ours, not Salesforce's
    assert nd.vendor is None and nd.severity == "P2"
    assert nd.annotations["summary"] == f"No data for PlatformEventsStalled (channel={ORDERS}, check=cache): {WHY}"
    state, seen = run([r], [(2, KEYS_GONE)], state)
    assert seen == []  # one DatasourceNoData, not one per evaluation
    _, seen = run([r], [(3, stalled(2000))], state)
    assert seen == [(3, NO_DATA_ALERT, "resolved", "")]  # the data is back: true


def test_alert_closes_both_at_the_timeout() -> None:
    _, seen = run([rule(no_data="alert")], [(0, stalled(1900)), (1, KEYS_GONE), (61, KEYS_GONE)])
    assert sorted(seen[2:]) == [(61, NO_DATA_ALERT, "resolved", "closed: no data for 1h"),
                                (61, "PlatformEventsStalled", "resolved", "closed: no data for 1h")]


def test_alert_is_not_raised_for_a_pending_alert() -> None:
    state, seen = run([rule(no_data="alert", for_="5m")], [(0, stalled(1900)), (1, KEYS_GONE)])
    assert seen == [(0, "PlatformEventsStalled", "pending", "")] and firing(state) == []


# ---------------------------------------------------------------- restarts


def restart(state: AlertStates) -> AlertStates:
    return AlertStates.from_json(json.loads(json.dumps(state.to_json())))


def test_the_no_data_mark_and_its_clock_survive_a_restart() -> None:
    state, _ = run([rule(no_data="alert")], [(0, stalled(1900)), (1, KEYS_GONE)])
    restored = restart(state)
    assert restored == state
    state, seen = run([rule(no_data="alert")], [(30, KEYS_GONE)], restored)
    assert seen == []  # nothing re-fired, nothing resolved
    _, seen = run([rule(no_data="alert")], [(61, KEYS_GONE)], state)
    assert sorted(s[1:] for s in seen) == [(NO_DATA_ALERT, "resolved", "closed: no data for 1h"),
                                           ("PlatformEventsStalled", "resolved", "closed: no data for 1h")]


def test_a_version_1_state_file_still_loads_and_its_alert_is_kept_without_data() -> None:
    state, _ = run([rule()], [(0, stalled(1900))])
    old = state.to_json()
    old["version"] = 1
    for item in old["alerts"]:
        for key in ("expr", "no_data_of", "no_data_since", "no_data_why"):
            del item[key]
    restored = AlertStates.from_json(old)
    state, seen = run([rule()], [(1, KEYS_GONE)], restored)
    assert seen == [] and firing(state)[0].no_data_since == at(1)


# ---------------------------------------------------------------- reloads


def test_a_removed_rule_closes_saying_so() -> None:
    state, _ = run([rule()], [(0, stalled(1900))])
    _, seen = run([], [(1, stalled(1900))], state)
    assert seen == [(1, "PlatformEventsStalled", "resolved", "closed: rule removed by reload")]
    _, seen = run([rule(alert="Renamed")], [(1, stalled(1900))], state)
    assert sorted(seen) == [(1, "PlatformEventsStalled", "resolved", "closed: rule removed by reload"),
                            (1, "Renamed", "firing", "")]


def test_a_rule_changed_so_it_no_longer_makes_the_alert_closes_saying_so() -> None:
    state, _ = run([rule()], [(0, stalled(1900))])
    _, seen = run([rule(severity="P1")], [(1, stalled(1900))], state)  # relabelled: a new alert
    assert sorted(seen) == [(1, "PlatformEventsStalled", "firing", ""),
                            (1, "PlatformEventsStalled", "resolved", "closed: rule changed by reload")]
    other = 'portal_sf_replay_stalled_seconds{channel="/event/Other__e"} > 1800'
    _, seen = run([rule(other)], [(1, stalled(1900))], state)  # no longer reads the series
    assert seen == [(1, "PlatformEventsStalled", "resolved", "closed: rule changed by reload")]


def test_transitions_carry_no_reason_by_default() -> None:
    t = Transition(alert=firing(run([rule()], [(0, stalled(1900))])[0])[0], state="resolved", at=T0, active_since=T0)
    assert t.reason == ""
