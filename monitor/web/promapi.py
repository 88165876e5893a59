"""Prometheus's HTTP API over the daemon's history: `promtool query`, Grafana and curl read it.

The documented shapes of https://prometheus.io/docs/prometheus/latest/querying/api/: every
reply is `{"status": "success", "data": ...}` or `{"status": "error", "errorType": "bad_data",
"error": "..."}` (400; `execution` with 422 when the query is refused at evaluation time).
Sample values are strings (`"0.25"`, `"NaN"`, `"+Inf"`), times Unix seconds. Parameters come
from the query string or a form-encoded POST body, as Prometheus reads them; a time is Unix
seconds or RFC 3339, a step seconds or a duration (`15s`). The queries only read, so POST is
open like GET.

    GET|POST /api/v1/query?query=EXPR[&time=T]
    GET|POST /api/v1/query_range?query=EXPR&start=T&end=T&step=S     (at most 11,000 steps)
    GET|POST /api/v1/series?match[]=SELECTOR[&match[]=...][&start=T&end=T]
    GET|POST /api/v1/labels[?match[]=SELECTOR...]
    GET      /api/v1/label/<name>/values[?match[]=SELECTOR...]
    GET      /api/v1/rules       the rule group: alerting rules with their alerts, recording rules
    GET      /api/v1/alerts      pending and firing alerts; each object also carries our `name`,
                                 `severity`, `fired_at`, `fingerprint`

The history holds, per metric, what the rules can read back of it (see `monitor.alerting`), so
a query further back than that finds nothing, as a Prometheus whose retention ended there.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from aiohttp import web
from multidict import MultiDict, MultiDictProxy

from monitor.alerting import Alerting
from monitor.config.fields import parse_duration
from monitor.history import History, Matcher
from monitor.rules.engine import FIRING, LOOKBACK_S, AlertStates, RecordingRule, Rule
from monitor.rules.promql import (
    Engine,
    EvalError,
    ExprError,
    Matrix,
    Scalar,
    String,
    Value,
    Vector,
    parse,
)
from monitor.rules.promql.parse import VectorSel

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_POINTS = 11_000  # per series of a range query, as Prometheus
GROUP = "portal-monitor"
READ_ONLY_POSTS = frozenset({"/api/v1/query", "/api/v1/query_range", "/api/v1/series", "/api/v1/labels"})
_FAR_PAST = -62135596800.0  # Prometheus's minTime, near enough: 0001-01-01
_FAR_FUTURE = 253402300799.0  # 9999-12-31


class BadData(Exception):
    """A parameter Prometheus would refuse: 400 bad_data."""


def format_value(v: float) -> str:
    """A sample value as Prometheus writes it (Go's FormatFloat(v, 'f', -1, 64))."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    text = format(Decimal(repr(v)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def format_alert_value(v: float) -> str:
    """An alert's value as Prometheus's /api/v1/alerts writes it (FormatFloat(v, 'e', -1, 64))."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    digits = Decimal(repr(v)).normalize()
    sign, ds, e = digits.as_tuple()
    assert isinstance(e, int)
    head = "".join(map(str, ds))
    exponent = e + len(head) - 1
    body = head[0] + ("." + head[1:] if len(head) > 1 else "")
    return f"{'-' if sign else ''}{body}e{'+' if exponent >= 0 else '-'}{abs(exponent):02d}"


def parse_time(text: str, name: str) -> float:
    """Unix seconds (float) or RFC 3339."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadData(f'invalid parameter "{name}": cannot parse "{text}" to a valid timestamp') from None
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()


def parse_step(text: str) -> float:
    try:
        step = float(text)
    except ValueError:
        try:
            step = parse_duration(text)
        except ValueError:
            raise BadData(f'invalid parameter "step": cannot parse "{text}" to a valid duration') from None
    if not math.isfinite(step) or step <= 0:
        raise BadData(
            'invalid parameter "step": zero or negative query resolution step widths are not accepted. '
            "Try a positive integer"
        )
    return step


def _labels(labels: Mapping[str, str]) -> dict[str, str]:
    return dict(labels)


def value_doc(value: Value) -> dict[str, Any]:
    """`data` of a query: resultType and result."""
    if isinstance(value, Scalar):
        return {"resultType": "scalar", "result": [value.t, format_value(value.value)]}
    if isinstance(value, String):
        return {"resultType": "string", "result": [value.t, value.value]}
    if isinstance(value, Vector):
        return {
            "resultType": "vector",
            "result": [{"metric": _labels(e.labels), "value": [e.t, format_value(e.value)]} for e in value],
        }
    assert isinstance(value, Matrix)
    return {
        "resultType": "matrix",
        "result": [{"metric": _labels(s.labels), "values": [[t, format_value(v)] for t, v in s.points]} for s in value],
    }


def alerts_doc(state: AlertStates, rules: Sequence[Rule | RecordingRule] = ()) -> dict[str, Any]:
    """`/api/v1/alerts`: Prometheus's alert objects, firing first, then by severity and name.

    Besides Prometheus's fields: `for_seconds` (the rule's `for`), and `keep_firing_until`
    while a firing alert's condition is false but `keep_firing_for` holds it (when it clears)."""
    order = {"P1": 0, "P2": 1, "P3": 2, "P4": 3}
    by_name: dict[str, Rule] = {}
    for r in rules:
        if isinstance(r, Rule):
            by_name.setdefault(r.alert, r)
    states = sorted(
        state.alerts.values(),
        key=lambda st: (st.state != FIRING, order.get(st.alert.severity, 9), st.alert.name, st.alert.fingerprint),
    )
    return {
        "status": "success",
        "data": {
            "alerts": [
                {
                    "labels": dict(st.alert.labels),
                    "annotations": dict(st.alert.annotations),
                    "state": st.state,
                    "activeAt": _rfc3339(st.active_since),
                    "value": format_alert_value(st.alert.value),
                    "name": st.alert.name,
                    "severity": st.alert.severity,
                    "fired_at": _rfc3339(st.fired_at) if st.fired_at else None,
                    "fingerprint": st.alert.fingerprint,
                    "for_seconds": by_name[st.alert.name].for_s if st.alert.name in by_name else None,
                    "keep_firing_until": _rfc3339(
                        st.keep_firing_since + timedelta(seconds=by_name[st.alert.name].keep_firing_for_s)
                    )
                    if st.keep_firing_since is not None and st.alert.name in by_name
                    else None,
                    "no_data": st.alert.no_data,
                    "no_data_since": _rfc3339(st.alert.no_data_since) if st.alert.no_data_since else None,
                    "no_data_why": st.alert.no_data_why,
                }
                for st in states
            ]
        },
    }


def _rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def rules_doc(alerting: Alerting | None, path: str) -> dict[str, Any]:
    """`/api/v1/rules`: one group with every rule in file order."""
    if alerting is None:
        return {"status": "success", "data": {"groups": []}}
    state = alerting.state
    last = _rfc3339(state.evaluated_at) if state.evaluated_at else "0001-01-01T00:00:00Z"
    by_rule: dict[str, list[Any]] = {}
    for st in state.alerts.values():
        by_rule.setdefault(st.alert.name, []).append(st)
    rules: list[dict[str, Any]] = []
    errors = alerting.rule_errors
    times = alerting.rule_times if len(alerting.rule_times) == len(alerting.rules) else [0.0] * len(alerting.rules)
    for rule, took in zip(alerting.rules, times, strict=True):
        if isinstance(rule, RecordingRule):
            rules.append(
                {
                    "name": rule.record,
                    "query": rule.expr.text,
                    "labels": dict(rule.labels),
                    "health": "err" if rule.record in errors else "ok",
                    "lastError": errors.get(rule.record, ""),
                    "evaluationTime": took,
                    "lastEvaluation": last,
                    "type": "recording",
                }
            )
            continue
        assert isinstance(rule, Rule)
        mine = by_rule.get(rule.alert, [])
        kind = "firing" if any(st.state == FIRING for st in mine) else "pending" if mine else "inactive"
        labels = {**rule.labels, "severity": rule.severity}
        if rule.vendor:
            labels["vendor"] = rule.vendor
        rules.append(
            {
                "state": kind,
                "name": rule.alert,
                "query": rule.expr.text,
                "duration": rule.for_s,
                "keepFiringFor": rule.keep_firing_for_s,
                "labels": labels,
                "annotations": {k: t.text for k, t in rule.annotations.items()},
                "alerts": alerts_doc(AlertStates({st.alert.fingerprint: st for st in mine}))["data"]["alerts"],
                "health": "err" if rule.alert in errors else "ok",
                "lastError": errors.get(rule.alert, ""),
                "evaluationTime": took,
                "lastEvaluation": last,
                "type": "alerting",
            }
        )
    group = {
        "name": GROUP,
        "file": path,
        "rules": rules,
        "interval": 1,
        "limit": 0,
        "lastEvaluation": last,
        "evaluationTime": alerting.group_time if state.evaluated_at else 0.0,
    }
    return {"status": "success", "data": {"groups": [group]}}


class PromApi:
    """The routes above over a history; `alerting` and the config path are read at each request."""

    def __init__(
        self,
        history: Callable[[], History],
        alerting: Callable[[], Alerting | None],
        rule_file: Callable[[], str],
        now: Callable[[], float],
        json: Callable[[Any, int], web.Response],
    ) -> None:
        self._history = history
        self._alerting = alerting
        self._rule_file = rule_file
        self._now = now
        self._json = json

    def routes(self) -> list[tuple[str, str, Handler]]:
        out: list[tuple[str, str, Handler]] = []
        for path, handler in (
            ("/api/v1/query", self.query),
            ("/api/v1/query_range", self.query_range),
            ("/api/v1/series", self.series),
            ("/api/v1/labels", self.labels),
        ):
            out += [("GET", path, handler), ("POST", path, handler)]
        out += [
            ("GET", "/api/v1/label/{name}/values", self.label_values),
            ("GET", "/api/v1/rules", self.rules),
        ]
        return out

    # ------------------------------------------------------------------ plumbing

    async def _params(self, request: web.Request) -> MultiDictProxy[str]:
        if request.method == "POST":
            form = await request.post()
            merged: dict[str, list[str]] = {}
            for source in (request.query, form):
                for k, v in source.items():
                    if isinstance(v, str):
                        merged.setdefault(k, []).append(v)
            md: MultiDict[str] = MultiDict()
            for k, vs in merged.items():
                for v in vs:
                    md.add(k, v)
            return MultiDictProxy(md)
        return MultiDictProxy(MultiDict(request.query))

    def _error(self, kind: str, message: str, status: int) -> web.Response:
        return self._json({"status": "error", "errorType": kind, "error": message}, status)

    def _ok(self, data: Any) -> web.Response:
        return self._json({"status": "success", "data": data}, 200)

    def _engine(self) -> Engine:
        return Engine(self._history(), lookback_s=LOOKBACK_S)

    async def _run(self, request: web.Request, body: Callable[[MultiDictProxy[str]], Any]) -> web.Response:
        try:
            params = await self._params(request)
            return self._ok(body(params))
        except BadData as e:
            return self._error("bad_data", str(e), 400)
        except ExprError as e:
            return self._error("bad_data", f'invalid parameter "query": {e}', 400)
        except EvalError as e:
            return self._error("execution", str(e), 422)

    # ------------------------------------------------------------------ handlers

    async def query(self, request: web.Request) -> web.Response:
        def body(p: MultiDictProxy[str]) -> Any:
            text = _required(p, "query")
            t = parse_time(p["time"], "time") if p.get("time") else self._now()
            return value_doc(self._engine().instant(parse(text), t))

        return await self._run(request, body)

    async def query_range(self, request: web.Request) -> web.Response:
        def body(p: MultiDictProxy[str]) -> Any:
            text = _required(p, "query")
            start = parse_time(_required(p, "start"), "start")
            end = parse_time(_required(p, "end"), "end")
            step = parse_step(_required(p, "step"))
            if end < start:
                raise BadData('invalid parameter "end": end timestamp must not be before start time')
            if (end - start) / step > MAX_POINTS:
                raise BadData(
                    "exceeded maximum resolution of 11,000 points per timeseries. "
                    "Try decreasing the query resolution (?step=XX)"
                )
            return value_doc(self._engine().range(parse(text), start, end, step))

        return await self._run(request, body)

    async def series(self, request: web.Request) -> web.Response:
        def body(p: MultiDictProxy[str]) -> Any:
            selectors = _selectors(p, required=True)
            start, end = _window(p)
            lo, hi = round(start * 1000) - 1, round(end * 1000)
            found: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
            for matchers in selectors:
                for s in self._history().select(matchers):
                    i, j = s.window(lo, hi)
                    if j > i:
                        found[s.key] = dict(s.labels)
            return [found[k] for k in sorted(found)]

        return await self._run(request, body)

    async def labels(self, request: web.Request) -> web.Response:
        def body(p: MultiDictProxy[str]) -> Any:
            history = self._history()
            selectors = _selectors(p, required=False)
            if not selectors:
                return history.label_names()
            return sorted({n for m in selectors for n in history.label_names(m)})

        return await self._run(request, body)

    async def label_values(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]

        def body(p: MultiDictProxy[str]) -> Any:
            if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", name):
                raise BadData(f'invalid label name: "{name}"')
            history = self._history()
            selectors = _selectors(p, required=False)
            if not selectors:
                return history.label_values(name)
            return sorted({v for m in selectors for v in history.label_values(name, m)})

        return await self._run(request, body)

    async def rules(self, request: web.Request) -> web.Response:
        return self._json(rules_doc(self._alerting(), self._rule_file()), 200)


def _required(p: MultiDictProxy[str], name: str) -> str:
    value = p.get(name)
    if not value:
        raise BadData(f'invalid parameter "{name}": missing')
    return value


def _window(p: MultiDictProxy[str]) -> tuple[float, float]:
    start = parse_time(p["start"], "start") if p.get("start") else _FAR_PAST
    end = parse_time(p["end"], "end") if p.get("end") else _FAR_FUTURE
    return start, end


def _selectors(p: MultiDictProxy[str], *, required: bool) -> list[Sequence[Matcher]]:
    texts = p.getall("match[]", [])
    if required and not texts:
        raise BadData("no match[] parameter provided")
    out: list[Sequence[Matcher]] = []
    for text in texts:
        try:
            root = parse(text).root
        except ExprError as e:
            raise BadData(f'invalid parameter "match[]": {e}') from None
        if not isinstance(root, VectorSel):
            raise BadData(f'invalid parameter "match[]": {text!r} is not a series selector')
        matchers = list(root.matchers)
        if root.name and not any(m.name == "__name__" for m in matchers):
            matchers.append(Matcher.of("__name__", "=", root.name))
        out.append(matchers)
    return out
