"""`portal-monitor test-rules FILE`: unit tests for alert rules in promtool's test-file format.

    rule_files: [../../alert_rules.yaml]   # relative to the test file; globs allowed
    evaluation_interval: 1m                # default 1m
    tests:
      - name: redis down pages at once
        interval: 1m                       # spacing of input_series values; default 1m
        input_series:
          - series: 'portal_redis_up{check="cache"}'
            values: '1 1 0 0 0'            # 1+2x3 = 1 3 5 7; 1x3 = 1 1 1 1; _ = no sample; _x3; stale
        alert_rule_test:
          - eval_time: 2m
            alertname: RedisDown
            exp_alerts:                    # [] = must not fire
              - exp_labels: {check: cache, severity: P1}
                exp_annotations: {summary: "...", description: "...", runbook_url: "..."}
        promql_expr_test:
          - expr: portal_redis_up == 0
            eval_time: 2m
            exp_samples: [{labels: 'portal_redis_up{check="cache"}', value: 0}]

The rule files are `alert_rules.yaml`-shaped and loaded exactly as the daemon loads them
(`monitor.config.loader.load_config`, with the environment given, by default the process's): only
their `rules:` matter, and checks or receivers switched off by `enabled: auto` do not get in
the way. Rules are evaluated by `monitor.rules.engine.evaluate` at every `evaluation_interval` from 0
to the last `eval_time`, as promtool does; a test checks the alerts firing after the last
evaluation at or before its `eval_time`.

The same file passes `promtool test rules` run on the output of `export-rules` (`make test`
runs both). As promtool (`cmd/promtool/unittest.go`): a series' value at time t is its last
sample at or before t and less than 5 minutes old (Prometheus 3's lookback), `stale` ends it,
`_` is simply no sample; `interval` defaults to 1m whatever `evaluation_interval` is;
`alertname` is added to `exp_labels`, which must then equal the alert's labels exactly;
`exp_annotations` must equal the alert's annotations exactly, and a missing one means "no
annotations" (so an alert of a rule with a summary needs it); the runbook link is the
`runbook_url` annotation; alerts compare as a set; `external_url` and `external_labels` are
what templates see as `$externalURL` and `$externalLabels`. One difference, deliberate: naming
an `alertname` that no rule has is a failure here (so a typo cannot pass as "does not fire").

`promql_expr_test` (expr, eval_time, exp_samples of `labels` in series notation and `value`,
compared as promtool does: the same label sets, `__name__` included, and exactly equal values)
runs through an `Evaluator` handed to `run_rule_tests`: a function of the test's input series
(`InputSeries`), the expression and the evaluation time (seconds since the start) returning
the instant vector as (labels, value) pairs; by default `promql_evaluator`, our PromQL engine
over the input series as a history (the same history the alert rules are evaluated over).
"""

from __future__ import annotations

import glob
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from monitor.config.fields import format_duration, parse_duration
from monitor.config.loader import ConfigError, load_config
from monitor.config.yamlpos import load_yaml_text
from monitor.history import STALE_NAN, History
from monitor.model import Alert
from monitor.rules.engine import AlertStates, AnyRule, Rule, alert_rules, compile_rules, evaluate, firing
from monitor.rules.expr import parse_series
from monitor.rules.promql import Engine, EvalError, ExprError, Scalar, Vector
from monitor.rules.templates import Context, format_value

MAX_STEPS = 100_000
STALE = "stale"
# No hex in series values: `0x3` is 0 three more times (promtool: "the syntax is ambiguous").
_NUM = r"[+-]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[Ii]nf|[Nn]a[Nn])"
_UNUM = _NUM[len("[+-]?") :]
_ITEM = re.compile(rf"({_NUM})(?:([+-])({_UNUM})x([0-9]+)|x([0-9]+))?")
_MISSING = re.compile(r"_(?:x([0-9]+))?")
_TOP_KEYS = {"rule_files", "evaluation_interval", "tests", "group_eval_order", "fuzzy_compare"}
_TEST_KEYS = {
    "name",
    "interval",
    "input_series",
    "alert_rule_test",
    "promql_expr_test",
    "external_labels",
    "external_url",
    "start_timestamp",
}

Point = float | str | None  # a value, STALE, or None for no sample


@dataclass(frozen=True, slots=True)
class InputSeries:
    """One `input_series` entry: its name, labels and one point per `interval_s` from 0."""

    name: str
    labels: Mapping[str, str]
    points: Sequence[Point]
    interval_s: float


# (input series, expression, evaluation time in seconds) -> the instant vector: (labels incl.
# __name__ where the result keeps it, value) pairs. Raises ValueError for an expression it refuses.
Evaluator = Callable[[Sequence[InputSeries], str, float], list[tuple[dict[str, str], float]]]


class BadTestFile(Exception):
    """The test file itself is wrong (not a wrong expectation)."""


@dataclass(frozen=True, slots=True)
class RuleTestReport:
    """What `test-rules` prints: counts, and one block of text per failure."""

    passed: int = 0
    failed: int = 0
    failures: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def format(self) -> str:
        total = self.passed + self.failed
        head = (
            f"SUCCESS: {self.passed} rule tests passed"
            if self.ok
            else f"FAILED: {self.failed} of {total} rule tests failed"
        )
        return "\n".join([*self.failures, head])


def parse_values(text: str) -> list[Point]:
    """promtool's expanding notation → one point per step: `1+2x3` = 1 3 5 7, `_x2` = 2 gaps."""
    out: list[Point] = []
    for item in str(text).split():
        if item == STALE:
            out.append(STALE)
        elif m := _MISSING.fullmatch(item):
            out.extend([None] * int(m.group(1) or 1))
        elif m := _ITEM.fullmatch(item):
            start = _number(m.group(1))
            times = int(m.group(4) or m.group(5) or 0)
            step = 0.0 if m.group(3) is None else _number(m.group(3)) * (-1 if m.group(2) == "-" else 1)
            if times > MAX_STEPS:
                raise BadTestFile(f"values: {item!r} expands to more than {MAX_STEPS} points")
            value = start
            out.append(value)
            for _ in range(times):
                value += step  # accumulated, as promtool does
                out.append(value)
        else:
            raise BadTestFile(f"values: {item!r} is not a number, a+bxn, a-bxn, axn, _, _xn or stale")
    return out


def _number(text: str) -> float:
    return float(text.lower())


def run_rule_tests(
    path: str | Path, env: Mapping[str, str] | None = None, evaluator: Evaluator | None = None
) -> RuleTestReport:
    """Run every alert_rule_test and promql_expr_test of a promtool-format test file against
    our rule engine (`evaluator`: how a promql_expr_test is evaluated, `promql_evaluator`)."""
    evaluator = evaluator or promql_evaluator
    path = Path(path)
    try:
        data = load_yaml_text(path.read_text(encoding="utf-8"), str(path))
    except (OSError, UnicodeDecodeError) as e:
        return RuleTestReport(failed=1, failures=(f"{path}: cannot read test file: {e}",))
    except ConfigError as e:  # positioned, like the config's own errors
        return RuleTestReport(failed=1, failures=tuple(e.errors))
    try:
        if not isinstance(data, dict):
            raise BadTestFile("the test file must be a mapping with rule_files and tests")
        if unknown := sorted(set(data) - _TOP_KEYS):
            raise BadTestFile(f"unknown key(s) {', '.join(unknown)}")
        eval_s = _duration(data.get("evaluation_interval", "1m"), "evaluation_interval")
        if eval_s <= 0:
            raise BadTestFile("evaluation_interval must be more than 0s")
        rules = _load_rules(path, data.get("rule_files"), env)
    except (BadTestFile, ConfigError) as e:
        return RuleTestReport(failed=1, failures=(f"{path}: {e}",))
    passed, failures = 0, []
    for n, test in enumerate(data.get("tests") or []):
        label = test.get("name") if isinstance(test, dict) else None
        where = f"{path}: tests[{n}]" + (f" {label!r}" if label else "")
        try:
            p, f = _run_test(test, rules, eval_s, where, evaluator)
        except BadTestFile as e:
            cases = test.get("alert_rule_test") if isinstance(test, dict) else None
            exprs = test.get("promql_expr_test") if isinstance(test, dict) else None
            n_cases = (len(cases) if isinstance(cases, list) else 0) + (len(exprs) if isinstance(exprs, list) else 0)
            f = [f"{where}: {e}"] * max(1, n_cases)
            p = 0
        passed += p
        failures.extend(f)
    if not data.get("tests"):
        failures.append(f"{path}: no tests")
    return RuleTestReport(passed, len(failures), tuple(failures))


def _duration(value: Any, key: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as e:
        raise BadTestFile(f"{key}: {e}") from None


def _load_rules(path: Path, files: Any, env: Mapping[str, str] | None) -> list[AnyRule]:
    if not isinstance(files, list) or not files or not all(isinstance(f, str) for f in files):
        raise BadTestFile("rule_files must be a list of paths (relative to the test file)")
    rules: list[AnyRule] = []
    errors: list[str] = []
    for pattern in files:
        full = path.parent / pattern
        matches = sorted(glob.glob(str(full))) if glob.has_magic(pattern) else [str(full)]
        if not matches:
            errors.append(f"rule_files: {pattern!r} matches no file")
        for name in matches:
            try:
                rules.extend(compile_rules(load_config(name, env=env)))
            except ConfigError as e:
                errors.extend(e.errors)
    if errors:
        raise ConfigError(errors)
    return rules


def _run_test(
    test: Any, rules: list[AnyRule], eval_s: float, where: str, evaluator: Evaluator
) -> tuple[int, list[str]]:
    if not isinstance(test, dict):
        raise BadTestFile("a test is a mapping with input_series and alert_rule_test")
    if unknown := sorted(set(test) - _TEST_KEYS):
        raise BadTestFile(f"unknown key(s) {', '.join(unknown)}")
    rules = _with_context(rules, test)
    interval_s = _duration(test.get("interval", "1m"), "interval")
    if interval_s <= 0:
        raise BadTestFile("interval must be more than 0s")
    start = _start(test.get("start_timestamp", 0))
    series = _series(test.get("input_series") or [])
    expr_passed, expr_failures = _expr_tests(test.get("promql_expr_test") or [], series, interval_s, where, evaluator)
    cases = test.get("alert_rule_test") or []
    if not isinstance(cases, list):
        raise BadTestFile("alert_rule_test must be a list")
    names = {r.alert for r in alert_rules(rules)}
    checks: list[tuple[float, int, dict[str, Any]]] = []
    for k, case in enumerate(cases):
        if not isinstance(case, dict) or not isinstance(case.get("alertname"), str):
            raise BadTestFile(f"alert_rule_test[{k}] needs eval_time, alertname and exp_alerts")
        checks.append((_duration(case.get("eval_time", "0s"), f"alert_rule_test[{k}].eval_time"), k, case))
    checks.sort(key=lambda c: (c[0], c[1]))
    last = max((c[0] for c in checks), default=0.0)
    if last / eval_s > MAX_STEPS:
        raise BadTestFile(f"eval_time {format_duration(last)} needs more than {MAX_STEPS} evaluations")

    passed, failures = expr_passed, list(expr_failures)
    history = input_history([InputSeries(n, lb, pts, interval_s) for n, lb, pts in series], start.timestamp())
    state = AlertStates()
    step, todo = 0, 0
    while todo < len(checks):
        t = step * eval_s
        state, _ = evaluate(rules, history, state, start + timedelta(seconds=t))
        while todo < len(checks) and checks[todo][0] < t + eval_s - 1e-9:
            at, k, case = checks[todo]
            todo += 1
            problem = _compare(case, firing(state), names)
            if problem is None:
                passed += 1
            else:
                failures.append(
                    f"{where}: alert_rule_test[{k}]: alertname {case['alertname']} at {format_duration(at)}: {problem}"
                )
        step += 1
    return passed, failures


def input_history(series: Sequence[InputSeries], t0: float = 0.0) -> History:
    """The input series as a history: point i at t0 + i * interval, `stale` as a staleness marker."""
    history = History(retention_s=float("inf"), max_samples=MAX_STEPS * max(1, len(series)))
    for s in series:
        labels = {**s.labels, "__name__": s.name}
        for i, p in enumerate(s.points):
            if p is not None:
                history.add(labels, t0 + i * s.interval_s, STALE_NAN if p == STALE else float(p))
    return history


def promql_evaluator(series: Sequence[InputSeries], expr: str, at: float) -> list[tuple[dict[str, str], float]]:
    """`Evaluator` by our PromQL engine: the instant value of `expr` at `at` over the input series."""
    try:
        value = Engine(input_history(series)).instant(expr, at)
    except (ExprError, EvalError) as e:
        raise ValueError(str(e)) from None
    if isinstance(value, Scalar):
        return [({}, value.value)]
    if isinstance(value, Vector):
        return [(dict(e.labels), e.value) for e in value]
    raise ValueError("the expression is not an instant vector or a scalar")


def _with_context(rules: list[AnyRule], test: Mapping[str, Any]) -> list[AnyRule]:
    """The rules with the test's `external_url` and `external_labels` for their templates."""
    url, ext = test.get("external_url"), test.get("external_labels")
    if url is None and ext is None:
        return rules
    if ext is not None and not isinstance(ext, dict):
        raise BadTestFile("external_labels must be a mapping")
    context = Context(external_url=str(url or ""), external_labels={str(k): str(v) for k, v in (ext or {}).items()})
    return [replace(r, context=context) if isinstance(r, Rule) else r for r in rules]


def _expr_tests(
    cases: Any,
    series: list[tuple[str, dict[str, str], list[Point]]],
    interval_s: float,
    where: str,
    evaluator: Evaluator,
) -> tuple[int, list[str]]:
    """promql_expr_test, compared as promtool compares: the same samples, exactly."""
    if not isinstance(cases, list):
        raise BadTestFile("promql_expr_test must be a list")
    inputs = [InputSeries(name, labels, points, interval_s) for name, labels, points in series]
    passed, failures = 0, []
    for k, case in enumerate(cases):
        if not isinstance(case, dict) or not isinstance(case.get("expr"), str):
            raise BadTestFile(f"promql_expr_test[{k}] needs expr, eval_time and exp_samples")
        at = _duration(case.get("eval_time", "0s"), f"promql_expr_test[{k}].eval_time")
        head = f"{where}: promql_expr_test[{k}]: expr {case['expr']!r} at {format_duration(at)}"
        expected = []
        for j, smp in enumerate(case.get("exp_samples") or []):
            try:
                name, labels = parse_series(str((smp or {}).get("labels", "{}")))
                value = float(str((smp or {}).get("value", 0)).lower())
            except (ExprError, ValueError) as e:
                raise BadTestFile(f"promql_expr_test[{k}].exp_samples[{j}]: {e}") from None
            expected.append(({**labels, **({"__name__": name} if name else {})}, value))
        try:
            got = [(dict(lb), float(v)) for lb, v in evaluator(inputs, case["expr"], at)]
        except ValueError as e:
            failures.append(f"{head}: {e}")
            continue
        if _same_samples(got, expected):
            passed += 1
        else:
            failures.append(f"{head}:\n    exp: {_samples_text(expected)}\n    got: {_samples_text(got)}")
    return passed, failures


def _same_samples(a: list[tuple[dict[str, str], float]], b: list[tuple[dict[str, str], float]]) -> bool:
    """Go's reflect.DeepEqual of the sorted samples: equal labels, values equal by `==` (NaN never)."""

    def key(s: tuple[dict[str, str], float]) -> list[tuple[str, str]]:
        return sorted(s[0].items())

    x, y = sorted(a, key=key), sorted(b, key=key)
    return len(x) == len(y) and all(key(p) == key(q) and p[1] == q[1] for p, q in zip(x, y, strict=True))


def _samples_text(samples: list[tuple[dict[str, str], float]]) -> str:
    return (
        ", ".join(f"{_labels(lb)} {format_value(v)}" for lb, v in sorted(samples, key=lambda s: sorted(s[0].items())))
        or "nil"
    )


def _start(value: Any) -> datetime:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise BadTestFile(f"start_timestamp {value!r} is not a Unix time or RFC 3339") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _series(items: Any) -> list[tuple[str, dict[str, str], list[Point]]]:
    if not isinstance(items, list):
        raise BadTestFile("input_series must be a list")
    out: list[tuple[str, dict[str, str], list[Point]]] = []
    for j, item in enumerate(items):
        if not isinstance(item, dict) or "series" not in item:
            raise BadTestFile(f"input_series[{j}] needs series and values")
        try:
            name, labels = parse_series(str(item["series"]))
        except ExprError as e:
            raise BadTestFile(f"input_series[{j}].series {item['series']!r}: {e}") from None
        try:
            points = parse_values(str(item.get("values", "")))
        except BadTestFile as e:
            raise BadTestFile(f"input_series[{j}].{e}") from None
        out.append((name, labels, points))
    return out


def _compare(case: Mapping[str, Any], alerts: list[Alert], names: set[str]) -> str | None:
    """None when the firing alerts are exactly the expected ones, else what differs."""
    name = case["alertname"]
    if name not in names:
        return f"no rule is named {name!r} in rule_files"
    got = [a for a in alerts if a.name == name]
    expected = []
    for e in case.get("exp_alerts") or []:
        labels = {str(k): str(v) for k, v in ((e or {}).get("exp_labels") or {}).items()}
        labels["alertname"] = name
        # As promtool: no exp_annotations means the alert has none.
        ann = (e or {}).get("exp_annotations") or {}
        expected.append((labels, {str(k): str(v) for k, v in ann.items()}))
    unmatched = list(got)
    for labels, ann in expected:
        hit = next((a for a in unmatched if dict(a.labels) == labels and dict(a.annotations) == ann), None)
        if hit is None:
            break
        unmatched.remove(hit)
    else:
        if not unmatched:
            return None
    exp_text = "\n".join(f"      {_labels(lb)} annotations {_labels(an)}" for lb, an in expected) or "      (none)"
    got_text = (
        "\n".join(f"      {_labels(a.labels)} annotations {_labels(a.annotations)}" for a in got) or "      (none)"
    )
    return f"\n    expected {len(expected)} firing:\n{exp_text}\n    got {len(got)} firing:\n{got_text}"


def _labels(labels: Mapping[str, str]) -> str:
    return "{" + ", ".join(f"{k}={v!r}" for k, v in sorted(labels.items())) + "}"
