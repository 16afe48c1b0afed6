"""The publisher's partitioner caches key hashes but puts every key where aiokafka's default one does, so a
patient's records stay on one partition whichever hub process or client wrote them."""

# Asserts put the expected value first (assert expected == actual); SIM300 would flip them.

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner

from hub.pipeline.publisher import CachedKeyPartitioner

KEYS = [b"", b"a", b"hp-" + b"0" * 32, b"hosp-a|urn:oid:1.2.3|MRN-000042", bytes(range(256)), "hp-é".encode()]


def test_every_key_goes_where_the_default_partitioner_puts_it_on_a_miss_and_on_a_hit() -> None:
    cached = CachedKeyPartitioner()
    for partitions in ([0], [0, 1, 2], list(range(16)), [3, 5, 7]):
        for key in KEYS:
            expected = DefaultPartitioner()(key, partitions, partitions)
            assert (expected, expected) == (cached(key, partitions, []), cached(key, partitions, []))


def test_the_cache_is_bounded_and_answers_stay_right_after_it_is_emptied() -> None:
    cached = CachedKeyPartitioner(max_keys=2)
    partitions = list(range(12))
    answers = [cached(key, partitions, partitions) for key in KEYS * 2]
    assert [DefaultPartitioner()(key, partitions, partitions) for key in KEYS * 2] == answers
    assert len(cached._hashes) <= 2


def test_a_record_without_a_key_goes_to_an_available_partition() -> None:
    assert 4 == CachedKeyPartitioner()(None, [0, 1, 2, 3, 4], [4])
