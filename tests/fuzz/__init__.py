"""Bad-input fuzzing (hypothesis): config loader, rule parser, log line parser, reply parsers.

Every fuzz test states one property: for any input, the code under test gives a valid result
or the clear error it documents (`ConfigError` lines of `file:line:col: path: message`, an
`ExprError` pointing at the offending token, a counted parse error, a `Verdict`), never any
other exception. Each test counts its inputs by outcome with an `Outcomes` and prints the
tally (visible with `pytest -rA`), so "how many inputs did it run" has an answer.

A crash the fuzzer found and that is not fixed yet is listed as a `KnownBug` (the exception
type, its message, the minimal failing input and where the fix belongs). While listed, the
fuzz tests count such inputs as `known:<key>` instead of failing, and a strict-xfail test
replays the minimal input: once the bug is fixed that test XPASSes, which fails the run and
says to delete the entry. Anything else unexpected fails the fuzz test with the input.
"""

from __future__ import annotations

import re
import traceback
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest


@dataclass(frozen=True)
class KnownBug:
    """A crash found by fuzzing, reported to the lead, not fixed yet."""

    key: str  # short name, used in the counts: known:<key>
    exc: type[BaseException]
    message: str  # regex searched in str(exception)
    example: Any  # the minimal failing input
    fix_in: str  # the file (and function) where the fix belongs
    in_file: str = ""  # regex on a traceback frame's file name, to tell apart bugs raising alike

    def matches(self, e: BaseException) -> bool:
        if not isinstance(e, self.exc) or re.search(self.message, str(e)) is None:
            return False
        if not self.in_file:
            return True
        return any(re.search(self.in_file, f.filename) for f in traceback.extract_tb(e.__traceback__))


@dataclass
class Outcomes:
    """How many inputs a fuzz test ran, by outcome ("valid", "config_error", "known:…")."""

    name: str
    counts: Counter[str] = field(default_factory=Counter)

    def add(self, outcome: str) -> None:
        self.counts[outcome] += 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def known(self, e: BaseException, bugs: tuple[KnownBug, ...]) -> bool:
        """Count `e` as a listed known bug and say so; False when it is a new problem."""
        for bug in bugs:
            if bug.matches(e):
                self.add(f"known:{bug.key}")
                return True
        return False

    def report(self) -> str:
        parts = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        return f"fuzz {self.name}: {self.total} inputs ({parts})"


def known_bug_cases(bugs: tuple[KnownBug, ...]) -> list[Any]:
    """pytest params replaying each known bug's minimal input, as strict xfails."""
    return [pytest.param(b, id=b.key, marks=pytest.mark.xfail(
        strict=True, raises=b.exc,
        reason=f"known bug {b.key}: {b.exc.__name__} on {b.example!r:.80} (fix in {b.fix_in}); "
               "when this XPASSes, delete the KnownBug entry")) for b in bugs]
