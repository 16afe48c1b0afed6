"""Small ports between the edges and the core. Each has one in-memory fake in ``tests/fakes.py``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

PrincipalKind = Literal["hospital", "cbo", "operator"]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a registered partner, or the HIE operator (admin token)."""

    kind: PrincipalKind
    partner_id: str | None = None
    organization: str | None = None

    @property
    def is_operator(self) -> bool:
        """True for the HIE operator acting with the admin token."""
        return self.kind == "operator"


class Authenticator(Protocol):
    """Turns a bearer token into a Principal, or None when the token is unknown."""

    async def authenticate(self, token: str) -> Principal | None:
        """Look the token up; never raises for an unknown token."""
        ...


class IngressWriter(Protocol):
    """Writes one accepted input to ``hub.ingress`` and returns only after the broker acknowledged it.

    Raises ``hub.errors.BrokerUnavailable`` when the broker did not acknowledge.
    """

    async def write(self, *, key: bytes, value: bytes, headers: dict[str, str]) -> None:
        """Write and wait for the acknowledgement (acks=all)."""
        ...


class EventWriter(Protocol):
    """Writes one accepted event straight to ``hub.events``, on its patient's key (the patient resolved
    through the identity crosswalk, as normalize does), and returns only after the broker acknowledged it.

    The FHIR edge writes consent changes this way, so a revocation is on the patient's partition of
    ``hub.events`` before its 2xx, ahead of every event of that patient accepted afterwards.
    Raises ``hub.errors.BrokerUnavailable`` when the broker did not acknowledge.
    """

    async def write_event(self, *, value: bytes, headers: dict[str, str]) -> None:
        """Resolve, re-key and write; wait for the acknowledgement (acks=all)."""
        ...
