"""HTTP health endpoints (the BFF's /health, a vendor API): status, time, JSON components.

Runbook scenarios 3, 4 and 5 (`curl http://localhost:4000/health | jq '.checks'`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from monitor.schema import CheckBase, SecretMarker

METRICS: dict[str, tuple[str, str]] = {
    "portal_http_up": ("gauge", "1 when the endpoint answered the expected status"),
    "portal_http_status_code": ("gauge", "HTTP status of the last reply"),
    "portal_http_response_seconds": ("gauge", "time to the full reply"),
    "portal_http_component_up": ("gauge", "1 when a component of the health reply is ok/pass/up/healthy/true"),
}
KEY_METRICS = ("portal_http_status_code", "portal_http_response_seconds")


class Config(CheckBase):
    type: Literal["http"]
    url: str = Field(min_length=1)
    method: Literal["GET", "HEAD", "POST"] = "GET"
    expected_status: int | list[int] = 200
    components: str | None = None  # key of the JSON object whose entries are components ("checks")
    headers: Annotated[dict[str, str], SecretMarker()] = Field(default_factory=dict)
    tls_verify: bool = True
