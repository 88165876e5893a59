"""Routing decisions, pure: which escalation steps an alert takes, who each step reaches,
which firing alerts inhibit it, how often a receiver hears again.

`incidents.py` applies these to the stored state at each evaluation; nothing here reads the
clock or the database, so every rule of the escalation matrix is a plain function to test.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from monitor.config.model import Config, EscalationStep, InhibitRule
from monitor.incidents.silences import matches
from monitor.model import Alert
from monitor.rules.timeintervals import active


def alert_labels(alert: Alert) -> dict[str, str]:
    """The labels matchers see: the alert's own, with `alertname` and `severity` always present."""
    return {"alertname": alert.name, "severity": alert.severity, **alert.labels}


def step_applies(step: EscalationStep, alert: Alert) -> bool:
    """A `vendor: true` step takes alerts that name a vendor (and, if it lists severities, one of
    those); any other step takes the severities it lists."""
    if step.vendor:
        return bool(alert.vendor) and (step.severities is None or alert.severity in step.severities)
    return step.severities is not None and alert.severity in step.severities


def steps_for(alert: Alert, escalation: Sequence[EscalationStep]) -> list[EscalationStep]:
    return [s for s in escalation if step_applies(s, alert)]


def enabled(cfg: Config, receiver: str) -> bool:
    """Configured and not switched off (e.g. `enabled: auto` without its key)."""
    rc = cfg.root.receivers.get(receiver)
    return rc is not None and rc.enabled is not False and receiver not in cfg.disabled


def step_receivers(step: EscalationStep, cfg: Config) -> list[str]:
    """The step's enabled receivers; its enabled `fallback` receivers when none is."""
    chosen = [r for r in step.receivers if enabled(cfg, r)]
    if not chosen:
        chosen = [r for r in step.fallback if enabled(cfg, r)]
    return list(dict.fromkeys(chosen))


def receiver_type(cfg: Config, receiver: str) -> str | None:
    rc = cfg.root.receivers.get(receiver)
    return rc.type if rc is not None else None


def renotifies(cfg: Config, receiver: str) -> bool:
    """Chat, webhook, Alertmanager and log receivers hear again while the incident is open;
    PagerDuty never gets a repeated trigger (it keeps paging on its own)."""
    kind = receiver_type(cfg, receiver)
    return kind is not None and kind != "pagerduty" and enabled(cfg, receiver)


def renotify_interval(cfg: Config, severity: str) -> timedelta:
    return timedelta(seconds=float(getattr(cfg.root.renotify, severity)))


def inhibitors(target: Alert, firing: Sequence[Alert], rules: Sequence[InhibitRule]) -> list[str]:
    """Names of the firing alerts that inhibit `target` (empty: not inhibited).

    As in Alertmanager: the `equal` labels must be equal on both sides, a missing label
    counting as empty; an alert never inhibits itself, and when the target also matches the
    source matchers, sources that also match the target matchers do not count (so two alerts
    matching both sides cannot inhibit each other).
    """
    tl = alert_labels(target)
    found: list[str] = []
    for rule in rules:
        if not matches(rule.target, tl):
            continue
        two_sided = matches(rule.source, tl)
        for src in firing:
            if src.fingerprint == target.fingerprint:
                continue
            sl = alert_labels(src)
            if not matches(rule.source, sl):
                continue
            if two_sided and matches(rule.target, sl):
                continue
            if all(sl.get(name, "") == tl.get(name, "") for name in rule.equal):
                found.append(src.name)
    return list(dict.fromkeys(found))


def muted_by(alert: Alert, cfg: Config, now: datetime) -> list[str]:
    """The `mute_time_intervals` of the alert's rules that contain `now`, described."""
    names = [n for r in cfg.root.rules if r.alert == alert.name for n in r.mute_time_intervals]
    if not names:
        return []
    named = {ti.name: ti for ti in cfg.root.time_intervals}
    return [ti.describe() for ti in active(named, dict.fromkeys(names), now)]
