"""PagerDuty Events API v2 receiver."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from monitor.schema import Duration, Secret, StrictModel

DEFAULT_URL = "https://events.pagerduty.com/v2/enqueue"


class Config(StrictModel):
    type: Literal["pagerduty"]
    enabled: bool | Literal["auto"] = True
    routing_key: Secret
    url: str = DEFAULT_URL
    source: str | None = None  # payload.source; default: this host's name
    timeout: Duration = 10.0
    rate_limit_per_minute: int = Field(100, ge=1, le=10_000)

    @field_validator("routing_key")
    @classmethod
    def _routing_key_is_32_chars(cls, v: str) -> str:
        if len(v) != 32:
            raise ValueError(f"routing_key must be the 32-character integration key (got {len(v)} characters)")
        return v
