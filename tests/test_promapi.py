"""Prometheus's HTTP API over the history, rules on the PromQL engine, recording rules.

In-process: a real Store (check results appended to its History at their start time), real
Alerting over it and the API served by aiohttp's test server, with an injected clock. The
replies are compared with the shapes of Prometheus's documented HTTP API.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from monitor.alerting import CHART_S, Alerting, retention_plan
from monitor.config.loader import ConfigError, load_config_text
from monitor.config.model import Config
from monitor.model import CheckResult, Sample
from monitor.rules.engine import compile_rules, history_needed_by_metric_s
from monitor.rules.export import prometheus_rules
from monitor.statedb import open_db
from monitor.store import Store
from monitor.web.api import Api
from monitor.web.metrics import make_metrics_handler
from monitor.web.promapi import format_alert_value, format_value, rules_doc
from monitor.web.server import build_app

T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
TOKEN = "t0ken-0123456789abcdef-API"

CONFIG = """\
listen: 127.0.0.1:0
state_dir: {state}
checks:
  - {{name: cache, type: redis, url: "redis://127.0.0.1:1/0", interval: 10s}}
  - {{name: logs, type: redis, url: "redis://127.0.0.1:1/1", interval: 10s}}
rules:
  - record: portal:redis_memory_growth_bytes:deriv5m
    expr: deriv(portal_redis_memory_used_bytes[5m])
    labels: {{team: portal}}
  - alert: RedisMemoryGrowing
    expr: portal:redis_memory_growth_bytes:deriv5m > 1000
    severity: P3
    summary: "Redis {{{{ $labels.check }}}} memory grows"
  - alert: LoginFailures
    expr: increase(portal_logins_failed_total[5m]) > 40
    severity: P2
  - alert: RedisDown
    expr: portal_redis_up == 0
    severity: P1
"""


def make_config(tmp_path: Path) -> Config:
    text = CONFIG.format(state=tmp_path / "state")
    return load_config_text(text, env={"MONITOR_API_TOKEN": TOKEN}, path=tmp_path / "alert_rules.yaml")


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> datetime:
        return self.t


@dataclass
class FakeDaemon:
    config: Config
    store: Store
    alerting: Alerting | None
    scheduler: None = None
    reload_errors: list[str] = field(default_factory=list)

    def ready(self) -> bool:
        return True

    async def reload(self) -> bool:
        return True


@dataclass
class Rig:
    client: TestClient
    store: Store
    alerting: Alerting
    clock: Clock

    async def get(self, path: str, status: int = 200, **params: Any) -> Any:
        async with self.client.get(path, params=params) as r:
            body = await r.text()
            assert r.status == status, f"GET {path}: {r.status} {body}"
            return json.loads(body)

    async def post(self, path: str, status: int = 200, **form: str) -> Any:
        async with self.client.post(path, data=form) as r:
            body = await r.text()
            assert r.status == status, f"POST {path}: {r.status} {body}"
            return json.loads(body)


def run_checks(store: Store, t: float, memory: float, logins: float, redis_up: bool = True) -> None:
    store.put(
        CheckResult(
            "cache", "redis", redis_up, [Sample("portal_redis_memory_used_bytes", {}, memory)] if redis_up else [],
            t, 0.01, "" if redis_up else "connect",
        )
    )
    store.put(CheckResult("logs", "redis", True, [Sample("portal_logins_failed_total", {"ip": "10.0.0.9"}, logins)],
                          t, 0.01))


@pytest.fixture
async def rig(tmp_path: Path) -> Any:
    cfg = make_config(tmp_path)
    clock = Clock()
    store = Store()
    alerting = Alerting(open_db(cfg.root.state_dir), cfg, store, now=clock, receivers={})
    store.add_source(alerting.samples)
    # 10 minutes of 10 s check runs: memory grows 2 kB/s, 60 failed logins in the last 5 min
    t0 = T0.timestamp() - 600
    for i in range(61):
        t = t0 + 10 * i
        run_checks(store, t, 1e6 + 2000 * (t - t0), 0.0 if i <= 30 else 2.0 * (i - 30))
        clock.t = datetime.fromtimestamp(t, UTC)
        alerting.evaluate(clock.t)
    app = build_app(make_metrics_handler(lambda: [*store.samples(), *alerting.recorded_samples()], {}),
                    api=Api(FakeDaemon(cfg, store, alerting), now=clock))
    client = TestClient(TestServer(app))
    await client.start_server()
    yield Rig(client, store, alerting, clock)
    await client.close()


# ---------------------------------------------------------------------- rules on PromQL

async def test_rules_see_ranges_and_recording_rules_over_the_history(rig: Rig) -> None:
    firing = {a.alert.name: a for a in rig.alerting.state.alerts.values() if a.state == "firing"}
    assert set(firing) == {"RedisMemoryGrowing", "LoginFailures"}
    grow = firing["RedisMemoryGrowing"].alert
    assert grow.labels == {"alertname": "RedisMemoryGrowing", "severity": "P3", "check": "cache",
                           "team": "portal"}  # the recording rule's labels, no __name__
    assert grow.value == pytest.approx(2000.0)
    assert grow.annotations["summary"] == "Redis cache memory grows"
    logins = firing["LoginFailures"].alert
    assert logins.labels["ip"] == "10.0.0.9"
    # 2..60 in (t-5m, t]: 58 extrapolated to the window's start, where the counter would be 0
    assert logins.value == pytest.approx(60.0)


async def test_a_vanished_series_goes_stale_at_once(rig: Rig) -> None:
    """The redis check fails: its memory series gets a staleness marker, so the recording rule
    and the alert on it see nothing from that run on, not a 5-minute-old value."""
    t = rig.clock.t.timestamp() + 10
    run_checks(rig.store, t, 0.0, 60.0, redis_up=False)
    rig.clock.t = datetime.fromtimestamp(t, UTC)
    rig.alerting.evaluate(rig.clock.t)
    doc = await rig.get("/api/v1/query", query="portal_redis_memory_used_bytes", time=str(t))
    assert doc == {"status": "success", "data": {"resultType": "vector", "result": []}}
    names = {st.alert.name for st in rig.alerting.state.alerts.values()}
    assert "RedisDown" in names


async def test_recording_rules_are_on_metrics_and_in_export(rig: Rig, tmp_path: Path) -> None:
    async with rig.client.get("/metrics") as r:
        text = await r.text()
    line = next(x for x in text.splitlines() if x.startswith("portal:redis_memory_growth_bytes:deriv5m{"))
    assert 'team="portal"' in line and 'check="cache"' in line
    assert float(line.rsplit(" ", 1)[1]) == pytest.approx(2000.0)
    exported = prometheus_rules(make_config(tmp_path))["groups"][0]["rules"]
    assert exported[0] == {"record": "portal:redis_memory_growth_bytes:deriv5m",
                           "expr": "deriv(portal_redis_memory_used_bytes[5m])", "labels": {"team": "portal"}}
    assert [r.get("alert") for r in exported[1:]] == ["RedisMemoryGrowing", "LoginFailures", "RedisDown"]


@pytest.mark.parametrize(("rule", "message"), [
    ("{record: 'bad-name', expr: up}", "rules[0].record"),
    ("{record: job:up:sum, expr: sum(up), for: 5m}", "for belong to alerting rules only"),
    ("{record: job:up:sum, expr: sum(up), severity: P1}", "severity belong to alerting rules only"),
    ("{alert: A, record: b, expr: up, severity: P1}", "either `alert:`"),
    ("{alert: A, expr: up}", "rules[0].severity: required key is missing"),
])
def test_recording_rules_are_validated(rule: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text(f"rules:\n  - {rule}\n", env={})
    assert message in "\n".join(info.value.errors)


def test_a_range_vector_is_not_a_rule() -> None:
    cfg = load_config_text("rules:\n  - {alert: A, expr: 'up[5m]', severity: P1}\n", env={})
    with pytest.raises(ConfigError, match=r"rules\[0\].expr: a rule's expression must be an instant vector"):
        compile_rules(cfg)


def test_history_retention_follows_the_rules(rig: Rig) -> None:
    # the longest read back is 5m (a range selector; a bare selector's lookback is 5m too),
    # + the incident page's hour
    assert rig.alerting.history.retention_s == 300 + 3600
    assert rig.alerting.history.retention_by_name == {}  # no rule reads a metric back longer
    assert rig.alerting.history.max_samples == 2_000_000


LONG_RULES = """\
listen: 127.0.0.1:0
state_dir: {state}
checks:
  - {{name: cache, type: redis, url: "redis://127.0.0.1:1/0", interval: 10s}}
rules:
  - record: portal:foo
    expr: sum(foo)
  - alert: Stalled
    expr: changes(foo[1d]) == 0
    severity: P2
  - alert: Busy
    expr: rate(bar[5m]) > 1
    severity: P3
  - alert: RecordedFlat
    expr: changes(portal:foo[1d]) == 0
    severity: P3
"""
ANY_FLAT = """\
  - alert: AnyFlat
    expr: changes({{__name__=~"portal_.*"}}[1d]) == 0
    severity: P3
"""


def test_a_metric_read_back_a_day_gets_its_own_retention(tmp_path: Path) -> None:
    """`changes(foo[1d])` keeps foo (and the recorded portal:foo, read back a day too) 1 d + the
    chart's hour; every other metric keeps the short default; a regex selector read back a day
    raises the default (after a reload)."""
    cfg = load_config_text(LONG_RULES.format(state=tmp_path / "state"), env={})
    alerting = Alerting(open_db(cfg.root.state_dir), cfg, list, receivers={})
    history = alerting.history
    assert history.retention_s == 300 + CHART_S
    assert history.retention_by_name == {"foo": 86400 + CHART_S, "portal:foo": 86400 + CHART_S}
    gauge = next(s for s in alerting.samples() if s.name == "portal_monitor_history_retention_seconds")
    assert gauge.value == 86400 + CHART_S

    alerting.swap_config(load_config_text((LONG_RULES + ANY_FLAT).format(state=tmp_path / "state"), env={}))
    assert history.retention_s == 86400 + CHART_S  # any series may be read back a day
    assert history.retention_by_name == {}


def test_retention_plan_splits_short_needs_from_long_ones() -> None:
    """Needs up to 2 h (and name-less ones) make the default; longer named ones get entries."""
    assert retention_plan({}) == (300 + CHART_S, {})
    assert retention_plan({"a": 600, "b": 7200, "c": 7201, None: 900}) == (7200 + CHART_S, {"c": 7201 + CHART_S})
    assert retention_plan({"a": 86400, None: 2 * 86400}) == (2 * 86400 + CHART_S, {})
    rules = compile_rules(load_config_text(LONG_RULES.format(state="/nonexistent"), env={}))
    assert history_needed_by_metric_s(rules) == {"foo": 86400, "bar": 300, "portal:foo": 86400}


async def test_history_use_is_a_metric(rig: Rig) -> None:
    async with rig.client.get("/metrics") as r:
        text = await r.text()
    values = {x.split(" ")[0]: float(x.split(" ")[1]) for x in text.splitlines()
              if x.startswith("portal_monitor_history_")}
    assert values["portal_monitor_history_samples"] > 61 * 3
    assert values["portal_monitor_history_max_samples"] == 2_000_000
    assert values["portal_monitor_history_series"] >= 5


# ---------------------------------------------------------------------- the query API

async def test_instant_query_vector_scalar_and_string(rig: Rig) -> None:
    t = rig.clock.t.timestamp()
    doc = await rig.get("/api/v1/query", query="portal_redis_memory_used_bytes", time=str(t))
    assert doc["status"] == "success" and doc["data"]["resultType"] == "vector"
    [item] = doc["data"]["result"]
    assert item["metric"] == {"__name__": "portal_redis_memory_used_bytes", "check": "cache"}
    assert item["value"] == [t, format_value(1e6 + 2000 * 600)] == [t, "2200000"]
    doc = await rig.get("/api/v1/query", query="1 + 1", time="2025-06-01T12:00:00Z")
    assert doc["data"] == {"resultType": "scalar", "result": [T0.timestamp(), "2"]}
    doc = await rig.get("/api/v1/query", query='"hi"', time=str(t))
    assert doc["data"] == {"resultType": "string", "result": [t, "hi"]}
    # no time: now (the injected clock)
    doc = await rig.get("/api/v1/query", query="time()")
    assert doc["data"]["result"] == [t, format_value(t)]


async def test_query_by_post_form_needs_no_token(rig: Rig) -> None:
    t = rig.clock.t.timestamp()
    doc = await rig.post("/api/v1/query", query="sum(portal_logins_failed_total)", time=str(t))
    assert doc["data"]["result"] == [{"metric": {}, "value": [t, "60"]}]


async def test_range_query_is_a_matrix(rig: Rig) -> None:
    end = rig.clock.t.timestamp()
    doc = await rig.get("/api/v1/query_range", query="portal_logins_failed_total", start=str(end - 60),
                        end=str(end), step="30s")
    [series] = doc["data"]["result"]
    assert doc["data"]["resultType"] == "matrix"
    assert series["metric"]["ip"] == "10.0.0.9"
    assert series["values"] == [[end - 60, "48"], [end - 30, "54"], [end, "60"]]


@pytest.mark.parametrize(("path", "params", "kind", "fragment"), [
    ("/api/v1/query", {"query": "sum("}, "bad_data", 'invalid parameter "query"'),
    ("/api/v1/query", {}, "bad_data", 'invalid parameter "query": missing'),
    ("/api/v1/query", {"query": "up", "time": "yesterday"}, "bad_data", 'invalid parameter "time"'),
    ("/api/v1/query_range", {"query": "up", "start": "0", "end": "10", "step": "0"}, "bad_data",
     "zero or negative query resolution step"),
    ("/api/v1/query_range", {"query": "up", "start": "0", "end": "100000", "step": "1"}, "bad_data",
     "exceeded maximum resolution of 11,000 points"),
    ("/api/v1/query_range", {"query": "up[5m]", "start": "0", "end": "10", "step": "1"}, "execution",
     "invalid expression type"),
    ("/api/v1/series", {}, "bad_data", "no match[] parameter provided"),
    ("/api/v1/series", {"match[]": "sum(up)"}, "bad_data", "is not a series selector"),
])
async def test_errors_have_prometheus_shape(rig: Rig, path: str, params: dict[str, str], kind: str,
                                            fragment: str) -> None:
    doc = await rig.get(path, status=400 if kind == "bad_data" else 422, **params)
    assert doc["status"] == "error" and doc["errorType"] == kind and fragment in doc["error"], doc


async def test_series_labels_and_label_values(rig: Rig) -> None:
    doc = await rig.get("/api/v1/series", **{"match[]": 'portal_redis_up{check="cache"}'})
    assert doc == {"status": "success", "data": [{"__name__": "portal_redis_up", "check": "cache"}]}
    doc = await rig.get("/api/v1/labels")
    assert {"__name__", "check", "ip", "type"} <= set(doc["data"]) and doc["data"] == sorted(doc["data"])
    doc = await rig.get("/api/v1/labels", **{"match[]": "portal_logins_failed_total"})
    assert doc["data"] == ["__name__", "check", "ip"]
    doc = await rig.get("/api/v1/label/check/values")
    assert doc["data"] == ["cache", "logs"]
    doc = await rig.get("/api/v1/label/__name__/values", **{"match[]": '{check="logs"}'})
    assert "portal_logins_failed_total" in doc["data"] and "portal_redis_memory_used_bytes" not in doc["data"]


async def test_alerts_in_prometheus_shape(rig: Rig) -> None:
    doc = await rig.get("/api/v1/alerts")
    assert doc["status"] == "success"
    alerts = doc["data"]["alerts"]
    assert [a["name"] for a in alerts] == ["LoginFailures", "RedisMemoryGrowing"]  # by severity
    a = alerts[1]
    assert a["state"] == "firing" and a["labels"]["alertname"] == "RedisMemoryGrowing"
    assert a["value"] == format_alert_value(a_value := rig.alerting.state.alerts[a["fingerprint"]].alert.value)
    assert a["value"].endswith("e+03") and math.isclose(float(a["value"]), a_value)
    assert datetime.fromisoformat(a["activeAt"]) <= rig.clock.t and a["activeAt"].endswith("Z")


async def test_rules_endpoint_lists_the_group(rig: Rig) -> None:
    doc = await rig.get("/api/v1/rules")
    [group] = doc["data"]["groups"]
    rules = group["rules"]
    assert [r["type"] for r in rules] == ["recording", "alerting", "alerting", "alerting"]
    assert rules[0]["name"] == "portal:redis_memory_growth_bytes:deriv5m" and rules[0]["labels"] == {"team": "portal"}
    assert rules[1]["state"] == "firing" and rules[1]["query"] == "portal:redis_memory_growth_bytes:deriv5m > 1000"
    assert rules[1]["alerts"][0]["labels"]["check"] == "cache"
    assert rules[3]["state"] == "inactive" and rules[3]["alerts"] == []


def test_values_are_formatted_as_go_does() -> None:
    assert [format_value(v) for v in (1.0, 0.5, -0.0, 1e21, 1.5e-7, math.inf, -math.inf, math.nan)] == [
        "1", "0.5", "0", "1000000000000000000000", "0.00000015", "+Inf", "-Inf", "NaN"]
    assert [format_alert_value(v) for v in (1.0, 0.0, 2000.0, 0.25, -1.5e-7)] == [
        "1e+00", "0e+00", "2e+03", "2.5e-01", "-1.5e-07"]


# ---------------------------------------------------------------------- the incident page's chart

async def test_series_window_is_the_rule_over_the_last_hour(rig: Rig) -> None:
    [st] = [s for s in rig.alerting.state.alerts.values() if s.alert.name == "LoginFailures"]
    end = rig.clock.t.timestamp()
    points = rig.alerting.series_window(st.alert.labels, end - 3600, end)
    assert points, "the chart has points"
    assert all(end - 3600 <= t <= end for t, _ in points)
    assert points[-1][1] == pytest.approx(st.alert.value)
    assert rig.alerting.series_window({"alertname": "NoSuchRule"}, end - 3600, end) == []
    assert rig.alerting.series_window(st.alert.labels, end - 3600 - timedelta(hours=5).total_seconds(),
                                      end - 3600) == []


async def test_a_removed_check_s_series_go_stale_at_once(rig: Rig) -> None:
    """A reload that removes a check: its series end at the removal, not 5 minutes later."""
    t = rig.clock.t.timestamp() + 1
    rig.store.remove("logs", at=t)
    doc = await rig.get("/api/v1/query", query="portal_logins_failed_total", time=str(t))
    assert doc["data"]["result"] == []
    doc = await rig.get("/api/v1/query", query="portal_logins_failed_total", time=str(t - 1))
    assert len(doc["data"]["result"]) == 1


async def test_a_rule_refused_at_evaluation_says_why_and_keeps_its_alerts(tmp_path: Path) -> None:
    """Many-to-many matching: Prometheus refuses the query; the rule's health is `err` with the
    reason on /api/v1/rules, the error is logged once, and its alerts stay as they were."""
    cfg = load_config_text(f"""\
state_dir: {tmp_path / 'state'}
rules:
  - {{alert: Joined, expr: 'x * on() y', severity: P4}}
""", env={}, path=tmp_path / "alert_rules.yaml")
    store = Store()
    alerting = Alerting(open_db(cfg.root.state_dir), cfg, store, now=lambda: T0, receivers={})
    one = [Sample("x", {"a": "1"}, 1.0), Sample("y", {"b": "1"}, 2.0)]
    store.put(CheckResult("c", "http", True, one, T0.timestamp() - 1, 0.01))
    alerting.evaluate(T0)
    assert [st.alert.name for st in alerting.state.alerts.values()] == ["Joined"]
    two = [*one, Sample("x", {"a": "2"}, 1.0), Sample("y", {"b": "2"}, 2.0)]
    store.put(CheckResult("c", "http", True, two, T0.timestamp() + 1, 0.01))
    later = T0 + timedelta(seconds=2)
    alerting.evaluate(later)
    assert "many-to-many matching not allowed" in alerting.rule_errors["Joined"]
    assert [st.alert.name for st in alerting.state.alerts.values()] == ["Joined"]  # kept, not resolved
    [rule] = rules_doc(alerting, "alert_rules.yaml")["data"]["groups"][0]["rules"]
    assert rule["health"] == "err" and "many-to-many" in rule["lastError"]


class Ticks:
    """A timer that advances a quarter second at each reading."""

    def __init__(self) -> None:
        self.readings = 0

    def __call__(self) -> float:
        self.readings += 1
        return self.readings * 0.25


def test_rules_report_their_evaluation_time(tmp_path: Path) -> None:
    """Each rule's evaluationTime is its own duration, the group's the whole evaluation's, and
    lastEvaluation the time of the evaluation; before the first one, zeros."""
    cfg = make_config(tmp_path)
    clock = Clock()
    store = Store()
    ticks = Ticks()
    alerting = Alerting(open_db(cfg.root.state_dir), cfg, store, now=clock, receivers={}, timer=ticks)
    before = rules_doc(alerting, "alert_rules.yaml")["data"]["groups"][0]
    assert before["evaluationTime"] == 0 and {r["evaluationTime"] for r in before["rules"]} == {0}
    run_checks(store, T0.timestamp(), 1e6, 0.0)
    alerting.evaluate(T0)
    group = rules_doc(alerting, "alert_rules.yaml")["data"]["groups"][0]
    n = len(group["rules"])
    assert n == 4 and [r["evaluationTime"] for r in group["rules"]] == [0.25] * n  # one tick from start to end
    assert group["evaluationTime"] == (2 * n + 1) * 0.25  # the group spans every rule's readings
    assert {r["lastEvaluation"] for r in group["rules"]} == {group["lastEvaluation"]} == {"2025-06-01T12:00:00Z"}
