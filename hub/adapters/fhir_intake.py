"""Accepting FHIR resources at the edge: decide what a create, update or read means, then do it in order.

No FastAPI here: the HTTP router (``fhir_rest``), the Bundle processor (``fhir_bundle``) call
:class:`Intake` with resources they already parsed and validated once (``fhir_validation``). Every
write goes through two steps so a transaction can check all its entries before it writes any:

1. **plan** (:meth:`Intake.plan_create`, :meth:`Intake.plan_update`): gather what the decision needs
   from the store (the versions of the resource, the audit's deliveries, ``If-None-Exist`` matches),
   apply the pure rules (``fhir_access``), extract the routing facts (``fhir_facts``) and build the
   event and the version to store. Raises the precise error for anything unacceptable. Writes nothing.
2. **commit** (:meth:`Intake.commit`): for each routed resource write its event to ``hub.ingress``
   (a Consent's straight to ``hub.events`` on its patient's key, through the ``EventWriter``, so a
   revocation governs every event of the patient accepted after its 2xx: ADR 0006) and wait for the
   broker's acknowledgement (acks=all), *then* store every version in one database transaction. Only
   after both does the caller answer 2xx. On the embedded broker, which keeps its log in memory, the
   writer also journals each acknowledged event in the control-plane database before it returns, and the
   journal is replayed at start (``hub.broker.journal``, docs/adr/0012).

Why broker first (ADR 0005): a 2xx must never be given for something the broker does not hold, and a
read after a 2xx must find the resource. Writing the event first and storing second gives both without
a pending state: if the broker fails nothing is stored (503); if the store fails after the broker
acknowledged, the client gets 503 and retries, the retry carries the same ``ce_id`` (ids are derived
from the sender and the bytes, and for updates from the version number, which the failed attempt did
not consume), and downstream de-duplicates on it. At worst an event exists whose resource is not
readable until the client retries; never a readable resource whose event was lost.

Idempotency: a POST's id is the event id of its bytes, so resending the same bytes finds version 1 and
answers it again (201, nothing written twice); a PUT of content identical to the current version is a
no-op answered 200; ``If-None-Exist`` answers 200 with the one match, 412 with several.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import urllib.parse
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from hub.adapters.fhir_access import (
    DIRECTORY_TYPES,
    ROUTED_TYPES,
    SUPPORTED_TYPES,
    check_may_create,
    check_may_update,
    check_may_write_consent,
    check_update_as_create,
    is_participant,
    owner_of,
    read_plan,
    sender_of,
)
from hub.adapters.fhir_disclosure import NoReads, ReadGate, Shown, shown_whole
from hub.adapters.fhir_facts import (
    CONSENT_CHANGE,
    consent_facts,
    encounter_facts,
    encounter_view,
    identifier_tokens,
    partner_namespace,
    patient_identifier_sources,
    referral_issues,
    servicerequest_facts,
    task_facts,
    task_focus,
)
from hub.adapters.fhir_store import NewVersion, ResourceStore, StoredVersion, stored_content
from hub.adapters.fhir_validation import FhirIssue, FhirValidationError, reference_type, validate_resource
from hub.adapters.operation_outcome import PreconditionFailed, ResourceConflict, ResourceNotFound
from hub.consent.model import consent_from_fhir
from hub.control.resources import content_hash
from hub.errors import InvalidInput
from hub.events import CloudEvent, HubEvent, RoutingFacts, encode, event_id, event_type, now
from hub.ports import EventWriter, IngressWriter, Principal

#: Longest patient name (identifier or reference) the crosswalk can key on.
PATIENT_SOURCE_MAX = 512
_SUBJECT_ELEMENT = {"ServiceRequest": "subject", "Task": "for", "Encounter": "subject", "Consent": "patient"}


@dataclass(frozen=True, slots=True)
class IngressRecord:
    """One ``hub.ingress`` record, ready to write."""

    key: bytes
    value: bytes
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Planned:
    """What one create or update will do once committed.

    ``write`` is None when nothing is to be written (a retried create, an update identical to the
    current version, an ``If-None-Exist`` match); ``existing`` is then what the client gets back.
    """

    resource_type: str
    resource_id: str
    status: int
    write: NewVersion | None = None
    existing: StoredVersion | None = None
    event: IngressRecord | None = None
    facts: RoutingFacts | None = None
    view: Shown | None = None


@dataclass
class BundleContext:
    """What the entries of one Bundle know about each other.

    ``patients`` maps the references by which entries name a Patient of the same Bundle (after the
    hub assigned ids: ``Patient/<id>``) to its validated model; ``referral_patients`` maps
    ``ServiceRequest/<id>`` of the Bundle's referrals to the patient their facts named (for a Task
    without ``for``).
    """

    patients: dict[str, Any] = field(default_factory=dict)
    referral_patients: dict[str, str] = field(default_factory=dict)


def keyed_resource_id(key: bytes, sender: str, resource_type: str, body: bytes) -> str:
    """A UUID (version 4 layout) from HMAC-SHA256 under ``key`` of the sender, type and body (pure)."""
    digest = hmac.new(key, b"\x00".join((sender.encode(), resource_type.encode(), body)), hashlib.sha256).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def parse_if_none_exist(value: str) -> tuple[str | None, str]:
    """``identifier=[system|]value`` (URL-encoded or not) -> ``(system, value)``; ``system`` None means any.

    Raises ``InvalidInput`` (400) for anything else: the hub searches by identifier only, and a
    condition it cannot evaluate must not silently create a duplicate.
    """
    # URL-decoded as a query, but '+' stays '+' (identifier values may contain it).
    pairs = [part.partition("=") for part in value.strip().lstrip("?").split("&") if part]
    pairs = [(urllib.parse.unquote(name), _, urllib.parse.unquote(given)) for name, _, given in pairs]
    if len(pairs) != 1 or pairs[0][0] != "identifier" or not pairs[0][2]:
        raise InvalidInput(
            "If-None-Exist supports exactly one search parameter: identifier=[system|]value",
            code="not-supported",
        )
    token = pairs[0][2]
    if "|" not in token:
        return None, token
    system, _, identifier = token.partition("|")
    if not identifier:
        raise InvalidInput("If-None-Exist: identifier=system| needs a value after the bar", code="invalid")
    return system, identifier


def parse_if_match(value: str) -> int:
    """``W/"3"``, ``"3"`` or ``3`` -> 3; raises ``InvalidInput`` (400) for anything else."""
    text = value.strip().removeprefix("W/").strip('"')
    if not (text.isascii() and text.isdigit() and len(text) <= 9) or int(text) == 0:
        raise InvalidInput('If-Match must name a version, as in W/"3"', code="invalid")
    return int(text)


def check_supported(resource_type: str) -> None:
    """Raise ``ResourceNotFound`` (404 ``not-supported``) for a type the edge does not serve."""
    if resource_type not in SUPPORTED_TYPES:
        raise ResourceNotFound(
            f"this server does not serve that resource type; it serves {', '.join(SUPPORTED_TYPES)}",
            code="not-supported",
        )


class Intake:
    """Creates, updates and reads of the edge's resource types, over the ingress writer and the store."""

    def __init__(
        self,
        *,
        ingress: IngressWriter,
        store: ResourceStore,
        events: EventWriter | None = None,
        reads: ReadGate | None = None,
        id_key: bytes | None = None,
    ) -> None:
        self._id_key = id_key if id_key is not None else secrets.token_bytes(32)
        self._ingress = ingress
        self._store = store
        self._events = events
        self._reads: ReadGate = reads if reads is not None else NoReads()

    def new_id(self, principal: Principal, resource_type: str, body: bytes) -> str:
        """The server-assigned id of a create: the same for the same sender, type and bytes (a retry finds
        its resource), and not predictable by anyone without the hub's id key (no partner can compute,
        squat or confirm another partner's ids). A UUID, so it never falls in a partner's own id space."""
        return keyed_resource_id(self._id_key, sender_of(principal), resource_type, body)

    # --- plan ------------------------------------------------------------------------------------

    async def plan_create(
        self,
        principal: Principal,
        data: dict[str, Any],
        model: Any,
        *,
        resource_id: str,
        event_body: str,
        if_none_exist: str | None = None,
        context: BundleContext | None = None,
    ) -> Planned:
        """Plan a create of a validated resource under the server-assigned ``resource_id``.

        ``event_body`` is the FHIR JSON text the event carries (the request bytes for a plain POST).
        """
        check_may_create(principal)
        resource_type: str = data["resourceType"]
        check_supported(resource_type)
        sender = sender_of(principal)
        if if_none_exist is not None:
            match = await self.conditional_match(principal, resource_type, if_none_exist)
            if match is not None:
                return Planned(resource_type, match.version.resource_id, 200, existing=match.version, view=match)
        content = stored_content(data, resource_id)
        versions = await self._store.versions(resource_type, resource_id)
        if versions:
            first = versions[0]
            if first.sender == sender and first.content_hash == content_hash(content):
                return Planned(resource_type, resource_id, 201, existing=first)  # the same create, retried
            raise ResourceConflict(f"a different {resource_type} already holds the id this content maps to")
        if resource_type == "Consent":
            await self._check_consent(principal, data, model, sender=sender)
        return self._plan_write(
            principal, data, model, resource_id=resource_id, content=content, versions=[],
            event_id_=resource_id, event_body=event_body, status=201, context=context,
            patient_fallback=await self._task_patient_fallback(principal, model, data, context), first=True,
        )

    async def plan_update(
        self,
        principal: Principal,
        data: dict[str, Any],
        model: Any,
        *,
        resource_id: str,
        event_body: str,
        if_match: int | None = None,
        context: BundleContext | None = None,
    ) -> Planned:
        """Plan an update (or update-as-create) of ``resource_id`` with a validated resource.

        The caller has checked that the body's ``id`` is ``resource_id``.
        """
        resource_type: str = data["resourceType"]
        check_supported(resource_type)
        stored = await self._store.versions(resource_type, resource_id)
        # A resource the caller can neither read nor act on is answered exactly as an unused id (no
        # status code tells a partner that another partner's resource exists), unless nothing but its
        # existence stops the caller from creating it (an id in its own id space held by the operator).
        versions = stored if await self._may_know_of(principal, resource_type, stored) else []
        check_update_as_create(principal, resource_type, resource_id, stored=bool(stored), known=bool(versions))
        current = versions[-1] if versions else None
        if if_match is not None and (current is None or current.version_id != if_match):
            raise PreconditionFailed(
                f"If-Match names version {if_match}, but the current version is "
                f"{current.version_id if current else 'none (the resource does not exist)'}"
            )
        check_may_update(principal, resource_type, versions, data)
        if resource_type == "Consent":
            await self._check_consent(principal, data, model, sender=versions[0].sender if versions else None)
        content = stored_content(data, resource_id)
        if current is not None and current.content_hash == content_hash(content):
            return Planned(resource_type, resource_id, 200, existing=current)  # nothing changed
        version_id = current.version_id + 1 if current else 1
        body = event_body.encode("utf-8")
        return self._plan_write(
            principal, data, model, resource_id=resource_id, content=content, versions=versions,
            event_id_=event_id(sender_of(principal), f"{resource_type}/{resource_id}/_history/{version_id}", body),
            event_body=event_body, status=200 if versions else 201, context=context,
            patient_fallback=await self._task_patient_fallback(principal, model, data, context),
        )

    def _plan_write(
        self,
        principal: Principal,
        data: dict[str, Any],
        model: Any,
        *,
        resource_id: str,
        content: str,
        versions: Sequence[StoredVersion],
        event_id_: str,
        event_body: str,
        status: int,
        context: BundleContext | None,
        patient_fallback: str | None = None,
        first: bool = False,
    ) -> Planned:
        resource_type: str = data["resourceType"]
        sender = sender_of(principal)
        # Relative references and system-less identifiers mean what the *creator* meant by them.
        namespace = versions[0].sender if versions else sender
        identifiers = identifier_tokens(model)
        if resource_type in DIRECTORY_TYPES:
            sources: tuple[str, ...] = ()
            if resource_type == "Patient":
                sources = (
                    f"{partner_namespace(namespace)}:Patient/{resource_id}",
                    *patient_identifier_sources(model, sender=namespace),
                )
            write = NewVersion(
                resource_type=resource_type, resource_id=resource_id, sender=sender, content=content,
                identifiers=identifiers, patient_sources=sources, first=first,
            )
            return Planned(resource_type, resource_id, status, write=write)
        previous = orjson.loads(versions[-1].content) if versions else None
        facts = self._facts(
            model, namespace=namespace, resource_id=resource_id, previous=previous, context=context,
            patient_fallback=patient_fallback,
        ).model_copy(update={"sender": sender})
        subject = _SUBJECT_ELEMENT[resource_type]
        if previous is not None and versions[-1].patient_source and previous.get(subject) == data.get(subject):
            # Same subject as the version before: the same patient, however it was resolved then
            # (a Bundle-local Patient, the focus's referral), so every version of a resource is keyed alike.
            facts = facts.model_copy(update={"patient_source": versions[-1].patient_source})
        _check_patient_source(resource_type, facts.patient_source)
        if resource_type == "ServiceRequest" and context is not None and facts.patient_source:
            context.referral_patients[f"ServiceRequest/{resource_id}"] = facts.patient_source
        # Encounter events are typed by what happened, like the HL7 v2 edge's (org.carehub.encounter.admit).
        action = facts.event_kind if resource_type == "Encounter" and facts.event_kind else "submitted"
        envelope = CloudEvent(
            id=event_id_, source=f"/partners/{sender}", type=event_type(resource_type, action), subject=None, time=now()
        )
        record = IngressRecord(
            key=f"{sender}|{facts.patient_source}".encode(),
            value=encode(HubEvent(facts=facts, body=event_body)),
            headers=envelope.to_headers(),
        )
        write = NewVersion(
            resource_type=resource_type, resource_id=resource_id, sender=sender, content=content,
            event_id=event_id_, patient_source=facts.patient_source, identifiers=identifiers, first=first,
        )
        return Planned(resource_type, resource_id, status, write=write, event=record, facts=facts)

    def _facts(
        self,
        model: Any,
        *,
        namespace: str,
        resource_id: str,
        previous: Mapping[str, Any] | None,
        context: BundleContext | None,
        patient_fallback: str | None,
    ) -> RoutingFacts:
        resource_type = model.get_resource_type()
        local = context.patients if context is not None else None
        if resource_type == "ServiceRequest":
            facts = servicerequest_facts(
                model, sender=namespace, resource_id=resource_id, first_version=previous is None,
                local_patients=local,
            )
            issues = referral_issues(model, facts)
            if issues:
                raise FhirValidationError(issues)
            return facts
        if resource_type == "Task":
            return task_facts(
                model, sender=namespace, resource_id=resource_id, first_version=previous is None,
                patient_fallback=patient_fallback, local_patients=local,
            )
        if resource_type == "Encounter":
            return encounter_facts(
                model, sender=namespace, resource_id=resource_id,
                previous=encounter_view(previous) if previous is not None else None, local_patients=local,
            )
        if resource_type == "Consent":
            return consent_facts(model, sender=namespace, resource_id=resource_id)
        raise ValueError(f"{resource_type} is not a routed type ({', '.join(ROUTED_TYPES)})")  # pragma: no cover

    async def _check_consent(
        self, principal: Principal, data: Mapping[str, Any], model: Any, *, sender: str | None
    ) -> None:
        """A Consent must be one the consent engine can use, about a patient the caller may speak for.

        ``sender`` is the partner whose namespace the Consent's local names live in (its creator);
        None for a create. Raises ``FhirValidationError`` (422) or ``NotAuthorized`` (403).
        """
        issues = consent_issues(data)
        if issues:
            raise FhirValidationError(issues)
        namespace = sender or sender_of(principal)
        source = consent_facts(model, sender=namespace, resource_id=None).patient_source
        if source is None:
            raise FhirValidationError(
                [
                    FhirIssue(
                        "required",
                        "Consent.patient: the hub needs the patient's identifier or a reference to the Patient "
                        "to key the consent on (display text alone is not enough)",
                        "Consent.patient",
                    )
                ]
            )
        _check_patient_source("Consent", source)
        if principal.is_operator:
            return
        knows = await self._store.knows_patient(sender_of(principal), source)
        check_may_write_consent(principal, source, knows_patient=knows)

    async def _task_patient_fallback(
        self, principal: Principal, model: Any, data: Mapping[str, Any], context: BundleContext | None
    ) -> str | None:
        """For a Task without ``for``: the patient of the ServiceRequest its ``focus`` names, if the caller
        sent that ServiceRequest (in this Bundle, or earlier)."""
        if data.get("resourceType") != "Task" or data.get("for") is not None:
            return None
        focus = task_focus(model)
        if focus is None or reference_type(focus) != "ServiceRequest" or "://" in focus:
            return None
        if context is not None and focus in context.referral_patients:
            return context.referral_patients[focus]
        _, _, referral_id = focus.partition("/")
        try:
            versions = await self._store.versions("ServiceRequest", referral_id)
        except InvalidInput:
            return None
        if not versions or not is_participant(principal, versions):
            return None
        return versions[-1].patient_source

    async def conditional_match(self, principal: Principal, resource_type: str, if_none_exist: str) -> Shown | None:
        """The one resource ``If-None-Exist`` matches among those the caller may read, or None.

        Raises ``PreconditionFailed`` (412 ``multiple-matches``) when several match, ``InvalidInput``
        (400) for a condition the hub cannot evaluate.
        """
        system, value = parse_if_none_exist(if_none_exist)
        matches = []
        for version in await self._store.find_by_identifier(resource_type, system, value):
            shown = await self._shown(principal, await self._store.versions(resource_type, version.resource_id))
            if shown is not None:
                matches.append(shown)
        if len(matches) > 1:
            raise PreconditionFailed(
                f"If-None-Exist matches {len(matches)} {resource_type} resources; make the condition more selective",
                code="multiple-matches",
            )
        return matches[0] if matches else None

    async def _delivered_to(self, principal: Principal, versions: Sequence[StoredVersion]) -> frozenset[str]:
        sender = sender_of(principal)
        events = [v.event_id for v in versions if v.event_id is not None and v.sender != sender]
        return await self._store.delivered(sender, events) if events else frozenset()

    async def _may_know_of(self, principal: Principal, resource_type: str, versions: Sequence[StoredVersion]) -> bool:
        """True when the caller may learn that this resource exists: it may read a version of it, or it is
        the partner a Task's ``owner`` names (Gravity: the owner answers the Task)."""
        if not versions or is_participant(principal, versions):
            return bool(versions)
        owner = owner_of(orjson.loads(versions[-1].content)) if resource_type == "Task" else None
        if owner is not None and owner == principal.organization:
            return True
        return bool(await self._delivered_to(principal, versions))

    async def _shown(
        self, principal: Principal, versions: Sequence[StoredVersion], version_id: int | None = None
    ) -> Shown | None:
        """The newest version (or version ``version_id``) the caller may read, as it may see it; None if none.

        The operator and the resource's creator see every version whole; a partner sees the versions it
        sent whole, and a version another partner sent only when the audit shows its event was delivered
        to it and the read gate (the consent engine, now) permits it, redacted as delivery redacts.
        """
        plan = [(v, whole) for v, whole in read_plan(principal, versions, await self._delivered_to(principal, versions))
                if version_id is None or v.version_id == version_id]
        for version, whole in reversed(plan):
            if whole:
                return shown_whole(version)
            facts = self._stored_facts(versions, version)
            shown = await self._reads.disclose(principal, facts, version) if facts is not None else None
            if shown is not None:
                return shown
        return None

    def _stored_facts(self, versions: Sequence[StoredVersion], version: StoredVersion) -> RoutingFacts | None:
        """The routing facts of a stored version, as the edge extracted them when it was accepted (None when
        they cannot be extracted again: then nothing is shown)."""
        index = versions.index(version)
        try:
            data = orjson.loads(version.content)
            model = validate_resource(data, expected_type=version.resource_type)
            facts = self._facts(
                model, namespace=versions[0].sender, resource_id=version.resource_id,
                previous=orjson.loads(versions[index - 1].content) if index else None, context=None,
                patient_fallback=version.patient_source,
            )
        except (InvalidInput, ValueError):
            return None
        return facts.model_copy(update={"sender": version.sender, "patient_source": version.patient_source})

    async def search_about_patient(self, principal: Principal, resource_type: str, source: str) -> list[Shown]:
        """Current versions of ``resource_type`` about the patient ``source`` names that the caller may read,
        as it may see them."""
        found = []
        for current in await self._store.about_patient(resource_type, source):
            versions = await self._store.versions(resource_type, current.resource_id)
            shown = await self._shown(principal, versions)
            if shown is not None and shown.version.version_id == versions[-1].version_id:
                found.append(shown)
        return found

    # --- commit ----------------------------------------------------------------------------------

    async def commit(self, plans: Sequence[Planned]) -> list[StoredVersion]:
        """Write every planned event (each acknowledged by the broker), then store every planned version
        in one transaction; return the version each plan now answers with, in order."""
        for plan in plans:
            if plan.write is None or plan.event is None:
                continue
            if self._events is not None and plan.facts is not None and plan.facts.event_kind == CONSENT_CHANGE:
                # Straight onto the patient's partition of hub.events (ADR 0006): a revocation is in force
                # for every event of the patient accepted after this 2xx.
                await self._events.write_event(value=plan.event.value, headers=plan.event.headers)
            else:
                await self._ingress.write(key=plan.event.key, value=plan.event.value, headers=plan.event.headers)
        writes = [plan.write for plan in plans if plan.write is not None]
        saved = iter(await self._store.save(writes) if writes else [])
        answered: list[StoredVersion] = []
        for plan in plans:
            if plan.write is not None:
                answered.append(next(saved).version)
            elif plan.existing is not None:
                answered.append(plan.existing)
            else:  # pragma: no cover - a plan always writes or answers with an existing version
                raise ValueError("a plan with nothing to write and nothing to answer")
        return answered

    # --- read ------------------------------------------------------------------------------------

    async def read(
        self, principal: Principal, resource_type: str, resource_id: str, version_id: int | None = None
    ) -> Shown:
        """The current (or the given) version the caller may read, as it may see it; ``ResourceNotFound``
        otherwise (the same answer whether or not the resource exists)."""
        check_supported(resource_type)
        try:
            versions = await self._store.versions(resource_type, resource_id)
        except InvalidInput as error:
            raise ResourceNotFound(f"there is no {resource_type} with that id") from error
        shown = await self._shown(principal, versions, version_id)
        if shown is None and version_id is None:
            raise ResourceNotFound(f"there is no {resource_type} with that id (or you may not read it)")
        if shown is None:
            raise ResourceNotFound(f"there is no version {version_id} of that {resource_type} that you may read")
        return shown


def consent_issues(data: Mapping[str, Any]) -> list[FhirIssue]:
    """What keeps the hub from keeping a (FHIR-valid, already normalised) Consent, as 422 issues (empty: usable).

    The engine's own reader (:func:`hub.consent.model.consent_from_fhir`) must accept it and it must name
    its patient. A patient-privacy consent (``scope`` or ``category``: both LEAP generations) must also say
    what it decides when nothing more specific applies (a root provision ``type``, or a ``policyRule``
    OPTIN/OPTOUT). A consent of another scope (research, treatment, adr) is kept and never used for privacy
    decisions; the edge's answer warns so (``fhir_consent_reading``).
    """
    try:
        consent = consent_from_fhir(data)
    except InvalidInput as error:
        where = f"{error.expression}: " if error.expression else ""
        diagnostics = f"{where}the consent engine cannot use this Consent: {error}"
        return [FhirIssue("business-rule", diagnostics, error.expression)]
    issues: list[FhirIssue] = []
    if data.get("patient") is None:
        issues.append(FhirIssue("required", "Consent.patient: a consent must name its patient", "Consent.patient"))
    if consent.is_privacy and consent.base is None:
        issues.append(
            FhirIssue(
                "business-rule",
                "Consent.provision.type: the consent says neither permit nor deny (give the root provision a "
                "type, or a policyRule OPTIN or OPTOUT)",
                "Consent.provision.type",
            )
        )
    return issues


def _check_patient_source(resource_type: str, source: str | None) -> None:
    """A patient name the crosswalk cannot hold would be dead-lettered later: refuse it now (422)."""
    if source is None:
        return
    if len(source) > PATIENT_SOURCE_MAX or any(ord(char) < 32 or ord(char) == 127 for char in source):
        element = f"{resource_type}.{_SUBJECT_ELEMENT.get(resource_type, 'subject')}"
        raise FhirValidationError(
            [
                FhirIssue(
                    "value",
                    f"{element}: the patient's identifier or reference is longer than {PATIENT_SOURCE_MAX} "
                    "characters or contains control characters; the hub cannot key events on it",
                    element,
                )
            ]
        )
