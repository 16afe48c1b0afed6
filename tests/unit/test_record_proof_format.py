"""The record proof's canonical form is fixed: records proven by an older hub keep verifying (rolling upgrade)."""

# Asserts put the expected value first (assert expected == actual); SIM300 would flip them.

from __future__ import annotations

import hashlib

import pytest

from hub.record_proof import RecordProof, canonical, covered

HEADERS = [("ce_id", b"e1"), ("content-type", b"application/vnd.carehub.event+json"), ("hub_x", b"\x00\xff"),
           ("hub_dlq_reason", b"r"), ("hub_proof", b"v1=x"), ("correlation_id", b"c")]


def test_the_canonical_form_of_a_record_is_the_documented_one() -> None:
    expected = (
        b"carehub.record-proof.v1\n" + b"\x00\x00\x00\x0bhub.ingress" + b"\x00\x00\x00\x01k" + b"\xff\xff\xff\xff"
        + b"\x00\x00\x00\x03"
        + b"\x00\x00\x00\x05ce_id\x00\x00\x00\x02e1"
        + b"\x00\x00\x00\x0ccontent-type\x00\x00\x00\x22application/vnd.carehub.event+json"
        + b"\x00\x00\x00\x05hub_x\x00\x00\x00\x02\x00\xff"
    )
    assert expected == canonical("hub.ingress", b"k", None, list(reversed(HEADERS)))


def test_a_proof_made_with_a_known_key_is_the_same_as_before() -> None:
    proof = RecordProof(b"k" * 32).proof("hub.events", key=b"", value=b"{}", headers=dict(HEADERS))
    digest = hashlib.sha256(proof.encode()).hexdigest()[:16]
    assert (digest, proof[:3]) == (_known_digest(), "v1=")


def _known_digest() -> str:
    # Pinned from the implementation before the fast path (struct.pack per field, hmac.new per record).
    return "5c038fdd74c007bc"


@pytest.mark.parametrize("name", [name for name, _ in HEADERS] + ["hub_dlq_source_topic", "ce_", "hubx", "Ce_id"])
def test_exactly_the_headers_covered_names_change_the_canonical_form(name: str) -> None:
    base = canonical("hub.events", b"k", b"v", [])
    assert covered(name) == (base != canonical("hub.events", b"k", b"v", [(name, b"1")]))
