"""A log burst fires the shipped log alerts end to end: file -> logfile check -> rule engine.

HighErrorRate, SlowResponses and LoginFailureSpike from the repository's `alert_rules.yaml`
(with the recording rules they read), evaluated every 15 s of a fake clock over the history of
the samples the check returns (with the `check` label the scheduler adds), as the daemon does;
then the burst ends and they resolve.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

import orjson

from checks.logfile.check import Config, LogfileCheck
from monitor.config.loader import load_config
from monitor.model import CheckContext, MemoryState, Sample
from monitor.history import History
from monitor.rules.engine import AlertStates, RecordingRule, compile_rules, evaluate

RULES_FILE = Path(__file__).resolve().parent.parent / "alert_rules.yaml"
LOG_ALERTS = {"HighErrorRate", "SlowResponses", "LoginFailureSpike"}
T0 = 1_714_564_800.0


def line(rng: random.Random, *, status: int, ms: float, path: str = "/api/invoices", ip: str = "") -> bytes:
    level = "error" if status >= 500 else "warn" if status >= 400 else "info"
    return orjson.dumps({
        "level": level, "message": f"GET {path} {status}", "url": path, "statusCode": status,
        "duration": ms, "ip": ip or f"198.51.100.{rng.randint(1, 250)}",
        "timestamp": "2024-05-01T12:00:00.000Z",
    }) + b"\n"


async def test_a_log_burst_fires_and_then_resolves_the_three_log_alerts(tmp_path: Path) -> None:
    every = compile_rules(load_config(RULES_FILE, env={}))
    rules = [r for r in every if isinstance(r, RecordingRule) or r.alert in LOG_ALERTS]
    assert {r.alert for r in rules if not isinstance(r, RecordingRule)} == LOG_ALERTS
    history = History(retention_s=2 * 86400)
    log = tmp_path / "combined.log"
    log.touch()
    clock = [T0]
    cfg = Config.model_validate({"name": "bff_logs", "type": "logfile", "paths": [str(log)]})
    check = LogfileCheck(cfg, CheckContext(15.0, 10.0, MemoryState(), lambda: clock[0]))
    rng = random.Random(4)
    state = AlertStates()
    events: list[tuple[float, str, str]] = []

    async def step(lines: bytes) -> None:
        nonlocal state
        with open(log, "ab") as fh:
            fh.write(lines)
        samples = [Sample(s.name, {**s.labels, "check": "bff_logs"}, s.value) for s in await check.collect()]
        samples.append(Sample("portal_check_up", {"check": "bff_logs", "type": "logfile"}, 1.0))  # as the scheduler adds
        history.append(clock[0], samples, source="bff_logs")
        state, transitions = evaluate(rules, history, state, datetime.fromtimestamp(clock[0], UTC))
        events.extend((clock[0] - T0, t.alert.name, t.state) for t in transitions)

    for _ in range(8):  # two minutes of healthy traffic: nothing fires
        await step(b"".join(line(rng, status=200, ms=rng.uniform(20, 300)) for _ in range(300)))
        clock[0] += 15
    assert events == []

    burst_start = clock[0] - T0
    for _ in range(40):  # ten minutes of trouble: 5% errors, 3 s responses, one address guessing passwords
        burst = [line(rng, status=503 if rng.random() < 0.05 else 200, ms=rng.uniform(2500, 4000))
                 for _ in range(300)]
        burst += [line(rng, status=401, ms=30, path="/api/auth/login", ip="203.0.113.66") for _ in range(10)]
        await step(b"".join(burst))
        clock[0] += 15
    fired = {name: at for at, name, st in events if st == "firing"}
    assert set(fired) == LOG_ALERTS
    assert fired["LoginFailureSpike"] - burst_start < 60  # for: 0s, over 15 from one address
    # HighErrorRate: over 2% of the last 15 minutes' requests (the two healthy minutes dilute the
    # burst's 5% for about a minute), at least 4 failed, for 2m; SlowResponses: the 5m window's
    # average over 2 s, for 5m
    assert 120 < fired["HighErrorRate"] - burst_start <= 240
    assert 300 <= fired["SlowResponses"] - burst_start < 600

    # healthy again: the window empties within 5 minutes, then LoginFailureSpike's
    # keep_firing_for (15m) runs out: after 25 minutes everything has resolved
    for _ in range(100):
        await step(b"".join(line(rng, status=200, ms=rng.uniform(20, 300)) for _ in range(300)))
        clock[0] += 15
    resolved = {name for _, name, st in events if st == "resolved"}
    assert resolved == LOG_ALERTS
    assert not state.alerts
