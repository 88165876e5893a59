"""sd_notify over a real unix datagram socket, the progress-gated watchdog, and the unit file.

The notify tests bind the socket systemd would (a path, or an abstract name) and read the
datagrams the daemon sends. The watchdog loop runs with an injected sleep and clock, so no test
waits for time to pass. The unit file is checked with `systemd-analyze` where it is installed
(Debian package `systemd`), and skipped, saying so, where it is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
import yaml
from structlog.testing import capture_logs

import monitor.daemon
from monitor.config.loader import interpolate, load_config
from monitor.model import Sample
from monitor.scheduler import Scheduler
from monitor.store import Store
from monitor.systemd import (
    MAX_STATUS_CHARS,
    Notifier,
    socket_address,
    status_loop,
    status_summary,
    watchdog_loop,
)
from tests.conftest import require_tool

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "portal-monitor.service"
ENV_FILE = REPO / "systemd" / "portal-monitor.env"
RULES = REPO / "alert_rules.yaml"
EXEC_START = "/opt/portal-monitor/venv/bin/portal-monitor"


# ---------------------------------------------------------------------- a systemd stand-in


class NotifySocket:
    """The receiving end systemd would hold: a bound AF_UNIX datagram socket."""

    def __init__(self, address: str | bytes, env_value: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(5)  # a datagram we expect is already queued; this only bounds a bug
        self.env_value = env_value

    def env(self, **extra: str) -> dict[str, str]:
        return {"NOTIFY_SOCKET": self.env_value, **extra}

    def recv(self) -> str:
        return self.sock.recv(4096).decode()

    def pending(self) -> list[str]:
        """Every datagram already queued, without waiting."""
        out = []
        self.sock.setblocking(False)
        try:
            while True:
                out.append(self.sock.recv(4096).decode())
        except BlockingIOError:
            pass
        finally:
            self.sock.settimeout(5)
        return out


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    # AF_UNIX paths are limited to 108 bytes: a short directory, not pytest's long tmp_path.
    workdir = Path(tempfile.mkdtemp(prefix="pm-notify-"))
    path = str(workdir / "notify.sock")
    ns = NotifySocket(path, path)
    try:
        yield ns
    finally:
        ns.sock.close()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def abstract_socket() -> Iterator[NotifySocket]:
    name = f"portal-monitor-test-{uuid.uuid4().hex}"
    ns = NotifySocket(b"\0" + name.encode(), "@" + name)
    try:
        yield ns
    finally:
        ns.sock.close()


# ---------------------------------------------------------------------- messages


def _life_cycle(notifier: Notifier) -> None:
    assert notifier.ready()
    assert notifier.status("5 checks: 4 up, 1 down; 0 open incidents")
    assert notifier.reloading()
    assert notifier.ready()
    assert notifier.stopping()


def test_messages_arrive_in_order_on_a_path_socket(notify_socket: NotifySocket) -> None:
    notifier = Notifier(notify_socket.env(), monotonic_usec=lambda: 123456789)
    _life_cycle(notifier)
    assert notify_socket.pending() == [
        "READY=1",
        "STATUS=5 checks: 4 up, 1 down; 0 open incidents",
        "RELOADING=1\nMONOTONIC_USEC=123456789",
        "READY=1",
        "STOPPING=1",
    ]
    notifier.close()


def test_messages_arrive_on_an_abstract_socket(abstract_socket: NotifySocket) -> None:
    """`NOTIFY_SOCKET=@name` is the Linux abstract namespace, as systemd hands it to services."""
    notifier = Notifier(abstract_socket.env(), monotonic_usec=lambda: 42)
    _life_cycle(notifier)
    assert abstract_socket.pending() == [
        "READY=1",
        "STATUS=5 checks: 4 up, 1 down; 0 open incidents",
        "RELOADING=1\nMONOTONIC_USEC=42",
        "READY=1",
        "STOPPING=1",
    ]
    notifier.close()


def test_reloading_carries_the_real_monotonic_clock(notify_socket: NotifySocket) -> None:
    """systemd compares MONOTONIC_USEC with CLOCK_MONOTONIC: the default must be that clock, in µs."""
    notifier = Notifier(notify_socket.env())
    before = time.monotonic_ns() // 1000
    notifier.reloading()
    after = time.monotonic_ns() // 1000
    lines = notify_socket.recv().split("\n")
    assert lines[0] == "RELOADING=1"
    key, _, value = lines[1].partition("=")
    assert key == "MONOTONIC_USEC" and before <= int(value) <= after
    notifier.close()


def test_status_is_one_bounded_line(notify_socket: NotifySocket) -> None:
    notifier = Notifier(notify_socket.env())
    notifier.status("2 checks: 1 up,\n1 down;\r\n  0 open incidents\n")
    assert notify_socket.recv() == "STATUS=2 checks: 1 up, 1 down; 0 open incidents"
    notifier.status("x" * 10_000)
    assert notify_socket.recv() == "STATUS=" + "x" * MAX_STATUS_CHARS
    notifier.close()


def test_status_summary_wording() -> None:
    assert status_summary(4, 1, 0) == "5 checks: 4 up, 1 down; 0 open incidents"
    assert status_summary(1, 0, 1) == "1 check: 1 up, 0 down; 1 open incident"
    assert status_summary(3, 2, 2, disabled=1) == "5 checks: 3 up, 2 down, 1 disabled; 2 open incidents"
    assert status_summary(0, 0, 0, pending=5) == "5 checks: 0 up, 0 down, 5 pending; 0 open incidents"


def test_watchdog_message(notify_socket: NotifySocket) -> None:
    notifier = Notifier(notify_socket.env())
    notifier.watchdog()
    assert notify_socket.recv() == "WATCHDOG=1"
    notifier.close()


# ---------------------------------------------------------------------- without systemd


async def test_nothing_is_sent_and_nothing_raised_without_notify_socket() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    for call in (notifier.ready, notifier.reloading, notifier.stopping, notifier.watchdog):
        assert call() is False
    assert notifier.status("x") is False
    assert notifier._sock is None  # not even a socket was opened
    assert notifier.watchdog_interval() is None

    def progress() -> int:
        raise AssertionError("progress must not be polled without a watchdog")

    async def sleep(_: float) -> None:
        raise AssertionError("the loops must return at once without NOTIFY_SOCKET")

    await watchdog_loop(notifier, progress, sleep=sleep)
    await status_loop(notifier, lambda: "x", sleep=sleep)


def test_default_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not Notifier().enabled
    monkeypatch.setenv("NOTIFY_SOCKET", "@x")
    assert Notifier().enabled


def test_socket_addresses() -> None:
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@abc") == b"\0abc"
    for unusable in ("", "@", "relative/path", "vsock:2:1234"):
        assert socket_address(unusable) is None


def test_unusable_socket_value_is_logged_and_ignored() -> None:
    with capture_logs() as logs:
        notifier = Notifier({"NOTIFY_SOCKET": "vsock:2:1234"})
        assert notifier.ready() is False
    assert [e["event"] for e in logs] == ["sd_notify_unsupported_socket"]


def test_send_errors_never_raise_and_are_logged_once() -> None:
    missing = f"/nonexistent-{uuid.uuid4().hex}/notify.sock"
    notifier = Notifier({"NOTIFY_SOCKET": missing})
    with capture_logs() as logs:
        for _ in range(3):
            assert notifier.ready() is False
            assert notifier.watchdog() is False
    assert notifier.errors == 6
    assert [e["event"] for e in logs] == ["sd_notify_failed"]
    assert logs[0]["notify_socket"] == missing and "FileNotFoundError" in logs[0]["error"]
    notifier.close()


def test_a_manager_that_stops_reading_never_blocks_the_sender(notify_socket: NotifySocket) -> None:
    """The socket is non-blocking: a full receive queue fails the send instead of stalling the loop."""
    notifier = Notifier(notify_socket.env())
    results: list[bool] = []

    def flood() -> None:
        results.extend(notifier.status("y" * 400) for _ in range(20_000))  # the queue holds far fewer

    # in a thread, so that a blocking send fails this test instead of hanging the suite
    worker = threading.Thread(target=flood, daemon=True)
    with capture_logs():
        worker.start()
        worker.join(timeout=30)
    assert not worker.is_alive(), "a send blocked on the full queue"
    assert results[0] is True and results[-1] is False
    assert notifier.errors > 0
    notifier.close()


# ---------------------------------------------------------------------- watchdog interval


@pytest.mark.parametrize(
    ("env", "pid", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 100, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "100"}, 100, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "101"}, 100, None),  # meant for another process
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "x"}, 100, None),
        ({"WATCHDOG_USEC": "0"}, 100, None),
        ({"WATCHDOG_USEC": "soon"}, 100, None),
        ({}, 100, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], pid: int, expected: float | None) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": "@unused", **env}, pid=lambda: pid)
    assert notifier.watchdog_interval() == expected


# ---------------------------------------------------------------------- watchdog loop


class _Stop(Exception):
    pass


class FakeTime:
    """An injected sleep that advances an injected clock and runs a script of progress steps."""

    def __init__(self, steps: list[int]) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.steps = list(steps)  # how much progress() advances during each sleep
        self.progress = 0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        if not self.steps:
            raise _Stop
        self.sleeps.append(seconds)
        self.now += seconds
        self.progress += self.steps.pop(0)


async def test_watchdog_pings_only_while_progress_advances(notify_socket: NotifySocket) -> None:
    """Half-interval pings while the scheduler ticks; silence while it is wedged; pings again after."""
    notifier = Notifier(notify_socket.env(WATCHDOG_USEC="30000000"))
    fake = FakeTime([4, 60, 0, 0, 0, 3])  # two healthy periods, three stalled, one recovered
    pings: list[float] = []
    real_watchdog = notifier.watchdog

    def watchdog() -> bool:
        pings.append(fake.now)
        return real_watchdog()

    notifier.watchdog = watchdog  # type: ignore[method-assign]
    with capture_logs() as logs, pytest.raises(_Stop):
        await watchdog_loop(notifier, lambda: fake.progress, sleep=fake.sleep, clock=fake.clock)
    assert fake.sleeps == [15.0] * 6  # WatchdogSec=30s → a look every 15 s
    assert pings == [1015.0, 1030.0, 1090.0]  # not at 1045, 1060, 1075: progress stood still
    assert notify_socket.pending() == ["WATCHDOG=1"] * 3
    events = [e["event"] for e in logs]
    assert events == ["watchdog_started", "watchdog_withheld", "watchdog_resumed"]
    withheld = logs[1]
    assert withheld["stalled_s"] == 15.0 and withheld["watchdog_s"] == 30.0
    notifier.close()


async def test_watchdog_stops_for_good_when_progress_stalls(notify_socket: NotifySocket) -> None:
    """A wedged scheduler never pings again, so systemd's WatchdogSec= expires and it restarts us."""
    notifier = Notifier(notify_socket.env(WATCHDOG_USEC="2000000"))
    fake = FakeTime([1] + [0] * 50)
    with capture_logs() as logs, pytest.raises(_Stop):
        await watchdog_loop(notifier, lambda: fake.progress, sleep=fake.sleep, clock=fake.clock)
    assert set(fake.sleeps) == {1.0}
    assert notify_socket.pending() == ["WATCHDOG=1"]  # one ping, then 50 s of silence
    assert [e["event"] for e in logs].count("watchdog_withheld") == 1  # logged once, not every period
    notifier.close()


async def test_watchdog_counts_a_reset_counter_as_progress(notify_socket: NotifySocket) -> None:
    """A reload may replace the scheduler and restart its tick counter: any change is progress."""
    notifier = Notifier(notify_socket.env(WATCHDOG_USEC="10000000"))
    values = iter([500, 3, 9])  # initial read, then a fresh scheduler counting from 0
    fake = FakeTime([0, 0])
    with pytest.raises(_Stop):
        await watchdog_loop(notifier, lambda: next(values), sleep=fake.sleep, clock=fake.clock)
    assert notify_socket.pending() == ["WATCHDOG=1", "WATCHDOG=1"]
    notifier.close()


async def test_watchdog_loop_returns_when_the_watchdog_is_not_for_us(notify_socket: NotifySocket) -> None:
    notifier = Notifier(notify_socket.env(WATCHDOG_USEC="30000000", WATCHDOG_PID=str(os.getpid() + 1)))
    fake = FakeTime([1, 1])
    await watchdog_loop(notifier, lambda: fake.progress, sleep=fake.sleep, clock=fake.clock)
    assert fake.sleeps == [] and notify_socket.pending() == []
    notifier.close()


# ---------------------------------------------------------------------- status loop


async def test_status_loop_sends_only_changes(notify_socket: NotifySocket) -> None:
    notifier = Notifier(notify_socket.env())
    texts = iter(["5 checks: 5 up, 0 down; 0 open incidents"] * 3 + ["5 checks: 4 up, 1 down; 1 open incident"] * 2)
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 5:
            raise _Stop

    with pytest.raises(_Stop):
        await status_loop(notifier, lambda: next(texts), every=5.0, sleep=sleep)
    assert sleeps == [5.0] * 5
    assert notify_socket.pending() == [
        "STATUS=5 checks: 5 up, 0 down; 0 open incidents",
        "STATUS=5 checks: 4 up, 1 down; 1 open incident",
    ]
    notifier.close()


async def test_status_loop_survives_a_failing_summary(notify_socket: NotifySocket) -> None:
    notifier = Notifier(notify_socket.env())
    calls = 0

    def summary() -> str:
        nonlocal calls
        calls += 1
        if calls <= 3:
            raise KeyError("store")
        return "1 check: 1 up, 0 down; 0 open incidents"

    async def sleep(_: float) -> None:
        if calls == 4:
            raise _Stop

    with capture_logs() as logs, pytest.raises(_Stop):
        await status_loop(notifier, summary, sleep=sleep)
    assert notify_socket.pending() == [
        "STATUS=status unavailable: KeyError",
        "STATUS=1 check: 1 up, 0 down; 0 open incidents",
    ]
    assert [e["event"] for e in logs] == ["status_summary_failed"]  # once, not three times
    notifier.close()


# ---------------------------------------------------------------------- the env file


def _env_file(path: Path) -> tuple[dict[str, str], set[str], dict[str, int]]:
    """(active assignments, names only mentioned as `#NAME=`, line number of each name)."""
    active: dict[str, str] = {}
    mentioned: set[str] = set()
    lines: dict[str, int] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if m := re.fullmatch(r"([A-Z][A-Z0-9_]*)=(.*)", line):
            active[m[1]] = m[2]
            lines[m[1]] = n
        elif m := re.fullmatch(r"#([A-Z][A-Z0-9_]*)=(.*)", line):
            mentioned.add(m[1])
            lines[m[1]] = n
    return active, mentioned, lines


def _referenced_variables(path: Path) -> set[str]:
    """Every `${VAR}` the config file uses, found with the loader's own interpolation (comments excluded)."""
    seen: set[str] = set()

    class Recorder(Mapping[str, str]):
        def __getitem__(self, key: str) -> str:
            seen.add(key)
            raise KeyError(key)

        def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
            seen.add(key)
            return default

        def __iter__(self) -> Iterator[str]:
            return iter(())

        def __len__(self) -> int:
            return 0

    def walk(value: object) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, str):
            interpolate(value, Recorder())

    walk(yaml.safe_load(path.read_text()))
    return seen


def test_env_file_names_every_variable_the_shipped_rules_use() -> None:
    active, mentioned, _ = _env_file(ENV_FILE)
    used = _referenced_variables(RULES)
    assert used, "alert_rules.yaml references no ${VAR}: the extraction is broken"
    missing = sorted(used - set(active) - mentioned)
    assert not missing, f"{ENV_FILE.name} does not mention {missing}, which alert_rules.yaml uses"


def test_env_file_lists_the_documented_variables() -> None:
    active, mentioned, _ = _env_file(ENV_FILE)
    documented = {
        "REDIS_URL",
        "DATABASE_URL",
        "WHMCS_API_URL",
        "WHMCS_API_IDENTIFIER",
        "WHMCS_API_SECRET",
        "WHMCS_API_ACCESS_KEY",
        "BFF_HEALTH_URL",
        "BFF_PROCESS_PATTERN",
        "PORTAL_MONITOR_LISTEN",
        "PAGERDUTY_ROUTING_KEY",
        "PAGERDUTY_LEAD_ROUTING_KEY",
        "SLACK_WEBHOOK_URL",
        "MANAGEMENT_WEBHOOK_URL",
        "VENDOR_WEBHOOK_URL",
        "MONITOR_API_TOKEN",
        "PORTAL_MONITOR_STATE_DIR",
    }
    assert documented <= set(active) | mentioned


def test_env_file_secrets_are_blank_and_every_variable_has_a_comment() -> None:
    active, mentioned, lines = _env_file(ENV_FILE)
    text = ENV_FILE.read_text().splitlines()
    secret = re.compile(r"SECRET|TOKEN|_KEY|WEBHOOK|PASSWORD|IDENTIFIER")
    for name in set(active) | mentioned:
        if secret.search(name):
            assert name not in active, f"{name} is a secret: leave it commented and blank in the example"
        n = lines[name]
        comment = text[n - 2]  # the line above the variable
        assert comment.startswith("# ") and len(comment) > 10, f"{name} (line {n}) has no one-line comment above it"
    for name in mentioned:
        assert re.search(rf"^#{name}=(\S*)$", ENV_FILE.read_text(), re.M)
    # the state directory comes from the unit (Environment=); the env file would override it
    assert "PORTAL_MONITOR_STATE_DIR" not in active


def test_shipped_rules_load_with_the_example_env_file() -> None:
    """What `systemctl start` does with the example file unchanged: the config loads, nothing fails."""
    active, _, _ = _env_file(ENV_FILE)
    env = {**active, "PORTAL_MONITOR_STATE_DIR": "/var/lib/portal-monitor"}
    cfg = load_config(RULES, env=env)
    assert cfg.root.state_dir == "/var/lib/portal-monitor"
    assert "PORTAL_MONITOR_LISTEN" not in active  # a container must not be pinned to its own loopback
    assert cfg.root.listen == "127.0.0.1:9820"  # the config's default: loopback under systemd


# ---------------------------------------------------------------------- the unit file


def _unit_settings(path: Path) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key, []).append(value)
    return settings


def test_unit_file_settings() -> None:
    """The settings the daemon's behaviour depends on (systemd-analyze checks the rest where it exists)."""
    s = _unit_settings(UNIT)
    one = {k: v[-1] for k, v in s.items()}
    assert one["Type"] == "notify" and one["NotifyAccess"] == "main"
    assert one["WatchdogSec"] == "30s" and one["Restart"] == "on-failure"
    assert one["ExecStart"] == f"{EXEC_START} run -c /etc/portal-monitor/alert_rules.yaml"
    assert one["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert one["EnvironmentFile"] == "-/etc/portal-monitor/env"
    assert one["StateDirectory"] == "portal-monitor"
    assert "PORTAL_MONITOR_STATE_DIR=%S/portal-monitor" in s["Environment"]
    assert one["SupplementaryGroups"] == "adm"
    assert one["CapabilityBoundingSet"] == "" and one["MemoryMax"] == "256M"
    assert one["UMask"] == "0077" and one["MemoryDenyWriteExecute"] == "yes"
    assert s["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]
    assert one["RestrictAddressFamilies"] == "AF_UNIX AF_INET AF_INET6"
    # the process check reads another user's /proc/<pid> and psutil needs /proc/stat
    assert one.get("ProtectProc", "default") == "default" and "ProcSubset" not in one
    # the rules file's state_dir is what the unit's variable feeds
    assert 'state_dir: "${PORTAL_MONITOR_STATE_DIR' in RULES.read_text()


def _analyze() -> str:
    return require_tool(
        "systemd-analyze", "systemd-analyze is not installed (Debian package `systemd`): the unit file is not verified"
    )


def _unit_copy(tmp_path: Path) -> Path:
    """The unit as shipped, except that ExecStart points at an executable that exists here.

    `systemd-analyze verify` checks that ExecStart's binary exists; /opt/portal-monitor is not
    installed on a test machine, so a stand-in with the same arguments takes its place.
    """
    stand_in = tmp_path / "portal-monitor"
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    text = UNIT.read_text()
    assert EXEC_START in text
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(EXEC_START, str(stand_in)))
    return copy


def test_unit_verifies_clean(tmp_path: Path) -> None:
    exe = _analyze()
    unit = _unit_copy(tmp_path)
    proc = subprocess.run(
        [exe, "verify", "--man=no", "--generators=no", str(unit)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "notice", "SYSTEMD_LOG_COLOR": "0"},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "" and proc.stdout.strip() == "", proc.stderr + proc.stdout


def test_verify_does_catch_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a misspelt setting is reported."""
    exe = _analyze()
    unit = _unit_copy(tmp_path)
    unit.write_text(unit.read_text().replace("NoNewPrivileges=yes", "NoNewPrivilege=yes"))
    proc = subprocess.run(
        [exe, "verify", "--man=no", "--generators=no", str(unit)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "NoNewPrivilege" in proc.stderr


def _exposure(exe: str, unit: Path) -> tuple[float, str]:
    proc = subprocess.run(
        [exe, "security", "--offline=yes", "--no-pager", str(unit)],
        cwd=unit.parent,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_COLORS": "0", "SYSTEMD_LOG_LEVEL": "notice"},
    )
    if "--offline" in proc.stderr and "unrecognized" in proc.stderr:
        pytest.skip("systemd-analyze too old for `security --offline` (needs systemd >= 250): " + proc.stderr.strip())
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", proc.stdout)
    assert m, proc.stdout[-2000:] + proc.stderr
    return float(m[1]), m[2]


def test_unit_security_exposure_is_ok(tmp_path: Path) -> None:
    exe = _analyze()
    score, rating = _exposure(exe, _unit_copy(tmp_path))
    assert score <= 2.0 and rating == "OK", f"exposure {score} {rating}"


def test_security_check_can_fail(tmp_path: Path) -> None:
    """Without its sandboxing the same unit rates far worse: the score above measures the unit."""
    exe = _analyze()
    unit = _unit_copy(tmp_path)
    kept = [
        line
        for line in unit.read_text().splitlines()
        if not line.startswith(
            (
                "Protect",
                "Private",
                "Restrict",
                "SystemCall",
                "Capability",
                "NoNew",
                "MemoryDeny",
                "LockPersonality",
                "DynamicUser",
                "UMask",
            )
        )
    ]
    unit.write_text("\n".join(kept) + "\n")
    score, _ = _exposure(exe, unit)
    assert score > 5.0


# ---------------------------------------------------------------------- end to end


def _daemon_speaks_sd_notify() -> bool:
    return "Notifier" in inspect.getsource(monitor.daemon)


@pytest.mark.skipif(
    not _daemon_speaks_sd_notify(),
    reason="monitor/daemon.py does not use monitor.systemd.Notifier yet (the lead wires it); "
    "this test enables itself once it does",
)
def test_daemon_notifies_ready_watchdog_and_stopping(notify_socket: NotifySocket, tmp_path: Path) -> None:
    """The real daemon with a systemd-like environment: READY=1, WATCHDOG=1 pings, STOPPING=1 on SIGTERM."""
    closed = socket.socket()  # a bound, never-listening port: connections to it are refused at once
    closed.bind(("127.0.0.1", 0))
    config = tmp_path / "alert_rules.yaml"
    config.write_text(
        "checks:\n"
        f"  - {{name: nothing_here, type: http, url: 'http://127.0.0.1:{closed.getsockname()[1]}/health', "
        "interval: 1s, timeout: 500ms}\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    env.update(notify_socket.env(WATCHDOG_USEC="2000000"))  # WatchdogSec=2s → a ping every second
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "monitor",
            "run",
            "-c",
            str(config),
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
            str(tmp_path / "state"),
            "--log-format",
            "json",
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        notify_socket.sock.settimeout(20)  # bounds a daemon that never gets ready; READY usually takes < 2 s
        messages = [notify_socket.recv()]
        while "READY=1" not in messages[-1].split("\n"):
            messages.append(notify_socket.recv())
        assert proc.poll() is None
        # the scheduler ticks every 250 ms, so the first half-interval look (1 s) must ping
        while "WATCHDOG=1" not in messages[-1].split("\n"):
            messages.append(notify_socket.recv())
        proc.send_signal(signal.SIGTERM)
        while "STOPPING=1" not in messages[-1].split("\n"):
            messages.append(notify_socket.recv())
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        closed.close()
        out = proc.stdout.read().decode() if proc.stdout else ""
    flat = [line for m in messages for line in m.split("\n")]
    assert flat.index("READY=1") < flat.index("WATCHDOG=1") < flat.index("STOPPING=1"), (flat, out[-3000:])


# ---------------------------------------------------------------------- MemoryDenyWriteExecute=yes

# Run before exec'ing the daemon: PR_SET_MDWE(PR_MDWE_REFUSE_EXEC_GAIN) (Linux >= 6.3) is what
# systemd applies for MemoryDenyWriteExecute=yes where the kernel has it (older systemd, such as
# Debian 12's 252, uses an equivalent seccomp filter). It is inherited across execve, so the whole
# daemon runs under it; the W+X mmap below proves it took effect before we exec.
_MDWE_EXEC = """
import ctypes, errno, mmap, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    sys.exit(77)
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit(78)
except PermissionError:
    pass
os.execv(sys.argv[1], sys.argv[1:])
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_daemon_runs_every_check_type_under_memory_deny_write_execute(
    redis_up,
    postgres_up,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    """CPython and the C extensions (orjson, hiredis, asyncpg, pydantic-core, psutil, msgspec, PyYAML)
    load and work with W+X memory refused: redis, postgres, http and process checks all come up."""
    import urllib.request

    port = _free_port()
    tag = f"portal-monitor-mdwe-target-{uuid.uuid4().hex}"
    # a process for the process check to find (the monitor never matches itself); exits on stdin EOF
    target = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()", tag], stdin=subprocess.PIPE)
    config = tmp_path / "alert_rules.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "checks": [
                    {"name": "cache", "type": "redis", "url": redis_up.url, "interval": "1s"},
                    {"name": "db", "type": "postgres", "dsn": postgres_up.dsn, "interval": "1s"},
                    {"name": "self", "type": "http", "url": f"http://127.0.0.1:{port}/-/healthy", "interval": "1s"},
                    {"name": "bff", "type": "process", "cmdline": tag, "interval": "1s"},
                ],
            }
        )
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _MDWE_EXEC,
            sys.executable,
            "-m",
            "monitor",
            "run",
            "-c",
            str(config),
            "--listen",
            f"127.0.0.1:{port}",
            "--state-dir",
            str(tmp_path / "state"),
            "--log-format",
            "json",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # bounded: the daemon logs "started" or exits (EOF)
            if '"started"' in line:
                break
        code = proc.poll()
        if code == 77:
            pytest.skip("this kernel has no PR_SET_MDWE (Linux >= 6.3): MemoryDenyWriteExecute not checked")
        assert code is None, f"daemon exited {code} under MDWE: {proc.stdout.read()[-3000:]}"
        # readiness = every check has run once; poll it, bounded (this waits for the checks, not for time)
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "the daemon never became ready under MDWE"
                time.sleep(0.1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            metrics = resp.read().decode()
        for check in ("cache", "db", "self", "bff"):
            assert re.search(rf'^portal_check_up\{{[^}}]*check="{check}"[^}}]*\}} 1\.0$', metrics, re.M), (
                f"check {check} is not up under MDWE:\n"
                + "\n".join(line for line in metrics.splitlines() if "portal_check_up" in line)
            )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert target.stdin is not None
        target.stdin.close()
        target.wait(timeout=10)


# ---------------------------------------------------------------------- a wedged check runner


class SteppedSleep:
    """The watchdog loop's sleep, stepped by the test: `step()` lets one look happen and returns
    once the loop is back asleep, so each look's datagram (or its absence) is known exactly."""

    def __init__(self) -> None:
        self._go: asyncio.Queue[None] = asyncio.Queue()
        self._asleep = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        self._asleep.set()
        await self._go.get()
        self._asleep.clear()

    async def step(self) -> None:
        async with asyncio.timeout(5):
            await self._asleep.wait()
            self._asleep.clear()
            self._go.put_nowait(None)
            await self._asleep.wait()


class WedgeableCheck:
    """Completes at once until `wedge()`; then its run never returns: it swallows the
    scheduler's timeout cancellation (as a client library can) and waits for `release`."""

    type = "fake"

    def __init__(self, name: str) -> None:
        self.name = name
        self.interval_s = 0.05
        self.timeout_s = 0.05
        self.runs = 0
        self.wedged = False
        self.release = asyncio.Event()

    async def collect(self) -> list[Sample]:
        self.runs += 1
        while self.wedged and not self.release.is_set():
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                continue  # the run_check timeout: ignored, the run stays wedged
        return [Sample("fake_value", {"check": self.name}, 1.0)]

    async def aclose(self) -> None:
        pass


async def _until(cond: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)
    assert cond(), what


async def test_watchdog_stops_pinging_when_a_check_runner_is_wedged(notify_socket: NotifySocket) -> None:
    """The daemon's wiring (scheduler ticks + Scheduler.stalled) with a check whose run really
    never returns: the event loop keeps running (the tick counter moves) but the pings stop
    until the run completes, then resume."""
    healthy = WedgeableCheck("steady")
    wedging = WedgeableCheck("wedging")
    scheduler = Scheduler(Store())
    scheduler.add(healthy)
    scheduler.add(wedging)
    notifier = Notifier(notify_socket.env(WATCHDOG_USEC="2000000"))
    stepped = SteppedSleep()
    sched_task = asyncio.create_task(scheduler.run())
    dog = asyncio.create_task(
        watchdog_loop(notifier, lambda: scheduler.ticks, sleep=stepped.sleep, stalled=scheduler.stalled)
    )
    try:
        with capture_logs() as logs:
            for _ in range(3):  # healthy: every look pings
                ticks = scheduler.ticks
                await _until(lambda t=ticks: scheduler.ticks != t, "the scheduler ticks")
                await stepped.step()
                assert notify_socket.pending() == ["WATCHDOG=1"]
            assert scheduler.stalled() == ""

            wedging.wedged = True
            runs = wedging.runs
            await _until(lambda: wedging.runs > runs, "the wedged run started")
            await _until(lambda: "wedging" in scheduler.stalled(), "the wedge is noticed", timeout=15)
            assert "steady" not in scheduler.stalled()  # the other check still completes
            for _ in range(3):  # the loop runs and ticks, but no ping goes out
                ticks = scheduler.ticks
                await _until(lambda t=ticks: scheduler.ticks != t, "the scheduler still ticks")
                await stepped.step()
                assert notify_socket.pending() == []

            wedging.release.set()
            await _until(lambda: scheduler.stalled() == "", "the wedged run completes")
            await stepped.step()
            assert notify_socket.pending() == ["WATCHDOG=1"]
        events = [e for e in logs if e["event"].startswith("watchdog_")]
        assert [e["event"] for e in events] == ["watchdog_started", "watchdog_withheld", "watchdog_resumed"]
        assert "checks wedged: no completed run: wedging" in events[1]["reason"]
    finally:
        for task in (dog, sched_task):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        notifier.close()
