"""The runbook's texts, rendered: Internal Status Update, Customer Communication, Post-Incident Review.

Pure functions of a `Notification` (or an incident and its timeline), so every receiver
says the same thing in the same words, and a test reads the exact text.

Where the words come from:
- *brief*: the alert's `summary` annotation (else its name), prefixed `[TEST]` for tests;
- *impact*: an `impact` annotation or label if the rule sets one, else the runbook's
  definition of the severity ("Complete service outage or data loss" for P1, ...);
- *current actions*: the runbook steps in the rule's `description`, one per line (leading
  `1.`, `1)`, `-`, `*`, `•` are dropped), then the runbook link; for a resolved incident,
  when it cleared and (P1/P2) when the review is due. An alert kept firing without data
  says so first ("No data since T (why): ..."). A resolve that is not a fix says how it was
  closed instead of "Fault cleared" ("closed: no data for 1h at T", "closed: rule removed by
  reload at T"), its status is "Closed", and it has no customer draft: nothing was fixed to
  announce;
- *customer communication*: `service`, `customer_description` and `customer_impact`
  annotations or labels, else neutral wording by severity.

Incidents and timelines are read duck-typed, so this module depends on nothing but the
model: an incident is a mapping or an object with `id`, `alertname`, `severity`, `summary`,
`started_at`, `resolved_at`, `level`, `labels` and `runbook` (missing ones are left out);
a timeline entry has `at`, `event` (`detected`, `fired`, `notified`, `escalated`,
`acknowledged`, `resolved`, or any other word) and `detail`. Times may be datetimes, ISO 8601
strings or Unix seconds; all are shown in UTC.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from monitor.model import Notification

SEVERITY_NAMES = {"P1": "Critical", "P2": "High", "P3": "Medium", "P4": "Low"}
# The runbook's "Definition" column: the default impact line.
SEVERITY_IMPACT = {
    "P1": "Complete service outage or data loss",
    "P2": "Major feature unavailable",
    "P3": "Degraded performance or partial outage",
    "P4": "Minor issue, workaround available",
}
STATUS_WORDS = {"firing": "Investigating", "acknowledged": "Identified", "resolved": "Resolved"}
CUSTOMER_CADENCE = {"P1": "30 minutes", "P2": "1 hour"}
REVIEW_SEVERITIES = ("P1", "P2")
REVIEW_BUSINESS_DAYS = 3

_CUSTOMER_DEFAULTS = {
    "P1": ("Parts of the Customer Portal are unavailable.", "You may be unable to sign in or use the portal."),
    "P2": (
        "An important feature of the Customer Portal is not working.",
        "Some actions, such as orders or payments, may fail or be delayed.",
    ),
}
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+")


# ---------------------------------------------------------------- small pieces


def utc_text(dt: datetime | None) -> str:
    """`2024-05-03 14:05:09 UTC`; a naive datetime is taken as UTC."""
    if dt is None:
        return "-"
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def brief(n: Notification) -> str:
    text = n.alert.annotations.get("summary") or n.alert.name
    return f"[TEST] {text}" if n.kind == "test" else text


def status_word(status: str) -> str:
    """firing → Investigating, acknowledged → Identified, resolved → Resolved (the runbook's words)."""
    return STATUS_WORDS.get(status, status.capitalize())


def status_of(n: Notification) -> str:
    """The status word of a notification: "Closed" for a resolve that fixed nothing."""
    return "Closed" if n.status == "resolved" and n.closed_reason else status_word(n.status)


def impact(n: Notification) -> str:
    a = n.alert
    return a.annotations.get("impact") or a.labels.get("impact") or SEVERITY_IMPACT.get(a.severity, "Unknown")


def runbook_steps(description: str) -> list[str]:
    """The steps in a rule's `description`, one per non-empty line, without list markers."""
    return [_BULLET.sub("", line).strip() for line in description.splitlines() if line.strip()]


def current_actions(n: Notification) -> list[str]:
    if n.status == "resolved":
        when = utc_text(n.resolved_at or n.updated_at)
        actions = [f"{n.closed_reason} at {when}" if n.closed_reason else f"Fault cleared at {when}"]
        due = review_due(n.resolved_at or n.updated_at, n.alert.severity)
        if due is not None:
            actions.append(f"Post-incident review due {due.isoformat()} (within {REVIEW_BUSINESS_DAYS} business days)")
        return actions
    actions = runbook_steps(n.alert.annotations.get("description", ""))
    if n.status == "acknowledged":
        who = n.alert.annotations.get("acknowledged_by")
        actions.insert(
            0, f"Acknowledged by {who}: on-call is working on it" if who else "Acknowledged: on-call is working on it"
        )
    if n.alert.no_data_since is not None:
        actions.insert(
            0,
            f"N{n.alert.no_data[1:]}: the alert stays open until its series is back "
            "(its condition decides) or the rule's no_data_timeout ends",
        )
    runbook = n.alert.runbook
    if runbook:
        actions.append(f"Runbook: {runbook}")
    return actions or ["Follow the incident-response runbook"]


def next_update(n: Notification) -> str:
    if n.status == "resolved":
        return "none (resolved)"
    if n.next_update_at is None:
        return "when the status changes"
    return utc_text(n.next_update_at)


def incident_url(external_url: str | None, incident_id: int) -> str:
    """The incident's page (`{external_url}/incidents/{id}`: the runbook steps, the buttons), or ""."""
    if not external_url or not incident_id:
        return ""
    return f"{external_url.rstrip('/')}/incidents/{incident_id}"


def _field(n: Notification, key: str) -> str:
    return n.alert.annotations.get(key) or n.alert.labels.get(key) or ""


# ---------------------------------------------------------------- the runbook's templates


def status_update(n: Notification) -> str:
    """The runbook's *Internal Status Update* block for this notification."""
    lines = [
        f"INCIDENT UPDATE - {n.alert.severity} - {brief(n)}",
        f"Status: {status_of(n)}",
        f"Impact: {impact(n)}",
        f"Started: {utc_text(n.started_at)}",
        f"Last Update: {utc_text(n.updated_at)}",
        "Current Actions:",
        *(f"- {a}" for a in current_actions(n)),
        f"Next Update: {next_update(n)}",
    ]
    return "\n".join(lines)


def customer_communication(n: Notification) -> str:
    """The runbook's *Customer Communication* draft; "" below P2 (the runbook: P1/P2 only)
    and for a resolve that fixed nothing (closed for no data, by a reload): nothing to announce.

    Updates are promised at the severity's cadence (P1 every 30 minutes, P2 every hour);
    once resolved, the draft says so instead of promising updates.
    """
    sev = n.alert.severity
    if sev not in CUSTOMER_CADENCE or (n.status == "resolved" and n.closed_reason):
        return ""
    default_what, default_impact = _CUSTOMER_DEFAULTS[sev]
    service = _field(n, "service") or "the Customer Portal"
    lines = [
        f"We are currently experiencing issues with {service}.",
        f"What's happening: {_field(n, 'customer_description') or default_what}",
        f"Impact: {_field(n, 'customer_impact') or default_impact}",
    ]
    if n.status == "resolved":
        lines[0] = f"We experienced issues with {service}, which are now resolved."
        lines += [
            f"Status: The issue was resolved at {utc_text(n.resolved_at or n.updated_at)}.",
            "We apologize for any inconvenience.",
        ]
    else:
        lines += [
            "Status: Our team is actively working to resolve this issue.",
            f"We will provide updates every {CUSTOMER_CADENCE[sev]}.",
            "We apologize for any inconvenience.",
        ]
    return "\n".join(lines)


# ---------------------------------------------------------------- post-incident review


def review_due(resolved_at: datetime, severity: str) -> date | None:
    """The review's due date: 3 business days (Mon–Fri, UTC) after resolution, for P1/P2.

    Public holidays are not known here; a team that observes them moves the date by hand.
    """
    if severity not in REVIEW_SEVERITIES:
        return None
    if resolved_at.tzinfo is None:
        resolved_at = resolved_at.replace(tzinfo=UTC)
    day = resolved_at.astimezone(UTC).date()
    left = REVIEW_BUSINESS_DAYS
    while left:
        day += timedelta(days=1)
        if day.weekday() < 5:
            left -= 1
    return day


def _get(obj: Any, key: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key, default)
    return getattr(obj, key, default)


def _as_time(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(float(value), UTC)
    if isinstance(value, str):
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
    raise TypeError(f"cannot read {value!r} as a time")


def _duration(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return ""
    total = int((end - start).total_seconds())
    sign, total = ("-" if total < 0 else ""), abs(total)
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return sign + (f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s")


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def review_template(incident: Any, timeline: Iterable[Any], due: date | None) -> str:
    """The runbook's *Post-Incident Review* template in Markdown, filled with what we know.

    The facts (what fired, when, who was told, when it was acknowledged and resolved) are
    filled in from the incident and its timeline; the questions only people can answer
    (root cause, action items) stay as the runbook's prompts.
    """
    entries = sorted(
        ((_as_time(_get(e, "at")), str(_get(e, "event", "")), str(_get(e, "detail", "") or "")) for e in timeline),
        key=lambda e: e[0] or datetime.min.replace(tzinfo=UTC),
    )

    def first(event: str) -> datetime | None:
        return next((at for at, ev, _ in entries if ev == event), None)

    iid = _get(incident, "id", "?")
    name = _get(incident, "alertname", "") or "incident"
    sev = _get(incident, "severity", "") or "?"
    started = _as_time(_get(incident, "started_at"))
    resolved = _as_time(_get(incident, "resolved_at")) or first("resolved")
    detected = first("detected") or started
    acked = first("acknowledged")
    labels = _get(incident, "labels") or {}
    runbook = _get(incident, "runbook", "") or ""
    level = _get(incident, "level", "") or ""

    if due is not None:
        due_line = f"**Review due:** {due.isoformat()} ({REVIEW_BUSINESS_DAYS} business days after resolution)"
    else:
        due_line = "**Review due:** not required (the runbook asks for a review after P1 and P2 incidents)"
    label_text = ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "none"
    out = [
        f"# Post-Incident Review: incident {iid}, {name} ({sev} - {SEVERITY_NAMES.get(sev, '?')})",
        "",
        due_line,
        "",
        "## 1. Incident Summary",
        "",
        f"- **What happened?** {_get(incident, 'summary', '') or name}",
        f"- **When did it start/end?** {utc_text(started)} to "
        + (f"{utc_text(resolved)} ({_duration(started, resolved)})" if resolved else "not resolved yet"),
        f"- **Who was affected?** _to fill in_ (severity {sev}: {SEVERITY_IMPACT.get(sev, 'unknown')})",
        f"- **Alert:** `{name}` ({label_text})" + (f", highest escalation level {level}" if level else ""),
    ]
    if runbook:
        out.append(f"- **Runbook:** {runbook}")
    out += [
        "",
        "## 2. Timeline",
        "",
        f"- **Detection time:** {utc_text(detected)}",
        "- **Response time:** "
        + (
            f"{utc_text(acked)} (acknowledged {_duration(detected, acked)} after detection)"
            if acked
            else "not acknowledged"
        ),
        "- **Resolution time:** "
        + (
            f"{utc_text(resolved)} ({_duration(detected, resolved)} after detection)"
            if resolved
            else "not resolved yet"
        ),
        "- **Key milestones:**",
        "",
        "| Time (UTC) | Event | Detail |",
        "| --- | --- | --- |",
    ]
    out += [f"| {utc_text(at)} | {_cell(ev)} | {_cell(detail)} |" for at, ev, detail in entries]
    if not entries:
        out.append("| - | (no timeline recorded) | |")
    out += [
        "",
        "## 3. Root Cause Analysis",
        "",
        "- **What was the direct cause?** _to fill in_",
        "- **What were contributing factors?** _to fill in_",
        "- **Why wasn't this prevented?** _to fill in_",
        "",
        "## 4. Action Items",
        "",
        "- [ ] Immediate fixes applied:",
        "- [ ] Preventive measures needed:",
        "- [ ] Monitoring improvements:",
        "- [ ] Documentation updates:",
        "",
    ]
    return "\n".join(out)
