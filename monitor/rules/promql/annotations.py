"""Prometheus's warnings and infos about a query, and where in its text they point.

The messages are Prometheus's own (`util/annotations/annotations.go`); the position is the
line:column of the function call (or of one of its arguments) the message is about. Equal
subtrees are shared in our tree, so the position is that of the first call of the function in
the text.
"""

from __future__ import annotations

import math

SORT_IN_RANGE = "sort is ineffective for range queries since results are always ordered by labels"
NOT_A_COUNTER = 'metric might not be a counter, name does not end in _total/_sum/_count/_bucket: "{name}"'
BAD_BUCKET_LABEL = 'bucket label "le" is missing or has a malformed value of "{le}" for metric name "{name}"'
MONOTONICITY = (
    "input to histogram_quantile needed to be fixed for monotonicity (see "
    "https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile) "
    'for metric name "{name}"'
)


def go_g(v: float) -> str:
    """Go's %g for the numbers in messages."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    text = f"{v:g}"
    return text


def invalid_quantile(q: float) -> str:
    return f"quantile value should be between 0 and 1, got {go_g(q)}"


def _skip_string(text: str, i: int) -> int:
    quote = text[i]
    i += 1
    while i < len(text) and text[i] != quote:
        i += 2 if text[i] == "\\" and quote != "`" else 1
    return i + 1


def _find_call(text: str, func: str) -> int:
    """Offset of the first `func` followed by its arguments (modifiers like `by (x)` allowed)."""
    i = 0
    while True:
        i = text.find(func, i)
        if i < 0:
            return -1
        before = text[i - 1] if i > 0 else " "
        after = text[i + len(func) : i + len(func) + 1]
        if not (before.isalnum() or before in "_:") and not (after.isalnum() or after in "_:"):
            return i
        i += len(func)


def call_position(text: str, func: str, arg: int) -> tuple[int, int]:
    """1-based (line, column) of call `func` (arg -1) or of its argument number `arg`."""
    start = _find_call(text, func)
    if start < 0:
        return 1, 1
    offset = start
    if arg >= 0:
        i = start + len(func)
        # skip `by (...)`/`without (...)` written before the arguments
        while True:
            while i < len(text) and text[i].isspace():
                i += 1
            word = "by" if text.startswith("by", i) else "without" if text.startswith("without", i) else ""
            end = i + len(word)
            if word and (end >= len(text) or not (text[end].isalnum() or text[end] == "_")):
                i = text.find(")", i) + 1
                continue
            break
        if i < len(text) and text[i] == "(":
            i += 1
            depth = 0
            current = 0
            while i < len(text):
                while current == arg and i < len(text) and text[i].isspace():
                    i += 1
                if current == arg and depth == 0:
                    offset = i
                    break
                ch = text[i]
                if ch in "\"'`":
                    i = _skip_string(text, i)
                    continue
                if ch in "([{":
                    depth += 1
                elif ch in ")]}":
                    if depth == 0:
                        break
                    depth -= 1
                elif ch == "," and depth == 0:
                    current += 1
                i += 1
    line = text.count("\n", 0, offset) + 1
    col = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, col
