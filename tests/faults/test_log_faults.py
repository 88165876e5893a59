"""Fault rows on the BFF's log (runbook 5 and 6): an error burst, slow responses, a brute
force from one address, and a log rotation in the middle of a burst.

Time is the derived config's (`tests/faults/derive.py`, SCALE 600): 30 min is 3 s, 1 h 6 s;
the log window is its floor, 2 s. Traffic is written every shrunk 30 s (50 ms).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from tests.faults.bff_log import failed_logins, request_line
from tests.faults.derive import WINDOW_FLOOR_S, shrunk
from tests.faults.harness import L2_AFTER, L3_AFTER, PAGE_TIMEOUT, Rig

WINDOW = max(shrunk("5m"), WINDOW_FLOOR_S)  # the derived logfile window
DRAIN = WINDOW + PAGE_TIMEOUT  # a resolve waits for the window to empty, then keep_firing_for


@asynccontextmanager
async def traffic(rig: Rig, lines: Callable[[], list[bytes]], every_s: float = 0.05) -> AsyncIterator[None]:
    """The BFF logging `lines()` every `every_s` while the block runs."""
    stop = asyncio.Event()
    task = asyncio.create_task(rig.log.traffic(lines, stop, every_s=every_s))
    try:
        yield
    finally:
        stop.set()
        await task


def errors_10_percent() -> list[bytes]:
    return [request_line(200, 80) for _ in range(18)] + [request_line(500, 40) for _ in range(2)]


def healthy() -> list[bytes]:
    return [request_line(200, 80) for _ in range(20)]


def slow_3_seconds() -> list[bytes]:
    return [request_line(200, 3000) for _ in range(20)]


def brute_force() -> list[bytes]:
    """40 refused logins a second from one address, among ordinary requests."""
    return failed_logins(2) + [request_line(200, 60) for _ in range(5)]


async def test_error_burst_pages_high_error_rate_p3_only(rig: Rig) -> None:
    """10% of requests fail: over 2% and at least 4 over 15 min, for 2 min, pages P3 on-call
    (never the lead); fixed, it resolves as the errors leave the 15 min."""
    async with traffic(rig, errors_10_percent):
        l1 = await rig.trigger("HighErrorRate", "oncall")
        assert (l1.severity, l1.level, l1.labels["check"]) == ("P3", "L1", "bff_logs")
        assert l1.value is not None and abs(l1.value - 0.1) < 0.02
        await rig.past(l1.at + L2_AFTER, "the lead's step")  # P3 never reaches the lead
    # the fault is fixed and the BFF goes on serving: the errors leave the 15 min, the share
    # falls under 2% (a BFF that stopped logging altogether is no data: tests/faults/test_no_data_faults.py)
    async with traffic(rig, healthy):
        await rig.resolved(l1.dedup_key, timeout=shrunk("15m") + DRAIN)
    rig.check(l1, {("oncall", "L1")})
    assert rig.incidents() == {"HighErrorRate{check=bff_logs}": ["opened", "resolved"]}, rig.story()


async def test_slow_responses_page_slow_responses_p3_only(rig: Rig) -> None:
    async with traffic(rig, slow_3_seconds):
        l1 = await rig.trigger("SlowResponses", "oncall")
        assert (l1.severity, l1.level, l1.value) == ("P3", "L1", 3.0)
        await rig.past(l1.at + L2_AFTER, "the lead's step")
    await rig.resolved(l1.dedup_key, timeout=DRAIN)
    rig.check(l1, {("oncall", "L1")})
    assert rig.incidents() == {"SlowResponses{check=bff_logs}": ["opened", "resolved"]}, rig.story()


async def test_brute_force_from_one_address_pages_login_failure_spike_p1_up_to_l3(rig: Rig) -> None:
    async with traffic(rig, brute_force):
        l1 = await rig.trigger("LoginFailureSpike", "oncall")
        assert (l1.severity, l1.level, l1.labels["pattern"], l1.labels["category"]) == \
            ("P1", "L1", "single_source", "security")
        await rig.trigger("LoginFailureSpike", "lead", timeout=L2_AFTER + PAGE_TIMEOUT)
        await rig.trigger("LoginFailureSpike", "management", timeout=L3_AFTER + PAGE_TIMEOUT)
    # the attack stops: the window empties, then keep_firing_for (15 min) runs out
    await rig.resolved(l1.dedup_key, timeout=DRAIN + shrunk("15m"))
    rig.check(l1, {("oncall", "L1"), ("lead", "L2"), ("management", "L3")})
    assert rig.incidents() == {"LoginFailureSpike{check=bff_logs}": ["opened", "resolved"]}, rig.story()


async def test_log_rotation_mid_burst_detects_the_burst_once(rig: Rig) -> None:
    """10 refused logins, then logrotate (rename, create), then 10 more in the new file: 20
    from one address in the window, over the threshold of 15 only if no line was lost, and
    exactly 20 if none was read twice. One incident, that goes on escalating as the attack
    goes on in the new file.

    The attack continues until L3 because the derived window (2 s, its floor: 20 min of
    shipped time instead of 5) plus keep_firing_for (15 min) would end a lone burst right
    at the lead's 30 minutes, a race; with the shipped 5 min it would resolve at 20 min. It
    goes on as soon as the 40 are counted, before the page: waiting for the page first left
    the burst alone in the window for as long as the page took, and on a busy machine that
    was long enough for it to end (resolved, then paged again by the attack's next lines)."""
    rig.log.write(failed_logins(10))
    await rig.wait_metric("portal_log_auth_failures", 10.0, check="bff_logs")
    rig.log.rotate()
    rig.log.write(failed_logins(10))
    await rig.wait_metric("portal_log_auth_failures", 20.0, check="bff_logs")
    assert await rig.metric("portal_log_requests_total", check="bff_logs", status_class="4xx") == 20
    assert await rig.metric("portal_log_lines_total", check="bff_logs", level="warn") == 20
    async with traffic(rig, brute_force):
        l1 = await rig.trigger("LoginFailureSpike", "oncall")
        assert (l1.severity, l1.labels["pattern"]) == ("P1", "single_source") and (l1.value or 0) > 15, l1
        await rig.trigger("LoginFailureSpike", "lead", timeout=L2_AFTER + PAGE_TIMEOUT)
        await rig.trigger("LoginFailureSpike", "management", timeout=L3_AFTER + PAGE_TIMEOUT)
    await rig.resolved(l1.dedup_key, timeout=DRAIN + shrunk("15m"))
    rig.check(l1, {("oncall", "L1"), ("lead", "L2"), ("management", "L3")})
    assert rig.incidents() == {"LoginFailureSpike{check=bff_logs}": ["opened", "resolved"]}, rig.story()
    assert rig.log.rotations == 1
