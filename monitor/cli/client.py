"""A small client of the daemon's JSON API, for the CLI's remote mode (`--url`).

Every call has a total timeout; every failure is an `ApiError` whose message names the URL
(password redacted) and says what to do: a refused connection, a timeout, a 401 (token
missing or wrong: set MONITOR_API_TOKEN), a 403 (the daemon has no token), or the API's
own `{"error": ...}`.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from monitor.config.loader import API_TOKEN_VAR
from monitor.secrets import redact_url

DEFAULT_TIMEOUT_S = 10.0


class ApiError(Exception):
    """A call failed; `status` is the HTTP status (None when no reply came)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def base_url(url: str) -> str:
    """`http://host:9820` (a trailing slash or path is dropped); refuse anything else."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ApiError(f"--url {redact_url(url)!r}: expected http://HOST:PORT of a running portal-monitor")
    return f"{parts.scheme}://{parts.netloc}"


class ApiClient:
    """`async with ApiClient(url, token=...) as api: await api.call("GET", "/api/v1/checks")`."""

    def __init__(self, url: str, *, token: str = "", timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.base = base_url(url)
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ApiClient:
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def call(self, method: str, path: str, *, body: Any = None, params: dict[str, str] | None = None) -> Any:
        """One request; the parsed JSON reply of a 2xx, else ApiError."""
        assert self._session is not None, "use `async with ApiClient(...)`"
        url = self.base + path
        shown = redact_url(url)
        headers = {"Accept": "application/json"}
        mutating = method not in ("GET", "HEAD")
        if mutating and self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        data = None
        if body is not None:
            data = orjson.dumps(body)
            headers["Content-Type"] = "application/json"
        try:
            async with self._session.request(
                method, url, data=data, params=params, headers=headers, timeout=self._timeout
            ) as resp:
                raw = await resp.read()
                status = resp.status
        except TimeoutError:
            raise ApiError(f"{method} {shown}: no reply within {self._timeout_s:g}s") from None
        except aiohttp.ClientConnectorError as e:
            err = e.os_error
            why = os.strerror(err.errno).lower() if err.errno else str(err)
            raise ApiError(
                f"cannot connect to {redact_url(self.base)}: {why} (is portal-monitor running and listening there?)"
            ) from None
        except aiohttp.ClientError as e:
            raise ApiError(f"{method} {shown}: {type(e).__name__}: {e}") from None
        try:
            doc = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            doc = None
        if 200 <= status < 300:
            if doc is None and raw:
                raise ApiError(f"{method} {shown}: HTTP {status} but the reply is not JSON: {raw[:200]!r}", status)
            return doc
        detail = _error_text(doc) or raw[:200].decode("utf-8", "replace").strip() or "no details"
        if status == 401:
            hint = (
                f"set {API_TOKEN_VAR} to the daemon's API token"
                if not self._token
                else f"the token in {API_TOKEN_VAR} is not the daemon's"
            )
            raise ApiError(f"{method} {shown}: 401 Unauthorized: {hint}", status)
        if status == 403:
            raise ApiError(f"{method} {shown}: 403 Forbidden: {detail}", status)
        raise ApiError(f"{method} {shown}: HTTP {status}: {detail}", status)


def _error_text(doc: Any) -> str:
    if isinstance(doc, dict):
        if isinstance(doc.get("error"), str):
            return str(doc["error"])
        if isinstance(doc.get("errors"), list):
            return "; ".join(str(e) for e in doc["errors"])
    return ""


def call(
    url: str,
    method: str,
    path: str,
    *,
    token: str = "",
    body: Any = None,
    params: dict[str, str] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Any:
    """One call from synchronous code (the CLI)."""

    async def run() -> Any:
        async with ApiClient(url, token=token, timeout_s=timeout_s) as api:
            return await api.call(method, path, body=body, params=params)

    return asyncio.run(run())
