"""monitor.rules.promql: parse errors with columns, evaluation over a History, the helpers."""

from __future__ import annotations

import math

import pytest

from monitor.history import History
from monitor.model import Sample
from monitor.rules.promql import (
    Engine,
    EvalError,
    ExprError,
    Matrix,
    Scalar,
    Vector,
    needed_history_by_metric_s,
    needed_history_s,
    parse,
    selected_series,
)


@pytest.mark.parametrize(
    ("text", "column", "token"),
    [
        ("sum(foo", 3, "("),
        ("rate(foo[5m]) +", 14, "+"),
        ("nonexist(foo)", 0, "nonexist"),
        ('up{a="b"} > bool', 10, ">"),
        ('foo{a=~"("}', 8, "("),
        ("foo bar", 4, "bar"),
    ],
)
def test_parse_errors_point_at_a_column(text: str, column: int, token: str) -> None:
    with pytest.raises(ExprError) as info:
        parse(text)
    assert info.value.position == column, info.value
    assert info.value.token == token
    assert f"column {column + 1}" in str(info.value)


def _history() -> History:
    h = History()
    for t in range(0, 601, 15):
        h.append(
            t,
            [
                Sample("req_total", {"job": "a"}, 2.0 * t),
                Sample("req_total", {"job": "b"}, 1.0 * t),
                Sample("limit", {"job": "a"}, 1000.0),
            ],
            source="checks",
        )
    return h


def _values(v: object) -> dict[tuple[tuple[str, str], ...], float]:
    assert isinstance(v, Vector)
    return {tuple(sorted(e.labels.items())): e.value for e in v}


def test_instant_selectors_functions_aggregations_and_joins() -> None:
    e = Engine(_history())
    assert _values(e.instant('req_total{job="a"}', 600)) == {(("__name__", "req_total"), ("job", "a")): 1200.0}
    rate = _values(e.instant("rate(req_total[5m])", 600))
    assert rate[(("job", "a"),)] == pytest.approx(2.0)
    assert _values(e.instant("sum(rate(req_total[5m]))", 600))[()] == pytest.approx(3.0)
    ratio = _values(e.instant("req_total / on(job) limit > 0.8", 600))
    assert ratio == {(("job", "a"),): 1.2}
    assert _values(e.instant("req_total unless on(job) limit", 600)) == {(("__name__", "req_total"), ("job", "b")): 600.0}
    pl = _values(e.instant("predict_linear(req_total[5m], 3600)", 600))
    assert pl[(("job", "b"),)] == pytest.approx(4200.0)
    assert _values(e.instant("max_over_time(req_total[1m:15s])", 600))[(("job", "a"),)] == 1200.0
    assert e.instant("time()", 600) == Scalar(600.0, 600.0)
    absent = _values(e.instant('absent(nope{job="x"})', 600))
    assert absent == {(("job", "x"),): 1.0}


def test_staleness_and_lookback() -> None:
    h = History()
    h.append(0, [Sample("up", {"job": "a"}, 1)], source="s")
    h.append(10, [], source="s")
    e = Engine(h)
    assert _values(e.instant("up", 5)) == {(("__name__", "up"), ("job", "a")): 1.0}
    assert _values(e.instant("up", 20)) == {}
    h2 = History()
    h2.append(0, [Sample("up", {}, 1)], source="s")
    e2 = Engine(h2)
    assert _values(e2.instant("up", 299.999)) != {}
    assert _values(e2.instant("up", 300)) == {}  # the lookback window is open on the left


def test_range_query_and_errors() -> None:
    e = Engine(_history())
    m = e.range("req_total * 2", 0, 60, 30)
    assert isinstance(m, Matrix)
    assert [s.labels for s in m] == [{"job": "a"}, {"job": "b"}]
    assert m[0].points == [(0.0, 0.0), (30.0, 120.0), (60.0, 240.0)]
    with pytest.raises(EvalError, match="same labelset"):
        e.instant("label_replace(req_total, 'job', 'x', 'job', '.*')", 600)
    with pytest.raises(EvalError, match="many-to-many"):
        e.instant("limit + on() req_total", 600)


def test_nan_and_division() -> None:
    e = Engine(_history())
    v = _values(e.instant("req_total / 0", 600))
    assert v[(("job", "a"),)] == math.inf
    assert math.isnan(_values(e.instant("req_total % 0", 600))[(("job", "a"),)])


def test_needed_history_and_selected_series() -> None:
    assert needed_history_s(parse("rate(x[5m] offset 1h)")) == 3900
    assert needed_history_s(parse("max_over_time(rate(x[5m])[1h:1m])")) == 3900
    assert needed_history_s(parse("up")) == 300
    sel = selected_series(parse('rate(a{job="x"}[5m]) / on() group_left b or {__name__="c"}'))
    assert [s.metric for s in sel] == ["a", "b", "c"]
    assert [(m.name, m.op, m.value) for m in sel[0].matchers] == [("__name__", "=", "a"), ("job", "=", "x")]


def test_needed_history_by_metric_adds_up_along_each_path() -> None:
    """Ranges, offsets and subquery ranges add up per selector; the longest read of each name
    wins; a selector without one exact name is keyed None; a literal reads nothing."""
    minute = 60.0
    nested = parse("max_over_time(rate(x[5m])[1h:1m] offset 30m)")
    assert needed_history_by_metric_s(nested) == {"x": 5 * minute + 3600 + 30 * minute}
    both = parse(
        'changes(foo[1d]) + rate(foo[5m] offset 2h) + bar + {__name__="baz"} + count_over_time({__name__=~"q.*"}[2h])'
    )
    assert needed_history_by_metric_s(both, lookback_s=300) == {"foo": 86400, "bar": 300, "baz": 300, None: 7200}
    assert needed_history_by_metric_s(parse('{__name__="a" or __name__="b"}')) == {None: 300}
    assert needed_history_by_metric_s(parse("vector(1)")) == {}


def test_a_cycle_gives_the_same_values_as_separate_queries() -> None:
    e = Engine(_history())
    exprs = [
        "sum(rate(req_total[5m]))",
        "rate(req_total[5m]) > 1",
        "max_over_time(rate(req_total[5m])[2m:30s])",
        "max_over_time(rate(req_total[5m])[2m:30s]) * 2",
        "req_total / on(job) limit",
    ]
    cycle = e.cycle(600)
    for text in exprs:
        assert _values(cycle.instant(text)) == _values(e.instant(text, 600)), text


def test_equal_subtrees_are_one_object() -> None:
    a = parse("rate(x[5m]) > 1")
    b = parse("sum(rate(x[5m]))")
    assert a.root.lhs is b.root.expr  # type: ignore[attr-defined]


def test_annotations_carry_prometheus_messages_and_positions() -> None:
    e = Engine(_history())
    _, notes = e.instant_annotated("rate(limit[5m])", 600)
    assert notes == [
        'PromQL info: metric might not be a counter, name does not end in _total/_sum/_count/_bucket: "limit" (1:6)'
    ]
    _, notes = e.instant_annotated("quantile(1.5, limit)", 600)
    assert notes == ["PromQL warning: quantile value should be between 0 and 1, got 1.5 (1:10)"]
    _, notes = e.range_annotated("sum(sort(limit))", 0, 60, 30)
    assert notes == [
        "PromQL warning: sort is ineffective for range queries since results are always ordered by labels (1:5)"
    ]
    assert e.instant_annotated("rate(req_total[5m])", 600)[1] == []


def test_kept_subquery_steps_match_fresh_evaluation_and_a_write_into_the_past_drops_them() -> None:
    h = History()
    for t in range(0, 601, 10):
        h.append(t, [Sample("g", {"k": "a"}, float(t % 70))], source="s")
    engine = Engine(h)
    expr = parse("max_over_time(g[5m:1m])")
    first = _values(engine.instant(expr, 600))
    assert engine.steps  # steps older than a minute before the newest sample were kept
    for t in range(610, 700, 10):  # the window slides; kept steps are reused
        h.append(t, [Sample("g", {"k": "a"}, float(t % 70))], source="s")
        assert _values(engine.instant(expr, t)) == _values(Engine(h).instant(expr, t))
    assert first
    h.add({"__name__": "g", "k": "a"}, 480, 1000.0)  # a write into the past
    assert _values(engine.instant(expr, 690)) == {(("k", "a"),): 1000.0}


@pytest.mark.parametrize(
    "values",
    [
        [50.0 + 40.0 * math.sin(k / 30.0) + (k % 7) for k in range(600)],  # a gauge
        [3.5] * 120,  # constant: slope 0, the value itself
        [0.0, -0.0] * 60,  # zeros of both signs are one constant
        [1e300, -1e300, 1e300] * 40,  # huge values that cancel
        [1.0, 2.0, math.inf] + [3.0] * 50,  # non-finite: Prometheus's loop
    ],
)
def test_deriv_and_predict_linear_match_prometheus_loop(values: list[float]) -> None:
    """Two series from one check run share their times (one cached sum of the times serves
    both); each answers as the Kahan loop of Prometheus's linearRegression over its points."""
    from monitor.rules.promql.functions import linear_regression

    h = History()
    t0 = 1_000
    for k, v in enumerate(values):
        h.append(t0 + k, [Sample("g", {"i": "a"}, v), Sample("g", {"i": "b"}, v * 2)])
    end = t0 + len(values) - 1
    e = Engine(h)
    window = len(values) * 1000  # (end - window, end]: every point
    times = [(t0 + k) * 1000 for k in range(len(values))]
    deriv = e.instant(f"deriv(g[{window}ms])", end)
    pred = e.instant(f"predict_linear(g[{window}ms], 60)", end)
    assert isinstance(deriv, Vector) and isinstance(pred, Vector)
    for scale, d, p in zip((1, 2), deriv, pred, strict=True):
        ys = [v * scale for v in values]
        slope, _ = linear_regression(times, ys, times[0])
        slope_now, intercept_now = linear_regression(times, ys, end * 1000)
        for got, want in ((d.value, slope), (p.value, slope_now * 60 + intercept_now)):
            assert got == pytest.approx(want, rel=1e-9, abs=1e-9, nan_ok=True), (values[:3], got, want)


def test_regression_sums_kept_between_evaluations_equal_fresh_ones() -> None:
    """deriv/predict_linear and changes over windows that slide with appends, trims, a write into
    the past and a rebase answer exactly as sums and counts computed afresh over each window."""
    import random

    rnd = random.Random(7)
    kept, fresh = History(retention_s=200), History(retention_s=200)
    exprs = ["deriv(g[60s])", "predict_linear(g[150s], 30)", "deriv(g[37s])", "changes(g[60s])", "changes(r[45s])"]
    checked = 0
    for t in range(0, 500):
        samples = [
            Sample("g", {"i": "a"}, rnd.uniform(-1e6, 1e6) * 10 ** rnd.randint(-8, 8)),
            Sample("g", {"i": "b"}, 40.0 + t * 0.25 + rnd.random()),
            Sample("r", {}, float(rnd.choice([0, 0, 0, 1, math.nan]))),  # repeats, NaN: changes()
        ]
        for h in (kept, fresh):
            h.append(t, samples, source="s")
            if t % 50 == 0:
                h.trim(t)
            if t == 300:
                h.add({"__name__": "g", "i": "b"}, 280.5, 1e9)  # into the past: sums start again
            if t == 420:
                h.add({"__name__": "g", "i": "a"}, -5.0, 3.0)  # before the first sample: a new base
        if t < 40 or t % 3:
            continue
        for s in fresh.series():
            s.memo = None
        for expr in exprs:
            a, b = Engine(kept).instant(expr, t), Engine(fresh).instant(expr, t)
            assert isinstance(a, Vector) and isinstance(b, Vector)
            assert [(x.labels, x.value) for x in a] == [(x.labels, x.value) for x in b], (t, expr)
            checked += len(a)
    assert checked > 800
    assert any(s.memo for s in kept.series())  # the kept sums were used
