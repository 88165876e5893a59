"""Seeded fault days (`fault_day.fault_day`): the generator keeps to the distributions its
docstring states; the report (`noise_report`) gives a fault every page in its window.
"""

from __future__ import annotations

import pytest

from tests.proof.fault_day import TAIL_S, WHMCS_REASONS, fault_day, faults
from tests.proof.noise_report import fault_pages, print_report
from tests.proof.portal_day import CHANNELS, Page, hm
from tests.proof.seed_day import normal_day

ROWS = {  # expect -> (kinds, size range, length range in s)
    "RedisDown": ({"redis_down"}, None, (120, 1200)),
    "DatabaseDown": ({"pg_down"}, None, (120, 1200)),
    "DatabaseConnectionsSaturated": ({"pg_connections"}, (0.95, 1.0), (600, 2400)),
    "LongRunningQuery": ({"pg_query"}, None, (1200, 5400)),
    "WhmcsUnavailable": ({"whmcs_fail"}, None, (600, 3600)),
    "PlatformEventsStalled": ({"replay_frozen"}, None, (7200, 21600)),
    "PlatformEvents.*": ({"sf_stopped"}, None, (3600, 14400)),
    "PortalUnreachable": ({"bff_restart", "bff_503"}, None, (120, 1200)),
    "HighErrorRate": ({"errors"}, (0.08, 0.30), (600, 2400)),
    "SlowResponses": ({"slow"}, (15, 40), (600, 2400)),
    "LoginFailureSpike": ({"logins"}, (40, 200), (120, 600)),
    "RedisMemory.*": ({"redis_memory"}, (0.96, 1.0), (900, 3600)),
}


def test_the_fault_generator_keeps_to_its_stated_distributions() -> None:
    night = 0
    reasons: set[str] = set()
    channels: set[str] = set()
    for seed in range(300):
        day = fault_day(seed)
        assert day == fault_day(seed)  # the seed alone decides the day
        assert [e for e in day if not e.expect] == normal_day(seed)  # the normal day, unchanged
        fs = faults(seed)
        assert [f.expect for f in fs] == list(ROWS)  # one of every fault, in the table's order
        windows = sorted((f.start, f.end + TAIL_S) for f in fs)
        assert all(a[1] <= b[0] for a, b in zip(windows, windows[1:], strict=False))  # no overlap, tails included
        for f in fs:
            assert f.expect is not None
            kinds, size, (lo, hi) = ROWS[f.expect]
            assert f.kind in kinds and 0 <= f.start < f.end <= hm(24), f
            assert f.severity in ("P1", "P2", "P3"), f
            length = f.end - f.start
            if f.kind == "replay_frozen":
                assert f.start <= hm(21) and f.channel in dict(CHANNELS[:2]), f
                assert length >= lo, f  # midnight never cuts a fault below its shortest stated length
                assert length <= hi or f.end == hm(9), f
                channels.add(f.channel)
            elif f.kind == "sf_stopped":
                assert f.start <= hm(22) and length >= lo, f
                assert length <= hi or f.end == hm(8), f
            else:
                assert lo <= length <= hi, f
            if size is not None:
                assert size[0] <= f.value <= size[1], f
            if f.kind == "whmcs_fail":
                assert f.reason in WHMCS_REASONS
                reasons.add(f.reason)
            night += f.start < hm(6)
    assert reasons == set(WHMCS_REASONS) and channels == set(dict(CHANNELS[:2]))
    assert 300 * 12 * 0.15 < night  # about a quarter of the faults start between 00:00 and 06:00


def test_the_report_counts_a_faults_pages_in_its_window_whatever_the_alert(
        capsys: pytest.CaptureFixture[str]) -> None:
    day = faults(0)
    redis = next(f for f in day if f.expect == "RedisDown")
    stall = next(f for f in day if f.expect == "PlatformEventsStalled")
    pages = [Page(redis.start + 30, "RedisDown", (("severity", "P1"),), "a"),
             Page(redis.end + 60, "HighErrorRate", (("severity", "P3"),), "b"),  # in the tail: the fault's
             Page(redis.end + TAIL_S + 10, "HighErrorRate", (("severity", "P3"),), "c"),  # after it: a false page
             Page(stall.start + 2400, "PlatformEventsStalled", (("severity", "P2"),), "d")]
    inside, outside = fault_pages(pages, day)
    assert [p.dedup_key for p in inside[day.index(redis)]] == ["a", "b"]
    assert [p.dedup_key for p in inside[day.index(stall)]] == ["d"]
    assert [p.dedup_key for p in outside] == ["c"]
    rows = [{"name": f.name, "expect": f.expect, "start": f.start, "pages": n, "paged": n > 0,
             "latency": 30.0 if n else None, "severity_ok": True, "alerts": ["RedisDown", "HighErrorRate"][:n]}
            for f, n in zip(day, [2, 0] + [1] * (len(day) - 2), strict=True)]
    print_report([{"seed": 0, "faults": False, "fault_rows": [], "noise": [("03:00:00", "HighErrorRate", "-")],
                   "evening": [], "seconds": 1.0, "cached": True},
                  {"seed": 1, "faults": False, "fault_rows": [], "noise": [], "evening": [("-01:00:00", "RedisDown")],
                   "seconds": 1.0, "cached": False},
                  {"seed": 0, "faults": True, "fault_rows": rows, "noise": [], "seconds": 1.0, "cached": False}])
    out = capsys.readouterr().out
    assert "Normal days: 1/2 without a page" in out and "{'HighErrorRate': 1}" in out
    assert "The evenings before them (12 h each, no episode, `portal_day.WARMUP_S`): 1 pages" in out
    assert "| RedisDown | 1/1 | 2.00, 2 | 30 s | 0 | - | 0: RedisDown+HighErrorRate |" in out
    assert f"| DatabaseDown | 0/1 | 0.00, 0 | - | 0 | 0: {day[1].name} | - |" in out
    assert "Recall over 12 faults: 0.917; pages per fault: mean 1.00, max 2; faults paged exactly once: 10/12" in out
