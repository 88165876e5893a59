"""The dead man's switch pings only while the daemon is healthy, and says so once when it fails."""

from __future__ import annotations

import asyncio

from aiohttp import web
from structlog.testing import capture_logs

from monitor.config.loader import load_config_text
from monitor.heartbeat import Heartbeat, HeartbeatConfig, progressing


async def fake_heartbeat(status: list[int]):
    hits: list[str] = []

    async def ping(request: web.Request) -> web.Response:
        hits.append(request.method)
        return web.Response(status=status[0], text="OK")

    app = web.Application()
    app.router.add_route("*", "/ping/{uuid}", ping)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/ping/5bf66975-d4c7-4bf5-bcc8-b8d8a82ea278", hits


async def test_pings_only_while_progressing_and_ready() -> None:
    status = [200]
    runner, url, hits = await fake_heartbeat(status)
    ticks = {"n": 0}
    ready = {"ok": False}
    beats = asyncio.Event()
    sleeps: list[float] = []
    plan = ["tick", "ready", "tick", "stall", "tick", "fail", "tick"]

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        step = plan.pop(0) if plan else "done"
        if step == "tick":
            ticks["n"] += 1
        elif step == "ready":
            ready["ok"] = True
            ticks["n"] += 1
        elif step == "fail":
            status[0] = 503
            ticks["n"] += 1
        elif step == "done":
            beats.set()
            await asyncio.Event().wait()

    hb = Heartbeat(HeartbeatConfig(url=url, interval="30s", method="POST"), sleep=fake_sleep, wall=lambda: 1234.0)
    with capture_logs() as logs:
        task = asyncio.create_task(hb.run(progressing(lambda: ticks["n"], lambda: ready["ok"])))
        await asyncio.wait_for(beats.wait(), 10)
        task.cancel()
    await runner.cleanup()
    # 8 rounds: not ready, not ready(tick), ready, ready, stalled, ready, failing, failing
    assert sleeps[0] == 30
    assert hits == ["POST"] * (hb.counts["ok"] + hb.counts["failed"])
    assert hb.counts == {"ok": 3, "failed": 2, "skipped": 3}
    assert hb.last_success == 1234.0
    assert [e["event"] for e in logs if e["event"].startswith("heartbeat")] == ["heartbeat_failed"]
    assert "5bf66975" not in str(logs)  # the URL's token is a secret


def test_heartbeat_url_is_a_secret_and_optional() -> None:
    cfg = load_config_text('heartbeat: {url: "https://hc-ping.example/5bf66975-uuid", interval: 1m}\n', env={})
    assert "https://hc-ping.example/5bf66975-uuid" in cfg.secrets
    assert load_config_text("checks: []\n", env={}).root.heartbeat.url == ""
    assert Heartbeat(HeartbeatConfig()).samples() == []
