"""monitor.history: staleness markers, the sample cap, retention, dump/load, bytes per sample."""

from __future__ import annotations

import asyncio
import math
import os
import struct
import threading
from array import array
from pathlib import Path

from monitor.history import STALE_NAN, STALE_NAN_BITS, History, Matcher, Snapshot, is_stale, write_snapshot
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


def test_trim_keeps_each_metric_as_long_as_its_own_retention() -> None:
    """One name kept 25 h, the rest 1 h (the default): each loses what is older than its own
    cutoff, and an entry shorter than the default does not shorten it."""
    hour = 3600
    h = History(retention_s=hour, retention_by_name={"replay_ts": 25 * hour, "brief": 60})
    h.append(0, [_s("gone", 1)], source="a")
    for t in range(0, 26 * hour + 1, hour):
        h.append(t, [_s("replay_ts", t), _s("x", t), _s("brief", t)], source="b")
    dropped = h.trim(26 * hour)
    assert dropped == 1 + 1 + 25 + 25  # gone; replay_ts at 0; x and brief at 0..24 h
    assert h.select([Matcher.of("__name__", "=", "gone")]) == []
    assert h.series_count == 3
    for name, first in (("replay_ts", 1 * hour), ("x", 25 * hour), ("brief", 25 * hour)):
        (series,) = h.select([Matcher.of("__name__", "=", name)])
        assert [t for t, _ in series.points()][0] == first * 1000, name
    assert h.sample_count == 26 + 2 + 2
    assert h.retention_of("replay_ts") == 25 * hour
    assert h.retention_of("brief") == h.retention_of("x") == hour
    assert h.longest_retention_s == 25 * hour


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


def _points(h: History) -> dict[tuple[tuple[str, str], ...], list[tuple[int, object]]]:
    return {s.key: [(t, "stale" if is_stale(v) else v) for t, v in s.points()] for s in h.series()}


def test_a_dump_of_the_first_format_still_loads(tmp_path: Path) -> None:
    """A state directory written before the streamed format keeps its history."""
    import msgspec

    rel = array("I", [0, 1000, 2000]).tobytes()
    vs = array("d", [1.0, 2.0, 3.0]).tobytes()
    stale = array("q", [5000]).tobytes()
    doc = [1, [([("__name__", "m"), ("k", "v")], 10_000, rel, vs, stale)], {"s": [[("__name__", "m"), ("k", "v")]]}]
    path = tmp_path / "history.msgpack"
    path.write_bytes(msgspec.msgpack.encode(doc))
    h = History()
    assert h.load(path) == 3
    (m,) = h.series()
    assert [(t, v) for t, v in m.points() if not is_stale(v)] == [(10_000, 1.0), (11_000, 2.0), (12_000, 3.0)]
    h.append(20, [], source="s")  # the source's series is known from the file: it goes stale
    assert is_stale(list(m.points())[-1][1])


def test_a_truncated_dump_says_where_it_ends(tmp_path: Path) -> None:
    h = History()
    for t in range(50):
        h.append(t, [_s("a", t, k="v"), _s("b", -t)], source="s")
    path = tmp_path / "history.msgpack"
    h.dump(path)
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) - 100])
    try:
        History().load(path)
    except ValueError as exc:
        assert str(path) in str(exc) and "ends inside" in str(exc)
    else:
        raise AssertionError("load accepted a truncated file")


async def test_save_writes_off_the_loop_while_appends_go_on(tmp_path: Path) -> None:
    """The writer runs on a thread: while it is held, the event loop appends, rewrites the past
    and trims; the file holds the history as it was when the save began, and the history
    everything since."""
    h = History(retention_s=100)
    for t in range(60):
        h.append(t, [_s("a", t, k="v"), _s("b", 10 * t)], source="s")
    at_start = _points(h)
    path = tmp_path / "history.msgpack"
    entered = threading.Event()
    gate = threading.Event()
    released: list[bool] = []

    def held_writer(snap: Snapshot, target: str | os.PathLike[str]) -> None:
        entered.set()
        released.append(gate.wait(30))  # True only if the loop, still running, opened the gate
        write_snapshot(snap, target)

    saving = asyncio.create_task(h.save(path, writer=held_writer))
    assert await asyncio.to_thread(entered.wait, 30)
    for t in range(60, 70):  # appends land
        h.append(t, [_s("a", t, k="v")], source="s")  # b goes stale at 60
    h.add({"__name__": "a", "k": "v"}, 10.5, -1.0)  # out of order, inside the snapshot's part
    h.add({"__name__": "b"}, 5, 0.5)  # overwrites a sample the snapshot holds
    assert h.trim(200) == 0  # deferred while the snapshot is written
    assert not saving.done()
    gate.set()
    await saving
    assert released == [True]
    back = History()
    back.load(path)
    assert _points(back) == at_start
    now = _points(h)
    assert now[(("__name__", "a"), ("k", "v"))][-1] == (69_000, 69.0)
    assert (10_500, -1.0) in now[(("__name__", "a"), ("k", "v"))]
    assert (5000, 0.5) in now[(("__name__", "b"),)] and (60_000, "stale") in now[(("__name__", "b"),)]
    assert h.trim(200) > 0  # released: trimming works again


async def test_saves_are_written_in_order(tmp_path: Path) -> None:
    """A save started while another is written waits for it, even when the first one's caller
    was cancelled: the last save's history wins."""
    h = History()
    h.append(1, [_s("a", 1)], source="s")
    path = tmp_path / "history.msgpack"
    gate = threading.Event()

    def held_writer(snap: Snapshot, target: str | os.PathLike[str]) -> None:
        gate.wait(30)
        write_snapshot(snap, target)

    first = asyncio.create_task(h.save(path, writer=held_writer))
    await asyncio.sleep(0)  # the first save takes its snapshot
    h.append(2, [_s("a", 2)], source="s")
    second = asyncio.create_task(h.save(path))
    await asyncio.sleep(0)
    first.cancel()  # its caller gives up; its write goes on, and the second still waits for it
    await asyncio.sleep(0)
    assert not second.done()
    gate.set()
    await second
    assert first.cancelled()
    back = History()
    back.load(path)
    assert _points(back) == _points(h)
