"""PostgreSQL: SELECT 1, connections by state against max_connections, the longest query.

Runbook scenario 4 (database connection issues).
"""

from __future__ import annotations

from typing import Literal

from monitor.schema import CheckBase, Duration, SecretURL

METRICS: dict[str, tuple[str, str]] = {
    "portal_postgres_up": ("gauge", "1 when the last PostgreSQL check succeeded"),
    "portal_postgres_ping_seconds": ("gauge", "SELECT 1 round trip"),
    "portal_postgres_connections": ("gauge", "server connections by pg_stat_activity state"),
    "portal_postgres_connections_max": ("gauge", "max_connections as the server reports it"),
    "portal_postgres_connections_used_ratio": ("gauge", "connections / max_connections"),
    "portal_postgres_longest_query_seconds": ("gauge", "age of the longest running active query"),
}
KEY_METRICS = ("portal_postgres_ping_seconds", "portal_postgres_connections_used_ratio",
               "portal_postgres_longest_query_seconds")


class Config(CheckBase):
    type: Literal["postgres"]
    dsn: SecretURL = "postgresql://postgres@127.0.0.1:5432/postgres"
    statement_timeout: Duration = 5.0
    watch: bool = True  # hold a connection and re-check at once when it drops
