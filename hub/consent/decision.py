"""The sharing decision as a value: verdict, deciding rule, obligations, a reason a person can read."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal


class Verdict(StrEnum):
    """Permit or deny. The hub denies when nothing permits."""

    PERMIT = "permit"
    DENY = "deny"


@dataclass(frozen=True, slots=True)
class Obligation:
    """Something the delivery must do when it shares, e.g. apply a redaction profile."""

    kind: str
    value: str


@dataclass(frozen=True, slots=True)
class Recipient:
    """A partner that could receive an event, as the decision sees it.

    ``identifiers`` are the partner's other names (``'system|value'`` identifiers, absolute URLs of its
    Organization) so that consents naming it in any form match; ``on_roster`` says whether the event's
    patient is on this partner's roster. The gather step fills both in; the defaults never permit more.
    """

    partner_id: str
    kind: Literal["hospital", "cbo"]
    organization: str
    identifiers: tuple[str, ...] = ()
    on_roster: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    """An immutable sharing decision."""

    verdict: Verdict
    rule: str
    reason: str
    purpose: str = "TREAT"
    obligations: tuple[Obligation, ...] = ()

    @property
    def permitted(self) -> bool:
        """True only for an explicit permit."""
        return self.verdict is Verdict.PERMIT
