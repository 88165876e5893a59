"""A normal day drawn from a seed: the blips of `test_noise_day.NORMAL_DAY`, with random counts,
times, sizes and lengths, so the rules meet days nobody wrote knowing them.

`normal_day(seed)` returns the day's `Episode`s (none expects a page). Every draw comes from
`random.Random(seed)`, in a fixed order, from these distributions (U = uniform, counts
inclusive; a time of day is U over the stated span):

| blip | episodes per day | when | size | length |
|---|---|---|---|---|
| restart of Redis, PostgreSQL or the BFF (upgrade, failover, deploy, crash; each service equally likely) | U{0..3} | 00:00-24:00 | - | U(1 s, 20 s) |
| BFF deploy (rolling restart) | U{0..2} | 08:00-20:00 | - | U(1 s, 20 s) |
| PostgreSQL connection burst | U{0..4} | 07:00-22:00 | used ratio U(0.80, 0.95) | U(30 s, 3 min) |
| log error burst (5xx) | U{0..4} | 00:00-24:00 | error fraction U(0.02, 0.10) | U(10 s, 2 min) |
| slowdown | U{0..2} | 07:00-22:00 | response time x U(3, 20) | U(30 s, 2 min) |
| Platform Events lull at night (busy channel) | 1 | start U(00:30, 03:30) | - | U(30 min, 2 h) |
| Platform Events lull by day (one channel, each equally likely) | U{0..2} | 06:00-23:00 | - | U(5 min, 20 min) |
| WHMCS timeouts | U{0..2} | 00:00-24:00 | - | U(10 s, 90 s) |
| users mistyping passwords | U{0..5} | 07:00-23:00 | U{1..8} failures, one IP each | U(1 min, 3 min) |
| Redis memory bump | U{0..2} | 07:00-22:00 | used ratio U(0.85, 0.94) | U(1 min, 4 min) |
| long report query | U{0..2} | 00:00-06:00 | - | U(1 min, 5 min) |

Besides these, the world itself varies (`portal_day`): Poisson request traffic on a daily curve
with 0.1% stray 5xx and 3% failed logins, Platform Events arriving at random on each channel of
`portal_day.CHANNELS` at its own volume (natural lulls of hours at night), 500s while Redis or
PostgreSQL restarts.

Episodes may overlap (a deploy during an error burst); the world takes the first active one of
each kind, as on the hand-written day.
"""

from __future__ import annotations

import random

from tests.proof.portal_day import CHANNELS, Episode, hm

RESTARTS = {"Redis": "redis_down", "PostgreSQL": "pg_down", "BFF": "bff_restart"}


def normal_day(seed: int) -> list[Episode]:
    rng = random.Random(seed)
    out: list[Episode] = []

    def some(n_max: int, name: str, kind: str, span: tuple[float, float], length: tuple[float, float],
             value: tuple[float, float] | None = None, **kw: object) -> None:
        for i in range(rng.randint(0, n_max)):
            start = rng.uniform(*span)
            dur = rng.uniform(*length)
            v = rng.uniform(*value) if value else 0.0
            out.append(Episode(f"{name} #{i + 1} ({dur:.0f} s)", kind, start, min(start + dur, hm(24)), v,
                               **kw))  # type: ignore[arg-type]

    for i in range(rng.randint(0, 3)):
        service = rng.choice(list(RESTARTS))
        start = rng.uniform(0, hm(24))
        dur = rng.uniform(1, 20)
        out.append(Episode(f"{service} restart #{i + 1} ({dur:.0f} s)", RESTARTS[service], start,
                           min(start + dur, hm(24))))
    some(2, "BFF deploy", "bff_restart", (hm(8), hm(20)), (1, 20))
    some(4, "connection burst", "pg_connections", (hm(7), hm(22)), (30, 180), (0.80, 0.95))
    some(4, "error burst", "errors", (0, hm(24)), (10, 120), (0.02, 0.10))
    some(2, "slowdown", "slow", (hm(7), hm(22)), (30, 120), (3, 20))
    night = rng.uniform(hm(0, 30), hm(3, 30))
    night_len = rng.uniform(1800, 7200)
    out.append(Episode(f"nightly Platform Events lull ({night_len / 60:.0f} min)", "replay_frozen", night,
                       night + night_len))
    for i in range(rng.randint(0, 2)):
        channel = rng.choice(CHANNELS)[0]
        start = rng.uniform(hm(6), hm(23))
        dur = rng.uniform(300, 1200)
        out.append(Episode(f"Platform Events lull by day #{i + 1} on {channel} ({dur / 60:.0f} min)",
                           "replay_frozen", start, start + dur, channel=channel))
    some(2, "WHMCS timeout", "whmcs_fail", (0, hm(24)), (10, 90), reason="timeout")
    for i in range(rng.randint(0, 5)):
        start = rng.uniform(hm(7), hm(23))
        dur = rng.uniform(60, 180)
        failures = rng.randint(1, 8)
        out.append(Episode(f"user {i + 1} mistypes a password {failures} times", "logins", start, start + dur,
                           failures, ip=f"10.{seed % 250}.{i}.{rng.randint(1, 254)}"))
    some(2, "Redis memory bump", "redis_memory", (hm(7), hm(22)), (60, 240), (0.85, 0.94))
    some(2, "long report query", "pg_query", (0, hm(6)), (60, 300))
    return sorted(out, key=lambda e: e.start)
