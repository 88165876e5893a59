"""The no-data question over PromQL: which input series of a rule exist, whatever its condition."""

from __future__ import annotations

from monitor.history import History
from monitor.model import Sample
from monitor.rules.promql import Engine, parse
from monitor.rules.promql.inputs import as_bool, input_series
from monitor.rules.promql.parse import Binary


def _engine() -> Engine:
    h = History()
    for t in range(0, 601, 15):
        h.append(t, [Sample("stalled_seconds", {"channel": "a"}, 100.0 + t),
                     Sample("stalled_seconds", {"channel": "b"}, 5000.0),
                     Sample("errors_total", {"job": "x"}, 2.0 * t)])
    return Engine(h, lookback_s=300)


def test_a_comparison_filters_but_its_inputs_are_all_there() -> None:
    e = _engine()
    expr = parse("stalled_seconds > 1800")
    assert [el.labels.get("channel") for el in e.instant(expr, 600)] == ["b"]
    assert sorted(s["channel"] for s in input_series(e, expr, 600)) == ["a", "b"]
    assert input_series(e, parse('stalled_seconds{channel="gone"} > 1800'), 600) == []


def test_functions_and_set_operators_keep_their_shape() -> None:
    e = _engine()
    expr = parse("rate(errors_total[5m]) > 10 and on() stalled_seconds > 1e9")
    assert e.instant(expr, 600) == []
    assert input_series(e, expr, 600) == [{"job": "x"}]
    root = as_bool(parse("a > 1 unless b == 0")).root
    assert isinstance(root, Binary) and root.op == "unless" and not root.return_bool
    assert isinstance(root.lhs, Binary) and isinstance(root.rhs, Binary)
    assert root.lhs.return_bool and root.rhs.return_bool


def test_absent_is_its_own_condition_and_always_has_data() -> None:
    e = _engine()
    assert input_series(e, parse('absent(stalled_seconds{channel="zz"})'), 600) == [{"channel": "zz"}]
    assert input_series(e, parse('absent(stalled_seconds{channel="a"})'), 600) == [{"channel": "a"}]
