"""Record proof: an HMAC-SHA256 that says a ``hub.*`` record was written by the hub itself.

The broker is not a trust boundary (DESIGN.md, "Trust boundaries"): anyone who can produce to
``hub.ingress`` could otherwise claim any sender. So every record the hub writes to a proven topic
(:data:`PROVEN_TOPICS`: ``hub.ingress``, ``hub.events``) carries a ``hub_proof`` header, and the
workers verify it before they read anything else; a record without a valid proof is dead-lettered.

What the proof covers (:func:`canonical`), each part length-prefixed so no two records share a form:

* the topic name (a record copied from ``hub.ingress`` to ``hub.events`` does not verify);
* the record key and value, byte for byte (a null key differs from an empty one);
* every header the pipeline reads or may read: ``ce_*``, ``content-type`` and ``hub_*``, except the
  proof itself and the ``hub_dlq_*`` headers a dead letter adds (so a dead-lettered copy, which keeps the
  original headers, can still be checked against its ``hub_dlq_source_topic``). Sorted by name; a
  covered header that occurs twice makes the record invalid (readers keep only one of the values).
  Other headers (e.g. a client's ``correlation_id``) are neither covered nor read by any stage.

Header value: ``v1=<base64 of the 32-byte MAC>``. Signing uses the current key; verifying accepts the
current or any previous key (rotation: deploy the new key as current with the old one as previous on
every process, then drop the previous one once the old records are consumed). Comparisons are
constant-time. Pure: no I/O; one HMAC per record (microseconds). Keys never appear in a repr or error.
See docs/adr/0010-record-proof.md.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from hub.errors import ConfigurationError, NotAuthorized
from hub.topics.registry import EVENTS, INGRESS

PROOF_HEADER: Final = "hub_proof"
SCHEME: Final = "v1"
#: Topics whose records must carry a proof; the hub's workers read them. ``hub.dlq`` is not one: its
#: records keep the original record's proof, and partner topics are for partners.
PROVEN_TOPICS: Final = frozenset({INGRESS.name, EVENTS.name})
#: HMAC-SHA256 keys shorter than this are refused (RFC 2104: at least the hash output is recommended).
MIN_KEY_BYTES: Final = 32

_DOMAIN: Final = b"carehub.record-proof.v1\n"
_NULL: Final = b"\xff\xff\xff\xff"
_DEAD_LETTER_PREFIX: Final = "hub_dlq_"

Headers = Mapping[str, str | bytes] | Iterable[tuple[str, str | bytes]]


class RecordNotProven(NotAuthorized):
    """A record on a proven topic without a valid proof: it was not written by the hub, or was altered."""


def covered(name: str) -> bool:
    """True for a header the proof covers (see the module doc)."""
    if name.startswith("ce_") or name == "content-type":
        return True
    return name.startswith("hub_") and name != PROOF_HEADER and not name.startswith(_DEAD_LETTER_PREFIX)


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


_LENGTH = struct.Struct(">I").pack


def _field(data: bytes) -> bytes:
    return _LENGTH(len(data)) + data


def _optional(data: bytes | None) -> bytes:
    return _NULL if data is None else _field(data)


def _covered_headers(headers: Headers) -> list[tuple[bytes, bytes]]:
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    found: dict[str, bytes] = {}
    for name, value in pairs:
        # covered(name), inlined: this runs for every header of every record the hub writes or reads.
        if name.startswith("ce_") or name == "content-type" or (
            name.startswith("hub_") and name != PROOF_HEADER and not name.startswith(_DEAD_LETTER_PREFIX)
        ):
            if name in found:
                raise RecordNotProven(f"record proof invalid: header {name} occurs more than once")
            found[name] = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    return [(name.encode("utf-8"), found[name]) for name in sorted(found)]


def canonical(topic: str, key: bytes | None, value: bytes | None, headers: Headers) -> bytes:
    """The bytes the MAC is computed over (see the module doc). Raises ``RecordNotProven`` for a
    covered header that occurs twice."""
    covered_headers = _covered_headers(headers)
    parts = [_DOMAIN, _field(topic.encode("utf-8")), _optional(key), _optional(value), _LENGTH(len(covered_headers))]
    for name, header_value in covered_headers:
        parts += (_LENGTH(len(name)), name, _LENGTH(len(header_value)), header_value)
    return b"".join(parts)


def _mac(secret: bytes, message: bytes) -> bytes:
    return hmac.digest(secret, message, "sha256")  # the one-shot C HMAC: no Python HMAC object per record


def _check_key(secret: bytes, setting: str) -> bytes:
    if len(secret) < MIN_KEY_BYTES:
        raise ConfigurationError(f"{setting} must be at least {MIN_KEY_BYTES} bytes long")
    return bytes(secret)


class RecordProof:
    """Signs and verifies records with the hub's record keys (current, then any previous one)."""

    __slots__ = ("_current", "_keys")

    def __init__(self, current: bytes, previous: Sequence[bytes] = ()) -> None:
        """Raises ``ConfigurationError`` for a key shorter than :data:`MIN_KEY_BYTES`."""
        self._current = _check_key(current, "HUB_RECORD_KEY")
        self._keys = (self._current, *(_check_key(k, "HUB_RECORD_KEY_PREVIOUS") for k in previous))

    def __repr__(self) -> str:
        return f"RecordProof(<{len(self._keys)} key(s)>)"

    def proof(self, topic: str, *, key: bytes | None, value: bytes | None, headers: Headers) -> str:
        """The ``hub_proof`` header value for a record, with the current key."""
        mac = _mac(self._current, canonical(topic, key, value, headers))
        return f"{SCHEME}={base64.b64encode(mac).decode('ascii')}"

    def stamp(self, topic: str, *, key: bytes, value: bytes, headers: dict[str, str]) -> dict[str, str]:
        """``headers`` with a fresh proof when ``topic`` is a proven topic; unchanged otherwise.

        Every record the hub writes goes through this (the publishers call it), so no writer can forget it.
        A proof already in ``headers`` is replaced: only what is being written now is vouched for.
        """
        if topic not in PROVEN_TOPICS:
            return headers
        stamped = {name: value for name, value in headers.items() if name != PROOF_HEADER}
        stamped[PROOF_HEADER] = self.proof(topic, key=key, value=value, headers=stamped)
        return stamped

    def verify(self, topic: str, *, key: bytes | None, value: bytes | None, headers: Headers) -> None:
        """Return when the record carries exactly one proof that one of the keys made over it as it is on
        ``topic``; raise ``RecordNotProven`` (with a reason that quotes nothing from the record) otherwise."""
        pairs = list(headers.items() if isinstance(headers, Mapping) else headers)
        proofs = [_as_bytes(v) for name, v in pairs if name == PROOF_HEADER]
        if not proofs:
            raise RecordNotProven(f"record proof missing: no {PROOF_HEADER} header")
        if len(proofs) > 1:
            raise RecordNotProven(f"record proof invalid: {PROOF_HEADER} occurs more than once")
        scheme, _, encoded = proofs[0].partition(b"=")
        if scheme != SCHEME.encode("ascii"):
            raise RecordNotProven(f"record proof invalid: unsupported scheme (expected {SCHEME})")
        try:
            claimed = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise RecordNotProven("record proof invalid: not base64") from None
        message = canonical(topic, key, value, pairs)
        matched = False
        for secret in self._keys:  # every key is tried, so the time does not tell which one matched
            matched |= hmac.compare_digest(_mac(secret, message), claimed)
        if not matched:
            raise RecordNotProven("record proof invalid: the record was not written by this hub or was altered")

    def verify_record(self, record: Any) -> None:
        """:meth:`verify` on a consumer record (``topic``, ``key``, ``value``, ``headers``)."""
        self.verify(record.topic, key=record.key, value=record.value, headers=record.headers or ())
