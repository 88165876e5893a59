"""Tokens of the rule expressions, with their 0-based columns, and `ExprError` that points at one.

Strings: double or single quotes with Go escapes (`\\n`, `\\"`, `\\x41`, `\\u00e9`, octal `\\101`), or
backticks without escapes, as Prometheus's lexer reads them (`promql/parser/lex.go`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass


class ExprError(Exception):
    """An expression outside the subset: `position` is the 0-based column of `token`."""

    def __init__(self, position: int, token: str, message: str, hint: str = "") -> None:
        self.position = position
        self.token = token
        self.message = message
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.message} at column {self.position + 1}"
        return f"{text} ({self.hint})" if self.hint else text


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # ident, string, number, op, punct, eof
    text: str  # as written in the expression
    pos: int
    value: str | float | None = None  # the unquoted string or the number


_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_NUMBER = re.compile(r"0[xX][0-9a-fA-F]+|(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NUMBER_TAIL = re.compile(r"[A-Za-z0-9_.]+")
_DURATION = re.compile(r"(?:[0-9]+(?:ms|s|m|h|d|w|y))+(?![A-Za-z0-9_.])")
_OPS = ("=~", "!~", "!=", ">=", "<=", "==", "=", ">", "<", "+", "-", "*", "/", "%", "^", "@")
_PUNCT = "{}(),[]"
_DIGITS = "0123456789"
_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}
_NUMERIC_ESCAPES = {"x": (2, 16), "u": (4, 16), "U": (8, 16)}


def _scan_string(text: str, start: int) -> Token:
    quote = text[start]
    i = start + 1
    if quote == "`":
        end = text.find("`", i)
        if end < 0:
            raise ExprError(start, text[start:], "unterminated raw string")
        return Token("string", text[start : end + 1], start, text[i:end])
    out: list[str] = []
    while True:
        if i >= len(text) or text[i] == "\n":
            raise ExprError(start, text[start:i], "unterminated quoted string")
        ch = text[i]
        if ch == quote:
            return Token("string", text[start : i + 1], start, "".join(out))
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        esc = text[i + 1] if i + 1 < len(text) else ""
        if not esc or esc == "\n":
            raise ExprError(start, text[start : i + 1], "unterminated quoted string")
        if esc in _SIMPLE_ESCAPES or esc == quote:
            out.append(_SIMPLE_ESCAPES.get(esc, esc))
            i += 2
        elif esc in _NUMERIC_ESCAPES or esc in "01234567":
            width, base = _NUMERIC_ESCAPES.get(esc, (3, 8))
            first = i + 1 if base == 8 else i + 2
            digits = text[first : first + width]
            valid = "01234567" if base == 8 else "0123456789abcdefABCDEF"
            if len(digits) != width or any(c not in valid for c in digits):
                raise ExprError(i, text[i : first + width], "invalid escape sequence in string")
            code = int(digits, base)
            if code > 0x10FFFF or (base == 8 and code > 255) or 0xD800 <= code <= 0xDFFF:
                raise ExprError(i, text[i : first + width], "escape sequence is not a valid character")
            out.append(chr(code))
            i = first + width
        else:
            raise ExprError(i, text[i : i + 2], "unknown escape sequence in string")


def iter_tokens(text: str) -> Iterator[Token]:
    """Tokens of `text` with their positions, ending with `eof`; lazy, so that the parser
    reports the first offending token from the left, whether lexical or syntactic."""
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in " \t\r\n":
            i += 1
        elif ch == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif ch in "\"'`":
            tok = _scan_string(text, i)
            yield tok
            i += len(tok.text)
        elif ch in _DIGITS or (ch == "." and i + 1 < n and text[i + 1] in _DIGITS):
            if d := _DURATION.match(text, i):
                yield Token("duration", d.group(0), i)
                i = d.end()
                continue
            m = _NUMBER.match(text, i)
            assert m is not None
            tail = _NUMBER_TAIL.match(text, m.end())
            if tail:
                word = text[i : tail.end()]
                raise ExprError(i, word, f"invalid number {word!r}")
            word = m.group(0)
            try:
                value = float(int(word, 16)) if word[:2] in ("0x", "0X") else float(word)
            except OverflowError:  # a hex number past 1.8e308 (a decimal one reads as Inf)
                shown = word if len(word) <= 20 else word[:20] + "…"
                raise ExprError(i, word, f"number {shown} is too large (beyond ±1.8e308)") from None
            yield Token("number", word, i, value)
            i = m.end()
        elif m := _IDENT.match(text, i):
            word = m.group(0)
            if word.lower() in ("inf", "nan"):
                yield Token("number", word, i, float(word.lower()))
            else:
                yield Token("ident", word, i, word)
            i = m.end()
        elif ch in _PUNCT:
            yield Token("punct", ch, i)
            i += 1
        else:
            op = next((o for o in _OPS if text.startswith(o, i)), None)
            if op is None:
                raise ExprError(i, ch, f"unexpected character {ch!r}")
            yield Token("op", op, i)
            i += len(op)
    yield Token("eof", "", n)


def tokenize(text: str) -> list[Token]:
    """All tokens of `text` (raises at the first lexical error)."""
    return list(iter_tokens(text))
