"""Record proof: a record verifies only as the hub wrote it, on the topic it was written to, with a hub key."""

# Asserts put the expected value first (assert expected == actual); SIM300 would flip them.

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.errors import ConfigurationError
from hub.record_proof import PROOF_HEADER, PROVEN_TOPICS, RecordNotProven, RecordProof, canonical, covered

KEY = b"k" * 32
OLD_KEY = b"o" * 32
HEADERS = {
    "ce_specversion": "1.0", "ce_id": "evt-1", "ce_source": "/partners/hosp-a",
    "ce_type": "org.carehub.servicerequest.submitted", "ce_time": "2026-01-01T00:00:00+00:00",
    "ce_subject": "Patient/hp-1", "content-type": "application/vnd.carehub.event+json",
}
VALUE = b'{"facts":{"sender":"hosp-a"}}'
PROOF = RecordProof(KEY)


def signed(proof: RecordProof = PROOF, topic: str = "hub.ingress") -> dict[str, str]:
    return proof.stamp(topic, key=b"hosp-a|p1", value=VALUE, headers=dict(HEADERS))


def test_a_stamped_record_verifies_unchanged() -> None:
    RecordProof(KEY).verify("hub.ingress", key=b"hosp-a|p1", value=VALUE, headers=signed())


def test_headers_as_a_consumer_delivers_them_bytes_in_any_order_verify_too() -> None:
    headers = [(name, value.encode()) for name, value in reversed(signed().items())]
    RecordProof(KEY).verify("hub.ingress", key=b"hosp-a|p1", value=VALUE, headers=headers)


def test_the_proof_header_is_v1_and_base64_of_a_32_byte_mac() -> None:
    scheme, _, encoded = signed()[PROOF_HEADER].partition("=")
    assert "v1" == scheme
    assert 32 == len(base64.b64decode(encoded))


@pytest.mark.parametrize("topic", ["hub.dlq", "partner.cbo-a"])
def test_records_for_unproven_topics_are_not_stamped(topic: str) -> None:
    assert PROOF_HEADER not in signed(topic=topic)


def test_the_proven_topics_are_ingress_and_events() -> None:
    assert frozenset({"hub.ingress", "hub.events"}) == PROVEN_TOPICS


def test_stamping_replaces_a_proof_already_present() -> None:
    """A writer vouches only for what it writes now: a copied-in proof is not kept."""
    headers = {**HEADERS, PROOF_HEADER: "v1=AAAA"}
    stamped = RecordProof(KEY).stamp("hub.events", key=b"hp-1", value=VALUE, headers=headers)
    assert "v1=AAAA" != stamped[PROOF_HEADER]
    RecordProof(KEY).verify("hub.events", key=b"hp-1", value=VALUE, headers=stamped)


def _refused(message: str, **changes: object) -> None:
    record: dict[str, object] = {"key": b"hosp-a|p1", "value": VALUE, "headers": signed()}
    record.update(changes)
    topic = str(record.pop("topic", "hub.ingress"))
    with pytest.raises(RecordNotProven, match=message):
        RecordProof(KEY).verify(topic, **record)  # type: ignore[arg-type]


def test_a_tampered_value_is_refused() -> None:
    _refused("invalid", value=VALUE.replace(b"hosp-a", b"hosp-b"))


def test_a_tampered_key_is_refused() -> None:
    _refused("invalid", key=b"hosp-b|p1")


def test_a_null_key_is_not_an_empty_key() -> None:
    headers = RecordProof(KEY).stamp("hub.ingress", key=b"", value=VALUE, headers=dict(HEADERS))
    with pytest.raises(RecordNotProven, match="invalid"):
        RecordProof(KEY).verify("hub.ingress", key=None, value=VALUE, headers=headers)


@pytest.mark.parametrize("name", ["ce_source", "ce_id", "ce_type", "ce_time", "ce_subject", "content-type"])
def test_a_tampered_covered_header_is_refused(name: str) -> None:
    _refused("invalid", headers={**signed(), name: "/partners/hosp-b"})


@pytest.mark.parametrize("name", ["ce_sequence", "hub_part2_notice"])
def test_an_added_covered_header_is_refused(name: str) -> None:
    _refused("invalid", headers={**signed(), name: "1"})


def test_a_removed_covered_header_is_refused() -> None:
    headers = signed()
    del headers["ce_subject"]
    _refused("invalid", headers=headers)


def test_a_covered_header_twice_is_refused_even_with_a_good_proof() -> None:
    """Readers keep one of two values; the proof must not vouch for a choice it cannot see."""
    headers = [(n, v.encode()) for n, v in signed().items()] + [("ce_source", b"/partners/hosp-b")]
    _refused("more than once", headers=headers)


def test_a_record_copied_to_another_topic_is_refused() -> None:
    _refused("invalid", topic="hub.events")


def test_a_record_without_a_proof_is_refused_as_missing() -> None:
    _refused("missing", headers=dict(HEADERS))


def test_two_proofs_are_refused() -> None:
    headers = [(n, v.encode()) for n, v in signed().items()] + [(PROOF_HEADER, signed()[PROOF_HEADER].encode())]
    _refused("more than once", headers=headers)


@pytest.mark.parametrize("bad", ["v2=" + base64.b64encode(b"x" * 32).decode(), "v1=not base64!", "garbage", "v1="])
def test_a_malformed_proof_is_refused(bad: str) -> None:
    _refused("invalid", headers={**signed(), PROOF_HEADER: bad})


def test_a_record_signed_with_another_key_is_refused() -> None:
    with pytest.raises(RecordNotProven, match="invalid"):
        RecordProof(KEY).verify("hub.ingress", key=b"hosp-a|p1", value=VALUE, headers=signed(RecordProof(OLD_KEY)))


def test_after_rotation_a_record_signed_with_the_previous_key_still_verifies() -> None:
    old_record = signed(RecordProof(OLD_KEY))
    rotated = RecordProof(KEY, previous=[OLD_KEY])
    rotated.verify("hub.ingress", key=b"hosp-a|p1", value=VALUE, headers=old_record)
    assert signed(rotated) == signed(RecordProof(KEY)), "new records are signed with the current key"


def test_headers_outside_the_proof_neither_break_nor_count() -> None:
    """A client's own headers (FastStream adds ``correlation_id``) and a dead letter's ``hub_dlq_*``."""
    RecordProof(KEY).verify(
        "hub.ingress", key=b"hosp-a|p1", value=VALUE,
        headers={**signed(), "correlation_id": "x", "hub_dlq_reason": "r", "hub_dlq_source_topic": "hub.ingress"},
    )
    assert not covered("correlation_id")
    assert not covered("hub_dlq_reason")
    assert not covered(PROOF_HEADER)


@pytest.mark.parametrize("short", [b"", b"k" * 31])
def test_a_key_shorter_than_32_bytes_is_a_configuration_error(short: bytes) -> None:
    with pytest.raises(ConfigurationError, match="HUB_RECORD_KEY"):
        RecordProof(short)
    with pytest.raises(ConfigurationError, match="HUB_RECORD_KEY_PREVIOUS"):
        RecordProof(KEY, previous=[short])


def test_the_repr_and_errors_never_show_a_key() -> None:
    proof = RecordProof(KEY, previous=[OLD_KEY])
    assert "k" * 8 not in repr(proof)
    with pytest.raises(RecordNotProven) as refused:
        proof.verify("hub.ingress", key=b"hosp-a|p1", value=b"PHI", headers=signed(RecordProof(b"z" * 32)))
    assert "PHI" not in str(refused.value)
    assert "k" * 8 not in str(refused.value)


parts = st.tuples(
    st.sampled_from(sorted(PROVEN_TOPICS)), st.one_of(st.none(), st.binary(max_size=8)), st.binary(max_size=8),
    st.dictionaries(st.sampled_from(["ce_id", "ce_source", "hub_x", "content-type"]), st.text(max_size=4)),
)


@given(parts, parts)
def test_two_different_records_never_share_a_canonical_form(a: tuple, b: tuple) -> None:  # type: ignore[type-arg]
    """Length prefixes make the encoding injective: moving bytes between parts changes it."""
    if a != b:
        assert canonical(*a) != canonical(*b)
