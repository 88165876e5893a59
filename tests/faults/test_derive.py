"""The matrix's config is the shipped one with its clock shrunk, and nothing else changed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from monitor.config.loader import load_config_text
from tests.faults.derive import (
    CHECK_TIMEOUT_S,
    ELAPSED_METRICS,
    INTERVAL_FLOOR_S,
    NEEDS_REPLAY_KEYS,
    SCALE,
    WINDOW_FLOOR_S,
    derive,
    load_shipped,
    scale_expr,
)
from tests.faults.pages import LEAD_KEY, ONCALL_KEY

ENV = {
    "WHMCS_API_URL": "http://127.0.0.1:1/includes/api.php", "WHMCS_API_IDENTIFIER": "id", "WHMCS_API_SECRET": "s",
    "PAGERDUTY_ROUTING_KEY": ONCALL_KEY, "PAGERDUTY_LEAD_ROUTING_KEY": LEAD_KEY,
    "MANAGEMENT_WEBHOOK_URL": "http://127.0.0.1:1/hook", "VENDOR_WEBHOOK_URL": "http://127.0.0.1:1/hook",
    "BFF_LOG_DIR": "/tmp/bff-logs",
}


def load(data: dict) -> object:  # type: ignore[type-arg]
    return load_config_text(yaml.safe_dump(data, sort_keys=False), env=ENV)


def test_every_timer_of_the_shipped_file_is_divided_by_the_scale(tmp_path: Path) -> None:
    shipped_data = load_shipped()
    derived_data, _notes = derive(shipped_data, pagerduty_url="http://127.0.0.1:1/v2/enqueue", log_dir=tmp_path,
                                  platform_events=True)
    shipped, derived = load(shipped_data).root, load(derived_data).root  # type: ignore[attr-defined]
    assert [r.alert for r in derived.rules] == [r.alert for r in shipped.rules]
    for s, d in zip(shipped.rules, derived.rules, strict=True):
        assert d.mute_time_intervals == [], s.alert  # wall-clock hours: off in the matrix
        assert d.for_ == pytest.approx(s.for_ / SCALE, abs=0.001), s.alert
        assert d.keep_firing_for == pytest.approx(s.keep_firing_for / SCALE, abs=0.001), s.alert
        assert (d.severity, d.vendor, d.labels, d.summary, d.description) == \
            (s.severity, s.vendor, s.labels, s.summary, s.description)
        metric = s.expr.split("{")[0].split(" ")[0]
        if metric in ELAPSED_METRICS:
            assert d.expr != s.expr
            assert float(d.expr.split()[-1]) == pytest.approx(float(s.expr.split()[-1]) / SCALE)
        else:
            assert d.expr == s.expr
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
    assert [r["alert"] for r in derived["rules"]] == \
        [r["alert"] for r in shipped["rules"] if r["alert"] not in NEEDS_REPLAY_KEYS]
    assert NEEDS_REPLAY_KEYS <= {r["alert"] for r in shipped["rules"]}  # the list names shipped rules
    assert "no Platform Events in this row: removed PlatformEventsReplayKeysMissing" in notes
    assert "time_intervals" not in derived and "time_intervals" in shipped
