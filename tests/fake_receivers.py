"""aiohttp fakes of the services our receivers talk to, speaking their real protocols.

PagerDuty Events API v2, a Slack incoming webhook, a generic webhook consumer and
Alertmanager's `POST /api/v2/alerts`. Each validates bodies the way the real service does
(and refuses them with the real error replies), records every request, and can be switched
to failing or hanging, so a test proves both the payload and the retry behaviour. Built on
`web.AppRunner` + `TCPSite` on 127.0.0.1 port 0 (aio-libs/aiohttp `examples/fake_server.py`).

Common API (every fake)::

    async with FakePagerDuty() as pd:       # a free port; or `await pd.start()` ... `await pd.close()`
        pd.url                              # the URL to configure (PagerDuty: http://127.0.0.1:P/v2/enqueue)
        pd.base_url                         # http://127.0.0.1:P
        pd.requests                         # list[Recorded], every request in arrival order, refused ones too
        pd.answer(500, times=3)             # the next 3 requests get 500, then the real behaviour again
        pd.answer(429, retry_after="7")     # every request gets 429 + `Retry-After: 7` until reset()
        pd.answer(400, body={...})          # a custom body (dict/list → JSON, str/bytes as is)
        pd.answer("hang")                   # requests get no answer until reset() or close()
        pd.reset()                          # real behaviour again; hung requests are released (503)
        await pd.wait_for(2)                # until 2 requests arrived (TimeoutError after `timeout`, 5 s)
        await pd.wait_until(lambda: len(pd.triggers()) == 1)   # until a condition holds

    Recorded: method, path, query, headers, body (bytes), json (parsed strictly: None for a body
    that is not JSON, a bare `NaN` or `Infinity` included, which every fake refuses), status (what
    was answered; None while hung), at (time.perf_counter() on arrival: for latency benchmarks).

`make_notification(kind="trigger", severity="P1", ...)` builds a realistic Notification
(RedisDown on check `cache`, fired at `T0`, a Friday) with every field overridable.

Without `answer(...)` each fake behaves like the real service:

- `FakePagerDuty(rate_limit_per_minute=None)`: `/v2/enqueue`. Validates routing_key (32
  chars), event_action, dedup_key (≤ 255; required for acknowledge/resolve), payload
  summary (≤ 1024) / source / severity, timestamp, links, images: 400 `{"status": "invalid
  event", "message": "Event object is invalid", "errors": [...]}`. Valid: 202 `{"status":
  "success", "message": "Event processed", "dedup_key": ...}`. Keeps PagerDuty's alert state:
  `pd.events` (accepted bodies), `pd.alerts` (dedup_key → "triggered" | "acknowledged" |
  "resolved"), `pd.triggers(dedup_key=None)`, `pd.actions(dedup_key=None)` (event_actions in
  order), `pd.opened` (how many alerts a trigger created: a trigger on an open alert
  deduplicates, one after resolve opens a new one). With `rate_limit_per_minute`, more
  than that many requests per routing key in a sliding 60 s (real time) get 429.
- `FakeSlack()`: `url` is `http://127.0.0.1:P/services/T000/B000/XXXX` (another path: 404
  `no_service`). Needs `text` or `blocks` (400 `no_text`); checks block types and Slack's
  limits (header ≤ 150, section text ≤ 3000, ≤ 10 fields of ≤ 2000): 400 `invalid_blocks`.
  Valid: 200 `ok`. `slack.messages` holds accepted bodies. Error bodies for `answer(status)`:
  400 invalid_payload, 403 invalid_token, 404 no_service, 410 channel_is_archived,
  429 rate_limited, 5xx internal_error.
- `FakeWebhook(secret=None)`: `url` is `/hook`. Needs a JSON body (else 400). With a secret,
  checks `X-Portal-Monitor-Timestamp` / `X-Portal-Monitor-Signature` with
  `monitor.delivery.webhook.verify_signature` and answers 401 when they do not verify. Valid:
  200. `hook.payloads` holds accepted JSON bodies.
- `FakeAlertmanager(prefix="")`: `/api/v2/alerts` (under `prefix`, e.g. "/am", if given:
  then `url` includes it). Validates like Alertmanager: a JSON array of alerts with non-empty
  `labels` (valid label names, string values), string `annotations`, RFC 3339 `startsAt` /
  `endsAt` with start ≤ end: 400 with the reason as a JSON string. Valid: 200. Keeps
  `am.alerts` (frozenset of label items → the latest alert posted with those labels) and
  `am.firing(now)` (alerts whose endsAt is absent or after `now`).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from aiohttp import web

from monitor.model import Alert, Notification
from monitor.delivery.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature

Hang = Literal["hang"]


@dataclass
class Recorded:
    """One request as the fake saw it, and what it answered."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    json: Any
    at: float
    status: int | None = None


@dataclass
class _Override:
    status: int | Hang
    times: int | None
    retry_after: str | None
    body: Any


@dataclass
class _Answer:
    status: int
    body: Any = b""  # dict/list → JSON; str/bytes as is
    headers: dict[str, str] = field(default_factory=dict)


def _not_json(constant: str) -> Any:
    """`NaN`, `Infinity` and `-Infinity` are not JSON (RFC 8259); Python's parser would take them."""
    raise ValueError(f"{constant} is not a JSON value")


class FakePeer:
    """The recording, switchable HTTP server under every fake; subclasses give the real behaviour."""

    paths: tuple[str, ...] = ("/",)
    endpoint = "/"

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._override: _Override | None = None
        self._release = asyncio.Event()
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> FakePeer:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Any:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.base_url + self.endpoint

    # ---------------------------------------------------------------- switching and waiting

    def answer(self, status: int | Hang, *, times: int | None = None, retry_after: str | float | None = None,
               body: Any = None) -> None:
        """Answer the next `times` requests (all, if None) with `status` instead of the real behaviour."""
        ra = None if retry_after is None else str(retry_after)
        self._override = _Override(status, times, ra, body)

    def reset(self) -> None:
        """Back to the real behaviour; requests hanging now are released (answered 503)."""
        self._override = None
        self._release.set()
        self._release = asyncio.Event()

    async def wait_for(self, n: int = 1, timeout: float = 5.0) -> list[Recorded]:
        """Wait until at least `n` requests arrived; return them."""
        await self.wait_until(lambda: len(self.requests) >= n, timeout)
        return self.requests

    async def wait_until(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until `condition()` holds, re-checked after every request (TimeoutError after `timeout`)."""
        async with asyncio.timeout(timeout):
            while not condition():
                self._changed.clear()
                await self._changed.wait()

    # ---------------------------------------------------------------- serving

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            parsed = json.loads(raw, parse_constant=_not_json) if raw else None
        except ValueError:
            parsed = None  # every real service answers a body that is not JSON with 400
        rec = Recorded(request.method, request.path, dict(request.query), dict(request.headers), raw, parsed,
                       time.perf_counter())
        self.requests.append(rec)
        answer = None
        ov = self._override
        if ov is not None:
            if ov.times is not None:
                ov.times -= 1
                if ov.times <= 0:
                    self._override = None
            if ov.status == "hang":
                self._changed.set()
                await self._release.wait()
                answer = _Answer(503, "released")
            else:
                answer = _Answer(ov.status, ov.body if ov.body is not None else self.error_body(ov.status))
                if ov.retry_after is not None:
                    answer.headers["Retry-After"] = ov.retry_after
        if answer is None:
            answer = self.respond(rec) if request.path in self.paths else self.not_found(rec)
        rec.status = answer.status
        self._changed.set()
        body = answer.body
        if isinstance(body, (dict, list)):
            return web.json_response(body, status=answer.status, headers=answer.headers)
        if isinstance(body, str):
            body = body.encode()
        return web.Response(status=answer.status, body=body, headers=answer.headers,
                            content_type="text/plain")

    def respond(self, rec: Recorded) -> _Answer:
        """The real service's answer to a request on one of its paths."""
        return _Answer(200, "")

    def not_found(self, rec: Recorded) -> _Answer:
        return _Answer(404, "404: Not Found")

    def error_body(self, status: int) -> Any:
        """The body the real service sends with `status` (for `answer(status)`)."""
        return "" if status < 400 else f"HTTP {status}"


# ---------------------------------------------------------------- PagerDuty Events API v2

PD_SEVERITIES = {"critical", "error", "warning", "info"}
PD_ACTIONS = {"trigger", "acknowledge", "resolve"}


class FakePagerDuty(FakePeer):
    paths = ("/v2/enqueue",)
    endpoint = "/v2/enqueue"

    def __init__(self, *, rate_limit_per_minute: int | None = None) -> None:
        super().__init__()
        self.rate_limit_per_minute = rate_limit_per_minute
        self.events: list[dict[str, Any]] = []
        self.alerts: dict[str, str] = {}
        self.opened = 0
        self._window: dict[str, deque[float]] = {}

    def triggers(self, dedup_key: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event_action"] == "trigger"
                and (dedup_key is None or e.get("dedup_key") == dedup_key)]

    def actions(self, dedup_key: str | None = None) -> list[str]:
        return [e["event_action"] for e in self.events
                if dedup_key is None or e.get("dedup_key") == dedup_key]

    def error_body(self, status: int) -> Any:
        if status == 400:
            return {"status": "invalid event", "message": "Event object is invalid",
                    "errors": ["Invalid event"]}
        if status == 429:
            return {"status": "throttle event",
                    "message": "Requests for this service are arriving too quickly."}
        return super().error_body(status)

    def respond(self, rec: Recorded) -> _Answer:
        if rec.method != "POST":
            return _Answer(405, "Method Not Allowed")
        ev = rec.json
        errors = self.validate(ev)
        if errors:
            return _Answer(400, {"status": "invalid event", "message": "Event object is invalid",
                                 "errors": errors})
        key = ev["routing_key"]
        if self.rate_limit_per_minute is not None:
            window = self._window.setdefault(key, deque())
            now = time.monotonic()
            while window and window[0] <= now - 60:
                window.popleft()
            window.append(now)
            if len(window) > self.rate_limit_per_minute:
                return _Answer(429, self.error_body(429))
        dedup = ev.get("dedup_key") or f"generated-{len(self.events) + 1}"
        ev = {**ev, "dedup_key": dedup}
        self.events.append(ev)
        state = self.alerts.get(dedup)
        if ev["event_action"] == "trigger":
            if state in (None, "resolved"):
                self.opened += 1
                self.alerts[dedup] = "triggered"
        elif state in ("triggered", "acknowledged"):  # ack/resolve without an open alert are dropped
            self.alerts[dedup] = "acknowledged" if ev["event_action"] == "acknowledge" else "resolved"
        return _Answer(202, {"status": "success", "message": "Event processed", "dedup_key": dedup})

    @staticmethod
    def validate(ev: Any) -> list[str]:
        if not isinstance(ev, dict):
            return ["Event object is not a JSON object"]
        errors = []
        key = ev.get("routing_key")
        if not isinstance(key, str) or not key:
            errors.append("'routing_key' is missing or blank")
        elif len(key) != 32:
            errors.append("Length of 'routing_key' is incorrect (should be 32 characters)")
        action = ev.get("event_action")
        if action not in PD_ACTIONS:
            errors.append("'event_action' is invalid (must be one of trigger, acknowledge, resolve)")
        dedup = ev.get("dedup_key")
        if dedup is not None and (not isinstance(dedup, str) or len(dedup) > 255):
            errors.append("'dedup_key' must be a string of at most 255 characters")
        if action in ("acknowledge", "resolve") and not dedup:
            errors.append("'dedup_key' is required for acknowledge and resolve")
        if action == "trigger":
            payload = ev.get("payload")
            if not isinstance(payload, dict):
                return [*errors, "'payload' is missing or not an object"]
            summary = payload.get("summary")
            if not isinstance(summary, str) or not summary.strip():
                errors.append("'payload.summary' is missing or blank")
            elif len(summary) > 1024:
                errors.append("'payload.summary' is longer than 1024 characters")
            if not isinstance(payload.get("source"), str) or not payload["source"].strip():
                errors.append("'payload.source' is missing or blank")
            if payload.get("severity") not in PD_SEVERITIES:
                errors.append("'payload.severity' is invalid (must be one of critical, error, warning, info)")
            ts = payload.get("timestamp")
            if ts is not None:
                try:
                    datetime.fromisoformat(str(ts).replace("Z", "+00:00"))
                except ValueError:
                    errors.append("'payload.timestamp' is not a valid ISO 8601 timestamp")
            if "custom_details" in payload and not isinstance(payload["custom_details"], (dict, str)):
                errors.append("'payload.custom_details' must be an object")
            for link in ev.get("links") or []:
                if not isinstance(link, dict) or not link.get("href"):
                    errors.append("'links[].href' is required")
            for image in ev.get("images") or []:
                if not isinstance(image, dict) or not image.get("src"):
                    errors.append("'images[].src' is required")
        return errors


# ---------------------------------------------------------------- Slack incoming webhook

SLACK_ERRORS = {400: "invalid_payload", 403: "invalid_token", 404: "no_service", 410: "channel_is_archived",
                429: "rate_limited"}
SLACK_BLOCK_TYPES = {"header", "section", "divider", "context", "actions", "image", "rich_text", "input"}


class FakeSlack(FakePeer):
    paths = ("/services/T000/B000/XXXX",)
    endpoint = "/services/T000/B000/XXXX"

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[dict[str, Any]] = []

    def error_body(self, status: int) -> Any:
        if status >= 500:
            return "internal_error"
        return SLACK_ERRORS.get(status, super().error_body(status))

    def not_found(self, rec: Recorded) -> _Answer:
        return _Answer(404, "no_service")

    def respond(self, rec: Recorded) -> _Answer:
        if rec.method != "POST":
            return _Answer(405, "invalid_method")
        msg = rec.json
        if not isinstance(msg, dict):
            return _Answer(400, "invalid_payload")
        if not msg.get("text") and not msg.get("blocks"):
            return _Answer(400, "no_text")
        if "blocks" in msg and not self.blocks_ok(msg["blocks"]):
            return _Answer(400, "invalid_blocks")
        self.messages.append(msg)
        return _Answer(200, "ok")

    @staticmethod
    def blocks_ok(blocks: Any) -> bool:
        if not isinstance(blocks, list) or len(blocks) > 50:
            return False
        for b in blocks:
            if not isinstance(b, dict) or b.get("type") not in SLACK_BLOCK_TYPES:
                return False
            text = b.get("text")
            size = len(text.get("text", "")) if isinstance(text, dict) else -1
            if b["type"] == "header":
                if not isinstance(text, dict) or text.get("type") != "plain_text" or not 0 < size <= 150:
                    return False
            if b["type"] == "section":
                fields = b.get("fields")
                if text is None and not fields:
                    return False
                if text is not None and not 0 < size <= 3000:
                    return False
                if fields is not None and (len(fields) > 10
                                           or any(len(f.get("text", "")) > 2000 for f in fields)):
                    return False
            if b["type"] == "context" and not 0 < len(b.get("elements") or []) <= 10:
                return False
        return True


# ---------------------------------------------------------------- generic webhook consumer


class FakeWebhook(FakePeer):
    paths = ("/hook",)
    endpoint = "/hook"

    def __init__(self, *, secret: str | None = None) -> None:
        super().__init__()
        self.secret = secret
        self.payloads: list[Any] = []

    def respond(self, rec: Recorded) -> _Answer:
        if rec.method != "POST" or rec.json is None:
            return _Answer(400, "expected a JSON body")
        if self.secret is not None:
            ts = rec.headers.get(TIMESTAMP_HEADER, "")
            sig = rec.headers.get(SIGNATURE_HEADER, "")
            if not verify_signature(self.secret, ts, rec.body, sig, now=time.time()):
                return _Answer(401, "signature does not verify")
        self.payloads.append(rec.json)
        return _Answer(200, "")


# ---------------------------------------------------------------- Alertmanager /api/v2/alerts

LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def _parse_time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a date-time")
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone")
    return dt


class FakeAlertmanager(FakePeer):
    def __init__(self, *, prefix: str = "") -> None:
        super().__init__()
        self.prefix = prefix.rstrip("/")
        self.endpoint = self.prefix + "/api/v2/alerts"
        self.paths = (self.endpoint,)
        self.alerts: dict[frozenset[tuple[str, str]], dict[str, Any]] = {}

    def error_body(self, status: int) -> Any:
        return "internal error" if status >= 500 else super().error_body(status)

    def firing(self, now: datetime | None = None) -> list[dict[str, Any]]:
        now = now or datetime.now(UTC)
        return [a for a in self.alerts.values() if "endsAt" not in a or _parse_time(a["endsAt"]) > now]

    def respond(self, rec: Recorded) -> _Answer:
        if rec.method != "POST":
            return _Answer(405, "method not allowed")
        body = rec.json
        if not isinstance(body, list):
            return _Answer(400, json.dumps("body must be a JSON array of alerts"))
        for i, a in enumerate(body):
            problem = self.validate(a)
            if problem:
                return _Answer(400, json.dumps(f"alerts[{i}]: {problem}"))
        for a in body:
            self.alerts[frozenset(a["labels"].items())] = a
        return _Answer(200, "")

    @staticmethod
    def validate(a: Any) -> str:
        if not isinstance(a, dict):
            return "not an object"
        labels = a.get("labels")
        if not isinstance(labels, dict) or not labels:
            return "at least one label pair required"
        for k, v in labels.items():
            if not LABEL_NAME.match(k):
                return f"invalid label name {k!r}"
            if not isinstance(v, str) or not v:
                return f"invalid label value for {k!r}"
        ann = a.get("annotations", {})
        if not isinstance(ann, dict) or any(not isinstance(v, str) for v in ann.values()):
            return "annotations must map names to strings"
        try:
            start = _parse_time(a["startsAt"]) if "startsAt" in a else None
            end = _parse_time(a["endsAt"]) if "endsAt" in a else None
        except ValueError as e:
            return str(e)
        if start and end and start > end:
            return "start time must be before end time"
        if not isinstance(a.get("generatorURL", ""), str):
            return "generatorURL must be a string"
        return ""


# ---------------------------------------------------------------- test data

T0 = datetime(2024, 5, 3, 14, 5, 9, tzinfo=UTC)  # a Friday


def make_notification(kind: str = "trigger", *, severity: str = "P1", status: str | None = None,
                      id: int = 1, receiver: str = "oncall", incident_id: int = 12, level: str = "L1",
                      dedup_key: str = "3f1c0a9e5b7d2c48", summary: str = "Redis is down on cache",
                      description: str = "1. Check Redis connectivity: redis-cli ping\n"
                                         "2. Check Redis memory usage: redis-cli info memory\n"
                                         "3. Check BFF health endpoint: curl http://localhost:4000/health",
                      runbook: str = "https://wiki.example/runbooks/incident-response#3-redis-connection-failures",
                      labels: dict[str, str] | None = None, value: float = 0.0, vendor: str | None = None,
                      started_at: datetime = T0, updated_at: datetime | None = None,
                      resolved_at: datetime | None = None, next_update_at: datetime | None = None,
                      alertname: str = "RedisDown") -> Notification:
    """A realistic `Notification` (RedisDown on check `cache`), every field overridable."""
    if status is None:
        status = {"resolve": "resolved", "acknowledge": "acknowledged"}.get(kind, "firing")
    if status == "resolved" and resolved_at is None:
        resolved_at = started_at + timedelta(minutes=45)
    alert_labels = {"alertname": alertname, "severity": severity, "check": "cache"}
    alert_labels.update(labels or {})
    annotations = {"summary": summary, "description": description, "runbook_url": runbook}
    alert = Alert(name=alertname, labels=alert_labels, annotations=annotations, severity=severity,
                  value=value, vendor=vendor, fingerprint=dedup_key)
    return Notification(id=id, receiver=receiver, kind=kind, incident_id=incident_id, dedup_key=dedup_key,
                        level=level, status=status, alert=alert, started_at=started_at,
                        updated_at=updated_at or resolved_at or started_at + timedelta(seconds=5),
                        resolved_at=resolved_at, next_update_at=next_update_at)
