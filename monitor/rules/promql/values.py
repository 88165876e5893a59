"""The values a PromQL expression evaluates to, public and internal.

Public (what `Engine.instant`/`Engine.range` return; times in seconds):
`Scalar(value, t)`, `String(value, t)`, `Vector` (a list of `Element(labels, value, t)`) and
`Matrix` (a list of `Series(labels, points)`, points being `(t, value)` pairs in time order).

A native histogram sample is an `Element` (or a `Series` point in `histograms`) whose
`histogram` is a `FloatHistogram` (its `value` is then 0 and means nothing).

Internal (milliseconds, label dicts shared with the history and never mutated in place):
`Sample` of an instant vector carries `drop` (the metric name is to be removed at the end of the
query, Prometheus 3's delayed name removal) and `t` (the sample's own time, for `timestamp()`);
`RangeSeries` of a range vector is either a window of a history series (no copy) or the
points of a subquery. A `Sample` with `h` set is a histogram sample; a `RangeSeries` keeps the
histogram points of its window in `hs` (None when there are none).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from monitor.history import Series as HistorySeries
from monitor.rules.promql.histogram import FloatHistogram


class EvalError(Exception):
    """A query that Prometheus refuses at evaluation time (duplicate series, bad arguments)."""


# ---- public --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Scalar:
    value: float
    t: float


@dataclass(frozen=True, slots=True)
class String:
    value: str
    t: float


@dataclass(slots=True)
class Element:
    labels: dict[str, str]
    value: float
    t: float
    histogram: FloatHistogram | None = None


class Vector(list[Element]):
    """An instant vector: one element per series, labels include `__name__` where kept."""


@dataclass(slots=True)
class Series:
    labels: dict[str, str]
    points: list[tuple[float, float]] = field(default_factory=list)
    histograms: list[tuple[float, FloatHistogram]] = field(default_factory=list)


class Matrix(list[Series]):
    """A range vector or a range query's result."""


Value = Scalar | String | Vector | Matrix


# ---- internal ------------------------------------------------------------------------------
class Sample:
    __slots__ = ("metric", "value", "drop", "t", "h")

    def __init__(
        self,
        metric: dict[str, str],
        value: float,
        drop: bool = False,
        t: int | None = None,
        h: FloatHistogram | None = None,
    ) -> None:
        self.metric = metric
        self.value = value
        self.drop = drop
        self.t = t
        self.h = h

    def __repr__(self) -> str:
        return f"Sample({self.metric}, {self.h if self.h is not None else self.value}, drop={self.drop})"


class InstantVector(list[Sample]):
    pass


class RangeSeries:
    """One series' points in a window: a slice of a history series, or lists from a subquery."""

    __slots__ = ("metric", "drop", "_series", "_i", "_j", "_ts", "_vs", "hs")

    def __init__(
        self,
        metric: dict[str, str],
        drop: bool = False,
        series: HistorySeries | None = None,
        i: int = 0,
        j: int = 0,
        ts: Sequence[int] | None = None,
        vs: Sequence[float] | None = None,
    ) -> None:
        self.metric = metric
        self.drop = drop
        self._series = series
        self._i = i
        self._j = j
        self._ts = ts
        self._vs = vs
        self.hs: list[tuple[int, FloatHistogram]] | None = None

    def __len__(self) -> int:
        if self._series is not None:
            return self._j - self._i
        assert self._vs is not None
        return len(self._vs)

    def values(self) -> Sequence[float]:
        if self._series is not None:
            return self._series.vs[self._i : self._j]
        assert self._vs is not None
        return self._vs

    def times(self) -> Sequence[int]:
        if self._series is not None:
            return self._series.times(self._i, self._j)
        assert self._ts is not None
        return self._ts

    def raw_times(self) -> tuple[Sequence[int], int]:
        """Timestamps as stored (ms after a base) and the base: integers without a copy per point."""
        if self._series is not None:
            return self._series.ts[self._i : self._j], self._series.base
        assert self._ts is not None
        return self._ts, 0

    def t_at(self, k: int) -> int:
        if self._series is not None:
            idx = self._i + k if k >= 0 else self._j + k
            return self._series.ts[idx] + self._series.base
        assert self._ts is not None
        return self._ts[k]

    def v_at(self, k: int) -> float:
        if self._series is not None:
            idx = self._i + k if k >= 0 else self._j + k
            return self._series.vs[idx]
        assert self._vs is not None
        return self._vs[k]

    def resets(self) -> tuple[int, float]:
        """Count of counter resets in the window and the sum of the values before them."""
        if self._series is not None:
            if self._j - self._i < 2:
                return 0, 0.0
            indexed = self._series.resets_in(self.t_at(0), self.t_at(-1))
            if indexed is not None:
                return indexed
        vs = self.values()
        n = 0
        total = 0.0
        for k in range(1, len(vs)):
            if vs[k] < vs[k - 1]:
                n += 1
                total += vs[k - 1]
        return n, total


class RangeVector(list[RangeSeries]):
    pass


Internal = float | str | InstantVector | RangeVector


def fmt_float(v: float) -> str:
    """A float as Go's strconv.FormatFloat(v, 'f', -1, 64) writes it."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == int(v) and abs(v) < 1e21:
        return str(int(v))
    r = repr(v)
    if "e" in r or "E" in r:
        from decimal import Decimal

        return format(Decimal(r), "f")
    return r


def labels_str(m: dict[str, str]) -> str:
    """`{__name__="x", a="b"}` as Prometheus's labels.String() prints a label set."""
    return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(m.items())) + "}"
