"""Log receiver: each notification as one structured log event, `notification`.

What the shipped config routes to when no PagerDuty key is set, so `make run` shows pages
locally. The event carries receiver, kind, escalation_level (not `level`, which structlog's
`add_log_level` owns), severity, alertname, dedup_key, summary, status and incident_id;
triggers, re-notifications and tests are logged at warning, acknowledgements and
resolutions at info. With a `stream` (the CLI passes stdout for `once`), the runbook's
Internal Status Update text is written there too. It never fails: a receiver that cannot
deliver to a log has nowhere better to report it.
"""

from __future__ import annotations

from typing import Literal

import structlog

from monitor.config.fields import StrictModel
from monitor.incidents.messages import status_update
from monitor.model import LOCAL_RECEIVER, Notification, ReceiverContext

log = structlog.get_logger()


class Config(StrictModel):
    type: Literal["log"]
    enabled: bool | Literal["auto"] = True


class LogReceiver:
    """Writes notifications to the structured log (and to `stream`, when given)."""

    def __init__(self, name: str, cfg: Config | None = None, ctx: ReceiverContext = LOCAL_RECEIVER) -> None:
        self.name = name
        self.cfg = cfg
        self.stream = ctx.stream

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
            )
            if self.stream is not None:
                self.stream.write(status_update(n) + "\n\n")
                self.stream.flush()
        except Exception:  # noqa: BLE001 - a log receiver must not fail the outbox
            pass

    async def aclose(self) -> None:
        return None
