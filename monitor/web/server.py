"""The HTTP side: /metrics, /-/healthy, /-/ready, and (with an `Api`) the status page, the JSON
API and /-/reload. Started inside our own loop (AppRunner)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Handler

if TYPE_CHECKING:
    from monitor.web.api import Api


def split_listen(listen: str) -> tuple[str, int]:
    """`127.0.0.1:9820`, `[::1]:9820`, `:9820` (all interfaces) → (host, port)."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    return (host or "0.0.0.0"), int(port)


def build_app(metrics: Handler, *, ready: Callable[[], bool] = lambda: True, api: Api | None = None) -> web.Application:
    """The app; `api` adds `/`, `/api/v1/*`, `/-/reload` and the auth middleware (also for /metrics)."""
    app = web.Application()

    async def healthy(request: web.Request) -> web.Response:
        return web.Response(text="portal-monitor is healthy\n")

    async def is_ready(request: web.Request) -> web.Response:
        if ready():
            return web.Response(text="portal-monitor is ready\n")
        return web.Response(status=503, text="portal-monitor is starting: first round of checks not done\n")

    app.router.add_get("/metrics", metrics)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", is_ready)
    if api is not None:
        api.install(app)
    return app


async def start_server(app: web.Application, listen: str) -> web.AppRunner:
    """Bind `listen` and serve; the caller owns `runner.cleanup()`."""
    host, port = split_listen(listen)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise OSError(f"listen {listen}: cannot bind: {e.strerror or e}") from e
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The port actually bound (for `listen: 127.0.0.1:0` in tests)."""
    for addr in runner.addresses:
        if isinstance(addr, tuple):
            return int(addr[1])
    raise RuntimeError("server is not listening")
