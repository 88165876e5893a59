"""The reload path's parts without a daemon process: what makes a file unfit to run, the
settled-file watch of `run --watch` (fake stat and sleep), evaluations held during a reload,
replaced receivers drained before they are closed, and the state directory's lock."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from structlog.testing import capture_logs

from monitor.alerting import Alerting
from monitor.config.loader import ConfigError, config_warnings, load_config_text, runnable_errors
from monitor.daemon import FileWatch, lock_state_dir
from monitor.delivery.outbox import Outbox, list_rows
from monitor.model import DeliveryError, Notification
from monitor.statedb import open_db
from tests.test_outbox import Clock, FakeReceiver, notification, put

CHECK = '  - {name: cache, type: redis, url: "redis://127.0.0.1:1"}\n'
P1_RULE = """\
  - alert: RedisDown
    expr: portal_redis_up == 0
    severity: P1
"""


def load(text: str, env: dict[str, str] | None = None) -> Any:
    return load_config_text(text, path=Path("alert_rules.yaml"), env=env or {})


# ---------------------------------------------------------------- fit to run


@pytest.mark.parametrize("text", ["", "\n\n", "# every line commented out\n#checks:\n", "{}\n"])
def test_an_empty_file_is_an_error_naming_what_is_missing(text: str) -> None:
    assert runnable_errors(load(text)) == [
        "alert_rules.yaml:1:1: the file is empty (no checks, rules or receivers): a half-written save? "
        "it needs at least `checks:`"
    ]


@pytest.mark.parametrize("text", ["checks: []\n", "checks:\n", "listen: 127.0.0.1:0\nrules: []\n"])
def test_a_file_without_checks_is_an_error(text: str) -> None:
    errors = runnable_errors(load(text))
    assert len(errors) == 1 and errors[0].endswith("checks: no check is defined: the daemon would watch nothing")
    assert errors[0].startswith("alert_rules.yaml:1:")


def test_checks_switched_off_for_a_missing_variable_still_count_as_defined() -> None:
    cfg = load('checks:\n  - {name: cache, type: redis, url: "${REDIS_URL}", enabled: auto}\n')
    assert cfg.checks == [] and runnable_errors(cfg) == []


def test_a_p1_rule_without_any_enabled_receiver_is_an_error_at_its_severity() -> None:
    text = f"""\
checks:
{CHECK}rules:
{P1_RULE}  - alert: Slow
    expr: portal_redis_ping_seconds > 1
    severity: P3
receivers:
  oncall: {{type: pagerduty, routing_key: "${{PAGERDUTY_ROUTING_KEY}}", enabled: auto}}
  console: {{type: log, enabled: false}}
escalation:
  - {{level: L1, severities: [P1, P2, P3, P4], receivers: [oncall], fallback: [console]}}
"""
    assert runnable_errors(load(text)) == [
        "alert_rules.yaml:6:15: rules[0].severity: P1 rule 'RedisDown' reaches no enabled receiver: "
        "L1 oncall (disabled until PAGERDUTY_ROUTING_KEY is set), fallback console (enabled: false)"
    ]
    # The same file with the key set, or with the fallback on, is fine: fallbacks count.
    assert runnable_errors(load(text, {"PAGERDUTY_ROUTING_KEY": "R0UT1NGKEY0123456789abcdefABCDEF"})) == []
    assert runnable_errors(load(text.replace("type: log, enabled: false", "type: log"))) == []


def test_a_p1_rule_no_escalation_step_takes_is_an_error() -> None:
    text = f"""\
checks:
{CHECK}rules:
{P1_RULE}receivers:
  console: {{type: log}}
escalation:
  - {{level: L1, severities: [P3, P4], receivers: [console]}}
"""
    (error,) = runnable_errors(load(text))
    assert error.endswith("P1 rule 'RedisDown' reaches no enabled receiver: no escalation step takes P1")


def test_a_vendor_p1_rule_is_reached_by_the_vendor_step() -> None:
    text = f"""\
checks:
{CHECK}rules:
{P1_RULE}    vendor: whmcs
receivers:
  vendors: {{type: log}}
escalation:
  - {{level: L4, vendor: true, receivers: [vendors]}}
"""
    assert runnable_errors(load(text)) == []
    assert runnable_errors(load(text.replace("vendor: whmcs\n", "summary: no vendor\n")))[0].endswith(
        "no escalation step takes P1"
    )


def test_a_file_without_rules_is_valid_and_warned_about() -> None:
    cfg = load(f"checks:\n{CHECK}")
    assert runnable_errors(cfg) == []
    assert config_warnings(cfg) == [
        "alert_rules.yaml:1:1: no rules: nothing will page (fine if Prometheus alerts on /metrics)"
    ]
    assert config_warnings(load(f"checks:\n{CHECK}rules:\n{P1_RULE}receivers:\n  oncall: {{type: log}}\n")) == []


GOOD = f"""\
listen: 127.0.0.1:0
checks:
{CHECK}  - {{name: web, type: http, url: "http://127.0.0.1:1/health"}}
rules:
{P1_RULE}    summary: "Redis is down"
receivers:
  oncall: {{type: pagerduty, routing_key: "R0UT1NGKEY0123456789abcdefABCDEF"}}
escalation:
  - {{level: L1, severities: [P1, P2, P3, P4], receivers: [oncall]}}
"""


@pytest.mark.parametrize(
    ("cut_after", "says"),
    [
        ("  - {name: web, type: ht", "4:25: invalid YAML: expected ',' or '}'"),  # mid-check
        ("  - alert: RedisDown\n    expr: portal_redis_up == 0\n", "rules[0].severity: required key is missing"),
        ('    summary: "Redis is d', "invalid YAML"),  # inside a quoted string
        ('  oncall: {type: pagerduty, routing_key: "R0UT', "invalid YAML"),
        ("receivers:\n", "P1 rule 'RedisDown' reaches no enabled receiver"),  # cut before the receivers
    ],
)
def test_a_half_written_file_is_an_error_naming_what_is_missing(cut_after: str, says: str) -> None:
    text = GOOD[: GOOD.index(cut_after) + len(cut_after)]
    try:
        errors = runnable_errors(load(text))
    except ConfigError as e:
        errors = e.errors
    assert any(says in e for e in errors), errors
    assert all(e.startswith("alert_rules.yaml:") and e.split(":")[1].isdigit() for e in errors), errors
    assert runnable_errors(load(GOOD)) == []


# ---------------------------------------------------------------- run --watch


class FakeFile:
    """A file whose stat() answers from a script: one (mtime_ns, size, inode) per poll; None is
    a missing file (an editor renaming over it)."""

    def __init__(self, stamps: list[tuple[int, int, int] | None]) -> None:
        self.stamps = stamps
        self.polls = 0
        self.slept: list[float] = []

    def stat(self, _: Path) -> Any:
        stamp = self.stamps[min(self.polls, len(self.stamps) - 1)]
        self.polls += 1
        if stamp is None:
            raise FileNotFoundError("alert_rules.yaml")
        return SimpleNamespace(st_mtime_ns=stamp[0], st_size=stamp[1], st_ino=stamp[2])

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        await asyncio.sleep(0)


async def test_watch_reads_a_change_only_once_the_file_held_still_for_two_polls() -> None:
    a, half, more, whole = (1, 100, 7), (2, 40, 7), (3, 80, 7), (4, 120, 7)
    # start, unchanged, a save being written (40 then 80 bytes), done (120), then still 120
    f = FakeFile([a, a, half, more, whole, whole, whole])
    watch = FileWatch(Path("alert_rules.yaml"), every_s=2.0, settle_s=0.5, stat=f.stat, sleep=f.sleep)
    assert await watch.changed() is True
    assert watch.stamp() == whole  # the stamp it settled on is the complete file
    assert f.slept == [2.0, 2.0, 0.5, 0.5, 0.5]  # two quiet polls, the change, then until settled
    assert f.polls == 7


async def test_watch_waits_through_a_rename_and_counts_the_new_inode_as_a_change() -> None:
    f = FakeFile([(1, 100, 7), None, (1, 100, 8), (1, 100, 8)])
    watch = FileWatch(Path("alert_rules.yaml"), stat=f.stat, sleep=f.sleep)
    assert await watch.changed() is True
    assert f.polls == 4


async def test_watch_of_a_file_that_keeps_changing_gives_up_after_a_bounded_wait() -> None:
    stamps: list[tuple[int, int, int] | None] = [(i, i, 1) for i in range(100)]
    f = FakeFile(stamps)
    watch = FileWatch(Path("x"), every_s=2.0, settle_s=0.5, max_settle_polls=5, stat=f.stat, sleep=f.sleep)
    assert await watch.changed() is False
    assert f.slept == [2.0, 0.5, 0.5, 0.5, 0.5, 0.5]


# ---------------------------------------------------------------- evaluations held


GOOD_CFG = load(GOOD)


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    c = open_db(tmp_path)
    yield c
    c.close()


async def test_no_evaluation_runs_while_a_reload_holds_the_rules(conn: sqlite3.Connection) -> None:
    alerting = Alerting(conn, GOOD_CFG, lambda: [], receivers={})
    run = asyncio.create_task(alerting.run(lambda: True))
    try:
        alerting.kick()
        async with asyncio.timeout(5):
            while alerting.evaluations == 0:
                await asyncio.sleep(0.01)  # the evaluation task runs as soon as the loop lets it
        with alerting.held():
            before = alerting.evaluations
            for _ in range(50):  # kicks (checks finishing) and loop turns: nothing evaluates
                alerting.kick()
                await asyncio.sleep(0.001)
            assert alerting.evaluations == before
        async with asyncio.timeout(5):  # released: the kick the hold leaves behind evaluates
            while alerting.evaluations == before:
                await asyncio.sleep(0.01)
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)


# ---------------------------------------------------------------- receivers drained


class ClosingReceiver(FakeReceiver):
    """A FakeReceiver that notes when it was closed and fails a send it is inside by then."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.closed = False
        self.sending = asyncio.Event()

    async def send(self, notification: Notification) -> None:
        self.sending.set()
        await super().send(notification)
        if self.closed:
            raise DeliveryError("session closed mid-send")

    async def aclose(self) -> None:
        self.closed = True


async def test_a_replaced_receiver_is_closed_only_after_its_send_finished(conn: sqlite3.Connection) -> None:
    clock = Clock()
    old = ClosingReceiver("oncall", clock)
    old.hold = asyncio.Event()
    new = ClosingReceiver("oncall", clock)
    alerting = Alerting(conn, GOOD_CFG, lambda: [], receivers={"oncall": old})
    alerting.outbox = outbox = Outbox(conn, {"oncall": old}, now=clock.now, sleep=clock.sleep)
    put(conn, notification(n=1), notification(n=2))
    drain = asyncio.create_task(outbox.drain())
    await asyncio.wait_for(old.sending.wait(), 5)  # row 1 is inside old.send
    outbox.set_receivers({"oncall": new})
    retire = asyncio.create_task(alerting.retire_receivers({"oncall": old}))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not retire.done() and not old.closed  # waiting for the send under way
    old.hold.set()
    await asyncio.wait_for(retire, 5)
    assert old.closed
    await asyncio.wait_for(drain, 5)
    assert [n.alert.labels["n"] for n in old.got] == ["1"]  # the send under way finished there
    assert [n.alert.labels["n"] for n in new.got] == ["2"]  # the next row went to the new one
    assert [r.state for r in list_rows(conn)] == ["delivered", "delivered"]


async def test_a_send_outliving_its_timeout_is_retried_by_the_new_receiver(conn: sqlite3.Connection) -> None:
    clock = Clock()
    old = ClosingReceiver("oncall", clock, timeout_s=0.2)
    old.hold = asyncio.Event()  # never set: only the timeout ends that send
    new = ClosingReceiver("oncall", clock)
    alerting = Alerting(conn, GOOD_CFG, lambda: [], receivers={"oncall": old})
    alerting.outbox = outbox = Outbox(conn, {"oncall": old}, now=clock.now, sleep=clock.sleep)
    put(conn, notification(n=1))
    drain = asyncio.create_task(outbox.drain())
    await asyncio.wait_for(old.sending.wait(), 5)
    outbox.set_receivers({"oncall": new})
    with capture_logs() as logs:
        await asyncio.wait_for(alerting.retire_receivers({"oncall": old}), 5)
        await asyncio.wait_for(drain, 5)
    assert old.got == [] and [n.alert.labels["n"] for n in new.got] == ["1"]  # nothing lost
    (row,) = list_rows(conn)
    assert (row.state, row.attempts) == ("delivered", 2)
    assert any(e["event"] == "receivers_closed_mid_send" and e["receivers"] == ["oncall"] for e in logs), logs


# ---------------------------------------------------------------- the state directory


def test_a_second_lock_on_a_state_dir_names_the_holder(tmp_path: Path) -> None:
    fd = lock_state_dir(tmp_path / "state")
    try:
        assert (tmp_path / "state" / "portal-monitor.lock").read_text() == f"{os.getpid()}\n"
        with pytest.raises(OSError, match=rf"state directory .*state is in use by pid {os.getpid()} "):
            lock_state_dir(tmp_path / "state")  # flock locks per open file: a second open conflicts
        conn = open_db(tmp_path / "state")  # the state file itself stays open to others (the CLI)
        conn.close()
    finally:
        os.close(fd)
    os.close(lock_state_dir(tmp_path / "state"))  # released with the descriptor


@pytest.mark.parametrize(("listen", "url"), [
    ("127.0.0.1:9820", "http://127.0.0.1:9820"),
    ("0.0.0.0:9820", "http://127.0.0.1:9820"),
    (":9820", "http://127.0.0.1:9820"),
    ("[::]:9820", "http://127.0.0.1:9820"),
    ("[::1]:9820", "http://[::1]:9820"),
    ("monitor.internal:9820", "http://monitor.internal:9820"),
])
def test_reload_without_url_asks_the_daemon_at_the_files_listen_address(listen: str, url: str) -> None:
    from monitor.cli.main import _daemon_url

    assert _daemon_url(listen) == url


def test_reload_without_url_checks_the_file_first_and_sends_nothing_when_it_is_invalid(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from monitor.cli.main import main

    path = tmp_path / "alert_rules.yaml"
    path.write_text("listen: 127.0.0.1:1\nchecks:\n  - {name: a, type: redis, interval: 10 s}\n")
    assert main(["reload", "-c", str(path)]) == 1  # port 1: had it been sent, the error would say so
    assert capsys.readouterr().err.splitlines() == [
        "alert_rules.yaml:3:38: checks[0].interval: '10 s' is not a duration (use e.g. 250ms, 10s, 5m, 1h)",
        "1 error",
    ]
