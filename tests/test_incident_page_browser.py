"""The incident page in a real browser (Playwright driving Debian's headless Chromium), end to end:
a real daemon pages a fake PagerDuty when a disposable Redis dies; the link PagerDuty received
is opened, the person signs in with the API token, taps Acknowledge (PagerDuty gets
`acknowledge`) and Silence 1h (the silence is listed). Screenshots at 1280 and 390 px wide
are kept in tests/artifacts/, and neither width scrolls sideways."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import require_tool
from tests.daemon_proc import DaemonProcess
from tests.fake_receivers import FakePagerDuty
from tests.test_api import ROUTING_KEY, TOKEN, api, daemon_config, start

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
WIDTHS = {"desktop": (1280, 900), "phone": (390, 844)}

playwright_api = pytest.importorskip("playwright.async_api")


def chromium() -> str:
    return require_tool("chromium", "headless Chromium is not installed here (Debian: apt-get install -y chromium)",
                        alternatives=("chromium-browser",))


async def _no_sideways_scroll(page: Any) -> None:
    widths = await page.evaluate(
        "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert widths[0] <= widths[1], f"the page scrolls sideways: content {widths[0]} px in a {widths[1]} px view"


@pytest.fixture
async def pagerduty() -> Any:
    async with FakePagerDuty() as pd:
        yield pd


async def test_from_the_pagerduty_link_to_acknowledge_and_silence(tmp_path: Path, redis_up: Any,
                                                                   pagerduty: Any) -> None:
    binary = chromium()
    ARTIFACTS.mkdir(exist_ok=True)
    d: DaemonProcess = await start(daemon_config(tmp_path, redis_up.url, pagerduty.url), MONITOR_API_TOKEN=TOKEN)
    try:
        # a few pings in the history first, so the cache check's card has a line to draw
        async with asyncio.timeout(30), aiohttp.ClientSession() as s:
            while True:
                async with s.get(d.base + "/api/v1/query",
                                 params={"query": 'count_over_time(portal_redis_ping_seconds{check="cache"}[1h])'}) as r:
                    result = (await r.json())["data"]["result"]
                if result and float(result[0]["value"][1]) >= 3:
                    break
                await asyncio.sleep(0.2)  # polling the daemon's history, bounded above
        redis_up.kill()
        await pagerduty.wait_until(lambda: len(pagerduty.triggers()) == 1, timeout=15)
        (event,) = pagerduty.triggers()
        link = next(x["href"] for x in event["links"] if x["text"].startswith("Incident"))
        assert link.startswith(d.base + "/incidents/"), link  # the page, not raw JSON
        assert event["client_url"] == d.base and event["routing_key"] == ROUTING_KEY

        async with playwright_api.async_playwright() as p:
            browser = await p.chromium.launch(executable_path=binary, args=["--no-sandbox", "--disable-gpu"])
            try:
                for name, (width, height) in WIDTHS.items():
                    context = await browser.new_context(viewport={"width": width, "height": height})
                    page = await context.new_page()
                    await page.goto(link)
                    assert await page.locator("h1").first.inner_text() == "P1 · RedisDown\nfiring" or \
                        "P1 · RedisDown" in await page.locator("h1").first.inner_text()
                    await _no_sideways_scroll(page)
                    # the alert's series over the last hour, from the rules' history
                    assert await page.locator("#chart svg.chart polyline").count() >= 1
                    await page.screenshot(path=str(ARTIFACTS / f"incident-page-{name}.png"), full_page=True)
                    await context.close()

                context = await browser.new_context(viewport={"width": 390, "height": 844})
                page = await context.new_page()
                await page.goto(link)
                await page.get_by_text("Sign in to acknowledge").click()
                await page.get_by_label("API token").fill(TOKEN)
                await page.get_by_label("Your name").fill("alice")
                await page.get_by_role("button", name="Sign in").click()
                await page.wait_for_load_state()
                assert page.url == f"{link}?done=signed-in", await page.content()
                cookies = await context.cookies()
                (session,) = [c for c in cookies if c["name"] == "portal_monitor_session"]
                assert session["httpOnly"] and session["sameSite"] == "Strict" and TOKEN not in session["value"]

                await page.get_by_role("button", name="Acknowledge").click()
                await page.wait_for_url(f"{link}?done=acknowledged")
                assert "acknowledged by alice" in await page.locator("header").inner_text()
                await pagerduty.wait_until(lambda: pagerduty.actions() == ["trigger", "acknowledge"], timeout=15)
                assert pagerduty.alerts == {event["dedup_key"]: "acknowledged"}

                await page.get_by_role("button", name="Silence 1h").click()
                await page.wait_for_url(f"{link}?done=silenced")
                await _no_sideways_scroll(page)
                await page.screenshot(path=str(ARTIFACTS / "incident-page-phone-acted.png"), full_page=True)
                await context.close()
            finally:
                await browser.close()

        # the status page: the firing alert opens this incident; the check cards carry sparklines
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s, s.get(d.base + "/") as r:
            status_page = await r.text()
        assert f'href="/incidents/{event["payload"]["custom_details"]["incident_id"]}">Open the incident' in status_page
        assert 'class="spark"' in status_page

        status, doc = await api(d, "GET", "/api/v1/silences")
        assert status == 200
        (silence,) = doc["silences"]
        assert silence["author"] == "alice" and silence["matchers"]["alertname"] == ["RedisDown"]
        for name in ("desktop", "phone"):
            assert (ARTIFACTS / f"incident-page-{name}.png").stat().st_size > 10_000
    finally:
        assert await d.stop() == 0
