"""Audited sharing decisions as FHIR R4 AuditEvents in the IHE Basic Audit Log Patterns (BALP) style.

Holds :func:`audit_event` (one :class:`hub.control.audit.DecisionRecord` plus what the hub knows of its
recipient -> one AuditEvent as a JSON-ready dict) and the code tables it and the accounting of
disclosures share (:data:`PURPOSES_OF_USE`, :func:`purpose_display`, :func:`is_tpo`,
:func:`describe_resource`). Pure: no I/O, no clock; the caller loads partners and resources first.

The mapping (see ``docs/adr/0008-accounting-and-audit-export.md``):

* a **permit** is a disclosure and follows ``IHE.BasicAudit.PrivacyDisclosure.Source`` (claimed in
  ``meta.profile``): type DICOM 110106 *Export*, subtype ISO 21089 *disclose*, action R, outcome 0;
  agents *source* (the hub; also ``source.observer``, as the profile's ``val-audit-source`` demands)
  and *recipient* (the partner, network address = its Kafka topic); entities *patient* and *data*.
* a **deny** follows the pattern of ``IHE.BasicAudit.AuthZconsent`` (type DICOM 110113 *Security
  Alert*, subtype ``AuthZ-Consent`` when a Consent decided, ``AuthZ-Role`` when an operator policy did,
  action E, outcome 4 with the reason in ``outcomeDesc``, agents authorizer / client / user / userorg)
  but does not claim that profile: its closed entity slicing has no room for the event the decision was
  about, and policy decisions have no Consent to name.

The patient is named only by the opaque hub patient id (a logical reference), never by a source
identifier: the export carries no PHI beyond what the accounting of disclosures needs.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC
from typing import Any, Final

from hub.control.audit import DecisionRecord
from hub.control.partners import Partner

PROFILE_DISCLOSURE_SOURCE: Final = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.PrivacyDisclosure.Source"
PROFILE_AUTHZ_CONSENT: Final = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.AuthZconsent"

DCM: Final = "http://dicom.nema.org/resources/ontology/DCM"
ISO_21089: Final = "http://terminology.hl7.org/CodeSystem/iso-21089-lifecycle"
AUTHZ_SUBTYPE: Final = "https://profiles.ihe.net/ITI/BALP/CodeSystem/AuthZsubType"
OUTCOME: Final = "http://terminology.hl7.org/CodeSystem/audit-event-outcome"
SOURCE_TYPE: Final = "http://terminology.hl7.org/CodeSystem/security-source-type"
ENTITY_TYPE: Final = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE: Final = "http://terminology.hl7.org/CodeSystem/object-role"
RESOURCE_TYPES: Final = "http://hl7.org/fhir/resource-types"
ACT_REASON: Final = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
PARTICIPATION_TYPE: Final = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
ROLE_CLASS: Final = "http://terminology.hl7.org/CodeSystem/v3-RoleClass"
SECURITY_ROLE: Final = "http://terminology.hl7.org/CodeSystem/extra-security-role-type"

#: Identifier systems of the hub's own names.
HUB_SYSTEM: Final = "urn:carehub:hub"
PARTNER_SYSTEM: Final = "urn:carehub:partner"
HUB_PATIENT_SYSTEM: Final = "urn:carehub:hub-patient-id"
EVENT_ID_SYSTEM: Final = "urn:carehub:event-id"
URI_SYSTEM: Final = "urn:ietf:rfc:3986"

#: v3 PurposeOfUse codes (code system v3-ActReason) the hub decides for, with their display names.
PURPOSES_OF_USE: Final = {
    "TREAT": "treatment",
    "ETREAT": "emergency treatment",
    "COC": "coordination of care",
    "BTG": "break the glass",
    "CAREMGT": "care management",
    "HOPERAT": "healthcare operations",
    "HPAYMT": "healthcare payment",
    "PATRQT": "patient requested",
    "FAMRQT": "family requested",
    "PWATRNY": "power of attorney",
    "SUPNWK": "support network",
    "PUBHLTH": "public health",
    "HRESCH": "healthcare research",
    "HMARKT": "marketing",
    "HDIRECT": "directory",
    "HLEGAL": "legal",
    "HSYSADMIN": "system administration",
    "PATADMIN": "patient administration",
    "RECORDMGT": "records management",
    "HQUALIMP": "health quality improvement",
}
#: Purposes that are treatment, payment or health care operations (45 CFR 164.506), the disclosures
#: 164.528(a)(1)(i) exempts from the accounting a covered entity must give (the hub lists them anyway).
TPO_PURPOSES: Final = frozenset(
    {"TREAT", "ETREAT", "COC", "BTG", "CAREMGT", "HOPERAT", "HPAYMT", "PATADMIN", "RECORDMGT", "HQUALIMP",
     "HSYSADMIN"}
)
#: What each routed resource type means to a patient reading the accounting.
RESOURCE_DESCRIPTIONS: Final = {
    "ServiceRequest": "referral for a service",
    "Task": "referral task or case status update",
    "Encounter": "hospital admission, discharge or transfer notification",
    "Consent": "privacy consent",
    "Bundle": "notification message",
}


@dataclass(frozen=True)
class HubIdentity:
    """How the hub names itself in AuditEvents: ``site`` is its host name (``source.site``)."""

    site: str = "carehub"

    def device(self) -> dict[str, Any]:
        """The hub as a logical Device reference (``source.observer`` and its own agent's ``who``)."""
        return {"type": "Device", "identifier": {"system": HUB_SYSTEM, "value": self.site}, "display": "CareHub"}



#: Whitespace FHIR's ``string`` does not allow (it allows space, CR, LF and TAB only), e.g. U+00A0.
_NON_FHIR_WHITESPACE = re.compile(r"[^\S \r\n\t]")


def fhir_string(value: str) -> str:
    """``value`` as a valid FHIR ``string``: other Unicode whitespace becomes a space (the audit keeps the
    original; the export must stay valid R4)."""
    return _NON_FHIR_WHITESPACE.sub(" ", value)

def purpose_display(code: str) -> str:
    """The display name of a purpose-of-use code; the code itself when the table does not know it."""
    return PURPOSES_OF_USE.get(code, code)


def is_tpo(purpose: str) -> bool:
    """Whether a purpose is treatment, payment or health care operations (HIPAA 164.528(a)(1)(i))."""
    return purpose in TPO_PURPOSES


def describe_resource(resource_type: str) -> str:
    """A brief description of what was shared, for a person: ``'referral for a service (ServiceRequest)'``."""
    meaning = RESOURCE_DESCRIPTIONS.get(resource_type)
    return f"{meaning} ({resource_type})" if meaning else resource_type


def consent_id(rule: str) -> str | None:
    """The Consent a decision rule names (``consent:<id>:<provision path>``), or None."""
    kind, _, rest = rule.partition(":")
    if kind != "consent" or not rest:
        return None
    found = rest.partition(":")[0]
    return found if found and found != "(unsaved)" else None


def audit_event_id(record: DecisionRecord) -> str:
    """A stable AuditEvent id: a UUID of the audit's unique key (event, recipient, verdict, rule)."""
    key = "\x1f".join((record.event_id, record.recipient_id, record.verdict, record.rule))
    return str(uuid.uuid5(_AUDIT_NAMESPACE, key))


_AUDIT_NAMESPACE: Final = uuid.UUID("8d0b7f0e-3a55-4f3e-9d7e-2b6f3c7a9e42")


def _coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return coding


def _event_identifier(event_id: str) -> dict[str, str]:
    try:
        return {"system": URI_SYSTEM, "value": f"urn:uuid:{uuid.UUID(event_id)}"}
    except ValueError:
        return {"system": EVENT_ID_SYSTEM, "value": fhir_string(event_id)}


def _partner_reference(recipient_id: str, partner: Partner | None) -> dict[str, Any]:
    return {
        "type": "Organization",
        "identifier": {"system": PARTNER_SYSTEM, "value": recipient_id},
        "display": partner.name if partner else recipient_id,
    }


def _patient_entity(record: DecisionRecord) -> dict[str, Any]:
    return {
        "what": {"type": "Patient", "identifier": {"system": HUB_PATIENT_SYSTEM, "value": record.hub_patient_id}},
        "type": _coding(ENTITY_TYPE, "1", "Person"),
        "role": _coding(OBJECT_ROLE, "1", "Patient"),
    }


def _data_entity(record: DecisionRecord, resource: str | None) -> dict[str, Any]:
    what: dict[str, Any] = {"type": record.resource_type, "identifier": _event_identifier(record.event_id)}
    if resource:
        what["reference"] = resource
    return {
        "what": what,
        "type": _coding(RESOURCE_TYPES, record.resource_type),
        "role": _coding(OBJECT_ROLE, "4", "Domain Resource"),
        "description": describe_resource(record.resource_type),
        "detail": [{"type": "rule", "valueString": fhir_string(record.rule)}],
    }


def _consent_entity(record: DecisionRecord) -> list[dict[str, Any]]:
    found = consent_id(record.rule)
    if found is None:
        return []
    return [{"what": {"reference": f"Consent/{found}"}, "type": _coding(RESOURCE_TYPES, "Consent")}]


def audit_event(
    record: DecisionRecord,
    partner: Partner | None,
    *,
    resource: str | None = None,
    hub: HubIdentity | None = None,
) -> dict[str, Any]:
    """The FHIR R4 AuditEvent (JSON-ready) of one audited decision.

    ``partner`` is the recipient as registered (None when it is no longer known: the audit outlives
    partners), ``resource`` the ``Type/id/_history/n`` the event carried, if the FHIR store holds it.
    """
    hub = hub or HubIdentity()
    device = hub.device()
    purpose = [{"coding": [_coding(ACT_REASON, record.purpose, PURPOSES_OF_USE.get(record.purpose))]}]
    recipient = _partner_reference(record.recipient_id, partner)
    event: dict[str, Any] = {"resourceType": "AuditEvent", "id": audit_event_id(record)}
    source = {"site": hub.site, "observer": device, "type": [_coding(SOURCE_TYPE, "4", "Application Server")]}
    entities = [_patient_entity(record), _data_entity(record, resource), *_consent_entity(record)]
    if record.verdict == "permit":
        event.update(
            meta={"profile": [PROFILE_DISCLOSURE_SOURCE]},
            type=_coding(DCM, "110106", "Export"),
            subtype=[_coding(ISO_21089, "disclose", "Disclose Record Lifecycle Event")],
            action="R",
            recorded=_instant(record),
            outcome="0",
            outcomeDesc=fhir_string(record.reason),
            purposeOfEvent=purpose,
            agent=[
                {
                    "type": {"coding": [_coding(DCM, "110153", "Source Role ID")]},
                    "who": device,
                    "requestor": False,
                    "network": {"address": hub.site, "type": "1"},
                },
                {
                    "type": {"coding": [_coding(DCM, "110152", "Destination Role ID")]},
                    "who": recipient,
                    "name": partner.name if partner else None,
                    "requestor": False,
                    "network": {"address": f"urn:carehub:topic:partner.{record.recipient_id}", "type": "5"},
                },
            ],
            source=source,
            entity=entities,
        )
    else:
        subtype = "AuthZ-Consent" if consent_id(record.rule) else "AuthZ-Role"
        event.update(
            type=_coding(DCM, "110113", "Security Alert"),
            subtype=[_coding(AUTHZ_SUBTYPE, subtype)],
            action="E",
            recorded=_instant(record),
            outcome="4",
            outcomeDesc=fhir_string(record.reason),
            purposeOfEvent=purpose,
            agent=[
                {
                    "type": {"coding": [_coding(SECURITY_ROLE, "authserver", "authorization server")]},
                    "who": device,
                    "requestor": False,
                },
                {
                    "type": {"coding": [_coding(DCM, "110150", "Application")]},
                    "who": device,
                    "requestor": False,
                    "network": {"address": hub.site, "type": "1"},
                },
                {
                    "type": {"coding": [_coding(PARTICIPATION_TYPE, "IRCP", "information recipient")]},
                    "who": recipient,
                    "name": partner.name if partner else None,
                    "requestor": True,
                    "purposeOfUse": purpose,
                },
                *_provider_organization(partner),
            ],
            source=source,
            entity=entities,
        )
    for agent in event["agent"]:
        if agent.get("name") is None:
            agent.pop("name", None)
    return event


def _provider_organization(partner: Partner | None) -> list[dict[str, Any]]:
    """BALP's *userorg* agent (v3-RoleClass PROV) for a hospital recipient: its organization as
    registered (a reference, or an identifier ``system|value``). A CBO is no healthcare provider: its
    *user* agent already names it."""
    if partner is None or partner.kind != "hospital":
        return []
    system, bar, value = partner.organization.partition("|")
    who: dict[str, Any] = (
        {"type": "Organization", "identifier": {"system": system, "value": value}, "display": partner.name}
        if bar
        else {"reference": partner.organization, "display": partner.name}
    )
    return [{"type": {"coding": [_coding(ROLE_CLASS, "PROV", "healthcare provider")]}, "who": who, "requestor": False}]


def _instant(record: DecisionRecord) -> str:
    return record.decided_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
