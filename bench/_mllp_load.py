"""MLLP load client for ``bench.intake``: sends HL7 v2 frames over raw sockets, one thread per connection.

Run as ``python -m bench._mllp_load`` with a JSON job on stdin; answers one JSON line on stdout. It runs
in its own process so that the client's CPU does not share the hub's event loop (the hub runs inside the
benchmark process). Standard library only, so it starts quickly and costs little per message.

With ``window`` 1 (the default) each connection sends one frame (``<VT> message <FS><CR>``) and reads its
whole acknowledgment before it sends the next, as most HL7 interface engines do. With ``window`` N > 1 a
connection keeps up to N frames unacknowledged (pipelining: it sends while fewer than N ACKs are owed and
reads ACKs as they come, which must arrive in the order of the frames). Frames are dealt to the
connections round robin; every connection first sends its share of the warm-up frames (one at a time),
then all start together (a barrier) and the clock runs from that start until the last connection read
its last ACK. A message's latency runs from its send to its ACK.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\r"


@dataclass
class _Connection:
    """One client connection's frames and what it measured."""

    frames: list[bytes]
    warmup: list[bytes]
    window: int = 1
    latencies: list[float] = field(default_factory=list)
    codes: Counter[str] = field(default_factory=Counter)
    warm_codes: Counter[str] = field(default_factory=Counter)
    error: str | None = None


def ack_code(ack: bytes) -> str:
    """MSA-1 of an acknowledgment (``AA``, ``AE``, ``AR``), or ``?`` when there is no MSA segment."""
    at = ack.find(b"\rMSA")
    if at < 0 or len(ack) < at + 7:
        return "?"
    return ack[at + 5 : at + 7].decode("ascii", "replace")


def exchange(sock: socket.socket, frame: bytes) -> bytes:
    """Send one framed message; return its acknowledgment (the frame content)."""
    sock.sendall(frame)
    received = b""
    while not received.endswith(END_BLOCK):
        chunk = sock.recv(65_536)
        if not chunk:
            raise ConnectionError("the hub closed the connection before acknowledging")
        received += chunk
    return received[received.find(START_BLOCK) + 1 : -len(END_BLOCK)]


def _serve(connection: _Connection, address: tuple[str, int], start: threading.Barrier, timeout_s: float) -> None:
    try:
        with socket.create_connection(address, timeout=timeout_s) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for frame in connection.warmup:
                connection.warm_codes[ack_code(exchange(sock, frame))] += 1
            start.wait()
            if connection.window > 1:
                _pipelined(sock, connection)
                return
            latencies, codes = connection.latencies, connection.codes
            clock = time.perf_counter
            for frame in connection.frames:
                sent = clock()
                code = ack_code(exchange(sock, frame))
                latencies.append(clock() - sent)
                codes[code] += 1
    except (OSError, threading.BrokenBarrierError) as exc:
        connection.error = f"{type(exc).__name__}: {exc}"
        start.abort()


def _pipelined(sock: socket.socket, connection: _Connection) -> None:
    """Send while fewer than ``connection.window`` ACKs are owed; read ACKs as they come (in frame order)."""
    frames, window = connection.frames, connection.window
    latencies, codes = connection.latencies, connection.codes
    clock = time.perf_counter
    sent_at: deque[float] = deque()
    buffer = b""
    sent = received = 0
    while received < len(frames):
        if sent < len(frames) and sent - received < window:
            burst = frames[sent : received + window]
            sock.sendall(b"".join(burst))
            now = clock()
            sent_at.extend([now] * len(burst))
            sent += len(burst)
        chunk = sock.recv(65_536)
        if not chunk:
            raise ConnectionError("the hub closed the connection before acknowledging")
        buffer += chunk
        while (end := buffer.find(END_BLOCK)) >= 0:
            ack = buffer[buffer.find(START_BLOCK) + 1 : end]
            buffer = buffer[end + len(END_BLOCK) :]
            latencies.append(clock() - sent_at.popleft())
            codes[ack_code(ack)] += 1
            received += 1


def run(job: dict[str, Any]) -> dict[str, Any]:
    """Send ``job["frames"]`` over ``job["connections"]`` connections to ``job["host"]:job["port"]``."""
    count = int(job["connections"])
    frames = [START_BLOCK + str(m).encode("utf-8") + END_BLOCK for m in job["frames"]]
    warmup = [START_BLOCK + str(m).encode("utf-8") + END_BLOCK for m in job["warmup"]]
    window = int(job.get("window", 1))
    connections = [_Connection(frames=frames[i::count], warmup=warmup[i::count], window=window) for i in range(count)]
    start = threading.Barrier(count + 1)
    address = (str(job["host"]), int(job["port"]))
    timeout_s = float(job.get("timeout_s", 60))
    threads = [threading.Thread(target=_serve, args=(c, address, start, timeout_s), daemon=True) for c in connections]
    cpu0 = time.process_time()
    for thread in threads:
        thread.start()
    with contextlib.suppress(threading.BrokenBarrierError):
        start.wait()
    started = time.perf_counter()
    cpu_started = time.process_time()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    codes: Counter[str] = Counter()
    warm: Counter[str] = Counter()
    for connection in connections:
        codes += connection.codes
        warm += connection.warm_codes
    return {
        "elapsed_s": elapsed,
        "latencies_s": [x for c in connections for x in c.latencies],
        "codes": dict(codes),
        "warmup_codes": dict(warm),
        "errors": [c.error for c in connections if c.error],
        "client_cpu_s": time.process_time() - cpu_started,
        "client_cpu_total_s": time.process_time() - cpu0,
    }


def main() -> None:
    """Read the job from stdin, run it, write the result as one JSON line."""
    job = json.loads(sys.stdin.read())
    sys.stdout.write(json.dumps(run(job)) + "\n")


if __name__ == "__main__":
    main()
