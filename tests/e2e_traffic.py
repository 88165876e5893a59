"""Traffic for the log check's end-to-end test, from its own process (as a BFF's clients are
not the monitor): `python -m tests.e2e_traffic <base url> <first request> <count> [<at>]`
sends requests `first`..`first + count - 1` of the known mix, CONCURRENCY at a time, prints
`reached` after `at` of them (the test then rotates the log under load) and `done` at the end.
Exits 1 naming the request when a reply is not the expected status."""

from __future__ import annotations

import asyncio
import random
import sys

import aiohttp

CONCURRENCY = 24
FAILING_CLIENTS = ["198.51.100.1"] * 6 + ["198.51.100.2"] * 3 + ["203.0.113.9", "203.0.113.10"]


def request(i: int) -> tuple[str, str, dict[str, str], int]:
    """The i-th request of the mix: (method, path, headers, expected status)."""
    rng = random.Random(i * 7919 + 14)
    r = rng.random()
    rid = f"rid={i}"
    if r < 0.66:
        return "GET", f"/api/invoices?delay={rng.choice([0, 0, 1, 3, 8, 20])}&{rid}", {}, 200
    if r < 0.70:
        return "GET", f"/api/slow?delay={rng.randint(260, 700)}&{rid}", {}, 200
    if r < 0.76:
        status = rng.choice([500, 502, 503])
        return "GET", f"/api/fail?status={status}&{rid}", {}, status
    if r < 0.80:
        return "GET", f"/api/fail?status=404&{rid}", {}, 404
    if r < 0.85:
        client = rng.choice(["198.51.100.50", "198.51.100.51"])
        return "POST", f"/api/auth/login?ok=1&{rid}", {"X-Forwarded-For": client}, 200
    if r < 0.93:
        client = rng.choice(FAILING_CLIENTS)
        xff = f"6.6.6.{rng.randint(1, 9)}, {client}" if rng.random() < 0.2 else client  # the client wrote one
        return "POST", f"/api/auth/login?{rid}", {"X-Forwarded-For": xff}, 401
    return "GET", f"/health?{rid}", {}, 200


async def send(base: str, first: int, count: int, at: int | None) -> None:
    todo = iter(range(first, first + count))
    done = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal done
        for i in todo:
            method, path, headers, want = request(i)
            async with session.request(
                method, base + path, headers=headers, timeout=aiohttp.ClientTimeout(total=30)
            ) as r:
                await r.read()
                if r.status != want:
                    raise SystemExit(f"e2e_traffic: {method} {path}: {r.status}, expected {want}")
            done += 1
            if done == at:
                print("reached", flush=True)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY)) as session:
        await asyncio.gather(*(worker(session) for _ in range(CONCURRENCY)))
    print("done", flush=True)


if __name__ == "__main__":
    base, first, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    asyncio.run(send(base, first, count, int(sys.argv[4]) if len(sys.argv) > 4 else None))
