"""Shared fixtures: the embedded Tansu broker (once per session) and the public corpus folder."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hub.broker.embedded import EmbeddedBroker


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
async def tansu() -> AsyncIterator[EmbeddedBroker]:
    """The embedded Tansu broker over TCP, started once per test session."""
    broker = EmbeddedBroker(port=free_port())
    await broker.start()
    yield broker
    await broker.stop()


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    """The public example corpus (``HUB_CORPUS_DIR``); tests that need it skip when it is unset."""
    value = os.environ.get("HUB_CORPUS_DIR")
    if not value:
        pytest.skip("HUB_CORPUS_DIR is not set")
    path = Path(value)
    if not path.is_dir():
        pytest.fail(f"HUB_CORPUS_DIR={value} is not a directory")
    return path
