"""`check-config` warns about rules that can never fire: a metric no configured check exports,
a label the metric does not carry; `--strict` makes them errors (exit 1)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

import checks
from monitor import store
from monitor.cli.main import main, rule_problems
from monitor.config.loader import load_config, load_config_text
from monitor.rules.lint import catalogue, lint, selectors

ROOT = Path(__file__).resolve().parent.parent
CHECKS = """
checks:
  - {name: cache, type: redis, url: "redis://127.0.0.1:6379/0", labels: {team: portal}}
  - {name: bff_logs, type: logfile, paths: [/tmp/x.log], preset: winston}
  - {name: whmcs, type: whmcs, enabled: auto, url: "${WHMCS_TEST_URL_NOT_SET}", identifier: a, secret: b}
"""


def problems(rules: str) -> list[str]:
    cfg = load_config_text(CHECKS + "rules:\n" + rules, name="cfg.yaml", env={})
    return rule_problems(cfg)


def test_the_shipped_config_has_no_unknown_metric_or_label() -> None:
    assert rule_problems(load_config(ROOT / "alert_rules.yaml", env={})) == []


def test_a_misspelt_metric_is_named_with_its_position_and_the_likely_name() -> None:
    (line,) = problems("  - {alert: A, expr: 'portal_redis_upp == 0', severity: P1}\n")
    assert line.startswith("cfg.yaml:7:")
    assert line.endswith(
        "rules[0].expr: metric portal_redis_upp is exported by no configured check (did you mean portal_redis_up?)"
    )


def test_a_misspelt_label_is_named_with_the_metrics_labels() -> None:
    (line,) = problems("  - {alert: A, expr: 'portal_sf_replay_stalled_seconds{chanel=\"x\"} > 1', severity: P2}\n")
    assert "portal_sf_replay_stalled_seconds has no label chanel (its labels: channel, check, team)" in line
    assert line.endswith("(did you mean channel?)")


@pytest.mark.parametrize(
    "expr",
    [
        "portal_redis_up{check='cache', team='portal'} == 0",  # a check's own labels count
        "rate(portal_log_lines_total{level='error'}[5m]) > 1",
        "histogram_quantile(0.9, sum by (le) (rate(portal_log_request_duration_seconds_bucket{le!=''}[5m]))) > 2",
        "max_over_time(portal_redis_memory_used_ratio[10m:1m]) > 0.9",
        "absent(portal_whmcs_up{check='whmcs'})",  # a check switched off until its variable is set
        "portal_check_up{type='redis', check='cache'} == 0",  # the store's series of every check
        "sum by (severity) (portal_alerts{alertname='A', state='firing'}) > 0",  # the daemon's own
        "portal_monitor_schedule_delay_seconds{quantile='0.99'} > 1",
        "{__name__=~'portal_redis_.*', team='portal'} > 1",
        "portal_redis_memory_used_bytes / on(check) portal_redis_memory_max_bytes > 0.9",
    ],
)
def test_what_the_checks_export_passes(expr: str) -> None:
    assert problems(f'  - {{alert: A, expr: "{expr}", severity: P3}}\n') == []


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("rate(portal_log_line_total[5m]) > 1", "metric portal_log_line_total is exported by no configured check"),
        ("absent(portal_postgres_up)", "metric portal_postgres_up is exported by no configured check"),
        ("max_over_time(portal_redis_up{chek='cache'}[5m:1m]) < 1", "portal_redis_up has no label chek"),
        ("portal_alerts{alert='A'} > 0", "portal_alerts has no label alert"),
        ("{__name__=~'portal_nothing_.*'} > 1", "no metric that the configured checks export matches __name__=~"),
        ("{__name__=~'portal_redis_.*', level='x'} > 1", "the metrics matching __name__ has no label level"),
        ("x{a='1' or b='2'}", "metric x is exported by no configured check"),
    ],
)
def test_what_no_check_exports_is_reported(expr: str, message: str) -> None:
    found = problems(f'  - {{alert: A, expr: "{expr}", severity: P3}}\n')
    assert any(message in line for line in found), found


def test_selectors_are_found_anywhere_in_the_expression() -> None:
    expr = 'sum by (x) (rate(a{l="1"}[5m])) / on(x) group_left b > 3 and absent(c) or max_over_time(d[5m:1m] offset 1m)'
    assert [name for name, _ in selectors(expr)] == ["a", "b", "c", "d"]
    assert selectors('{__name__="q", j=~"v.*"}') == [(None, [("__name__", "=", "q"), ("j", "=~", "v.*")])]


def test_recording_rule_names_count_as_exported() -> None:
    rules = [
        SimpleNamespace(record="job:portal_redis_up:min", expr="min(portal_redis_up)"),
        SimpleNamespace(alert="A", expr="job:portal_redis_up:min < 1"),
        SimpleNamespace(alert="B", expr="job:portal_redis_upp:min < 1"),
    ]
    cfg = SimpleNamespace(
        root=SimpleNamespace(checks=[SimpleNamespace(type="redis", labels={})], rules=rules),
        skipped_types={},
        where=lambda *path: f"cfg.yaml:{path[1] + 1}:5",
    )
    cat = catalogue(cfg, checks.EXPORTS, (store.METRICS, store.LABELS), [])  # type: ignore[arg-type]
    found = [str(p) for p in lint(cfg, cat)]  # type: ignore[arg-type]
    assert found == ["cfg.yaml:3:5: rules[2].expr: metric job:portal_redis_upp:min is exported by no configured "
                     "check (did you mean job:portal_redis_up:min?)"]


def test_check_config_warns_and_strict_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "alert_rules.yaml"
    path.write_text(CHECKS + "rules:\n  - {alert: A, expr: 'portal_redis_upp == 0', severity: P3}\n")
    assert main(["check-config", "-c", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "alert_rules.yaml: OK (1 warning)" in out
    assert "warning: alert_rules.yaml:7:" in err and "portal_redis_upp is exported by no configured check" in err
    assert main(["check-config", "-c", str(path), "--strict"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "portal_redis_upp is exported by no configured check" in err and err.rstrip().endswith("1 error")
    path.write_text(CHECKS + "rules:\n  - {alert: A, expr: 'portal_redis_up == 0', severity: P3}\n")
    assert main(["check-config", "-c", str(path), "--strict"]) == 0
    out, err = capsys.readouterr()
    assert "alert_rules.yaml: OK\n" in out and "warning" not in err
