"""Runs Prometheus's PromQL test files (promql/promqltest format) through our engine.

    python tests/promqltest/harness.py [DIR] [-v] [--file NAME]

DIR defaults to $PROMQLTEST_DIR, else ../shared/reference/promqltest from the project root.
Each `eval` command is one case: passed, failed, or skipped with a reason. Supported: `load`
(float samples, `stale`, native histogram literals `{{schema:0 sum:5 count:4 buckets:[1 2 1] …}}`
and their series `{{…}}+{{…}}x3`), `load_with_nhcb` (the classic `_bucket`/`_sum`/`_count`
series and, beside them, the custom-bucket histograms Prometheus converts them to), `clear`,
`eval instant at`, `eval range from … to … step`, the deprecated `eval_fail`/`eval_ordered`/
`eval_warn`/`eval_info`, and the `expect fail`, `expect ordered`, `expect string`, `expect range
vector`, `expect warn/info/no_warn/no_info` lines. Results compare as Prometheus's harness does:
labels exactly, values within a relative 1e-6 (`almost.Equal`), NaN equal to NaN, histograms as
`compareNativeHistogram` (schema, zero threshold and custom bounds exactly, counts, sum and
non-empty buckets within 1e-6, the counter reset hint where the expected literal gives one),
order only under `expect ordered`; warnings and infos as FORMAT.md says (each `expect warn|info`
line matches one, and with any such line every one must be expected; `no_warn`/`no_info` allow
none).

Histogram samples go to a `HistogramStore` beside the float `History`; a counter histogram
loaded after another of its series is marked a reset or not one, as Prometheus's storage
returns it (the hint `expect range vector` results show).

Skipped, with the reason printed: cases that use experimental features Prometheus itself only
runs behind a feature flag (EXPERIMENTAL below: a user of a released Prometheus without the
flag gets an error for them too). The folder's README leaves those features out, so today no
case is skipped.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import promql_parser as pp  # noqa: E402

from monitor.history import STALE_NAN, History  # noqa: E402
from monitor.rules.promql import Engine, Matrix, Scalar, String, Vector  # noqa: E402
from monitor.rules.promql.histogram import (  # noqa: E402
    CUSTOM_SCHEMA,
    GAUGE,
    NOT_RESET,
    RESET,
    UNKNOWN,
    FloatHistogram,
    HistogramStore,
)

DEFAULT_DIR = ROOT.parent / "shared" / "reference" / "promqltest"

# Prometheus evaluates these only with --enable-feature=promql-experimental-functions (or another
# flag); the folder's README leaves the features out, a few cases still name them.
EXPERIMENTAL = {
    "info": "info() is an experimental function (feature flag)",
    "fill": "fill modifiers of binary operators are experimental (feature flag)",
    "anchored": "anchored range selectors are experimental (feature flag)",
    "smoothed": "smoothed range selectors are experimental (feature flag)",
}
# Durations computed by an expression (`[5m * 2]`, `offset step()`): promql-duration-expr flag.
DURATION_EXPR = re.compile(r"\[[^\]]*[-+*/^()][^\]]*\]|offset\s*\(|offset\s+-?\s*[a-z_]+\s*\(")

_DURATION = re.compile(r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$")
_UNITS_MS = (365 * 86400_000, 7 * 86400_000, 86400_000, 3600_000, 60_000, 1000, 1)


def duration_ms(text: str) -> int:
    text = text.strip()
    m = _DURATION.match(text)
    if m and any(m.groups()):
        return sum(int(g) * u for g, u in zip(m.groups(), _UNITS_MS, strict=True) if g)
    return round(float(text) * 1000)


def parse_number(text: str) -> float:
    t = text.strip()
    low = t.lower()
    if low in ("inf", "+inf"):
        return math.inf
    if low == "-inf":
        return -math.inf
    if low in ("nan", "+nan", "-nan"):
        return math.nan
    if low.startswith(("0x", "-0x", "+0x")):
        return float(int(t, 16))
    return float(t)


class Unsupported(Exception):
    """A case outside our scope (feature-flag experiments)."""


Point = float | None | str | FloatHistogram  # None: gap; "stale": staleness marker


@dataclass
class SeriesSpec:
    labels: dict[str, str]
    values: list[Point]


_HIST_FIELD = re.compile(r"([a-z_]+):\s*(\[[^\]]*\]|\S+)")


def parse_histogram(text: str) -> FloatHistogram:
    """A histogram literal `{{schema:0 sum:5 count:4 buckets:[1 2 1] ...}}`; the counter reset
    hint is "" when the literal does not give one (it is then not compared)."""
    body = text.strip()
    if not (body.startswith("{{") and body.endswith("}}")):
        raise ValueError(f"not a histogram literal: {text!r}")
    fields: dict[str, str] = {}
    for key, value in _HIST_FIELD.findall(body[2:-2]):
        fields[key] = value
    known = {"schema", "sum", "count", "z_bucket", "z_bucket_w", "buckets", "offset", "n_buckets", "n_offset"}
    known |= {"custom_values", "counter_reset_hint"}
    unknown = set(fields) - known
    if unknown:
        raise ValueError(f"unknown histogram fields {sorted(unknown)} in {text!r}")

    def num_list(key: str) -> list[float]:
        raw = fields.get(key, "[]").strip("[]").split()
        return [parse_number(x) for x in raw]

    h = FloatHistogram(
        schema=int(fields.get("schema", "0")),
        zero_threshold=parse_number(fields.get("z_bucket_w", "0")),
        zero_count=parse_number(fields.get("z_bucket", "0")),
        count=parse_number(fields.get("count", "0")),
        sum=parse_number(fields.get("sum", "0")),
        custom=num_list("custom_values") if "custom_values" in fields else None,
        hint=fields.get("counter_reset_hint", ""),
    )
    offset = int(fields.get("offset", "0"))
    for i, c in enumerate(num_list("buckets")):
        h.pos[offset + i] = c
    n_offset = int(fields.get("n_offset", "0"))
    for i, c in enumerate(num_list("n_buckets")):
        h.neg[n_offset + i] = c
    return h


def _hist_series(tok: str) -> list[Point]:
    """`{{…}}`, `{{…}}x3` (four copies), `{{a}}+{{b}}x3` or `{{a}}-{{b}}x3` (a, a±b, a±2b, a±3b)."""
    m = re.fullmatch(r"(\{\{.*?\}\})(?:([-+])(\{\{.*?\}\}))?(?:x(\d+))?", tok)
    if m is None:
        raise ValueError(f"cannot read histogram series {tok!r}")
    first = parse_histogram(m.group(1))
    times = int(m.group(4)) if m.group(4) else 0
    if m.group(3) is None:
        return [first.copy() for _ in range(times + 1)] if times else [first]
    step = parse_histogram(m.group(3))
    out: list[Point] = [first]
    current = first
    for _ in range(times):
        current = (current.add(step) if m.group(2) == "+" else current.sub(step))[0]
        current.hint = first.hint
        out.append(current)
    return out


_ITEM = re.compile(
    r"^(?P<base>[-+]?(?:[0-9.]+(?:e[-+]?[0-9]+)?|inf|nan|0x[0-9a-f]+)|_)"
    r"(?:(?P<sign>[-+])(?P<step>[0-9.]+(?:e[-+]?[0-9]+)?|inf|nan))?x(?P<times>[0-9]+)$",
    re.IGNORECASE,
)


def expand_values(text: str) -> list[Point]:
    out: list[Point] = []
    tokens = re.findall(r"\{\{.*?\}\}(?:[-+]\{\{.*?\}\})?(?:x\d+)?|\S+", text)
    for tok in tokens:
        if "{{" in tok:
            out.extend(_hist_series(tok))
            continue
        if tok == "_":
            out.append(None)
            continue
        if tok == "stale":
            out.append("stale")
            continue
        m = _ITEM.match(tok)
        if m:
            times = int(m.group("times"))
            if m.group("base") == "_":
                out.extend([None] * times)
                continue
            value = parse_number(m.group("base"))
            step = 0.0
            if m.group("step") is not None:
                step = parse_number(m.group("step"))
                if m.group("sign") == "-":
                    step = -step
            out.append(value)
            for _ in range(times):
                value += step
                out.append(value)
            continue
        out.append(parse_number(tok))
    return out


def parse_series(line: str) -> SeriesSpec:
    line = line.strip()
    if line.startswith("{") and not line.startswith("{{"):
        depth = 0
        end = 0
        in_str = False
        for i, ch in enumerate(line):
            if ch == '"' and (i == 0 or line[i - 1] != "\\"):
                in_str = not in_str
            if in_str:
                continue
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    end = i + 1
                    break
        desc, rest = line[:end], line[end:]
    else:
        m = re.match(r"^([A-Za-z_:][A-Za-z0-9_:]*(?:\{.*?\}(?=\s|$))?)\s*(.*)$", line)
        if m is None:
            raise ValueError(f"cannot read series line {line!r}")
        desc, rest = m.group(1), m.group(2)
    labels: dict[str, str] = {}
    if desc:
        if desc.endswith("}"):
            body = desc[desc.index("{") + 1 : -1].strip().rstrip(",")
            desc = desc[: desc.index("{")] + "{" + (body + ", " if body else "") + '__harness__="x"}'
        node = pp.parse(desc)
        if not isinstance(node, pp.VectorSelector):
            raise ValueError(f"not a series descriptor: {desc!r}")
        if node.name:
            labels["__name__"] = node.name
        for matcher in node.matchers.matchers:
            if matcher.name != "__harness__" and matcher.value:
                labels[matcher.name] = matcher.value
    return SeriesSpec(labels, expand_values(rest))


@dataclass
class Case:
    file: str
    line: int
    kind: str  # instant or range
    query: str
    at: int = 0
    start: int = 0
    end: int = 0
    step: int = 0
    expect_fail: bool = False
    fail_msg: str | None = None
    fail_regex: str | None = None
    ordered: bool = False
    expect_string: str | None = None
    range_vector: tuple[int, int, int] | None = None
    # (kind, match, text): kind warn/info/no_warn/no_info; match "", "msg" or "regex"
    annotations: list[tuple[str, str, str]] = field(default_factory=list)
    expected: list[SeriesSpec] = field(default_factory=list)
    scalar: float | None = None
    raw_expected: list[str] = field(default_factory=list)


@dataclass
class Result:
    case: Case
    status: str  # passed, failed, skipped
    reason: str = ""


def almost_equal(a: float, b: float, eps: float = 1e-6) -> bool:
    if math.isnan(a) and math.isnan(b):
        return True
    if a == b:
        return True
    abs_sum = abs(a) + abs(b)
    diff = abs(a - b)
    min_normal = 2.2250738585072014e-308
    if a == 0 or b == 0 or abs_sum < min_normal:
        return diff < eps * min_normal
    return diff / min(abs_sum, 1.7976931348623157e308) < eps


def same_value(got: float | FloatHistogram, want: float | FloatHistogram) -> bool:
    if isinstance(got, float) and isinstance(want, float):
        return almost_equal(got, want)
    if isinstance(got, FloatHistogram) and isinstance(want, FloatHistogram):
        return same_histogram(got, want)
    return False


def same_histogram(got: FloatHistogram, want: FloatHistogram) -> bool:
    """As Prometheus's compareNativeHistogram: schema, zero threshold and custom bounds exactly,
    counts, sum and buckets within 1e-6; the counter reset hint only when the expected literal
    gives one. Empty buckets are not compared: Prometheus's own cases expect `buckets:[13.5 0 4.5
    9]` from a result whose empty bucket is compacted away, and no buckets where every one is
    empty."""
    if got.schema != want.schema or got.zero_threshold != want.zero_threshold:
        return False
    if want.is_custom and list(got.custom) != list(want.custom):
        return False
    if not (almost_equal(got.count, want.count) and almost_equal(got.sum, want.sum)):
        return False
    if not almost_equal(got.zero_count, want.zero_count):
        return False
    for g, w in ((got.pos, want.pos), (got.neg, want.neg)):
        gk = {k: v for k, v in g.items() if v != 0}
        wk = {k: v for k, v in w.items() if v != 0}
        if set(gk) != set(wk) or not all(almost_equal(gk[k], wk[k]) for k in wk):
            return False
    return not want.hint or got.hint == want.hint


def nhcb_histograms(
    specs: list[SeriesSpec], interval_ms: int
) -> list[tuple[dict[str, str], int, FloatHistogram | None]]:
    """The custom-bucket histograms `load_with_nhcb` adds beside classic `_bucket`/`_sum`/`_count`
    series (Prometheus's promqltest/convertnhcb): one per label set without `le`, named without
    the suffix, buckets de-accumulated, count from `_count` (else the highest bucket), sum from
    `_sum` (else 0); a staleness marker in any part makes the histogram stale."""
    groups: dict[tuple[tuple[str, str], ...], dict[str, object]] = {}
    for spec in specs:
        name = spec.labels.get("__name__", "")
        m = re.match(r"^(.*)_(bucket|count|sum)$", name)
        if m is None:
            continue
        base = {k: v for k, v in spec.labels.items() if k != "le"}
        base["__name__"] = m.group(1)
        key = tuple(sorted(base.items()))
        g = groups.setdefault(key, {"labels": base, "buckets": {}, "count": None, "sum": None})
        if m.group(2) == "bucket":
            if "le" not in spec.labels:
                continue
            bound = parse_number(spec.labels["le"])
            g["buckets"][bound] = spec.values  # type: ignore[index]
        else:
            g[m.group(2)] = spec.values
    out: list[tuple[dict[str, str], int, FloatHistogram | None]] = []
    for g in groups.values():
        buckets: dict[float, list[Point]] = g["buckets"]  # type: ignore[assignment]
        if not buckets:
            continue
        n = max(len(v) for v in buckets.values())
        bounds = sorted(buckets)
        finite = [b for b in bounds if not math.isinf(b)]
        for i in range(n):
            cum: list[float] = []
            stale = False
            missing = False
            for b in bounds:
                vals = buckets[b]
                v = vals[i] if i < len(vals) else None
                if v == "stale":
                    stale = True
                elif isinstance(v, float):
                    cum.append(v)
                else:
                    missing = True
            t = i * interval_ms
            if stale:
                out.append((g["labels"], t, None))  # type: ignore[arg-type]
                continue
            if missing or not cum:
                continue
            h = FloatHistogram(schema=CUSTOM_SCHEMA, custom=finite)
            prev = 0.0
            for k, c in enumerate(cum):
                h.pos[k] = c - prev
                prev = c
            h.count = cum[-1]
            for part in ("count", "sum"):
                vals2 = g[part]
                if isinstance(vals2, list) and i < len(vals2) and isinstance(vals2[i], float):
                    setattr(h, part, vals2[i])
            out.append((g["labels"], t, h))  # type: ignore[arg-type]
    return out


class Runner:
    def __init__(self) -> None:
        self.history = History(retention_s=1e9, max_samples=100_000_000)
        self.histograms = HistogramStore()
        self.engine = Engine(self.history, histograms=self.histograms)

    def clear(self) -> None:
        self.history.clear()
        self.histograms.clear()

    def load(self, interval_ms: int, lines: list[str], nhcb: bool) -> None:
        specs = [parse_series(line) for line in lines]
        for spec in specs:
            has_hist = any(isinstance(v, FloatHistogram) for v in spec.values)
            prev: Point = None
            for i, v in enumerate(spec.values):
                t = i * interval_ms
                if v is None:
                    continue
                if isinstance(v, FloatHistogram):
                    h = v.copy()
                    if not h.hint:
                        # as Prometheus's storage reads a counter histogram back: after another
                        # histogram of the series it is a reset or not one
                        h.hint = UNKNOWN
                        if isinstance(prev, FloatHistogram) and prev.hint != GAUGE:
                            h.hint = RESET if h.detect_reset(prev) else NOT_RESET
                    prev = h
                    self.histograms.add_ms(spec.labels, t, h)
                    continue
                prev = v
                if v == "stale":
                    self.history.add_ms(spec.labels, t, STALE_NAN)
                    if has_hist:
                        self.histograms.add_ms(spec.labels, t, None)
                else:
                    assert isinstance(v, float)
                    self.history.add_ms(spec.labels, t, v)
        if nhcb:
            for labels, t, h in nhcb_histograms(specs, interval_ms):
                self.histograms.add_ms(labels, t, h)

    def run(self, case: Case) -> Result:
        return self._run(case)

    def _run(self, case: Case) -> Result:
        query = re.sub(r"@\s*(start|end)\s*\(\s*\)", "@ 0", case.query)  # `@ start()` is not experimental
        for word, reason in EXPERIMENTAL.items():
            if re.search(r"\b" + re.escape(word.rstrip("()")) + (r"\s*\(" if word.endswith("()") else r"\b"), query):
                if word in ("fill",) and not re.search(r"\bfill(_left|_right)?\s*\(", query):
                    continue
                if word in ("info",) and not re.search(r"\binfo\s*\(", query):
                    continue
                return Result(case, "skipped", reason)
        if DURATION_EXPR.search(query):
            return Result(case, "skipped", "duration expressions are experimental (feature flag)")
        try:
            if case.kind == "instant":
                value, notes = self.engine.instant_annotated(case.query, case.at / 1000.0)
            else:
                value, notes = self.engine.range_annotated(
                    case.query, case.start / 1000.0, case.end / 1000.0, case.step / 1000.0
                )
        except Exception as exc:
            if case.expect_fail:
                msg = getattr(exc, "message", None) or str(exc)
                if case.fail_msg is not None and msg != case.fail_msg and str(exc) != case.fail_msg:
                    return Result(case, "failed", f"error message {str(exc)!r}, expected {case.fail_msg!r}")
                if case.fail_regex is not None and not re.search(case.fail_regex, str(exc)):
                    return Result(case, "failed", f"error message {str(exc)!r} does not match {case.fail_regex!r}")
                return Result(case, "passed")
            return Result(case, "failed", f"{type(exc).__name__}: {exc}")
        if case.expect_fail:
            return Result(case, "failed", "expected an error, got a result")
        problem = self.compare(case, value) or check_annotations(case, notes)
        return Result(case, "failed", problem) if problem else Result(case, "passed")

    def compare(self, case: Case, value: object) -> str:
        if case.expect_string is not None:
            if not isinstance(value, String):
                return f"expected string {case.expect_string!r}, got {value!r}"
            return "" if value.value == case.expect_string else f"string {value.value!r} != {case.expect_string!r}"
        if case.kind == "instant" and case.range_vector is None and isinstance(value, Matrix):
            return "got a range vector, expected an instant result"
        if isinstance(value, Scalar):
            if case.scalar is None:
                return f"got scalar {value.value}, expected {case.raw_expected}"
            return "" if almost_equal(value.value, case.scalar) else f"scalar {value.value} != {case.scalar}"
        if case.scalar is not None:
            return f"expected scalar {case.scalar}, got {value!r}"
        if isinstance(value, Vector):
            got: list[tuple[dict[str, str], float | FloatHistogram]] = [
                (el.labels, el.histogram if el.histogram is not None else el.value) for el in value
            ]
            want: list[tuple[dict[str, str], float | FloatHistogram]] = []
            for spec in case.expected:
                if len(spec.values) != 1 or not isinstance(spec.values[0], (float, FloatHistogram)):
                    return f"expected series {spec.labels} has {len(spec.values)} values for an instant query"
                want.append((spec.labels, spec.values[0]))
            if len(got) != len(want):
                return f"{len(got)} series, expected {len(want)}: got {got[:5]}"
            if case.ordered:
                for (gl, gv), (wl, wv) in zip(got, want, strict=True):
                    if gl != wl or not same_value(gv, wv):
                        return f"ordered: got {gl} {gv}, expected {wl} {wv}"
                return ""
            index = {tuple(sorted(labels.items())): v for labels, v in got}
            for wl, wv in want:
                gv = index.get(tuple(sorted(wl.items())))
                if gv is None:
                    return f"missing series {wl}; got {[g[0] for g in got][:5]}"
                if not same_value(gv, wv):
                    return f"series {wl}: got {gv}, expected {wv}"
            return ""
        if isinstance(value, Matrix):
            if case.kind == "instant":
                assert case.range_vector is not None
                start, end, step = case.range_vector
            else:
                start, end, step = case.start, case.end, case.step
            want_m: dict[tuple[tuple[str, str], ...], list[tuple[int, float | FloatHistogram]]] = {}
            for spec in case.expected:
                pts: list[tuple[int, float | FloatHistogram]] = []
                for i, v in enumerate(spec.values):
                    if v is None:
                        continue
                    if not isinstance(v, (float, FloatHistogram)):
                        raise ValueError(f"{case.file}:{case.line}: expected point {v!r}")
                    pts.append((start + i * step, v))
                want_m[tuple(sorted(spec.labels.items()))] = pts
            got_m: dict[tuple[tuple[str, str], ...], list[tuple[int, float | FloatHistogram]]] = {}
            for series in value:
                merged: list[tuple[int, float | FloatHistogram]] = [(round(t * 1000), v) for t, v in series.points]
                merged += [(round(t * 1000), h) for t, h in series.histograms]
                got_m[tuple(sorted(series.labels.items()))] = sorted(merged, key=lambda p: p[0])
            got_m = {k: v for k, v in got_m.items() if v}
            want_m = {k: v for k, v in want_m.items() if v}
            if set(got_m) != set(want_m):
                return f"series {sorted(got_m)[:4]} != expected {sorted(want_m)[:4]}"
            for key, pts in want_m.items():
                gp = got_m[key]
                if len(gp) != len(pts):
                    return f"series {dict(key)}: {len(gp)} points, expected {len(pts)}: {gp[:6]} vs {pts[:6]}"
                for (gt, gv), (wt, wv) in zip(gp, pts, strict=True):
                    if gt != wt or not same_value(gv, wv):
                        return f"series {dict(key)}: point ({gt}, {gv}) != ({wt}, {wv})"
            _ = end
            return ""
        return f"unexpected result {value!r}"


def check_annotations(case: Case, notes: list[str]) -> str:
    """The `expect warn/info/no_warn/no_info` lines against the engine's annotations (FORMAT.md)."""
    for level, prefix in (("warn", "PromQL warning:"), ("info", "PromQL info:")):
        got = [n for n in notes if n.startswith(prefix)]
        wanted = [(match, text) for kind, match, text in case.annotations if kind == level]
        if any(kind == f"no_{level}" for kind, _, _ in case.annotations) and got:
            return f"expected no {level}, got {got}"
        if not wanted:
            continue

        def hit(note: str, match: str, text: str) -> bool:
            if match == "msg":
                return note == text
            if match == "regex":
                return re.search(text, note) is not None
            return True

        for match, text in wanted:
            if not any(hit(n, match, text) for n in got):
                return f"expected {level} {match} {text!r}, got {got}"
        for n in got:
            if not any(hit(n, match, text) for match, text in wanted):
                return f"unexpected {level} {n!r}"
    return ""


_EVAL = re.compile(r"^eval(?P<variant>_fail|_ordered|_warn|_info)?\s+(?P<kind>instant|range)\s+(?P<rest>.*)$")


def parse_file(path: Path) -> list[tuple[str, object]]:
    """Commands in order: ("load", (interval, lines, nhcb)), ("clear", None), ("eval", Case)."""
    lines = path.read_text().splitlines()
    commands: list[tuple[str, object]] = []
    i = 0
    while i < len(lines):
        raw = lines[i]
        stripped = raw.strip()
        i += 1
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("load"):
            parts = stripped.split()
            nhcb = parts[0] == "load_with_nhcb"
            interval = duration_ms(parts[1])
            block = []
            while i < len(lines) and lines[i].strip() and (lines[i][0] in " \t" or lines[i].strip().startswith("#")):
                if not lines[i].strip().startswith("#"):
                    block.append(lines[i].strip())
                i += 1
            commands.append(("load", (interval, block, nhcb)))
            continue
        if stripped == "clear":
            commands.append(("clear", None))
            continue
        m = _EVAL.match(stripped)
        if not m:
            raise ValueError(f"{path.name}:{i}: unknown command {stripped!r}")
        case = Case(path.name, i, m.group("kind"), "")
        rest = m.group("rest")
        variant = m.group("variant")
        if variant == "_fail":
            case.expect_fail = True
        elif variant == "_ordered":
            case.ordered = True
        elif variant in ("_warn", "_info"):
            case.annotations.append((variant[1:], "", ""))
        if case.kind == "instant":
            mm = re.match(r"^at\s+(\S+)\s+(.*)$", rest)
            if not mm:
                raise ValueError(f"{path.name}:{i}: bad eval instant line")
            case.at = duration_ms(mm.group(1))
            case.query = mm.group(2)
        else:
            mm = re.match(r"^from\s+(\S+)\s+to\s+(\S+)\s+step\s+(\S+)\s+(.*)$", rest)
            if not mm:
                raise ValueError(f"{path.name}:{i}: bad eval range line")
            case.start, case.end, case.step = (duration_ms(mm.group(k)) for k in (1, 2, 3))
            case.query = mm.group(4)
        while i < len(lines) and lines[i].strip() and not _is_command(lines[i]):
            body = lines[i].strip()
            i += 1
            if body.startswith("#"):
                continue
            if body.startswith("expect "):
                _read_expect(case, body)
            elif body.startswith("expected_fail_message"):
                case.expect_fail = True
                case.fail_msg = body.split(" ", 1)[1].strip()
            elif body.startswith("expected_fail_regexp"):
                case.expect_fail = True
                case.fail_regex = body.split(" ", 1)[1].strip()
            else:
                case.raw_expected.append(body)
                first = body.split()[0]
                if len(body.split()) == 1 and not first.startswith("{") and _is_number(first):
                    case.scalar = parse_number(first)
                else:
                    case.expected.append(parse_series(body))
        commands.append(("eval", case))
    return commands


def _is_command(line: str) -> bool:
    s = line.strip()
    return s.startswith(("eval ", "eval_", "load ", "load_with_nhcb ")) or s == "clear"


def _is_number(text: str) -> bool:
    try:
        parse_number(text)
    except ValueError:
        return False
    return True


def _read_expect(case: Case, body: str) -> None:
    rest = body[len("expect ") :].strip()
    if rest.startswith("fail"):
        case.expect_fail = True
        tail = rest[len("fail") :].strip()
        if tail.startswith("msg:"):
            case.fail_msg = _unquote(tail[4:].strip())
        elif tail.startswith("regex:"):
            case.fail_regex = _unquote(tail[6:].strip())
    elif rest.startswith("ordered"):
        case.ordered = True
    elif rest.startswith("string"):
        case.expect_string = _unquote(rest[len("string") :].strip())
    elif rest.startswith("range vector"):
        mm = re.match(r"range vector\s+(?:from\s+)?(\S+)\s+to\s+(\S+)\s+step\s+(\S+)", rest)
        if mm:
            case.range_vector = (duration_ms(mm.group(1)), duration_ms(mm.group(2)), duration_ms(mm.group(3)))
    else:
        mm = re.match(r"^(warn|info|no_warn|no_info)\b\s*(?:(msg|regex):\s*(.*))?$", rest)
        if mm:
            case.annotations.append((mm.group(1), mm.group(2) or "", _unquote((mm.group(3) or "").strip())))


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"`":
        return text[1:-1]
    return text


def run_file(path: Path) -> list[Result]:
    runner = Runner()
    results = []
    for kind, payload in parse_file(path):
        if kind == "clear":
            runner.clear()
        elif kind == "load":
            interval, block, nhcb = payload  # type: ignore[misc]
            runner.load(interval, block, nhcb)
        else:
            assert isinstance(payload, Case)
            try:
                results.append(runner.run(payload))
            except Unsupported as exc:
                results.append(Result(payload, "skipped", str(exc)))
    return results


def test_dir() -> Path:
    """$PROMQLTEST_DIR, else ../shared/reference/promqltest beside the checkout (or beside a
    worktree folder's parent, for git worktrees kept one level deeper)."""
    env = os.environ.get("PROMQLTEST_DIR")
    if env:
        return Path(env)
    for candidate in (DEFAULT_DIR, ROOT.parent.parent / "shared" / "reference" / "promqltest"):
        if candidate.is_dir():
            return candidate
    return DEFAULT_DIR


def run_all(folder: Path, only: str | None = None) -> dict[str, list[Result]]:
    files = sorted(folder.glob("*.test"))
    if only:
        files = [f for f in files if f.name == only or f.stem == only]
    return {f.name: run_file(f) for f in files}


def summary(results: dict[str, list[Result]]) -> tuple[int, int, int]:
    counts = Counter(r.status for rs in results.values() for r in rs)
    return counts["passed"], counts["failed"], counts["skipped"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", nargs="?", default=None)
    ap.add_argument("-v", "--verbose", action="store_true", help="print every failed case")
    ap.add_argument("--file", default=None, help="only this file")
    args = ap.parse_args(argv)
    folder = Path(args.dir) if args.dir else test_dir()
    if not folder.is_dir():
        print(f"no PromQL test folder at {folder} (set PROMQLTEST_DIR)", file=sys.stderr)
        return 2
    results = run_all(folder, args.file)
    print(f"{'file':<28} {'passed':>7} {'failed':>7} {'skipped':>8}")
    reasons: Counter[str] = Counter()
    for name, rs in results.items():
        c = Counter(r.status for r in rs)
        print(f"{name:<28} {c['passed']:>7} {c['failed']:>7} {c['skipped']:>8}")
        for r in rs:
            if r.status == "skipped":
                reasons[r.reason] += 1
            if r.status == "failed" and args.verbose:
                print(f"    FAIL {r.case.file}:{r.case.line} {r.case.query}\n         {r.reason}")
    passed, failed, skipped = summary(results)
    total = passed + failed + skipped
    print(f"{'total':<28} {passed:>7} {failed:>7} {skipped:>8}")
    if total:
        print(f"passed {passed}/{total} = {100.0 * passed / total:.1f}% of all cases "
              f"({100.0 * passed / max(passed + failed, 1):.1f}% of those not skipped)")
    for reason, n in reasons.most_common():
        print(f"skipped {n:>4}: {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
