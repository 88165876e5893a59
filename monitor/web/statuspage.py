"""The status page at `/`: one server-rendered HTML page for the person on call.

Built from the same (already redacted) documents the JSON API serves, so the page can show
nothing the API would not. No JavaScript: a `<meta http-equiv="refresh">` reloads it every
`REFRESH_S` seconds, the CSS is inline, and every value from outside goes through
`html.escape` (runbook links only when they are http(s) URLs). One column with large tap
targets, because the page is read on a phone at 3 a.m.: what is wrong comes first (the
overall state, firing alerts, open incidents), then every check, then the silences.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from html import escape
from typing import Any

from monitor.incidents.messages import runbook_steps

REFRESH_S = 10
SEVERITY_CLASS = {"P1": "p1", "P2": "p2", "P3": "p3", "P4": "p4"}
_CHECK_ORDER = {"down": 0, "pending": 1, "up": 2, "disabled": 3}

CSS = """
*{box-sizing:border-box}
body{margin:0;font:16px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1b1b;background:#f3f4f6}
main{max-width:760px;margin:0 auto;padding:0 12px 24px}
header.overall{padding:16px 14px;color:#fff;border-radius:0 0 10px 10px;margin:0 -12px 8px}
header.overall h1{margin:0;font-size:1.35rem;line-height:1.25}
header.overall p{margin:6px 0 0;font-size:.9rem;opacity:.95}
.ok{background:#2e7d32}.p1{background:#c62828}.p2{background:#e65100}.p3{background:#f9a825;color:#1b1b1b}
.p4{background:#616161}.warn{background:#e65100}
header.p3{color:#1b1b1b}
h2{font-size:1.1rem;margin:20px 0 8px}
ul{list-style:none;margin:0;padding:0}
li.card{background:#fff;border-radius:8px;padding:12px;margin:0 0 8px;border-left:6px solid #9e9e9e;
  box-shadow:0 1px 2px rgba(0,0,0,.08);overflow-wrap:anywhere}
li.card.p1{border-left-color:#c62828;background:#fff}li.card.p2{border-left-color:#e65100;background:#fff}
li.card.p3{border-left-color:#f9a825;background:#fff;color:#1b1b1b}li.card.p4{border-left-color:#616161;background:#fff}
li.card.down{border-left-color:#c62828}li.card.up{border-left-color:#2e7d32}
li.card.pending{border-left-color:#9e9e9e}li.card.disabled{border-left-color:#bdbdbd;color:#616161}
.row{display:flex;flex-wrap:wrap;align-items:center;gap:6px 10px}
.name{font-weight:600;font-size:1.05rem}
.muted{color:#5f6368;font-size:.9rem}
.no-data{color:#8a4b00;font-size:.9rem;font-weight:600}
.badge{display:inline-block;min-width:3.2em;text-align:center;padding:2px 8px;border-radius:12px;font-weight:700;
  font-size:.85rem;color:#fff}
.badge.up{background:#2e7d32}.badge.down{background:#c62828}.badge.pending,.badge.disabled{background:#9e9e9e}
.badge.p3{color:#1b1b1b}.badge.firing{background:#37474f}.badge.state-pending{background:#9e9e9e}
.error{color:#b71c1c;font-size:.92rem;margin-top:4px}
.values{font-size:.92rem;margin-top:4px}
a.button{display:inline-flex;align-items:center;min-height:44px;padding:0 14px;margin-top:8px;border-radius:8px;
  background:#1a73e8;color:#fff;text-decoration:none;font-weight:600}
footer{margin-top:24px;font-size:.9rem}
footer a{display:inline-flex;align-items:center;min-height:44px;padding:0 10px;margin:0 6px 6px 0;
  border:1px solid #c4c7cc;border-radius:8px;color:#1a73e8;text-decoration:none;background:#fff}
.empty{color:#5f6368;background:#fff;border-radius:8px;padding:12px}
ol.steps{margin:6px 0 0;padding-left:1.3em;font-size:.95rem}
svg.spark{display:block;width:100%;height:28px;margin-top:6px}
.banner{background:#b71c1c;color:#fff;border-radius:8px;padding:10px 14px;margin:8px 0}
.banner h2{margin:0 0 6px}.banner li{margin:4px 0;overflow-wrap:anywhere}
"""


def format_value(name: str, value: float | None) -> str:
    """A key metric for people: 0.3ms, 12.5%, 1.2GiB, 3."""
    if value is None:
        return "n/a"
    if name.endswith(("_seconds", "_seconds_avg", "_seconds_p95")):
        return f"{value * 1000:.1f}ms" if value < 1 else f"{value:.1f}s"
    if name.endswith("_ratio"):
        return f"{value * 100:.1f}%"
    if name.endswith("_bytes"):
        for unit in ("B", "KiB", "MiB", "GiB"):
            if value < 1024 or unit == "GiB":
                return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
            value /= 1024
    return f"{value:g}"


def format_age(seconds: float) -> str:
    """3s, 2m05s, 1h05m, 2d3h."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"


def _since(text: str | None, now: datetime) -> str:
    if not text:
        return "?"
    return format_age((now - datetime.fromisoformat(text)).total_seconds())


def _hhmm(text: str) -> str:
    return f"{datetime.fromisoformat(text):%Y-%m-%d %H:%M} UTC"


def _link(url: str, label: str) -> str:
    """A runbook link as a large button, only for http(s) URLs (never javascript: or data:)."""
    if not url.lower().startswith(("https://", "http://")):
        return f'<div class="muted">runbook: {escape(url)}</div>' if url else ""
    return f'<a class="button" href="{escape(url, quote=True)}" rel="noopener noreferrer">{escape(label)}</a>'


def _overall(
    checks: Mapping[str, Any], alerts: Sequence[Mapping[str, Any]], incidents: Sequence[Any], ready: bool
) -> tuple[str, str, str]:
    """(css class, headline, detail) of the header line."""
    firing = [a for a in alerts if a["state"] == "firing"]
    summary = checks["summary"]
    parts = [f"{summary['up']} up", f"{summary['down']} down"]
    if summary["pending"]:
        parts.append(f"{summary['pending']} not run yet")
    if summary["disabled"]:
        parts.append(f"{summary['disabled']} disabled")
    detail = (
        "checks: "
        + ", ".join(parts)
        + f" · {len(firing)} firing · {len(incidents)} open incident"
        + ("" if len(incidents) == 1 else "s")
    )
    if firing:
        worst = min(firing, key=lambda a: a["severity"])["severity"]
        names = sorted({a["name"] for a in firing if a["severity"] == worst})
        more = len(firing) - sum(1 for a in firing if a["severity"] == worst)
        head = f"{worst} firing: " + ", ".join(names) + (f" (+{more} more)" if more else "")
        return SEVERITY_CLASS.get(worst, "p4"), head, detail
    if summary["down"]:
        down = [c["check"] for c in checks["checks"] if c["state"] == "down"]
        return "warn", f"{len(down)} check{'s' if len(down) != 1 else ''} down: " + ", ".join(down), detail
    if not ready:
        return "p4", "Starting: the first round of checks is not done", detail
    return "ok", "All checks up, nothing firing", detail


FIRST_STEPS = 2  # runbook steps shown on a firing alert's card (the incident page has them all)


def _until(text: str, now: datetime) -> str:
    return format_age(max(0.0, (datetime.fromisoformat(text.replace("Z", "+00:00")) - now).total_seconds()))


def _alert_item(a: Mapping[str, Any], now: datetime, incident: str = "") -> str:
    """One alert; `incident` the link to its incident page ('' when it has none)."""
    sev = a["severity"]
    cls = SEVERITY_CLASS.get(sev, "p4")
    ann = a.get("annotations") or {}
    labels = ", ".join(f"{k}={v}" for k, v in sorted(a["labels"].items()) if k not in ("alertname", "severity"))
    if a["state"] == "firing" and a.get("keep_firing_until"):
        # the condition cleared; keep_firing_for holds the alert (and says so, beside a green check)
        when = f"condition cleared · clearing in {_until(a['keep_firing_until'], now)} (keep_firing_for)"
    elif a["state"] == "firing":
        when = f"firing for {_since(a['fired_at'], now)}"
    else:
        of = f" of {format_age(a['for_seconds'])}" if a.get("for_seconds") else ""
        when = f"pending for {_since(a['activeAt'], now)}{of}"
    state_badge = "firing" if a["state"] == "firing" else "state-pending"
    steps = ""
    if a["state"] == "firing":
        first = runbook_steps(str(ann.get("description", "")))[:FIRST_STEPS]
        if first:
            steps = '<ol class="steps">' + "".join(f"<li>{escape(x)}</li>" for x in first) + "</ol>"
    page = f'<a class="button" href="{escape(incident, quote=True)}">Open the incident</a> ' if incident else ""
    return (
        f'<li class="card alert {cls}"><div class="row"><span class="badge {cls}">{escape(sev)}</span>'
        f'<span class="name">{escape(a["name"])}</span><span class="badge {state_badge}">{escape(a["state"])}'
        f"</span></div><div>{escape(ann.get('summary') or a['name'])}</div>"
        f'<div class="muted">{escape(when)}{" · " + escape(labels) if labels else ""}</div>{steps}'
        f"{_no_data(a)}{page}{_link(ann.get('runbook_url') or ann.get('runbook', ''), 'Runbook')}</li>"
    )


def _no_data(item: Mapping[str, Any]) -> str:
    """The "no data since T (why)" line of an alert or incident kept without data."""
    text = item.get("no_data") or ""
    return f'<div class="no-data">{escape(text)}</div>' if text else ""


def _incident_item(i: Mapping[str, Any], now: datetime, base: str = "") -> str:
    cls = SEVERITY_CLASS.get(i["severity"], "p4")
    ack = (
        f"acknowledged by {i['acked_by']} {_since(i['acked_at'], now)} ago" if i.get("acked_at") else "not acknowledged"
    )
    held = f'<div class="muted">held: {escape(i["held"])}</div>' if i.get("held") else ""
    return (
        f'<li class="card incident {cls}"><div class="row"><span class="badge {cls}">{escape(i["severity"])}'
        f'</span><span class="name">#{int(i["id"])} {escape(i["alertname"])}</span></div>'
        f"<div>{escape(i['summary'])}</div>"
        f'<div class="muted">open {escape(_since(i["fired_at"], now))} · level {escape(i["level"] or "--")} · '
        f"{escape(ack)}</div>{held}{_no_data(i)}"
        f'<a class="button" href="{escape(base)}/incidents/{int(i["id"])}">Open the incident</a> '
        f"{_link(i.get('runbook', ''), 'Runbook')}</li>"
    )


def _check_item(c: Mapping[str, Any], chart: str = "") -> str:
    state = c["state"]
    label = {"up": "UP", "down": "DOWN", "pending": "PENDING", "disabled": "disabled"}.get(state, state)
    values = " · ".join(f"{k.removeprefix('portal_')} {format_value(k, v)}" for k, v in c["values"].items())
    if state == "disabled":
        info = f'<div class="muted">{escape(c.get("disabled") or "")}</div>'
    elif state == "pending":
        info = f'<div class="muted">not run yet · every {format_age(c["interval_seconds"] or 0)}</div>'
    else:
        info = (
            f'<div class="muted">ran {format_age(c["age_seconds"])} ago · took '
            f"{format_value('x_seconds', c['duration_seconds'])} · every {format_age(c['interval_seconds'])}</div>"
        )
    detail = f'<div class="muted">{escape(c["detail"])}</div>' if c.get("detail") else ""
    error = (
        f'<div class="error">{escape(c["reason"] or "error")}: {escape(c["error"] or "")}</div>'
        if state == "down"
        else ""
    )
    return (
        f'<li class="card check {state}"><div class="row"><span class="name">{escape(c["check"])}</span>'
        f'<span class="muted">{escape(c["type"])}</span><span class="badge {state}">{label}</span></div>'
        f"{f'<div class=values>{escape(values)}</div>' if values else ''}{error}{detail}{chart}{info}</li>"
    )


def _silence_item(s: Mapping[str, Any], now: datetime) -> str:
    matchers = ", ".join(f"{k}={'|'.join(v)}" for k, v in s["matchers"].items())
    left = format_age((datetime.fromisoformat(s["ends_at"]) - now).total_seconds())
    return (
        f'<li class="card silence"><div class="row"><span class="name">#{int(s["id"])} {escape(matchers)}</span>'
        f"</div><div>{escape(s['author'])}: {escape(s['comment'])}</div>"
        f'<div class="muted">until {escape(_hhmm(s["ends_at"]))} ({escape(left)} left)</div></li>'
    )


def undelivered_banner(pages: Sequence[Mapping[str, Any]], now: datetime) -> str:
    """A red banner above everything while any page of an open incident has not reached its
    receiver (`/api/v1/incidents`' `undelivered`): who was not told, for how long, and why."""
    if not pages:
        return ""
    items = []
    for p in pages:
        why = p["last_error"] or "waiting behind an earlier notification the receiver refused"
        tries = f"{p['attempts']} attempt{'s' if p['attempts'] != 1 else ''}"
        state = "" if p["state"] == "pending" else f" ({p['state']}, not retried)"
        items.append(
            f"<li>#{int(p['incident_id'])} {escape(p['severity'])} {escape(p['alertname'])} → "
            f"<b>{escape(p['receiver'])}</b>: not delivered for {escape(_since(p['since'], now))}, "
            f"{escape(tries)}{escape(state)}: {escape(why)}</li>"
        )
    n = len(pages)
    return (
        f'<section class="banner" id="undelivered"><h2>{n} page{"s" if n != 1 else ""} not delivered</h2>'
        f"<ul>{''.join(items)}</ul></section>"
    )


def _section(title: str, anchor: str, items: list[str], empty: str) -> str:
    body = f"<ul>{''.join(items)}</ul>" if items else f'<p class="empty">{escape(empty)}</p>'
    return f'<section id="{anchor}"><h2>{escape(title)} ({len(items)})</h2>{body}</section>'


def render_page(
    *,
    checks: Mapping[str, Any],
    alerts: Mapping[str, Any],
    incidents: Mapping[str, Any],
    silences: Mapping[str, Any],
    now: datetime,
    ready: bool = True,
    base: str = "",
    sparklines: Mapping[str, str] | None = None,
) -> str:
    """The whole page from the API's documents (`/api/v1/checks`, `alerts`, `incidents`, `silences`);
    `base` the external URL's path (links to incident pages), `sparklines` an SVG per check name."""
    alert_list = alerts["data"]["alerts"]
    incident_list = incidents["incidents"]
    page_of = {i["dedup_key"]: f"{base}/incidents/{int(i['id'])}" for i in incident_list if i.get("dedup_key")}
    charts = sparklines or {}
    cls, head, detail = _overall(checks, alert_list, incident_list, ready)
    firing = [a for a in alert_list if a["state"] == "firing"]
    pending = [a for a in alert_list if a["state"] != "firing"]
    by_severity = sorted(incident_list, key=lambda i: (i["severity"], i["id"]))  # worst, then oldest first
    ordered = sorted(checks["checks"], key=lambda c: (_CHECK_ORDER.get(c["state"], 9), c["check"]))
    sections = [
        _section(
            "Firing alerts",
            "alerts",
            [_alert_item(a, now, page_of.get(a.get("fingerprint", ""), "")) for a in firing],
            "No alert is firing.",
        ),
        _section(
            "Open incidents", "incidents", [_incident_item(i, now, base) for i in by_severity], "No open incident."
        ),
        _section(
            "Checks", "checks", [_check_item(c, charts.get(c["check"], "")) for c in ordered], "No check is configured."
        ),
        _section(
            "Active silences", "silences", [_silence_item(s, now) for s in silences["silences"]], "No active silence."
        ),
    ]
    if pending:
        sections.insert(
            1,
            _section(
                "Pending alerts (condition true, not yet for long enough)",
                "pending",
                [_alert_item(a, now) for a in pending],
                "",
            ),
        )
    footer = "".join(
        f'<a href="{p}">{p}</a>'
        for p in ("/api/v1/checks", "/api/v1/alerts", "/api/v1/incidents", "/api/v1/silences", "/metrics")
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta http-equiv="refresh" content="{REFRESH_S}">'
        f"<title>{escape(head)} · portal-monitor</title><style>{CSS}</style></head><body><main>"
        f'<header class="overall {cls}" id="overall"><h1>{escape(head)}</h1>'
        f"<p>{escape(detail)}</p><p>updated {now:%H:%M:%S} UTC · refreshes every {REFRESH_S}s</p></header>"
        + undelivered_banner(incidents.get("undelivered") or [], now)
        + "".join(sections)
        + f'<footer><p class="muted">JSON API and metrics:</p>{footer}</footer></main></body></html>\n'
    )
