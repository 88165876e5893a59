"""HTTP health endpoints (the BFF's /health, a vendor API): status, time, JSON components.

Runbook scenarios 3, 4 and 5 (`curl http://localhost:4000/health | jq '.checks'`).

One request per run: `method` to `url`, the full reply read (at most `MAX_BODY` bytes), its
status compared with `expected_status`. With `components: checks`, each entry of that JSON
object becomes `portal_http_component_up{component}` (see `parse_components`).

Failure reasons (`CheckError.reason`):

- `timeout`     no full reply within the check's timeout;
- `connect`     refused, DNS, TLS, reset, or the connection dropped mid-reply;
- `http_status` a status not in `expected_status`; keeps the status code, the response time
                and whatever components the body still lists (a 503 /health names the culprit);
- `bad_reply`   `components` is set but the body is not JSON or lacks that key.

All http checks of the daemon share its one `HttpClient` (`CheckContext.http`, see
`monitor/httpclient.py`), because a thousand checks at one second each must cost less than 0.4
CPU seconds per second: a session (connector, cookie jar, DNS cache) per check would multiply
the sockets and the per-request overhead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any, Literal

import aiohttp
import orjson
from pydantic import Field, field_validator, model_validator
from yarl import URL

from monitor.config.fields import CheckBase
from monitor.httpclient import own_or_shared
from monitor.model import CheckContext, CheckError, Sample
from monitor.secrets import Redactor, SecretMarker, redact_url, url_password

METRICS: dict[str, tuple[str, str]] = {
    "portal_http_up": ("gauge", "1 when the endpoint answered the expected status"),
    "portal_http_status_code": ("gauge", "HTTP status of the last reply"),
    "portal_http_response_seconds": ("gauge", "time to the full reply"),
    "portal_http_component_up": ("gauge", "1 when a component of the health reply is ok/pass/up/healthy/true"),
}
# Labels of each series besides `check` and the check's `labels` (the store adds those); a
# metric not named here has none. With METRICS, the catalogue `check-config` checks rules against.
LABELS: dict[str, tuple[str, ...]] = {"portal_http_component_up": ("component",)}
KEY_METRICS = ("portal_http_status_code", "portal_http_response_seconds")

MAX_BODY = 1 << 20  # a health reply is a few hundred bytes; a bigger one is cut, not buffered
MAX_COMPONENTS = 100  # each is a series: a runaway reply must not create thousands
_OK_WORDS = frozenset({"ok", "pass", "passed", "up", "healthy", "true"})


def http_url(value: str) -> str:
    """A config validator: `value` is an absolute http(s) URL with a host (says so without
    quoting the password)."""
    try:
        url = URL(value)
    except ValueError:
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"{redact_url(value)} is not an http:// or https:// URL with a host")
    return value


class Config(CheckBase):
    type: Literal["http"]
    url: str = Field(min_length=1)
    method: Literal["GET", "HEAD", "POST"] = "GET"
    expected_status: int | list[int] = 200
    components: str | None = None  # key of the JSON object whose entries are components ("checks")
    headers: Annotated[dict[str, str], SecretMarker()] = Field(default_factory=dict)
    tls_verify: bool = True

    _url_ok = field_validator("url")(http_url)

    @model_validator(mode="after")
    def _sendable(self) -> Config:
        # aiohttp would refuse these at request time, with the header value in its message.
        if any(c in text for item in self.headers.items() for text in item for c in "\r\n"):
            raise ValueError("a header name or value contains a line break")
        if URL(self.url).user is not None and any(k.lower() == "authorization" for k in self.headers):
            raise ValueError("credentials in the url and an Authorization header: use one of them")
        return self


# --- the reply parser (pure: fuzzed by tests) -------------------------------------------------


def component_ok(entry: Any) -> bool:
    """An entry of the components object is healthy: `"ok"`, `true`, or `{"status": "ok"}`.

    ok/pass/passed/up/healthy/true in any case count as healthy; anything else (`"fail"`,
    `"degraded"`, a number, null, an object without `status`) does not.
    """
    if isinstance(entry, dict):
        entry = entry.get("status")
    if entry is True:
        return True
    return isinstance(entry, str) and entry.strip().lower() in _OK_WORDS


def parse_components(body: bytes, key: str) -> dict[str, bool]:
    """The components of a health reply: name -> healthy. Raises ValueError saying what is wrong.

    `key` names the member holding the components (`checks`); a dotted key (`details.checks`)
    walks nested objects when no member has that literal name. The components may be an object
    (`{"database": {"status": "ok"}, "cache": "ok"}`, as the BFF, terminus and Spring Boot
    write them) or a list of objects with `name` and `status` (MicroProfile Health). At most
    `MAX_COMPONENTS` are kept, so a runaway reply cannot create unbounded series.
    """
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise ValueError(f"body is not JSON ({e.msg} at byte {e.pos}): {snippet(body)}") from None
    node: Any = doc
    if isinstance(doc, dict) and key in doc:
        node = doc[key]
    else:
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise ValueError(f"JSON reply has no {key!r} member: {snippet(body)}")
            node = node[part]
    out: dict[str, bool] = {}
    if isinstance(node, dict):
        for name, entry in node.items():
            if len(out) >= MAX_COMPONENTS:
                break
            out[str(name)] = component_ok(entry)
    elif isinstance(node, list):
        for entry in node:
            if len(out) >= MAX_COMPONENTS:
                break
            if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                out[entry["name"]] = component_ok(entry)
    else:
        raise ValueError(f"{key!r} is a JSON {type(node).__name__}, not an object of components")
    return out


def snippet(body: bytes, limit: int = 200) -> str:
    """The start of a reply body as readable text, for error messages."""
    text = body[: limit * 4].decode("utf-8", "replace")
    text = " ".join(text.split())
    return repr(text[:limit] + ("…" if len(text) > limit else ""))


# --- reading replies (shared with the whmcs check) ---------------------------------------------


async def read_body(resp: aiohttp.ClientResponse, limit: int = MAX_BODY) -> tuple[bytes, bool]:
    """Up to `limit` bytes of the (decoded) body, and whether it was cut there.

    A cut body leaves unread data on the connection; releasing the response then closes that
    connection instead of returning it to the pool, which is what we want.
    """
    content = resp.content
    chunks: list[bytes] = []
    size = 0
    while size <= limit:  # bounded: every pass adds at least one byte or stops
        chunk = await content.readany()
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if content.at_eof():
            break
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if size > limit:
        return body[:limit], True
    return body, False


class HttpCheck:
    """One request to a health endpoint per run: status, response time, JSON components."""

    type = "http"

    def __init__(self, cfg: Config, ctx: CheckContext, *, clock: Callable[[], float] = time.perf_counter) -> None:
        self.name = cfg.name
        self.interval_s = ctx.interval_s
        self.timeout_s = ctx.timeout_s
        self._cfg = cfg
        self._clock = clock
        self._where = redact_url(cfg.url)
        self._url = URL(cfg.url)  # parsed once, not on every request
        self._expected = frozenset(
            [cfg.expected_status] if isinstance(cfg.expected_status, int) else cfg.expected_status
        )
        self._expected_text = " or ".join(str(s) for s in sorted(self._expected))
        self._timeout = aiohttp.ClientTimeout(total=ctx.timeout_s)
        self._headers = dict(cfg.headers) or None
        self._redactor = Redactor([*cfg.headers.values(), url_password(cfg.url)])
        self._http, self._owns_http = own_or_shared(ctx.http)
        self._ssl = cfg.tls_verify  # per request: unverified connections get a pool of their own

    async def collect(self) -> list[Sample]:
        cfg = self._cfg
        start = self._clock()
        try:
            async with self._http.session().request(
                cfg.method,
                self._url,
                headers=self._headers,
                timeout=self._timeout,
                ssl=self._ssl,
                allow_redirects=False,  # a health endpoint that redirects is answering 3xx
            ) as resp:
                status = resp.status
                body, cut = await read_body(resp)
        except TimeoutError:
            raise CheckError("timeout", f"{self._where}: no full reply within {self.timeout_s:g}s") from None
        except (aiohttp.ClientError, OSError) as e:
            raise CheckError("connect", f"{self._where}: {self._scrub(describe_error(e))}") from None
        elapsed = self._clock() - start
        samples = [
            Sample("portal_http_status_code", {}, float(status)),
            Sample("portal_http_response_seconds", {}, elapsed),
        ]
        status_ok = status in self._expected
        if cfg.components is not None:
            try:
                if cut:
                    raise ValueError(f"body larger than {MAX_BODY} bytes")
                components = parse_components(body, cfg.components)
            except ValueError as e:
                if status_ok:
                    raise CheckError("bad_reply", f"{self._where}: HTTP {status}: {e}", samples) from None
                components = {}
            samples.extend(
                Sample("portal_http_component_up", {"component": name}, 1.0 if ok else 0.0)
                for name, ok in components.items()
            )
            down = [name for name, ok in components.items() if not ok]
        else:
            down = []
        if not status_ok:
            more = f" and {len(down) - 10} more" if len(down) > 10 else ""
            extra = f" (components down: {', '.join(down[:10])}{more})" if down else ""
            raise CheckError(
                "http_status", f"{self._where}: HTTP {status}, expected {self._expected_text}{extra}", samples
            )
        return samples

    def _scrub(self, text: str) -> str:
        """Remove the URL password and header values from a library's error text (InvalidURL
        quotes the whole URL)."""
        return self._redactor.scrub(text)

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()


def describe_error(e: BaseException) -> str:
    """An aiohttp/OS error as one line, with its class name when the text alone is vague."""
    text = str(e) or type(e).__name__
    return text if type(e).__name__ in text else f"{type(e).__name__}: {text}"
