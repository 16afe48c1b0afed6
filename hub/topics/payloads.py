"""Payload models of the topics that do not carry a ``HubEvent`` (documentation of the contract)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class PartnerResource(BaseModel):
    """A FHIR R4 resource as JSON (``application/fhir+json``), as the receiving partner may see it."""

    model_config = ConfigDict(extra="allow")

    resourceType: str = Field(description="FHIR resource type, e.g. ServiceRequest.")  # noqa: N815
    id: str | None = None


class DeadLetter(BaseModel):
    """A dead-lettered record: the value is the original bytes; these are its ``hub_dlq_*`` headers."""

    reason: str = Field(description="Why no stage could process it (never contains PHI).")
    stage: str = Field(description="The stage that gave up, e.g. normalize or route.")
    source_topic: str
    source_partition: int
    source_offset: int
