"""Aggregation operators: sum min max avg count group stddev stdvar topk bottomk quantile count_values.

As Prometheus's `aggregation`, `aggregationK` and `aggregationCountValues` (`promql/engine.go`):
Kahan-compensated sums, the mean computed directly until the sum would overflow, Welford's
variance, NaN losing to any number in min/max/topk/bottomk, `without` dropping the metric name,
and the result marked for name removal when any input was.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from monitor.rules.promql.parse import Aggregate, StringLit
from monitor.rules.promql.values import EvalError, InstantVector, Internal, Sample, fmt_float


def kahan_inc(inc: float, total: float, c: float) -> tuple[float, float]:
    t = total + inc
    if math.isinf(t):
        c = 0.0
    elif abs(total) >= abs(inc):
        c += (total - t) + inc
    else:
        c += (inc - t) + total
    return t, c


def kahan_sum(values: Sequence[float]) -> float:
    total = 0.0
    c = 0.0
    for v in values:
        total, c = kahan_inc(v, total, c)
    if math.isinf(total):
        return total
    return total + c


def fast_sum(values: Sequence[float]) -> float:
    """Prometheus's Kahan-Neumaier sum. Without heavy cancellation (the result within six orders of
    magnitude of the largest term) it equals the exactly rounded `math.fsum` to far better than
    any comparison needs, so that runs at C speed; otherwise (and for infinities) the loop runs."""
    try:
        total = math.fsum(values)
    except (OverflowError, ValueError):
        return kahan_sum(values)
    if not math.isfinite(total):
        return kahan_sum(values)
    biggest = max(max(values), -min(values))
    if biggest == 0 or abs(total) * 1e6 >= biggest:
        return total
    return kahan_sum(values)


def fast_avg(values: Sequence[float]) -> float:
    """Prometheus's mean: the compensated sum over the count, incremental when the sum overflows."""
    try:
        total = math.fsum(values)
    except (OverflowError, ValueError):
        return _avg(values)
    if math.isfinite(total):
        biggest = max(max(values), -min(values))
        if biggest == 0 or abs(total) * 1e6 >= biggest:
            return total / len(values)
    return _avg(values)


def quantile(q: float, values: list[float]) -> float:
    """Prometheus's `quantile` (promql/quantile.go): linear between closest ranks, NaN sorts first."""
    if not values or math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    if any(map(math.isnan, values)):
        vs = sorted(values, key=lambda v: (not math.isnan(v), v if not math.isnan(v) else 0.0))
    else:
        vs = sorted(values)
    n = len(vs)
    rank = q * (n - 1)
    lower = max(0, math.floor(rank))
    upper = min(n - 1, lower + 1)
    weight = rank - math.floor(rank)
    return vs[int(lower)] * (1 - weight) + vs[int(upper)] * weight


def _group_fn(
    node: Aggregate,
) -> tuple[Callable[[dict[str, str]], object], Callable[[dict[str, str]], dict[str, str]]]:
    labels = node.labels
    if node.without:
        dropped = frozenset(labels) | {"__name__"}

        def key_without(m: dict[str, str]) -> object:
            items = frozenset(m.items())
            gone = [(k, m[k]) for k in dropped if k in m]
            return items.difference(gone) if gone else items

        def labels_without(m: dict[str, str]) -> dict[str, str]:
            return {k: v for k, v in m.items() if k not in dropped}

        return key_without, labels_without
    names = tuple(sorted(set(labels)))

    def key_by(m: dict[str, str]) -> object:
        return tuple(m.get(n, "") for n in names)

    def labels_by(m: dict[str, str]) -> dict[str, str]:
        return {n: m[n] for n in names if m.get(n, "")}

    return key_by, labels_by


def evaluate(node: Aggregate, param: Internal | None, vec: InstantVector) -> InstantVector:
    op = node.op
    if op == "count_values":
        return _count_values(node, param, vec)
    if op in ("topk", "bottomk"):
        return _topk(node, param, vec)
    if op == "limitk":
        return _limitk(node, param, vec)
    if op == "limit_ratio":
        return _limit_ratio(node, param, vec)
    key_of, labels_of = _group_fn(node)
    groups: dict[object, list[Sample]] = {}
    for s in vec:
        groups.setdefault(key_of(s.metric), []).append(s)
    out = InstantVector()
    q = param if isinstance(param, float) else math.nan
    for members in groups.values():
        first = members[0]
        drop = any(s.drop for s in members)
        values = [s.value for s in members]
        value = _reduce(op, values, q)
        out.append(Sample(labels_of(first.metric), value, drop))
    return out


def _reduce(op: str, values: list[float], q: float) -> float:
    if op == "sum":
        return fast_sum(values)
    if op == "avg":
        return fast_avg(values)
    if op == "count":
        return float(len(values))
    if op == "group":
        return 1.0
    if op == "max":
        best = values[0]
        for v in values[1:]:
            if best < v or math.isnan(best):
                best = v
        return best
    if op == "min":
        best = values[0]
        for v in values[1:]:
            if best > v or math.isnan(best):
                best = v
        return best
    if op in ("stddev", "stdvar"):
        first = values[0]
        acc = math.nan if (math.isnan(first) or math.isinf(first)) else 0.0
        mean = first
        count = 1.0
        for v in values[1:]:
            count += 1
            delta = v - mean
            mean += delta / count
            acc += delta * (v - mean)
        var = acc / count
        return math.sqrt(var) if op == "stddev" else var
    if op == "quantile":
        return quantile(q, values)
    raise EvalError(f"unknown aggregation {op!r}")


def _avg(values: Sequence[float]) -> float:
    total = values[0]
    c = 0.0
    mean = values[0]
    count = 1.0
    incremental = False
    for v in values[1:]:
        count += 1
        if not incremental:
            new_total, new_c = kahan_inc(v, total, c)
            if not math.isinf(new_total):
                total, c = new_total, new_c
                continue
            incremental = True
            mean = total / (count - 1)
            c /= count - 1
        qq = (count - 1) / count
        mean, c = kahan_inc(v / count, qq * mean, qq * c)
    if incremental:
        return mean + c
    return total / count + c / count


def _count_values(node: Aggregate, param: Internal | None, vec: InstantVector) -> InstantVector:
    if not isinstance(param, str):
        raise EvalError("count_values needs a string label name")
    label = param
    if not label:
        raise EvalError(f'invalid label name "{label}"')
    if isinstance(node.param, StringLit) and node.param.invalid_utf8 is not None:
        raise EvalError(f'invalid label name "{node.param.invalid_utf8}"')
    names = set(node.labels)
    if not node.without:
        names.add(label)
    grouping = Aggregate(node.op, node.expr, node.param, node.without, tuple(sorted(names)))
    key_of, labels_of = _group_fn(grouping)
    counts: dict[object, list[object]] = {}
    for s in vec:
        metric = dict(s.metric)
        metric[label] = fmt_float(s.value)
        key = key_of(metric)
        entry = counts.get(key)
        if entry is None:
            counts[key] = [labels_of(metric), 1]
        else:
            entry[1] = int(entry[1]) + 1  # type: ignore[call-overload]
    return InstantVector(Sample(m, float(n), False) for m, n in counts.values())  # type: ignore[arg-type]


def _int_param(op: str, param: Internal | None) -> float:
    if not isinstance(param, float):
        raise EvalError(f"{op} needs a number")
    if math.isnan(param):
        raise EvalError("Parameter value is NaN")
    if param >= 9.223372036854775807e18:
        raise EvalError(f"Scalar value {fmt_float(param)} overflows int64")
    if param <= -9.223372036854775808e18:
        raise EvalError(f"Scalar value {fmt_float(param)} underflows int64")
    return param


def _limitk(node: Aggregate, param: Internal | None, vec: InstantVector) -> InstantVector:
    """The first k series of each group, in the order the selector returned them."""
    k = int(_int_param("limitk", param))
    if k < 1:
        return InstantVector()
    key_of, _ = _group_fn(node)
    taken: dict[object, int] = {}
    out = InstantVector()
    for s in vec:
        key = key_of(s.metric)
        n = taken.get(key, 0)
        if n < k:
            taken[key] = n + 1
            out.append(s)
    return out


def _limit_ratio(node: Aggregate, param: Internal | None, vec: InstantVector) -> InstantVector:
    """A deterministic sample of about `ratio` of the series (a hash of the labels decides);
    a negative ratio takes the complement, so limit_ratio(r) and limit_ratio(-(1-r)) partition."""
    if not isinstance(param, float):
        raise EvalError("limit_ratio needs a number")
    if math.isnan(param):
        raise EvalError("Ratio value is NaN")
    ratio = max(-1.0, min(1.0, param))
    if ratio == 0:
        return InstantVector()
    out = InstantVector()
    for s in vec:
        offset = _label_hash(s.metric)
        if (ratio >= 0 and offset < ratio) or (ratio < 0 and offset >= 1 + ratio):
            out.append(s)
    return out


def _label_hash(metric: dict[str, str]) -> float:
    import hashlib

    digest = hashlib.blake2b("\xff".join(f"{k}\xfe{v}" for k, v in sorted(metric.items())).encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big") / 2.0**64


def _less(a: float, b: float) -> bool:
    """vectorByValueHeap.Less: NaN is the smallest."""
    if math.isnan(a):
        return True
    return a < b


def _topk(node: Aggregate, param: Internal | None, vec: InstantVector) -> InstantVector:
    k = min(int(_int_param(node.op, param)), len(vec))
    if k < 1:
        return InstantVector()
    top = node.op == "topk"
    less: Callable[[Sample, Sample], bool]
    if top:

        def less(a: Sample, b: Sample) -> bool:
            return _less(a.value, b.value)
    else:

        def less(a: Sample, b: Sample) -> bool:
            return math.isnan(a.value) or a.value > b.value

    key_of, _ = _group_fn(node)
    heaps: dict[object, list[Sample]] = {}
    for s in vec:
        key = key_of(s.metric)
        h = heaps.get(key)
        if h is None:
            heaps[key] = [s]
            continue
        if len(h) < k:
            h.append(s)
            _up(h, len(h) - 1, less)
        elif (top and (h[0].value < s.value or (math.isnan(h[0].value) and not math.isnan(s.value)))) or (
            not top and (h[0].value > s.value or (math.isnan(h[0].value) and not math.isnan(s.value)))
        ):
            h[0] = s
            if k > 1:
                _down(h, 0, len(h), less)
    out = InstantVector()
    for h in heaps.values():
        ordered = sorted(h, key=_sort_key, reverse=top)
        if not top:
            ordered = sorted(h, key=_sort_key_bottom)
        out.extend(ordered)
    return out


def _sort_key(s: Sample) -> tuple[int, float]:
    return (0, 0.0) if math.isnan(s.value) else (1, s.value)


def _sort_key_bottom(s: Sample) -> tuple[int, float]:
    return (1, 0.0) if math.isnan(s.value) else (0, s.value)


def _up(h: list[Sample], j: int, less: Callable[[Sample, Sample], bool]) -> None:
    while True:
        i = (j - 1) // 2
        if i == j or j <= 0 or not less(h[j], h[i]):
            break
        h[i], h[j] = h[j], h[i]
        j = i


def _down(h: list[Sample], i0: int, n: int, less: Callable[[Sample, Sample], bool]) -> None:
    i = i0
    while True:
        j1 = 2 * i + 1
        if j1 >= n or j1 < 0:
            break
        j = j1
        j2 = j1 + 1
        if j2 < n and less(h[j2], h[j1]):
            j = j2
        if not less(h[j], h[i]):
            break
        h[i], h[j] = h[j], h[i]
        i = j
