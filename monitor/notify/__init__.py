"""Receivers: one module each. `ReceiverConfig` is the union the config file accepts."""

from __future__ import annotations

from typing import Annotated, Union, get_args

from pydantic import Field

from monitor.notify import alertmanager, log, pagerduty, slack, webhook

_MODULES = (pagerduty, webhook, slack, alertmanager, log)

ReceiverConfig = Annotated[
    Union[pagerduty.Config, webhook.Config, slack.Config, alertmanager.Config, log.Config],
    Field(discriminator="type"),
]
RECEIVER_TYPES: tuple[str, ...] = tuple(get_args(m.Config.model_fields["type"].annotation)[0] for m in _MODULES)
