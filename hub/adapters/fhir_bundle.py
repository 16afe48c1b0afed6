"""``transaction`` and ``batch`` Bundles posted to the FHIR base (``POST /fhir``).

A Gravity referral typically arrives as one transaction: a Patient, the ServiceRequest about it and
the Task whose ``focus`` is that ServiceRequest, linked by ``urn:uuid:`` fullUrls. Processing:

1. **The Bundle itself**: ``Bundle.type`` must be ``transaction`` or ``batch`` (a ``message`` belongs
   to ``$process-message``); the Bundle without its entries' resources is validated as R4; at most
   :data:`MAX_BUNDLE_ENTRIES` entries.
2. **Each entry's request**: ``POST <Type>`` (create, optionally ``ifNoneExist``), ``PUT <Type>/<id>``
   (update or update-as-create; the resource's ``id`` must be ``<id>``) or ``GET <Type>/<id>[/_history/<vid>]``
   (read), for the types the edge serves. Anything else (DELETE, PATCH, search, conditional
   update) is ``not-supported``. No two entries may share a fullUrl or touch the same resource. A
   Consent entry's resource is read liberally, as ``POST /Consent`` reads it
   (:func:`hub.adapters.fhir_consent_reading.read_liberally`): LEAP and R5-era shapes become R4 before
   anything else looks at it, and what was read differently is that entry's ``response.outcome`` (a
   warning OperationOutcome, paths at ``Bundle.entry[n].resource...``) in the answer.
3. **Ids and references**: every POST gets its id (the event id of its content, so resending the same
   Bundle is idempotent; or the id of the one resource its ``ifNoneExist`` matches). Every
   ``reference`` that names an entry's fullUrl (``urn:uuid:...``, or an absolute RESTful URL, whose
   ``Type/id`` tail is accepted too) is rewritten to ``Type/<assigned id>``. A ``urn:uuid:`` or
   ``urn:oid:`` reference that names no entry is an error: it can never resolve.
4. **Validation** of every entry's resource (after rewriting), each error reported at
   ``Bundle.entry[n].resource...``.
5. **Plan, then commit** through :class:`hub.adapters.fhir_intake.Intake`, in FHIR's processing order
   (POST before PUT before GET) and, within that, directory resources, then ServiceRequests, then the
   rest, so a referral's event precedes its Task's.

``transaction``: all or nothing. Steps 1-5 run for every entry before anything is written, and so does
every GET entry the writes cannot change (a resource the transaction does not write, or a version that
exists already; a vread of a version the transaction would write is refused, 422); any problem answers
one OperationOutcome naming the entry (422 for content, 400 for a malformed ``ifNoneExist``, or the
status of the first planning or reading error: 403, 404, 405, 409, 412) and writes nothing. Then every
event is written (each acknowledged by the broker) and every version stored in one database transaction,
then the GET entries of written resources are read; the answer is a ``transaction-response`` Bundle,
entries in request order. The broker has no transactions (Tansu), so a broker failure midway
answers 503 after some events were written; they are not stored, and the client's retry of the same
Bundle produces the same ids and ``ce_id`` values, which downstream de-duplicates.

``batch``: every entry on its own, in request order; each gets its own status (and an OperationOutcome
when it failed) in the ``batch-response``; entries may not refer to each other.
"""

from __future__ import annotations

import copy
import http
import re
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from hub.adapters.fhir_access import DIRECTORY_TYPES, SUPPORTED_TYPES, check_may_create
from hub.adapters.fhir_consent_reading import read_liberally, warning_issues
from hub.adapters.fhir_disclosure import Shown
from hub.adapters.fhir_intake import BundleContext, Intake, Planned, check_supported, parse_if_none_exist
from hub.adapters.fhir_store import StoredVersion, etag, instant
from hub.adapters.fhir_validation import (
    FhirIssue,
    FhirValidationError,
    rebase_issues,
    validate_bundle_structure,
    validate_resource,
)
from hub.adapters.operation_outcome import (
    AuthenticationRequired,
    Forbidden,
    ResourceNotFound,
    http_status_for,
    outcome,
    outcome_for,
)
from hub.consent.consent_reading import Normalization
from hub.errors import HubError, InvalidInput, NotAuthorized
from hub.ports import Principal

MAX_BUNDLE_ENTRIES = 100
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_VERSION = re.compile(r"[1-9][0-9]{0,8}")
_RESTFUL_URL = re.compile(r"https?://\S+/(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})")
_LOCAL_REFERENCE = ("urn:uuid:", "urn:oid:")
_METHOD_RANK = {"POST": 0, "PUT": 1, "GET": 2}


@dataclass
class EntrySpec:
    """One entry's request, read from the Bundle (before ids are assigned)."""

    index: int
    method: str
    resource_type: str
    full_url: str | None = None
    resource: dict[str, Any] | None = None
    url_id: str | None = None
    version_id: int | None = None
    if_none_exist: str | None = None
    resource_id: str = ""
    match: Shown | None = None
    model: Any = None
    notes: tuple[Normalization, ...] = ()
    """What a liberal reading of the resource (a Consent's) normalised, for the entry's ``response.outcome``."""

    @property
    def path(self) -> str:
        """The FHIRPath of this entry."""
        return f"Bundle.entry[{self.index}]"

    @property
    def rank(self) -> tuple[int, int, int]:
        """Processing order: method, then directory < ServiceRequest < the rest, then position."""
        kind = 0 if self.resource_type in DIRECTORY_TYPES else 1 if self.resource_type == "ServiceRequest" else 2
        return (_METHOD_RANK[self.method], kind, self.index)


def _issue(code: Any, path: str, message: str) -> FhirIssue:
    return FhirIssue(code, f"{path}: {message}", path)


async def process_bundle(principal: Principal, data: dict[str, Any], *, intake: Intake) -> dict[str, Any]:
    """Process a parsed ``transaction`` or ``batch`` Bundle; return the response Bundle (answered 200).

    Raises a ``HubError`` for a Bundle that is not acceptable as a whole (always for a transaction
    with any problem): nothing has been written then.
    """
    entries = _check_bundle(data)
    if data["type"] == "transaction":
        return await _transaction(principal, entries, intake=intake)
    return await _batch(principal, entries, intake=intake)


def _check_bundle(data: dict[str, Any]) -> list[Any]:
    """Steps 1: resourceType, type, the Bundle's own structure, the entry count."""
    if data.get("resourceType") != "Bundle":
        raise FhirValidationError(
            [_issue("invalid", "resourceType", "the FHIR base accepts only a transaction or batch Bundle")]
        )
    bundle_type = data.get("type")
    if bundle_type == "message":
        raise FhirValidationError(
            [_issue("not-supported", "Bundle.type", "a message Bundle goes to POST [base]/$process-message")]
        )
    validate_bundle_structure(data)
    entries = data.get("entry")
    if bundle_type not in {"transaction", "batch"}:
        raise FhirValidationError(
            [_issue("not-supported", "Bundle.type", "this server processes transaction and batch Bundles")]
        )
    found = entries if isinstance(entries, list) else []
    if len(found) > MAX_BUNDLE_ENTRIES:
        raise FhirValidationError(
            [_issue("too-costly", "Bundle.entry", f"at most {MAX_BUNDLE_ENTRIES} entries per Bundle")]
        )
    return found


def _spec(index: int, entry: dict[str, Any]) -> EntrySpec:
    """Step 2 for one entry (its structure was validated with the Bundle)."""
    path = f"Bundle.entry[{index}]"
    request = entry.get("request")
    if not isinstance(request, dict):
        raise FhirValidationError([_issue("required", f"{path}.request", "each entry needs a request")])
    method = request.get("method")
    if method not in _METHOD_RANK:
        raise FhirValidationError(
            [_issue("not-supported", f"{path}.request.method", "this server supports POST, PUT and GET entries")]
        )
    url = str(request.get("url", "")).strip().lstrip("/")
    if "?" in url or "://" in url or url.startswith(("$", "_")):
        raise FhirValidationError(
            [_issue("not-supported", f"{path}.request.url", "searches, operations and absolute URLs are not supported")]
        )
    parts = url.rstrip("/").split("/")
    resource_type = parts[0]
    spec = EntrySpec(index=index, method=method, resource_type=resource_type)
    full_url = entry.get("fullUrl")
    spec.full_url = full_url if isinstance(full_url, str) else None
    if resource_type not in SUPPORTED_TYPES:
        raise FhirValidationError(
            [_issue("not-supported", f"{path}.request.url", f"this server serves {', '.join(SUPPORTED_TYPES)}")]
        )
    shapes = {"POST": (1,), "PUT": (2,), "GET": (2, 4)}
    if len(parts) not in shapes[method] or (len(parts) >= 2 and not _ID.fullmatch(parts[1])) or (
        len(parts) == 4 and (parts[2] != "_history" or not _VERSION.fullmatch(parts[3]))
    ):
        expected = {"POST": "Type", "PUT": "Type/id", "GET": "Type/id or Type/id/_history/vid"}[method]
        raise FhirValidationError(
            [_issue("invalid", f"{path}.request.url", f"a {method} entry's url must be {expected}")]
        )
    if len(parts) == 4 and parts[2] == "_history":
        spec.url_id, spec.version_id = parts[1], int(parts[3])
    elif len(parts) >= 2:
        spec.url_id = parts[1]
    if_none_exist = request.get("ifNoneExist")
    if if_none_exist is not None:
        if method != "POST":
            raise FhirValidationError(
                [_issue("not-supported", f"{path}.request.ifNoneExist", "ifNoneExist applies to POST entries only")]
            )
        spec.if_none_exist = str(if_none_exist)
    if method == "GET":
        return spec
    resource = entry.get("resource")
    if not isinstance(resource, dict):
        raise FhirValidationError([_issue("required", f"{path}.resource", f"a {method} entry needs a resource")])
    if resource.get("resourceType") != resource_type:
        raise FhirValidationError(
            [_issue("invalid", f"{path}.resource.resourceType", "the resource's type differs from the request url")]
        )
    if method == "PUT" and resource.get("id") != spec.url_id:
        raise FhirValidationError(
            [_issue("invalid", f"{path}.resource.id", "a PUT entry's resource id must be the id in its url")]
        )
    spec.resource, spec.notes = read_liberally(resource_type, resource)
    return spec


def _specs(entries: Sequence[Any]) -> tuple[list[EntrySpec], list[FhirIssue]]:
    specs: list[EntrySpec] = []
    issues: list[FhirIssue] = []
    for index, entry in enumerate(entries):
        try:
            specs.append(_spec(index, entry))
        except FhirValidationError as error:
            issues.extend(error.issues)
    return specs, issues


def _assign_ids(specs: Sequence[EntrySpec], principal: Principal, intake: Intake) -> None:
    """Server ids of POST entries: keyed on the entry *and* on every entry of the request, so the same
    Bundle retried gets the same ids while the same entry text in another Bundle (template senders reuse
    fullUrl uuids whose references resolve to other resources) gets its own."""
    context = orjson.dumps(
        [(spec.resource_type, spec.method, spec.url_id, spec.resource) for spec in specs],
        option=orjson.OPT_SORT_KEYS,
    )
    for spec in specs:
        if spec.match is not None:
            spec.resource_id = spec.match.version.resource_id
        elif spec.method == "POST" and spec.resource is not None:
            canonical = orjson.dumps(spec.resource, option=orjson.OPT_SORT_KEYS)
            spec.resource_id = intake.new_id(
                principal, spec.resource_type, b"%d\x00" % spec.index + context + b"\x00" + canonical
            )
        else:
            spec.resource_id = spec.url_id or ""


def _targets(specs: Sequence[EntrySpec]) -> tuple[dict[str, str], list[FhirIssue]]:
    """fullUrl (and the ``Type/id`` tail of an absolute RESTful fullUrl) -> ``Type/<assigned id>``."""
    mapping: dict[str, str] = {}
    issues: list[FhirIssue] = []
    seen_full_urls: set[str] = set()
    touched: dict[tuple[str, str], int] = {}
    for spec in specs:
        if spec.method != "GET":
            key = (spec.resource_type, spec.resource_id)
            if key in touched:
                issues.append(
                    _issue("invalid", spec.path, f"touches the same resource as Bundle.entry[{touched[key]}]")
                )
            touched.setdefault(key, spec.index)
        if spec.full_url is None or spec.method == "GET":
            continue
        if spec.full_url in seen_full_urls:
            issues.append(_issue("invalid", f"{spec.path}.fullUrl", "another entry has the same fullUrl"))
            continue
        seen_full_urls.add(spec.full_url)
        target = f"{spec.resource_type}/{spec.resource_id}"
        mapping[spec.full_url] = target
        restful = _RESTFUL_URL.fullmatch(spec.full_url)
        if restful is not None and restful.group("type") == spec.resource_type:
            mapping.setdefault(f"{restful.group('type')}/{restful.group('id')}", target)
    return mapping, issues


def _rewrite(node: Any, mapping: dict[str, str], path: str) -> Iterator[FhirIssue]:
    """Rewrite, in place, every ``reference`` naming an entry; report local references that name none."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                if value in mapping:
                    node[key] = mapping[value]
                elif value.startswith(_LOCAL_REFERENCE):
                    yield _issue("invalid", f"{path}.reference", "names no entry of this Bundle (no matching fullUrl)")
            elif isinstance(value, dict | list):
                yield from _rewrite(value, mapping, f"{path}.{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _rewrite(item, mapping, f"{path}[{index}]")


def _validate(spec: EntrySpec) -> list[FhirIssue]:
    if spec.resource is None:
        return []
    try:
        spec.model = validate_resource(spec.resource, expected_type=spec.resource_type)
    except FhirValidationError as error:
        return rebase_issues(error.issues, spec.resource_type, f"{spec.path}.resource")
    return []


def _at_entry(error: HubError, spec: EntrySpec) -> HubError:
    """The same error, naming the entry it came from."""
    if isinstance(error, FhirValidationError):
        return FhirValidationError(rebase_issues(error.issues, spec.resource_type, f"{spec.path}.resource"))
    if isinstance(error, InvalidInput):
        rebased = copy.copy(error)
        rebased.args = (f"{spec.path}: {error}",)
        expression = error.expression or ""
        if expression.startswith("Bundle."):
            rebased.expression = expression
        elif expression.startswith(spec.resource_type):
            rebased.expression = f"{spec.path}.resource{expression[len(spec.resource_type):]}"
        else:
            rebased.expression = spec.path
        return rebased
    if isinstance(error, NotAuthorized) and not isinstance(error, AuthenticationRequired):
        return Forbidden(f"{spec.path}: {error}", expression=spec.path)
    return error


async def _plan(principal: Principal, spec: EntrySpec, intake: Intake, context: BundleContext) -> Planned | None:
    """Plan one POST or PUT entry (GET entries are read after the commit)."""
    if spec.match is not None:
        match = spec.match
        return Planned(spec.resource_type, match.version.resource_id, 200, existing=match.version, view=match)
    if spec.resource is None:
        return None
    event_body = orjson.dumps({**spec.resource, "id": spec.resource_id}).decode("utf-8")
    if spec.method == "POST":
        return await intake.plan_create(
            principal, spec.resource, spec.model, resource_id=spec.resource_id, event_body=event_body, context=context
        )
    return await intake.plan_update(
        principal, spec.resource, spec.model, resource_id=spec.resource_id, event_body=event_body, context=context
    )


async def _resolve_conditions(principal: Principal, specs: Sequence[EntrySpec], intake: Intake) -> None:
    for spec in specs:
        if spec.if_none_exist is None:
            continue
        try:
            check_may_create(principal)
            parse_if_none_exist(spec.if_none_exist)
            spec.match = await intake.conditional_match(principal, spec.resource_type, spec.if_none_exist)
        except HubError as error:
            raise _at_entry(_condition_error(error, spec), spec) from error


def _condition_error(error: HubError, spec: EntrySpec) -> HubError:
    if isinstance(error, InvalidInput) and error.expression is None:
        error.expression = f"{spec.path}.request.ifNoneExist"
    return error


def _local_patients(specs: Sequence[EntrySpec]) -> BundleContext:
    context = BundleContext()
    for spec in specs:
        if spec.resource_type == "Patient" and spec.model is not None:
            context.patients[f"Patient/{spec.resource_id}"] = spec.model
    return context


def _response_entry(
    status: int, version: StoredVersion | None, *, shown: Shown | None = None, spec: EntrySpec | None = None
) -> dict[str, Any]:
    """A response entry; ``shown`` (a read) carries the resource as the caller may see it; the notes of
    ``spec`` (the written entry) become its ``outcome``."""
    response: dict[str, Any] = {"status": f"{status} {http.HTTPStatus(status).phrase}"}
    entry: dict[str, Any] = {}
    if shown is not None:
        version = shown.version
    if version is not None:
        if status in {200, 201} and shown is None:
            response["location"] = f"{version.resource_type}/{version.resource_id}/_history/{version.version_id}"
        response["etag"] = etag(version)
        response["lastModified"] = instant(version)
        if shown is not None:
            entry["resource"] = shown.resource
    if spec is not None and spec.notes:
        response["outcome"] = outcome(warning_issues(spec.notes, at=f"{spec.path}.resource"))
    entry["response"] = response
    return entry


def _error_entry(error: HubError) -> dict[str, Any]:
    status = http_status_for(error)
    return {"response": {"status": f"{status} {http.HTTPStatus(status).phrase}", "outcome": outcome_for(error)}}


def _response_bundle(kind: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": kind, "entry": entries}


async def _transaction(principal: Principal, entries: Sequence[Any], *, intake: Intake) -> dict[str, Any]:
    specs, issues = _specs(entries)
    if issues:
        raise FhirValidationError(issues)
    await _resolve_conditions(principal, specs, intake)
    _assign_ids(specs, principal, intake)
    mapping, issues = _targets(specs)
    for spec in specs:
        if spec.resource is not None and spec.match is None:
            issues.extend(_rewrite(spec.resource, mapping, f"{spec.path}.resource"))
    if issues:
        raise FhirValidationError(issues)
    for spec in specs:
        if spec.match is None:
            issues.extend(_validate(spec))
    if issues:
        raise FhirValidationError(issues)
    context = _local_patients(specs)
    ordered = sorted(specs, key=lambda s: s.rank)
    plans: dict[int, Planned] = {}
    for spec in ordered:
        if spec.method == "GET":
            continue
        try:
            check_supported(spec.resource_type)
            planned = await _plan(principal, spec, intake, context)
        except HubError as error:
            raise _at_entry(error, spec) from error
        if planned is not None:
            plans[spec.index] = planned
    reads = await _read_before_writing(principal, ordered, plans.values(), intake)
    written = dict(zip(plans, await intake.commit([plans[i] for i in plans]), strict=True))
    by_index = {spec.index: spec for spec in specs}
    answers = {i: _response_entry(plans[i].status, written[i], spec=by_index[i]) for i in plans}
    for spec in ordered:
        if spec.method == "GET":
            shown = reads.get(spec.index)
            if shown is None:  # the newest version of a resource this transaction wrote: readable by its writer
                try:
                    shown = await intake.read(principal, spec.resource_type, spec.url_id or "", None)
                except HubError as error:
                    raise _at_entry(error, spec) from error
            answers[spec.index] = _response_entry(200, None, shown=shown)
    return _response_bundle("transaction-response", [answers[spec.index] for spec in specs])


async def _read_before_writing(
    principal: Principal, ordered: Sequence[EntrySpec], plans: Iterable[Planned], intake: Intake
) -> dict[int, Shown]:
    """Answer, before anything is written, every GET entry whose answer the writes cannot change (a resource
    the transaction does not write; a version that already exists), so a GET that finds nothing refuses the
    whole transaction. Left for after the writes: ``Type/id`` of a resource the transaction writes. A vread
    of a written resource's version that does not exist yet is refused (422)."""
    written = {(plan.resource_type, plan.resource_id) for plan in plans}
    reads: dict[int, Shown] = {}
    for spec in ordered:
        if spec.method != "GET":
            continue
        target = (spec.resource_type, spec.url_id or "")
        if target in written and spec.version_id is None:
            continue
        try:
            reads[spec.index] = await intake.read(principal, spec.resource_type, target[1], spec.version_id)
        except ResourceNotFound as error:
            if target not in written:
                raise _at_entry(error, spec) from error
            raise FhirValidationError([_issue(
                "not-supported", f"{spec.path}.request.url",
                "a GET entry reads with _history only versions that exist before the transaction; read the "
                "version this transaction writes with Type/id",
            )]) from error
        except HubError as error:
            raise _at_entry(error, spec) from error
    return reads


async def _batch(principal: Principal, entries: Sequence[Any], *, intake: Intake) -> dict[str, Any]:
    answers = []
    for index, entry in enumerate(entries):
        try:
            answers.append(await _batch_entry(principal, index, entry, intake=intake))
        except HubError as error:
            answers.append(_error_entry(error))
    return _response_bundle("batch-response", answers)


async def _batch_entry(
    principal: Principal, index: int, entry: Any, *, intake: Intake
) -> dict[str, Any]:
    spec = _spec(index, entry)
    if spec.method == "GET":
        try:
            shown = await intake.read(principal, spec.resource_type, spec.url_id or "", spec.version_id)
        except HubError as error:
            raise _at_entry(error, spec) from error
        return _response_entry(200, None, shown=shown)
    await _resolve_conditions(principal, [spec], intake)
    _assign_ids([spec], principal, intake)
    if spec.resource is not None and spec.match is None:
        issues = list(_rewrite(spec.resource, {}, f"{spec.path}.resource")) or _validate(spec)
        if issues:
            raise FhirValidationError(issues)
    try:
        planned = await _plan(principal, spec, intake, _local_patients([spec]))
        if planned is None:  # pragma: no cover - POST and PUT entries always carry a resource
            raise InvalidInput(f"{spec.path}: nothing to do", expression=spec.path)
        [version] = await intake.commit([planned])
    except HubError as error:
        raise _at_entry(error, spec) from error
    return _response_entry(planned.status, version, spec=spec)
