"""The fault matrix's config: the shipped `alert_rules.yaml` with every timer shrunk by `SCALE`.

The matrix tests what a user of the shipped file gets, so the test config is derived from it
at run time, never copied: same checks, rules, receivers, escalation, renotify and inhibit
rules. Only what cannot run in a test changes:

- **Time, by one factor.** `SCALE = 600`: one hour of the shipped file is 6 s of test, 30 min
  (L2) 3 s, 5 min 0.5 s, 1 min 0.1 s. Every `for`, `keep_firing_for`, `no_data_timeout`
  (the rules' and `defaults.no_data_timeout`, 1 h when the file leaves it out), escalation `after`,
  `fallback_after`, `renotify` cadence and heartbeat interval is divided by it. So is the time
  inside every rule's `expr`, alerting and recording rules alike (`scale_expr`): each range
  (`[15m]` -> 1.5 s, `[1d]` -> 144 s), offset, subquery range and step, and `predict_linear`'s
  horizon (`4 * 3600` -> `(4 * 3600) / 600`). So is the threshold of every comparison of a
  metric that *is* elapsed wall time (`ELAPSED_METRICS`) with a number, wherever it sits in
  the expression (a replay id stalled for 1800 s becomes 3 s, also inside a recording rule's
  `... and portal_sf_replay_stalled_seconds > 1800 and ...`; a query running for 300 s 0.5 s),
  because the monitored systems live in real time. Every other comparison keeps its number
  (`portal:sf_replay_stalled == 1`, `portal:sf_replay_expected_events >= 10`: counts and
  flags, not time), and so does a rule over any other `*_seconds` metric (a response time); a
  number compared with a `*_seconds` metric that is in neither list stops the derivation until
  someone says which it is. The rewrite is done on the parsed expression and printed back
  (tests/faults/exprtext.py, which re-parses what it printed and refuses a text that reads
  differently), so an expression the derivation changes appears in the derived file in the
  printer's layout (every compound operand in parentheses, durations in ms); one it does not
  change keeps the shipped text. Why 600: the longest wait of a row is the L3 step (1 h → 6 s), so the matrix
  stays near two minutes; and the steps stay well apart compared with how precisely the
  daemon keeps time (it evaluates after every check, i.e. every `INTERVAL_FLOOR_S`, 30 s of
  shipped time): L1 < L2 (3 s) < L3 (6 s) < the first re-notification (P1: 30 min after L3).
- **Four floors, where dividing would measure the test machine instead of the rules.**
  Check intervals (10 s → 17 ms) are at least `INTERVAL_FLOOR_S` (50 ms), so six checks do not
  keep two cores busy. A PromQL range is at least `RANGE_FLOOR_S` (250 ms, five check
  intervals): `[30s]` would be 50 ms, one sample of a check at its floor, so
  `changes(x[30s]) > 0` could never be true and a `rate()` would have no pair to read; five
  intervals keep two or more samples in the window even when a busy machine runs a check at
  twice its interval. (The cost: a `[30s]` window lasts 2.5 shrunk minutes, e.g. the request
  count recorded after a replay id's last advance is taken up to that long after it, so a
  silence counts that many fewer requests: later, never earlier.) The logfile `window`
  (5 min → 0.5 s) is at least `WINDOW_FLOOR_S` (2 s): the window counts whole 1 s buckets
  (`checks/logfile/window.py`), and with one bucket a steady burst would read as an empty
  window at every second boundary. (So a log burst stays in the window 20 min of shipped time
  instead of 5, and log alerts on the window resolve that much later: the log rows allow for
  it.) Check timeouts are `CHECK_TIMEOUT_S` (5 s), not divided: they guard against a peer that never answers, and a
  shorter one fails healthy checks on a busy machine and pages for nothing (1 s did: a WHMCS
  check answered by the fake in the starved test process timed out with the load average at
  25 on two cores, and WhmcsUnavailable paged).
- **Where things are.** PagerDuty receivers get the fake's `url:`; every other address comes
  from the environment the shipped file already reads (`REDIS_URL`, `DATABASE_URL`,
  `WHMCS_API_*`, `BFF_HEALTH_URL`, `BFF_LOG_DIR`, `PAGERDUTY_*_ROUTING_KEY`, `*_WEBHOOK_URL`,
  ...), so the `${VAR}` interpolation and `enabled: auto` are exercised as a user's would be.
  A logfile path that does not go through `${BFF_LOG_DIR}` moves into the test's log
  directory (same file name).
- **The BFF log check, should the shipped file lose it.** The log rules (HighErrorRate,
  SlowResponses, LoginFailureSpike) read `portal_log_*` series that only a `logfile` check
  produces; `LOGFILE_CHECK` (the shipped `bff_logs`, minus its grep patterns) is added when
  the shipped file has no check of that type, and `derive()` says so in its notes.
- **Proposals.** `extra_rules` appends rules (shrunk like the others): only for a test that
  shows a rule proposed for the shipped file would work.
- **Mute intervals are off.** `mute_time_intervals` are wall-clock hours (the nightly lull,
  00:00-06:00 UTC by default), and a row runs at whatever hour CI does: they are removed, and
  tested with an injected clock instead (tests/test_timeintervals.py, tests/proof/).
- **Platform Events only where a row runs them.** The disposable Redis holds no replay key,
  which PlatformEventsReplayKeysMissing would page after 35 min (3.5 s): as on a portal
  without Platform Events, the rules of `NEEDS_REPLAY_KEYS` are removed unless the row writes
  replay ids (`platform_events=True`, tests/faults/test_platform_event_faults.py).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from monitor.config.fields import format_duration, parse_duration
from monitor.rules.promql.parse import (
    Aggregate,
    Binary,
    Call,
    MatrixSel,
    Node,
    NumberLit,
    Subquery,
    VectorSel,
    metric_name,
    selectors,
)
from tests.faults.exprtext import rewritten, to_text, transform

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "alert_rules.yaml"

SCALE = 600.0
NEEDS_REPLAY_KEYS = frozenset({"PlatformEventsReplayKeysMissing"})
INTERVAL_FLOOR_S = 0.05
RANGE_FLOOR_S = 5 * INTERVAL_FLOOR_S
WINDOW_FLOOR_S = 2.0
CHECK_TIMEOUT_S = 5.0

# Metrics whose value is wall-clock time elapsed in the monitored system: thresholds shrink.
ELAPSED_METRICS = frozenset({"portal_sf_replay_stalled_seconds", "portal_postgres_longest_query_seconds"})
# `*_seconds` metrics that are not elapsed time (durations of one request, timestamps): kept.
OTHER_SECONDS_METRICS = frozenset({
    "portal_log_response_seconds_avg", "portal_log_response_seconds_p95", "portal_redis_ping_seconds",
    "portal_postgres_ping_seconds", "portal_http_response_seconds", "portal_whmcs_response_seconds",
    "portal_sf_replay_last_advance_timestamp_seconds", "portal_monitor_event_loop_lag_seconds",
    "portal_monitor_schedule_delay_seconds", "portal_monitor_config_last_reload_timestamp_seconds",
})

_COMPARISONS = frozenset({">", ">=", "<", "<=", "==", "!="})
# What keeps the unit of its argument: an elapsed time aggregated or taken over time is one.
_KEEP_UNIT_AGGREGATIONS = frozenset({"min", "max", "avg", "sum", "quantile", "topk", "bottomk"})
_KEEP_UNIT_FUNCTIONS = frozenset({
    "abs", "ceil", "floor", "round", "clamp", "clamp_min", "clamp_max", "last_over_time", "max_over_time",
    "min_over_time", "avg_over_time", "quantile_over_time",
})

# The check the shipped file should have (runbook 5 and 6): the BFF's winston JSON logs.
LOGFILE_CHECK: dict[str, Any] = {
    "name": "bff_logs",
    "type": "logfile",
    "paths": ["${BFF_LOG_DIR:-/var/log/bff}/combined.log"],
    "preset": "winston",
    "window": "5m",
    "interval": "5s",
    "auth_failure": {"status": [401, 403], "path": "/auth/login"},
}

def shrunk(shipped: float | str) -> float:
    """A duration of the shipped file (seconds or `30m`) in test seconds."""
    seconds = parse_duration(shipped) if isinstance(shipped, str) else float(shipped)
    return seconds / SCALE


def _shrink(value: Any, floor: float = 0.0) -> str:
    return format_duration(max(parse_duration(value) / SCALE, floor))


def scale_expr(expr: str) -> str:
    """A rule expression (alerting or recording) in the matrix's time: every range, offset and
    subquery range and step divided by SCALE (ranges at least `RANGE_FLOOR_S`, steps at least
    `INTERVAL_FLOOR_S`), `predict_linear`'s horizon too, and the threshold of each comparison of
    an elapsed-time metric (`ELAPSED_METRICS`) with a number; other comparisons are kept.

    Raises ValueError for a number compared with a `*_seconds` metric that is in neither list
    (someone has to decide), or with an elapsed metric in a shape `_elapsed` does not know."""
    return rewritten(expr, lambda root: transform(root, _scaled))


def _scaled(node: Node) -> Node | None:
    if isinstance(node, VectorSel) and node.offset:
        return replace(node, offset=round(node.offset / SCALE))
    if isinstance(node, MatrixSel):
        return replace(node, range=_range_ms(node.range))
    if isinstance(node, Subquery):
        step = max(round(node.step / SCALE), round(INTERVAL_FLOOR_S * 1000)) if node.step else node.step
        return replace(node, range=_range_ms(node.range), step=step, offset=round(node.offset / SCALE))
    if isinstance(node, Call) and node.func == "predict_linear" and len(node.args) == 2:
        horizon = node.args[1]
        shrunk_horizon = NumberLit(horizon.value / SCALE) if isinstance(horizon, NumberLit) else Binary(
            "/", horizon, NumberLit(SCALE), False, "one-to-one", None, (), ())
        return replace(node, args=(node.args[0], shrunk_horizon))
    if isinstance(node, Binary) and node.op in _COMPARISONS:
        for number_side, other in (("rhs", node.lhs), ("lhs", node.rhs)):
            number = getattr(node, number_side)
            if isinstance(number, NumberLit) and not isinstance(other, NumberLit) and _is_elapsed(other):
                return replace(node, **{number_side: NumberLit(number.value / SCALE)})
    return None


def _range_ms(ms: int) -> int:
    return max(round(ms / SCALE), round(RANGE_FLOOR_S * 1000))


def _is_elapsed(node: Node) -> bool:
    """Whether the values of `node`, compared with a number, are elapsed wall time."""
    names = {n for sel in selectors(node) if (n := metric_name(sel)) and n.endswith("_seconds")}
    unknown = names - ELAPSED_METRICS - OTHER_SECONDS_METRICS
    if unknown:
        raise ValueError(f"a threshold on {to_text(node)!r}: is {', '.join(sorted(unknown))} elapsed wall time (add "
                         "it to ELAPSED_METRICS, its threshold shrinks) or not (OTHER_SECONDS_METRICS)?")
    if not names & ELAPSED_METRICS:
        return False
    elapsed = _elapsed(node)
    if elapsed is None:
        raise ValueError(f"a threshold on {to_text(node)!r}: it reads an elapsed-time metric in a shape "
                         "tests/faults/derive.py does not know; is the threshold elapsed time?")
    return elapsed


def _elapsed(node: Node) -> bool | None:
    """True: the values are an elapsed-time metric's (filtered, aggregated by min/max/avg,
    over time); False: not time; None: cannot tell."""
    if isinstance(node, VectorSel):
        return metric_name(node) in ELAPSED_METRICS
    if isinstance(node, MatrixSel):
        return _elapsed(node.sel)
    if isinstance(node, Aggregate) and node.op in _KEEP_UNIT_AGGREGATIONS:
        return _elapsed(node.expr)
    if isinstance(node, Call) and node.func in _KEEP_UNIT_FUNCTIONS:
        return _elapsed(node.args[-1] if node.func == "quantile_over_time" else node.args[0])
    filters = isinstance(node, Binary) and (node.op in ("and", "unless") or (
        node.op in _COMPARISONS and not node.return_bool))
    if isinstance(node, Binary) and filters:
        return _elapsed(node.rhs if isinstance(node.lhs, NumberLit) else node.lhs)  # the values are one side's
    if isinstance(node, Binary) and node.op == "or":
        lhs, rhs = _elapsed(node.lhs), _elapsed(node.rhs)
        return lhs if lhs == rhs else None
    return None


def derive(shipped: Mapping[str, Any], *, pagerduty_url: str, log_dir: Path,
           extra_rules: Sequence[Mapping[str, Any]] = (), platform_events: bool = False
           ) -> tuple[dict[str, Any], list[str]]:
    """The test config (a dict to dump as YAML) and notes on what had to be added or removed.

    `extra_rules` (shipped-file time, shrunk like the others) are appended: only for a test of
    a rule proposed for the shipped file. `platform_events`: the row writes replay ids, so the
    rules that need them stay."""
    cfg: dict[str, Any] = copy.deepcopy(dict(shipped))
    notes: list[str] = []
    if not platform_events:
        dropped = [r["alert"] for r in cfg.get("rules", []) if r.get("alert") in NEEDS_REPLAY_KEYS]
        cfg["rules"] = [r for r in cfg.get("rules", []) if r.get("alert") not in NEEDS_REPLAY_KEYS]
        if dropped:
            notes.append("no Platform Events in this row: removed " + ", ".join(dropped))
    for rule in cfg.get("rules", []):
        rule.pop("mute_time_intervals", None)
    cfg.pop("time_intervals", None)
    if extra_rules:
        cfg["rules"] = [*cfg.get("rules", []), *copy.deepcopy(list(extra_rules))]
        notes.append("extra rules: " + ", ".join(r["alert"] for r in extra_rules))
    defaults = cfg.setdefault("defaults", {})
    default_interval = defaults.get("interval", "10s")
    defaults["interval"] = _shrink(default_interval, INTERVAL_FLOOR_S)
    defaults["timeout"] = format_duration(CHECK_TIMEOUT_S)

    checks = cfg.setdefault("checks", [])
    if not any(c.get("type") == "logfile" for c in checks):
        checks.append(copy.deepcopy(LOGFILE_CHECK))
        notes.append("the shipped file has no logfile check: added LOGFILE_CHECK (bff_logs) for the log rules")
    for check in checks:
        check["interval"] = _shrink(check.get("interval", default_interval), INTERVAL_FLOOR_S)
        check["timeout"] = format_duration(CHECK_TIMEOUT_S)
        if check.get("type") == "logfile":
            check["window"] = _shrink(check.get("window", "5m"), WINDOW_FLOOR_S)
            check["paths"] = [p if "${BFF_LOG_DIR" in p else str(log_dir / Path(p).name) for p in check["paths"]]

    defaults["no_data_timeout"] = _shrink(defaults.get("no_data_timeout", "1h"))
    for rule in cfg.get("rules", []):
        for key in ("for", "keep_firing_for", "no_data_timeout"):
            if key in rule:
                rule[key] = _shrink(rule[key])
        rule["expr"] = scale_expr(rule["expr"])

    for step in cfg.get("escalation", []):
        step["after"] = _shrink(step.get("after", "0s"))
        if "fallback_after" in step:
            step["fallback_after"] = _shrink(step["fallback_after"])
    cfg["fallback_after"] = _shrink(cfg.get("fallback_after", "2m"))
    cfg["renotify"] = {sev: _shrink(v) for sev, v in (cfg.get("renotify") or {}).items()}
    if "heartbeat" in cfg and "interval" in cfg["heartbeat"]:
        cfg["heartbeat"]["interval"] = _shrink(cfg["heartbeat"]["interval"])

    for receiver in (cfg.get("receivers") or {}).values():
        if receiver.get("type") == "pagerduty":
            receiver["url"] = pagerduty_url
    return cfg, notes


def load_shipped(path: Path = SHIPPED) -> dict[str, Any]:
    """The shipped file as plain data (anchors resolved, `${VAR}` left for the daemon)."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path}: not a mapping"
    return data


def write_config(path: Path, *, pagerduty_url: str, log_dir: Path,
                 extra_rules: Sequence[Mapping[str, Any]] = (), platform_events: bool = False) -> list[str]:
    """Derive from the shipped file and write the test config to `path`; return the notes."""
    cfg, notes = derive(load_shipped(), pagerduty_url=pagerduty_url, log_dir=log_dir, extra_rules=extra_rules,
                        platform_events=platform_events)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return notes
