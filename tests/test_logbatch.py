"""The batched read-time path of the logfile check against the per-chunk path it replaced.

At read time (the default) JSON lines are parsed in pieces, counted as whole records into a
pending batch and normalized once per batch (`logtally.Normalizer.add`/`flush`), the
parser first trying a strict Struct (`checks/logfile/parse.py`), and the follower hands out pieces of a
slice (`checks/logfile/tail.py: Follower.read_pieces`). The per-chunk path (`Normalizer.tally`, still used
for line time and regex logs) is the reference: every count must be the same on tricky
input (invalid UTF-8, non-JSON, non-objects, blank lines, huge numbers, objects where a
scalar was expected, alternative paths, unusual levels); sums of durations may differ in
their last bits only (they are summed per batch rather than per chunk).
"""

from __future__ import annotations

import math
import random
import sys
from bisect import bisect_left
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest

from bench.bench_logfile import winston_line
from checks.logfile import tally as logtally
from checks.logfile.check import DURATION_BUCKETS, LogfileCheck
from checks.logfile.parse import PRESETS, JsonParser
from checks.logfile.tail import Follower
from checks.logfile.window import Classifier, sketch_index
from monitor.model import Sample
from tests.test_check_logfile import (
    GARBAGE,
    PINO_TRICKY,
    T0,
    TRICKY,
    bff_line,
    get,
    make,
    pino,
    random_rec,
    values,
    winston,
    write,
)

FLOAT_SUMS = ("portal_log_request_duration_seconds_sum", "portal_log_response_seconds_avg")
HUGE = [
    b'{"level":"info","statusCode":200,"duration":1' + b"0" * 400 + b"}",  # an int beyond float range
    b'{"level":"info","statusCode":1' + b"0" * 30 + b',"duration":3}',
    b'{"level":"' + b"9" * 30 + b'","statusCode":401,"url":"/api/auth/login","ip":"203.0.113.7"}',
    b'{"level":"error","statusCode":500,"duration":1e308}',
]
ODD = [  # what the strict Struct refuses: the chunk goes to the lenient one
    b'{"level":"INFO","statusCode":200,"duration":4}',
    b'{"level":"info","statusCode":"401","url":"/api/auth/login","ip":"203.0.113.8"}',
    b'{"level":"info","statusCode":200.0,"duration":4}',
    b'{"level":"info","statusCode":99,"duration":4}',
    b'{"level":"info","statusCode":200,"responseTime":-1}',
    b'{"level":"info","statusCode":200,"responseTime":"23ms"}',
    b'{"level":"info","statusCode":200,"responseTime":true}',
]
ALTERNATIVES = [  # the other family of names, fractional numbers: strict too
    b'{"level":"info","status":503,"duration":4}',
    b'{"level":"info","statusCode":200,"responseTime":9}',
    b'{"level":"info","status":200,"responseTime":23.417,"ip":"203.0.113.9"}',
    b'{"level":"info","status":200,"response_time":0.5}',
    b'{"level":"info","status":200,"ms":1e3}',
    b'{"level":"warn","statusCode":404,"status":500,"duration":1.5,"responseTime":2}',
]


def same_counts(a: list[Sample], b: list[Sample]) -> None:
    """Every value the same; float sums equal up to rounding."""
    va, vb = values(a), values(b)
    assert va.keys() == vb.keys()
    for key, x in va.items():
        if key[0] in FLOAT_SUMS:
            assert x == pytest.approx(vb[key], rel=1e-12), key
        else:
            assert x == vb[key], key


def per_chunk(check: LogfileCheck) -> LogfileCheck:
    """The same check counting each chunk on its own (the path before batching)."""
    check._norm.batching = False
    return check


def tricky_log(rng: random.Random, n: int, fmt: Any) -> list[bytes]:
    pool = TRICKY + PINO_TRICKY + HUGE + ODD + [g for g, _ in GARBAGE] + [b"", b"   ", b"\r"]
    return [rng.choice(pool) + b"\n" if rng.random() < 0.05 else fmt(random_rec(rng, T0 + i)) for i in range(n)]


def ingest_all(check: LogfileCheck, lines: list[bytes], chunk_lines: int) -> list[Sample]:
    for i in range(0, len(lines), chunk_lines):
        check.ingest(b"".join(lines[i : i + chunk_lines]), T0)
    return check.samples(T0)


@pytest.mark.parametrize("fast_path", [True, False])
@pytest.mark.parametrize("preset", ["winston", "pino"])
def test_batches_count_like_chunks_and_like_single_lines(preset: str, fast_path: bool) -> None:
    lines = tricky_log(random.Random(5), 6000, winston if preset == "winston" else pino)
    options = {"preset": preset, "fast_path": fast_path, "patterns": {"login": "auth/login"}}
    nowhere = Path("/nonexistent")
    batched = ingest_all(make(nowhere, **options), lines, 2500)  # pieces of 128 KiB and less
    chunked = ingest_all(per_chunk(make(nowhere, **options)), lines, 2500)
    one_by_one = ingest_all(per_chunk(make(nowhere, **options)), lines, 1)
    same_counts(batched, chunked)
    same_counts(batched, one_by_one)
    parsed = sum(s.value for s in batched if s.name == "portal_log_lines_total")
    errors = sum(s.value for s in batched if s.name == "portal_log_parse_errors_total")
    assert parsed + errors == sum(1 for line in lines if line.strip())


ZEROS = [  # durations that are zero (0.0 and -0.0), in one column or two, with or without status
    b'{"level":"info","status":200,"responseTime":0.0}',
    b'{"level":"info","status":200,"responseTime":-0.0,"ip":"203.0.113.9"}',
    b'{"level":"debug","message":"WHMCS GetClientsProducts","duration":0}',
    b'{"level":"debug","message":"WHMCS GetClientsProducts","duration":-0.0}',
    b'{"level":"info","status":401,"url":"/api/auth/login","ip":"203.0.113.7","responseTime":0}',
    b'{"level":"info","status":200,"responseTime":1.25,"duration":0.0}',
    b'{"level":"info","status":200,"responseTime":0.0,"duration":7.5}',
]


@pytest.mark.parametrize("seed", [1, 2])
def test_fractional_durations_classified_sorted_count_like_single_lines(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The BFF's fractional responseTime (all distinct: classified sorted, many at once)
    among WHMCS events with a `duration`, zeros in either column, a few lines with both,
    and tricky lines: the batch counts what one line at a time counts."""
    monkeypatch.setattr(logtally, "DURATIONS_DISTINCT", 40)
    monkeypatch.setattr(logtally, "DURATIONS_SORTED", 300)
    rng = random.Random(seed)
    pool = TRICKY + HUGE + ODD + [g for g, _ in GARBAGE] + ZEROS

    def line(i: int) -> bytes:
        r = rng.random()
        if r < 0.02:
            return rng.choice(pool) + b"\n"
        if r < 0.07:
            return rng.choice(ZEROS) + b"\n"
        if r < 0.12:
            return b'{"level":"debug","message":"WHMCS","duration":%.3f}\n' % rng.lognormvariate(5, 0.7)
        return bff_line(rng, i, ("status", "responseTime"))

    lines = [line(i) for i in range(5000)]
    options = {"preset": "winston", "patterns": {"login": "auth/login"}}
    nowhere = Path("/nonexistent")
    batched = ingest_all(make(nowhere, **options), lines, 700)
    one_by_one = ingest_all(per_chunk(make(nowhere, **options)), lines, 1)
    same_counts(batched, one_by_one)
    assert get(batched, "portal_log_request_duration_seconds_count") > 4000


def test_strict_struct_reads_what_the_lenient_one_reads() -> None:
    """Where the strict Struct takes a line, every counted value is the lenient one's, of
    the same type (durations as floats); it refuses the unusual shapes, which then go to
    the lenient Struct."""
    parser = JsonParser(PRESETS["winston"], ["time", "level", "status", "duration"])
    strict, lenient = parser._main.decode_strict, parser._main.decode
    assert strict is not None
    rng = random.Random(2)
    lines = [winston(random_rec(rng, T0 + i)).rstrip(b"\n") for i in range(300)] + TRICKY + HUGE + ODD
    lines += ALTERNATIVES
    durations = set(parser.layout["duration"])

    def typed(slot: int, v: Any) -> tuple[type, Any]:
        if slot in durations and isinstance(v, (int, float)) and abs(v) < 1e308:
            v = float(v)
        return type(v), v

    taken = 0
    for line in lines:
        try:
            expected = [typed(i, g(lenient(line))) for i, g in enumerate(parser._main.getters)]
        except (msgspec.DecodeError, RecursionError):
            continue
        try:
            got = [(type(v), v) for v in map(lambda g: g(strict(line)), parser._main.getters)]
        except msgspec.ValidationError:
            continue
        taken += 1
        assert got == expected, line
    assert taken > 300
    for line in ODD:
        with pytest.raises(msgspec.ValidationError):
            strict(line)
    for line in ALTERNATIVES:
        strict(line)


def test_a_refused_chunk_rests_the_strict_struct_and_counts_the_same() -> None:
    parser = JsonParser(PRESETS["winston"], ["level", "status", "duration"])
    good = b'{"level":"info","statusCode":200,"duration":4}\n' * 3
    assert parser.parse_fast(good).strict
    refused = parser.parse_fast(good + ODD[0] + b"\n")
    assert not refused.strict and len(refused.records) == 4
    assert not parser.parse_fast(good).strict  # resting: lenient for a while
    for _ in range(100):
        parser.parse_fast(good)
    assert parser.parse_fast(good).strict
    with_blank = parser.parse_fast(b"\n" + good + b"\n\n")
    assert len(with_blank.records) == 3 and len(with_blank.lines) == 3


def test_an_unhashable_record_leaves_the_batch_as_it_was() -> None:
    """`Counter.update` stops at an object where a scalar was expected; what it counted
    of that chunk is taken back, and the chunk is counted on its own."""
    check = make(Path("/nonexistent"))
    first = b'{"level":"info","statusCode":200,"duration":"4"}\n'  # lenient chunks: records are counted
    new = b'{"level":"warn","statusCode":404,"duration":"77"}\n'
    check.ingest(first, T0)
    check.ingest(new + b'{"level":{"a":1},"statusCode":200}\n' + first, T0)
    pending = check._norm._pending
    assert list(pending.values()) == [1]  # the new record is gone again, nothing left at 0
    check.ingest(new, T0)
    reference = per_chunk(make(Path("/nonexistent")))
    for chunk in (first, new + b'{"level":{"a":1},"statusCode":200}\n' + first, new):
        reference.ingest(chunk, T0)
    same_counts(check.samples(T0), reference.samples(T0))


async def test_space_saving_sees_the_same_failures_in_the_same_order(tmp_path: Path) -> None:
    """Login failures are matched per slice as before, so the approximate most-failures-
    per-IP (Space-Saving, `max_sources` IPs per window bucket) is the same, not only close."""
    rng = random.Random(9)
    lines = []
    for i in range(40_000):
        ip = f"203.0.113.{rng.randint(1, 60)}"
        status = rng.choice([200, 200, 401, 403])
        lines.append(b'{"level":"warn","url":"/api/auth/login","statusCode":%d,"ip":"%s","duration":%d}\n'
                     % (status, ip.encode(), i % 700))
    out = []
    for batching in (True, False):
        d = tmp_path / str(batching)
        d.mkdir()
        write(d / "combined.log", b"".join(lines))
        check = make(d, max_sources=5)
        check._norm.batching = batching
        out.append(await check.collect())
    same_counts(out[0], out[1])


async def test_a_full_batch_is_flushed_early_and_counts_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "combined.log", b"".join(winston_line(i, random.Random(i)) + b"\n" for i in range(20_000)))
    reference = await make(tmp_path).collect()
    monkeypatch.setattr(logtally, "BATCH_MAX", 50)
    same_counts(await make(tmp_path).collect(), reference)


@pytest.mark.parametrize("max_line_bytes", [256, 65536])
def test_read_pieces_are_what_read_returns_cut_at_newlines(tmp_path: Path, max_line_bytes: int) -> None:
    rng = random.Random(4)
    data = b"".join(b"x" * rng.choice([10, 100, 300, 5000]) + b"\n" for _ in range(3000))
    log = tmp_path / "a.log"
    write(log, data)
    whole = Follower(str(log), from_end=False, max_line_bytes=max_line_bytes)
    cut = Follower(str(log), from_end=False, max_line_bytes=max_line_bytes)
    while True:
        expected = whole.read(20_000)
        pieces = cut.read_pieces(20_000, 4096)
        assert b"".join(pieces) == expected
        assert (whole.more, whole.oversize) == (cut.more, cut.oversize)
        for p in pieces:
            assert p.endswith(b"\n")
            assert len(p) <= 4096 or p.count(b"\n") == 1
        if not whole.more:
            break
    assert cut._buf == bytearray()  # no backlog: no buffer held
    assert whole.oversize == (sum(1 for line in data.split(b"\n") if len(line) >= max_line_bytes)
                              if max_line_bytes == 256 else 0)


@pytest.mark.parametrize("scale", [0.001, 1.0])
def test_classifier_codes_equal_one_classification_per_value(scale: float) -> None:
    """Columns inside the tabled octaves (looked up in the list), and columns with a value
    outside them (0, tiny, huge, inf: the dict and exact classification): every class equals
    `bisect_left` and `sketch_index` of that value."""
    rng = random.Random(5)
    classifier = Classifier(DURATION_BUCKETS, scale)
    edges = [b / scale for b in DURATION_BUCKETS]
    inside = [rng.lognormvariate(4.5, 2.0) for _ in range(20_000)] + edges + [math.nextafter(e, 0) for e in edges]
    for column in (inside, [*inside, 0.0, 1e-300, 5e-324, 1e300, math.inf]):
        got: Counter[int] = Counter()
        classifier.codes(column, got)
        want = Counter((bisect_left(DURATION_BUCKETS, x * scale), sketch_index(x * scale)) for x in column)
        assert classifier.decode(got) == want


@pytest.mark.parametrize("scale", [0.001, 1.0])
def test_classifier_sorted_counts_equal_one_classification_per_value(scale: float) -> None:
    """`count_sorted` on fractional and integer durations, on both sides of every point
    where the class changes, and at the ends of the float range (0, -0, subnormal, the
    largest float): every class equals `bisect_left` and `sketch_index` of that value."""
    rng = random.Random(6)
    classifier = Classifier(DURATION_BUCKETS, scale)
    points, classes = classifier._changes()
    assert points == sorted(set(points)) and len(classes) == len(points) + 1
    edges = [b / scale for b in DURATION_BUCKETS]
    column = (
        [round(rng.lognormvariate(4.5, 2.0), 3) for _ in range(20_000)]
        + [float(int(rng.lognormvariate(4.5, 1.0))) for _ in range(5_000)]
        + edges + [math.nextafter(e, 0) for e in edges]
        + points + [math.nextafter(p, 0) for p in points] + [math.nextafter(p, math.inf) for p in points]
        + [0.0, -0.0, 5e-324, 1e-300, 1e300, sys.float_info.max]
    )
    rng.shuffle(column)
    want = Counter((bisect_left(DURATION_BUCKETS, x * scale), sketch_index(x * scale)) for x in column)
    got: Counter[int] = Counter()
    classifier.count_sorted(list(column), got)
    assert classifier.decode(got) == want
    one_by_one: Counter[int] = Counter()
    for x in column[:2000]:
        classifier.count_sorted([x], one_by_one)
    assert classifier.decode(one_by_one) == Counter(
        (bisect_left(DURATION_BUCKETS, x * scale), sketch_index(x * scale)) for x in column[:2000]
    )
