"""The matrix's config is the shipped one with its clock shrunk, and nothing else changed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from monitor.config.loader import load_config_text
from monitor.rules.promql.parse import Binary, MatrixSel, Node, NumberLit, Subquery, parse, walk
from tests.faults.derive import (
    CHECK_TIMEOUT_S,
    INTERVAL_FLOOR_S,
    NEEDS_REPLAY_KEYS,
    RANGE_FLOOR_S,
    SCALE,
    WINDOW_FLOOR_S,
    derive,
    load_shipped,
    scale_expr,
)
from tests.faults.exprtext import to_text
from tests.faults.pages import LEAD_KEY, ONCALL_KEY

ENV = {
    "WHMCS_API_URL": "http://127.0.0.1:1/includes/api.php", "WHMCS_API_IDENTIFIER": "id", "WHMCS_API_SECRET": "s",
    "PAGERDUTY_ROUTING_KEY": ONCALL_KEY, "PAGERDUTY_LEAD_ROUTING_KEY": LEAD_KEY,
    "MANAGEMENT_WEBHOOK_URL": "http://127.0.0.1:1/hook", "VENDOR_WEBHOOK_URL": "http://127.0.0.1:1/hook",
    "BFF_LOG_DIR": "/tmp/bff-logs",
}


def load(data: dict) -> object:  # type: ignore[type-arg]
    return load_config_text(yaml.safe_dump(data, sort_keys=False), env=ENV)


def ranges(expr: str) -> list[int]:
    """Every range (ms) in the expression, in the order written."""
    return [n.range for n in walk(parse(expr).root) if isinstance(n, (MatrixSel, Subquery))]


def thresholds(expr: str) -> list[str]:
    """Every comparison with a number, as `<the other side> <op> <number>` in the order written
    (the other side's ranges as `[]`: `ranges()` compares them)."""
    def side(n: Node) -> str:
        return re.sub(r"\[[0-9ms:]+\]", "[]", to_text(n))
    out = []
    for n in walk(parse(expr).root):
        if isinstance(n, Binary) and n.op in (">", ">=", "<", "<=", "==", "!="):
            if isinstance(n.rhs, NumberLit):
                out.append(f"{side(n.lhs)} {n.op} {n.rhs.value:g}")
            elif isinstance(n.lhs, NumberLit):
                out.append(f"{n.lhs.value:g} {n.op} {side(n.rhs)}")
    return out

# The comparisons of the shipped file that are elapsed time: their numbers are divided.
ELAPSED_THRESHOLDS = {
    "portal_sf_replay_stalled_seconds > 1800": f"portal_sf_replay_stalled_seconds > {1800 / SCALE:g}",
    "portal_postgres_longest_query_seconds > 300": f"portal_postgres_longest_query_seconds > {300 / SCALE:g}",
}


def test_every_timer_of_the_shipped_file_is_divided_by_the_scale(tmp_path: Path) -> None:
    shipped_data = load_shipped()
    derived_data, _notes = derive(shipped_data, pagerduty_url="http://127.0.0.1:1/v2/enqueue", log_dir=tmp_path,
                                  platform_events=True)
    shipped, derived = load(shipped_data).root, load(derived_data).root  # type: ignore[attr-defined]
    assert [r.name for r in derived.rules] == [r.name for r in shipped.rules]
    assert {r.record for r in shipped.rules} >= {"portal:sf_replay_stalled_since", "portal:log_errors:increase15m"}
    scaled = set()
    for s, d in zip(shipped.rules, derived.rules, strict=True):
        assert d.mute_time_intervals == [], s.name  # wall-clock hours: off in the matrix
        assert d.for_ == pytest.approx(s.for_ / SCALE, abs=0.001), s.name
        assert d.keep_firing_for == pytest.approx(s.keep_firing_for / SCALE, abs=0.001), s.name
        assert (d.severity, d.vendor, d.labels, d.summary, d.description) == \
            (s.severity, s.vendor, s.labels, s.summary, s.description)
        assert ranges(d.expr) == [max(round(r / SCALE), round(RANGE_FLOOR_S * 1000))
                                       for r in ranges(s.expr)], s.name
        expected = [ELAPSED_THRESHOLDS.get(t, t) for t in thresholds(s.expr)]
        assert thresholds(d.expr) == expected, s.name
        scaled |= set(thresholds(s.expr)) & set(ELAPSED_THRESHOLDS)
        if not ranges(s.expr) and expected == thresholds(s.expr) and "predict_linear" not in s.expr:
            assert d.expr == s.expr, s.name  # nothing in time: the shipped text itself
    assert scaled == set(ELAPSED_THRESHOLDS)  # each elapsed threshold is in the shipped file
    for s_step, d_step in zip(shipped.escalation, derived.escalation, strict=True):
        assert d_step.after == pytest.approx(s_step.after / SCALE, abs=0.001)
        assert (d_step.level, d_step.receivers, d_step.severities, d_step.vendor) == \
            (s_step.level, s_step.receivers, s_step.severities, s_step.vendor)
    for sev in ("P1", "P2", "P3", "P4"):
        assert getattr(derived.renotify, sev) == pytest.approx(getattr(shipped.renotify, sev) / SCALE, abs=0.001)
    assert derived.inhibit == shipped.inhibit
    assert set(derived.receivers) == set(shipped.receivers)
    for check in derived.checks:
        assert check.interval >= INTERVAL_FLOOR_S and check.timeout == CHECK_TIMEOUT_S, check.name
        if check.type == "logfile":
            assert check.window == max(300 / SCALE, WINDOW_FLOOR_S)
    assert {c.name for c in derived.checks} >= {c.name for c in shipped.checks}


def test_a_seconds_metric_nobody_classified_stops_the_derivation() -> None:
    assert scale_expr("portal_sf_replay_stalled_seconds > 1800") == \
        f"portal_sf_replay_stalled_seconds > {1800 / SCALE:g}"
    assert scale_expr("portal_log_response_seconds_avg > 2") == "portal_log_response_seconds_avg > 2"
    with pytest.raises(ValueError, match="portal_backup_age_seconds"):
        scale_expr("portal_backup_age_seconds > 86400")


def test_a_shipped_file_without_a_logfile_check_gets_the_proposed_one(tmp_path: Path) -> None:
    data = load_shipped()
    data["checks"] = [c for c in data["checks"] if c["type"] != "logfile"]
    derived, notes = derive(data, pagerduty_url="http://127.0.0.1:1/v2/enqueue", log_dir=tmp_path)
    assert any("logfile" in n for n in notes)
    assert [c["name"] for c in derived["checks"] if c["type"] == "logfile"] == ["bff_logs"]


def test_rows_without_platform_events_lose_only_the_rules_that_need_replay_keys(tmp_path: Path) -> None:
    shipped = load_shipped()
    derived, notes = derive(shipped, pagerduty_url="http://127.0.0.1:1/v2/enqueue", log_dir=tmp_path)
    def names(rules: list[dict]) -> list[str]:  # type: ignore[type-arg]
        return [r.get("alert") or r["record"] for r in rules]
    assert names(derived["rules"]) == [n for n in names(shipped["rules"]) if n not in NEEDS_REPLAY_KEYS]
    assert NEEDS_REPLAY_KEYS <= {r.get("alert") for r in shipped["rules"]}  # the list names shipped rules
    assert "no Platform Events in this row: removed PlatformEventsReplayKeysMissing" in notes
    assert "time_intervals" not in derived and "time_intervals" in shipped


def test_ranges_offsets_and_subqueries_shrink_with_a_floor_of_five_check_intervals() -> None:
    assert scale_expr('sum by (check) (increase(x{status_class="5xx"}[15m]))') == \
        'sum by (check) (increase(x{status_class="5xx"}[1500ms]))'
    assert scale_expr("changes(x[30s]) > 0") == f"changes(x[{round(RANGE_FLOOR_S * 1000)}ms]) > 0"  # not 50 ms
    assert RANGE_FLOOR_S >= 4 * INTERVAL_FLOOR_S  # a few samples of a check at its floor
    assert scale_expr("last_over_time(x[1d] offset 1h)") == "last_over_time(x[144000ms] offset 6000ms)"
    assert scale_expr("max_over_time(rate(x[5m])[1h:1m])") == "max_over_time((rate(x[500ms]))[6000ms:100ms])"
    assert scale_expr("predict_linear(x[30m], 14400) > y") == "predict_linear(x[3000ms], 24) > y"
    assert scale_expr("x > 0.9") == "x > 0.9"  # no time in it: the shipped text, untouched


def test_only_comparisons_of_elapsed_time_with_a_number_shrink() -> None:
    # the alert reads the latch: `== 1` is a flag, not a time
    alert = "portal_sf_replay_stalled_seconds and portal:sf_replay_stalled == 1"
    assert scale_expr(alert) == alert
    latch = ("portal_sf_replay_last_advance_timestamp_seconds and portal_sf_replay_stalled_seconds > 1800"
             " and portal:sf_replay_expected_events >= 10")
    assert thresholds(scale_expr(latch)) == ["portal_sf_replay_stalled_seconds > 3",
                                             "portal:sf_replay_expected_events >= 10"]
    assert thresholds(scale_expr("min by (check) (portal_sf_replay_stalled_seconds) > 1800 and x >= 20")) == \
        ["min by (check) (portal_sf_replay_stalled_seconds) > 3", "x >= 20"]
    assert thresholds(scale_expr("1800 < max_over_time(portal_sf_replay_stalled_seconds[1h])")) == \
        ["3 < max_over_time(portal_sf_replay_stalled_seconds[])"]
    chained = "portal_postgres_longest_query_seconds > 300 < 3600"
    assert scale_expr(chained) == "(portal_postgres_longest_query_seconds > 0.5) < 6"
    both_vectors = "portal_sf_replay_stalled_seconds == on (check) group_left () max by (check) (x)"
    assert scale_expr(both_vectors) == both_vectors  # no number: nothing to shrink


def test_a_threshold_on_an_elapsed_metric_in_an_unknown_shape_stops_the_derivation() -> None:
    with pytest.raises(ValueError, match="shape"):
        scale_expr("portal_sf_replay_stalled_seconds * 2 > 1800")
    with pytest.raises(ValueError, match="portal_backup_age_seconds"):
        scale_expr("up == 1 and portal_backup_age_seconds > 86400")  # not first: still found
