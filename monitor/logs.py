"""structlog set-up: JSON lines without a TTY (journald keeps them), console with one.

Every configured secret is replaced by `***` in every event, whatever key it hides in.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any, TextIO

import structlog


class Redactor:
    """A processor that blanks secrets; `update()` swaps the set on reload."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.update(secrets)

    def update(self, secrets: Iterable[str]) -> None:
        # Longest first, so a secret that contains another is replaced whole.
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def redact(self, value: Any) -> Any:
        if isinstance(value, str):
            for s in self._secrets:
                if s in value:
                    value = value.replace(s, "***")
            return value
        if isinstance(value, dict):
            return {k: self.redact(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self.redact(v) for v in value)
        return value

    def __call__(self, logger: Any, method_name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        if not self._secrets:
            return event_dict
        return {k: self.redact(v) for k, v in event_dict.items()}


REDACTOR = Redactor()


def configure_logging(
    *, json: bool | None = None, level: str = "info", stream: TextIO | None = None, secrets: Iterable[str] = ()
) -> None:
    """Configure structlog once for the process (from the CLI)."""
    stream = stream or sys.stdout
    if json is None:
        json = not stream.isatty()
    REDACTOR.update(secrets)
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        REDACTOR,
    ]
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
