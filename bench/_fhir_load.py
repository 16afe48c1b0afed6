"""FHIR REST load client for ``bench.intake``: POSTs bodies over raw HTTP/1.1 keep-alive sockets.

Run as ``python -m bench._fhir_load`` with a JSON job on stdin; answers one JSON line on stdout. It runs
in its own process so that the client's CPU does not share the hub's event loop. Unlike
``bench._http_load`` (httpx, POST /fhir/ServiceRequest only) it takes the path from the job and speaks
HTTP/1.1 on plain sockets, one thread per connection, so the client costs little CPU per request
(the benchmark machine's cores are shared with the hub and the broker).

``job["concurrency"]`` connections each send a request and read its whole response before the next;
requests are taken from one shared queue. Warm-up requests run first on the same connections.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class _Shared:
    """The request queue the connections take from, and what they measured."""

    requests: list[bytes]
    next_index: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    sample_error_body: str | None = None

    def take(self) -> bytes | None:
        with self.lock:
            if self.next_index >= len(self.requests):
                return None
            request = self.requests[self.next_index]
            self.next_index += 1
            return request


def read_response(sock: socket.socket, buffer: bytearray) -> tuple[int, bytes]:
    """Read one response (status, body) from ``sock``; ``buffer`` keeps bytes read past it."""
    while True:
        end = buffer.find(b"\r\n\r\n")
        if end >= 0:
            break
        chunk = sock.recv(65_536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        buffer += chunk
    head = bytes(buffer[:end]).decode("latin-1")
    lines = head.split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        lowered = name.strip().lower()
        if lowered == "content-length":
            length = int(value.strip())
        elif lowered == "transfer-encoding":
            raise ConnectionError("chunked responses are not supported by this client")
    total = end + 4 + length
    while len(buffer) < total:
        chunk = sock.recv(65_536)
        if not chunk:
            raise ConnectionError("the server closed the connection mid-response")
        buffer += chunk
    body = bytes(buffer[end + 4 : total])
    del buffer[:total]
    return status, body


def _connection(shared: _Shared, address: tuple[str, int], timeout_s: float) -> None:
    buffer = bytearray()
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    clock = time.perf_counter
    try:
        with socket.create_connection(address, timeout=timeout_s) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while (request := shared.take()) is not None:
                sent = clock()
                sock.sendall(request)
                status, body = read_response(sock, buffer)
                latencies.append(clock() - sent)
                statuses[status] += 1
                if status >= 300 and shared.sample_error_body is None:
                    shared.sample_error_body = body[:500].decode("utf-8", "replace")
    except OSError as exc:
        with shared.lock:
            shared.errors.append(f"{type(exc).__name__}: {exc}")
    with shared.lock:
        shared.latencies.extend(latencies)
        shared.statuses.update(statuses)


def _run_all(requests: list[bytes], address: tuple[str, int], concurrency: int, timeout_s: float) -> _Shared:
    shared = _Shared(requests=requests)
    threads = [threading.Thread(target=_connection, args=(shared, address, timeout_s), daemon=True)
               for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return shared


def build_request(host: str, port: int, path: str, token: str, body: bytes) -> bytes:
    """One HTTP/1.1 POST of ``body`` as ``application/fhir+json``."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/fhir+json\r\nAccept: application/fhir+json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


def run(job: dict[str, Any]) -> dict[str, Any]:
    """Warm up with ``job["warmup"]`` bodies, then time ``job["bodies"]`` POSTed to ``job["path"]``."""
    host, port, path, token = str(job["host"]), int(job["port"]), str(job["path"]), str(job["token"])
    concurrency = int(job["concurrency"])
    timeout_s = float(job.get("timeout_s", 60))
    make = [build_request(host, port, path, token, str(b).encode("utf-8")) for b in job["bodies"]]
    warm = [build_request(host, port, path, token, str(b).encode("utf-8")) for b in job["warmup"]]
    warmed = _run_all(warm, (host, port), concurrency, timeout_s)
    cpu0 = time.process_time()
    started = time.perf_counter()
    shared = _run_all(make, (host, port), concurrency, timeout_s)
    elapsed = time.perf_counter() - started
    return {
        "elapsed_s": elapsed,
        "latencies_s": shared.latencies,
        "statuses": {str(code): count for code, count in shared.statuses.items()},
        "warmup_statuses": {str(code): count for code, count in warmed.statuses.items()},
        "errors": shared.errors + warmed.errors,
        "sample_error_body": shared.sample_error_body or warmed.sample_error_body,
        "client_cpu_s": time.process_time() - cpu0,
    }


def main() -> None:
    """Read the job from stdin, run it, write the result as one JSON line."""
    job = json.loads(sys.stdin.read())
    sys.stdout.write(json.dumps(run(job)) + "\n")


if __name__ == "__main__":
    main()
