"""PagerDuty Events API v2 receiver.

One notification is one event to `cfg.url` (default `https://events.pagerduty.com/v2/enqueue`):

| `Notification.kind` | `event_action` | body |
| --- | --- | --- |
| `trigger`, `test` | `trigger` | routing_key, dedup_key, payload, links, client |
| `acknowledge` | `acknowledge` | routing_key, dedup_key |
| `resolve` | `resolve` | routing_key, dedup_key (+ payload when closed without a fix, below) |
| `renotify` | (nothing is sent) | PagerDuty re-notifies by itself |

A resolve that is not "the fault cleared" (`Notification.closed_reason`: "closed: no data for
1h", "closed: rule removed by reload") carries a payload as Alertmanager's resolves do: the
summary starts with the reason and `custom_details.closed_reason` holds it, so the alert's
log in PagerDuty says why it closed. A trigger of an alert kept without data has
`custom_details.no_data` ("no data since T (why)").

A re-notify is never sent as a second trigger: for an alert a person already resolved in
PagerDuty, it would open a new alert and page again.

The trigger's payload: `summary` (the alert's summary, ≤ 1024 characters), `source`
(`cfg.source`, else the host name), `severity` (P1 critical, P2 error, P3 warning, P4 info),
`timestamp` (when the alert fired), `component` (the series' `check` label, else the alert
name), `group` (a `group` label, else the rule's `vendor`, else `portal`), `class` (the alert
name) and `custom_details` (labels, value, runbook steps, runbook URL, escalation level,
incident id and URL, status, and `annotations`: the rule's other annotations, when it has
any). `links` carry the runbook and the incident page. A body over PagerDuty's 512 KB limit
has its `custom_details` replaced by a note, as Alertmanager does.

Replies: 202 is delivered; 400 is permanent (PagerDuty's `errors` go into the message);
429 is retried after `Retry-After`, else after 30 s; 5xx, network errors and timeouts are
retried. A client-side sliding window (60 s) keeps each routing key under
`cfg.rate_limit_per_minute` (PagerDuty allows about 120): when full, `send` raises
`DeliveryError(retry_after=<seconds until a slot frees>)` without calling PagerDuty, so a
mass incident waits in the outbox instead of turning into 429s. Every request counts,
whatever its reply, because PagerDuty counts them too.

The routing key is a secret: it never appears in a message, log line or exception.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Literal

import structlog
from pydantic import Field, field_validator

from monitor.config.fields import Duration, StrictModel
from monitor.delivery.transport import JsonPoster, json_body, json_value, raise_for_reply, rfc3339, shorten
from monitor.incidents.messages import incident_url, runbook_steps
from monitor.model import LOCAL_RECEIVER, DeliveryError, Notification, ReceiverContext
from monitor.secrets import Secret, redact_url, scrub

log = structlog.get_logger()

DEFAULT_URL = "https://events.pagerduty.com/v2/enqueue"
SEVERITY = {"P1": "critical", "P2": "error", "P3": "warning", "P4": "info"}
MAX_SUMMARY = 1024
MAX_BODY_BYTES = 512_000
DEFAULT_429_BACKOFF_S = 30.0
WINDOW_S = 60.0


class Config(StrictModel):
    type: Literal["pagerduty"]
    enabled: bool | Literal["auto"] = True
    routing_key: Secret
    url: str = DEFAULT_URL
    source: str | None = None  # payload.source; default: this host's name
    timeout: Duration = 10.0
    rate_limit_per_minute: int = Field(100, ge=1, le=10_000)

    @field_validator("routing_key")
    @classmethod
    def _routing_key_is_32_chars(cls, v: str) -> str:
        if len(v) != 32:
            raise ValueError(f"routing_key must be the 32-character integration key (got {len(v)} characters)")
        return v


class SlidingWindowLimiter:
    """At most `limit` events in any `window_s` seconds, on an injected monotonic clock.

    Shared by every receiver that uses the same routing key (`build_receivers` does that),
    because PagerDuty's limit is per key.
    """

    def __init__(self, limit: int, window_s: float = WINDOW_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._sent: deque[float] = deque()

    def acquire(self) -> float:
        """Take a slot and return 0, or take nothing and return the seconds until one frees."""
        now = self._clock()
        while self._sent and self._sent[0] <= now - self.window_s:
            self._sent.popleft()
        if len(self._sent) >= self.limit:
            return max(0.001, self._sent[0] + self.window_s - now)
        self._sent.append(now)
        return 0.0


class PagerDutyReceiver:
    """Sends notifications as Events API v2 events (see the module docstring)."""

    def __init__(
        self,
        name: str,
        cfg: Config,
        ctx: ReceiverContext = LOCAL_RECEIVER,
        limiter: SlidingWindowLimiter | None = None,
    ) -> None:
        self.name = name
        self.cfg = cfg
        self.host = ctx.host
        self.external_url = ctx.external_url
        self.limiter = limiter or SlidingWindowLimiter(cfg.rate_limit_per_minute, clock=ctx.clock)
        self._what = f"pagerduty receiver {name!r} ({redact_url(cfg.url)})"
        self._poster = JsonPoster(timeout=cfg.timeout, secrets=(cfg.routing_key,), now=ctx.now, http=ctx.http)

    def event(self, n: Notification) -> dict[str, Any] | None:
        """The Events API v2 body for `n`, or None when nothing is to be sent (re-notify)."""
        base: dict[str, Any] = {"routing_key": self.cfg.routing_key, "dedup_key": n.dedup_key}
        match n.kind:
            case "acknowledge":
                return {**base, "event_action": "acknowledge"}
            case "resolve":
                if not n.closed_reason:
                    return {**base, "event_action": "resolve"}
                return {**base, "event_action": "resolve", "payload": self._closed_payload(n)}
            case "renotify":
                return None
            case "trigger" | "test":
                pass
            case _:
                raise DeliveryError(f"{self._what}: unknown notification kind {n.kind!r}", permanent=True)
        a = n.alert
        summary = a.annotations.get("summary") or a.name
        if n.kind == "test":
            summary = f"[TEST] {summary}"
        if len(summary) > MAX_SUMMARY:
            summary = summary[: MAX_SUMMARY - 1] + "…"
        runbook = a.runbook
        page = incident_url(self.external_url, n.incident_id)
        details: dict[str, Any] = {
            "labels": dict(a.labels),
            "value": json_value(a.value),
            "runbook_steps": runbook_steps(a.annotations.get("description", "")),
            "runbook": runbook,
            "escalation_level": n.level,
            "incident_id": n.incident_id,
            "status": n.status,
            "portal_severity": a.severity,
        }
        if page:
            details["incident_url"] = page
        if check_error := a.annotations.get("check_error"):
            details["check_error"] = check_error
        if other := a.other_annotations():
            details["annotations"] = other
        if a.no_data_since is not None:
            details["no_data"] = a.no_data
        links = []
        if runbook:
            links.append({"href": runbook, "text": f"Runbook: {a.name}"})
        if page:
            links.append({"href": page, "text": f"Incident {n.incident_id}"})
        body: dict[str, Any] = {
            **base,
            "event_action": "trigger",
            "payload": {
                "summary": summary,
                "source": self.cfg.source or self.host,
                "severity": SEVERITY.get(a.severity, "error"),
                "timestamp": rfc3339(n.started_at),
                "component": a.labels.get("check") or a.name,
                "group": a.labels.get("group") or a.vendor or "portal",
                "class": a.name,
                "custom_details": details,
            },
            "client": "portal-monitor",
        }
        if self.external_url:
            body["client_url"] = self.external_url
        if links:
            body["links"] = links
        if len(json_body(body)) > MAX_BODY_BYTES:
            body["payload"]["custom_details"] = {
                "error": "custom_details removed: the event was over PagerDuty's 512 KB limit",
                "escalation_level": n.level,
                "incident_id": n.incident_id,
                "runbook": runbook[:2000],
            }
        return body

    def _closed_payload(self, n: Notification) -> dict[str, Any]:
        a = n.alert
        summary = f"{n.closed_reason}: {a.annotations.get('summary') or a.name}"
        if len(summary) > MAX_SUMMARY:
            summary = summary[: MAX_SUMMARY - 1] + "…"
        return {
            "summary": summary,
            "source": self.cfg.source or self.host,
            "severity": SEVERITY.get(a.severity, "error"),
            "component": a.labels.get("check") or a.name,
            "group": a.labels.get("group") or a.vendor or "portal",
            "class": a.name,
            "custom_details": {
                "closed_reason": n.closed_reason,
                "incident_id": n.incident_id,
                "status": n.status,
                "portal_severity": a.severity,
            },
        }

    async def send(self, notification: Notification) -> None:
        body = self.event(notification)
        if body is None:
            log.info("pagerduty_renotify_skipped", receiver=self.name, dedup_key=notification.dedup_key)
            return
        wait = self.limiter.acquire()
        if wait:
            log.info(
                "pagerduty_rate_limited",
                receiver=self.name,
                retry_after=round(wait, 3),
                limit_per_minute=self.limiter.limit,
            )
            raise DeliveryError(
                f"{self._what}: client-side limit of {self.limiter.limit} events/min reached; retry in {wait:.1f}s",
                retry_after=wait,
                throttled=True,
            )
        reply = await self._poster.post(self._what, self.cfg.url, json_body(body))
        detail = self._detail(reply.body)
        try:
            raise_for_reply(self._what, reply, detail, default_retry_after=DEFAULT_429_BACKOFF_S)
        except DeliveryError as e:
            if e.permanent:  # a 400 is never retried: say loudly what PagerDuty disliked
                log.warning(
                    "pagerduty_rejected",
                    receiver=self.name,
                    status=reply.status,
                    reply=detail,
                    dedup_key=notification.dedup_key,
                    event_action=body["event_action"],
                )
            raise

    def _detail(self, text: str) -> str:
        """PagerDuty's reason from a reply body: `message` and `errors`, scrubbed and shortened."""
        try:
            data = json.loads(text)
        except ValueError:
            return shorten(scrub(text, (self.cfg.routing_key,)))
        if not isinstance(data, dict):
            return shorten(scrub(text, (self.cfg.routing_key,)))
        parts = [str(data["message"])] if data.get("message") else []
        errors = data.get("errors")
        if isinstance(errors, list) and errors:
            parts.append("errors: " + "; ".join(str(e) for e in errors))
        return shorten(scrub(" - ".join(parts) or text, (self.cfg.routing_key,)))

    async def aclose(self) -> None:
        await self._poster.aclose()
