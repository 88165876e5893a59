"""The BFF process, found by command-line regex: up, CPU ratio, resident memory.

Runbook scenario 5 (`top -p $(pgrep -f "node.*bff")`).
"""

from __future__ import annotations

from typing import Literal

from monitor.schema import CheckBase

METRICS: dict[str, tuple[str, str]] = {
    "portal_process_up": ("gauge", "1 when a process matching the pattern runs"),
    "portal_process_count": ("gauge", "processes matching the pattern"),
    "portal_process_cpu_ratio": ("gauge", "CPU time per wall second since the last check (1 = one core)"),
    "portal_process_resident_bytes": ("gauge", "resident memory of the matching processes"),
}
KEY_METRICS = ("portal_process_count", "portal_process_cpu_ratio", "portal_process_resident_bytes")


class Config(CheckBase):
    type: Literal["process"]
    cmdline: str = r"node.*bff"  # regex searched in the joined command line, like pgrep -f
