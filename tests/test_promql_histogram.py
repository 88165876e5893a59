"""Native histograms in monitor.rules.promql: the arithmetic where it is subtle (schema reduction,
zero buckets, counter resets, custom bucket bounds) and the engine reading a HistogramStore.

Prometheus's own cases run in tests/test_promql_conformance.py; these pin the behaviour with
small hand-computed examples.
"""

from __future__ import annotations

import math

import pytest

from monitor.history import History
from monitor.rules.promql import Engine, Vector
from monitor.rules.promql.histogram import (
    CUSTOM_SCHEMA,
    GAUGE,
    NOT_RESET,
    FloatHistogram,
    HistogramStore,
    IncompatibleSchemas,
    quantile,
)

MIN = 60_000


def exp_hist(schema: int, pos: dict[int, float], sum: float = 0.0, **kw: float) -> FloatHistogram:
    return FloatHistogram(schema=schema, count=sum_counts(pos) + kw.get("zero_count", 0.0), sum=sum, pos=pos, **kw)


def sum_counts(pos: dict[int, float]) -> float:
    return float(sum(pos.values()))


def nhcb(bounds: list[float], counts: list[float], total: float = 0.0) -> FloatHistogram:
    return FloatHistogram(
        schema=CUSTOM_SCHEMA, count=sum(counts), sum=total, pos=dict(enumerate(counts)), custom=bounds
    )


def engine_with(series: dict[str, list[tuple[int, FloatHistogram]]]) -> tuple[Engine, History]:
    history = History(retention_s=1e9)
    store = HistogramStore()
    for text, points in series.items():
        name, _, rest = text.partition("{")
        labels = {"__name__": name}
        if rest:
            for pair in rest.rstrip("}").split(","):
                k, v = pair.split("=")
                labels[k] = v.strip('"')
        for t, h in points:
            store.add_ms(labels, t, h)
    return Engine(history, histograms=store), history


# ---- arithmetic ----------------------------------------------------------------------------------
def test_adding_a_coarser_schema_reduces_the_finer_one() -> None:
    fine = exp_hist(1, {1: 1, 2: 2, 3: 3})  # schema 1: (1, √2], (√2, 2], (2, 2√2]
    coarse = exp_hist(0, {1: 4})  # schema 0: (1, 2]
    total, reconciled = fine.add(coarse)
    assert not reconciled
    assert total.schema == 0
    # schema-1 buckets 1 and 2 both lie in (1, 2] = schema-0 bucket 1; bucket 3 in (2, 4] = bucket 2
    assert total.pos == {1: 1 + 2 + 4, 2: 3}
    assert total.count == 10
    # the operands are unchanged
    assert fine.schema == 1 and fine.pos == {1: 1, 2: 2, 3: 3}
    assert coarse.add(fine)[0].pos == total.pos


def test_a_wider_zero_bucket_swallows_the_buckets_inside_it() -> None:
    narrow = exp_hist(0, {0: 1, 1: 2, 2: 3})  # (0.5, 1], (1, 2], (2, 4]
    wide = exp_hist(0, {2: 1}, zero_threshold=1.0, zero_count=5)
    total, _ = narrow.add(wide)
    assert total.zero_threshold == 1.0
    assert total.zero_count == 5 + 1  # (0.5, 1] lies inside [-1, 1]
    assert total.pos == {1: 2, 2: 4}


def test_custom_and_exponential_buckets_do_not_add() -> None:
    with pytest.raises(IncompatibleSchemas):
        nhcb([1, 2], [1, 1, 1]).add(exp_hist(0, {1: 1}))


def test_different_custom_bounds_are_reconciled_to_the_shared_ones() -> None:
    a = nhcb([1, 2, 4], [1, 2, 3, 4])  # (-Inf,1] (1,2] (2,4] (4,+Inf)
    b = nhcb([1, 4], [10, 20, 30])
    total, reconciled = a.add(b)
    assert reconciled
    assert total.custom == (1, 4)
    assert total.pos == {0: 1 + 10, 1: 2 + 3 + 20, 2: 4 + 30}
    assert total.count == a.count + b.count


def test_a_lower_count_or_a_vanished_bucket_is_a_counter_reset() -> None:
    before = exp_hist(0, {1: 5, 2: 5})
    assert not exp_hist(0, {1: 6, 2: 5}).detect_reset(before)
    assert exp_hist(0, {1: 3}).detect_reset(before)  # count 3 < 10
    assert exp_hist(0, {1: 20, 3: 1}).detect_reset(before)  # bucket 2 went from 5 to 0
    assert exp_hist(1, {1: 20, 2: 20, 3: 20, 4: 20}).detect_reset(before)  # a finer schema
    hinted = exp_hist(0, {1: 1})
    hinted.hint = NOT_RESET
    assert not hinted.detect_reset(before)  # the stored hint wins over the counts


def test_quantile_interpolates_exponentially_inside_a_bucket() -> None:
    h = exp_hist(0, {1: 4}, sum=6.0)  # all four observations in (1, 2]
    assert quantile(0.5, h) == pytest.approx(math.sqrt(2))
    assert quantile(1.0, h) == pytest.approx(2.0)
    assert math.isnan(quantile(0.5, exp_hist(0, {})))
    assert quantile(-1, h) == -math.inf and quantile(2, h) == math.inf


# ---- the engine ---------------------------------------------------------------------------------
def test_increase_adds_back_what_the_counter_had_before_a_reset() -> None:
    bounds = [1.0, 10.0]
    points = [
        (10_000, nhcb(bounds, [4, 6, 0])),  # count 10
        (70_000, nhcb(bounds, [8, 12, 0])),  # count 20
        (130_000, nhcb(bounds, [1, 4, 0])),  # count 5: reset
        (190_000, nhcb(bounds, [5, 10, 0])),  # count 15
    ]
    engine, _ = engine_with({"req": points})
    value = engine.instant("increase(req[4m])", 190.0)
    assert isinstance(value, Vector) and len(value) == 1
    h = value[0].histogram
    assert h is not None
    # 15 - 10 + 20 (the count before the reset) = 25, extrapolated from the 180 s sampled to
    # 240 s (60 s to the window's start is within 1.1 sample intervals): × 4/3
    assert h.count == pytest.approx(25 * 4 / 3)
    assert h.pos[0] == pytest.approx((5 - 4 + 8) * 4 / 3)
    assert h.pos[1] == pytest.approx((10 - 6 + 12) * 4 / 3)
    assert h.hint == GAUGE
    assert value[0].labels == {}


def test_sum_of_mismatched_custom_buckets_is_reconciled_with_an_info() -> None:
    engine, _ = engine_with(
        {
            'lat{i="a"}': [(0, nhcb([1, 2, 4], [1, 1, 1, 1]))],
            'lat{i="b"}': [(0, nhcb([1, 4], [2, 2, 2]))],
        }
    )
    value, notes = engine.instant_annotated("sum(lat)", 0.0)
    assert isinstance(value, Vector) and len(value) == 1
    h = value[0].histogram
    assert h is not None and h.custom == (1, 4)
    assert h.pos == {0: 3, 1: 4, 2: 3}
    assert notes == ["PromQL info: mismatched custom buckets were reconciled during aggregation (1:1)"]


def test_custom_and_exponential_in_one_sum_drop_the_group_with_a_warning() -> None:
    engine, _ = engine_with(
        {
            'lat{i="a"}': [(0, nhcb([1], [1, 1]))],
            'lat{i="b"}': [(0, exp_hist(0, {1: 2}))],
        }
    )
    value, notes = engine.instant_annotated("sum(lat)", 0.0)
    assert value == Vector()
    assert any("mix of histograms with exponential and custom buckets" in n for n in notes), notes
    assert all(n.startswith("PromQL warning:") for n in notes)


def test_histograms_and_floats_of_one_series_take_turns_by_time() -> None:
    engine, history = engine_with({"m": [(0, exp_hist(0, {1: 1})), (2 * MIN, exp_hist(0, {1: 3}))]})
    history.add_ms({"__name__": "m"}, MIN, 7.0)
    at_1m = engine.instant("m", 60.0)
    assert isinstance(at_1m, Vector) and at_1m[0].histogram is None and at_1m[0].value == 7.0
    at_2m = engine.instant("m", 120.0)
    assert isinstance(at_2m, Vector) and at_2m[0].histogram is not None and at_2m[0].histogram.count == 3
    # float-only functions leave histograms out; histogram_count reads them
    assert engine.instant("abs(m)", 120.0) == Vector()
    counted = engine.instant("histogram_count(m)", 120.0)
    assert isinstance(counted, Vector) and counted[0].value == 3
    matrix = engine.range("m", 0.0, 120.0, 60.0)
    assert [t for t, _ in matrix[0].points] == [60.0]
    assert [(t, h.count) for t, h in matrix[0].histograms] == [(0.0, 1), (120.0, 3)]


def test_a_histogram_times_a_float_scales_every_count() -> None:
    engine, _ = engine_with({"m": [(0, exp_hist(0, {1: 1, 2: 3}, sum=5.0))]})
    value = engine.instant("m * 2", 0.0)
    assert isinstance(value, Vector)
    h = value[0].histogram
    assert h is not None and h.pos == {1: 2, 2: 6} and h.sum == 10 and h.count == 8
    value, notes = engine.instant_annotated("m + 2", 0.0)
    assert value == Vector()
    assert notes and notes[0].startswith('PromQL info: incompatible sample types encountered for binary operator "+"')
