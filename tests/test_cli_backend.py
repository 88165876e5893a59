"""The on-call commands through both backends: one scenario of `incidents` and `silence`
commands, run on a state file (`LocalBackend`) and through a real daemon's API (`--url`,
`RemoteBackend`), prints the same, step by step. The few steps where the two say different
things (the state file names itself, the API answers with an HTTP status) are spelled out.

Both sides start from the same seeded state: incident 1 resolved, incident 2 open and paged
to `oncall` (a PagerDuty on a closed port, so nothing is ever delivered and the daemon changes
nothing by itself). The CLI runs in-process (in a worker thread: the remote backend runs its
own event loop); times that differ between the runs (ack, resolve, silence ends) are masked.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestServer

from monitor.cli.backend import ApiError, Backend, LocalBackend, RemoteBackend
from monitor.cli.main import main
from monitor.config.loader import load_config
from monitor.incidents.lifecycle import Incidents
from monitor.model import Transition
from monitor.statedb import open_db
from tests.daemon_proc import DaemonProcess, clean_env
from tests.fakes import closed_port_url
from tests.incident_helpers import KEY, alert

TOKEN = "t0ken-0123456789abcdef-CLI"

# One step: the command line, then None when both backends print the same, else what each
# prints: (exit status, stderr) locally and through the API ({url} and {state} filled in).
Step = tuple[tuple[str, ...], dict[str, tuple[int, str]] | None]

SCENARIO: list[Step] = [
    (("incidents", "list"), None),
    (("incidents", "list", "--all"), None),
    (("incidents", "show", "2"), None),
    (("incidents", "show", "2", "--json"), None),
    (("incidents", "ack", "2", "--who", "alice"), None),
    (("incidents", "ack", "2", "--who", "alice"), None),  # again: nothing more to queue
    (("incidents", "list"), None),
    (("silence", "list"), None),
    (("silence", "add", "alertname=DiskFull", "host=a|b", "--duration", "2h", "--comment", "disk swap",
      "--who", "bob"), None),
    (("silence", "add", "alertname=Backup", "--duration", "+30m", "--start", "1h", "--comment", "later",
      "--who", "bob"), None),
    (("silence", "list"), None),
    (("silence", "list", "--all", "--json"), None),
    (("silence", "expire", "1"), None),
    (("silence", "list", "--all"), None),
    (("silence", "expire", "1"), {
        "local": (1, "silence 1: not found or already expired"),
        "remote": (1, "silence 1: already expired"),
    }),
    (("silence", "expire", "7"), {
        "local": (1, "silence 7: not found or already expired"),
        "remote": (1, "portal-monitor silence expire: DELETE {url}/api/v1/silences/7: HTTP 404: "
                      "silence 7 does not exist"),
    }),
    (("incidents", "resolve", "2", "--who", "alice"), None),
    (("incidents", "resolve", "2", "--who", "alice"), {
        "local": (1, "incident 2: incident 2 is already resolved; cannot resolve it"),
        "remote": (1, "portal-monitor incidents resolve: POST {url}/api/v1/incidents/2/resolve: HTTP 409: "
                      "incident 2 is already resolved; cannot resolve it"),
    }),
    (("incidents", "ack", "2", "--who", "alice"), {
        "local": (1, "incident 2: incident 2 is already resolved; cannot acknowledge it"),
        "remote": (1, "portal-monitor incidents ack: POST {url}/api/v1/incidents/2/ack: HTTP 409: "
                      "incident 2 is already resolved; cannot acknowledge it"),
    }),
    (("incidents", "show", "2"), None),
    (("incidents", "show", "2", "--json"), None),
    (("incidents", "list"), None),
    (("incidents", "list", "--all", "--json"), None),
    (("incidents", "show", "99"), {
        "local": (1, "incident 99 not found in {state}"),
        "remote": (1, "portal-monitor incidents show: GET {url}/api/v1/incidents/99: HTTP 404: "
                      "incident 99 does not exist"),
    }),
    (("incidents", "review", "2"), {
        "local": (0, ""),
        "remote": (2, "portal-monitor incidents review: run it where the daemon's state_dir is (without --url)"),
    }),
    (("silence", "add", "alertname=X", "--duration", "soon", "--comment", "x", "--who", "bob"), {
        "local": (2, "portal-monitor silence add: 'soon' is neither a time (2025-12-01T18:00:00Z) "
                     "nor a duration (2h)"),
        "remote": (1, "portal-monitor silence add: POST {url}/api/v1/silences: HTTP 400: 'soon' is neither a time "
                      "(2025-12-01T18:00:00Z) nor a duration (2h)"),
    }),
    (("silence", "add", "alertname=X", "--duration", "2020-01-01T00:00:00Z", "--comment", "x", "--who", "bob"), {
        "local": (1, "portal-monitor silence add: silence ends at 2020-01-01T00:00:00.000000+00:00, not after its "
                     "start <t> and now <t>"),
        "remote": (1, "portal-monitor silence add: POST {url}/api/v1/silences: HTTP 400: silence ends at "
                      "2020-01-01T00:00:00.000000+00:00, not after its start <t> and now <t>"),
    }),
    # Usage mistakes are caught before either backend is asked.
    (("incidents", "ack"), None),
    (("silence", "expire", "x"), None),
    (("silence", "add", "alertname=X", "--who", "bob"), None),
    (("silence", "add", "alertname", "--comment", "x"), None),
    (("silence", "add", "--comment", "x"), None),
]

ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00")
SHOWN = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


def seeded(root: Path, now: datetime) -> Path:
    """A config whose state file holds incident 1 (resolved by bob) and incident 2 (open), fired
    three and two days (and a minute) before `now`: their ages print as 3d0h and 2d0h for an hour."""
    root.mkdir()
    path = root / "alert_rules.yaml"
    path.write_text(f"""\
listen: 127.0.0.1:0
state_dir: {root / 'state'}
checks:
  - {{name: self, type: process, cmdline: "monitor run", interval: 10s}}
rules:
  - {{alert: RedisDown, expr: "portal_redis_up == 0", severity: P1}}
receivers:
  oncall: {{type: pagerduty, routing_key: "{KEY}", url: "{closed_port_url('/v2/enqueue')}", timeout: 2s}}
escalation:
  - {{level: L1, after: 0s, severities: [P1, P2, P3, P4], receivers: [oncall]}}
""")
    cfg = load_config(path, env={})
    conn = open_db(cfg.root.state_dir)
    inc = Incidents(conn, cfg)
    for check, fired in (("db", now - timedelta(days=3, minutes=1)), ("cache", now - timedelta(days=2, minutes=1))):
        a = alert("RedisDown", "P1", check=check)
        inc.update([a], [Transition(a, "firing", fired, fired)], now)  # paged at `now`: no page expires unsent
    inc.resolve(1, "bob", now)
    conn.close()
    return path


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """`portal-monitor ARGV` in this process: (exit status, stdout, stderr)."""
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)  # --json writes to .buffer
    err = io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main(argv)
    assert isinstance(out.buffer, io.BytesIO)
    return rc, out.buffer.getvalue().decode(), err.getvalue()


def messages(err: str) -> str:
    """stderr without log events: on the state file the daemon's own code runs in the CLI and
    logs what it logs at warning (`incident_resolved`); the daemon logs that in its own log."""
    return "".join(line for line in err.splitlines(keepends=True) if not line.startswith('{"'))


def mask(text: str) -> str:
    return SHOWN.sub("<t>", ISO.sub("<t>", text))


def normalise(out: str) -> str:
    """Mask the times that differ between two runs; JSON loses what only the daemon changes
    (delivery attempts to the closed port) and what only the state file adds (a list's empty
    timeline and deliveries, which the API leaves out)."""
    text = mask(out)
    try:
        doc = json.loads(text)
    except ValueError:
        return text
    for d in doc if isinstance(doc, list) else [doc]:
        if "deliveries" in d and "timeline" in d and not d["timeline"] and not d["deliveries"]:
            del d["timeline"], d["deliveries"]
        if "deliveries" in d:
            d["deliveries"] = [(x["receiver"], x["kind"]) for x in d["deliveries"]]
    return json.dumps(doc, indent=2)


def transcript(config: Path | None, url: str | None) -> list[tuple[int, str, str]]:
    where = ["-c", str(config)] if config else ["--url", url or ""]
    return [run_cli([*argv, *where]) for argv, _ in SCENARIO]


@pytest.fixture
def quiet_structlog() -> Iterator[None]:
    """The local commands configure logging for the process, as the CLI does: undo it after."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


async def test_the_same_scenario_prints_the_same_through_both_backends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quiet_structlog: None
) -> None:
    now = datetime.now(UTC)
    local_cfg, remote_cfg = seeded(tmp_path / "local", now), seeded(tmp_path / "remote", now)
    monkeypatch.setenv("MONITOR_API_TOKEN", TOKEN)
    d = await DaemonProcess.start(remote_cfg, env=clean_env(MONITOR_API_TOKEN=TOKEN))
    try:
        await d.wait_ready()
        remote = await asyncio.to_thread(transcript, None, d.base)
    finally:
        assert await d.stop() == 0
    local = await asyncio.to_thread(transcript, local_cfg, None)

    fill = {"url": d.base, "state": str(tmp_path / "local" / "state")}
    for (argv, differs), mine, theirs in zip(SCENARIO, local, remote, strict=True):
        step = " ".join(argv)
        if differs is None:
            assert (mine[0], normalise(mine[1]), messages(mine[2])) == \
                (theirs[0], normalise(theirs[1]), messages(theirs[2])), \
                f"{step}\n--- local:\n{mine[1]}{mine[2]}--- remote:\n{theirs[1]}{theirs[2]}"
            continue
        for (rc, out, err), side in ((mine, "local"), (theirs, "remote")):
            want_rc, want_err = differs[side]
            assert (rc, mask(messages(err).strip())) == (want_rc, mask(want_err.format(**fill))), \
                (side, step)
            assert out == "" or rc == 0, (side, step)

    # What they print (the same on both sides, so the local side stands for both).
    out = [o for _, o, _ in local]
    assert out[0] == "#2     P1  open     L1     2d0h  not acked              RedisDown: RedisDown on cache\n"
    assert out[1].splitlines()[1] == \
        "#1     P1  resolved L1     3d0h  resolved               RedisDown: RedisDown on db"
    assert out[4] == "incident 2 acknowledged by alice; 1 notification queued (the running daemon delivers " \
        "within seconds)\n"
    assert out[5] == "incident 2 acknowledged by alice\n"  # acked twice: nothing more queued
    assert "acked by alice" in out[6]
    assert re.fullmatch(r"silence 1 added until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\n", out[8])
    assert out[10] == "silence 1 (alertname=DiskFull, host=a|b; bob: disk swap)\n"  # 2 starts in an hour
    assert [s["id"] for s in json.loads(out[11])] == [2, 1]
    assert out[12] == "silence 1 expired\n"
    assert out[13].splitlines() == ["silence 2 (alertname=Backup; bob: later)",
                                    "silence 1 (alertname=DiskFull, host=a|b; bob: disk swap)"]
    assert out[16].startswith("incident 2 resolved by alice; 1 notification queued")
    assert [line.split(maxsplit=3)[2:] for line in out[19].splitlines()[-3:]] == [
        ["acknowledged", "acknowledged by alice"], ["resolved", "resolved by alice"],
        ["note", "resolved by hand: while the alert keeps firing it will not re-open; once it has cleared, "
                 "a new firing is a new incident"]]
    assert out[21] == "no open incidents\n"
    assert "RedisDown" in out[24] and "Timeline" in out[24]


async def test_both_backends_read_the_same_values_from_one_state_file(tmp_path: Path) -> None:
    """The daemon's state file read directly and through its API: the same dicts."""
    path = seeded(tmp_path / "one", datetime.now(UTC))
    d = await DaemonProcess.start(path, env=clean_env(MONITOR_API_TOKEN=TOKEN))
    try:
        await d.wait_ready()
        remote = RemoteBackend(d.base, token=TOKEN)
        local = LocalBackend(load_config(path, env={}))

        def read(b: Backend) -> dict[str, Any]:
            one = b.incident(2)
            for row in one["deliveries"]:  # the daemon keeps retrying the closed port meanwhile
                del row["attempts"], row["last_error"]
            return {"open": b.incidents(include_resolved=False), "one": one,
                    "silences": b.silences(include_expired=True)}

        try:
            made = await asyncio.to_thread(remote.add_silence, {"alertname": "DiskFull"}, until="1h", start=None,
                                           author="bob", comment="disk")
            assert made == local.silences(include_expired=False)[0]
            mine, theirs = read(local), await asyncio.to_thread(read, remote)
        finally:
            local.close()
    finally:
        assert await d.stop() == 0
    assert [{k: v for k, v in row.items() if k not in ("timeline", "deliveries")} for row in mine["open"]] \
        == theirs["open"]
    assert mine["one"] == theirs["one"] and mine["silences"] == theirs["silences"]
    assert mine["one"]["timeline"] and mine["one"]["deliveries"]


async def test_remote_backend_keeps_its_timeout() -> None:
    """A daemon that never answers: one line naming the call and the timeout."""
    hang = asyncio.Event()

    async def never(request: web.Request) -> web.Response:
        await hang.wait()
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/api/v1/incidents", never)
    async with TestServer(app, host="127.0.0.1") as server:
        url = f"http://127.0.0.1:{server.port}"
        backend = RemoteBackend(url, timeout_s=0.2)
        with pytest.raises(ApiError) as e:
            await asyncio.to_thread(backend.incidents, include_resolved=False)
        hang.set()
    assert str(e.value) == f"GET {url}/api/v1/incidents: no reply within 0.2s"
