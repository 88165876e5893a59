"""The log check against a real Node BFF, rotated by real logrotate: nothing lost, nothing twice.

A real Express BFF (`tests/e2e_node/bff.js`) logs every request through real winston (the
BFF's request logger) or real pino-http, and counts what it logged (`GET /__counts`: the
ground truth). It is driven on loopback with a known mix (5xx, slow requests, failed logins
from a few clients behind X-Forwarded-For, 10,500 requests per BFF) while logrotate rotates
its log: copytruncate under load; create, then a restart; create with a SIGHUP reopen under
load; and a copytruncate after which the file grows back past its old size before the
check reads again (the check then reads only at its runs, as without inotify).

The check follows the file as the daemon does (`watch`, inotify). At the end every metric
must equal the server's own count: requests by status class, lines by level, every
histogram bucket, the sum, p95 within 2%, failed logins and the most from one client. The
only lines that may be missing are those logrotate destroyed itself (written between its
copy and its truncate, and not read in that instant): the test finds them (lines the server
logged that are in no file), reports them, and then checks the bounds instead.
`once --json` on the same file reports the same window figures as the daemon.
"""

from __future__ import annotations

import asyncio
import math
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from checks.logfile.check import DURATION_BUCKETS, Config, LogfileCheck
from monitor.model import CheckContext, MemoryState, Sample
from tests.conftest import require_tool, running_in_ci
from tests.servers import free_port

NODE_DIR = Path(__file__).resolve().parent / "e2e_node"
ROOT = NODE_DIR.parent.parent
REQUESTS = 10_500  # per BFF: 21,000 in all
PINO_LEVELS = {"30": "info", "40": "warn", "50": "error"}


@pytest.fixture(scope="module")
def node() -> str:
    node = require_tool("node", "node is not installed (apt-get install nodejs npm)")
    npm = require_tool("npm", "npm is not installed (apt-get install npm)")
    require_tool("logrotate", "logrotate is not installed (apt-get install logrotate)", path="/usr/sbin:/sbin:/usr/bin")
    if not (NODE_DIR / "node_modules").is_dir():
        r = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, capture_output=True, text=True, timeout=600
        )
        if r.returncode != 0:
            msg = f"npm ci in {NODE_DIR} failed: {r.stderr[-2000:]}"
            pytest.fail(msg) if running_in_ci() else pytest.skip(msg)
    return node


# --- the BFF and its traffic ------------------------------------------------------------------


class Bff:
    """The BFF process (restartable); `totals` adds up what each process logged."""

    def __init__(self, node: str, kind: str, log: Path) -> None:
        self.node, self.kind, self.log = node, kind, log
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: asyncio.subprocess.Process | None = None
        self.records: list[list[Any]] = []  # [rid, level, status, ms, client] of every line logged

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            self.node,
            str(NODE_DIR / "bff.js"),
            self.kind,
            str(self.log),
            str(self.port),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        async with asyncio.timeout(30):
            line = await self.proc.stdout.readline()
        assert line.startswith(b"ready"), f"bff.js {self.kind} did not start: {line!r}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def counts(self, session: aiohttp.ClientSession) -> dict[str, Any]:
        async with session.get(f"{self.base}/__counts", timeout=aiohttp.ClientTimeout(total=10)) as r:
            assert r.status == 200
            return dict(await r.json())

    async def stop(self, session: aiohttp.ClientSession) -> None:
        """SIGTERM, after adding this process's counts to the totals."""
        self.records += (await self.counts(session))["records"]
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            await self.proc.wait()
        self.proc = None


class Traffic:
    """Requests of the known mix, sent by another process (`tests/e2e_traffic.py`)."""

    def __init__(self, bff: Bff) -> None:
        self.bff = bff
        self.sent = 0

    async def send(self, n: int, *, at: int | None = None, then: Callable[[], Awaitable[None]] | None = None) -> None:
        """`n` requests; after `at` of them, `then()` runs while the rest keep coming."""
        args = [self.bff.base, str(self.sent), str(n)] + ([str(at)] if at is not None else [])
        self.sent += n
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.e2e_traffic",
            *args,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stderr is not None
        async with asyncio.timeout(180):
            if then is not None:
                assert await proc.stdout.readline() == b"reached\n", (await proc.stderr.read()).decode()
                await then()
            out, err = await proc.communicate()
        assert proc.returncode == 0 and out.endswith(b"done\n"), err.decode()[-2000:]


async def logrotate(tmp: Path, log: Path, how: str) -> None:
    conf = tmp / "logrotate.conf"
    conf.write_text(f"{log} {{\n  {how}\n  rotate 50\n  nocompress\n  missingok\n}}\n")
    exe = require_tool("logrotate", "logrotate is not installed", path="/usr/sbin:/sbin:/usr/bin")
    proc = await asyncio.create_subprocess_exec(
        exe,
        "-f",
        "-s",
        str(tmp / "logrotate.state"),
        str(conf),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode == 0, f"logrotate ({how}) failed: {err.decode()}"


# --- comparing -----------------------------------------------------------------------------------


def get(samples: list[Sample], name: str, **labels: str) -> float:
    found = [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, f"{name}{labels}: {found}"
    return found[0]


def rids_on_disk(tmp: Path) -> Counter[int]:
    """The request ids of every line in the log and its rotations, as they are on disk."""
    rids: Counter[int] = Counter()
    for f in sorted(tmp.glob("combined.log*")):
        for line in f.read_bytes().splitlines():
            doc = orjson.loads(line)
            url = doc.get("url") or (doc.get("req") or {}).get("url") or ""
            if "rid=" in url:
                rids[int(url.split("rid=")[1].split("&")[0])] += 1
    return rids


def expected(records: list[list[Any]]) -> dict[str, Any]:
    """The metrics these logged lines must give (computed here, not by the check's code)."""
    levels = Counter(PINO_LEVELS.get(str(r[1]), str(r[1])) for r in records)
    statuses = [r[2] for r in records if r[2] is not None]
    seconds = sorted(r[3] * 0.001 for r in records if r[3] is not None)
    failures = Counter(r[4] for r in records if r[2] in (401, 403) and r[4] is not None)
    return {
        "lines": len(records),
        "classes": {f"{c}xx": sum(1 for s in statuses if s // 100 == c) for c in range(1, 6)},
        "levels": {lv: levels[lv] for lv in ("info", "warn", "error")},
        "buckets": {repr(le): sum(1 for s in seconds if s <= le) for le in DURATION_BUCKETS},
        "count": len(seconds),
        "sum": math.fsum(seconds),
        "p95": seconds[math.ceil(0.95 * len(seconds)) - 1],
        "auth_failures": sum(failures.values()),
        "max_per_source": max(failures.values()),
    }


def measured(samples: list[Sample]) -> dict[str, Any]:
    return {
        "lines": get(samples, "portal_log_window_lines"),
        "classes": {f"{c}xx": get(samples, "portal_log_requests_total", status_class=f"{c}xx") for c in range(1, 6)},
        "levels": {lv: get(samples, "portal_log_lines_total", level=lv) for lv in ("info", "warn", "error")},
        "buckets": {
            repr(le): get(samples, "portal_log_request_duration_seconds_bucket", le=repr(le)) for le in DURATION_BUCKETS
        },
        "count": get(samples, "portal_log_request_duration_seconds_count"),
        "sum": get(samples, "portal_log_request_duration_seconds_sum"),
        "p95": get(samples, "portal_log_response_seconds_p95"),
        "auth_failures": get(samples, "portal_log_auth_failures"),
        "max_per_source": get(samples, "portal_log_auth_failures_max_per_source"),
    }


def window_figures(samples: list[Sample]) -> dict[str, float]:
    names = (
        "portal_log_window_lines",
        "portal_log_error_ratio",
        "portal_log_response_seconds_avg",
        "portal_log_response_seconds_p95",
        "portal_log_auth_failures",
        "portal_log_auth_failures_max_per_source",
    )
    return {n: get(samples, n) for n in names}


async def once_json(tmp: Path, kind: str, log: Path) -> list[Sample]:
    cfg = tmp / "once.yaml"
    cfg.write_text(
        f"listen: 127.0.0.1:0\nstate_dir: {tmp / 'state'}\nchecks:\n"
        f"  - {{name: bff_logs, type: logfile, paths: [{log}], preset: {kind}}}\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "monitor",
        "once",
        "--json",
        "-c",
        str(cfg),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    doc = orjson.loads(out)
    (check,) = [c for c in doc["checks"] if c["check"] == "bff_logs"]
    assert check["up"], f"once: {check} {err.decode()[-2000:]}"
    return [Sample(s["name"], s["labels"], s["value"]) for s in check["samples"]]


# --- the test --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["winston", "pino"])
async def test_real_bff_rotated_by_logrotate_every_metric_equals_the_servers_count(
    tmp_path: Path, node: str, kind: str
) -> None:
    log = tmp_path / "combined.log"
    cfg = Config.model_validate({"name": "bff_logs", "type": "logfile", "paths": [str(log)], "preset": kind})
    check = LogfileCheck(cfg, CheckContext(interval_s=5.0, timeout_s=10.0, state=MemoryState(), now=time.time))
    watch = asyncio.create_task(check.watch(lambda: None))  # as the scheduler runs it
    bff = Bff(node, kind, log)
    await bff.start()
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        traffic = Traffic(bff)
        try:
            # 1. plain traffic; `once --json` on the same file sees the same window
            await traffic.send(1500)
            await bff.counts(session)  # every line of it is written now (sync writes, before the reply)
            daemon = window_figures(await check.collect())
            once = window_figures(await once_json(tmp_path, kind, log))
            assert once == pytest.approx(daemon, rel=1e-9), "once --json and the daemon disagree"
            assert daemon["portal_log_window_lines"] == 1501  # the start line and 1500 requests

            # 2. copytruncate under load
            await traffic.send(2500, at=1000, then=lambda: logrotate(tmp_path, log, "copytruncate"))
            # 3. create, the BFF still writing to the renamed file, then a restart
            await traffic.send(2000, at=800, then=lambda: logrotate(tmp_path, log, "create"))
            await bff.stop(session)
            await bff.start()
            # 4. create and a SIGHUP reopen, under load
            hup = f"create\n  postrotate\n    /bin/kill -HUP {bff.pid}\n  endscript"
            await traffic.send(2500, at=1000, then=lambda: logrotate(tmp_path, log, hup))
            # 5. copytruncate, and the file grows back past its old size before the next read
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
            await bff.counts(session)
            await check.collect()
            await traffic.send(200)  # not read before the rotation: only in the copy
            await logrotate(tmp_path, log, "copytruncate")
            old_size = (tmp_path / "combined.log.1").stat().st_size
            grown = 0
            while log.stat().st_size <= old_size:
                await traffic.send(200)
                grown += 200
                assert grown <= 6000, "the log does not grow"
            await bff.counts(session)
            assert log.stat().st_size > old_size
            await check.collect()  # the fingerprint tells; the copy is read from our offset
            watch = asyncio.create_task(check.watch(lambda: None))
            # 6. the rest of the 10,500 requests
            await traffic.send(REQUESTS - traffic.sent)
            await bff.stop(session)
            samples = await check.collect()
        finally:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
            if bff.proc is not None:
                bff.proc.kill()
                await bff.proc.wait()
            await check.aclose()
    elapsed = time.monotonic() - started

    logged = bff.records
    assert traffic.sent == REQUESTS and sum(1 for r in logged if r[0] is not None) == REQUESTS
    on_disk = rids_on_disk(tmp_path)
    assert all(n == 1 for n in on_disk.values()), "a request logged twice"
    # logged, and in no file: written between logrotate's copy and its truncate
    destroyed = {r[0] for r in logged if r[0] is not None and r[0] not in on_disk}
    rotations = {
        k: get(samples, "portal_logfile_rotations_total", kind=k) for k in ("rename", "copytruncate", "truncate")
    }
    got = measured(samples)
    unread = len(logged) - got["lines"]  # lines the check never counted
    print(
        f"\n{kind}: {REQUESTS} requests, {len(logged)} lines logged, {elapsed:.1f}s; rotations {rotations}; "
        f"lines destroyed by logrotate between its copy and its truncate: {len(destroyed)} "
        f"(read before the truncate anyway: {len(destroyed) - unread}); "
        f"lost bytes counted: {get(samples, 'portal_logfile_lost_bytes_total'):.0f}"
    )
    assert rotations == {"rename": 2, "copytruncate": 2, "truncate": 0}
    assert all(get(samples, "portal_log_parse_errors_total", reason=r) == 0 for r in ("not_json", "not_object"))
    assert 0 <= unread <= len(destroyed), "a line lost that is in a file, or a line counted twice"
    if unread in (0, len(destroyed)):  # none of them read, or all: the expected figures are exact
        want = expected([r for r in logged if unread == 0 or r[0] not in destroyed])
        p95 = got.pop("p95")
        assert p95 == pytest.approx(want.pop("p95"), rel=0.0201)
        assert got.pop("sum") == pytest.approx(want.pop("sum"), rel=1e-9)
        assert got == want
    else:  # some read before the truncate, some not: bounded by both
        low, high = expected([r for r in logged if r[0] not in destroyed]), expected(logged)
        for key in ("classes", "levels", "buckets"):
            for k in low[key]:
                assert low[key][k] <= got[key][k] <= high[key][k], (key, k)
        for key in ("lines", "count", "auth_failures"):
            assert low[key] <= got[key] <= high[key], key
