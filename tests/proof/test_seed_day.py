"""Seeded normal days: blips of random length (`seed_day.normal_day`, distributions stated
there), evaluated with the shipped rules exactly as `test_noise_day.py` evaluates the
hand-written day.

The generator is checked against its stated distributions over many seeds; then the first
three seeds are simulated in full (24 h each, the real logfile check over a day of BFF traffic)
and their pages compared with an exact list: a page on a seeded normal day is a false page,
and one that appears, disappears or changes its cause fails the test until this list is
updated with the reason. `python -m tests.proof.noise_report` (`make noise-report`) gives the
figures over 30 seeds and the recall on seeded fault days.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.proof.portal_day import CHANNELS, DayReport, hm
from tests.proof.seed_day import normal_day
from tests.proof.test_noise_day import FAULTS, causes, describe, judge, run_day, shipped

SEEDS = (0, 1, 2)

# The shipped rules page nothing on these seeds' normal days (their PostgreSQL restarts, error
# bursts and the channels' ordinary gaps included) and, on the fault day, each fault once and
# nothing else. `make noise-report` runs 30 of each.


def test_the_generator_keeps_to_its_stated_distributions() -> None:
    seen: dict[str, int] = {}
    for seed in range(300):
        day = normal_day(seed)
        assert day == normal_day(seed)  # the seed alone decides the day
        assert all(e.expect is None for e in day)
        nights = [e for e in day if e.name.startswith("nightly")]
        assert len(nights) == 1 and hm(0, 30) <= nights[0].start <= hm(3, 30)
        assert 1800 <= nights[0].end - nights[0].start <= 7200
        for e in day:
            length = e.end - e.start
            seen[e.kind] = seen.get(e.kind, 0) + 1
            match e.kind:
                case "redis_down" | "pg_down" | "bff_restart":
                    assert 1 <= length <= 20, e
                case "pg_connections":
                    assert 30 <= length <= 180 and 0.80 <= e.value <= 0.95, e
                case "errors":
                    assert 10 <= length <= 120 and 0.02 <= e.value <= 0.10, e
                case "slow":
                    assert 30 <= length <= 120 and 3 <= e.value <= 20, e
                case "replay_frozen" if e not in nights:
                    assert 300 <= length <= 1200 and hm(6) <= e.start <= hm(23), e
                    assert e.channel in dict(CHANNELS), e
                case "whmcs_fail":
                    assert 10 <= length <= 90 and e.reason == "timeout", e
                case "logins":
                    assert 60 <= length <= 180 and 1 <= e.value <= 8, e
                case "redis_memory":
                    assert 60 <= length <= 240 and 0.85 <= e.value <= 0.94, e
                case "pg_query":
                    assert 60 <= length <= 300 and e.start <= hm(6), e
    # every kind of blip occurs, and restarts are common enough to matter
    restarts = [sum(e.kind in ("redis_down", "pg_down") or e.name.startswith("BFF restart") for e in normal_day(s))
                for s in range(300)]
    assert min(restarts) == 0 and max(restarts) == 3  # U{0..3} restarts of a store or the BFF a day
    assert set(seen) == {"redis_down", "pg_down", "bff_restart", "pg_connections", "errors", "slow", "replay_frozen",
                         "whmcs_fail", "logins", "redis_memory", "pg_query"}
    assert seen["redis_down"] + seen["pg_down"] + seen["bff_restart"] > 300


@pytest.mark.parametrize("seed", SEEDS)
async def test_a_seeded_normal_day_pages_nobody(
        seed: int, tmp_path: Path, record_property) -> None:
    episodes = normal_day(seed)
    report: DayReport = await run_day(episodes, shipped(), tmp_path)
    print("\n" + describe(f"seeded normal day {seed}, shipped rules", report, episodes))
    _, noise = judge(report, episodes)
    record_property(f"seed_{seed}_pages", len(noise))
    assert report.lines > 200_000  # the logfile check really read a day of traffic
    assert causes(noise, episodes) == []


async def test_a_seeded_fault_day_pages_every_fault_once(tmp_path: Path, record_property) -> None:
    episodes = normal_day(SEEDS[0]) + FAULTS
    report = await run_day(episodes, shipped(), tmp_path)
    print("\n" + describe(f"seeded fault day {SEEDS[0]}, shipped rules", report, episodes))
    hits, noise = judge(report, episodes)
    record_property("seeded_fault_day_recall", sum(len(h) == 1 for h in hits.values()) / len(FAULTS))
    assert {name: [p.alertname for p in got] for name, got in hits.items()} == {f.name: [f.expect] for f in FAULTS}
    assert causes(noise, episodes) == []
