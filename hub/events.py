"""The canonical event: a CloudEvents 1.0 envelope (Kafka binary mode) plus routing facts.

Values only, no I/O. The edge extracts the routing facts once; the original FHIR JSON text
travels untouched in ``HubEvent.body`` so no internal stage ever re-validates it.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

import orjson
from pydantic import BaseModel, ConfigDict, Field

from hub.errors import InvalidInput

SPEC_VERSION = "1.0"
#: Namespace for deterministic event ids (uuid5), so a retried input keeps its ``ce_id``.
EVENT_NAMESPACE = uuid.UUID("6f1c0e7a-5b0f-4d55-9a53-6c1a2f0c4e11")

FHIR_JSON = "application/fhir+json"
HUB_EVENT_JSON = "application/vnd.carehub.event+json"


class RoutingFacts(BaseModel):
    """What routing and consent need to know, extracted once at the edge."""

    model_config = ConfigDict(frozen=True)

    resource_type: str
    resource_id: str | None = None
    sender: str = Field(description="Partner id of the sender (authenticated at the edge).")
    patient_source: str | None = Field(
        default=None,
        description="The patient as the sender names it: 'system|value' identifier or 'Patient/123'.",
    )
    hub_patient_id: str | None = Field(default=None, description="Filled in by the normalize stage.")
    requester: str | None = None
    performers: tuple[str, ...] = ()
    categories: tuple[str, ...] = Field(default=(), description="'system|code' of category codings.")
    codes: tuple[str, ...] = Field(default=(), description="'system|code' of the resource's main code.")
    security_labels: tuple[str, ...] = Field(default=(), description="'system|code' of meta.security.")
    status: str | None = None
    intent: str | None = None
    event_kind: str | None = Field(
        default=None,
        description="What happened: referral, task-update, admit, discharge, transfer, encounter-update, ...",
    )
    focus: tuple[str, ...] = Field(default=(), description="References the resource is about (Task.focus).")
    encounter_class: str | None = Field(default=None, description="'system|code' of Encounter.class.")


class HubEvent(BaseModel):
    """The value on ``hub.ingress`` and ``hub.events``: routing facts plus the original FHIR JSON text."""

    model_config = ConfigDict(frozen=True)

    facts: RoutingFacts
    body: str = Field(description="The FHIR R4 JSON text: byte for byte as received, or mapped at the edge.")
    original: str | None = Field(
        default=None,
        description="The input as received when ``body`` was mapped from another format (e.g. HL7 v2 text).",
    )
    original_media_type: str | None = Field(default=None, description="Media type of ``original``.")


class CloudEvent(BaseModel):
    """CloudEvents 1.0 context attributes, carried as ``ce_*`` Kafka headers (binary mode)."""

    model_config = ConfigDict(frozen=True)

    id: str
    source: str
    type: str
    subject: str | None = None
    time: datetime
    datacontenttype: str = HUB_EVENT_JSON
    sequence: int | None = Field(default=None, description="Per-recipient event number (partner topics).")

    def to_headers(self) -> dict[str, str]:
        """Kafka binary-mode headers: ``ce_<attr>`` plus ``content-type``."""
        headers = {
            "ce_specversion": SPEC_VERSION,
            "ce_id": self.id,
            "ce_source": self.source,
            "ce_type": self.type,
            "ce_time": self.time.isoformat(),
            "content-type": self.datacontenttype,
        }
        if self.subject is not None:
            headers["ce_subject"] = self.subject
        if self.sequence is not None:
            headers["ce_sequence"] = str(self.sequence)
        return headers

    @classmethod
    def from_headers(cls, headers: Mapping[str, str | bytes] | Iterable[tuple[str, bytes]]) -> CloudEvent:
        """Read the attributes back from Kafka headers; raises ``InvalidInput`` when required ones miss."""
        pairs = headers.items() if isinstance(headers, Mapping) else headers
        found: dict[str, str] = {}
        for name, raw in pairs:
            value = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
            if name.startswith("ce_"):
                found[name[3:]] = value
            elif name == "content-type":
                found["datacontenttype"] = value
        if found.get("specversion") != SPEC_VERSION:
            raise InvalidInput("missing or unsupported ce_specversion header", expression="ce_specversion")
        for required in ("id", "source", "type", "time"):
            if required not in found:
                raise InvalidInput(f"missing ce_{required} header", expression=f"ce_{required}")
        return cls.model_validate(
            {key: found[key] for key in cls.model_fields if key in found},
        )

    def with_sequence(self, sequence: int, *, datacontenttype: str) -> CloudEvent:
        """A copy for one recipient, numbered on that recipient's topic."""
        return self.model_copy(update={"sequence": sequence, "datacontenttype": datacontenttype})


def event_id(sender: str, kind: str, content: bytes) -> str:
    """A deterministic event id: the same sender submitting the same bytes gets the same ``ce_id``."""
    digest = hashlib.sha256(content).hexdigest()
    return str(uuid.uuid5(EVENT_NAMESPACE, f"{sender}\x1f{kind}\x1f{digest}"))


def now() -> datetime:
    """Current UTC time (one place, so tests can reason about it)."""
    return datetime.now(UTC)


def encode(event: HubEvent) -> bytes:
    """Serialise a HubEvent for Kafka."""
    return orjson.dumps(event.model_dump(mode="json"))


def decode(value: bytes) -> HubEvent:
    """Parse a HubEvent from Kafka; raises ``pydantic.ValidationError`` on a malformed value."""
    return HubEvent.model_validate_json(value)


def event_type(resource_type: str, action: str = "submitted") -> str:
    """The ``ce_type`` for a FHIR resource event, e.g. ``org.carehub.servicerequest.submitted``."""
    return f"org.carehub.{resource_type.lower()}.{action}"


def keyed_by_patient(ce: CloudEvent, event: HubEvent, hub_patient_id: str) -> tuple[bytes, bytes, dict[str, str]]:
    """The ``hub.events`` record of an event whose patient resolved to ``hub_patient_id``: key, value and
    headers (``ce_subject`` ``Patient/<id>``); the body, original and event id travel untouched."""
    normalized = HubEvent(
        facts=event.facts.model_copy(update={"hub_patient_id": hub_patient_id}),
        body=event.body,
        original=event.original,
        original_media_type=event.original_media_type,
    )
    headers = ce.model_copy(update={"subject": f"Patient/{hub_patient_id}"}).to_headers()
    return hub_patient_id.encode(), encode(normalized), headers
