"""Where the hub's record key comes from: ``HUB_RECORD_KEY`` (with ``HUB_RECORD_KEY_PREVIOUS``), or, unset,
one random key in the control-plane database that every process on it shares."""

# Asserts put the expected value first (assert expected == actual); SIM300 would flip them.

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.app import RECORD_PROOF_SECRET, record_proof
from hub.control.db import make_engine, make_sessionmaker, upgrade
from hub.control.secrets import hub_secret
from hub.errors import ConfigurationError
from hub.record_proof import RecordNotProven, RecordProof
from hub.settings import Settings

KEY = "a-record-key-of-at-least-32-bytes-long"
OLD = "the-previous-record-key-also-32-bytes-long"
HEADERS = {"ce_id": "e1", "ce_source": "/partners/h"}
UNSET = Settings(record_key=None, record_key_previous=None)  # whatever the environment says


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    await upgrade(url)
    engine = make_engine(url)
    yield make_sessionmaker(engine)
    await engine.dispose()


def _stamped(proof: RecordProof) -> dict[str, str]:
    return proof.stamp("hub.ingress", key=b"k", value=b"v", headers=dict(HEADERS))


def _verifies(proof: RecordProof, headers: dict[str, str]) -> bool:
    try:
        proof.verify("hub.ingress", key=b"k", value=b"v", headers=headers)
    except RecordNotProven:
        return False
    return True


async def test_a_configured_key_signs_and_the_database_is_not_used(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    proof = await record_proof(Settings(record_key=SecretStr(KEY)), sessions)
    assert _verifies(RecordProof(KEY.encode()), _stamped(proof))
    stored = await _stored_names(sessions)
    assert set() == stored


async def test_after_rotation_records_signed_with_the_previous_key_verify_and_new_ones_use_the_new_key(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    rotated = await record_proof(Settings(record_key=SecretStr(KEY), record_key_previous=SecretStr(OLD)), sessions)
    assert _verifies(rotated, _stamped(RecordProof(OLD.encode())))
    assert _verifies(RecordProof(KEY.encode()), _stamped(rotated))
    assert not _verifies(RecordProof(OLD.encode()), _stamped(rotated))


async def test_a_configured_key_shorter_than_32_bytes_stops_the_hub(sessions: async_sessionmaker[AsyncSession]) -> None:
    with pytest.raises(ConfigurationError, match="HUB_RECORD_KEY must be at least 32 bytes"):
        await record_proof(Settings(record_key=SecretStr("short")), sessions)


async def test_unset_two_processes_on_one_database_share_the_generated_key(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    """``carehub run`` and a ``carehub worker`` (its own engine) verify each other's records."""
    run = await record_proof(UNSET, sessions)
    other_engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
    try:
        worker = await record_proof(UNSET, make_sessionmaker(other_engine))
    finally:
        await other_engine.dispose()
    assert _verifies(worker, _stamped(run))
    assert _verifies(RecordProof(await hub_secret(sessions, RECORD_PROOF_SECRET)), _stamped(run))


async def test_unset_another_database_means_another_key(
    tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'other.db'}"
    await upgrade(url)
    engine = make_engine(url)
    try:
        elsewhere = await record_proof(UNSET, make_sessionmaker(engine))
    finally:
        await engine.dispose()
    assert not _verifies(await record_proof(UNSET, sessions), _stamped(elsewhere))


async def _stored_names(sessions: async_sessionmaker[AsyncSession]) -> set[str]:
    async with sessions() as session:
        return {row[0] for row in await session.execute(text("SELECT name FROM hub_secrets"))}
