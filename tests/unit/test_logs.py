"""The PHI-stripping log processor keeps only allow-listed keys."""

from __future__ import annotations

from hub.logs import REDACTED, strip_phi


def test_values_of_unknown_keys_are_redacted_and_safe_keys_kept() -> None:
    out = strip_phi(None, "info", {"event": "x", "event_id": "e1", "patient": "Jane Doe", "body": "{...}"})
    assert {"event": "x", "event_id": "e1", "patient": REDACTED, "body": REDACTED} == dict(out)
