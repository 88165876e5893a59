"""Annotation templates of alert rules, filled in, never executed.

Templates (`render`): only `{{ $labels.NAME }}` and `{{ $value }}` (spaces inside the braces
optional). Any other `{{ ... }}` is refused at load (`TemplateError`) instead of reaching a
pager as raw template text. An unknown label renders as the empty string (Prometheus renders
with `missingkey=zero`); `$value` renders as Go's `%v` of a float64, as Prometheus does:
`1800`, `0.95`, `1e+06`, `1.234567e+06`, `NaN`, `+Inf`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from monitor.rules.expr import ExprError


class TemplateError(ExprError):
    """An annotation template outside `{{ $labels.NAME }}` / `{{ $value }}`."""


_ACTION = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_LABEL_REF = re.compile(r"\s*\$labels\.([A-Za-z_][A-Za-z0-9_]*)\s*")
_VALUE_REF = re.compile(r"\s*\$value\s*")


@dataclass(frozen=True, slots=True)
class Template:
    """A template split into literal text and references: ("text", s), ("label", name), ("value", "")."""

    text: str
    parts: tuple[tuple[str, str], ...]


def compile_template(text: str) -> Template:
    """Split a template once; raise TemplateError at any `{{ ... }}` outside the subset."""
    parts: list[tuple[str, str]] = []
    pos = 0
    for m in _ACTION.finditer(text):
        if m.start() > pos:
            parts.append(("text", text[pos : m.start()]))
        body = m.group(1)
        if lm := _LABEL_REF.fullmatch(body):
            parts.append(("label", lm.group(1)))
        elif _VALUE_REF.fullmatch(body):
            parts.append(("value", ""))
        else:
            raise TemplateError(
                m.start(),
                m.group(0),
                f"unsupported template {m.group(0)!r}",
                "only {{ $labels.NAME }} and {{ $value }} are filled in",
            )
        pos = m.end()
    rest = text[pos:]
    if "{{" in rest:
        at = pos + rest.index("{{")
        raise TemplateError(at, text[at : at + 20], "'{{' without a closing '}}'")
    if rest:
        parts.append(("text", rest))
    return Template(text, tuple(parts))


def render(template: str | Template, labels: Mapping[str, str], value: float) -> str:
    """Fill `{{ $labels.NAME }}` and `{{ $value }}`; nothing is executed."""
    tpl = template if isinstance(template, Template) else compile_template(template)
    out: list[str] = []
    for kind, arg in tpl.parts:
        if kind == "text":
            out.append(arg)
        elif kind == "label":
            out.append(labels.get(arg, ""))
        else:
            out.append(format_value(value))
    return "".join(out)


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
