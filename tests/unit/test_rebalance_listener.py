"""The route stage forgets its cached consents whenever its consumer is assigned partitions."""

from __future__ import annotations

from aiokafka import TopicPartition

from hub.pipeline.stores import SqlConsentSource
from hub.pipeline.workers import ForgetConsentsOnAssignment
from tests.fakes import FakeConsentSource


async def test_an_assignment_empties_the_consent_cache_and_a_revocation_or_empty_one_does_not() -> None:
    consents = FakeConsentSource()
    listener = ForgetConsentsOnAssignment(consents.forget_all)
    await listener.on_partitions_revoked({TopicPartition("hub.events", 0)})
    await listener.on_partitions_assigned(set())
    assert 0 == consents.forgotten
    await listener.on_partitions_assigned({TopicPartition("hub.events", 0), TopicPartition("hub.events", 1)})
    assert 1 == consents.forgotten


async def test_forget_all_makes_the_sql_consent_source_read_the_store_again() -> None:
    loads: list[str] = []

    class Counting(SqlConsentSource):
        async def _load(self, hub_patient_id: str) -> tuple[()]:
            loads.append(hub_patient_id)
            return ()

    source = Counting(sessions=None, ttl_s=3600)  # type: ignore[arg-type]  # _load is replaced: no database
    await source.consents_for("hp-1")
    await source.consents_for("hp-1")
    source.forget_all()
    await source.consents_for("hp-1")
    assert ["hp-1", "hp-1"] == loads
