"""The one clock: the current time as an aware UTC datetime.

Code that decides from the time takes `now: Callable[[], datetime]` and defaults it to
`utc_now`, so a test passes a fake clock instead of waiting. Nothing else calls
`datetime.now()`.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    """Now, in UTC."""
    return datetime.now(UTC)
