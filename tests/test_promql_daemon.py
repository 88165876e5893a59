"""The real daemon's PromQL side, as a process: promtool queries it, and its history survives kill -9.

- Debian's promtool (`promtool query instant|range URL EXPR`) reads the daemon's
  /api/v1/query and /api/v1/query_range and prints the values the history holds, a recording
  rule's series included.
- The incident page's chart draws the firing rule's expression from the history
  (`Daemon.series_window`).
- The history is written to the state directory every `history.save_every` (1 s here): after a
  SIGKILL and a restart the samples from before the kill are still there, and the time the
  daemon was away is a gap, not zeros.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from monitor.history import History
from tests.conftest import require_tool
from tests.daemon_proc import ROOT, DaemonProcess
from tests.fakes import closed_port_url

CONFIG = """\
listen: 127.0.0.1:0
state_dir: {state}
history: {{save_every: 1s}}
checks:
  - {{name: web, type: http, url: "{url}", interval: 1s, timeout: 1s}}
rules:
  - record: job:check_up:sum
    expr: sum(portal_check_up)
  - alert: WebDown
    expr: portal_http_up == 0
    severity: P3
"""


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "alert_rules.yaml"
    path.write_text(CONFIG.format(state=tmp_path / "state", url=closed_port_url() + "/health"))
    return path


async def api(d: DaemonProcess, path: str, **params: str) -> Any:
    async with aiohttp.ClientSession() as s, s.get(d.base + path, params=params,
                                                  timeout=aiohttp.ClientTimeout(total=5)) as r:
        doc = await r.json()
        assert r.status == 200, doc
        return doc["data"]


async def sample_times(d: DaemonProcess, expr: str) -> list[float]:
    """The times of the samples of the one series `expr` selects, from a range selector."""
    result = (await api(d, "/api/v1/query", query=f"{expr}[1h]"))["result"]
    return [float(t) for t, _ in result[0]["values"]] if result else []


async def wait_samples(d: DaemonProcess, expr: str, n: int, timeout: float = 20.0) -> list[float]:
    async with asyncio.timeout(timeout):
        while len(times := await sample_times(d, expr)) < n:
            await asyncio.sleep(0.1)  # polling the live daemon until its checks have run n times
    return times


async def promtool(*args: str) -> str:
    tool = require_tool("promtool", "Debian's promtool (apt install prometheus) queries the daemon")
    proc = await asyncio.create_subprocess_exec(tool, *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, (args, out.decode(), err.decode())
    return out.decode()


async def test_promtool_queries_the_daemon(tmp_path: Path) -> None:
    require_tool("promtool", "Debian's promtool (apt install prometheus) queries the daemon")
    d = await DaemonProcess.start(write_config(tmp_path))
    try:
        times = await wait_samples(d, "portal_http_up", 3)
        out = await promtool("query", "instant", d.base, 'portal_http_up{check="web"}')
        assert re.fullmatch(r'portal_http_up\{check="web"\} => 0 @\[[0-9.]+\]\n', out), out
        out = await promtool("query", "instant", d.base, "job:check_up:sum")
        assert re.fullmatch(r"job:check_up:sum => 0 @\[[0-9.]+\]\n", out), out
        out = await promtool("query", "instant", d.base, "count_over_time(portal_http_up[1h]) >= 3")
        assert re.fullmatch(r'\{check="web"\} => [0-9]+ @\[[0-9.]+\]\n', out), out
        start, end = times[0], times[-1]
        out = await promtool("query", "range", f"--start={start}", f"--end={end}", "--step=1s", d.base,
                             'portal_http_up{check="web"}')
        lines = out.strip().splitlines()
        assert lines[0] == 'portal_http_up{check="web"} =>', out
        points = [re.fullmatch(r"0 @\[([0-9.]+)\]", x) for x in lines[1:]]
        assert all(points) and len(points) == int(end - start) + 1, out
        assert float(points[0].group(1)) == start  # type: ignore[union-attr]
        # `portal-monitor query --url` asks the same API
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "monitor", "query", "--url", d.base, "job:check_up:sum",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT)
        out_b, err_b = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err_b.decode()
        assert re.fullmatch(r"job:check_up:sum => 0 @\[[0-9.]+\]\n", out_b.decode()), out_b
        # the incident page's chart: WebDown's expression over the last hour, from the history
        async with aiohttp.ClientSession() as s, s.get(d.base + "/incidents/1",
                                                      timeout=aiohttp.ClientTimeout(total=5)) as r:
            page = await r.text()
            assert r.status == 200, page[:500]
        drawn = re.findall(r'<polyline [^>]*points="([^"]+)"', page)
        assert drawn and drawn[0].split(), page[page.find("chart") - 200:][:800]
    finally:
        await d.stop()


async def test_history_survives_kill_9_and_the_outage_is_a_gap(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    dump = tmp_path / "state" / "history.msgpack"
    d = await DaemonProcess.start(config)
    try:
        before = await wait_samples(d, "portal_check_runs_total", 4)
        async with asyncio.timeout(20):  # until a dump written every second holds those samples
            while True:
                if dump.exists():
                    saved = History()
                    try:
                        saved.load(dump)
                    except ValueError:
                        saved.clear()  # caught between write and rename: read it again
                    series = [s for s in saved.series() if s.name == "portal_check_runs_total"]
                    if series and len(series[0]) >= 4:
                        break
                await asyncio.sleep(0.1)  # the dump loop writes every second
    finally:
        await d.kill()
    killed_at = time.time()
    saved = History()
    saved.load(dump)  # what the last dump before the kill held: what a restart gets back
    [series] = [s for s in saved.series() if s.name == "portal_check_runs_total"]
    saved_times = [t / 1000 for t in series.times(0, len(series))]
    restarted_at = time.time()
    d = await DaemonProcess.start(config)
    try:
        await d.wait_event("history_restored")
        after = await wait_samples(d, "portal_check_runs_total", len(saved_times) + 2)
    finally:
        await d.stop()
    # every sample the last dump held is back, with nothing invented between them
    assert after[: len(saved_times)] == saved_times
    assert before[:4] == saved_times[:4]
    restarted = [t for t in after if t > killed_at]
    assert restarted, after
    # the outage is a gap: every sample after the restored ones was taken by the restarted
    # daemon, none was filled in for the time it was down (a condition, not a timing margin)
    assert after[len(saved_times):] == restarted, f"a sample inside the outage: {after}"
    assert restarted[0] >= restarted_at - 0.01, f"a sample before the restart: {after}"
    assert killed_at - saved_times[-1] < 3, "the dump was at most about a second old at the kill"
