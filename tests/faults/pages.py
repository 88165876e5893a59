"""What the receivers of one fault-matrix row were sent, as one ledger of `Page`s.

Both PagerDuty receivers (`oncall` at L1, `lead` at L2) post to one `FakePagerDuty` with their
own routing key, so the key says who was paged; `management` (L3) and `vendors` (L4) are two
`FakeWebhook`s that check the HMAC signature. `ledger()` turns every accepted request of the
three fakes into a `Page` in arrival order, and `check_incident()` asserts the whole story of
one incident: who got a trigger at which level and severity, not before its escalation time
(counted from the daemon's `fired_at`, as the daemon counts it), that each of them got the
resolve afterwards, and that nobody got anything else.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tests.fake_receivers import FakePagerDuty, FakeWebhook

ONCALL_KEY = "0nca11R0ut1ngKey0123456789abcdef"
LEAD_KEY = "1eadR0ut1ngKey0123456789abcdefAB"
PD_RECEIVERS = {ONCALL_KEY: "oncall", LEAD_KEY: "lead"}
PD_SEVERITY = {"P1": "critical", "P2": "error", "P3": "warning", "P4": "info"}
# What converting the daemon's Unix times to the pages' perf_counter clock may be off by (two
# clock reads apart): not a margin for the daemon's speed, which only makes pages later.
CLOCK_SLACK_S = 0.005


@dataclass(frozen=True, slots=True)
class Page:
    """One notification a receiver accepted."""

    receiver: str  # oncall | lead | management | vendors
    action: str  # trigger | resolve | acknowledge | renotify
    alertname: str
    severity: str  # P1..P4 ('' for a PagerDuty resolve: it carries no payload)
    level: str  # L1..L4 ('' for a PagerDuty resolve)
    dedup_key: str
    at: float  # time.perf_counter() when the fake received it
    labels: Mapping[str, str]
    value: float | None = None


def _pagerduty_pages(pd: FakePagerDuty) -> list[Page]:
    out = []
    for rec in pd.requests:
        if rec.status != 202 or not isinstance(rec.json, dict):
            continue
        ev: dict[str, Any] = rec.json
        payload = ev.get("payload") or {}
        details = payload.get("custom_details") or {}
        out.append(Page(
            receiver=PD_RECEIVERS.get(ev["routing_key"], f"unknown key {ev['routing_key'][:4]}..."),
            action=ev["event_action"], alertname=payload.get("class", ""),
            severity=details.get("portal_severity", ""), level=details.get("escalation_level", ""),
            dedup_key=ev.get("dedup_key", ""), at=rec.at, labels=details.get("labels", {}),
            value=details.get("value"),
        ))
        if ev["event_action"] == "trigger":
            assert payload["severity"] == PD_SEVERITY[details["portal_severity"]], ev
    return out


def _webhook_pages(hook: FakeWebhook) -> list[Page]:
    out = []
    for rec in hook.requests:
        if rec.status != 200 or not isinstance(rec.json, dict):
            continue
        body: dict[str, Any] = rec.json
        ann, labels = body["commonAnnotations"], body["commonLabels"]
        out.append(Page(
            receiver=body["receiver"], action=ann["notification_kind"], alertname=labels["alertname"],
            severity=labels["severity"], level=ann["escalation_level"], dedup_key=body["groupKey"],
            at=rec.at, labels=labels, value=float(ann["value"]),
        ))
    return out


def ledger(pd: FakePagerDuty, hooks: Iterable[FakeWebhook]) -> list[Page]:
    """Every accepted notification, oldest first."""
    pages = _pagerduty_pages(pd)
    for hook in hooks:
        pages += _webhook_pages(hook)
    return sorted(pages, key=lambda p: p.at)


def describe(pages: Iterable[Page]) -> str:
    """One line per page, for assertion messages."""
    lines = [f"  {p.at:10.3f} {p.receiver:<10} {p.action:<8} {p.level or '-':<3} {p.alertname} {p.severity}"
             f" {dict(p.labels) if p.action == 'trigger' else ''} key={p.dedup_key[:8]}" for p in pages]
    return "\n".join(lines) or "  (nothing)"


def check_incident(pages: list[Page], key: str, *, alertname: str, severity: str,
                   triggers: set[tuple[str, str]], fired_at: float, after_s: Mapping[str, float],
                   renotify_s: float | None = None) -> None:
    """Assert the whole story of the incident `key` and that `pages` hold nothing else.

    `triggers`: the (receiver, level) pairs that must have had exactly one trigger each;
    `fired_at`: when the daemon fired the incident (on the pages' clock, `time.perf_counter()`);
    `after_s`: how long after `fired_at` each level may arrive at the earliest (its escalation
    step's `after`, in test seconds). Every receiver with a trigger must have had exactly one
    resolve, after its trigger, and nothing else (no acknowledge); a renotify between them only
    if `renotify_s` (the severity's cadence, test seconds) is given and the receiver's n-th
    came at least n cadences after its step (an incident that stays open that long is
    re-notified: correct, whether or not a slow machine made it last that long).
    """
    story = describe(pages)
    others = [p for p in pages if p.dedup_key != key]
    assert not others, f"pages for other incidents than {alertname} ({key[:8]}):\n{story}"
    got = [p for p in pages if p.action == "trigger"]
    assert sorted((p.receiver, p.level) for p in got) == sorted(triggers), \
        f"{alertname}: expected triggers {sorted(triggers)}, got:\n{story}"
    for p in got:
        assert p.alertname == alertname and p.severity == severity, f"{p}\n{story}"
        assert p.at - fired_at >= after_s.get(p.level, 0.0) - CLOCK_SLACK_S, \
            f"{p.receiver} paged at {p.level} {p.at - fired_at:.3f}s after the incident fired, before its step " \
            f"({after_s})\n{story}"
    for receiver, level in triggers:
        mine = [p for p in pages if p.receiver == receiver]
        if renotify_s is not None:
            again = [p for p in mine if p.action == "renotify"]
            for n, p in enumerate(again, start=1):
                due = after_s.get(level, 0.0) + n * renotify_s
                assert p.at - fired_at >= due - CLOCK_SLACK_S, \
                    f"{receiver}: renotify {n} {p.at - fired_at:.3f}s after the incident fired, before {due:g}s" \
                    f"\n{story}"
            mine = [p for p in mine if p.action != "renotify"]
        assert [p.action for p in mine] == ["trigger", "resolve"], f"{receiver}:\n{story}"
