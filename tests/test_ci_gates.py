"""The gates of the suite itself: a missing tool skips locally and fails under CI, and the
quick layer's list of slow tests names tests that exist.

`require_tool` (tests/conftest.py) is run in a child pytest on a one-test file, with a PATH
that lacks the tool: with `CI=true` the test fails with the reason, without it the test is
skipped with the same reason.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import SLOW_MODULES, SLOW_TESTS, TESTS

ROOT = TESTS.parent
REASON = "redis-server is not installed (probe)"
PROBE = f"""
from tests.conftest import require_tool


def test_needs_redis_server():
    require_tool("redis-server", {REASON!r})
"""


def run_probe(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    probe = tmp_path / "test_probe.py"
    probe.write_text(PROBE)
    empty_bin = tmp_path / "bin"  # the PATH: a directory with no program in it
    empty_bin.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    env.update(PATH=str(empty_bin), PYTHONPATH=str(ROOT))
    if ci is not None:
        env["CI"] = ci
    (tmp_path / "pytest.ini").write_text("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(probe)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_missing_tool_fails_under_ci(tmp_path: Path) -> None:
    done = run_probe(tmp_path, "true")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 failed" in done.stdout and REASON in done.stdout, done.stdout
    assert "CI=true: a missing tool fails instead of skipping" in done.stdout


def test_a_missing_tool_skips_outside_ci(tmp_path: Path) -> None:
    done = run_probe(tmp_path, None)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 skipped" in done.stdout and f"SKIPPED [1] test_probe.py:6: {REASON}" in done.stdout, done.stdout


def _test_functions(module: Path) -> set[str]:
    tree = ast.parse(module.read_text())
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_")
    }


def test_the_slow_lists_name_existing_tests() -> None:
    """A renamed test would otherwise drop out of SLOW_TESTS silently and slow the quick layer."""
    for module in SLOW_MODULES:
        assert (TESTS / module).is_file(), module
    for name in SLOW_TESTS:
        module, _, function = name.partition("::")
        assert function in _test_functions(TESTS / module), f"SLOW_TESTS names {name}, which does not exist"
