"""Annotation templates of alert rules: Prometheus's template language, filled in, never executed.

A template is text with `{{ ... }}` actions, as Prometheus writes them (Go's `text/template`
with Prometheus's functions). What an action may hold:

- the data: `$labels.NAME` (or `.Labels.NAME`), `$value` (`.Value`), `$externalURL`
  (`.ExternalURL`), `$externalLabels.NAME`, `$labels` alone (Go prints `map[k:v ...]`);
- literals: `"quoted"` (Go escapes), `` `raw` ``, numbers;
- functions: `humanize`, `humanize1024`, `humanizeDuration`, `humanizePercentage`,
  `humanizeTimestamp`, `printf`, `toUpper`, `toLower`, `title`, `index`;
- pipelines `{{ $value | humanize }}` (the piped value is the last argument), parentheses,
  comments `{{/* ... */}}` and Go's whitespace trimming `{{-` / `-}}`.

Nothing else: `if`, `range`, `query` and the other functions are refused when the rules are
loaded (`TemplateError`), never at the moment a page goes out. Values print as Go prints them
(`format_value`: `%v` of a float64), and the humanize functions follow Prometheus's
`template/template.go` digit for digit (`humanizeDuration` of 40.000574350357056 is `40s`).

A function that cannot use its argument (`humanize "abc"`) renders the annotation as
`<error expanding template: ...>`, as Prometheus does, instead of failing the evaluation.
An unknown label renders as the empty string (Prometheus renders with `missingkey=zero`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from monitor.rules.promql import ExprError


class TemplateError(ExprError):
    """A template Prometheus's language would refuse, or one outside what is filled in here."""


class _RenderError(Exception):
    """A function could not use its argument (rendered as `<error expanding template: ...>`)."""


@dataclass(frozen=True, slots=True)
class Context:
    """What a template sees besides the series' labels and value."""

    external_url: str = ""
    external_labels: Mapping[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------- values as Go prints them


def format_value(value: float) -> str:
    """A float as Go's `%v` prints a float64, which is what Prometheus shows for `{{ $value }}`.

    Go uses the shortest digits that read back exactly, in exponent form when the decimal
    exponent is below -4 or at least 6 (`strconv/ftoa.go`: "if precision was the shortest
    possible, use precision 6 for this decision"): 1800, 0.95, 1e+06, 1.234567e+06, 1e-05.
    """
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign, digits_t, exponent = Decimal(repr(value)).normalize().as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digits_t))
    nd = len(digits)
    dp = nd + exponent  # position of the decimal point relative to the digits
    exp = dp - 1
    neg = "-" if sign else ""
    if exp < -4 or exp >= 6:
        mantissa = digits[0] + ("." + digits[1:] if nd > 1 else "")
        return f"{neg}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if dp <= 0:
        return f"{neg}0.{'0' * -dp}{digits}"
    if dp >= nd:
        return f"{neg}{digits}{'0' * (dp - nd)}"
    return f"{neg}{digits[:dp]}.{digits[dp:]}"


def _special(v: float) -> str | None:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return None


def _g4(v: float) -> str:
    """Go's `%.4g` (C's, with Go's spelling of NaN and the infinities)."""
    return _special(v) or f"{v:.4g}"


def humanize(v: float) -> str:
    """1234567 → 1.235M, 0.0012 → 1.2m (SI prefixes, 4 significant digits)."""
    if v == 0 or math.isnan(v) or math.isinf(v):
        return _g4(v)
    prefix = ""
    if abs(v) >= 1:
        for p in ("k", "M", "G", "T", "P", "E", "Z", "Y"):
            if abs(v) < 1000:
                break
            prefix, v = p, v / 1000
        return _g4(v) + prefix
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(v) >= 1:
            break
        prefix, v = p, v * 1000
    return _g4(v) + prefix


def humanize1024(v: float) -> str:
    """1048576 → 1Mi (binary prefixes, 4 significant digits)."""
    if abs(v) <= 1 or math.isnan(v) or math.isinf(v):
        return _g4(v)
    prefix = ""
    for p in ("ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"):
        if abs(v) < 1024:
            break
        prefix, v = p, v / 1024
    return _g4(v) + prefix


def humanize_duration(v: float) -> str:
    """Seconds as `1d 2h 3m 4s`, `40s`, `1.5s`, `250ms`."""
    if math.isnan(v) or math.isinf(v):
        return _g4(v)
    if v == 0:
        return _g4(v) + "s"
    if abs(v) >= 1:
        sign = "-" if v < 0 else ""
        v = abs(v)
        whole = _go_int64(v)
        seconds, minutes = _rem(whole, 60), _rem(_quo(whole, 60), 60)
        hours, days = _rem(_quo(whole, 3600), 24), _quo(whole, 86400)
        if days:
            return f"{sign}{days}d {hours}h {minutes}m {seconds}s"
        if hours:
            return f"{sign}{hours}h {minutes}m {seconds}s"
        if minutes:
            return f"{sign}{minutes}m {seconds}s"
        return f"{sign}{_g4(v)}s"
    prefix = ""
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(v) >= 1:
            break
        prefix, v = p, v * 1000
    return f"{_g4(v)}{prefix}s"


def _go_int64(v: float) -> int:
    """Go's `int64(v)`: truncated; out of range it is the minimum int64 (amd64's conversion)."""
    return int(v) if -(2.0**63) <= v < 2.0**63 else -(2**63)


def _quo(a: int, b: int) -> int:
    """Go's integer division (truncated toward zero)."""
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def _rem(a: int, b: int) -> int:
    """Go's `%` (the sign of the dividend)."""
    return a - _quo(a, b) * b


def humanize_percentage(v: float) -> str:
    """0.8125 → 81.25%."""
    return _g4(v * 100) + "%"


def humanize_timestamp(v: float) -> str:
    """Unix seconds as Go prints a UTC time, to the millisecond: `2026-12-07 17:44:28.5 +0000 UTC`."""
    if math.isnan(v) or math.isinf(v):
        return _g4(v)
    if not -(2.0**63) <= v * 1e9 < 2.0**63:
        raise _RenderError(
            f"humanizeTimestamp: {go_sprintf('%v', [v])} cannot be represented as a nanoseconds timestamp "
            "since it overflows int64"
        )
    ms = _quo(int(v * 1e9), 1_000_000)  # Prometheus's model.Time: milliseconds, truncated
    t = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    frac = f"{t.microsecond // 1000:03d}".rstrip("0")
    return t.strftime("%Y-%m-%d %H:%M:%S") + (f".{frac}" if frac else "") + " +0000 UTC"


# ---------------------------------------------------------------- printf, as Go's fmt


@dataclass(frozen=True, slots=True)
class _Int:
    """An integer constant of the template (`printf "%d" 3`): Go keeps it an int."""

    value: int


Value = str | float | _Int | Mapping[str, str]


def _go_type(v: Value) -> str:
    if isinstance(v, str):
        return "string"
    if isinstance(v, _Int):
        return "int"
    if isinstance(v, float):
        return "float64"
    return "map[string]string"


def _go_v(v: Value) -> str:
    """`%v` / what `{{ }}` prints."""
    if isinstance(v, str):
        return v
    if isinstance(v, _Int):
        return str(v.value)
    if isinstance(v, float):
        return format_value(v)
    return "map[" + " ".join(f"{k}:{val}" for k, val in sorted(v.items())) + "]"


def _go_quote(s: str) -> str:
    out = ['"']
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out) + '"'


_VERB = re.compile(r"%([-+# 0]*)(\d+)?(?:\.(\d*))?([a-zA-Z%])")


def go_sprintf(fmt: str, args: list[Value]) -> str:
    """Go's `fmt.Sprintf` for the verbs templates use: v s q d f F e E g G x X t %, with
    flags, width and precision; a wrong type prints as Go does (`%!d(float64=1.5)`)."""
    out: list[str] = []
    pos, n = 0, 0
    for m in _VERB.finditer(fmt):
        out.append(fmt[pos : m.start()])
        pos = m.end()
        flags, width, prec, verb = m.group(1), m.group(2), m.group(3), m.group(4)
        if verb == "%":
            out.append("%")
            continue
        if n >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        arg = args[n]
        n += 1
        out.append(_pad(_format_one(verb, flags, prec, arg), flags, width))
    out.append(fmt[pos:])
    if n < len(args):
        extra = ", ".join(f"{_go_type(a)}={_go_v(a)}" for a in args[n:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)


def _pad(text: str, flags: str, width: str | None) -> str:
    if not width or len(text) >= int(width):
        return text
    w = int(width)
    if "-" in flags:
        return text.ljust(w)
    if "0" in flags and text[:1] in "+- " and text[1:2].isdigit():
        return text[0] + text[1:].rjust(w - 1, "0")
    if "0" in flags and text[:1].isdigit():
        return text.rjust(w, "0")
    return text.rjust(w)


def _sign(text: str, flags: str, negative: bool) -> str:
    if negative:
        return text
    if "+" in flags:
        return "+" + text
    if " " in flags:
        return " " + text
    return text


def _format_one(verb: str, flags: str, prec: str | None, arg: Value) -> str:
    p = None if prec is None else int(prec or "0")
    bad = f"%!{verb}({_go_type(arg)}={_go_v(arg)})"
    if verb == "v":
        return _go_v(arg) if not isinstance(arg, float) or "+" not in flags else _sign(_go_v(arg), flags, arg < 0)
    if verb == "t":
        return bad
    if isinstance(arg, str):
        if verb == "s":
            return arg if p is None else arg[:p]
        if verb == "q":
            return _go_quote(arg if p is None else arg[:p])
        if verb in "xX":
            text = arg.encode().hex()
            return text.upper() if verb == "X" else text
        return bad
    if isinstance(arg, _Int):
        i = arg.value
        if verb == "d":
            return _sign(str(i), flags, i < 0)
        if verb in "xX":
            text = ("-" if i < 0 else "") + format(abs(i), "x" if verb == "x" else "X")
            return _sign(text, flags, i < 0)
        return bad
    if isinstance(arg, float):
        if verb in "fFeEgG":
            special = _special(arg)
            if special is not None:  # Go: NaN gets a sign only when asked; +Inf always has one
                if special == "NaN" and ("+" in flags or " " in flags):
                    return ("+" if "+" in flags else " ") + special
                if special == "+Inf" and " " in flags and "+" not in flags:
                    return " Inf"
                return special
            if verb in "gG" and p is None:
                text = format_value(arg)
                text = text.upper() if verb == "G" else text
            else:
                text = f"{arg:{'.' + str(6 if p is None else p)}{verb}}"
            return _sign(text, flags, text.startswith("-"))
        return bad
    return bad


# ---------------------------------------------------------------- parsing


# A node of an action: ("var", name, fields) | ("dot", fields) | ("str", s) | ("num", Value)
# | ("func", name) | ("pipe", pipeline). A command is a tuple of nodes; a pipeline a tuple of commands.
Node = tuple[Any, ...]
Command = tuple[Node, ...]
Pipeline = tuple[Command, ...]

_VARIABLES = {"$labels", "$value", "$externalURL", "$externalLabels", "$"}
_DOT_FIELDS = {
    "Labels": "$labels",
    "Value": "$value",
    "ExternalURL": "$externalURL",
    "ExternalLabels": "$externalLabels",
}


def _to_float(v: Value, fn: str) -> float:
    if isinstance(v, float):
        return v
    if isinstance(v, _Int):
        return float(v.value)
    if isinstance(v, str):
        try:
            return float(v.strip()) if v.strip().lower() not in ("inf", "+inf", "-inf", "nan") else float(v.lower())
        except ValueError:
            raise _RenderError(f'{fn}: strconv.ParseFloat: parsing "{v}": invalid syntax') from None
    raise _RenderError(f"{fn}: cannot use a map as a number")


def _to_str(v: Value, fn: str) -> str:
    if isinstance(v, str):
        return v
    raise _RenderError(f"{fn}: wrong type for value; expected string; got {_go_type(v)}")


def _numeric(f: Callable[[float], str], name: str) -> Callable[[list[Value]], Value]:
    def call(args: list[Value]) -> Value:
        return f(_to_float(args[0], name))

    return call


def _index(args: list[Value]) -> Value:
    m, key = args[0], _to_str(args[1], "index")
    if not isinstance(m, Mapping):
        raise _RenderError(f"index: can't index item of type {_go_type(m)}")
    return m.get(key, "")


def _title(args: list[Value]) -> Value:
    return re.sub(r"(^|[^\w'])(\w)", lambda m: m.group(1) + m.group(2).upper(), _to_str(args[0], "title"))


def _printf(args: list[Value]) -> Value:
    return go_sprintf(_to_str(args[0], "printf"), args[1:])


# name -> (function, least arguments, most arguments or -1 for any)
_FUNCS: dict[str, tuple[Callable[[list[Value]], Value], int, int]] = {
    "humanize": (_numeric(humanize, "humanize"), 1, 1),
    "humanize1024": (_numeric(humanize1024, "humanize1024"), 1, 1),
    "humanizeDuration": (_numeric(humanize_duration, "humanizeDuration"), 1, 1),
    "humanizePercentage": (_numeric(humanize_percentage, "humanizePercentage"), 1, 1),
    "humanizeTimestamp": (_numeric(humanize_timestamp, "humanizeTimestamp"), 1, 1),
    "printf": (_printf, 1, -1),
    "toUpper": (lambda a: _to_str(a[0], "toUpper").upper(), 1, 1),
    "toLower": (lambda a: _to_str(a[0], "toLower").lower(), 1, 1),
    "title": (_title, 1, 1),
    "index": (_index, 2, 2),
}

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<str>"(?:[^"\\\n]|\\.)*")
      | (?P<raw>`[^`]*`)
      | (?P<num>[+-]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?))
      | (?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)
      | (?P<dot>(?:\.[A-Za-z0-9_]+)+|\.)
      | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<punct>[|()])
    )""",
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v", "\\": "\\", '"': '"'}


@dataclass(frozen=True, slots=True)
class Template:
    """A template split once into literal text and parsed actions: ("text", s) | ("action", pipeline)."""

    text: str
    parts: tuple[tuple[str, Any], ...]


def _unquote(lit: str, at: int) -> str:
    out: list[str] = []
    i, body = 0, lit[1:-1]
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        esc = body[i + 1]
        if esc in _ESCAPES:
            out.append(_ESCAPES[esc])
            i += 2
        elif esc in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[esc]
            digits = body[i + 2 : i + 2 + width]
            if (
                len(digits) != width
                or not all(c in "0123456789abcdefABCDEF" for c in digits)
                or int(digits, 16) > 0x10FFFF
            ):
                raise TemplateError(at, lit, f"invalid escape \\{esc}{digits} in {lit}")
            out.append(chr(int(digits, 16)))
            i += 2 + width
        else:
            raise TemplateError(at, lit, f"unknown escape \\{esc} in {lit}")
    return "".join(out)


def _number(text: str) -> Value:
    t = text.lower()
    if re.fullmatch(r"[+-]?(?:0x[0-9a-f]+|\d+)", t):
        return _Int(int(t, 0) if "x" in t else int(t))
    return float(t)


class _Parser:
    def __init__(self, body: str, offset: int) -> None:
        self.tokens: list[tuple[str, str, int]] = []
        self.offset = offset
        pos = 0
        stripped_end = len(body.rstrip())
        while pos < stripped_end:
            m = _TOKEN.match(body, pos)
            if m is None or m.end() == pos:
                bad = body[pos:].lstrip()
                at = offset + len(body) - len(bad) if bad else offset + pos
                raise TemplateError(at, bad[:20], f"unexpected {bad[:1]!r} in template action {{{{{body}}}}}")
            kind = m.lastgroup or ""
            self.tokens.append((kind, m.group(kind), offset + m.start(kind)))
            pos = m.end()
        self.i = 0
        self.body = body

    def fail(self, message: str, at: int | None = None) -> TemplateError:
        where = at if at is not None else (self.tokens[self.i][2] if self.i < len(self.tokens) else self.offset)
        # the offending token's own text, so `position` and `token` point at the same place
        token = next((text for _, text, pos in self.tokens if pos == where), "")
        return TemplateError(where, token, message)

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def pipeline(self, closing: str | None = None) -> Pipeline:
        commands: list[Command] = []
        while True:
            commands.append(self.command())
            tok = self.peek()
            if tok is None or (closing and tok[1] == closing):
                break
            if tok[1] != "|":
                raise self.fail(f"unexpected {tok[1]!r} in the pipeline")
            self.i += 1
        for cmd in commands[1:]:
            if cmd[0][0] != "func":
                raise self.fail("a value can be piped only into a function (`{{ $value | humanize }}`)")
        return tuple(commands)

    def command(self) -> Command:
        nodes: list[Node] = []
        while (tok := self.peek()) is not None and tok[1] not in ("|", ")"):
            nodes.append(self.operand())
        if not nodes:
            raise self.fail("missing value for the command")
        if nodes[0][0] != "func" and len(nodes) > 1:
            raise self.fail(f"can't give an argument to a non-function ({self.body.strip()})")
        if nodes[0][0] == "func":
            most = _FUNCS[nodes[0][1]][2]
            given = len(nodes) - 1  # a piped value adds one: checked when the pipeline runs
            if most >= 0 and given > most:
                raise self.fail(f"wrong number of args for {nodes[0][1]}: want {most} got {given}")
        return tuple(nodes)

    def operand(self) -> Node:
        kind, text, at = self.tokens[self.i]
        self.i += 1
        if kind == "str":
            return ("str", _unquote(text, at))
        if kind == "raw":
            return ("str", text[1:-1])
        if kind == "num":
            return ("num", _number(text))
        if kind == "var":
            name, *fields = text.split(".")
            if name not in _VARIABLES:
                raise self.fail(f"undefined variable {name!r} (there are $labels, $value, $externalURL)", at)
            if name == "$":
                return self._dot(fields, at)
            if fields and name in ("$value", "$externalURL"):
                raise self.fail(f"{name} has no field {fields[0]!r}", at)
            if len(fields) > 1:
                raise self.fail(f"{text}: a label has no fields", at)
            return ("var", name, tuple(fields))
        if kind == "dot":
            return self._dot([f for f in text.split(".") if f], at)
        if kind == "ident":
            if text in _FUNCS:
                return ("func", text)
            known = ", ".join(_FUNCS)
            raise self.fail(f'function "{text}" not defined here (templates may use {known})', at)
        if text == "(":
            inner = self.pipeline(closing=")")
            if (tok := self.peek()) is None or tok[1] != ")":
                raise self.fail("unclosed '('", at)
            self.i += 1
            return ("pipe", inner)
        raise self.fail(f"unexpected {text!r}", at)

    def _dot(self, fields: list[str], at: int) -> Node:
        if not fields:
            raise self.fail("the data `.` itself cannot be printed; use .Labels.NAME or .Value", at)
        var = _DOT_FIELDS.get(fields[0])
        if var is None:
            raise self.fail(f"can't evaluate field {fields[0]} (there are .Labels, .Value, .ExternalURL)", at)
        if var in ("$value", "$externalURL") and len(fields) > 1 or len(fields) > 2:
            raise self.fail(f".{'.'.join(fields)}: too many fields", at)
        return ("var", var, tuple(fields[1:]))


def compile_template(text: str) -> Template:
    """Parse once; raise TemplateError (with the column) at anything the language refuses."""
    parts: list[tuple[str, Any]] = []
    pos = 0
    for m in _ACTION.finditer(text):
        literal = text[pos : m.start()]
        if m.group(1):  # {{- trims the whitespace before, -}} the whitespace after
            literal = literal.rstrip(" \t\r\n")
        if literal:
            parts.append(("text", literal))
        body = m.group(2)
        pos = m.end()
        if m.group(3):
            rest = text[pos:]
            pos += len(rest) - len(rest.lstrip(" \t\r\n"))
        stripped = body.strip()
        if stripped.startswith("/*"):
            if not stripped.endswith("*/"):
                raise TemplateError(m.start(), m.group(0), "unclosed comment")
            continue
        if not stripped:
            raise TemplateError(m.start(), m.group(0), "missing value for command")
        first = stripped.split(None, 1)[0]
        if first in ("if", "else", "end", "range", "with", "define", "template", "block", "break", "continue"):
            raise TemplateError(
                m.start(),
                m.group(0),
                f"`{{{{ {first} }}}}` is not supported in annotations",
                "values, labels, pipelines and the humanize/printf functions are",
            )
        parts.append(("action", _Parser(body, m.start(2)).pipeline()))
    rest = text[pos:]
    if "{{" in rest:
        at = text.index("{{", pos)
        raise TemplateError(at, text[at : at + 20], "'{{' without a closing '}}'")
    if rest:
        parts.append(("text", rest))
    return Template(text, tuple(parts))


# ---------------------------------------------------------------- rendering


def _eval_node(node: Node, env: Mapping[str, Value]) -> Value:
    kind = node[0]
    if kind in ("str", "num"):
        v: Value = node[1]
        return v
    if kind == "var":
        value = env[node[1]]
        if node[2]:
            assert isinstance(value, Mapping)
            return value.get(node[2][0], "")
        return value
    if kind == "pipe":
        return _run(node[1], env)
    raise _RenderError(f"{node[1]} is a function: call it with its argument")


def _run(pipeline: Pipeline, env: Mapping[str, Value]) -> Value:
    result: Value | None = None
    for cmd in pipeline:
        head = cmd[0]
        if head[0] != "func":
            result = _eval_node(head, env)
            continue
        fn, least, most = _FUNCS[head[1]]
        args = [_eval_node(n, env) for n in cmd[1:]]
        if result is not None:
            args.append(result)
        if len(args) < least or (most >= 0 and len(args) > most):
            want = least if least == most else f"at least {least}"
            raise _RenderError(f"wrong number of args for {head[1]}: want {want} got {len(args)}")
        result = fn(args)
    assert result is not None
    return result


def render(template: str | Template, labels: Mapping[str, str], value: float, context: Context | None = None) -> str:
    """Fill the template for one series; nothing is executed."""
    tpl = template if isinstance(template, Template) else compile_template(template)
    ctx = context or Context()
    env: dict[str, Value] = {
        "$labels": labels,
        "$value": float(value),
        "$externalURL": ctx.external_url,
        "$externalLabels": ctx.external_labels,
    }
    out: list[str] = []
    try:
        for kind, arg in tpl.parts:
            out.append(arg if kind == "text" else _go_v(_run(arg, env)))
    except _RenderError as e:
        return f"<error expanding template: {e}>"
    return "".join(out)
