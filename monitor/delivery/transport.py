"""The HTTP side every receiver shares: one lazy aiohttp session, a POST under a timeout,
and the reading of a reply into "delivered", "retry later" or "give up".

Why one place: the four HTTP receivers differ in their bodies and in how they name a
failure, but must agree on what is retryable (429, 408, 5xx, network errors, timeouts),
on `Retry-After` (seconds or an HTTP date), and on never letting a secret (a Slack webhook
URL, a routing key, a URL password) reach a message. Every `DeliveryError` raised here is
`from None`: aiohttp's exception texts can quote the full request URL, and a chained
traceback in a log would carry it past the scrubbing.

Every body is encoded by `json_body`: strict JSON, in which an alert value that is NaN or
±Inf (a ratio over zero requests, a rate over a gap) is the string Prometheus writes,
"NaN", "+Inf" or "-Inf". Python's `json.dumps` would write a bare `NaN`, which is not JSON:
PagerDuty answers 400 and the page is lost.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp

from monitor.clock import utc_now
from monitor.httpclient import HttpClient, own_or_shared
from monitor.model import DeliveryError
from monitor.secrets import scrub

MAX_REPLY_BYTES = 64 * 1024  # a receiver's reply is a status line of JSON; never read more
MAX_DETAIL_CHARS = 300  # how much of a reply body goes into an error message


@dataclass(frozen=True, slots=True)
class Reply:
    """What a peer answered: status, the start of the body, and its `Retry-After` in seconds."""

    status: int
    body: str
    retry_after: float | None


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """`Retry-After` as seconds from `now`: delta-seconds or an HTTP date (RFC 9110 §10.2.3).

    None when absent or unreadable; never negative.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def json_value(v: float) -> float | str:
    """A sample value for JSON: a finite number as it is, else "NaN", "+Inf" or "-Inf"."""
    if math.isfinite(v):
        return v
    return "NaN" if math.isnan(v) else ("+Inf" if v > 0 else "-Inf")


def format_value(v: float) -> str:
    """A sample value as text: `%g` when finite, else "NaN", "+Inf" or "-Inf" (as Prometheus)."""
    return f"{v:g}" if math.isfinite(v) else str(json_value(v))


def _strict(doc: Any) -> Any:
    if isinstance(doc, float):
        return json_value(doc)
    if isinstance(doc, dict):
        return {k: _strict(v) for k, v in doc.items()}
    if isinstance(doc, (list, tuple)):
        return [_strict(v) for v in doc]
    return doc


def json_body(doc: Any) -> bytes:
    """`doc` as a UTF-8 JSON body that any JSON parser accepts: every float that is not
    finite, wherever it sits, becomes "NaN", "+Inf" or "-Inf" (`allow_nan=False` proves it)."""
    return json.dumps(_strict(doc), ensure_ascii=False, allow_nan=False).encode()


def as_utc(dt: datetime) -> datetime:
    """`dt` in UTC; a naive datetime is taken as UTC."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def rfc3339(dt: datetime) -> str:
    """UTC, second precision unless there are microseconds, with `Z`: what Alertmanager and
    PagerDuty both read. A naive datetime is taken as UTC."""
    return as_utc(dt).isoformat().replace("+00:00", "Z")


def shorten(text: str, limit: int = MAX_DETAIL_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class JsonPoster:
    """POSTs JSON bodies for one receiver over the daemon's shared `HttpClient` (or one of its
    own when none is passed, closed by `aclose`), every request under `ClientTimeout(total=timeout)`.

    `secrets` are scrubbed from every error text this class produces; `now` is the wall
    clock, used only to read an HTTP-date `Retry-After`.
    """

    def __init__(
        self,
        *,
        timeout: float,
        secrets: Iterable[str] = (),
        now: Callable[[], datetime] = utc_now,
        http: HttpClient | None = None,
    ) -> None:
        self.timeout = timeout
        self.secrets = tuple(s for s in secrets if s)
        self._now = now
        self._http, self._owns_http = own_or_shared(http)

    async def post(self, what: str, url: str, body: bytes, headers: Mapping[str, str] | None = None) -> Reply:
        """POST `body` (JSON) to `url`; return the reply, whatever its status.

        Network errors and timeouts raise a retryable `DeliveryError` naming `what` (the
        receiver and its redacted URL); a URL aiohttp cannot use raises a permanent one.
        Redirects are not followed: a POST that is redirected is a wrong URL in the config.
        """
        session = self._http.session()
        all_headers = {"Content-Type": "application/json"}
        all_headers.update(headers or {})
        try:
            async with session.post(
                url,
                data=body,
                headers=all_headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as resp:
                raw = await resp.content.read(MAX_REPLY_BYTES)
                text = raw.decode(resp.charset or "utf-8", errors="replace")
                wait = parse_retry_after(resp.headers.get("Retry-After"), self._now())
                return Reply(resp.status, text, wait)
        except (aiohttp.InvalidURL, ValueError) as e:
            raise DeliveryError(f"{what}: invalid URL ({self._clean(e)})", permanent=True) from None
        except TimeoutError:
            raise DeliveryError(f"{what}: no reply within {self.timeout:g}s") from None
        except (aiohttp.ClientError, OSError) as e:
            raise DeliveryError(f"{what}: {type(e).__name__}: {self._clean(e)}") from None

    def _clean(self, e: BaseException) -> str:
        return shorten(scrub(str(e) or type(e).__name__, self.secrets))

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()


def raise_for_reply(what: str, reply: Reply, detail: str = "", *, default_retry_after: float | None = None) -> None:
    """Return when the peer accepted (2xx); otherwise raise the `DeliveryError` its status means.

    429 → retry after `Retry-After` (or `default_retry_after`); 408, 425 and 5xx → retry
    (after `Retry-After` when given); 3xx → permanent (fix the URL); any other 4xx →
    permanent. `detail` is the peer's own words, already scrubbed and shortened.
    """
    status = reply.status
    if 200 <= status < 300:
        return
    said = f": {detail}" if detail else ""
    if status == 429:
        wait = reply.retry_after if reply.retry_after is not None else default_retry_after
        hint = f"; retry after {wait:g}s" if wait is not None else ""
        raise DeliveryError(f"{what}: rate limited (HTTP 429){said}{hint}", retry_after=wait)
    if status in (408, 425) or status >= 500:
        raise DeliveryError(f"{what}: HTTP {status}{said}", retry_after=reply.retry_after)
    if 300 <= status < 400:
        raise DeliveryError(f"{what}: HTTP {status} redirect (configure the final URL){said}", permanent=True)
    raise DeliveryError(f"{what}: rejected with HTTP {status}{said}", permanent=True)
