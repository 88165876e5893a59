"""Webhook receiver: Alertmanager's webhook JSON (version 4), HMAC-signed."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from monitor.schema import Duration, Secret, SecretURL, StrictModel


class Config(StrictModel):
    type: Literal["webhook"]
    enabled: bool | Literal["auto"] = True
    url: SecretURL = Field(min_length=1)
    secret: Secret | None = None  # HMAC-SHA256 key for the signature header
    timeout: Duration = 10.0
