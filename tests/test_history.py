"""monitor.history: staleness markers, the sample cap, retention, dump/load, bytes per sample."""

from __future__ import annotations

import math
import struct
from pathlib import Path

from monitor.history import STALE_NAN, STALE_NAN_BITS, History, Matcher, is_stale
from monitor.model import Sample


def _s(name: str, value: float, **labels: str) -> Sample:
    return Sample(name, labels, value)


def test_stale_marker_is_prometheus_bit_pattern() -> None:
    assert struct.unpack("<Q", struct.pack("<d", STALE_NAN))[0] == STALE_NAN_BITS
    assert is_stale(STALE_NAN)
    assert not is_stale(math.nan)


def test_series_missing_from_a_run_gets_a_staleness_marker() -> None:
    h = History()
    h.append(10, [_s("up", 1, job="a"), _s("up", 1, job="b")], source="redis")
    h.append(20, [_s("up", 1, job="a")], source="redis")
    (b,) = h.select([Matcher.of("job", "=", "b")])
    points = list(b.points())
    assert points[0] == (10_000, 1.0)
    assert points[1][0] == 20_000 and is_stale(points[1][1])
    # the marker hides the sample from a later lookup inside the lookback window
    assert b.latest(25_000, 300_000) is None
    (a,) = h.select([Matcher.of("job", "=", "a")])
    assert a.latest(25_000, 300_000) == (20_000, 1.0)


def test_another_source_does_not_mark_series_stale() -> None:
    h = History()
    h.append(10, [_s("up", 1, job="a")], source="one")
    h.append(20, [_s("up", 1, job="b")], source="two")
    (a,) = h.select([Matcher.of("job", "=", "a")])
    assert a.latest(20_000, 300_000) == (10_000, 1.0)


def test_cap_refuses_and_counts() -> None:
    h = History(max_samples=3)
    for t in range(5):
        h.append(t, [_s("x", t)], source="s")
    assert h.sample_count == 3
    assert h.refused == 2


def test_trim_drops_old_samples_and_empty_series() -> None:
    h = History(retention_s=60)
    h.append(0, [_s("old", 1)], source="a")
    for t in range(0, 121, 10):
        h.append(t, [_s("x", t)], source="b")
    dropped = h.trim(120)
    assert dropped == 7  # x at 0..50 and old at 0
    assert h.select([Matcher.of("__name__", "=", "old")]) == []
    (x,) = h.select([Matcher.of("__name__", "=", "x")])
    assert [t for t, _ in x.points()][0] == 60_000
    assert h.sample_count == 7


def test_matchers_use_re2_fully_anchored_and_dot_matches_newline() -> None:
    h = History()
    h.add({"__name__": "m", "path": "/a\nb"}, 1, 1)
    h.add({"__name__": "m", "path": "x/a"}, 1, 1)
    h.add({"__name__": "m", "digit": "\u0663"}, 1, 1)  # an Arabic-Indic three
    assert len(h.select([Matcher.of("path", "=~", "/a.b")])) == 1
    assert len(h.select([Matcher.of("path", "=~", "/a")])) == 0
    assert len(h.select([Matcher.of("digit", "=~", r"\d")])) == 0  # RE2: \d is ASCII only
    assert len(h.select([Matcher.of("digit", "=~", "[[:digit:]]")])) == 0
    assert len(h.select([Matcher.of("path", "!~", ".+"), Matcher.of("__name__", "=", "m")])) == 1
    assert h.label_values("path") == ["/a\nb", "x/a"]
    assert h.label_names() == ["__name__", "digit", "path"]


def test_dump_and_load_round_trip_keeps_gaps_and_markers(tmp_path: Path) -> None:
    h = History()
    h.append(0, [_s("a", 1, k="v"), _s("b", 5)], source="s")
    h.append(10, [_s("a", 2, k="v")], source="s")  # b goes stale at 10
    h.append(70, [_s("a", 3, k="v")], source="s")  # a gap from 10 to 70
    path = tmp_path / "history.bin"
    h.dump(path)
    assert not list(tmp_path.glob(".history.bin.*"))  # the temporary file was renamed
    back = History()
    assert back.load(path) == h.sample_count
    for key in ("a", "b"):
        (orig,) = h.select([Matcher.of("__name__", "=", key)])
        (new,) = back.select([Matcher.of("__name__", "=", key)])
        assert [(t, v if not math.isnan(v) else "stale") for t, v in orig.points()] == [
            (t, v if not math.isnan(v) else "stale") for t, v in new.points()
        ]
    (a,) = back.select([Matcher.of("__name__", "=", "a")])
    assert [t for t, _ in a.points()] == [0, 10_000, 70_000]
    # the staleness bookkeeping survives: b is still known as produced-before-not-now
    back.append(80, [_s("a", 4, k="v")], source="s")
    (a,) = back.select([Matcher.of("__name__", "=", "a")])
    assert a.latest(80_000, 300_000) == (80_000, 4.0)


def test_load_refuses_a_file_that_is_not_a_dump(tmp_path: Path) -> None:
    path = tmp_path / "junk"
    path.write_bytes(b"not msgpack at all")
    try:
        History().load(path)
    except ValueError as exc:
        assert "not a history dump" in str(exc)
    else:
        raise AssertionError("load accepted junk")


def test_bytes_per_sample_is_at_most_16() -> None:
    h = History(max_samples=10_000_000)
    for t in range(3600):
        h.append(t, [_s("m", float(t), i=str(i)) for i in range(20)], source="s")
    samples, nbytes = h.usage("m")
    assert samples == 72_000
    assert nbytes / samples <= 16, nbytes / samples


def test_counter_resets_are_noted_for_rate() -> None:
    h = History()
    for t, v in enumerate([1, 5, 2, 8, 3]):
        h.add({"__name__": "c"}, t, v)
    (c,) = h.select([Matcher.of("__name__", "=", "c")])
    assert c.resets_in(0, 4000) == (2, 13.0)
    assert c.resets_in(2000, 4000) == (1, 8.0)


def test_a_series_that_falls_often_is_not_indexed_for_resets_and_rate_still_counts_them() -> None:
    h = History()
    for t in range(400):
        h.add({"__name__": "g"}, t, float(t % 2))  # a gauge: falls every other sample
    (g,) = h.select([Matcher.of("__name__", "=", "g")])
    assert g.resets_in(0, 400_000) is None
    assert g.reset_t is None
    from monitor.rules.promql import Engine

    v = Engine(h).instant("resets(g[100s])", 399)
    assert [e.value for e in v] == [49.0]  # type: ignore[union-attr]  # 1 -> 0 at 302, 304, ..., 398
