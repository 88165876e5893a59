"""Where a rule expression's error is in the file, and series names as promtool's tests write them.

Expressions themselves are PromQL, parsed by `monitor.rules.promql`; this module maps the
parser's column inside an `expr:` value to the file's line and column (`locate`), and reads an
`input_series` name (`parse_series`).
"""

from __future__ import annotations

from collections.abc import Sequence

from monitor.rules.promql import ExprError, parse
from monitor.rules.promql.parse import VectorSel

Labels = dict[str, str]


def parse_series(text: str) -> tuple[str, Labels]:
    """`name{a="b", ...}` (a selector with `=` matchers only) to its name and labels; the name
    is "" for `{a="b"}` and `{}` (a sample without one, as promtool's exp_samples write it)."""
    if text.strip() == "{}":
        return "", {}
    expr = parse(text)
    root = expr.root
    if not isinstance(root, VectorSel) or root.offset or root.at is not None or root.or_groups:
        raise ExprError(0, text, 'a series is a metric name with `=` labels, e.g. up{job="x"}')
    labels: Labels = {}
    name = root.name
    for m in root.matchers:
        if m.op != "=":
            raise ExprError(0, text, f"a series has only '=' labels, not {m.name}{m.op}")
        if m.name == "__name__":
            name = m.value
        else:
            labels[m.name] = m.value
    return name or "", labels


def locate(lines: Sequence[str] | None, line: int, col: int, text: str, position: int) -> tuple[int, int]:
    """The 1-based file (line, column) of `position` in the YAML scalar `text` found at (line, col).

    `lines` is the file's text split in lines (None: assume a plain one-line scalar). A plain
    scalar maps 1:1; a quoted one starts one column later, and its escapes (`\\"`, `''`) take
    more characters in the file than in the value; a block scalar (`|`, `>`) starts on the
    next line at its indentation. A folded (`>`) or multi-line scalar maps to its start.
    """
    src = lines[line - 1] if lines and 0 < line <= len(lines) else None
    first = src[col - 1] if src is not None and col - 1 < len(src) else ""
    if first == "|":
        row = text.count("\n", 0, position)
        start = text.rfind("\n", 0, position) + 1
        body = next((x for x in lines[line:] if x.strip()), "") if lines else ""
        indent = len(body) - len(body.lstrip(" "))  # the block's indentation: its first content line
        return line + 1 + row, indent + position - start + 1
    if (
        "\n" in text
        or first == ">"
        or (src is not None and first not in ('"', "'") and src[col - 1 : col - 1 + len(text)] != text)
    ):
        return line, col
    if first not in ('"', "'"):
        return line, col + position
    assert src is not None
    i, seen = col, 0  # i: 0-based index in the line of the value's next character
    while seen < position and i < len(src):
        if first == "'" and src.startswith("''", i):
            i += 2
        elif first == '"' and src[i] == "\\" and i + 1 < len(src):
            i += {"x": 4, "u": 6, "U": 10}.get(src[i + 1], 2)
        else:
            i += 1
        seen += 1
    if position < len(text) and not src.startswith(text[position], i) and src[i : i + 1] not in ("\\", "'"):
        return line, col  # the file is not what was loaded (edited since): point at the value
    return line, i + 1
