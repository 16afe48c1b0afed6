"""A pipeline worker that SIGKILLs itself just before its first write to a chosen topic.

Run as ``python -m tests.e2e.crashing_worker <topic-prefix> <marker-file>``: while the marker file
does not exist, the first publish to a topic starting with the prefix creates it and kills the
process (after consume, before produce). Once the marker exists it runs as a normal worker.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from hub import logs
from hub.app import running_hub
from hub.pipeline.publisher import AioKafkaRecordPublisher, Outgoing
from hub.settings import Settings


def main() -> None:
    prefix, marker = sys.argv[1], Path(sys.argv[2])
    logs.configure(level="WARNING")
    original = AioKafkaRecordPublisher.publish_many

    async def publish_many(self: AioKafkaRecordPublisher, records: Sequence[Outgoing]) -> None:
        if any(r.topic.startswith(prefix) for r in records) and not marker.exists():
            marker.write_text(prefix)
            os.kill(os.getpid(), signal.SIGKILL)
        await original(self, records)

    AioKafkaRecordPublisher.publish_many = publish_many  # type: ignore[method-assign]

    async def run() -> None:
        async with running_hub(Settings(), http=False):
            print("worker-ready", flush=True)
            await asyncio.Event().wait()

    asyncio.run(run())


if __name__ == "__main__":
    main()
