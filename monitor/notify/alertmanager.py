"""Alertmanager receiver: POST /api/v2/alerts to one or more Alertmanagers."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from monitor.schema import Duration, StrictModel


class Config(StrictModel):
    type: Literal["alertmanager"]
    enabled: bool | Literal["auto"] = True
    urls: list[str] = Field(min_length=1)
    timeout: Duration = 10.0
