"""A fault day drawn from a seed: `seed_day.normal_day(seed)` plus one of every runbook fault.

`fault_day(seed)` returns the normal day's episodes (unchanged: the same seed gives the same
blips) and one `Episode` per row below, each naming the alert it must page (`expect`, a
regular expression matched in full against the page's alertname) and the runbook's severity.
Faults come from `random.Random(FAULT_SEED + seed)`, row by row in this order (U = uniform;
a time of day is U over the stated span, night included):

| fault | expect (severity) | when | size | length |
|---|---|---|---|---|
| Redis down (crash, OOM kill) | RedisDown (P1) | 00:00-24:00 | - | U(2 min, 20 min) |
| PostgreSQL down (crash, disk full) | DatabaseDown (P1) | 00:00-24:00 | - | U(2 min, 20 min) |
| connection pool saturated (a leak) | DatabaseConnectionsSaturated (P2) | 00:00-24:00 | used ratio U(0.95, 1.00) | U(10 min, 40 min) |
| runaway query | LongRunningQuery (P3) | 00:00-24:00 | - | U(20 min, 90 min) |
| WHMCS unavailable | WhmcsUnavailable (P2) | 00:00-24:00 | reason U{auth, ip_denied, http_5xx, timeout, connect} | U(10 min, 60 min) |
| Platform Events stalled on one channel (subscription lost) | PlatformEventsStalled (P2) | 00:00-21:00 | channel U{busy, medium} | U(2 h, 6 h), lasting at least until 09:00 |
| Salesforce stops every channel (Connected App / JWT failure) | PlatformEvents.* (P2) | 00:00-22:00 | - | U(1 h, 4 h), lasting at least until 08:00 |
| BFF unreachable (crash loop: connection refused; or /health 503) | PortalUnreachable (P1) | 00:00-24:00 | U{refused, 503} | U(2 min, 20 min) |
| high error rate (a bad deploy, a failing backend) | HighErrorRate (P3) | 00:00-24:00 | 5xx fraction U(0.08, 0.30) | U(10 min, 40 min) |
| slow responses (a slow backend) | SlowResponses (P3) | 00:00-24:00 | response time x U(15, 40) | U(10 min, 40 min) |
| login brute force | LoginFailureSpike (P1) | 00:00-24:00 | U{40..200} failed logins from one address | U(2 min, 10 min) |
| Redis memory full (keys without TTL) | RedisMemory.* (P3) | 00:00-24:00 | used ratio U(0.96, 1.00) | U(15 min, 60 min) |

A stall that begins at night lasts until the morning because nobody restarts a subscription
that nothing reported; that is what makes it a fault and not a lull. The day ends at midnight: a
fault runs on to its drawn end or midnight, but never shorter than its shortest stated length (a
draw that midnight would cut shorter is drawn again). Faults do not overlap each other: with `TAIL_S` after each, a draw that would overlap an earlier fault is drawn again (at
most `MAX_DRAWS` times). Each fault's window is `start` to `end + TAIL_S`: the pages to on-call
in that window, whatever their alertname, are the fault's pages (one fault, one page).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from tests.proof.portal_day import CHANNELS, Episode, hm
from tests.proof.seed_day import normal_day

FAULT_SEED = 1_000_003  # fault draws never share a stream with the normal day's
TAIL_S = 20 * 60.0  # a page up to 20 minutes after a fault ended is still that fault's
MAX_DRAWS = 1000
WHMCS_REASONS = ("auth", "ip_denied", "http_5xx", "timeout", "connect")


def fault_day(seed: int) -> list[Episode]:
    """The seeded normal day and its faults, sorted by start."""
    return sorted(normal_day(seed) + faults(seed), key=lambda e: e.start)


def faults(seed: int) -> list[Episode]:
    """Only the faults of `fault_day(seed)`, in the table's order."""
    rng = random.Random(FAULT_SEED + seed)
    taken: list[tuple[float, float]] = []
    out: list[Episode] = []

    def place(span: tuple[float, float], length: tuple[float, float], until: float = 0.0
              ) -> tuple[float, float]:
        for _ in range(MAX_DRAWS):
            start = rng.uniform(*span)
            end = min(max(start + rng.uniform(*length), until), hm(24))
            if end - start < length[0]:
                continue  # midnight would cut it shorter than its stated length: drawn again
            if all(end + TAIL_S <= a or start >= b for a, b in taken):
                taken.append((start, end + TAIL_S))
                return start, end
        raise RuntimeError(f"fault_day({seed}): no free time for a fault of {length} s in {span} "
                           f"after {MAX_DRAWS} draws")

    def add(name: Callable[[float], str], kind: str, expect: str, severity: str, span: tuple[float, float],
            length: tuple[float, float], value: float = 0.0, until: float = 0.0, **kw: str) -> None:
        start, end = place(span, length, until)
        out.append(Episode(name(end - start), kind, start, end, value, expect=expect, severity=severity, **kw))

    day = (0.0, hm(24))
    add(lambda d: f"Redis down {d / 60:.0f} min", "redis_down", "RedisDown", "P1", day, (120, 1200))
    add(lambda d: f"PostgreSQL down {d / 60:.0f} min", "pg_down", "DatabaseDown", "P1", day, (120, 1200))
    ratio = rng.uniform(0.95, 1.0)
    add(lambda d: f"connections at {ratio:.0%} for {d / 60:.0f} min", "pg_connections",
        "DatabaseConnectionsSaturated", "P2", day, (600, 2400), ratio)
    add(lambda d: f"runaway query {d / 60:.0f} min", "pg_query", "LongRunningQuery", "P3", day, (1200, 5400))
    reason = rng.choice(WHMCS_REASONS)
    add(lambda d: f"WHMCS {reason} {d / 60:.0f} min", "whmcs_fail", "WhmcsUnavailable", "P2", day, (600, 3600),
        reason=reason)
    channel = rng.choice(CHANNELS[:2])[0]
    add(lambda d: f"Platform Events stalled on {channel} {d / 60:.0f} min", "replay_frozen", "PlatformEventsStalled",
        "P2", (0.0, hm(21)), (7200, 21600), until=hm(9), channel=channel)
    add(lambda d: f"Salesforce stops every channel {d / 60:.0f} min", "sf_stopped", "PlatformEvents.*", "P2",
        (0.0, hm(22)), (3600, 14400), until=hm(8))
    how = rng.choice(("bff_restart", "bff_503"))
    add(lambda d: f"BFF {'refuses connections' if how == 'bff_restart' else '/health 503'} {d / 60:.0f} min", how,
        "PortalUnreachable", "P1", day, (120, 1200))
    fraction = rng.uniform(0.08, 0.30)
    add(lambda d: f"{fraction:.0%} errors for {d / 60:.0f} min", "errors", "HighErrorRate", "P3", day, (600, 2400),
        fraction)
    factor = rng.uniform(15, 40)
    add(lambda d: f"responses x{factor:.0f} for {d / 60:.0f} min", "slow", "SlowResponses", "P3", day, (600, 2400),
        factor)
    attempts = rng.randint(40, 200)
    add(lambda d: f"brute force: {attempts} failed logins in {d / 60:.0f} min", "logins", "LoginFailureSpike", "P1",
        day, (120, 600), attempts, ip=f"198.51.100.{seed % 250 + 1}")
    memory = rng.uniform(0.96, 1.0)
    add(lambda d: f"Redis memory at {memory:.0%} for {d / 60:.0f} min", "redis_memory", "RedisMemory.*", "P3", day,
        (900, 3600), memory)
    return out
