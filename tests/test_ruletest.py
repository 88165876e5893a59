"""`test-rules` (promtool's test-file format) and `export-rules --format prometheus`."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import pytest
import yaml

from monitor.config.loader import load_config, load_config_text
from monitor.rules.export import export_prometheus, prometheus_rules
from monitor.rules.promql import Engine
from monitor.rules.ruletest import BadTestFile, InputSeries, input_history, parse_values, run_rule_tests
from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parent.parent
RULES_DIR = ROOT / "tests" / "rules"
DEFAULT_TESTS = RULES_DIR / "default_rules_test.yaml"
SHIPPED = ROOT / "alert_rules.yaml"


def promtool() -> str:
    """promtool (Debian's prometheus package): skipped without it, failed under CI."""
    return require_tool("promtool", "promtool is not installed (Debian package: prometheus)")


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


RULES = """
rules:
  - alert: RedisDown
    expr: portal_redis_up == 0
    for: 20s
    severity: P1
    summary: "Redis {{ $labels.check }} down"
"""


# ---------------------------------------------------------------- the shipped tests


def test_default_rule_tests_pass() -> None:
    report = run_rule_tests(DEFAULT_TESTS, env={})
    assert report.failures == ()
    assert report.ok and report.passed >= 50
    assert report.format().endswith(f"SUCCESS: {report.passed} rule tests passed")


def test_default_rule_tests_cover_every_rule_firing_and_quiet() -> None:
    """Each shipped rule has a test where it fires and one where it must not (a blip, a threshold)."""
    data = yaml.safe_load(DEFAULT_TESTS.read_text())
    fires: set[str] = set()
    quiet: set[str] = set()
    for test in data["tests"]:
        for case in test["alert_rule_test"]:
            (fires if case["exp_alerts"] else quiet).add(case["alertname"])
    names = {r.alert for r in load_config(SHIPPED, env={}).root.rules if r.alert}  # not the recording rules
    assert fires == names
    assert quiet == names


def test_a_wrong_expectation_fails_and_says_what_differs() -> None:
    report = run_rule_tests(RULES_DIR / "wrong_expectation_test.yaml", env={})
    assert not report.ok
    assert (report.passed, report.failed) == (0, 4)
    first, second, third, fourth = report.failures
    assert "alert_rule_test[0]: alertname RedisDown at 30s" in first
    assert "severity='P2'" in first and "severity='P1'" in first  # expected and got
    assert "expected 0 firing" in second and "got 1 firing" in second
    assert "summary='Redis is down'" in third and "summary='Redis (cache) is down" in third
    assert "no rule is named 'RedisDwon'" in fourth
    assert report.format().endswith("FAILED: 4 of 4 rule tests failed")


# ---------------------------------------------------------------- the values notation


@pytest.mark.parametrize(
    ("text", "points"),
    [
        ("1 2 3", [1.0, 2.0, 3.0]),
        ("1+2x3", [1.0, 3.0, 5.0, 7.0]),
        ("5-1x4", [5.0, 4.0, 3.0, 2.0, 1.0]),
        ("1x3", [1.0, 1.0, 1.0, 1.0]),
        ("0x2", [0.0, 0.0, 0.0]),  # not hex: promtool refuses hex in series values
        ("-2+1x2", [-2.0, -1.0, 0.0]),
        ("1e2x1 1e+2", [100.0, 100.0, 100.0]),
        ("1 _x3 stale", [1.0, None, None, None, "stale"]),
        ("_ 2", [None, 2.0]),
        ("+Inf -Inf", [math.inf, -math.inf]),
        ("1+0x6 0 0", [1.0] * 7 + [0.0, 0.0]),
        ("", []),
    ],
)
def test_parse_values_expands_promtool_notation(text: str, points: list[object]) -> None:
    assert parse_values(text) == points


@pytest.mark.parametrize("text", ["1+x3", "abc", "1x", "_x", "1++2x3", "stalex2"])
def test_parse_values_refuses_what_promtool_refuses(text: str) -> None:
    with pytest.raises(BadTestFile):
        parse_values(text)


def test_input_series_read_with_the_last_sample_within_five_minutes() -> None:
    points = parse_values("1 _x7 stale 4")  # 60 s apart: a sample at 0, stale at 8m, 4 at 9m
    engine = Engine(input_history([InputSeries("m", {"a": "b"}, points, 60)]))

    def value_at(t: float) -> float | None:
        got = engine.instant("m", t)
        assert isinstance(got, list) and len(got) <= 1
        return got[0].value if got else None

    assert value_at(0) == 1
    assert value_at(90) == 1  # the gap: the 0 s sample is still fresh
    assert value_at(299) == 1
    assert value_at(300) is None  # 5 minutes old: gone (Prometheus 3 lookback)
    assert value_at(8 * 60 + 30) is None  # stale ends the series
    assert value_at(9 * 60) == 4
    assert value_at(20 * 60) is None


# ---------------------------------------------------------------- test-file errors


def test_firing_and_resolving_on_our_own_rule_file(tmp_path: Path) -> None:
    write(tmp_path, "rules.yaml", RULES)
    path = write(tmp_path, "t.yaml", """
rule_files: [rules.yaml]
evaluation_interval: 10s
tests:
  - interval: 10s
    input_series:
      - {series: 'portal_redis_up{check="cache"}', values: '1 0x3 1'}
    alert_rule_test:
      - {eval_time: 20s, alertname: RedisDown, exp_alerts: []}
      - eval_time: 30s
        alertname: RedisDown
        exp_alerts: [{exp_labels: {check: cache, severity: P1}, exp_annotations: {summary: Redis cache down}}]
      - {eval_time: 45s, alertname: RedisDown, exp_alerts: [{exp_labels: {check: cache, severity: P1},
                                                             exp_annotations: {summary: Redis cache down}}]}
      - {eval_time: 50s, alertname: RedisDown, exp_alerts: []}
""")
    report = run_rule_tests(path, env={})
    assert report.failures == ()
    assert report.passed == 4


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("rule_files: [missing.yaml]\ntests: []", "missing.yaml"),
        ("rule_files: [rules.yaml]\nbogus: 1\ntests: []", "unknown key(s) bogus"),
        ("rule_files: [rules.yaml]\nevaluation_interval: soon\ntests: []", "evaluation_interval"),
        ("rule_files: [rules.yaml]\ntests: []", "no tests"),
        ("rule_files: [rules.yaml]\ntests:\n  - input_series: [{series: 'up', values: '1 x'}]\n"
         "    alert_rule_test: [{eval_time: 0s, alertname: RedisDown, exp_alerts: []}]",
         "input_series[0].values: 'x'"),
        ("rule_files: [rules.yaml]\ntests:\n  - input_series: [{series: 'rate(up[5m])', values: '1'}]\n"
         "    alert_rule_test: [{eval_time: 0s, alertname: RedisDown, exp_alerts: []}]",
         "input_series[0].series"),
        ("rule_files: [rules.yaml]\ntests:\n  - promql_expr_test: [{expr: up, exp_samples: [{labels: 'a{'}]}]",
         "promql_expr_test[0].exp_samples[0]"),
        ("[1, 2]", "must be a mapping"),
        ("rule_files: [rules.yaml]\ntests: [\n", "invalid YAML"),
    ],
)
def test_a_broken_test_file_fails_with_a_reason(tmp_path: Path, body: str, message: str) -> None:
    write(tmp_path, "rules.yaml", RULES)
    report = run_rule_tests(write(tmp_path, "t.yaml", body), env={})
    assert not report.ok
    assert any(message in f for f in report.failures), report.failures


def test_a_bad_rule_in_the_rule_file_fails_with_its_position(tmp_path: Path) -> None:
    write(tmp_path, "rules.yaml", "rules:\n  - {alert: X, expr: 'rate(x[1m]', severity: P1}\n")
    report = run_rule_tests(write(tmp_path, "t.yaml", "rule_files: [rules.yaml]\ntests: []\n"), env={})
    assert not report.ok
    assert report.failures[0].endswith("rules.yaml:2:27: rules[0].expr: unclosed left parenthesis at column 5")


def test_rule_files_accept_globs(tmp_path: Path) -> None:
    (tmp_path / "r").mkdir()
    write(tmp_path / "r", "a.yaml", RULES)
    write(tmp_path / "r", "b.yaml", RULES.replace("RedisDown", "RedisGone").replace("for: 20s", "for: 0s"))
    path = write(tmp_path, "t.yaml", """
rule_files: ['r/*.yaml']
tests:
  - input_series: [{series: 'portal_redis_up{check="c"}', values: '0'}]
    alert_rule_test:
      - {eval_time: 0s, alertname: RedisGone, exp_alerts: [{exp_labels: {check: c, severity: P1},
                                                            exp_annotations: {summary: Redis c down}}]}
      - {eval_time: 0s, alertname: RedisDown, exp_alerts: []}
""")
    assert run_rule_tests(path, env={}).failures == ()


# ---------------------------------------------------------------- export-rules --format prometheus


def test_export_has_the_prometheus_rule_file_structure() -> None:
    cfg = load_config(SHIPPED, env={})
    text = export_prometheus(cfg)
    data = yaml.safe_load(text)
    assert data == prometheus_rules(cfg)
    (group,) = data["groups"]
    assert group["name"] == "portal-monitor"
    assert len(group["rules"]) == len(cfg.root.rules)
    by_name = {r["alert"]: r for r in group["rules"] if "alert" in r}
    records = [r for r in group["rules"] if "record" in r]
    assert records and all(set(r) == {"record", "expr"} for r in records)
    assert group["rules"].index(records[-1]) < group["rules"].index(by_name["PortalUnreachable"])
    stalled = by_name["PlatformEventsStalled"]
    assert stalled["expr"] == "portal_sf_replay_stalled_seconds and portal:sf_replay_stalled == 1"
    assert "for" not in stalled  # for: 0s is Prometheus' default
    assert stalled["labels"] == {"severity": "P2", "vendor": "Salesforce"}
    assert stalled["annotations"]["summary"] == (
        "No Salesforce Platform Event on {{ $labels.channel }} for {{ $value | humanizeDuration }}")
    assert stalled["annotations"]["runbook_url"].endswith("#1-salesforce-platform-events-not-receiving")
    assert set(stalled) == {"alert", "expr", "labels", "annotations"}
    assert by_name["PortalUnreachable"]["keep_firing_for"] == "1m"
    assert "for" not in by_name["LoginFailureSpike"]
    assert by_name["DatabaseDown"]["for"] == "30s"
    assert by_name["RedisDown"]["for"] == "30s"
    assert "# Muted during time intervals in alert_rules.yaml" in text  # an Alertmanager route, not a rule field
    assert "#     mute_time_intervals: [nightly-lull]\n" in text


def test_export_keeps_rule_labels_and_sub_second_durations() -> None:
    cfg = load_config_text("""
rules:
  - {alert: A, expr: "x > 1", for: 1h30m, keep_firing_for: 250ms, severity: P3, labels: {team: portal}}
""", env={})
    (rule,) = prometheus_rules(cfg)["groups"][0]["rules"]
    assert rule == {"alert": "A", "expr": "x > 1", "for": "1h30m", "keep_firing_for": "250ms",
                    "labels": {"team": "portal", "severity": "P3"}}


def test_export_refuses_invalid_rules() -> None:
    from monitor.config.loader import ConfigError

    cfg = load_config_text("rules:\n  - {alert: A, expr: 'sum(x) by', severity: P3}\n", env={})
    with pytest.raises(ConfigError, match="rules\\[0\\].expr"):
        export_prometheus(cfg)


def test_promtool_accepts_the_exported_rules(tmp_path: Path) -> None:
    path = write(tmp_path, "rules.yml", export_prometheus(load_config(SHIPPED, env={})))
    done = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(load_config(SHIPPED, env={}).root.rules)} rules found" in done.stdout


def _promtool_test(tmp_path: Path, rules: dict[str, object], tests: dict[str, object]) -> None:
    write(tmp_path, "rules.yml", yaml.safe_dump(rules, sort_keys=False))
    tests["rule_files"] = ["rules.yml"]
    path = write(tmp_path, "test.yml", yaml.safe_dump(tests, sort_keys=False))
    done = subprocess.run([promtool(), "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_shipped_test_file_passes_promtool_unchanged(tmp_path: Path) -> None:
    """promtool-compatible both ways: the same file, byte for byte, passes `promtool test rules`
    on the output of `export-rules` (laid out so that its `../../alert_rules.yaml` is the export)
    and passes ours (test_default_rule_tests_pass): timing, labels and every annotation."""
    (tmp_path / "tests" / "rules").mkdir(parents=True)
    write(tmp_path, "alert_rules.yaml", export_prometheus(load_config(SHIPPED, env={})))
    test = write(tmp_path / "tests" / "rules", "default_rules_test.yaml", DEFAULT_TESTS.read_text())
    done = subprocess.run([promtool(), "test", "rules", str(test)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
    data = yaml.safe_load(DEFAULT_TESTS.read_text())
    with_annotations = [a for t in data["tests"] for c in t["alert_rule_test"] for a in c["exp_alerts"] or []]
    assert len(with_annotations) >= 30 and all(a["exp_annotations"]["runbook_url"] for a in with_annotations)


MISSING_ANNOTATIONS = """
rule_files: [rules.yml]
tests:
  - input_series: [{series: 'portal_redis_up{check="cache"}', values: '0x3'}]
    alert_rule_test:
      - {eval_time: 1m, alertname: RedisDown, exp_alerts: [{exp_labels: {check: cache, severity: P1}}]}
"""


def test_a_missing_exp_annotations_means_none_in_both_tools(tmp_path: Path) -> None:
    """As promtool: leaving exp_annotations out expects an alert without annotations, so the
    same file fails in both when the rule has a summary."""
    write(tmp_path, "rules.yml", RULES)
    ours = run_rule_tests(write(tmp_path, "t.yml", MISSING_ANNOTATIONS), env={})
    assert not ours.ok
    (failure,) = ours.failures
    assert "{alertname='RedisDown', check='cache', severity='P1'} annotations {}" in failure
    assert "annotations {summary='Redis cache down'}" in failure
    exported = tmp_path / "prom"
    exported.mkdir()
    write(exported, "rules.yml", export_prometheus(load_config(tmp_path / "rules.yml", env={})))
    test = write(exported, "t.yml", MISSING_ANNOTATIONS)
    done = subprocess.run([promtool(), "test", "rules", str(test)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and 'Annotations:{summary="Redis cache down"}' in done.stdout + done.stderr


def test_external_url_and_labels_reach_the_templates(tmp_path: Path) -> None:
    write(tmp_path, "rules.yaml", """
rules:
  - alert: A
    expr: x > 0
    severity: P4
    annotations: {link: "{{ $externalURL }}/a", site: "{{ $externalLabels.site }}"}
""")
    path = write(tmp_path, "t.yaml", """
rule_files: [rules.yaml]
tests:
  - external_url: http://mon.example:9820
    external_labels: {site: paris}
    input_series: [{series: 'x', values: '1'}]
    alert_rule_test:
      - eval_time: 0s
        alertname: A
        exp_alerts: [{exp_labels: {severity: P4}, exp_annotations: {link: "http://mon.example:9820/a", site: paris}}]
""")
    report = run_rule_tests(path, env={})
    assert report.failures == () and report.passed == 1


EXPR_TESTS = """
rule_files: [rules.yaml]
tests:
  - interval: 1m
    input_series:
      - {series: 'portal_redis_up{check="cache"}', values: '1 0 0'}
      - {series: 'portal_redis_up{check="other"}', values: '1 1 1'}
    promql_expr_test:
      - expr: portal_redis_up
        eval_time: 1m
        exp_samples:
          - {labels: 'portal_redis_up{check="other"}', value: 1}
          - {labels: 'portal_redis_up{check="cache"}', value: 0}
      - expr: portal_redis_up
        eval_time: 2m
        exp_samples: [{labels: 'portal_redis_up{check="cache"}', value: 1}]
      - {expr: 'rate(x[5m])', eval_time: 0s, exp_samples: []}
"""


def test_promql_expr_test_compares_samples_as_promtool(tmp_path: Path) -> None:
    write(tmp_path, "rules.yaml", RULES)
    report = run_rule_tests(write(tmp_path, "t.yaml", EXPR_TESTS), env={})
    assert report.passed == 2 and report.failed == 1
    [wrong] = report.failures
    assert "promql_expr_test[1]: expr 'portal_redis_up' at 2m:" in wrong
    assert "exp: {__name__='portal_redis_up', check='cache'} 1" in wrong
    assert "got: {__name__='portal_redis_up', check='cache'} 0, {__name__='portal_redis_up', check='other'} 1" in wrong


def test_promql_expr_test_runs_on_the_promql_engine(tmp_path: Path) -> None:
    """Ranges, aggregations and joins over the input series, as promtool evaluates them."""
    write(tmp_path, "rules.yaml", RULES)
    path = write(tmp_path, "t.yaml", """
rule_files: [rules.yaml]
tests:
  - interval: 1m
    input_series:
      - {series: 'logins_failed_total{ip="10.0.0.9"}', values: '0+10x10'}
      - {series: 'logins_failed_total{ip="10.0.0.7"}', values: '0x10'}
      - {series: 'conns{db="main"}', values: '90x10'}
      - {series: 'max_conns{db="main"}', values: '100x10'}
    promql_expr_test:
      - expr: increase(logins_failed_total[5m]) > 40
        eval_time: 10m
        exp_samples: [{labels: '{ip="10.0.0.9"}', value: 50}]
      - expr: sum by (db) (conns) / on (db) max_conns > 0.8
        eval_time: 5m
        exp_samples: [{labels: '{db="main"}', value: 0.9}]
      - expr: 'sum('
        eval_time: 0s
""")
    report = run_rule_tests(path, env={})
    assert report.passed == 2 and report.failed == 1, report.format()
    assert "promql_expr_test[2]: expr 'sum(' at 0s: " in report.failures[0]


def test_a_broken_test_file_is_a_positioned_error_not_a_crash(tmp_path) -> None:
    from monitor.rules.ruletest import run_rule_tests

    bad = tmp_path / "t.yaml"
    bad.write_text("rule_files: [alert_rules.yaml]\ntests: !!int x\n")
    report = run_rule_tests(bad)
    assert not report.ok
    assert report.failures == (f"{bad}:2:8: tests: 'x' is not a valid int (invalid literal for int() with base 10: 'x')",)


def _value(points: list[object], t: float) -> float | None:
    """A reference model of an input series at t (10s apart): its last value at or before t
    unless that is a stale marker or at least 5 minutes old (Prometheus 3's lookback)."""
    for i in range(min(int(t // 10), len(points) - 1), -1, -1):
        if points[i] is not None:
            if points[i] == "stale" or t - 10 * i >= 300:
                return None
            value = points[i]
            assert isinstance(value, float)
            return value
    return None


def _latest_sample_age(points: list[object], t: float) -> float | None:
    for i in range(min(int(t // 10), len(points) - 1), -1, -1):
        if points[i] is not None:
            return None if points[i] == "stale" else t - 10 * i
    return None


class _Reference:
    """The three rules of the random test as Prometheus's rules/alerting.go runs them, written
    out by hand: an oracle that is neither our engine nor promtool."""

    def __init__(self) -> None:
        self.up_since: dict[str, float] = {}  # Up: x > 0 for 20s
        self.high_keep: dict[str, float | None] = {}  # High: x > 2, keep_firing_for 30s
        self.gone_since: float | None = None  # GoneA: absent(x{k="a"}) for 10s

    def step(self, values: dict[str, float | None], t: float) -> dict[str, list[dict[str, object]]]:
        from monitor.rules.templates import format_value

        out: dict[str, list[dict[str, object]]] = {"Up": [], "High": [], "GoneA": []}
        for k, v in sorted(values.items()):
            if v is not None and v > 0:
                since = self.up_since.setdefault(k, t)
                if t - since >= 20:
                    out["Up"].append({"exp_labels": {"k": k, "severity": "P3"},
                                      "exp_annotations": {"summary": f"x={format_value(v)} on {k}"}})
            else:
                self.up_since.pop(k, None)
            if v is not None and v > 2:
                self.high_keep[k] = None
            elif k in self.high_keep:
                first_false = self.high_keep[k]
                if first_false is None:
                    first_false = self.high_keep[k] = t
                if t - first_false >= 30:
                    del self.high_keep[k]
            if k in self.high_keep:
                out["High"].append({"exp_labels": {"k": k, "severity": "P4", "team": "t"}, "exp_annotations": {}})
        if values.get("a") is None:
            self.gone_since = t if self.gone_since is None else self.gone_since
            if t - self.gone_since >= 10:
                out["GoneA"].append({"exp_labels": {"k": "a", "severity": "P2"}, "exp_annotations": {}})
        else:
            self.gone_since = None
        return out


def test_random_series_fire_at_the_same_evaluations_in_promtool(tmp_path: Path) -> None:
    """Random input series in promtool's notation (`_`, `_xN`, `stale`, `a+bxN`) through `for`,
    `keep_firing_for` and `absent`: the alerts a hand-written reference model of the rules fires
    at every evaluation are the expectations of one test file, which our test-rules runs on our
    rules and promtool on the exported ones. Both must pass it.

    Evaluations stop before any sample is exactly 5m old: there Debian's promtool (Prometheus
    2.42) still sees it and Prometheus 3, whose lookback we follow, no longer does."""
    import random

    from monitor.rules.ruletest import parse_values

    write(tmp_path, "rules.yaml", """
rules:
  - {alert: Up, expr: 'x > 0', for: 20s, severity: P3, summary: 'x={{ $value }} on {{ $labels.k }}'}
  - {alert: High, expr: 'x > 2', keep_firing_for: 30s, severity: P4, labels: {team: t}}
  - {alert: GoneA, expr: 'absent(x{k="a"})', for: 10s, severity: P2}
""")
    rng = random.Random(20261207)
    tokens = ["0", "1", "3", "_", "stale", "1x2", "0+1x3", "_x2", "4-1x3", "3x4", "_x5", "2.5"]
    tests = []
    for _ in range(12):
        values = {k: " ".join(rng.choice(tokens) for _ in range(12)) for k in ("a", "b")}
        points = {k: parse_values(v) for k, v in values.items()}
        reference = _Reference()
        cases = []
        for step in range(61):  # every 10s, to 10m at most
            t = step * 10.0
            if any(_latest_sample_age(p, t) == 300.0 for p in points.values()):
                break
            fired = reference.step({k: _value(p, t) for k, p in points.items()}, t)
            cases += [{"eval_time": f"{int(t)}s", "alertname": n, "exp_alerts": e} for n, e in fired.items()]
        inputs = [{"series": f'x{{k="{k}"}}', "values": v} for k, v in values.items()]
        tests.append({"interval": "10s", "input_series": inputs, "alert_rule_test": cases})
    cases = [c for t in tests for c in t["alert_rule_test"]]
    assert len(cases) > 1000
    assert all(sum(1 for c in cases if c["alertname"] == n and c["exp_alerts"]) > 30 for n in ("Up", "High", "GoneA"))
    body = yaml.safe_dump({"rule_files": ["rules.yaml"], "evaluation_interval": "10s", "tests": tests}, sort_keys=False)
    ours = run_rule_tests(write(tmp_path, "t.yaml", body), env={})
    assert ours.failures[:3] == () and ours.passed == len(cases)
    prom = tmp_path / "prom"
    prom.mkdir()
    write(prom, "rules.yaml", export_prometheus(load_config(tmp_path / "rules.yaml", env={})))
    done = subprocess.run([promtool(), "test", "rules", str(write(prom, "t.yaml", body))],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (done.stdout + done.stderr)[:4000]
