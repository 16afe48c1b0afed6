"""Logging, configured once: structlog with contextvars, and a processor that keeps PHI out.

Only keys on the allow-list reach the output; any other key's value is replaced by
``"[redacted]"``. Event ids, partner ids, topics and offsets are not PHI; bodies, names,
identifiers and patient ids are never logged.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

SAFE_KEYS = frozenset(
    {
        "event", "level", "timestamp", "logger", "exc_info", "event_id", "partner", "recipient",
        "sender", "topic", "topics", "partition", "offset", "stage", "reason", "verdict", "rule",
        "count", "bootstrap", "pid", "status", "port", "url", "error", "duration_ms", "resource_type",
        "database", "revision", "method", "path", "component", "created",
    }
)
REDACTED = "[redacted]"


def strip_phi(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: redact every value whose key is not known to be free of PHI."""
    for key in list(event_dict):
        if key not in SAFE_KEYS:
            event_dict[key] = REDACTED
    return event_dict


def configure(*, level: str = "INFO", json: bool = False) -> None:
    """Configure structlog and the standard library logging once, for the whole process."""
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            strip_phi,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    # aiokafka logs every transient connection failure at ERROR; the hub reports those itself.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
