"""Over the real broker: when the route consumer is assigned its partitions, the consent cache is emptied."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from faststream.kafka import KafkaBroker

from hub.broker.embedded import EmbeddedBroker
from hub.consent.model import Policies
from hub.pipeline.route import engine_decider
from hub.pipeline.workers import PipelineDeps, build_pipeline_router
from tests.fakes import FakeAuditLog, FakeConsentSource, FakeDirectory, FakePatientIndex, FakePublisher, FakeSequencer
from tests.records import TEST_PROOF

pytestmark = pytest.mark.broker


async def test_the_route_consumer_forgets_cached_consents_when_partitions_are_assigned(tansu: EmbeddedBroker) -> None:
    assigned = asyncio.Event()

    class Watched(FakeConsentSource):
        def forget_all(self) -> None:
            super().forget_all()
            assigned.set()

    consents = Watched()
    deps = PipelineDeps(
        patients=FakePatientIndex(), directory=FakeDirectory([]), audit=FakeAuditLog(), sequencer=FakeSequencer(),
        publisher=FakePublisher(), consents=consents, decide=engine_decider(Policies()), proof=TEST_PROOF,
    )
    broker = KafkaBroker(tansu.bootstrap)
    broker.include_router(
        build_pipeline_router(deps, group_id=f"rebalance-{uuid.uuid4().hex[:8]}", fetch_max_wait_ms=20,
                              session_timeout_ms=2000)
    )
    async with broker:
        await broker.start()
        await asyncio.wait_for(assigned.wait(), timeout=20)
    assert consents.forgotten >= 1
