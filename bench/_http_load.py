"""HTTP load client for ``bench.pipeline``: POSTs FHIR bodies at a fixed concurrency, reports timings.

Run as ``python -m bench._http_load`` with a JSON job on stdin; answers one JSON line on stdout. It runs
in its own process so that httpx's client-side CPU does not share the hub's event loop (the hub runs
inside the benchmark process). Imports httpx only, so it starts quickly.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from typing import Any

import httpx


async def _post_all(
    client: httpx.AsyncClient, bodies: list[str], headers: dict[str, str], concurrency: int
) -> tuple[list[float], Counter[int]]:
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < len(bodies):
            body = bodies[next_index]
            next_index += 1
            started = time.perf_counter()
            answer = await client.post("/fhir/ServiceRequest", content=body.encode(), headers=headers)
            latencies.append(time.perf_counter() - started)
            statuses[answer.status_code] += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, statuses


async def run(job: dict[str, Any]) -> dict[str, Any]:
    """Warm up with ``job["warmup"]`` bodies, then time ``job["bodies"]`` at ``job["concurrency"]``."""
    concurrency = int(job["concurrency"])
    headers = {"Authorization": f"Bearer {job['token']}", "Content-Type": "application/fhir+json"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=str(job["url"]), timeout=60, limits=limits) as client:
        _, warm_statuses = await _post_all(client, list(job["warmup"]), headers, concurrency)
        started = time.perf_counter()
        latencies, statuses = await _post_all(client, list(job["bodies"]), headers, concurrency)
        elapsed = time.perf_counter() - started
    return {
        "elapsed_s": elapsed,
        "latencies_s": latencies,
        "statuses": {str(code): count for code, count in (statuses + warm_statuses).items()},
    }


def main() -> None:
    """Read the job from stdin, run it, write the result as one JSON line."""
    job = json.loads(sys.stdin.read())
    result = asyncio.run(run(job))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
