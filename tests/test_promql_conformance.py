"""Prometheus's own PromQL test files through our engine (tests/promqltest/harness.py).

Fails when fewer cases pass than the figure the engine reached; skipped when the folder of test
files is absent (it lives beside the checkout, not in it: see the harness docstring).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "promqltest"))

import harness  # noqa: E402

# Cases that pass today (values, errors and annotations, native histograms included), out of
# every eval command in the folder (skips count as not passed): all 1,244.
MIN_PASSED = 1244


def test_conformance_does_not_regress() -> None:
    folder = harness.test_dir()
    if not folder.is_dir():
        pytest.skip(f"no PromQL test folder at {folder} (set PROMQLTEST_DIR)")
    results = harness.run_all(folder)
    passed, failed, skipped = harness.summary(results)
    assert passed + failed + skipped > 1000, "the folder holds fewer cases than expected"
    failures = [f"{r.case.file}:{r.case.line} {r.case.query}: {r.reason}" for rs in results.values() for r in rs if r.status == "failed"]
    assert passed >= MIN_PASSED, f"{passed} passed (< {MIN_PASSED}):\n" + "\n".join(failures[:40])
