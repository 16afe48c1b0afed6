"""Partner isolation on the running hub (issue 9): two hospitals and two CBOs try every partner-facing route
with each other's ids, identifiers and MRNs, and every answer is checked for leaks and existence hints.

The world (``isolation_world``) is built once for the module on a running hub over the embedded broker and
SQLite; hypothesis then draws (actor, route, target, options) and sends each request twice: at the target,
and at an unused counterpart (an unused id of the same type, an unused identifier or MRN, a partner id no
partner has). The properties, for every answer:

1. never a 5xx, and the status the access rules give (``fhir_access``, the CDS consult's relationship
   check, the admin API's 403 for partner tokens);
2. for a target the actor may not know of, the answer (status, headers, body; the names swapped) is
   identical to the unused counterpart's: no status code, header or message tells a partner that another
   partner's resource, patient or id space exists;
3. no answer contains a marker of a resource that was not delivered to the actor, nor any other partner's
   marker when the actor is a CBO (the ``cbo`` profile removes every free-text element), nor the MRN of a
   patient whose data never reached the actor, nor the id of a resource the actor may not know of, unless
   the actor sent it in the request itself (a CDS consult's card names only the Consents the actor recorded);
4. every resource another partner sent that an answer shows is exactly what the actor's topic carried
   (REST and Kafka apply one decision and one redaction), and a CBO's has only what the ``cbo`` profile keeps;
5. a write the actor may not make changes nothing: nothing new on ``hub.ingress``, the owner reads back
   the same version 1 with the same content, and the unused id stays unused.

Hypothesis is derandomized (a fixed seed), ``deadline=None``, no shrinking (the first failing example is
reported as drawn), a bounded number of examples per route; a sweep sends every actor at every target once
per route, so no combination depends on the draw. The checks themselves are proven twice: on fake answers
(``tests/unit/test_isolation_oracle.py``) and on this running hub patched to leak.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from hub.adapters import cds_hooks, fhir_access, fhir_disclosure, fhir_intake
from hub.app import running_hub
from hub.broker.embedded import EmbeddedBroker
from hub.errors import NotAuthorized
from hub.topics.registry import INGRESS
from tests.e2e.conftest import HubClient, settings_for
from tests.e2e.isolation_oracle import (
    Answer,
    beyond_cbo_profile,
    difference,
    leaked,
    shown_resources,
    without_meta,
)
from tests.e2e.isolation_world import (
    ACTORS,
    EXPECTED_DELIVERIES,
    KIND,
    MRN_SYSTEM,
    NOT_DELIVERED_TODAY,
    REQUEST_ID_SYSTEM,
    Resource,
    World,
    build_world,
    forged,
)

pytestmark = pytest.mark.broker

TYPES: Final = ("ServiceRequest", "Task", "Encounter", "Consent", "Patient")
ROUTES: Final = (
    "read", "vread", "update", "foreign-space", "conditional-create", "consent-create", "consent-search",
    "transaction", "batch", "cds-consult", "admin",
)
#: Routes whose request is a write the actor may not make (a hospital's conditional create may create).
WRITES: Final = frozenset({
    "update", "foreign-space", "transaction", "batch", "admin", "conditional-create", "consent-create",
})
#: Routes that name a patient rather than a resource.
PATIENT_ROUTES: Final = frozenset({"cds-consult", "consent-search", "consent-create", "admin"})
TARGETS: Final = tuple(EXPECTED_DELIVERIES) + tuple(f"unused:{t}" for t in TYPES)
EXAMPLES_PER_ROUTE: Final = 60
CONSULT: Final = "/cds-services/patient-consent-consult"
ADMIN_PATHS: Final = (
    ("GET", "/admin/v1/partners/{partner}"),
    ("GET", "/admin/v1/partners/{partner}/roster"),
    ("GET", "/admin/v1/audit?recipient={partner}"),
    ("GET", "/admin/v1/disclosures?patient={system}|{mrn}"),
    ("GET", "/admin/v1/audit/AuditEvent?patient={system}|{mrn}"),
    ("POST", "/admin/v1/partners/{partner}/roster"),
)


@dataclass(frozen=True)
class Target:
    """What a request names: a resource (its type, id, identifier), its patient (MRN and Patient id), and
    the partner whose id space it lives in; ``resource`` is None for an unused target."""

    resource_type: str
    resource_id: str
    identifier: str
    mrn: str
    patient_id: str
    partner: str
    body: dict[str, Any]
    resource: Resource | None = None


@dataclass
class Isolation:
    """The world, its unused targets and a handle on ``hub.ingress`` offsets."""

    world: World
    ingress: AIOKafkaConsumer
    partitions: list[TopicPartition]
    probes: dict[tuple[str, str], bytes] = field(default_factory=dict)

    async def ingress_ends(self) -> dict[TopicPartition, int]:
        ends: dict[TopicPartition, int] = await self.ingress.end_offsets(self.partitions)
        return ends

    def target(self, name: str, *, twin: bool = False) -> Target:
        """The named target, or (``twin``) its unused counterpart of the same type."""
        world = self.world
        if name.startswith("unused:") or twin:
            resource_type = name.removeprefix("unused:") if name.startswith("unused:") else world.resources[
                name].resource_type
            tag = f"{world.tag}-{'twin' if twin else 'unused'}"
            template = next(r for r in world.resources.values() if r.resource_type == resource_type)
            resource_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tag}/{resource_type}"))
            return Target(
                resource_type=resource_type, resource_id=resource_id,
                identifier=f"{MRN_SYSTEM if resource_type == 'Patient' else REQUEST_ID_SYSTEM}|UNUSED-{tag}",
                mrn=f"MRN-{tag}", patient_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tag}/Patient")),
                partner=f"zz-{tag}", body=forged(template, world.tag),
            )
        resource = world.resources[name]
        patient = next(r for r in world.resources.values() if r.resource_type == "Patient" and r.mrn == resource.mrn)
        return Target(
            resource_type=resource.resource_type, resource_id=resource.resource_id,
            identifier=resource.identifier or "", mrn=resource.mrn, patient_id=patient.resource_id,
            partner=world.partner_ids[resource.owner], body=forged(resource, world.tag), resource=resource,
        )


@dataclass(frozen=True)
class Request:
    """One request, and the names in it that differ between a target and its unused twin (by role)."""

    method: str
    path: str
    token: str
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return f"{self.path}\n{orjson.dumps(self.headers).decode()}\n{(self.body or b'').decode()}"


@dataclass(frozen=True)
class Options:
    """What hypothesis draws besides actor, route and target."""

    version: int = 1
    entry: str = "GET"
    search: str = "token"
    admin: int = 0
    if_match: bool = False


def with_id(body: dict[str, Any], resource_id: str) -> dict[str, Any]:
    return {**body, "id": resource_id}


def probe_body(iso: Isolation, actor: str, resource_type: str) -> bytes:
    """The resource a hospital's conditional create sends: its own, about a probe patient of its own,
    addressed to itself (so it reaches no one), the same bytes every time (a repeat creates nothing). The
    patient is named by an identifier without system: local to the hospital, so it may record its Consent."""
    key = (actor, resource_type)
    if key not in iso.probes:
        world = iso.world
        mrn = {"value": f"MRN-PROBE-{world.tag}-{actor}"}
        ident = [{"system": REQUEST_ID_SYSTEM, "value": f"PROBE-{world.tag}-{actor}-{resource_type}"}]
        template = next(r for r in world.resources.values() if r.resource_type == resource_type and r.owner == "A")
        body = forged(template, world.tag)
        body.pop("id", None)
        body["identifier"] = [{**mrn}] if resource_type == "Patient" else ident
        for element in ("subject", "for", "patient"):
            if element in body:
                body[element] = {"identifier": mrn}
        for element in ("requester", "owner"):
            if element in body:
                body[element] = {"reference": world.org(actor)}
        if "performer" in body:
            body["performer"] = [{"reference": world.org(actor)}]
        if "focus" in body:
            body["focus"] = {"reference": f"ServiceRequest/{uuid.uuid5(uuid.NAMESPACE_URL, world.tag)}"}
        iso.probes[key] = orjson.dumps(body)
    return iso.probes[key]


def request_for(iso: Isolation, route: str, actor: str, target: Target, options: Options) -> Request:
    """The request ``actor`` sends on ``route`` naming ``target``."""
    world = iso.world
    token = world.tokens[actor]
    fhir = {"Content-Type": "application/fhir+json"}
    url = f"{target.resource_type}/{target.resource_id}"
    by_id = {"id": target.resource_id}
    if route == "read":
        return Request("GET", f"/fhir/{url}", token, names=by_id)
    if route == "vread":
        return Request("GET", f"/fhir/{url}/_history/{options.version}", token, names=by_id)
    if route == "update":
        body = orjson.dumps(with_id(target.body, target.resource_id))
        return Request("PUT", f"/fhir/{url}", token, body, {**fhir, **({"If-Match": 'W/"1"'} if options.if_match
                                                                      else {})}, by_id)
    if route == "foreign-space":
        fresh = f"{target.partner}.probe-{world.tag}"
        body = orjson.dumps(with_id(target.body, fresh))
        return Request("PUT", f"/fhir/{target.resource_type}/{fresh}", token, body, fhir, {"space": target.partner})
    if route == "conditional-create":
        headers = {**fhir, "If-None-Exist": f"identifier={target.identifier}"}
        return Request("POST", f"/fhir/{target.resource_type}", token, probe_body(iso, actor, target.resource_type),
                       headers, {"identifier": target.identifier})
    if route == "consent-create":
        consent = forged(iso.world.resources["A.consent"], world.tag)
        consent["patient"] = {"identifier": {"system": MRN_SYSTEM, "value": target.mrn}}
        consent["identifier"] = [{"system": REQUEST_ID_SYSTEM, "value": f"CONSENT-FOR-{target.mrn}"}]
        return Request("POST", "/fhir/Consent", token, orjson.dumps(consent), fhir, {"mrn": target.mrn})
    if route == "consent-search":
        if options.search == "reference":
            return Request("GET", f"/fhir/Consent?patient=Patient/{target.patient_id}", token,
                           names={"patient": target.patient_id})
        parameter = "patient:identifier" if options.search == "identifier" else "patient"
        return Request("GET", f"/fhir/Consent?{parameter}={MRN_SYSTEM}|{target.mrn}", token, names={"mrn": target.mrn})
    if route in {"transaction", "batch"}:
        entry: dict[str, Any] = {"request": {"method": options.entry, "url": url}}
        if options.entry == "PUT":
            entry["resource"] = with_id(target.body, target.resource_id)
        bundle = {"resourceType": "Bundle", "type": route, "entry": [entry]}
        return Request("POST", "/fhir", token, orjson.dumps(bundle), fhir, by_id)
    if route == "cds-consult":
        consult = {
            "hook": "patient-consent-consult", "hookInstance": str(uuid.uuid4()),
            "context": {
                "patientId": [{"system": MRN_SYSTEM, "value": target.mrn}],
                "category": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "patient-privacy"}],
                "purposeOfUse": ["CAREMGT"],
            },
        }
        return Request("POST", CONSULT, token, orjson.dumps(consult), {"Content-Type": "application/json"},
                       {"mrn": target.mrn})
    method, template = ADMIN_PATHS[options.admin]
    path = template.format(partner=target.partner, system=MRN_SYSTEM, mrn=target.mrn)
    names = {"partner": target.partner} if "{partner}" in template else {"mrn": target.mrn}
    if method == "GET":
        return Request(method, path, token, names=names)
    roster = orjson.dumps({"patient": f"{MRN_SYSTEM}|{target.mrn}"})
    return Request(method, path, token, roster, {"Content-Type": "application/json"}, {**names, "mrn": target.mrn})


async def send(http: httpx.AsyncClient, request: Request) -> Answer:
    response = await http.request(request.method, request.path, content=request.body, headers={
        "Authorization": f"Bearer {request.token}", **request.headers})
    return Answer(response.status_code, {k.lower(): v for k, v in response.headers.items()}, response.text)


# --- the model: what the access rules say each answer must be ----------------------------------------------


def may_know(world: World, route: str, actor: str, target: Target) -> bool:
    """Whether the actor may learn that the target exists (else: the same answer as for an unused one)."""
    if route in {"foreign-space", "admin"}:
        return False
    if route == "consent-search":
        return target.resource is not None and target.resource.owner == actor
    if route == "cds-consult":
        return world.knows_patient(actor, target.mrn)
    if target.resource is None:
        return False
    if route == "conditional-create":
        return world.may_read(actor, target.resource)
    return world.may_know_of(actor, target.resource)


def refused_write(world: World, actor: str, target: Target) -> int:
    """The status of a write (update, PUT entry) by an actor that does not own the target."""
    resource = target.resource
    if resource is not None and KIND[actor] == "cbo" and world.may_know_of(actor, resource) and (
        resource.resource_type == "Task"
    ):
        return 422  # the Task's owner may update it, but not its requester (Gravity)
    if KIND[actor] == "cbo":
        return 403
    return 403 if resource is not None and world.may_know_of(actor, resource) else 405


def expected_status(world: World, route: str, actor: str, target: Target, options: Options) -> int:
    resource = target.resource
    readable = resource is not None and world.may_read(actor, resource)
    if route == "read" or (route == "vread" and options.version == 1):
        return 200 if readable else 404
    if route == "vread":
        return 404
    if route in {"update"} or (route == "transaction" and options.entry == "PUT"):
        return refused_write(world, actor, target)
    if route == "foreign-space":
        return 403 if KIND[actor] == "cbo" else 405
    if route == "conditional-create":
        return 403 if KIND[actor] == "cbo" else 200 if readable else 201
    if route == "consent-create":
        return 403  # never for another hospital's patient, whether or not its data reached the actor
    if route == "transaction":
        return 200 if readable else 404
    if route in {"consent-search", "batch"}:
        return 200
    if route == "cds-consult":
        return 200 if world.knows_patient(actor, target.mrn) else 403
    return 403  # admin


def expected_entry_status(world: World, actor: str, target: Target, options: Options) -> int:
    if options.entry == "PUT":
        return refused_write(world, actor, target)
    return 200 if target.resource is not None and world.may_read(actor, target.resource) else 404


def is_write(route: str, actor: str, options: Options) -> bool:
    """Whether the request asks to change something the actor may not change."""
    if route in {"transaction", "batch"}:
        return options.entry == "PUT"
    if route == "conditional-create":
        return KIND[actor] == "cbo"
    if route == "admin":
        return ADMIN_PATHS[options.admin][0] != "GET"
    return route in WRITES


# --- the world, once per module ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def isolation(tansu: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Isolation]:
    tmp: Path = tmp_path_factory.mktemp("isolation")
    async with (
        running_hub(settings_for(tansu.bootstrap, tmp)) as hub,
        httpx.AsyncClient(base_url=hub.http_url or "", timeout=30) as http,
    ):
        world = await build_world(HubClient(hub=hub, http=http, prefix=f"t{uuid.uuid4().hex[:8]}"))
        consumer = AIOKafkaConsumer(bootstrap_servers=hub.bootstrap, enable_auto_commit=False, group_id=None)
        await consumer.start()
        try:
            await consumer.topics()  # fetches the cluster's metadata
            numbers = sorted(consumer.partitions_for_topic(INGRESS.name) or ())
            partitions = [TopicPartition(INGRESS.name, number) for number in numbers]
            assert partitions
            yield Isolation(world=world, ingress=consumer, partitions=partitions)
        finally:
            await consumer.stop()


def options() -> st.SearchStrategy[Options]:
    return st.builds(
        Options,
        version=st.sampled_from((1, 2)),
        entry=st.sampled_from(("GET", "PUT")),
        search=st.sampled_from(("token", "identifier", "reference")),
        admin=st.integers(0, len(ADMIN_PATHS) - 1),
        if_match=st.booleans(),
    )


def owner_of(name: str) -> str | None:
    return None if name.startswith("unused:") else name.split(".", 1)[0]


def targets_for(route: str, actor: str, chosen: Options) -> list[str]:
    """The targets an actor may be sent at on ``route``: never a write of its own resource (that is allowed,
    and would change the world the other examples rely on); patient-level routes name patients."""
    writes = route in {"update", "foreign-space"} or (route in {"transaction", "batch"} and chosen.entry == "PUT")
    targets = [t for t in TARGETS if not (writes and owner_of(t) == actor)]
    if route in PATIENT_ROUTES:
        targets = [t for t in targets if t in {"unused:Patient"} or t.endswith((".patient", ".patient2"))]
    if route == "consent-create":
        targets = [t for t in targets if owner_of(t) != actor]
    return targets


@st.composite
def probes(draw: st.DrawFn, route: str) -> tuple[str, str, Options]:
    """An actor, a target and options for ``route``."""
    chosen = draw(options())
    actor = draw(st.sampled_from(ACTORS))
    return actor, draw(st.sampled_from(targets_for(route, actor, chosen))), chosen


RUN: Final = settings(
    max_examples=EXAMPLES_PER_ROUTE, deadline=None, derandomize=True, database=None,
    phases=(Phase.explicit, Phase.generate), report_multiple_bugs=False,
    suppress_health_check=(HealthCheck.function_scoped_fixture, HealthCheck.too_slow),
)


@pytest.mark.parametrize("route", ROUTES)
@RUN
@given(data=st.data())
async def test_no_partner_learns_what_it_may_not_on_any_route(
    isolation: Isolation, route: str, data: st.DataObject
) -> None:
    """Hypothesis draws actor, target and options (versions, Bundle entry methods, search forms, admin
    paths) for each route; every property holds for each drawn request."""
    actor, name, chosen = data.draw(probes(route), label="actor, target, options")
    await check_probe(isolation, route, actor, name, chosen)


#: Each route with the options the sweep uses (every search form, entry method and admin path once).
SWEEP: Final = (
    *((route, Options()) for route in (
        "read", "vread", "update", "foreign-space", "conditional-create", "consent-create", "cds-consult")),
    ("update", Options(if_match=True)),
    ("vread", Options(version=2)),
    *(("consent-search", Options(search=form)) for form in ("token", "identifier", "reference")),
    *((route, Options(entry=method)) for route in ("transaction", "batch") for method in ("GET", "PUT")),
    *(("admin", Options(admin=index)) for index in range(len(ADMIN_PATHS))),
)


def sweep_id(case: tuple[str, Options]) -> str:
    route, chosen = case
    changed = {k: v for k, v in vars(chosen).items() if v != getattr(Options(), k)}
    return "-".join([route, *(f"{k}={v}" for k, v in changed.items())])


@pytest.mark.parametrize(("route", "chosen"), SWEEP, ids=[sweep_id(case) for case in SWEEP])
async def test_every_partner_tries_every_target_on_every_route(
    isolation: Isolation, route: str, chosen: Options
) -> None:
    """The same properties, every actor at every target once per route and option (hypothesis samples;
    this sweep guarantees that no combination, such as a CBO writing the Task it owns, goes untried)."""
    for actor in ACTORS:
        for name in targets_for(route, actor, chosen):
            await check_probe(isolation, route, actor, name, chosen)


async def check_probe(isolation: Isolation, route: str, actor: str, name: str, chosen: Options) -> None:
    """Send the request at the target and at its unused twin; check properties 1-5 (module docstring)."""
    world = isolation.world
    target, twin = isolation.target(name), isolation.target(name, twin=True)
    asked, twin_asked = request_for(isolation, route, actor, target, chosen), request_for(
        isolation, route, actor, twin, chosen)
    before = await isolation.ingress_ends()
    answer = await send(world.client.http, asked)
    twin_answer = await send(world.client.http, twin_asked)
    after = await isolation.ingress_ends()
    where = f"{actor} -> {route} {name} {chosen}"

    secrets = world.all_secrets()
    for given_request, got in ((asked, answer), (twin_asked, twin_answer)):
        assert got.status < 500, (where, got.text)
        leaks = leaked(got, secrets=secrets, allowed=world.allowed_secrets(actor), request_text=given_request.text)
        assert set() == leaks, f"{where}: shown {sorted(leaks)}: {got.text[:500]}"
        check_shown(world, actor, got, where)
    assert expected_status(world, route, actor, target, chosen) == answer.status, (where, answer.text)
    if route == "batch":
        [entry] = answer.json()["entry"]
        status = int(entry["response"]["status"].split()[0])
        assert expected_entry_status(world, actor, target, chosen) == status, (where, entry)
    if not may_know(world, route, actor, target):
        hint = difference(answer, asked.names, twin_answer, twin_asked.names)
        assert hint is None, f"{where}: tells the target from an unused one: {hint}"
    if is_write(route, actor, chosen):
        assert before == after, f"{where}: a refused write reached hub.ingress"
        await assert_unchanged(isolation, route, target, twin)


def check_shown(world: World, actor: str, answer: Answer, where: str) -> None:
    """Every resource of another partner in the answer is what the actor's topic carried (property 4)."""
    by_id = {(r.resource_type, r.resource_id): r for r in world.resources.values()}
    for shown in shown_resources(answer.json()):
        resource = by_id.get((shown.get("resourceType", ""), shown.get("id", "")))
        if resource is None or resource.owner == actor:
            continue
        delivered = world.delivered[actor].get((resource.resource_type, resource.resource_id))
        assert delivered is not None, f"{where}: shown {resource.name}, never delivered to {actor}"
        assert without_meta(delivered) == without_meta(shown), f"{where}: {resource.name} unlike {actor}'s topic"
        if KIND[actor] == "cbo":
            assert set() == beyond_cbo_profile(shown), f"{where}: shown more of {resource.name}"


async def assert_unchanged(isolation: Isolation, route: str, target: Target, twin: Target) -> None:
    """Property 5: the owner reads back version 1 as it was created, and the unused twin is still unused."""
    client = isolation.world.client
    if target.resource is not None and route != "admin":
        resource = target.resource
        back = await client.http.get(f"/fhir/{resource.url}", headers={
            "Authorization": f"Bearer {isolation.world.tokens[resource.owner]}"})
        assert 200 == back.status_code, back.text
        assert ("1", without_meta(resource.content)) == (back.json()["meta"]["versionId"], without_meta(back.json()))
    if route in {"update", "transaction", "batch"}:
        gone = await client.http.get(f"/fhir/{twin.resource_type}/{twin.resource_id}", headers=client.admin)
        assert 404 == gone.status_code, gone.text
    if route == "foreign-space":
        for space in (target.partner, twin.partner):
            fresh = f"{target.resource_type}/{space}.probe-{isolation.world.tag}"
            gone = await client.http.get(f"/fhir/{fresh}", headers=client.admin)
            assert 404 == gone.status_code, gone.text
    if route == "consent-create":
        for mrn in (target.mrn, twin.mrn):
            found = await client.http.get(f"/fhir/Consent?patient={MRN_SYSTEM}|{mrn}", headers=client.admin)
            assert (1 if mrn in isolation.world.mrns.values() else 0) == found.json()["total"], found.text
    if route == "admin":
        for cbo, total in (("F", 2), ("H", 0)):
            roster = await client.http.get(f"/admin/v1/partners/{isolation.world.partner_ids[cbo]}/roster",
                                           headers=client.admin)
            assert total == len(roster.json()["entries"]), roster.text


# --- the world as designed, and what it shows today --------------------------------------------------------


async def test_the_world_reached_every_partner_it_was_addressed_to(isolation: Isolation) -> None:
    """Guard for the properties: each partner's topic carries what the world addressed to it (a world where
    nothing was delivered would make every property pass for the wrong reason)."""
    world = isolation.world
    for name, recipients in EXPECTED_DELIVERIES.items():
        for actor in ACTORS:
            expected = actor in recipients and name not in NOT_DELIVERED_TODAY
            assert expected == world.was_delivered(actor, world.resources[name]), (actor, name)
    assert {"F": 6, "H": 2, "A": 1, "B": 1} == {a: len(world.delivered[a]) for a in ACTORS}


async def test_the_cbo_that_owns_a_new_referral_task_is_delivered_it(isolation: Isolation) -> None:
    world = isolation.world
    assert world.was_delivered("F", world.resources["A.task_F"])
    read = await world.client.http.get(f"/fhir/{world.resources['A.task_F'].url}", headers={
        "Authorization": f"Bearer {world.tokens['F']}"})
    assert 200 == read.status_code



async def test_a_consult_names_no_consent_the_caller_cannot_read(isolation: Isolation) -> None:
    """F may consult about A's patient (A's referral reached it) but may not read A's Consent: the card gives
    the decision A's Consent makes without naming it; A, which recorded it, is shown its id."""
    world = isolation.world
    consent = world.resources["A.consent"]
    asked = request_for(isolation, "cds-consult", "F", isolation.target("A.patient"), Options())
    answer = await send(world.client.http, asked)
    assert 200 == answer.status, answer.text
    read = await send(world.client.http, request_for(isolation, "read", "F", isolation.target("A.consent"), Options()))
    assert 404 == read.status, read.text
    assert set() == leaked(answer, secrets={consent.resource_id}, allowed=set())
    [card] = answer.json()["cards"]
    assert ("CONSENT_PERMIT", "consent:(another-organization):provision") == (
        card["extension"]["decision"], card["extension"]["rule"])
    own = await send(world.client.http, request_for(isolation, "cds-consult", "A", isolation.target("A.patient"),
                                                    Options()))
    [own_card] = own.json()["cards"]
    assert ("CONSENT_PERMIT", f"consent:{consent.resource_id}:provision") == (
        own_card["extension"]["decision"], own_card["extension"]["rule"])
    assert own_card["extension"]["basedOn"].endswith(f"/fhir/Consent/{consent.resource_id}")


# --- the checks fail on a hub that leaks (each property can fail) ------------------------------------------


async def test_the_checks_catch_a_hub_that_shows_a_partner_what_was_never_delivered_to_it(
    isolation: Isolation, monkeypatch: pytest.MonkeyPatch
) -> None:
    def everything_whole(principal: Any, versions: Any, delivered: Any) -> list[tuple[Any, bool]]:
        return [(version, True) for version in versions]

    monkeypatch.setattr(fhir_intake, "read_plan", everything_whole)
    with pytest.raises(AssertionError, match=r"shown .*SECRET-"):
        await check_probe(isolation, "read", "H", "A.ref_F", Options())


async def test_the_checks_catch_a_hub_whose_consult_card_names_a_consent_the_caller_cannot_read(
    isolation: Isolation, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cds_hooks, "shown_to_caller", lambda answer, hidden: answer)
    consent = isolation.world.resources["A.consent"]
    with pytest.raises(AssertionError, match=rf"shown \['{consent.resource_id}'\]"):
        await check_probe(isolation, "cds-consult", "F", "A.patient", Options())


async def test_the_checks_catch_a_hub_that_skips_the_cbo_redaction_on_a_read(
    isolation: Isolation, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fhir_disclosure, "read_view", lambda resource, decision: dict(resource))
    with pytest.raises(AssertionError, match="SECRET-"):
        await check_probe(isolation, "transaction", "F", "B.ref_F", Options(entry="GET"))


async def test_the_checks_catch_a_hub_whose_status_tells_that_another_partners_resource_exists(
    isolation: Isolation, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = fhir_access.check_update_as_create

    def telling(principal: Any, resource_type: str, resource_id: str, *, stored: bool, known: bool) -> None:
        if stored and not known:
            raise NotAuthorized("this resource belongs to another partner")
        original(principal, resource_type, resource_id, stored=stored, known=known)

    monkeypatch.setattr(fhir_intake, "check_update_as_create", telling)
    with pytest.raises(AssertionError, match="405 == 403"):
        await check_probe(isolation, "update", "B", "A.patient2", Options())
    # Even with a model that expected the 403, the unused twin's 405 gives the existence away.
    monkeypatch.setattr(sys.modules[__name__], "refused_write", lambda world, actor, target: 403)
    with pytest.raises(AssertionError, match="tells the target from an unused one: status differs"):
        await check_probe(isolation, "update", "B", "A.consent2", Options())
