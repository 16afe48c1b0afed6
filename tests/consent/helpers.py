"""Builders for consent-engine tests: facts, recipients, provisions and consents in a few words."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from hub.consent import labels as lbl
from hub.consent.decision import Recipient
from hub.consent.model import (
    CONSENT_SCOPE_SYSTEM,
    OPTIN,
    OPTOUT,
    Actor,
    Consent,
    ConsentStatus,
    DataReference,
    Period,
    Provision,
    ProvisionType,
)
from hub.events import RoutingFacts

PATIENT = "urn:carehub:patient:p-1"
AT = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
PRIVACY = f"{CONSENT_SCOPE_SYSTEM}|patient-privacy"
RESEARCH = f"{CONSENT_SCOPE_SYSTEM}|research"
NPP = "http://terminology.hl7.org/CodeSystem/consentcategorycodes|npp"
POU = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
ROLE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
ACTION = "http://terminology.hl7.org/CodeSystem/consentaction"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED = "http://snomed.info/sct"
FOOD_PANTRY = f"{SNOMED}|467771000124109"

CBO_A = Recipient(partner_id="cbo-a", kind="cbo", organization="Organization/cbo-a")
CBO_B = Recipient(partner_id="cbo-b", kind="cbo", organization="Organization/cbo-b")
HOSPITAL = Recipient(partner_id="hosp-a", kind="hospital", organization="Organization/hosp-a")
OTHER_HOSPITAL = Recipient(partner_id="hosp-b", kind="hospital", organization="Organization/hosp-b")

PERMIT = ProvisionType.PERMIT
DENY = ProvisionType.DENY


def referral(
    *,
    performers: tuple[str, ...] = ("Organization/cbo-a",),
    labels: tuple[str, ...] = (),
    codes: tuple[str, ...] = (FOOD_PANTRY,),
    resource_id: str | None = "sr-1",
    patient: str | None = PATIENT,
    requester: str | None = "Organization/hosp-a",
) -> RoutingFacts:
    """A ServiceRequest from hospital hosp-a, addressed by default to cbo-a."""
    return RoutingFacts(
        resource_type="ServiceRequest",
        resource_id=resource_id,
        sender="hosp-a",
        hub_patient_id=patient,
        requester=requester,
        performers=performers,
        codes=codes,
        security_labels=labels,
        event_kind="referral",
    )


def encounter(kind: str = "discharge", *, labels: tuple[str, ...] = ()) -> RoutingFacts:
    """An Encounter (ADT) event from hospital hosp-a."""
    return RoutingFacts(
        resource_type="Encounter",
        resource_id="enc-1",
        sender="hosp-a",
        hub_patient_id=PATIENT,
        security_labels=labels,
        event_kind=kind,
    )


def case_update(*, requester: str = "Organization/hosp-a") -> RoutingFacts:
    """A Task update sent back by cbo-a about a referral hosp-a requested."""
    return RoutingFacts(
        resource_type="Task",
        resource_id="task-1",
        sender="cbo-a",
        hub_patient_id=PATIENT,
        requester=requester,
        performers=("Organization/cbo-a",),
        event_kind="task-update",
    )


def on_roster(recipient: Recipient) -> Recipient:
    """The same partner, with the patient on its roster."""
    return Recipient(recipient.partner_id, recipient.kind, recipient.organization, recipient.identifiers, True)


def period(start: str | None, until: str | None) -> Period:
    """A period from ISO dates or datetimes (naive ones are UTC)."""
    return Period(
        start=datetime.fromisoformat(start).replace(tzinfo=UTC) if start else None,
        until=datetime.fromisoformat(until).replace(tzinfo=UTC) if until else None,
    )


def prov(
    kind: ProvisionType | None = None,
    *,
    actor: str | None = None,
    role: str = "IRCP",
    purpose: str | None = None,
    label: str | Iterable[str] | None = None,
    cls: str | None = None,
    code: str | None = None,
    action: str | None = None,
    when: Period | None = None,
    data: tuple[str, str] | None = None,
    children: tuple[Provision, ...] = (),
) -> Provision:
    """A provision with at most one value per condition (``label`` may list several)."""
    labels: tuple[str, ...] = ()
    if isinstance(label, str):
        labels = (label,)
    elif label is not None:
        labels = tuple(label)
    return Provision(
        type=kind,
        period=when,
        actors=(Actor(reference=actor, role=(f"{ROLE}|{role}",)),) if actor else (),
        actions=(f"{ACTION}|{action}",) if action else (),
        security_labels=labels,
        purposes=(f"{POU}|{purpose}",) if purpose else (),
        classes=(f"http://hl7.org/fhir/resource-types|{cls}",) if cls else (),
        codes=(code,) if code else (),
        data=(DataReference(meaning=data[0], reference=data[1]),) if data else (),
        provisions=children,
    )


def consent(
    cid: str = "c1",
    *,
    base: str | None = OPTIN,
    root: Provision | None = None,
    status: ConsentStatus = ConsentStatus.ACTIVE,
    date: str = "2025-06-01",
    scope: tuple[str, ...] = (PRIVACY,),
    categories: tuple[str, ...] = (),
    patient: str | None = PATIENT,
) -> Consent:
    """A consent of the test patient: ``base`` is its policyRule (OPTIN, OPTOUT or any other coding)."""
    return Consent(
        id=cid,
        status=status,
        patient=patient,
        date_time=datetime.fromisoformat(date).replace(tzinfo=UTC),
        scope=scope,
        categories=categories,
        policy_rules=(base,) if base else (),
        provision=root,
    )


def optin(cid: str = "c1", *children: Provision, date: str = "2025-06-01") -> Consent:
    """An opt-in consent whose root provision holds ``children`` (LEAP's first generation)."""
    return consent(cid, base=OPTIN, root=prov(children=children) if children else None, date=date)


def optout(cid: str = "c1", *children: Provision, date: str = "2025-06-01") -> Consent:
    """An opt-out consent whose root provision holds ``children``."""
    return consent(cid, base=OPTOUT, root=prov(children=children) if children else None, date=date)


def part2_consent(
    cid: str = "p2",
    *,
    actor: str = "Organization/cbo-a",
    role: str = "IRCP",
    label: str = lbl.SUD,
    purpose: str | None = "CAREMGT",
    date: str = "2025-03-01",
    status: ConsentStatus = ConsentStatus.ACTIVE,
) -> Consent:
    """A 42 CFR Part 2 consent: opt-out base with one permit naming ``actor`` for ``label`` data."""
    return consent(
        cid,
        base=OPTOUT,
        root=prov(children=(prov(PERMIT, actor=actor, role=role, label=label, purpose=purpose),)),
        date=date,
        status=status,
    )


ICD_OPIOID = f"{ICD10CM}|F11.20"
ICD_SCHIZOPHRENIA = f"{ICD10CM}|F20.9"
