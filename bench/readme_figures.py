"""README.md's benchmark figures, rewritten from the RESULTS files that the benchmarks write.

What: reads `bench/RESULTS.md` (`make bench`) and `bench/compare/RESULTS.md` (`make bench-compare`)
and replaces what lies between `<!-- figures:begin -->` and `<!-- figures:end -->` in README.md:
the headline table (portal-monitor beside the reference stack) and the list of missed targets.
Why: a figure typed by hand into the README drifts from the measurement it quotes; this way the
README says what the last run measured, and `--check` (run by the tests) fails when it does not.

    python bench/readme_figures.py            # rewrite README.md (`make readme-figures`)
    python bench/readme_figures.py --check    # exit 1, with a diff, if README.md is out of step

Standard library only. A RESULTS file whose tables no longer have the expected columns or rows
is an error naming what is missing, never a silently wrong figure.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BENCH_RESULTS = ROOT / "bench" / "RESULTS.md"
COMPARE_RESULTS = ROOT / "bench" / "compare" / "RESULTS.md"
BEGIN = "<!-- figures:begin -->"
END = "<!-- figures:end -->"
NOTE = (
    "<!-- written by `make readme-figures` (bench/readme_figures.py) from bench/RESULTS.md and "
    "bench/compare/RESULTS.md: change those, then run it -->"
)
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}


class FormatError(Exception):
    """A RESULTS file does not have the table, column or row the README quotes."""


@dataclass(frozen=True)
class Table:
    source: str  # file name, for errors
    header: list[str]
    rows: list[list[str]]

    def column(self, prefix: str) -> int:
        for i, name in enumerate(self.header):
            if name.startswith(prefix):
                return i
        raise FormatError(f"{self.source}: no column starting {prefix!r} in {self.header}")

    def row(self, **match: str) -> dict[str, str]:
        """The one row whose cells in the named columns (by column-name prefix) equal the values."""
        cols = {self.column(k.replace("_", " ")): v for k, v in match.items()}
        found = [r for r in self.rows if all(r[i] == v for i, v in cols.items())]
        if len(found) != 1:
            raise FormatError(f"{self.source}: {len(found)} rows match {match} (want exactly one)")
        return dict(zip(self.header, found[0], strict=True))


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def tables(text: str, source: str) -> list[Table]:
    """Every Markdown pipe table in `text`."""
    out: list[Table] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines) - 1:
        if lines[i].startswith("|") and re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", lines[i + 1].strip()):
            header = _cells(lines[i])
            rows = []
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            out.append(Table(source, header, rows))
        else:
            i += 1
    return out


def table_with(all_tables: list[Table], *columns: str) -> Table:
    """The one table whose header starts with these column names."""
    found = [t for t in all_tables if t.header[: len(columns)] == list(columns)]
    if len(found) != 1:
        source = all_tables[0].source if all_tables else "?"
        raise FormatError(f"{source}: {len(found)} tables with columns {list(columns)} (want exactly one)")
    return found[0]


def number(cell: str, unit: str = "") -> Decimal:
    """The first number in a cell (thousands separators allowed); the cell must end with `unit`."""
    m = re.search(r"-?\d[\d,]*(?:\.\d+)?", cell)
    if not m or (unit and not cell.endswith(f" {unit}")):
        raise FormatError(f"{cell!r} is not a number in {unit or 'no unit'}")
    return Decimal(m[0].replace(",", ""))


def rounded(value: Decimal, places: int) -> str:
    """Rounded half up (0.305 → 0.31), as the figure is read, not as a binary float rounds."""
    return str(value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))


def seconds_range(ms: list[Decimal]) -> str:
    low, high = rounded(min(ms) / 1000, 2), rounded(max(ms) / 1000, 2)
    return f"p50 {low} s" if low == high else f"p50 {low}–{high} s"


def cores(cpu_s: Decimal, wall_s: Decimal) -> str:
    n = rounded(cpu_s / wall_s, 1).removesuffix(".0")
    return f"{n} core" if n == "1" else f"{n} cores"


def processes(n: Decimal) -> str:
    count = int(n)
    word = NUMBER_WORDS.get(count, str(count))
    return f"{word} process" if count == 1 else f"{word} processes"


def figures(bench_text: str, compare_text: str) -> str:
    """The Markdown between the markers: the headline table and the missed targets."""
    compare = tables(compare_text, "bench/compare/RESULTS.md")
    detection = table_with(compare, "fault", "stack", "runs", "min", "p50", "max")
    footprint = table_with(compare, "stack", "processes", "RSS, end of 60 s steady")
    logs = table_with(compare, "tool", "lines", "wall time", "lines/s", "CPU seconds")
    targets = table_with(compare, "target (issue 6)", "measured", "verdict")

    def p50(fault: str, stack: str) -> Decimal:
        return number(detection.row(fault=fault, stack=stack)["p50"], "ms")

    ours_polling = [
        number(r[detection.column("p50")], "ms")
        for r in detection.rows
        if r[1].startswith("portal-monitor") and "watch: true" not in r[1]
    ]
    reference_polling = [number(r[detection.column("p50")], "ms") for r in detection.rows if r[1] == "reference"]
    if not ours_polling or len(ours_polling) != len(reference_polling):
        raise FormatError("bench/compare/RESULTS.md: the detection table has no polling rows for both stacks")
    ours, ref = footprint.row(stack="portal-monitor"), footprint.row(stack="reference")
    rss, cpu = "RSS, end of 60 s steady", "CPU s per minute"
    check = logs.row(tool="portal-monitor logfile check")
    mtail = logs.row(tool="mtail")

    bench = tables(bench_text, "bench/RESULTS.md")
    scheduler = table_with(bench, "http checks at 1 s", "CPU s/s", "peak RSS")
    thousand = scheduler.row(http_checks_at_1_s="1000")
    p99 = next(k for k in thousand if k.startswith("delay p99"))

    rows = [
        (
            "Redis crash → page",
            f"p50 {p50('Redis killed', 'portal-monitor, watch: true')} ms (held connection)",
            f"p50 {p50('Redis killed', 'reference')} ms",
        ),
        ("fault → page at 1 s polling", seconds_range(ours_polling), seconds_range(reference_polling)),
        (
            "resident memory",
            f"{rounded(number(ours[rss], 'MiB'), 0)} MiB, {processes(number(ours['processes']))}",
            f"{rounded(number(ref[rss], 'MiB'), 0)} MiB, {processes(number(ref['processes']))}",
        ),
        (
            "CPU for the same checks",
            f"{rounded(number(ours[cpu]), 2)} CPU s/min",
            f"{rounded(number(ref[cpu]), 2)} CPU s/min",
        ),
        (
            "BFF log lines/s",
            f"{rounded(number(check['lines/s']) / 1_000_000, 2)} M "
            f"(JSON, {cores(number(check['CPU seconds']), number(check['wall time'], 's'))})",
            f"mtail {rounded(number(mtail['lines/s']) / 1_000_000, 2)} M "
            f"({cores(number(mtail['CPU seconds']), number(mtail['wall time'], 's'))})",
        ),
        (
            "1000 `http` checks at 1 s",
            f"{rounded(number(thousand['CPU s/s']), 2)} CPU s/s, schedule delay p99 "
            f"{rounded(number(thousand[p99], 'ms'), 0)} ms, {rounded(number(thousand['peak RSS'], 'MB'), 0)} MB RSS",
            "—",
        ),
    ]
    out = [
        "| | portal-monitor | reference stack (Prometheus + Alertmanager + 3 exporters, `group_wait: 0`) |",
        "|---|---|---|",
        *(f"| {a} | {b} | {c} |" for a, b, c in rows),
        "",
    ]
    error = re.search(r"known to about (±[\d.]+ s) \(one standard error\)", compare_text)
    missed = []
    for target, measured, verdict in (r[:3] for r in targets.rows):
        if "missed" not in verdict.lower():
            continue
        if error and target.startswith("detection p50"):
            measured += f"; a p50 here is known to about {error[1]} (one standard error)"
        missed.append(f"- {target}: {measured}")
    missed += [f"- {m}" for m in scheduler_missed(bench_text, thousand, p99)]
    missed += [f"- {m}" for m in logfile_missed(bench_text, bench)]
    if missed:
        out += [
            "Targets missed in the last runs (`bench/compare/RESULTS.md`; the 1000 checks and the lines "
            "written by real loggers: `bench/RESULTS.md`):",
            "",
        ]
        out += missed
    else:
        out.append("Every target was met in the last runs.")
    return "\n".join(out)


def scheduler_missed(bench_text: str, thousand: dict[str, str], p99: str) -> list[str]:
    """The scheduler benchmark's targets (its `Targets:` line) that the 1000-check row misses."""
    m = re.search(r"^Targets: 1000 checks at 1 s in one process, (.*?)\n\n", bench_text, re.M | re.S)
    if not m:
        raise FormatError("bench/RESULTS.md: no `Targets: 1000 checks at 1 s ...` paragraph")
    line = " ".join(m[1].split())
    limits = [
        ("scheduling delay p99", r"scheduling delay p99 < (\d+(?:\.\d+)?) ms", number(thousand[p99], "ms"), "ms"),
        ("CPU", r"< (\d+(?:\.\d+)?) CPU s/s", number(thousand["CPU s/s"]), "CPU s/s"),
        ("RSS", r"< (\d+(?:\.\d+)?) MB RSS", number(thousand["peak RSS"], "MB"), "MB"),
    ]
    out = []
    for name, pattern, value, unit in limits:
        limit = re.search(pattern, line)
        if not limit:
            raise FormatError(f"bench/RESULTS.md: no {name} limit in the targets line {line!r}")
        if value >= Decimal(limit[1]):
            out.append(f"1000 `http` checks at 1 s in one process: {name} {value} {unit}, target < {limit[1]} {unit}")
    return out


def logfile_missed(bench_text: str, bench: list[Table]) -> list[str]:
    """The log check's throughput goals on lines written by real loggers (its `Targets:`
    paragraph) that the `cpu` rows miss."""
    m = re.search(r"^Targets: the fast path (.*?)\n\n", bench_text, re.M | re.S)
    if not m:
        raise FormatError("bench/RESULTS.md: no `Targets: the fast path ...` paragraph")
    line = " ".join(m[1].split())
    table = table_with(bench, "log (written by)", "rate")
    out = []
    for name, pattern, prefix in (
        ("real winston (the BFF's request logger)", r"≥ ([\d,]+) lines/s on 2 M lines written by real winston", "BFF"),
        ("pino-http", r"and ≥ ([\d,]+) on pino-http", "pino-http"),
    ):
        goal = re.search(pattern, line)
        if not goal:
            raise FormatError(f"bench/RESULTS.md: no goal for {name} in the targets line {line!r}")
        rows = [r for r in table.rows if r[0].startswith(prefix) and r[1] == "cpu"]
        if len(rows) != 1:
            raise FormatError(f"bench/RESULTS.md: {len(rows)} `cpu` rows for {prefix!r} (want exactly one)")
        row = dict(zip(table.header, rows[0], strict=True))
        rate, limit = number(row["fast"]), number(goal[1])
        if rate < limit:
            out.append(
                f"log lines written by {name}: {rate:,} lines per CPU second, target ≥ {limit:,} "
                f"({row['fast / orjson']} of `orjson.loads` on the same lines)"
            )
    return out


def rewrite(readme: str, block: str) -> str:
    """`readme` with the text between the markers replaced by `block`."""
    if readme.count(BEGIN) != 1 or readme.count(END) != 1 or readme.index(BEGIN) > readme.index(END):
        raise FormatError(f"README.md: want one {BEGIN} before one {END}")
    head, rest = readme.split(BEGIN)
    _, tail = rest.split(END)
    return f"{head}{BEGIN}\n{NOTE}\n{block}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if README.md is out of step")
    args = parser.parse_args(argv)
    try:
        block = figures(BENCH_RESULTS.read_text(), COMPARE_RESULTS.read_text())
        old = README.read_text()
        new = rewrite(old, block)
    except FormatError as e:
        print(f"readme_figures: {e}", file=sys.stderr)
        return 2
    if args.check:
        if new != old:
            sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), new.splitlines(True), "README.md", "new"))
            print("README.md is out of step with the RESULTS files: run `make readme-figures`", file=sys.stderr)
            return 1
        return 0
    if new != old:
        README.write_text(new)
        print("README.md: figures rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
