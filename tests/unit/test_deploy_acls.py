"""deploy/kafka/acls.sh grants what deploy/README.md promises: a partner reads its own topic (a literal
pattern, so partner.cbo-a never matches partner.cbo-ab) and nothing else; only the hub touches hub.*.
Run against a stub kafka-acls.sh that prints its arguments."""

# Asserts put the expected value first (assert expected == actual); SIM300 would flip them.

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "kafka" / "acls.sh"


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    stub = tmp_path / "kafka-acls.sh"
    stub.write_text('#!/bin/sh\necho "$*"\n')
    stub.chmod(0o755)
    env = {**os.environ, "KAFKA_BIN": str(tmp_path), "BOOTSTRAP": "kafka:9093", "COMMAND_CONFIG": "/admin.properties"}
    return subprocess.run(["/bin/sh", str(SCRIPT), *args], capture_output=True, text=True, env=env, check=False)


def test_a_partner_gets_read_on_its_own_topic_as_a_literal_and_its_own_group_prefix(tmp_path: Path) -> None:
    result = run(tmp_path, "partner", "cbo-a")
    assert 0 == result.returncode, result.stderr
    topic, group = result.stdout.splitlines()
    assert "--allow-principal User:partner-cbo-a" in topic
    assert "--topic partner.cbo-a --resource-pattern-type literal" in topic
    assert "--operation Write" not in topic
    assert "--group partner-cbo-a. --resource-pattern-type prefixed" in group
    assert "hub." not in result.stdout


def test_the_hub_principal_gets_hub_topics_partner_writes_and_its_worker_groups(tmp_path: Path) -> None:
    result = run(tmp_path, "hub")
    assert 0 == result.returncode, result.stderr
    hub_topics, partner_topics, groups = result.stdout.splitlines()
    assert "--allow-principal User:carehub" in hub_topics
    assert "--topic hub. --resource-pattern-type prefixed" in hub_topics
    assert "--operation Write" in partner_topics
    assert "--operation Read" not in partner_topics
    assert "--group carehub-pipeline. --resource-pattern-type prefixed" in groups


@pytest.mark.parametrize("bad", ["CBO", "cbo.a", "", "-cbo", "a" * 64, "cbo a", "x;rm", "cbo-a\nhub"])
def test_an_id_the_hub_would_not_accept_is_refused_before_any_acl_is_added(tmp_path: Path, bad: str) -> None:
    result = run(tmp_path, "partner", bad)
    assert 0 != result.returncode
    assert "" == result.stdout
