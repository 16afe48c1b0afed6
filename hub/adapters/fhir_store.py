"""The FHIR edge's port on the resource store, and the pure helpers that turn stored versions into FHIR JSON.

The port (:class:`ResourceStore`) is implemented on the control plane by
``hub.control.resources.SqlResourceStore`` and faked in memory in the adapter tests. The value objects
it speaks (``StoredVersion``, ``NewVersion``, ``Saved``) are the control plane's, as the pipeline's
ports use its ``DecisionRecord``: plain frozen dataclasses, no I/O.

Stored content carries the resource as accepted, with the server's ``id`` and without
``meta.versionId``/``meta.lastUpdated``; :func:`render` puts those two back from the version's columns,
so what a client reads is always consistent with the ``ETag`` and ``Last-Modified`` it gets.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC
from typing import Any, Protocol

import orjson

from hub.control.resources import NewVersion, Saved, StoredVersion

__all__ = [
    "NewVersion",
    "ResourceStore",
    "Saved",
    "StoredVersion",
    "etag",
    "instant",
    "render",
    "stored_content",
]


class ResourceStore(Protocol):
    """Versioned FHIR resources, their identifiers, and what the audit says was delivered to whom."""

    async def versions(self, resource_type: str, resource_id: str) -> list[StoredVersion]:
        """Every version of the resource, oldest first; empty when unknown."""
        ...

    async def find_by_identifier(self, resource_type: str, system: str | None, value: str) -> list[StoredVersion]:
        """Current versions of ``resource_type`` with an identifier matching ``system|value``."""
        ...

    async def save(self, writes: Sequence[NewVersion]) -> list[Saved]:
        """Store the writes atomically; content equal to the current version writes nothing."""
        ...

    async def link_patients(self, groups: Sequence[Sequence[str]]) -> None:
        """Link each group of crosswalk sources (one patient's identifiers) to one hub patient id."""
        ...

    async def knows_patient(self, sender: str, source: str) -> bool:
        """Whether ``sender`` names this patient in its own namespace or already sent a resource about it."""
        ...

    async def about_patient(self, resource_type: str, source: str) -> list[StoredVersion]:
        """Current versions of ``resource_type`` about the patient ``source`` names (through the crosswalk)."""
        ...

    async def delivered(self, recipient_id: str, event_ids: Sequence[str]) -> frozenset[str]:
        """The events among ``event_ids`` that were permitted to ``recipient_id``."""
        ...


def stored_content(data: dict[str, Any], resource_id: str) -> str:
    """The JSON text to store: ``resourceType``, the server's ``id``, ``meta`` without ``versionId`` and
    ``lastUpdated`` (dropped when nothing else is left), then every other element as sent, in order."""
    meta = {k: v for k, v in (data.get("meta") or {}).items() if k not in {"versionId", "lastUpdated"}}
    rest = {key: value for key, value in data.items() if key not in {"resourceType", "id", "meta"}}
    stored: dict[str, Any] = {"resourceType": data["resourceType"], "id": resource_id}
    if meta:
        stored["meta"] = meta
    stored.update(rest)
    return orjson.dumps(stored).decode("utf-8")


def instant(version: StoredVersion) -> str:
    """``last_updated`` as a FHIR instant in UTC with milliseconds (``2026-11-24T10:00:00.123Z``)."""
    moment = version.last_updated.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def etag(version: StoredVersion) -> str:
    """The weak ETag FHIR uses for a version: ``W/"3"``."""
    return f'W/"{version.version_id}"'


def render(version: StoredVersion) -> dict[str, Any]:
    """The resource as a client reads it: stored content plus ``meta.versionId`` and ``meta.lastUpdated``."""
    data: dict[str, Any] = orjson.loads(version.content)
    meta = {"versionId": str(version.version_id), "lastUpdated": instant(version), **(data.get("meta") or {})}
    rest = {key: value for key, value in data.items() if key not in {"resourceType", "id", "meta"}}
    return {"resourceType": data["resourceType"], "id": data["id"], "meta": meta, **rest}
