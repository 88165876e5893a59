"""The incident page at `/incidents/N` and the sign-in page: what a page's link opens on a phone.

Server-rendered like the status page (no JavaScript, inline CSS, everything from outside through
`html.escape`), from documents that were redacted before they got here. Top to bottom, in the
order someone woken at 3 a.m. needs it: what is wrong and for how long, the buttons
(Acknowledge, Resolve, Silence 1h/4h, a note), the runbook's steps for this rule, what the check
says now, the alert's series over the last hour, who was paged when, and the runbook's internal
status update and customer communication ready to copy.

One column, at most 760 px wide, 44 px tap targets; long words (URLs, label values) wrap at
word boundaries and only break inside themselves when nothing else fits, so a 390 px phone
never scrolls sideways.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from html import escape
from typing import Any

from monitor.config.model import API_TOKEN_VAR
from monitor.incidents.messages import runbook_steps
from monitor.incidents.records import parse_iso
from monitor.web.statuspage import CSS, format_age, format_value

SILENCE_CHOICES = ("1h", "4h")
MAX_NOTE = 2000

PAGE_CSS = (
    CSS
    + """
header.overall .state{display:inline-block;margin-left:6px;padding:1px 8px;border-radius:10px;
  background:rgba(255,255,255,.25);font-size:.85rem;font-weight:700;vertical-align:middle}
section{background:#fff;border-radius:8px;padding:12px;margin:0 0 10px;box-shadow:0 1px 2px rgba(0,0,0,.08);
  overflow-wrap:break-word}
section h2{margin:0 0 8px}
ol.steps{margin:0;padding-left:1.4em}ol.steps li{margin:0 0 6px}
form.actions{display:flex;flex-wrap:wrap;gap:8px;margin:0}
form.inline{display:inline}
button,.button{min-height:44px;padding:0 16px;border:0;border-radius:8px;font:inherit;font-weight:600;
  color:#fff;background:#1a73e8;cursor:pointer}
button.secondary{background:#fff;color:#1a73e8;border:1px solid #c4c7cc}
button.danger{background:#2e7d32}
textarea{width:100%;min-height:5.5em;font:14px/1.4 ui-monospace,SFMono-Regular,Menlo,monospace;padding:8px;
  border:1px solid #c4c7cc;border-radius:6px;resize:vertical}
textarea.note{font:inherit;min-height:3.5em}
input[type=password],input[type=text]{width:100%;min-height:44px;padding:0 10px;font:inherit;
  border:1px solid #c4c7cc;border-radius:6px;margin:4px 0 10px}
label{font-weight:600}
table.timeline{width:100%;border-collapse:collapse;font-size:.9rem}
table.timeline td{padding:4px 6px 4px 0;vertical-align:top;border-top:1px solid #eceff1}
table.timeline td.when{white-space:nowrap;color:#5f6368}
.notice{padding:10px 12px;border-radius:8px;margin:0 0 10px;background:#e8f0fe}
.notice.bad{background:#fce8e6;color:#b71c1c}
svg.chart{width:100%;height:auto;display:block}
.labels code{display:inline-block;background:#f1f3f4;border-radius:4px;padding:1px 5px;margin:0 4px 4px 0;
  font-size:.85rem;overflow-wrap:anywhere}
"""
)


def _headers_css() -> str:
    return f"<style>{PAGE_CSS}</style>"


def _doc(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title>{_headers_css()}</head><body><main>{body}</main></body></html>"
    )


# ---------------------------------------------------------------------- the chart


def sparkline_svg(
    points: Sequence[tuple[float, float]],
    *,
    width: int = 320,
    height: int = 90,
    label: str = "",
    start: float | None = None,
    end: float | None = None,
    compact: bool = False,
) -> str:
    """An inline SVG line chart of `points` (unix time, value), scaled to its own min and max,
    over [start, end] (default: the points' span). NaN and ±Inf values are gaps. `compact`: a
    sparkline for a status-page card (no caption, class `spark`)."""
    finite = [(t, v) for t, v in points if math.isfinite(v)]
    if not finite:
        return "" if compact else '<p class="muted">no samples in this window yet</p>'
    t0 = start if start is not None else finite[0][0]
    t1 = end if end is not None else finite[-1][0]
    span_t = (t1 - t0) or 1.0
    lo = min(v for _, v in finite)
    hi = max(v for _, v in finite)
    span_v = (hi - lo) or 1.0
    pad = 4.0
    segments: list[list[str]] = [[]]
    for t, v in points:
        if not math.isfinite(v):
            if segments[-1]:
                segments.append([])
            continue
        x = pad + (t - t0) / span_t * (width - 2 * pad)
        y = height - pad - (v - lo) / span_v * (height - 2 * pad) if hi > lo else height / 2
        segments[-1].append(f"{x:.1f},{y:.1f}")
    lines = "".join(
        f'<polyline fill="none" stroke="#1a73e8" stroke-width="2" points="{" ".join(s)}"/>' for s in segments if s
    )
    name = escape(label or "series")
    summary = f"{escape(format_value(label, lo))} to {escape(format_value(label, hi))}"
    if compact:
        return (
            f'<svg class="spark" viewBox="0 0 {width} {height}" preserveAspectRatio="none" role="img" '
            f'aria-label="{name} over the last hour: {summary}">{lines}</svg>'
        )
    return (
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{name}: '
        f'{escape(format_value(label, lo))} to {escape(format_value(label, hi))}">'
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#f8f9fa"/>{lines}</svg>'
        f'<div class="muted">min {escape(format_value(label, lo))} · max {escape(format_value(label, hi))} · '
        f"last {escape(format_value(label, finite[-1][1]))}</div>"
    )


# ---------------------------------------------------------------------- the incident page


def _since(iso_text: str | None, now: datetime) -> str:
    if not iso_text:
        return ""
    return format_age(max(0.0, (now - parse_iso(iso_text)).total_seconds()))


def _actions(inc: Mapping[str, Any], base: str, *, signed_in: str | None, csrf: str, token_configured: bool) -> str:
    url = f"{base}/incidents/{inc['id']}"
    if inc["state"] != "open":
        return ""
    if not token_configured:
        return (
            '<section id="actions"><h2>Act on it</h2><p class="muted">This page is read-only: the daemon '
            f"has no API token. Set <code>{API_TOKEN_VAR}</code> (at least 16 characters, e.g. "
            "<code>openssl rand -hex 32</code>) in its environment and restart or reload it; "
            "<code>make run</code> writes one to <code>state/api-token</code> on its first start.</p></section>"
        )
    if signed_in is None:
        return (
            '<section id="actions"><h2>Act on it</h2>'
            f'<a class="button" href="{escape(base)}/sign-in?next={escape(url)}">Sign in to acknowledge, '
            "resolve or silence</a></section>"
        )
    hidden = f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
    buttons = []
    if not inc.get("acked_at"):
        buttons.append(
            f'<form class="inline" method="post" action="{escape(url)}/ack">{hidden}'
            '<button type="submit">Acknowledge</button></form>'
        )
    buttons.append(
        f'<form class="inline" method="post" action="{escape(url)}/resolve">{hidden}'
        '<button type="submit" class="danger">Resolve</button></form>'
    )
    for d in SILENCE_CHOICES:
        buttons.append(
            f'<form class="inline" method="post" action="{escape(url)}/silence">{hidden}'
            f'<input type="hidden" name="duration" value="{d}">'
            f'<button type="submit" class="secondary">Silence {d}</button></form>'
        )
    note = (
        f'<form method="post" action="{escape(url)}/note" style="margin-top:10px">{hidden}'
        f'<label for="note">Note for the timeline</label><textarea class="note" id="note" name="note" '
        f'maxlength="{MAX_NOTE}" required></textarea><button type="submit" class="secondary">Add note</button></form>'
    )
    who = (
        f'<p class="muted">Signed in as {escape(signed_in)} · <form class="inline" method="post" '
        f'action="{escape(base)}/sign-out">{hidden}<button type="submit" class="secondary">Sign out</button>'
        "</form></p>"
    )
    return (
        f'<section id="actions"><h2>Act on it</h2><div class="actions row">{"".join(buttons)}</div>'
        f"{note}{who}</section>"
    )


def _steps(inc: Mapping[str, Any]) -> str:
    annotations = inc.get("annotations") or {}
    steps = runbook_steps(str(annotations.get("description", "")))
    runbook = str(inc.get("runbook") or "")
    link = (
        f'<a class="button" href="{escape(runbook)}" rel="noreferrer">Open the runbook</a>'
        if runbook.startswith(("http://", "https://"))
        else ""
    )
    if not steps and not link:
        return ""
    items = "".join(f"<li>{escape(s)}</li>" for s in steps)
    return f'<section id="steps"><h2>What to do</h2><ol class="steps">{items}</ol>{link}</section>'


def _check(check: Mapping[str, Any] | None) -> str:
    if check is None:
        return ""
    state = check["state"]
    values = " · ".join(f"{k.removeprefix('portal_')} {format_value(k, v)}" for k, v in check["values"].items())
    parts = [
        f'<div class="row"><span class="name">{escape(check["check"])}</span>'
        f'<span class="muted">{escape(check["type"])}</span>'
        f'<span class="badge {escape(state)}">{escape(state.upper())}</span></div>'
    ]
    if state == "down":
        parts.append(f'<div class="error">{escape(check["reason"] or "error")}: {escape(check["error"] or "")}</div>')
    if values:
        parts.append(f'<div class="values">{escape(values)}</div>')
    if check.get("detail"):
        parts.append(f'<div class="muted">{escape(check["detail"])}</div>')
    if check.get("age_seconds") is not None:
        parts.append(f'<div class="muted">checked {format_age(check["age_seconds"])} ago</div>')
    return f'<section id="check"><h2>The check now</h2>{"".join(parts)}</section>'


def _timeline(inc: Mapping[str, Any]) -> str:
    rows = []
    for e in inc.get("timeline", []):
        who = " · ".join(x for x in (e.get("receiver"), e.get("level")) if x)
        at = parse_iso(e["at"])
        rows.append(
            f'<tr><td class="when">{at:%H:%M:%S}</td><td><strong>{escape(e["kind"])}</strong>'
            f"{' · ' + escape(who) if who else ''}<br>{escape(e['detail'])}</td></tr>"
        )
    if not rows:
        return ""
    return (
        '<section id="timeline"><h2>Timeline (UTC)</h2>'
        f'<table class="timeline"><tbody>{"".join(rows)}</tbody></table></section>'
    )


def _copyable(anchor: str, title: str, text: str) -> str:
    if not text:
        return ""
    rows = min(14, text.count("\n") + 2)
    return (
        f'<section id="{anchor}"><h2>{escape(title)}</h2>'
        f'<textarea readonly rows="{rows}" aria-label="{escape(title)}">{escape(text)}</textarea>'
        '<p class="muted">Tap, select all, copy.</p></section>'
    )


def render_incident_page(
    inc: Mapping[str, Any],
    *,
    now: datetime,
    base: str,
    check: Mapping[str, Any] | None,
    chart: str,
    status_update: str,
    customer_communication: str,
    signed_in: str | None,
    csrf: str,
    token_configured: bool,
    notice: str = "",
    notice_bad: bool = False,
) -> str:
    """The whole page. `inc` is the API's incident document (redacted); `base` the external
    URL's path ('' or '/monitor'); `signed_in` the session's name or None; `chart` an SVG
    fragment (`sparkline_svg`)."""
    sev = str(inc["severity"])
    state = "resolved" if inc["state"] != "open" else ("acknowledged" if inc.get("acked_at") else "firing")
    if inc["state"] == "open":
        how_long = f"firing for {_since(inc['fired_at'], now)}"
    else:
        how_long = f"resolved {_since(inc['resolved_at'], now)} ago by {inc.get('resolved_by') or 'the rule'}"
    level = inc.get("level") or "not paged yet"
    acked = f" · acknowledged by {inc['acked_by']}" if inc.get("acked_at") else ""
    held = f" · held: {inc['held']}" if inc.get("held") else ""
    # an alert kept without data ("no data since T (why)"), or how it closed when not by a fix
    why = inc.get("no_data") if inc["state"] == "open" else inc.get("closed_reason")
    header = (
        f'<header class="overall {escape(sev.lower())}"><h1>{escape(sev)} · {escape(inc["alertname"])}'
        f'<span class="state">{escape(state)}</span></h1>'
        f"<p>{escape(str(inc['summary']))}</p>"
        f"<p>#{inc['id']} · {escape(how_long)} · escalation {escape(level)}{escape(acked)}{escape(held)}</p>"
        + (f'<p class="why"><strong>{escape(str(why))}</strong></p>' if why else "")
        + "</header>"
    )
    flash = f'<div class="notice{" bad" if notice_bad else ""}">{escape(notice)}</div>' if notice else ""
    labels = " ".join(f"<code>{escape(k)}={escape(str(v))}</code>" for k, v in sorted(inc["labels"].items()))
    body = (
        header
        + flash
        + _actions(inc, base, signed_in=signed_in, csrf=csrf, token_configured=token_configured)
        + _steps(inc)
        + _check(check)
        + f'<section id="chart"><h2>The last hour</h2>{chart}</section>'
        + _timeline(inc)
        + _copyable("status-update", "Internal status update", status_update)
        + _copyable("customer-communication", "Customer communication", customer_communication)
        + f'<section class="labels" id="labels"><h2>Labels</h2>{labels}</section>'
        + f'<footer><a href="{escape(base)}/">Status page</a>'
        f'<a href="{escape(base)}/api/v1/incidents/{inc["id"]}">JSON</a></footer>'
    )
    return _doc(f"#{inc['id']} {sev} {inc['alertname']} ({state})", body)


def render_not_found(incident_id: int, base: str) -> str:
    return _doc(
        f"incident {incident_id}",
        f'<header class="overall p4"><h1>Incident {incident_id} does not exist</h1></header>'
        f'<footer><a href="{escape(base)}/">Status page</a></footer>',
    )


def render_sign_in(*, base: str, next_url: str, error: str = "", token_configured: bool = True) -> str:
    """The sign-in form: the API token (a password field) and a name for the timeline."""
    if not token_configured:
        form = (
            f"<p>The daemon has no API token, so nobody can sign in. Set <code>{API_TOKEN_VAR}</code> in its "
            "environment and restart or reload it.</p>"
        )
    else:
        bad = f'<div class="notice bad">{escape(error)}</div>' if error else ""
        form = (
            f'{bad}<form method="post" action="{escape(base)}/sign-in">'
            f'<input type="hidden" name="next" value="{escape(next_url)}">'
            '<label for="token">API token</label>'
            '<input type="password" id="token" name="token" autocomplete="current-password" required>'
            '<label for="who">Your name (shown in the timeline and to PagerDuty)</label>'
            '<input type="text" id="who" name="who" autocomplete="name" maxlength="80" required>'
            '<button type="submit">Sign in</button></form>'
            f'<p class="muted">The token is the daemon\'s <code>{API_TOKEN_VAR}</code>. It stays on this '
            "device only as a signed session cookie (12 h), never as itself.</p>"
        )
    body = f'<header class="overall p4"><h1>Sign in</h1></header><section>{form}</section>'
    return _doc("Sign in · portal-monitor", body)
