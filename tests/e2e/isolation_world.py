"""The world of the partner-isolation test: two hospitals (A, B), two CBOs (food bank F, housing H) and the
operator, on one running hub, and what each partner was delivered.

Each hospital registers a Patient (a unique MRN), refers it to F (a ServiceRequest and a Task owned by F),
to H (a ServiceRequest created by PUT in its own id space, ``<partner id>.ref-h``) and to the other hospital,
and records an Encounter and a Consent (opt-in, so every delivery is permitted by the patient). F has both
shared patients on its roster, so their Encounters reach F too (minimum necessary). Each hospital also has a second,
private patient (Patient, Consent, Encounter) whose data reaches no one: no other partner may learn that it
exists. Every resource carries a unique
secret marker in each free-text element it has (``note``, ``patientInstruction``, ``description``,
``reasonCode.text``, a Consent's ``sourceAttachment.title``, a Patient's ``name.text``): the ``cbo``
redaction profile removes each of them, so no CBO may ever read one, and no partner may read a marker of a
resource that was not delivered to it.

What was delivered is read from the partner topics with the Kafka client a partner uses (the ground truth),
and checked against :data:`EXPECTED_DELIVERIES` (the world as designed) before any property runs.
"""

from __future__ import annotations

import copy
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord

from tests.e2e.conftest import HubClient, read_topic

MRN_SYSTEM: Final = "urn:oid:2.999.7.1"
REQUEST_ID_SYSTEM: Final = "urn:oid:2.999.7.2"
ACT_CODE: Final = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CONSENT_SCOPE: Final = "http://terminology.hl7.org/CodeSystem/consentscope"
HOSPITALS: Final = ("A", "B")
CBOS: Final = ("F", "H")
ACTORS: Final = HOSPITALS + CBOS
KIND: Final = {"A": "hospital", "B": "hospital", "F": "cbo", "H": "cbo"}
#: Which resources of the world reach which partner (name -> recipients), as the operator's default sharing
#: rules and the patients' opt-in consents decide: referrals reach the partner they address, a referral Task
#: its owner, an Encounter the CBOs with the patient on their roster.
EXPECTED_DELIVERIES: Final = {
    "A.ref_F": {"F"}, "A.task_F": {"F"}, "A.ref_H": {"H"}, "A.ref_B": {"B"}, "A.enc": {"F"},
    "A.patient": set(), "A.consent": set(), "A.patient2": set(), "A.consent2": set(), "A.enc2": set(),
    "B.ref_F": {"F"}, "B.task_F": {"F"}, "B.ref_H": {"H"}, "B.ref_A": {"A"}, "B.enc": {"F"},
    "B.patient": set(), "B.consent": set(), "B.patient2": set(), "B.consent2": set(), "B.enc2": set(),
}
#: Designed deliveries that do not happen (none since the ``cbo-task-addressed`` rule names the
#: ``referral-task`` kind too); the properties use what the topics actually carried.
NOT_DELIVERED_TODAY: Final[frozenset[str]] = frozenset()
#: The last resource of each hospital's shared patient that reaches F: the events of one patient from one
#: sender keep their order, so once it is on F's topic every earlier one that would reach F is too.
LAST_TO_F: Final = ("A.enc", "B.enc")


@dataclass(frozen=True)
class Resource:
    """One resource of the world: who created it, where it lives, its markers and its patient's MRN."""

    name: str
    owner: str
    resource_type: str
    resource_id: str
    content: dict[str, Any]
    markers: tuple[str, ...]
    mrn: str
    identifier: str | None = None

    @property
    def url(self) -> str:
        return f"{self.resource_type}/{self.resource_id}"


@dataclass
class World:
    """The running hub, the partners' tokens and ids, the resources and what each partner was delivered."""

    client: HubClient
    partner_ids: dict[str, str]
    tokens: dict[str, str]
    resources: dict[str, Resource] = field(default_factory=dict)
    #: actor -> {(type, id): the resource as its topic carried it}
    delivered: dict[str, dict[tuple[str, str], dict[str, Any]]] = field(default_factory=dict)
    mrns: dict[str, str] = field(default_factory=dict)
    tag: str = ""

    def org(self, actor: str) -> str:
        return f"Organization/{self.partner_ids[actor]}"

    def was_delivered(self, actor: str, resource: Resource) -> bool:
        return (resource.resource_type, resource.resource_id) in self.delivered.get(actor, {})

    def may_know_of(self, actor: str, resource: Resource) -> bool:
        """The actor sent it, was delivered it, or (a Task) is the owner it names."""
        owns_task = resource.resource_type == "Task" and resource.content.get("owner", {}).get(
            "reference"
        ) == self.org(actor)
        return resource.owner == actor or self.was_delivered(actor, resource) or owns_task

    def may_read(self, actor: str, resource: Resource) -> bool:
        return resource.owner == actor or self.was_delivered(actor, resource)

    def knows_patient(self, actor: str, mrn: str) -> bool:
        """Whether the actor has a relationship with the patient: it sent data about it, or data about it
        reached it."""
        return any(r.mrn == mrn and (r.owner == actor or self.was_delivered(actor, r)) for r in self.resources.values())

    def allowed_secrets(self, actor: str) -> set[str]:
        """Ids, markers and MRNs an answer to ``actor`` may contain: the ids of the resources it may know of,
        the markers and MRNs of its own resources, the MRNs of patients whose data reached it, and (a
        hospital, shown what it was delivered whole) the markers of resources delivered to it. A CBO's
        profile removes every free-text element, so no other marker."""
        allowed: set[str] = {r.resource_id for r in self.resources.values() if self.may_know_of(actor, r)}
        for resource in self.resources.values():
            if resource.owner == actor:
                allowed.update(resource.markers)
                allowed.add(resource.mrn)
            elif self.was_delivered(actor, resource):
                allowed.add(resource.mrn)
                if KIND[actor] == "hospital":
                    allowed.update(resource.markers)
        return allowed

    def all_secrets(self) -> set[str]:
        """Every marker, MRN and resource id of the world."""
        secrets = {m for r in self.resources.values() for m in r.markers}
        return secrets | set(self.mrns.values()) | {r.resource_id for r in self.resources.values()}


def _subject(mrn: str) -> dict[str, Any]:
    return {"identifier": {"system": MRN_SYSTEM, "value": mrn}}


def _marker(tag: str, owner: str, name: str, element: str) -> str:
    return f"SECRET-{tag}-{owner}-{name}-{element}"


def _referral(world: World, owner: str, name: str, to: str, mrn: str) -> tuple[dict[str, Any], tuple[str, ...]]:
    note, instruction = (_marker(world.tag, owner, name, e) for e in ("note", "instruction"))
    body = {
        "resourceType": "ServiceRequest", "status": "active", "intent": "order",
        "identifier": [{"system": REQUEST_ID_SYSTEM, "value": f"REQ-{world.tag}-{owner}-{name}"}],
        "subject": _subject(mrn),
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "467771000124109"}]},
        "requester": {"reference": world.org(owner)},
        "performer": [{"reference": world.org(to)}],
        "note": [{"text": note}],
        "patientInstruction": instruction,
    }
    return body, (note, instruction)


def _task(world: World, owner: str, name: str, focus: str, mrn: str) -> tuple[dict[str, Any], tuple[str, ...]]:
    description, note = (_marker(world.tag, owner, name, e) for e in ("description", "note"))
    body = {
        "resourceType": "Task", "status": "requested", "intent": "order",
        "identifier": [{"system": REQUEST_ID_SYSTEM, "value": f"TASK-{world.tag}-{owner}-{name}"}],
        "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]},
        "focus": {"reference": focus},
        "for": _subject(mrn),
        "authoredOn": "2026-01-15T10:00:00Z",
        "requester": {"reference": world.org(owner)},
        "owner": {"reference": world.org("F")},
        "description": description,
        "note": [{"text": note}],
    }
    return body, (description, note)


def _encounter(world: World, owner: str, name: str, mrn: str) -> tuple[dict[str, Any], tuple[str, ...]]:
    reason = _marker(world.tag, owner, name, "reason")
    body = {
        "resourceType": "Encounter", "status": "in-progress",
        "identifier": [{"system": REQUEST_ID_SYSTEM, "value": f"ENC-{world.tag}-{owner}-{name}"}],
        "class": {"system": ACT_CODE, "code": "IMP", "display": "inpatient encounter"},
        "subject": _subject(mrn),
        "period": {"start": "2026-01-15T10:00:00Z"},
        "reasonCode": [{"text": reason}],
    }
    return body, (reason,)


def _consent(world: World, owner: str, name: str, mrn: str) -> tuple[dict[str, Any], tuple[str, ...]]:
    title = _marker(world.tag, owner, name, "title")
    body = {
        "resourceType": "Consent", "status": "active",
        "identifier": [{"system": REQUEST_ID_SYSTEM, "value": f"CONSENT-{world.tag}-{owner}-{name}"}],
        "scope": {"coding": [{"system": CONSENT_SCOPE, "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": _subject(mrn),
        "dateTime": "2026-01-01T00:00:00Z",
        "sourceAttachment": {"title": title},
        "policyRule": {"coding": [{"system": ACT_CODE, "code": "OPTIN"}]},
        "provision": {"type": "permit"},
    }
    return body, (title,)


def _patient(world: World, owner: str, name: str, mrn: str) -> tuple[dict[str, Any], tuple[str, ...]]:
    text = _marker(world.tag, owner, name, "name")
    body = {
        "resourceType": "Patient",
        "identifier": [{"system": MRN_SYSTEM, "value": mrn}],
        "name": [{"text": text}],
    }
    return body, (text,)


async def _write(world: World, owner: str, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = await world.client.http.request(method, f"/fhir/{path}", content=orjson.dumps(body), headers={
        "Authorization": f"Bearer {world.tokens[owner]}", "Content-Type": "application/fhir+json"})
    assert answer.status_code in (200, 201), (path, answer.text)
    stored: dict[str, Any] = answer.json()
    return stored


async def _add(
    world: World, owner: str, name: str, made: tuple[dict[str, Any], tuple[str, ...]], *, put_id: str | None = None,
    mrn: str | None = None,
) -> Resource:
    body, markers = made
    resource_type = body["resourceType"]
    if put_id is None:
        stored = await _write(world, owner, "POST", resource_type, body)
    else:
        stored = await _write(world, owner, "PUT", f"{resource_type}/{put_id}", {**body, "id": put_id})
    identifiers = body.get("identifier") or []
    resource = Resource(
        name=f"{owner}.{name}", owner=owner, resource_type=resource_type, resource_id=stored["id"],
        content=stored, markers=markers, mrn=mrn or world.mrns[owner],
        identifier=f"{identifiers[0]['system']}|{identifiers[0]['value']}" if identifiers else None,
    )
    world.resources[resource.name] = resource
    return resource


async def build_world(client: HubClient) -> World:
    """Register the partners, create every resource, put A's patient on F's roster and wait until every
    expected delivery reached its partner topic (so the audit shows it too)."""
    partner_ids: dict[str, str] = {}
    tokens: dict[str, str] = {}
    for actor in ACTORS:
        partner_ids[actor], tokens[actor] = await client.add_partner(actor.lower(), KIND[actor])
    world = World(client=client, partner_ids=partner_ids, tokens=tokens, tag=uuid.uuid4().hex[:8])
    world.mrns = {f"{owner}{n}": f"MRN-{world.tag}-{owner}{n}" for owner in HOSPITALS for n in ("", "2")}
    for shared in HOSPITALS:
        rostered = await client.http.post(f"/admin/v1/partners/{partner_ids['F']}/roster", headers=client.admin,
                                          json={"patient": f"{MRN_SYSTEM}|{world.mrns[shared]}"})
        assert 201 == rostered.status_code, rostered.text
    for owner, other in (("A", "B"), ("B", "A")):
        mrn = world.mrns[owner]
        await _add(world, owner, "patient", _patient(world, owner, "patient", mrn))
        await _add(world, owner, "consent", _consent(world, owner, "consent", mrn))
        referral = await _add(world, owner, "ref_F", _referral(world, owner, "ref_F", "F", mrn))
        await _add(world, owner, "task_F", _task(world, owner, "task_F", referral.url, mrn))
        await _add(world, owner, "ref_H", _referral(world, owner, "ref_H", "H", mrn),
                   put_id=f"{partner_ids[owner]}.ref-h")
        await _add(world, owner, f"ref_{other}", _referral(world, owner, f"ref_{other}", other, mrn))
        await _add(world, owner, "enc", _encounter(world, owner, "enc", mrn))
        private = world.mrns[f"{owner}2"]
        await _add(world, owner, "patient2", _patient(world, owner, "patient2", private), mrn=private)
        await _add(world, owner, "consent2", _consent(world, owner, "consent2", private), mrn=private)
        await _add(world, owner, "enc2", _encounter(world, owner, "enc2", private), mrn=private)
    # A created resource's event carries the request's bytes (no id): recognise it by its unique identifier.
    by_identifier = {r.identifier: r for r in world.resources.values()}
    for actor in ACTORS:
        want = {name for name, recipients in EXPECTED_DELIVERIES.items() if actor in recipients}
        last = {world.resources[name].identifier for name in LAST_TO_F} if actor == "F" else None
        records = await read_partner_topic(world, actor, expect=len(want - NOT_DELIVERED_TODAY), until=last)
        world.delivered[actor] = {}
        for record in records:
            resource = by_identifier[identifier_of(orjson.loads(record.value))]
            world.delivered[actor][(resource.resource_type, resource.resource_id)] = orjson.loads(record.value)
        got = {world.resources[name].name for name in want if world.was_delivered(actor, world.resources[name])}
        assert len(records) == len(world.delivered[actor]), f"partner {actor} got a resource twice"
        assert want - NOT_DELIVERED_TODAY <= got <= want, f"partner {actor} was delivered {sorted(got)}"
        assert len(got) == len(records), f"partner {actor} was delivered something else"
    return world


def identifier_of(resource: dict[str, Any]) -> str:
    """``system|value`` of a resource's first identifier."""
    [first, *_] = resource.get("identifier") or [{}]
    return f"{first.get('system')}|{first.get('value')}"


async def read_partner_topic(
    world: World, actor: str, *, expect: int, until: set[str | None] | None = None
) -> list[ConsumerRecord[bytes, bytes]]:
    """The partner's topic from the start: ``expect`` records, or (``until``) every record up to the ones
    whose resources carry those identifiers."""
    topic = f"partner.{world.partner_ids[actor]}"
    if until is None:
        return await read_topic(world.client.hub.bootstrap, topic, expect=expect)
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=world.client.hub.bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None, fetch_max_wait_ms=20)
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not until <= {identifier_of(orjson.loads(r.value)) for r in records}:
            for part in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(part)
    finally:
        await consumer.stop()
    return records


def forged(resource: Resource, tag: str) -> dict[str, Any]:
    """The owner's whole resource with every marker replaced by a forged text (no secret in the request), and
    a Task's requester changed (a change Gravity leaves to the requester alone), as an attacker's update."""
    text = orjson.dumps(resource.content).decode()
    for marker in resource.markers:
        text = text.replace(marker, f"FORGED-{tag}")
    body: dict[str, Any] = orjson.loads(text)
    body.pop("meta", None)
    if body["resourceType"] == "Task":
        body["requester"] = {"reference": "Organization/forger"}
    return copy.deepcopy(body)
