"""Slack incoming-webhook receiver: the runbook's Internal Status Update."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from monitor.schema import Duration, Secret, StrictModel


class Config(StrictModel):
    type: Literal["slack"]
    enabled: bool | Literal["auto"] = True
    url: Secret = Field(min_length=1)  # the webhook URL is itself the credential
    timeout: Duration = 10.0
