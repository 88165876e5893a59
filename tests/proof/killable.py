"""Child processes for the kill -9 proofs: they work on a state database until SIGKILLed.

    python -m tests.proof.killable deliver STATE_DIR PAGERDUTY_URL    (routing key: $PROOF_ROUTING_KEY)
        The daemon's delivery path alone: `Outbox.drain()` over the state database with the real
        PagerDuty receiver, then exit 0. Killed at random points and restarted, it must lose
        nothing and re-send only what PagerDuty accepted but the database had not yet marked.
    python -m tests.proof.killable write STATE_DIR
        Incidents opening and resolving (one transaction each: incident, timeline, outbox rows)
        and deliveries marked (the outbox's own transactions), as fast as it can, for ever.
        Prints `B n` before and `C n` after each `Incidents.update`, unbuffered, so the parent
        knows whether a kill landed inside one.

Both run on `monitor.statedb.open_db` (WAL, synchronous=NORMAL), as the daemon does.
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime, timedelta

from monitor.config.loader import load_config_text
from monitor.delivery.outbox import Outbox
from monitor.delivery.pagerduty import Config as PagerDutyConfig
from monitor.delivery.pagerduty import PagerDutyReceiver
from monitor.incidents.lifecycle import Incidents
from monitor.model import Alert, Notification, ReceiverContext, Transition
from monitor.rules.engine import fingerprint
from monitor.statedb import open_db

T0 = datetime(2025, 12, 5, 9, 0, 0, tzinfo=UTC)
WRITER_CONFIG = """
receivers:
  oncall: {type: pagerduty, routing_key: "0123456789abcdef0123456789abcdef"}
  chat:   {type: slack, url: "http://127.0.0.1:9/services/T000/B000/XXXX"}
escalation:
  - {level: L1, after: 0s, severities: [P1, P2, P3, P4], receivers: [oncall, chat]}
"""
WRITER_RECEIVERS = ("oncall", "chat")
BATCH = 20  # alerts opened (and the previous batch resolved) per transaction


def alert(n: int) -> Alert:
    labels = {"alertname": "RedisDown", "severity": "P1", "check": f"cache-{n}"}
    return Alert(name="RedisDown", labels=labels, annotations={"summary": f"Redis cache-{n} is down"},
                 severity="P1", value=0.0, vendor=None, fingerprint=fingerprint("RedisDown", labels))


async def deliver(state_dir: str, url: str) -> None:
    conn = open_db(state_dir)
    cfg = PagerDutyConfig(type="pagerduty", routing_key=os.environ["PROOF_ROUTING_KEY"], url=url, timeout="2s")
    receiver = PagerDutyReceiver("oncall", cfg, ReceiverContext(host="proof"))
    try:
        async with asyncio.timeout(60):
            await Outbox(conn, {"oncall": receiver}).drain()
    finally:
        await receiver.aclose()


class Instant:
    """A receiver that accepts everything at once (the writer only needs rows marked)."""

    timeout_s = 1.0

    def __init__(self, name: str) -> None:
        self.name = name

    async def send(self, notification: Notification) -> None:
        pass

    async def aclose(self) -> None:
        pass


async def write(state_dir: str) -> None:
    conn = open_db(state_dir)
    incidents = Incidents(conn, load_config_text(WRITER_CONFIG, env={}))
    outbox = Outbox(conn, {name: Instant(name) for name in WRITER_RECEIVERS})
    start = conn.execute("SELECT count(*) FROM incidents").fetchone()[0]
    n = start // BATCH
    while True:  # until SIGKILL
        now = T0 + timedelta(minutes=n)
        opening = [alert(n * BATCH + i) for i in range(BATCH)]
        closing = [alert((n - 1) * BATCH + i) for i in range(BATCH)] if n > start // BATCH else []
        transitions = [Transition(a, "firing", now, now) for a in opening]
        transitions += [Transition(a, "resolved", now, now) for a in closing]
        print(f"B {n}", flush=True)
        incidents.update(opening, transitions, now)
        print(f"C {n}", flush=True)
        await outbox.drain()
        n += 1


def main() -> None:
    mode, state_dir, *rest = sys.argv[1:]
    if mode == "deliver":
        asyncio.run(deliver(state_dir, rest[0]))
    elif mode == "write":
        asyncio.run(write(state_dir))
    else:
        raise SystemExit(f"unknown mode {mode!r}: deliver or write")


if __name__ == "__main__":
    main()
