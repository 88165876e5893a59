"""structlog set-up: JSON lines without a TTY (journald keeps them), console with one.

Every configured secret is replaced by `***` in every event, whatever key it hides in
(`monitor.secrets.Redactor` is the last processor before rendering).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any, TextIO

import structlog

from monitor.secrets import Redactor

# The process's one log redactor (a structlog processor); the daemon updates it on reload.
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
