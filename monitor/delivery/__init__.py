"""Receivers: one module each. `ReceiverConfig` is the union the config file accepts.

`build_receiver(name, cfg, host=..., external_url=...)` is the one place that knows every
receiver type; `build_receivers` builds a whole `receivers:` section and makes PagerDuty
receivers that share a routing key share one rate limiter (PagerDuty limits per key).

Every receiver has `name`, `async send(notification)` (returns when delivered, raises
`monitor.model.DeliveryError` with `retry_after` / `permanent` otherwise) and
`async aclose()`; `transport.py` holds the HTTP handling they share.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from datetime import datetime
from typing import Annotated, Any, TextIO, Union, get_args

from pydantic import Field

from monitor.clock import utc_now
from monitor.delivery import alertmanager, log, pagerduty, slack, webhook
from monitor.httpclient import HttpClient
from monitor.model import Receiver, ReceiverContext

_MODULES = (pagerduty, webhook, slack, alertmanager, log)

ReceiverConfig = Annotated[
    Union[pagerduty.Config, webhook.Config, slack.Config, alertmanager.Config, log.Config],
    Field(discriminator="type"),
]
RECEIVER_TYPES: tuple[str, ...] = tuple(get_args(m.Config.model_fields["type"].annotation)[0] for m in _MODULES)


def build_receiver(
    name: str,
    cfg: Any,
    *,
    host: str,
    external_url: str | None,
    now: Callable[[], datetime] = utc_now,
    clock: Callable[[], float] = time.monotonic,
    limiter: pagerduty.SlidingWindowLimiter | None = None,
    stream: TextIO | None = None,
    http: HttpClient | None = None,
) -> Receiver:
    """The receiver for one entry of `receivers:`.

    `host` is PagerDuty's default `source`; `external_url` is where this daemon is reached
    (links to incidents, `externalURL`, `generatorURL`); `now` is the wall clock (signature
    timestamps, Alertmanager `endsAt`), `clock` the monotonic one (PagerDuty's rate limit);
    `stream` is where the log receiver also prints (stdout for `once`); `http` is the daemon's
    shared HTTP client (None: the receiver makes its own and closes it in `aclose`).
    """
    ctx = ReceiverContext(host=host, external_url=external_url, now=now, clock=clock, http=http, stream=stream)
    match cfg.type:
        case "pagerduty":
            return pagerduty.PagerDutyReceiver(name, cfg, ctx, limiter=limiter)
        case "webhook":
            return webhook.WebhookReceiver(name, cfg, ctx)
        case "slack":
            return slack.SlackReceiver(name, cfg, ctx)
        case "alertmanager":
            return alertmanager.AlertmanagerReceiver(name, cfg, ctx)
        case "log":
            return log.LogReceiver(name, cfg, ctx)
    raise ValueError(f"receiver {name!r}: unknown type {cfg.type!r}")


def build_receivers(
    cfgs: Mapping[str, Any],
    *,
    host: str,
    external_url: str | None,
    disabled: Collection[str] = (),
    now: Callable[[], datetime] = utc_now,
    clock: Callable[[], float] = time.monotonic,
    stream: TextIO | None = None,
    http: HttpClient | None = None,
) -> dict[str, Receiver]:
    """Every enabled receiver of a `receivers:` section, by name (skipping `disabled`)."""
    limiters: dict[str, pagerduty.SlidingWindowLimiter] = {}
    out: dict[str, Receiver] = {}
    for name, cfg in cfgs.items():
        if name in disabled or cfg.enabled is False:
            continue
        limiter = None
        if cfg.type == "pagerduty":
            limiter = limiters.get(cfg.routing_key)
            if limiter is None:
                limiter = limiters[cfg.routing_key] = pagerduty.SlidingWindowLimiter(
                    cfg.rate_limit_per_minute, clock=clock
                )
            limiter.limit = min(limiter.limit, cfg.rate_limit_per_minute)
        out[name] = build_receiver(
            name,
            cfg,
            host=host,
            external_url=external_url,
            now=now,
            clock=clock,
            limiter=limiter,
            stream=stream,
            http=http,
        )
    return out
