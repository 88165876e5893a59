"""The BFF's traffic over a day, as winston JSON lines: a daily curve, logins, errors, slow calls.

`traffic_rate(hour)` is requests per second: a night floor of about 0.2/s (00:00-06:00), a
morning peak around 11:00 (~6/s), an afternoon shoulder and an evening peak around 20:30
(~8/s), about 250,000 requests in 24 h. `Traffic.lines(t0, t1, ...)` draws the requests of one
step (Poisson, seeded) and renders them the way the BFF's winston `json()` logger writes a
request line (`level`, `message`, `url`, `statusCode`, `duration` in ms, `ip`, `timestamp`).

What a normal request looks like: 0.1% answer 500 (level error); 8% are logins, 3% of which
fail with 401 from the user's own address; durations are log-normal around 120 ms, and one
request in 3,000 is a single slow call of 6-12 s (a slow WHMCS or Salesforce answer).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

PATHS = ("/api/orders", "/api/invoices", "/api/subscriptions", "/api/sim/usage", "/api/me", "/api/catalog")
LOGIN = "/api/auth/login"


def _bump(hour: float, centre: float, width: float) -> float:
    d = abs(hour - centre) % 24.0
    d = min(d, 24.0 - d)  # circular: 23:00 is close to 01:00
    return math.exp(-((d / width) ** 2))


def traffic_rate(hour: float) -> float:
    """Requests per second at `hour` (0-24) of the day."""
    return 0.15 + 6.0 * _bump(hour, 11.0, 2.5) + 3.0 * _bump(hour, 15.0, 2.0) + 8.0 * _bump(hour, 20.5, 2.0)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw (Knuth for small means, the normal approximation above 30)."""
    if mean <= 0:
        return 0
    if mean > 30:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


@dataclass
class Mix:
    """How the requests of one step deviate from normal (faults and blips set these)."""

    error_fraction: float = 0.001  # requests answered 500
    slow_factor: float = 1.0  # durations multiplied by this
    extra: list[tuple[float, int, str, str]] = field(default_factory=list)  # (t, status, path, ip) lines


class Traffic:
    """Draws and renders the request lines of each step; counts what it wrote."""

    def __init__(self, seed: int, users: int = 5000) -> None:
        self.rng = random.Random(seed)
        self.ips = [f"10.{(i >> 8) & 255}.{i & 255}.{(i * 7) % 250 + 1}" for i in range(users)]
        self.written = 0
        self.errors = 0

    def lines(self, t0: float, t1: float, mix: Mix) -> bytes:
        """The lines of the requests in (t0, t1], epoch seconds, in time order."""
        rng = self.rng
        hour = (t0 % 86400) / 3600.0
        n = poisson(rng, traffic_rate(hour) * (t1 - t0))
        events: list[tuple[float, int, str, str, float]] = []
        ips, paths, rand, span = self.ips, PATHS, rng.random, t1 - t0
        for _ in range(n):
            t = t0 + rand() * span
            ip = ips[int(rand() * len(ips))]
            if rand() < 0.08:
                status = 401 if rand() < 0.03 else 200
                path = LOGIN
            else:
                status = 500 if rand() < mix.error_fraction else 200
                path = paths[int(rand() * len(paths))]
            ms = rng.lognormvariate(4.787, 0.6)  # median e^4.787 = 120 ms
            if rand() < 1 / 3000:
                ms = rng.uniform(6000.0, 12000.0)  # a single slow request
            events.append((t, status, path, ip, ms * mix.slow_factor))
        for t, status, path, ip in mix.extra:
            events.append((t, status, path, ip, rng.uniform(20.0, 60.0)))
        events.sort()
        second = datetime.fromtimestamp(math.floor(t0), UTC).strftime("%Y-%m-%dT%H:%M:")
        base = math.floor(t0) - math.floor(t0) % 60
        out = []
        for t, status, path, ip, ms in events:
            level = "error" if status >= 500 else "warn" if status >= 400 else "info"
            self.errors += status >= 500
            into = t - base  # seconds into the minute of t0 (a step never spans two minutes' ends)
            stamp = (second + f"{into:06.3f}Z") if into < 59.999 else _iso(t)
            out.append(orjson.dumps({
                "level": level, "message": f"{'POST' if path == LOGIN else 'GET'} {path} {status}",
                "url": path, "statusCode": status, "duration": round(ms, 1), "ip": ip, "timestamp": stamp,
            }))
        self.written += len(out)
        return b"\n".join(out) + b"\n" if out else b""
