"""Fake peers for tests: the WHMCS External API and the BFF's /health, on free loopback ports.

Each fake is a tiny aiohttp app on `aiohttp.test_utils.TestServer` (127.0.0.1, port 0) that
speaks the real reply shapes, including the errors, and whose behaviour a test switches at
runtime (the pattern of aio-libs/aiohttp `examples/fake_server.py`). Both are async context
managers; `start()`/`close()` do the same by hand (e.g. in a fixture).

FakeWhmcs(identifier="api-id", secret="api-secret", accesskey=None, path="/includes/api.php")
    .url                  "http://127.0.0.1:PORT/includes/api.php" (str)
    .requests             every received POST form as a dict, oldest first
    .request_seen         asyncio.Event set on each request (clear it yourself to wait again)
    .behave_normally()    the default: judge the request like WHMCS does:
                            wrong identifier   → 200 {"result":"error",
                                                     "message":"Invalid or missing credentials"}
                            wrong secret       → 200 {"result":"error","message":"Authentication Failed"}
                            accesskey configured on the fake but not sent (or wrong)
                                               → 403 {"result":"error","message":"Invalid IP 127.0.0.1"}
                            action other than GetClients
                                               → 200 Invalid Permissions: API action "x" is not allowed
                            else               → 200 the documented GetClients success reply
    .fail_auth(message="Authentication Failed")   200 {"result":"error","message": message}
    .deny_ip(ip="203.0.113.9")                    403 {"result":"error","message":"Invalid IP <ip>"}
    .answer(status, body, content_type="text/html")   any fixed reply (str/bytes body, or a dict → JSON)
    .hang() / .release()  hold every request on an asyncio.Event until release() (or close());
                          after release the held requests get the current behaviour's reply

FakeBff(path="/health")
    .url                  "http://127.0.0.1:PORT/health" (str)
    .hits                 requests received
    .peers                the client (host, port) of each request: equal ports mean a reused connection
    .last_headers         the headers of the latest request (dict)
    .last_method          its method
    .request_seen         as above
    .healthy()            the default: 200 {"status":"ok","checks":{"database":{"status":"ok"},"cache":"ok"}}
    .component_down(name="database", value="fail", status=503)
                          the same shape with that component set to `value`, status "error", HTTP `status`
    .answer(status, body, content_type="application/json")   any fixed reply (dict → JSON)
    .hang() / .release()  as above

closed_port_url(path="/") -> str   an http URL on 127.0.0.1 where nothing listens (connection refused)

Servers start with `shutdown_timeout=0.5` and `close()` releases held requests first, so
closing a fake never waits long.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

_FORM = web.RequestKey("whmcs_form", dict)
WHMCS_CLIENT = {
    "id": 2, "firstname": "Angelica", "lastname": "Mohr", "companyname": "",
    "email": "price.ima@example.com", "datecreated": "2016-01-15", "groupid": 0, "status": "Active",
}


def closed_port_url(path: str = "/") -> str:
    """An http URL on loopback where nothing listens: connecting is refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


def _reply(status: int, body: str | bytes | dict[str, Any], content_type: str) -> web.Response:
    if isinstance(body, dict):
        return web.Response(status=status, text=json.dumps(body), content_type="application/json")
    ctype, _, params = content_type.partition(";")
    charset = params.split("=", 1)[1].strip() if "charset=" in params else None
    if isinstance(body, str):
        return web.Response(status=status, text=body, content_type=ctype.strip(), charset=charset or "utf-8")
    return web.Response(status=status, body=body, content_type=ctype.strip(), charset=charset)


class _FakePeer:
    """A started-on-demand aiohttp server with a hang switch; subclasses add `handle`."""

    path: str

    def __init__(self) -> None:
        self._server: TestServer | None = None
        self._released = asyncio.Event()
        self._released.set()
        self.request_seen = asyncio.Event()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the fake first"
        return str(self._server.make_url(self.path))

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", self.path, self._entry)
        self._server = TestServer(app, host="127.0.0.1", port=0)
        await self._server.start_server(shutdown_timeout=0.5)

    async def close(self) -> None:
        self._released.set()
        if self._server is not None:
            await self._server.close()

    async def __aenter__(self) -> _FakePeer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def hang(self) -> None:
        """Hold every request (new and arriving) until `release()`."""
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    async def _entry(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        self.request_seen.set()
        await self._released.wait()
        return await self.handle(request)

    async def _record(self, request: web.Request) -> None:
        """Note what arrived, before any hang."""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError


class FakeWhmcs(_FakePeer):
    """The WHMCS External API (`includes/api.php`), answering GetClients. See the module docstring."""

    def __init__(
        self,
        identifier: str = "api-id",
        secret: str = "api-secret",
        accesskey: str | None = None,
        path: str = "/includes/api.php",
    ) -> None:
        super().__init__()
        self.identifier, self.secret, self.accesskey, self.path = identifier, secret, accesskey, path
        self.requests: list[dict[str, str]] = []
        self.peers: list[tuple[str, int]] = []  # client (host, port) per request: equal = reused connection
        self._fixed: tuple[int, str | bytes | dict[str, Any], str] | None = None

    async def __aenter__(self) -> FakeWhmcs:
        await self.start()
        return self

    def behave_normally(self) -> None:
        self._fixed = None

    def fail_auth(self, message: str = "Authentication Failed") -> None:
        self._fixed = (200, {"result": "error", "message": message}, "")

    def deny_ip(self, ip: str = "203.0.113.9") -> None:
        self._fixed = (403, {"result": "error", "message": f"Invalid IP {ip}"}, "")

    def answer(
        self, status: int, body: str | bytes | dict[str, Any], content_type: str = "text/html"
    ) -> None:
        self._fixed = (status, body, content_type)

    async def _record(self, request: web.Request) -> None:
        form = {k: str(v) for k, v in (await request.post()).items()}
        request[_FORM] = form
        self.requests.append(form)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.peers.append((peer[0], peer[1]) if peer else ("", 0))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self._fixed is not None:
            return _reply(*self._fixed)
        form: dict[str, str] = request[_FORM]

        def error(message: str, status: int = 200) -> web.Response:
            return _reply(status, {"result": "error", "message": message}, "")
        if self.accesskey is not None and form.get("accesskey") != self.accesskey:
            return error(f"Invalid IP {request.remote}", 403)
        if form.get("identifier") != self.identifier:
            return error("Invalid or missing credentials")
        if form.get("secret") != self.secret:
            return error("Authentication Failed")
        action = form.get("action", "")
        if action.lower() != "getclients":
            return error(f'Invalid Permissions: API action "{action.lower()}" is not allowed')
        limit = int(form.get("limitnum", "25") or 25)
        clients = [WHMCS_CLIENT][:limit]
        return _reply(200, {
            "result": "success", "totalresults": 2, "startnumber": int(form.get("limitstart", "0") or 0),
            "numreturned": len(clients), "clients": {"client": clients},
        }, "")


class FakeBff(_FakePeer):
    """The BFF's `/health`: JSON with a status and a `checks` object. See the module docstring."""

    def __init__(self, path: str = "/health") -> None:
        super().__init__()
        self.path = path
        self.hits = 0
        self.peers: list[tuple[str, int]] = []
        self.last_headers: dict[str, str] = {}
        self.last_method = ""
        self._status = 200
        self._body: str | bytes | dict[str, Any] = {}
        self._content_type = "application/json"
        self.healthy()

    async def __aenter__(self) -> FakeBff:
        await self.start()
        return self

    def healthy(self) -> None:
        self.answer(200, {"status": "ok", "checks": {"database": {"status": "ok"}, "cache": "ok"}})

    def component_down(self, name: str = "database", value: Any = "fail", status: int = 503) -> None:
        checks: dict[str, Any] = {"database": {"status": "ok"}, "cache": "ok", name: value}
        self.answer(status, {"status": "error", "checks": checks})

    def answer(
        self, status: int, body: str | bytes | dict[str, Any], content_type: str = "application/json"
    ) -> None:
        self._status, self._body, self._content_type = status, body, content_type

    async def _record(self, request: web.Request) -> None:
        self.hits += 1
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.peers.append((peer[0], peer[1]) if peer else ("", 0))
        self.last_headers = dict(request.headers)
        self.last_method = request.method

    async def handle(self, request: web.Request) -> web.StreamResponse:
        return _reply(self._status, self._body, self._content_type)
