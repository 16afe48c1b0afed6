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
from pathlib import Path

from hub import logs
from hub.app import running_hub
from hub.pipeline.publisher import KafkaRecordPublisher
from hub.settings import Settings


def main() -> None:
    prefix, marker = sys.argv[1], Path(sys.argv[2])
    logs.configure(level="WARNING")
    original = KafkaRecordPublisher.publish

    async def publish(self: KafkaRecordPublisher, topic: str, *, key: bytes, value: bytes,
                      headers: dict[str, str]) -> None:
        if topic.startswith(prefix) and not marker.exists():
            marker.write_text(topic)
            os.kill(os.getpid(), signal.SIGKILL)
        await original(self, topic, key=key, value=value, headers=headers)

    KafkaRecordPublisher.publish = publish  # type: ignore[method-assign]

    async def run() -> None:
        async with running_hub(Settings(), http=False):
            print("worker-ready", flush=True)
            await asyncio.Event().wait()

    asyncio.run(run())


if __name__ == "__main__":
    main()
