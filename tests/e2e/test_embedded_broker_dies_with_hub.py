"""The embedded broker dies with the hub (docs/adr/0012): a ``kill -9`` of ``carehub run`` takes its broker
with it, so the documented restart finds the port free; a broker an earlier hub left anyway (no death
signal) is stopped by the next start; a broker whose hub still runs is never touched."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hub.broker.embedded import EmbeddedBroker, pid_file_for, port_is_free, wait_for_metadata
from hub.errors import ConfigurationError
from tests.conftest import free_port
from tests.e2e.hub_process import ROOT, HubPorts, hub_environment, start_hub, stop, wait_until_gone, wait_until_serving

pytestmark = pytest.mark.broker

_LEAKY_HUB = """
import asyncio, sys
import hub.broker.embedded as embedded
embedded.die_with_parent = lambda: None  # a hub that cannot ask the kernel to stop its broker

async def main():
    broker = embedded.EmbeddedBroker(port=int(sys.argv[1]))
    await broker.start()
    print("broker-ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def _broker_pid(port: int) -> int:
    return int(pid_file_for("127.0.0.1", port).read_text().split()[0])


async def test_a_hub_killed_with_sigkill_takes_its_embedded_broker_with_it(tmp_path: Path) -> None:
    ports = HubPorts.free()
    env = hub_environment(tmp_path, ports)
    log = tmp_path / "hub.log"
    hub = start_hub(env, log)
    try:
        await wait_until_serving(hub, ports.http_url, log)
        broker = _broker_pid(ports.kafka)
        assert not await wait_until_gone(broker, timeout_s=0), "the broker runs while its hub runs"
        hub.send_signal(signal.SIGKILL)
        assert -signal.SIGKILL == await asyncio.to_thread(hub.wait)

        assert await wait_until_gone(broker), "the embedded broker outlived the hub killed with SIGKILL"
        assert port_is_free("127.0.0.1", ports.kafka)
        restarted = start_hub(env, log)
        try:
            await wait_until_serving(restarted, ports.http_url, log)
        finally:
            await stop(restarted)
    finally:
        if hub.poll() is None:
            hub.kill()
            await asyncio.to_thread(hub.wait)


async def test_a_broker_orphaned_by_an_earlier_hub_is_stopped_when_the_next_one_starts(tmp_path: Path) -> None:
    port = free_port()
    leaky = subprocess.Popen(
        [sys.executable, "-c", _LEAKY_HUB, str(port)], cwd=ROOT, stdout=subprocess.PIPE,
        stderr=(tmp_path / "leaky.log").open("ab"),
    )
    assert leaky.stdout is not None
    stdout = leaky.stdout

    async def ready() -> None:
        while b"broker-ready" not in (line := await asyncio.to_thread(stdout.readline)):
            assert line, f"the leaky hub exited: {(tmp_path / 'leaky.log').read_text()[-2000:]}"

    await asyncio.wait_for(ready(), 60)
    orphan = _broker_pid(port)
    leaky.kill()
    await asyncio.to_thread(leaky.wait)
    assert not await wait_until_gone(orphan, timeout_s=0), "without the death signal the broker survives its hub"
    assert not port_is_free("127.0.0.1", port)

    async with EmbeddedBroker(port=port) as successor:
        assert await wait_until_gone(orphan)
        assert successor.pid != orphan
        await wait_for_metadata(successor.bootstrap, timeout_s=10)


async def test_a_broker_whose_hub_still_runs_is_named_and_left_running() -> None:
    async with EmbeddedBroker(port=free_port()) as running:
        second = EmbeddedBroker(port=running.port)
        with pytest.raises(ConfigurationError) as refused:
            await second.start()
        assert f"pid {running.pid}, started by the hub with pid {os.getpid()}" in str(refused.value)
        await wait_for_metadata(running.bootstrap, timeout_s=10)
