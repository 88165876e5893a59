"""Webhook receiver: Alertmanager's webhook JSON (version 4), HMAC-signed.

Any consumer of Alertmanager webhooks reads our body unchanged. One notification is one
group holding one alert:

```json
{"version": "4", "groupKey": "<dedup key>", "truncatedAlerts": 0,
 "status": "firing|resolved", "receiver": "<receiver name>",
 "groupLabels": {<all labels>}, "commonLabels": {<all labels>},
 "commonAnnotations": {<all annotations>}, "externalURL": "<external_url or ''>",
 "alerts": [{"status": "firing|resolved", "labels": {...}, "annotations": {...},
             "startsAt": "<RFC 3339>", "endsAt": "<RFC 3339; 0001-01-01T00:00:00Z while firing>",
             "generatorURL": "<incident URL or ''>", "fingerprint": "<dedup key>"}]}
```

Our fields:
- labels: the alert's labels, always with `alertname` and `severity` (`P1`..`P4`);
- annotations: every annotation of the rule (`summary`, `description` (the runbook steps),
  `runbook_url` and any other name of its `annotations:` map), plus `incident_id`,
  `escalation_level` (`L1`..`L4`), `incident_status` (`firing`, `acknowledged`,
  `resolved`: Alertmanager has no "acknowledged", so `status` stays `firing`),
  `notification_kind` (`trigger`, `renotify`, `acknowledge`, `resolve`, `test`), `value`,
  `status_update` (the runbook's Internal Status Update text), `customer_communication`
  (the runbook's draft, P1/P2 only) and `incident_url` (when `external_url` is set);
  `no_data` ("no data since T (why)") while the alert is kept without data, and
  `closed_reason` on a resolve that is not a fix ("closed: no data for 1h", "closed: rule
  removed by reload").

Signature, when `secret` is set. Two headers:
- `X-Portal-Monitor-Timestamp`: Unix seconds (an integer, as text) when the request was made;
- `X-Portal-Monitor-Signature`: `sha256=` + the lowercase hex HMAC-SHA256, keyed with the
  secret (UTF-8), of the bytes `{timestamp}.{body}`: the timestamp header's text, a dot, and
  the raw request body exactly as received (do not re-serialise the JSON).

A consumer recomputes the HMAC, compares in constant time, and rejects timestamps more than
a few minutes from its clock (replays); `verify_signature` below does all three.

Replies: 2xx is delivered; 429, 408 and 5xx, network errors and timeouts are retried
(honouring `Retry-After`); any other status is permanent.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated, Any, Literal

from pydantic import Field

from monitor.config.fields import Duration, StrictModel
from monitor.delivery.transport import JsonPoster, format_value, json_body, raise_for_reply, rfc3339, shorten
from monitor.incidents.messages import customer_communication, incident_url, status_update
from monitor.model import LOCAL_RECEIVER, Notification, ReceiverContext
from monitor.secrets import SecretMarker, SecretURL, redact_url, scrub, url_password

TIMESTAMP_HEADER = "X-Portal-Monitor-Timestamp"
SIGNATURE_HEADER = "X-Portal-Monitor-Signature"
ZERO_TIME = "0001-01-01T00:00:00Z"  # what Alertmanager sends as endsAt for firing alerts
DEFAULT_TOLERANCE_S = 300.0


class Config(StrictModel):
    type: Literal["webhook"]
    enabled: bool | Literal["auto"] = True
    url: SecretURL = Field(min_length=1)
    # HMAC-SHA256 key for the signature header. The marker sits outside the Optional: inside
    # `Secret | None` pydantic drops it and the loader would not redact the secret in logs.
    secret: Annotated[str | None, SecretMarker()] = None
    timeout: Duration = 10.0


def sign(secret: str, timestamp: int | str, body: bytes) -> str:
    """The `X-Portal-Monitor-Signature` value: `sha256=<hex HMAC-SHA256 of b"{timestamp}." + body>`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(
    secret: str,
    timestamp: int | str,
    body: bytes | str,
    header: str,
    *,
    now: float | None = None,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> bool:
    """True when `header` is the signature of `body` at `timestamp` under `secret`.

    With `now` (Unix seconds), a timestamp further than `tolerance_s` from it is refused too,
    so a captured request cannot be replayed later.
    """
    raw = body.encode() if isinstance(body, str) else body
    try:
        ts = int(str(timestamp).strip())
    except ValueError:
        return False
    if now is not None and abs(now - ts) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, str(timestamp).strip(), raw), header.strip())


def alert_labels(n: Notification) -> dict[str, str]:
    """The alert's labels with `alertname` and `severity` guaranteed."""
    labels = dict(n.alert.labels)
    labels.setdefault("alertname", n.alert.name)
    labels.setdefault("severity", n.alert.severity)
    return labels


def alert_annotations(n: Notification, external_url: str | None) -> dict[str, str]:
    """The alert's annotations plus our fields (see the module docstring)."""
    ann = dict(n.alert.annotations)
    if ann.get("runbook"):  # an alert state saved before annotations took Prometheus's names
        ann.setdefault("runbook_url", ann.pop("runbook"))
    ann.update(
        {
            "incident_id": str(n.incident_id),
            "escalation_level": n.level,
            "incident_status": n.status,
            "notification_kind": n.kind,
            "value": format_value(n.alert.value),
            "status_update": status_update(n),
        }
    )
    if n.alert.no_data_since is not None:
        ann["no_data"] = n.alert.no_data
    if n.closed_reason:
        ann["closed_reason"] = n.closed_reason
    draft = customer_communication(n)
    if draft:
        ann["customer_communication"] = draft
    page = incident_url(external_url, n.incident_id)
    if page:
        ann["incident_url"] = page
    return ann


def webhook_body(n: Notification, receiver: str, external_url: str | None) -> dict[str, Any]:
    """Alertmanager's webhook payload, version 4, for one notification."""
    resolved = n.status == "resolved" or n.kind == "resolve"
    status = "resolved" if resolved else "firing"
    labels = alert_labels(n)
    annotations = alert_annotations(n, external_url)
    return {
        "version": "4",
        "groupKey": n.dedup_key,
        "truncatedAlerts": 0,
        "status": status,
        "receiver": receiver,
        "groupLabels": labels,
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": external_url or "",
        "alerts": [
            {
                "status": status,
                "labels": labels,
                "annotations": annotations,
                "startsAt": rfc3339(n.started_at),
                "endsAt": rfc3339(n.resolved_at or n.updated_at) if resolved else ZERO_TIME,
                "generatorURL": incident_url(external_url, n.incident_id),
                "fingerprint": n.dedup_key,
            }
        ],
    }


class WebhookReceiver:
    """POSTs the version-4 body to `cfg.url`, signed when `cfg.secret` is set."""

    def __init__(self, name: str, cfg: Config, ctx: ReceiverContext = LOCAL_RECEIVER) -> None:
        self.name = name
        self.cfg = cfg
        self.external_url = ctx.external_url
        self._now = ctx.now
        self._secrets = tuple(s for s in (cfg.secret, url_password(cfg.url)) if s)
        self._what = f"webhook receiver {name!r} ({redact_url(cfg.url)})"
        self._poster = JsonPoster(timeout=cfg.timeout, secrets=self._secrets, now=ctx.now, http=ctx.http)

    def request(self, n: Notification) -> tuple[bytes, dict[str, str]]:
        """The exact body bytes and the signature headers for `n`."""
        body = json_body(webhook_body(n, self.name, self.external_url))
        headers: dict[str, str] = {}
        if self.cfg.secret:
            ts = str(int(self._now().timestamp()))
            headers = {TIMESTAMP_HEADER: ts, SIGNATURE_HEADER: sign(self.cfg.secret, ts, body)}
        return body, headers

    async def send(self, notification: Notification) -> None:
        body, headers = self.request(notification)
        reply = await self._poster.post(self._what, self.cfg.url, body, headers)
        raise_for_reply(self._what, reply, shorten(scrub(reply.body, self._secrets)))

    async def aclose(self) -> None:
        await self._poster.aclose()
