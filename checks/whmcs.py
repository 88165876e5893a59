"""WHMCS API: GetClients with limitnum=1; up only when the reply says result: success.

Runbook scenario 2 (WHMCS API unavailable).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from monitor.schema import CheckBase, Secret

METRICS: dict[str, tuple[str, str]] = {
    "portal_whmcs_up": ("gauge", "1 when WHMCS answered result: success"),
    "portal_whmcs_response_seconds": ("gauge", "time to the WHMCS API reply"),
}
KEY_METRICS = ("portal_whmcs_response_seconds",)


class Config(CheckBase):
    type: Literal["whmcs"]
    url: str = Field(min_length=1)  # https://billing.example/includes/api.php
    identifier: Secret = Field(min_length=1)
    secret: Secret = Field(min_length=1)
    accesskey: Secret | None = None
