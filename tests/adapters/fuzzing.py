"""Shared pieces of the property tests: mutated JSON inputs and one app reused across thousands of examples.

Building a FastAPI app costs ~15 ms, a request through a built one ~1.5 ms, so the property tests
reuse one :class:`ReusableEdge` and :meth:`ReusableEdge.reset` its fakes before every example.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from fhir.resources.R4B.operationoutcome import OperationOutcome
from hypothesis import strategies as st

from tests.adapters.conftest import make_app
from tests.adapters.resource_fakes import FakeResourceStore
from tests.fakes import FakeIngressWriter

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["urn:uuid:00000000-0000-4000-8000-000000000000", "Patient/1", "", "in-progress", "#x"])
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)


def paths(value: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every path to a value inside ``value`` (dict keys and list indexes)."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            found.extend(paths(child, (*prefix, key)))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found.extend(paths(child, (*prefix, index)))
    return found


def _at(document: Any, path: tuple[str | int, ...]) -> Any:
    for part in path:
        document = document[part]
    return document


def mutate(document: Any, path: tuple[str | int, ...], replacement: Any, drop: bool) -> bytes:
    """``document`` with the value at ``path`` replaced (or dropped), as JSON bytes."""
    data: Any = copy.deepcopy(document)
    parent = data
    for part in path[:-1]:
        parent = parent[part]
    if drop:
        del parent[path[-1]]
    else:
        parent[path[-1]] = replacement
    return orjson.dumps(data)


def splice(body: bytes, offset: int, noise: bytes) -> bytes:
    """``body`` with ``noise`` written over it at ``offset`` (modulo its length)."""
    offset %= len(body)
    return body[:offset] + noise + body[offset + len(noise) :]


def mutations(document: Any) -> st.SearchStrategy[bytes]:
    """Inputs near ``document``: one text replaced by other text (often still valid), one value replaced by
    any JSON or dropped, bytes spliced, keys added, or noise."""
    body = orjson.dumps(document)
    where = st.sampled_from(paths(document))
    texts = [path for path in paths(document) if isinstance(_at(document, path), str)]
    return st.one_of(
        st.builds(mutate, st.just(document), st.sampled_from(texts), st.text(min_size=1, max_size=12), st.just(False)),
        st.builds(mutate, st.just(document), where, st.just(None), st.just(True)),
        st.builds(mutate, st.just(document), where, json_values, st.just(False)),
        st.builds(splice, st.just(body), st.integers(min_value=0), st.binary(min_size=1, max_size=8)),
        st.builds(
            lambda key, value: orjson.dumps({**document, key: value}),
            st.sampled_from(["contained", "extension", "meta", "id", "text", "_status", "identifier", "entry"]),
            json_values,
        ),
        st.binary(max_size=64),
        json_values.map(orjson.dumps),
    )


@dataclass
class ReusableEdge:
    """One app over fakes that are emptied before every example."""

    ingress: FakeIngressWriter = field(default_factory=FakeIngressWriter)
    store: FakeResourceStore = field(default_factory=FakeResourceStore)
    max_body_bytes: int = 256 * 1024

    def __post_init__(self) -> None:
        self.app = make_app(self.ingress, store=self.store, max_body_bytes=self.max_body_bytes)

    def reset(self, *, seed: FakeResourceStore | None = None) -> None:
        """Forget every write; optionally start from a copy of ``seed``'s resources."""
        self.ingress.written.clear()
        self.ingress.fail = False
        self.store.resources = copy.deepcopy(seed.resources) if seed else {}
        self.store.identifiers = copy.deepcopy(seed.identifiers) if seed else {}
        self.store.linked.clear()
        self.store.permitted.clear()
        self.store.saves = 0

    def client(self) -> httpx.AsyncClient:
        """An HTTP client on the app (cheap to make)."""
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://hub.test")

    def wrote_nothing(self, seed: FakeResourceStore | None = None) -> bool:
        """No event, no stored version beyond ``seed``'s, no patient link."""
        baseline = sum(len(v) for v in seed.resources.values()) if seed else 0
        return not self.ingress.written and len(self.store.all_versions()) == baseline and not self.store.linked


def assert_operation_outcome(response: httpx.Response) -> None:
    """The body is a valid R4 OperationOutcome served as FHIR JSON."""
    assert "application/fhir+json" == response.headers["content-type"]
    OperationOutcome.model_validate(response.json())
