"""What every pipeline stage does around its work: retry what is transient, dead-letter what is not.

A stage never crashes on input. Stages work on a batch of records: a record that cannot be processed
becomes a dead-letter record (original key, value and headers untouched, the reason in ``hub_dlq_*``
headers) written to ``hub.dlq`` with the batch's other output. A ``RetryableError`` (broker or
database down) is re-raised after a pause so the subscriber's NACK_ON_ERROR policy seeks back and the
whole batch is consumed again: nothing is committed past it (outputs already written may be written
again with the same ``ce_id``: at-least-once).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog
from pydantic import ValidationError

from hub.errors import HubError, RetryableError
from hub.pipeline.publisher import Outgoing, RecordPublisher
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


def dead_letter_headers(record: Any, *, stage: str, reason: str) -> dict[str, str]:
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


def dead_letter(record: Any, *, stage: str, exc: BaseException) -> Outgoing:
    """The dead-letter record for ``record``, which ``stage`` could not process because of ``exc``."""
    reason = describe_failure(exc)
    # No traceback: exception messages may quote input values (PHI).
    log.error("stage_dead_letter", stage=stage, topic=record.topic, partition=record.partition,
              offset=record.offset, reason=reason)
    return Outgoing(DLQ.name, record.key or b"", record.value or b"",
                    dead_letter_headers(record, stage=stage, reason=reason))


async def run_batch(
    stage: str,
    records: Sequence[Any],
    work: Callable[[Sequence[Any]], Awaitable[None]],
    publisher: RecordPublisher,
) -> None:
    """Run ``work(records)``; the stage never crashes and never skips a record.

    A transient failure pauses, then re-raises so the batch is consumed again. Any other failure that
    escapes ``work`` (a bug, since ``work`` dead-letters bad records itself) is isolated: each record
    is retried on its own, and a single record that still fails is dead-lettered.
    """
    try:
        await work(records)
    except RetryableError as exc:
        first = records[0] if records else None
        log.warning("stage_retry", stage=stage, count=len(records), error=type(exc).__name__,
                    topic=getattr(first, "topic", None), offset=getattr(first, "offset", None))
        await asyncio.sleep(RETRY_PAUSE_S)
        raise
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - a worker never crashes on input
        if len(records) > 1:
            for record in records:
                await run_batch(stage, [record], work, publisher)
            return
        await publisher.publish_many([dead_letter(records[0], stage=stage, exc=exc)])
