"""README.md's benchmark figures are the RESULTS files' (bench/readme_figures.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.readme_figures import (
    BEGIN,
    BENCH_RESULTS,
    COMPARE_RESULTS,
    END,
    README,
    FormatError,
    figures,
    rewrite,
)


def test_readme_is_in_step_with_the_results_files() -> None:
    """`--check` changes nothing and finds nothing to change: run `make readme-figures` if this fails."""
    before = README.read_text()
    done = subprocess.run(
        [sys.executable, str(README.parent / "bench" / "readme_figures.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert README.read_text() == before


def test_the_figures_follow_the_measurements() -> None:
    bench, compare = BENCH_RESULTS.read_text(), COMPARE_RESULTS.read_text()
    shown = figures(bench, compare)
    assert "| Redis crash → page | p50 6 ms (held connection) | p50 1187 ms |" in shown
    faster = compare.replace(
        "| Redis killed | portal-monitor, watch: true | 30 | 5 ms | 6 ms |",
        "| Redis killed | portal-monitor, watch: true | 30 | 5 ms | 9 ms |",
    )
    assert faster != compare
    assert "p50 9 ms (held connection)" in figures(bench, faster)
    # a target met now drops out of the missed list; one missed appears in it
    met = compare.replace(
        "| 0.30 vs 1.03 CPU s/min = 0.29× | **met** |", "| 0.30 vs 1.03 CPU s/min = 0.29× | **missed** |"
    )
    assert met != compare
    assert "- less CPU for the same work: 0.30 vs 1.03 CPU s/min = 0.29×" in figures(bench, met)
    assert "less CPU for the same work" not in shown


def test_numbers_round_half_up_as_read() -> None:
    """0.305 CPU s/s is shown 0.31 (a binary float would round it to 0.3)."""
    assert "0.31 CPU s/s" in figures(BENCH_RESULTS.read_text(), COMPARE_RESULTS.read_text())


def test_a_changed_results_format_is_an_error_not_a_wrong_figure() -> None:
    compare = COMPARE_RESULTS.read_text().replace("| fault | stack | runs |", "| fault | who | runs |")
    with pytest.raises(FormatError, match="columns"):
        figures(BENCH_RESULTS.read_text(), compare)
    with pytest.raises(FormatError, match="want one"):
        rewrite("no markers here\n", "x")


def test_rewrite_replaces_only_between_the_markers() -> None:
    text = f"before\n{BEGIN}\nold\n{END}\nafter\n"
    once = rewrite(text, "new")
    assert once.startswith(f"before\n{BEGIN}\n") and once.endswith(f"new\n{END}\nafter\n")
    assert "old" not in once
    assert rewrite(once, "new") == once


def test_the_log_throughput_goals_follow_the_real_logger_rows() -> None:
    """A `cpu` rate below its goal is listed as missed, with that rate; at the goal it is not."""
    bench, compare = BENCH_RESULTS.read_text(), COMPARE_RESULTS.read_text()
    row = next(line for line in bench.splitlines() if line.startswith("| pino-http (") and "| cpu |" in line)
    cells = row.split("|")
    fast = 6  # | log | rate | iterate | orjson.loads | general | fast |
    for rate, listed in (("700,001", True), ("800,000", False)):
        changed = bench.replace(row, "|".join([*cells[:fast], f" {rate} ", *cells[fast + 1 :]]))
        assert changed != bench
        shown = figures(changed, compare)
        line = f"- log lines written by pino-http: {rate} lines per CPU second, target ≥ 800,000"
        assert (line in shown) is listed
        assert ("log lines written by pino-http" in shown) is listed
