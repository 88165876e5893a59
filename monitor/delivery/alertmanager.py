"""Alertmanager receiver: POST /api/v2/alerts to every Alertmanager of a cluster.

Each entry of `urls` is either an Alertmanager base URL (`http://am1:9093`, or with a
route prefix `http://proxy/alertmanager`), to which `/api/v2/alerts` is appended, or the
full endpoint ending in `/api/v2/alerts`, used as is. (`/api/v1/alerts` is refused at load:
Alertmanager 0.27 removed API v1.)

The body is a one-element JSON array:
`[{"labels": {..., "alertname", "severity": "P1"}, "annotations": {...}, "startsAt",
"endsAt", "generatorURL"}]`. Labels are the alert's labels (Alertmanager's identity for the
alert); annotations are the same as the webhook receiver's (every annotation of the rule:
summary, description, runbook_url and the rest of its `annotations:` map; then incident_id,
escalation_level, incident_status, notification_kind, value, status_update,
customer_communication for P1/P2, incident_url).

`endsAt`, the contract with Alertmanager, which forgets an alert whose `endsAt` has passed
(and an alert posted without one after its `resolve_timeout`, 5 m by default):
- resolve: the incident's `resolved_at`, so Alertmanager sends its resolved notification;
- firing (trigger, renotify, acknowledge): `max(now, next_update_at) + resend_ttl`
  (default 1 h). So the alert stays firing until a little after our next planned post,
  whatever the severity's re-notify cadence; and if this daemon dies, Alertmanager
  resolves it by itself within `resend_ttl` instead of never.
- test: now + 5 m, so a test alert clears itself.

Because Alertmanager keeps alerts only in memory, an Alertmanager that restarts knows an
alert again only at our next post. The incidents module should therefore re-post open
incidents to alertmanager receivers at least every `resend_ttl / 2` (30 min by default),
whatever the severity's cadence (a P4's 24 h would leave a restarted Alertmanager blind for
a day), and set `next_update_at` to the time of that next post.

HA: a client must post to every Alertmanager, never through a load balancer. `send`
succeeds only when all of them accepted. When some fail, the error names each failure; the
ones that accepted are remembered (in memory, per notification id) and not posted again
when the outbox retries, so a retry goes only to the failed ones. (After a restart all are
posted again, which Alertmanager merges by labels.) 400 and other 4xx are permanent for that
Alertmanager; 5xx, 429, network errors and timeouts are retried.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from monitor.config.fields import Duration, StrictModel
from monitor.delivery.transport import JsonPoster, as_utc, json_body, raise_for_reply, rfc3339, shorten
from monitor.delivery.webhook import alert_annotations, alert_labels
from monitor.incidents.messages import incident_url
from monitor.model import LOCAL_RECEIVER, DeliveryError, Notification, ReceiverContext
from monitor.secrets import URLSecretMarker, redact_url, scrub, url_password

API_PATH = "/api/v2/alerts"
TEST_TTL = timedelta(minutes=5)
MAX_REMEMBERED = 10_000  # notifications with partial delivery kept for the retry


class Config(StrictModel):
    type: Literal["alertmanager"]
    enabled: bool | Literal["auto"] = True
    # Passwords in these URLs (user:PASSWORD@host) are secrets; messages show them as ***.
    urls: Annotated[list[str], URLSecretMarker()] = Field(min_length=1)
    timeout: Duration = 10.0
    # How long a firing alert stays firing in Alertmanager after our last planned post.
    resend_ttl: Duration = 3600.0

    @field_validator("urls")
    @classmethod
    def _http_urls(cls, v: list[str]) -> list[str]:
        for url in v:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{redact_url(url)!r}: an Alertmanager URL starts with http:// or https://")
            if url.rstrip("/").endswith("/api/v1/alerts"):
                raise ValueError(
                    f"{redact_url(url)!r}: API v1 was removed in Alertmanager 0.27; "
                    "give the base URL (http://host:9093) or .../api/v2/alerts"
                )
        return v

    @field_validator("resend_ttl")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("resend_ttl must be more than 0s")
        return v


def endpoint(url: str) -> str:
    """`http://am:9093` → `http://am:9093/api/v2/alerts`; a full `.../api/v2/alerts` stays."""
    base = url.rstrip("/")
    return base if base.endswith(API_PATH) else base + API_PATH


def alert_body(n: Notification, *, now: datetime, resend_ttl: float, external_url: str | None) -> list[dict[str, Any]]:
    """The `/api/v2/alerts` body for `n` (see the module docstring for `endsAt`)."""
    if n.kind == "resolve" or n.status == "resolved":
        ends = n.resolved_at or n.updated_at
    elif n.kind == "test":
        ends = now + TEST_TTL
    else:
        ends = max(as_utc(now), as_utc(n.next_update_at or now)) + timedelta(seconds=resend_ttl)
    return [
        {
            "labels": alert_labels(n),
            "annotations": alert_annotations(n, external_url),
            "startsAt": rfc3339(n.started_at),
            "endsAt": rfc3339(ends),
            "generatorURL": incident_url(external_url, n.incident_id),
        }
    ]


@dataclass(slots=True)
class _Progress:
    """Per notification: the Alertmanagers done with it (accepted, or refused for good)."""

    accepted: set[str] = field(default_factory=set)
    refused: dict[str, str] = field(default_factory=dict)  # endpoint → permanent error message


class AlertmanagerReceiver:
    """Posts alerts to every Alertmanager in `cfg.urls` (see the module docstring)."""

    def __init__(self, name: str, cfg: Config, ctx: ReceiverContext = LOCAL_RECEIVER) -> None:
        self.name = name
        self.cfg = cfg
        self.external_url = ctx.external_url
        self._now = ctx.now
        self.endpoints = list(dict.fromkeys(endpoint(u) for u in cfg.urls))
        self._secrets = tuple(p for p in (url_password(u) for u in cfg.urls) if p)
        self._poster = JsonPoster(timeout=cfg.timeout, secrets=self._secrets, now=ctx.now, http=ctx.http)
        self._progress: OrderedDict[int, _Progress] = OrderedDict()

    def _what(self, url: str) -> str:
        return f"alertmanager receiver {self.name!r} ({redact_url(url)})"

    async def _post_one(self, url: str, body: bytes) -> None:
        what = self._what(url)
        reply = await self._poster.post(what, url, body)
        raise_for_reply(what, reply, shorten(scrub(reply.body, self._secrets)))

    async def send(self, notification: Notification) -> None:
        n = notification
        body = json_body(alert_body(n, now=self._now(), resend_ttl=self.cfg.resend_ttl, external_url=self.external_url))
        # id 0 (notify-test) is not an outbox row: nothing to remember it by.
        progress = (self._progress.pop(n.id, None) if n.id else None) or _Progress()
        todo = [u for u in self.endpoints if u not in progress.accepted and u not in progress.refused]
        results = await asyncio.gather(*(self._post_one(u, body) for u in todo), return_exceptions=True)
        retry: list[DeliveryError] = []
        for url, result in zip(todo, results, strict=True):
            if result is None:
                progress.accepted.add(url)
            elif isinstance(result, DeliveryError) and result.permanent:
                progress.refused[url] = str(result)
            elif isinstance(result, DeliveryError):
                retry.append(result)
            elif isinstance(result, Exception):
                retry.append(DeliveryError(f"{self._what(url)}: {type(result).__name__}"))
            else:  # CancelledError and friends: not ours to swallow
                raise result
        if retry:
            if n.id:
                self._progress[n.id] = progress
                while len(self._progress) > MAX_REMEMBERED:
                    self._progress.popitem(last=False)
            hints = [e.retry_after for e in retry if e.retry_after is not None]
            done = f" ({len(progress.accepted)} of {len(self.endpoints)} accepted)"
            raise DeliveryError(
                "; ".join([str(e) for e in retry] + list(progress.refused.values())) + done,
                retry_after=max(hints) if hints else None,
            )
        if progress.refused:
            raise DeliveryError(
                "; ".join(progress.refused.values()) + f" ({len(progress.accepted)} of {len(self.endpoints)} accepted)",
                permanent=True,
            )

    async def aclose(self) -> None:
        await self._poster.aclose()
