"""structlog set-up: console when a person watches, JSON otherwise; ``job_id`` bound per job."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog

_configured = False


def configure_logging(level: str | None = None) -> None:
    global _configured
    if _configured:
        return
    log_level = getattr(logging, (level or os.environ.get("PIJOBS_LOG_LEVEL", "INFO")).upper(), logging.INFO)
    renderer: Any = (
        structlog.dev.ConsoleRenderer() if sys.stderr.isatty() else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(log_level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    _configured = True


def clear_context() -> None:
    """Forget the last invocation's bound fields (a warm Lambda reuses the process): every handler entry."""
    structlog.contextvars.clear_contextvars()


def bind_job(job_id: str, **extra: Any) -> None:
    """Start a fresh context for one job: every event after this carries ``job_id``."""
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(job_id=job_id, **extra)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
