"""A partner's REST read of what another partner sent: gather -> decide -> audit, as delivery does.

The FHIR edge (:class:`hub.adapters.fhir_intake.Intake`) shows a partner a version someone else sent only
when the audit shows the event was delivered to it *and* the consent engine permits it now. This module
is the second half: it gathers what the decision needs (the hub patient behind the version's patient,
the partner as a recipient, its roster membership, the patient's consents in force), calls the same pure
``decide`` the route stage calls, audits the decision (permit or deny; rule prefixed ``read:``) and
applies the permit's obligations through :func:`hub.delivery.partner_view.read_view`, the same
redaction a delivery applies. A revoked consent or a changed policy therefore closes the REST path
too, and a CBO never reads more over REST than its topic carried.

:class:`NoReads` (the default when the edge is built without a gate, as in unit tests) shows nothing
of other partners' resources: default deny.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, Protocol

from hub import events
from hub.adapters.fhir_store import StoredVersion, render
from hub.control.audit import DecisionRecord
from hub.delivery.partner_view import http_obligation_headers, read_view
from hub.events import RoutingFacts
from hub.pipeline.ports import AuditLog, ConsentSource, PartnerDirectory, PatientIndex, RosterSource
from hub.pipeline.route import DecideFn
from hub.ports import Principal

#: Prefix of the audited rule of a decision taken for a REST read (delivery decisions have none).
READ_RULE_PREFIX: Final = "read:"
_RULE_MAX: Final = 128


@dataclass(frozen=True, slots=True)
class Shown:
    """One version as the caller may see it: the rendered (and, for a disclosure, redacted) resource and
    the headers its obligations add to an HTTP answer."""

    version: StoredVersion
    resource: dict[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)


def shown_whole(version: StoredVersion) -> Shown:
    """A version shown as stored: to the operator, or to the partner whose resource it is."""
    return Shown(version, render(version))


class ReadGate(Protocol):
    """Decides whether (and how) a partner reads a version another partner sent."""

    async def disclose(self, principal: Principal, facts: RoutingFacts, version: StoredVersion) -> Shown | None:
        """The version as ``principal`` may see it now, or None (denied); every decision is audited."""
        ...


class NoReads:
    """The gate that shows no partner anything another partner sent (default deny)."""

    async def disclose(self, principal: Principal, facts: RoutingFacts, version: StoredVersion) -> Shown | None:
        """Never shows anything."""
        del principal, facts, version
        return None


class PolicyReads:
    """The gate on the control plane: the consent engine under the operator's policies, audited."""

    def __init__(
        self,
        *,
        decide: DecideFn,
        patients: PatientIndex,
        consents: ConsentSource,
        directory: PartnerDirectory,
        audit: AuditLog,
        rosters: RosterSource | None = None,
    ) -> None:
        self._decide = decide
        self._patients = patients
        self._consents = consents
        self._directory = directory
        self._audit = audit
        self._rosters = rosters

    async def disclose(self, principal: Principal, facts: RoutingFacts, version: StoredVersion) -> Shown | None:
        """Gather, decide with the engine, audit, and apply the obligations (see the module docstring)."""
        if principal.partner_id is None or not facts.patient_source or version.event_id is None:
            return None
        recipient = next(
            (p for p in await self._directory.partners(named=()) if p.partner_id == principal.partner_id), None
        )
        if recipient is None:  # deactivated meanwhile
            return None
        patient = await self._patients.resolve(facts.patient_source)
        if self._rosters is not None:
            rostered = await self._rosters.rostered({patient})
            if recipient.partner_id in rostered.get(patient, frozenset()):
                recipient = replace(recipient, on_roster=True)
        consents = await self._consents.consents_for(patient)
        decided_facts = facts.model_copy(update={"hub_patient_id": patient})
        at = events.now()
        decision = self._decide(decided_facts, recipient, consents, at)
        await self._audit.record(
            [
                DecisionRecord(
                    event_id=version.event_id,
                    hub_patient_id=patient,
                    recipient_id=recipient.partner_id,
                    verdict=decision.verdict.value,
                    rule=(READ_RULE_PREFIX + decision.rule)[:_RULE_MAX],
                    reason=f"REST read: {decision.reason}",
                    purpose=decision.purpose,
                    resource_type=version.resource_type,
                    decided_at=at,
                )
            ]
        )
        if not decision.permitted:
            return None
        return Shown(version, read_view(render(version), decision), http_obligation_headers(decision))
