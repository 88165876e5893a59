"""Log receiver: each notification as a structured log event."""

from __future__ import annotations

from typing import Literal

from monitor.schema import StrictModel


class Config(StrictModel):
    type: Literal["log"]
    enabled: bool | Literal["auto"] = True
