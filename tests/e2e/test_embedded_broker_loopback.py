"""The embedded broker has no authentication, so it must be reachable from this machine only: every socket
the Tansu process listens on is bound to 127.0.0.1 (none to 0.0.0.0, ::, or another interface)."""

# Asserts put the expected value first (assert expected == actual); SIM300 would flip them.

from __future__ import annotations

import os
import socket
import struct
from pathlib import Path

import pytest

from hub.broker.embedded import EmbeddedBroker

pytestmark = [
    pytest.mark.broker,
    pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads listening sockets from Linux /proc"),
]

_LISTEN = "0A"


def _socket_inodes(pid: int) -> set[str]:
    inodes: set[str] = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = str(fd.readlink())
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    return inodes


def _address(hex_address: str, family: int) -> str:
    host, port = hex_address.split(":")
    raw = bytes.fromhex(host)
    if family == socket.AF_INET:
        packed = raw[::-1]  # /proc/net/tcp prints the address as a little-endian 32-bit word
    else:
        packed = b"".join(struct.pack("<I", word) for word in struct.unpack(">4I", raw))
    return f"{socket.inet_ntop(family, packed)}:{int(port, 16)}"


def listening_addresses(pid: int) -> list[str]:
    """``host:port`` of every TCP socket the process ``pid`` listens on (IPv4 and IPv6)."""
    inodes = _socket_inodes(pid)
    found: list[str] = []
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == _LISTEN and fields[9] in inodes:
                found.append(_address(fields[1], family))
    return found


def test_proc_parsing_sees_a_socket_this_process_binds_to_every_interface() -> None:
    """The reader below is able to see a non-loopback listener (so an empty answer proves nothing)."""
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))  # on purpose (so the reader is shown to see it), closed at once
        sock.listen()
        port = sock.getsockname()[1]
        assert f"0.0.0.0:{port}" in listening_addresses(os.getpid())


def test_the_embedded_broker_listens_on_loopback_only(tansu: EmbeddedBroker) -> None:
    assert tansu.pid is not None
    addresses = listening_addresses(tansu.pid)
    assert [tansu.bootstrap] == addresses
    assert tansu.bootstrap.startswith("127.0.0.1:")
