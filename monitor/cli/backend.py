"""Where the on-call commands read and change incidents and silences: the state file, or a
running daemon's API.

`incidents` and `silence` are each written once against `Backend`, one method per operation,
and `--url` picks the backend once. `LocalBackend` works on the SQLite state file in
`state_dir` (the daemon's own file: SQLite with WAL lets both write; what it queues the running
daemon delivers within seconds). `RemoteBackend` goes through a running daemon's JSON API (no
local config or state file needed; `$MONITOR_API_TOKEN` for the calls that change something).
Both return the same plain values: the dicts of `IncidentView.to_dict()` and
`SilenceEntry.to_dict()`, which is also what the API sends.

Failures:

    Refused    the backend will not do it: the text is the whole line for stderr, `code` the
               exit status (incident not found in the state file, already expired, `review`
               without the state file, a time that does not parse)
    ApiError   a call to the daemon failed; the command puts its name in front. The message
               names the URL (password redacted) and says what to do: a refused connection,
               no reply within the timeout, 401 (token missing or wrong: set
               MONITOR_API_TOKEN), 403 (the daemon has no token), or the API's own
               `{"error": ...}`

`call` is the one HTTP call under all of it (also `once --url`'s); every call has a total
timeout.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
import orjson

from monitor.clock import utc_now
from monitor.config.fields import parse_duration
from monitor.config.model import API_TOKEN_VAR, Config
from monitor.incidents.lifecycle import Incidents
from monitor.incidents.silences import parse_time
from monitor.incidents.views import IncidentView
from monitor.secrets import redact_url
from monitor.statedb import open_db

DEFAULT_TIMEOUT_S = 10.0

Matchers = dict[str, str | list[str]]


class Refused(Exception):
    """The backend will not do it; `str()` is the whole line for stderr, `code` the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class ApiError(Exception):
    """A call to the daemon failed; `status` is the HTTP status (None when no reply came),
    `doc` the reply's JSON when it had one (`POST /-/reload`'s list of errors)."""

    def __init__(self, message: str, status: int | None = None, doc: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.doc = doc


class Backend(Protocol):
    """What the on-call commands need, wherever the incidents live."""

    def incidents(self, *, include_resolved: bool) -> list[dict[str, Any]]:
        """Newest first; only the open ones unless `include_resolved`."""
        ...

    def incident(self, incident_id: int) -> dict[str, Any]:
        """One incident with its timeline and its notifications."""
        ...

    def review(self, incident_id: int) -> IncidentView:
        """One incident as stored, for the post-incident review template."""
        ...

    def ack(self, incident_id: int, who: str) -> int:
        """Acknowledge; the number of notifications queued."""
        ...

    def resolve(self, incident_id: int, who: str) -> int:
        """Resolve by hand; the number of notifications queued."""
        ...

    def silences(self, *, include_expired: bool) -> list[dict[str, Any]]:
        """Newest first; only those in force now unless `include_expired`."""
        ...

    def add_silence(
        self, matchers: Matchers, *, until: str, start: str | None, author: str, comment: str
    ) -> dict[str, Any]:
        """Store a silence; `until` and `start` are a duration (`2h`, counted from the start) or
        a time, as typed. Returns the stored silence."""
        ...

    def expire_silence(self, silence_id: int) -> None:
        """End a silence now; Refused (or ApiError) when it cannot."""
        ...

    def close(self) -> None:
        """Let go of what the backend holds open."""
        ...


# ------------------------------------------------------------------ the state file


class LocalBackend:
    """The state database in `state_dir`, through `Incidents` (the daemon's own code)."""

    def __init__(self, cfg: Config) -> None:
        self._where = cfg.root.state_dir
        self._conn = open_db(cfg.root.state_dir)
        self._inc = Incidents(self._conn, cfg)

    def close(self) -> None:
        self._conn.close()

    def incidents(self, *, include_resolved: bool) -> list[dict[str, Any]]:
        return [v.to_dict() for v in self._inc.list_incidents(open_only=not include_resolved)]

    def incident(self, incident_id: int) -> dict[str, Any]:
        return self.review(incident_id).to_dict()

    def review(self, incident_id: int) -> IncidentView:
        view = self._inc.get(incident_id)
        if view is None:
            raise Refused(f"incident {incident_id} not found in {self._where}")
        return view

    def ack(self, incident_id: int, who: str) -> int:
        return self._by_hand(self._inc.ack, incident_id, who)

    def resolve(self, incident_id: int, who: str) -> int:
        return self._by_hand(self._inc.resolve, incident_id, who)

    def _by_hand(self, act: Callable[[int, str, datetime], int], incident_id: int, who: str) -> int:
        self.review(incident_id)  # an unknown ID is "not found in <state_dir>", as for show
        try:
            return act(incident_id, who, utc_now())
        except (LookupError, ValueError) as e:  # e.g. already resolved
            raise Refused(f"incident {incident_id}: {e}") from None

    def silences(self, *, include_expired: bool) -> list[dict[str, Any]]:
        return [e.to_dict() for e in self._inc.list_silences(active_only=not include_expired, now=utc_now())]

    def add_silence(
        self, matchers: Matchers, *, until: str, start: str | None, author: str, comment: str
    ) -> dict[str, Any]:
        now = utc_now()
        try:
            starts = parse_time(start, now) if start else None
            ends = parse_time(until, starts or now)  # a duration counts from the start, as the API's does
        except ValueError as e:
            raise Refused(f"portal-monitor silence add: {e}", 2) from None
        try:
            sid = self._inc.silences.add(
                matchers, ends_at=ends, author=author, comment=comment, now=now, starts_at=starts
            )
        except ValueError as e:  # e.g. an end in the past: the API answers 400 for the same
            raise Refused(f"portal-monitor silence add: {e}") from None
        entry = self._inc.silences.get(sid)
        assert entry is not None
        return entry.to_dict()

    def expire_silence(self, silence_id: int) -> None:
        try:
            expired = self._inc.expire_silence(silence_id, utc_now())
        except LookupError:
            expired = False
        if not expired:
            raise Refused(f"silence {silence_id}: not found or already expired")


# ------------------------------------------------------------------ the daemon's API


class RemoteBackend:
    """A running daemon's JSON API at `url` (`http://host:9820`). `token` is sent only with the
    calls that change something; GETs need none."""

    def __init__(self, url: str, *, token: str = "", timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self._url = url
        self._token = token
        self._timeout_s = timeout_s

    def close(self) -> None:
        pass  # every call opens and closes its own session

    def _get(self, path: str, params: dict[str, str] | None = None) -> Any:
        return call(self._url, "GET", path, params=params, timeout_s=self._timeout_s)

    def _change(self, method: str, path: str, body: Any = None) -> Any:
        return call(self._url, method, path, token=self._token, body=body, timeout_s=self._timeout_s)

    def incidents(self, *, include_resolved: bool) -> list[dict[str, Any]]:
        doc = self._get("/api/v1/incidents", {"state": "all" if include_resolved else "open"})
        return list(doc["incidents"])

    def incident(self, incident_id: int) -> dict[str, Any]:
        return dict(self._get(f"/api/v1/incidents/{incident_id}"))

    def review(self, incident_id: int) -> IncidentView:
        raise Refused("portal-monitor incidents review: run it where the daemon's state_dir is (without --url)", 2)

    def ack(self, incident_id: int, who: str) -> int:
        return int(self._change("POST", f"/api/v1/incidents/{incident_id}/ack", {"who": who})["notifications_queued"])

    def resolve(self, incident_id: int, who: str) -> int:
        reply = self._change("POST", f"/api/v1/incidents/{incident_id}/resolve", {"who": who})
        return int(reply["notifications_queued"])

    def silences(self, *, include_expired: bool) -> list[dict[str, Any]]:
        doc = self._get("/api/v1/silences", {"state": "all" if include_expired else "active"})
        return [_stored(e) for e in doc["silences"]]

    def add_silence(
        self, matchers: Matchers, *, until: str, start: str | None, author: str, comment: str
    ) -> dict[str, Any]:
        # A duration is sent as such, so the daemon's clock (not this host's) decides the end.
        text = until.strip().removeprefix("+")
        try:
            parse_duration(text)
            end: dict[str, str] = {"duration": text}
        except ValueError:
            end = {"ends_at": until}
        body: dict[str, Any] = {"matchers": matchers, **end, "author": author, "comment": comment}
        if start:
            body["starts_at"] = start
        return _stored(self._change("POST", "/api/v1/silences", body)["silence"])

    def expire_silence(self, silence_id: int) -> None:
        if not self._change("DELETE", f"/api/v1/silences/{silence_id}")["expired"]:
            raise Refused(f"silence {silence_id}: already expired")


def _stored(silence: dict[str, Any]) -> dict[str, Any]:
    """The API's silence without its `state` (active, pending, expired at the daemon's now):
    `SilenceEntry.to_dict()`, as the state file gives it."""
    return {k: v for k, v in silence.items() if k != "state"}


# ------------------------------------------------------------------ HTTP


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
        raise ApiError(f"{method} {shown}: HTTP {status}: {detail}", status, doc)


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
