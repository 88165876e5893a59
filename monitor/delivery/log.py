"""Log receiver: each notification as one structured log event, `notification`.

What the shipped config routes to when no PagerDuty key is set, so `make run` shows pages
locally. The event carries receiver, kind, escalation_level (not `level`, which structlog's
`add_log_level` owns), severity, alertname, dedup_key, summary, status, incident_id, the first
three runbook steps of the rule (`steps`), who acknowledged (`acknowledged_by`) and the
incident page (`incident_url`) when the daemon knows its external URL;
triggers, re-notifications and tests are logged at warning, acknowledgements and
resolutions at info. With a `stream` (the CLI passes stdout for `once`), the runbook's
Internal Status Update text is written there too. A write that fails (stdout closed, a
full disk, a broken pipe) raises a retryable `DeliveryError` naming the error: the outbox
keeps the page and tries again, and it never counts as delivered.
"""

from __future__ import annotations

from typing import Literal

import structlog

from monitor.config.fields import StrictModel
from monitor.incidents.messages import incident_url, runbook_steps, status_update
from monitor.model import LOCAL_RECEIVER, DeliveryError, Notification, ReceiverContext

log = structlog.get_logger()


class Config(StrictModel):
    type: Literal["log"]
    enabled: bool | Literal["auto"] = True


FIRST_STEPS = 3


def _extras(n: Notification, external_url: str | None) -> dict[str, object]:
    """What someone reading the console needs besides the summary: the first steps, who
    acknowledged, where the incident page is. Absent keys stay out of the event."""
    out: dict[str, object] = {}
    steps = runbook_steps(n.alert.annotations.get("description", ""))[:FIRST_STEPS]
    if steps and n.kind not in ("acknowledge", "resolve"):
        out["steps"] = steps
    if who := n.alert.annotations.get("acknowledged_by"):
        out["acknowledged_by"] = who
    if page := incident_url(external_url, n.incident_id):
        out["incident_url"] = page
    return out


class LogReceiver:
    """Writes notifications to the structured log (and to `stream`, when given)."""

    def __init__(self, name: str, cfg: Config | None = None, ctx: ReceiverContext = LOCAL_RECEIVER) -> None:
        self.name = name
        self.cfg = cfg
        self.stream = ctx.stream
        self.external_url = ctx.external_url

    async def send(self, notification: Notification) -> None:
        n = notification
        try:
            emit = log.info if n.kind in ("acknowledge", "resolve") else log.warning
            emit(
                "notification",
                receiver=self.name,
                kind=n.kind,
                escalation_level=n.level,
                severity=n.alert.severity,
                alertname=n.alert.name,
                dedup_key=n.dedup_key,
                summary=n.alert.annotations.get("summary") or n.alert.name,
                status=n.status,
                incident_id=n.incident_id,
                **_extras(n, self.external_url),
                **({"closed_reason": n.closed_reason} if n.closed_reason else {}),
                **({"no_data": n.alert.no_data} if n.alert.no_data_since else {}),
            )
            if self.stream is not None:
                self.stream.write(status_update(n) + "\n\n")
                self.stream.flush()
        except (OSError, ValueError) as e:  # ValueError: I/O operation on a closed file
            raise DeliveryError(f"log receiver {self.name!r}: cannot write: {type(e).__name__}: {e}") from None

    async def aclose(self) -> None:
        return None
