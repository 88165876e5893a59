"""Redis: PING, INFO memory/stats/clients, and the Salesforce Platform Event replay keys.

Runbook scenarios 1 (Platform Events not receiving) and 3 (Redis connection failures).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from monitor.schema import CheckBase, SecretURL

METRICS: dict[str, tuple[str, str]] = {
    "portal_redis_up": ("gauge", "1 when the last Redis check succeeded"),
    "portal_redis_ping_seconds": ("gauge", "PING round trip"),
    "portal_redis_memory_used_bytes": ("gauge", "INFO used_memory"),
    "portal_redis_memory_max_bytes": ("gauge", "INFO maxmemory (0 = no limit)"),
    "portal_redis_memory_used_ratio": ("gauge", "used_memory / maxmemory (0 when no limit)"),
    "portal_redis_evicted_keys_total": ("counter", "INFO evicted_keys"),
    "portal_redis_connected_clients": ("gauge", "INFO connected_clients"),
    "portal_sf_replay_keys": ("gauge", "replay keys found by SCAN (at most max_keys)"),
    "portal_sf_replay_id": ("gauge", "the replay id stored under each replay key"),
    "portal_sf_replay_stalled_seconds": ("gauge", "seconds since the replay id of a channel last changed"),
    "portal_sf_replay_last_advance_timestamp_seconds": (
        "gauge", "when the replay id of a channel last changed (Unix time)"),
}
KEY_METRICS = ("portal_redis_ping_seconds", "portal_redis_memory_used_ratio", "portal_sf_replay_keys")


class Config(CheckBase):
    type: Literal["redis"]
    url: SecretURL = "redis://127.0.0.1:6379/0"
    replay_pattern: str = "sf:pe:replay:*"
    max_keys: int = Field(1000, ge=1, le=100_000)
    watch: bool = True  # hold a connection and re-check at once when it drops
