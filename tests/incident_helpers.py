"""Shared by the incident, silence and inhibition tests: the runbook's routing config, alerts,
and a look at what was queued. Times are explicit datetimes; nothing here reads the clock."""

from __future__ import annotations

import hashlib
import sqlite3
from datetime import UTC, datetime, timedelta

from monitor.config.loader import load_config_text
from monitor.config.model import Config
from monitor.model import Alert, Transition
from monitor.delivery.outbox import list_rows

T0 = datetime(2025, 12, 5, 9, 0, 0, tzinfo=UTC)
KEY = "0123456789abcdef0123456789abcdef"

CONFIG = f"""
receivers:
  oncall:     {{type: pagerduty, routing_key: "{KEY}"}}
  lead:       {{type: pagerduty, routing_key: "{KEY[::-1]}"}}
  management: {{type: webhook, url: "http://127.0.0.1:9/management"}}
  chat:       {{type: slack, url: "http://127.0.0.1:9/services/T/B/X"}}
  vendors:    {{type: webhook, url: "http://127.0.0.1:9/vendors"}}
  local:      {{type: log}}
escalation:
  - {{level: L1, after: 0s,  severities: [P1, P2, P3, P4], receivers: [oncall, chat]}}
  - {{level: L2, after: 30m, severities: [P1, P2],         receivers: [lead]}}
  - {{level: L3, after: 1h,  severities: [P1],             receivers: [management]}}
  - {{level: L4, after: 0s,  vendor: true,                 receivers: [vendors]}}
inhibit:
  - {{source: {{alertname: RedisDown}}, target: {{alertname: [PlatformEventsStalled]}}}}
"""


def config(text: str = CONFIG, env: dict[str, str] | None = None) -> Config:
    return load_config_text(text, env=env or {})


def fingerprint(name: str, labels: dict[str, str]) -> str:
    """A stand-in for the engine's dedup key: a stable hash of the name and sorted labels."""
    text = name + "\0" + "\0".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def alert(name: str = "RedisDown", severity: str = "P1", *, vendor: str | None = None, value: float = 0.0,
          **labels: str) -> Alert:
    full = {"alertname": name, "severity": severity, **labels}
    return Alert(
        name=name,
        labels=full,
        annotations={
            "summary": f"{name} on {labels.get('check', 'x')}",
            "runbook_url": f"https://wiki.example/runbooks/incident-response#{name.lower()}",
        },
        severity=severity,
        value=value,
        vendor=vendor,
        fingerprint=fingerprint(name, full),
    )


def fired(a: Alert, at: datetime = T0, since: datetime | None = None) -> Transition:
    return Transition(alert=a, state="firing", at=at, active_since=since or at)


def resolved(a: Alert, at: datetime) -> Transition:
    return Transition(alert=a, state="resolved", at=at, active_since=at)


def queued(conn: sqlite3.Connection, since_id: int = 0) -> list[tuple[str, str, str]]:
    """(receiver, kind, level) of the outbox rows after `since_id`, in queue order."""
    return [(r.receiver, r.kind, r.level) for r in list_rows(conn) if r.id > since_id]


def last_id(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT coalesce(max(id), 0) FROM outbox").fetchone()[0]


def at(minutes: float = 0, seconds: float = 0) -> datetime:
    return T0 + timedelta(minutes=minutes, seconds=seconds)
