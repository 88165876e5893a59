"""WHMCS API: GetClients with limitnum=1; up only when the reply says result: success.

Runbook scenario 2 (WHMCS API unavailable).

WHMCS reports API errors as `{"result": "error", "message": ...}`, with HTTP 200 for most
and 403 for `Invalid IP ...`, so the verdict comes from `result`, whatever the status; the
status only matters when the body is not a WHMCS reply at all (`classify_reply`).

Failure reasons (`CheckError.reason`), each with a different owner and fix:

- `auth`       the credential is refused: `Authentication Failed` (wrong secret),
               `Invalid or missing credentials` (wrong identifier), `Invalid Permissions:
               API action "getclients" is not allowed` (its API role), `Invalid Access Key`,
               `Access Denied`: fix it under Setup > Staff > Manage API Credentials;
- `ip_denied`  `Invalid IP 203.0.113.9` (and `Forbidden IP`, `Banned IP`): our egress address
               is not on the API IP allow-list (often a changed or IPv6 source address);
- `http_5xx`   a 5xx status, unless a WHMCS message says `auth` or `ip_denied` (the PHP or
               web server failed: an HTML error page, a JSON error from a crashing module);
- `timeout`    no full reply within the check's timeout;
- `connect`    refused, DNS, TLS, reset;
- `bad_reply`  anything else that is not `result: success`: HTML or other non-JSON (a
               maintenance page, PHP notices in front of the JSON, a 404), JSON without
               `result`, and `result: error` with any other message. These share one reason
               because the BFF fails the same way on all of them; the message says which.

Messages name the redacted URL and quote WHMCS (at most ~200 characters); the identifier,
secret, access key and URL password are scrubbed from them, as written and URL-, form-, HTML-
and JSON-encoded (`monitor.secrets.secret_forms`), in case WHMCS, a proxy (an error page quoting the
posted form) or aiohttp (InvalidURL quotes the URL) echoes them.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import aiohttp
import orjson
from pydantic import Field, field_validator

from checks.http import MAX_BODY, describe_error, http_url, read_body, snippet
from monitor.config.fields import CheckBase
from monitor.httpclient import own_or_shared
from monitor.model import CheckContext, CheckError, Sample
from monitor.secrets import Redactor, Secret, all_forms, redact_url, url_password

METRICS: dict[str, tuple[str, str]] = {
    "portal_whmcs_up": ("gauge", "1 when WHMCS answered result: success"),
    "portal_whmcs_response_seconds": ("gauge", "time to the WHMCS API reply"),
}
# Labels of each series besides `check` and the check's `labels` (the store adds those); a
# metric not named here has none. With METRICS, the catalogue `check-config` checks rules against.
LABELS: dict[str, tuple[str, ...]] = {}
KEY_METRICS = ("portal_whmcs_response_seconds",)

_IP_DENIED = re.compile(r"\b(invalid|forbidden|banned|blocked)\s+ip\b|\bip\b.{0,40}\bnot\s+allowed", re.I)
_AUTH = re.compile(
    r"authentication\s+failed|invalid\s+or\s+missing\s+credentials|invalid\s+permissions"
    r"|invalid\s+access\s*key|access\s+denied|invalid\s+(api\s+)?credentials|login\s+failed",
    re.I,
)
_NVP = re.compile(rb"^\s*result=(\w+)", re.I)  # legacy name=value;... replies
MESSAGE_LIMIT = 200


class Config(CheckBase):
    type: Literal["whmcs"]
    url: str = Field(min_length=1)  # https://billing.example/includes/api.php
    identifier: Secret = Field(min_length=1)
    secret: Secret = Field(min_length=1)
    accesskey: Secret | None = None

    _url_ok = field_validator("url")(http_url)


class Verdict(NamedTuple):
    """What a WHMCS reply means: up, else the failure reason and what WHMCS said."""

    ok: bool
    reason: str | None  # None when ok
    detail: str  # for the message: "WHMCS answered 'Authentication Failed'" (never the request)


def classify_reply(status: int, content_type: str, body: bytes) -> Verdict:
    """Judge one reply to GetClients. Pure and total: any input gives a Verdict, never raises.

    JSON is recognised by its content, not the Content-Type (older WHMCS send JSON as
    text/html). A `result` in a JSON or legacy `result=...;message=...` body decides; the
    status only classifies bodies that are not WHMCS replies (5xx → `http_5xx`).
    """
    message: str | None = None
    result: str | None = None
    stripped = body.lstrip()
    if stripped[:1] == b"{":
        try:
            doc: Any = orjson.loads(stripped)
        except orjson.JSONDecodeError:
            doc = None
        if isinstance(doc, dict):
            if "result" not in doc:
                return Verdict(
                    False,
                    "http_5xx" if status >= 500 else "bad_reply",
                    f"HTTP {status}, JSON without 'result': {snippet(body, MESSAGE_LIMIT)}",
                )
            result = str(doc["result"])
            raw = doc.get("message")
            message = raw if isinstance(raw, str) else None
    elif (m := _NVP.match(stripped)) is not None:
        result = m.group(1).decode("ascii", "replace")
        fields = dict(part.split("=", 1) for part in stripped.decode("utf-8", "replace").split(";") if "=" in part)
        message = fields.get("message")
    if result is None:
        kind = (content_type.split(";")[0].strip() or "no content type") if body.strip() else "empty body"
        return Verdict(
            False,
            "http_5xx" if status >= 500 else "bad_reply",
            f"HTTP {status} {kind}, not a WHMCS JSON reply: {snippet(body, MESSAGE_LIMIT)}",
        )
    if result.lower() == "success":
        return Verdict(True, None, f"HTTP {status} result: success")
    said = repr(message[:MESSAGE_LIMIT] + ("…" if len(message) > MESSAGE_LIMIT else "")) if message else None
    if message and _IP_DENIED.search(message):
        return Verdict(False, "ip_denied", f"HTTP {status}, WHMCS answered {said} (API IP allow-list)")
    if message and _AUTH.search(message):
        return Verdict(False, "auth", f"HTTP {status}, WHMCS answered {said} (API credentials)")
    what = said if said else f"result {result[:MESSAGE_LIMIT]!r} without a message"
    reason = "http_5xx" if status >= 500 else "bad_reply"
    return Verdict(False, reason, f"HTTP {status}, WHMCS answered {what}")


_CLOSE = {"Connection": "close"}


class WhmcsCheck:
    """GetClients limitnum=1 against the WHMCS External API, as the BFF's first call would."""

    type = "whmcs"

    def __init__(self, cfg: Config, ctx: CheckContext, *, clock: Callable[[], float] = time.perf_counter) -> None:
        self.name = cfg.name
        self.interval_s = ctx.interval_s
        self.timeout_s = ctx.timeout_s
        self._url = cfg.url
        self._where = redact_url(cfg.url)
        self._clock = clock
        self._form = {
            "identifier": cfg.identifier,
            "secret": cfg.secret,
            "action": "GetClients",
            "limitnum": "1",
            "responsetype": "json",
        }
        if cfg.accesskey:
            self._form["accesskey"] = cfg.accesskey
        # Longest first, so a secret containing the identifier is scrubbed whole; each also
        # form-encoded, since an error page may quote the request body we posted.
        self._redactor = Redactor(all_forms((cfg.identifier, cfg.secret, cfg.accesskey, url_password(cfg.url))))
        self._http, self._owns_http = own_or_shared(ctx.http)
        self._timeout = aiohttp.ClientTimeout(total=self.timeout_s)

    def _fail(self, reason: str, detail: str, samples: list[Sample] | None = None) -> CheckError:
        return CheckError(reason, self._redactor.scrub(f"{self._where}: {detail}"), samples)

    async def collect(self) -> list[Sample]:
        start = self._clock()
        try:
            # Connection: close: every probe connects afresh (DNS, TCP, TLS) as the BFF does after an
            # idle spell, and no probe fails on a keep-alive socket the server is closing.
            async with self._http.session().post(
                self._url, data=self._form, allow_redirects=False, timeout=self._timeout, headers=_CLOSE
            ) as resp:
                body, _ = await read_body(resp, MAX_BODY)
                status, content_type = resp.status, resp.headers.get("Content-Type", "")
        except TimeoutError:
            raise self._fail("timeout", f"no full reply within {self.timeout_s:g}s") from None
        except (aiohttp.ClientError, OSError) as e:
            raise self._fail("connect", describe_error(e)) from None
        samples = [Sample("portal_whmcs_response_seconds", {}, self._clock() - start)]
        # Scrubbed before it is quoted: a cut at MESSAGE_LIMIT or repr's escapes must not
        # leave part of a secret, or a form the scrubbing of the message would not know.
        body = self._redactor.scrub_bytes(body)
        verdict = classify_reply(status, content_type, body)
        if not verdict.ok:
            raise self._fail(verdict.reason or "bad_reply", verdict.detail, samples)
        return samples

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()
