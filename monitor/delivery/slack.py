"""Slack incoming-webhook receiver: the runbook's Internal Status Update.

The message is `{"text": ..., "blocks": [...]}`. `text` is the whole Internal Status Update
(`monitor.incidents.messages.status_update`), followed for P1/P2 by the Customer Communication draft:
it is what notifications, screen readers and old clients show. The blocks lay the same
fields out: a header `INCIDENT UPDATE - P1 - <brief>`, the fields Status, Impact, Started,
Last Update, Next Update and Escalation, the Current Actions, the rule's other annotations
(its `annotations:` map besides summary, description and runbook_url), the customer draft
(P1/P2) in a code block, and links to the runbook and the incident. Slack's limits (header 150
characters, section text 3000, field 2000) are kept by shortening.

Slack answers 200 `ok`; errors are a short code in the body: 400 `invalid_payload`,
403 `invalid_token` or `action_prohibited`, 404 `no_service` or `channel_not_found`,
410 `channel_is_archived`, 429 with `Retry-After`, 5xx. 429 and 5xx (and network errors,
timeouts) are retried; the rest are permanent: a retry cannot revive a revoked webhook.

The webhook URL is the credential: messages show only `https://hooks.slack.com/***`.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field

from monitor.config.fields import Duration, StrictModel
from monitor.delivery.transport import JsonPoster, json_body, raise_for_reply, shorten
from monitor.incidents.messages import (
    brief,
    current_actions,
    customer_communication,
    impact,
    incident_url,
    next_update,
    status_of,
    status_update,
    utc_text,
)
from monitor.model import LOCAL_RECEIVER, Notification, ReceiverContext
from monitor.secrets import Secret, origin_only, scrub

HEADER_MAX = 150
SECTION_MAX = 3000
FIELD_MAX = 2000


class Config(StrictModel):
    type: Literal["slack"]
    enabled: bool | Literal["auto"] = True
    url: Secret = Field(min_length=1)  # the webhook URL is itself the credential
    timeout: Duration = 10.0


def escape(text: str) -> str:
    """Slack's mrkdwn escaping: `&`, `<` and `>` are control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def message_text(n: Notification) -> str:
    """The fallback `text`: the status update, plus the customer draft for P1/P2."""
    text = status_update(n)
    draft = customer_communication(n)
    if draft:
        text += "\n\nCustomer Communication (draft):\n" + draft
    return escape(text)


def message(n: Notification, external_url: str | None = None) -> dict[str, Any]:
    """The incoming-webhook body for `n`."""
    a = n.alert
    header = _cut(f"INCIDENT UPDATE - {a.severity} - {brief(n)}", HEADER_MAX)

    def field(label: str, value: str) -> dict[str, str]:
        return {"type": "mrkdwn", "text": _cut(f"*{label}:*\n{escape(value)}", FIELD_MAX)}

    actions = "\n".join(f"• {escape(x)}" for x in current_actions(n))
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": header}},
        {
            "type": "section",
            "fields": [
                field("Status", status_of(n)),
                field("Impact", impact(n)),
                field("Started", utc_text(n.started_at)),
                field("Last Update", utc_text(n.updated_at)),
                field("Next Update", next_update(n)),
                field("Escalation", f"{n.level} · incident {n.incident_id}"),
            ],
        },
        {"type": "section", "text": {"type": "mrkdwn", "text": _cut(f"*Current Actions:*\n{actions}", SECTION_MAX)}},
    ]
    if (check_error := a.annotations.get("check_error")) and n.status != "resolved":
        blocks.insert(
            2,
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": _cut(f"*The check says:*\n{escape(check_error)}", SECTION_MAX)},
            },
        )
    if other := a.other_annotations():
        lines = "\n".join(f"*{escape(k)}:* {escape(v)}" for k, v in sorted(other.items()))
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(lines, SECTION_MAX)}})
    draft = customer_communication(n)
    if draft:
        blocks += [
            {"type": "divider"},
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": _cut(f"*Customer Communication (draft):*\n```{escape(draft)}```", SECTION_MAX),
                },
            },
        ]
    links = []
    runbook = a.runbook
    if runbook:
        links.append(f"<{runbook}|Runbook>")
    page = incident_url(external_url, n.incident_id)
    if page:
        links.append(f"<{page}|Incident {n.incident_id}>")
    links.append(f"`{escape(a.name)}` · dedup `{n.dedup_key}`")
    context = {"type": "mrkdwn", "text": _cut(" · ".join(links), SECTION_MAX)}
    blocks.append({"type": "context", "elements": [context]})
    return {"text": message_text(n), "blocks": blocks}


class SlackReceiver:
    """Posts the status update to a Slack incoming webhook."""

    def __init__(self, name: str, cfg: Config, ctx: ReceiverContext = LOCAL_RECEIVER) -> None:
        self.name = name
        self.cfg = cfg
        self.external_url = ctx.external_url
        path = urlsplit(cfg.url).path if "://" in cfg.url else ""
        self._secrets = tuple(s for s in (cfg.url, path if len(path) > 1 else "") if s)
        self._what = f"slack receiver {name!r} ({origin_only(cfg.url)})"
        self._poster = JsonPoster(timeout=cfg.timeout, secrets=self._secrets, now=ctx.now, http=ctx.http)

    async def send(self, notification: Notification) -> None:
        body = json_body(message(notification, self.external_url))
        reply = await self._poster.post(self._what, self.cfg.url, body)
        raise_for_reply(self._what, reply, shorten(scrub(reply.body, self._secrets)))

    async def aclose(self) -> None:
        await self._poster.aclose()
