"""``carehub run`` as a real process on the embedded default, for tests that kill it: its environment,
start, readiness, and waiting for a process to be gone."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "kill-test-admin-token"


@dataclass(frozen=True)
class HubPorts:
    """The ports one hub process listens on, the same across its restarts."""

    kafka: int
    http: int
    mllp: int

    @classmethod
    def free(cls) -> HubPorts:
        return cls(kafka=free_port(), http=free_port(), mllp=free_port())

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http}"


def hub_environment(tmp_path: Path, ports: HubPorts, **settings: str) -> dict[str, str]:
    """The environment of ``carehub run`` on the embedded default: no inherited ``HUB_*`` setting, SQLite in
    ``tmp_path``, the given ports, a fixed admin token, and ``settings`` (``HUB_`` names)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("HUB_")}
    env.update({
        "HUB_EMBEDDED_KAFKA_PORT": str(ports.kafka), "HUB_HTTP_PORT": str(ports.http),
        "HUB_MLLP_PORT": str(ports.mllp), "HUB_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}",
        "HUB_ADMIN_TOKEN": ADMIN_TOKEN, "HUB_LOG_LEVEL": "WARNING", "HUB_CONSUMER_SESSION_TIMEOUT_MS": "2000",
    })
    env.update(settings)
    return env


def start_hub(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``carehub run`` (``python -m hub.cli run``) in the background, its output appended to ``log``."""
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "hub.cli", "run"], cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT
        )


async def wait_until_serving(process: subprocess.Popen[bytes], url: str, log: Path, timeout_s: float = 60) -> None:
    """Return once ``url``/healthz answers 200; fail early if the process exits."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"carehub run exited with {process.returncode}: {log.read_text()[-3000:]}")
            try:
                if (await client.get(f"{url}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"carehub run did not serve {url} within {timeout_s}s: {log.read_text()[-3000:]}")


def is_gone(pid: int) -> bool:
    """True when process ``pid`` no longer runs (it does not exist, or it is a zombie nobody reaped yet)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return any(line.startswith("State:") and "Z" in line.split()[1] for line in status.splitlines())


async def wait_until_gone(pid: int, timeout_s: float = 15) -> bool:
    """Wait until process ``pid`` is gone; False when it still runs after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if is_gone(pid):
            return True
        await asyncio.sleep(0.05)
    return is_gone(pid)


async def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a hub process the way Ctrl-C does (SIGINT), SIGKILL if it does not stop in time."""
    if process.poll() is not None:
        return
    process.send_signal(2)
    try:
        await asyncio.wait_for(asyncio.to_thread(process.wait), 20)
    except TimeoutError:
        process.kill()
        await asyncio.to_thread(process.wait)
