"""Routing decisions, pure: which escalation steps an alert takes, who each step reaches,
which firing alerts inhibit it, how often a receiver hears again.

`incidents.py` applies these to the stored state at each evaluation; nothing here reads the
clock or the database, so every rule of the escalation matrix is a plain function to test.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
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


def step_receivers(step: EscalationStep, cfg: Config, avoid: Collection[str] = ()) -> list[str]:
    """The step's enabled receivers; its enabled `fallback` receivers when none is.

    `avoid` (see `avoided`) counts as not enabled: an alert about a failing receiver goes to
    the others, or to the fallback when the step has no other."""
    chosen = [r for r in step.receivers if enabled(cfg, r) and r not in avoid]
    if not chosen:
        chosen = [r for r in step.fallback if enabled(cfg, r) and r not in avoid]
    return list(dict.fromkeys(chosen))


# Severities whose page goes to the step's fallback as well when the step's receivers fail it.
FALLBACK_SEVERITIES = frozenset({"P1", "P2"})


def avoided(alert: Alert, failing: Collection[str]) -> set[str]:
    """Receivers an alert about delivery must not go to: an alert with a `receiver` label
    (NotificationDeliveryFailing) avoids the receiver it names and every receiver failing now.
    Other alerts avoid none (their pages wait in the outbox, and `fallback_receivers` helps)."""
    named = alert.labels.get("receiver")
    return {named, *failing} if named else set()


def fallback_after(step: EscalationStep, cfg: Config) -> timedelta:
    """The step's `fallback_after`, else the top-level one."""
    value = step.fallback_after if step.fallback_after is not None else cfg.root.fallback_after
    return timedelta(seconds=float(value))


def fallback_receivers(
    step: EscalationStep,
    alert: Alert,
    cfg: Config,
    targets: Sequence[str],
    failing_since: Mapping[str, datetime],
    now: datetime,
) -> list[str]:
    """The step's enabled `fallback` receivers to page as well as `targets` (the step's own
    receivers), or [] while any target may still deliver.

    For a P1 or P2 only, once every target has failed its page of this incident for the
    step's `fallback_after`: `failing_since` maps a receiver to when its undelivered page was
    queued (`deliveries.undelivered_pages`); a receiver absent from it delivered, or is still
    trying without having failed. Receivers already among `targets` are not repeated."""
    if alert.severity not in FALLBACK_SEVERITIES or not targets or not step.fallback:
        return []
    wait = fallback_after(step, cfg)
    if not all(r in failing_since and now - failing_since[r] >= wait for r in targets):
        return []
    return [r for r in dict.fromkeys(step.fallback) if enabled(cfg, r) and r not in targets]


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
