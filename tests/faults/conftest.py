"""Fixtures of the fault matrix: a stand-in BFF process and one `Rig` per row.

Every test in this folder carries the `faults` marker (`pytest -m faults` runs the matrix
alone); nothing deselects it, so `make test` runs it with the rest of the suite.
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.faults.harness import Rig
from tests.servers import PostgresServer, RedisServer

HERE = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "faults: the end-to-end fault-injection matrix (tests/faults/)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.faults)


@pytest.fixture(scope="session")
def bff_process() -> Iterator[str]:
    """A process standing in for the BFF for the `process` check (`BFF_PROCESS_PATTERN`):
    the BFF of the matrix is the FakeBff inside pytest, and no `node ... bff` runs here.
    Its command line carries a unique word, the pattern; it ends when its stdin closes,
    so it does not outlive pytest."""
    word = f"node-bff-fault-matrix-{uuid.uuid4().hex[:12]}"
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()", word],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield re.escape(word)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture
async def make_rig(tmp_path: Path, redis_up: RedisServer, postgres_up: PostgresServer,
                   bff_process: str) -> AsyncIterator[Callable[..., Rig]]:
    """`make_rig(extra_rules=[...], platform_events=False, daemon_args=())`: a Rig on this test's servers, not started yet (for a row
    that prepares Redis before the daemon starts). Teardown stops what was started and asserts
    the daemon exited cleanly."""
    made: list[Rig] = []

    def make(extra_rules: Sequence[Mapping[str, Any]] = (), platform_events: bool = False,
             daemon_args: Sequence[str] = ()) -> Rig:
        r = Rig(tmp_path / f"rig{len(made)}", redis=redis_up, postgres=postgres_up, process_pattern=bff_process,
                extra_rules=extra_rules, platform_events=platform_events, daemon_args=daemon_args)
        made.append(r)
        return r

    yield make
    for r in made:
        rc = await r.close()  # None: it ignored SIGTERM and was killed (a DaemonDidNotStop warning)
        assert rc in (None, 0), f"the daemon exited with {rc}:\n{r.daemon.stderr.decode()[-2000:]}"


@pytest.fixture
async def rig(make_rig: Callable[..., Rig]) -> Rig:
    """A started row: healthy servers, fakes, the daemon on the derived config, quiet."""
    r = make_rig()
    await r.start()
    return r
