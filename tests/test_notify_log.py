"""Log receiver: one structured `notification` event per notification; a write that fails is
never reported as delivered (real targets: a closed stream, /dev/full, a closed stdout)."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import TextIO

import pytest
import structlog

from monitor.delivery import build_receiver, log
from monitor.delivery.log import LogReceiver
from monitor.delivery.outbox import Outbox, enqueue, list_rows, transaction
from monitor.model import DeliveryError, ReceiverContext
from monitor.statedb import open_db
from tests.fake_receivers import T0, make_notification


async def test_each_notification_is_one_structured_event() -> None:
    r = build_receiver("local", log.Config(type="log"), host="h", external_url=None)
    with structlog.testing.capture_logs() as logs:
        await r.send(make_notification(level="L2"))
        await r.send(make_notification("resolve"))
    await r.aclose()
    assert logs[0] == {
        "event": "notification", "log_level": "warning", "receiver": "local", "kind": "trigger",
        "escalation_level": "L2", "severity": "P1", "alertname": "RedisDown", "dedup_key": "3f1c0a9e5b7d2c48",
        "summary": "Redis is down on cache", "status": "firing", "incident_id": 12,
        "steps": ["Check Redis connectivity: redis-cli ping", "Check Redis memory usage: redis-cli info memory",
                  "Check BFF health endpoint: curl http://localhost:4000/health"],
    }
    assert (logs[1]["event"], logs[1]["log_level"], logs[1]["kind"], logs[1]["status"]) == \
        ("notification", "info", "resolve", "resolved")
    assert "steps" not in logs[1]


async def test_the_console_says_who_acknowledged_and_links_the_page() -> None:
    r = build_receiver("console", log.Config(type="log"), host="h", external_url="https://ops.example.com/m")
    n = make_notification("acknowledge")
    n = replace(n, alert=replace(n.alert, annotations={**n.alert.annotations, "acknowledged_by": "alice"}))
    with structlog.testing.capture_logs() as logs:
        await r.send(n)
    await r.aclose()
    assert logs[0]["acknowledged_by"] == "alice"
    assert logs[0]["incident_url"] == "https://ops.example.com/m/incidents/12"


async def test_stream_gets_the_status_update_text() -> None:
    out = io.StringIO()
    r = LogReceiver("local", log.Config(type="log"), ReceiverContext(stream=out))
    with structlog.testing.capture_logs():
        await r.send(make_notification())
    assert out.getvalue().startswith("INCIDENT UPDATE - P1 - Redis is down on cache\nStatus: Investigating\n")


async def test_a_closed_stream_is_a_retryable_delivery_error() -> None:
    out = io.StringIO()
    out.close()  # writing raises ValueError
    r = LogReceiver("local", log.Config(type="log"), ReceiverContext(stream=out))
    with structlog.testing.capture_logs(), pytest.raises(DeliveryError) as e:
        await r.send(make_notification())
    assert not e.value.permanent
    assert str(e.value) == "log receiver 'local': cannot write: ValueError: I/O operation on closed file"


@pytest.fixture
def structlog_to() -> Iterator[Callable[[TextIO], None]]:
    """Point the process's structlog at a given file (as `configure_logging` points it at
    stdout), restoring the configuration afterwards."""
    saved = structlog.get_config()

    def to(stream: TextIO) -> None:
        structlog.configure(processors=[structlog.processors.JSONRenderer()],
                            logger_factory=structlog.PrintLoggerFactory(stream), cache_logger_on_first_use=False)

    yield to
    structlog.configure(**saved)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
async def test_a_log_on_a_full_device_is_not_delivered(structlog_to: Callable[[TextIO], None]) -> None:
    """/dev/full refuses every write with ENOSPC, as a full disk under the journal would."""
    full = open("/dev/full", "w")  # noqa: SIM115 - closing it flushes again, and fails again
    try:
        structlog_to(full)
        r = LogReceiver("console", log.Config(type="log"))
        with pytest.raises(DeliveryError) as e:
            await r.send(make_notification())
    finally:
        with contextlib.suppress(OSError):
            full.close()
    assert "log receiver 'console': cannot write: OSError: [Errno 28] No space left on device" == str(e.value)


async def test_a_closed_stdout_is_not_delivered(tmp_path: Path, structlog_to: Callable[[TextIO], None]) -> None:
    with open(tmp_path / "stdout", "w") as stdout:
        structlog_to(stdout)
        r = LogReceiver("console", log.Config(type="log"))
        await r.send(make_notification())  # writable: delivered, one line
        stdout.close()
        with pytest.raises(DeliveryError, match="I/O operation on closed file"):
            await r.send(make_notification())
    assert len((tmp_path / "stdout").read_text().splitlines()) == 1


async def test_the_outbox_keeps_a_page_the_log_could_not_take(tmp_path: Path) -> None:
    """Through the real outbox: while the stream is closed the row stays pending with the
    error (retried, the receiver failing); once it can write again it is delivered once."""
    conn = open_db(tmp_path)
    clock = [T0]

    class Reopen:
        """The receiver's stream: closed for the first attempt, writable afterwards."""

        def __init__(self) -> None:
            self.closed_one = io.StringIO()
            self.closed_one.close()
            self.good = io.StringIO()
            self.current: io.StringIO = self.closed_one

        def write(self, text: str) -> int:
            return self.current.write(text)

        def flush(self) -> None:
            self.current.flush()

    stream = Reopen()
    receiver = LogReceiver("console", log.Config(type="log"), ReceiverContext(stream=stream))  # type: ignore[arg-type]
    with transaction(conn):
        enqueue(conn, make_notification(receiver="console"), T0)

    async def sleep(seconds: float) -> None:
        clock[0] += timedelta(seconds=seconds)
        stream.current = stream.good  # the write side came back while the outbox waited
        await asyncio.sleep(0)

    outbox = Outbox(conn, {"console": receiver}, now=lambda: clock[0], sleep=sleep)
    with structlog.testing.capture_logs() as logs:
        await outbox.drain()
    retries = [e for e in logs if e["event"] == "notification_retry"]
    assert len(retries) == 1 and "cannot write: ValueError" in retries[0]["error"]
    assert retries[0]["message"].startswith(
        "page for incident 12 (P1 RedisDown) not delivered to console: log receiver 'console': cannot write")
    rows = list_rows(conn)
    assert [(r.state, r.attempts) for r in rows] == [("delivered", 2)]
    assert stream.good.getvalue().count("INCIDENT UPDATE - P1") == 1
    conn.close()
