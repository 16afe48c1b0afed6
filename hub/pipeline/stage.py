"""What every pipeline stage does around its work: retry what is transient, dead-letter what is not.

A stage never crashes on input. A ``RetryableError`` (broker or database down) is re-raised after a
pause so the subscriber's NACK_ON_ERROR policy seeks back and the same record is consumed again:
nothing later is committed past it. Any other failure sends the record, original bytes and headers
untouched, to ``hub.dlq`` with the reason in ``hub_dlq_*`` headers, and the stage moves on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from pydantic import ValidationError

from hub.errors import HubError, RetryableError
from hub.pipeline.publisher import RecordPublisher
from hub.topics.registry import DLQ

log = structlog.get_logger(__name__)

RETRY_PAUSE_S = 0.5


def describe_failure(exc: BaseException) -> str:
    """A reason for the dead-letter record that names the problem but never echoes input values."""
    if isinstance(exc, ValidationError):
        first = exc.errors(include_url=False, include_input=False)[:3]
        where = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in first)
        return f"malformed record ({exc.error_count()} problems): {where}"
    if isinstance(exc, HubError):
        return f"{type(exc).__name__}: {exc}"
    return f"unexpected {type(exc).__name__} while processing the record"


def dead_letter_headers(
    record: Any, *, stage: str, reason: str
) -> dict[str, str]:
    """The original headers plus ``hub_dlq_*`` headers saying where the record came from and why."""
    headers: dict[str, str] = {}
    for name, raw in record.headers or ():
        if name.startswith("hub_dlq_"):
            continue
        headers[name] = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    headers.update(
        {
            "hub_dlq_reason": reason,
            "hub_dlq_stage": stage,
            "hub_dlq_source_topic": str(record.topic),
            "hub_dlq_source_partition": str(record.partition),
            "hub_dlq_source_offset": str(record.offset),
        }
    )
    return headers


async def run_stage(
    stage: str,
    record: Any,
    work: Callable[[Any], Awaitable[None]],
    publisher: RecordPublisher,
) -> None:
    """Run ``work(record)``; retry transient failures, dead-letter everything else."""
    try:
        await work(record)
    except RetryableError as exc:
        log.warning("stage_retry", stage=stage, topic=record.topic, partition=record.partition,
                    offset=record.offset, error=type(exc).__name__)
        await asyncio.sleep(RETRY_PAUSE_S)
        raise
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - a worker never crashes on input: every failure is dead-lettered
        reason = describe_failure(exc)
        # No traceback: exception messages may quote input values (PHI).
        log.error("stage_dead_letter", stage=stage,  # noqa: TRY400 topic=record.topic, partition=record.partition,
                  offset=record.offset, reason=reason)
        await publisher.publish(
            DLQ.name,
            key=record.key or b"",
            value=record.value or b"",
            headers=dead_letter_headers(record, stage=stage, reason=reason),
        )
