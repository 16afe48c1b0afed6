"""Admin route showing the sharing policies in force (``GET /admin/v1/policies``), for a privacy officer.

Holds :func:`policies_json` (pure: ``Policies`` -> JSON) and :func:`build_policies_router`; the admin
router includes it, so its prefix ``/admin/v1`` and operator-token check apply. Read only: the policies
come from the settings (``HUB_CONSENT_DEFAULT``, ``HUB_SPECIFIC_CONSENT_LABELS``) and the default sharing
rules (``hub.consent.model.DEFAULT_SHARING_RULES``, ADR 0002); the hub must be restarted to change them.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from hub.consent.model import Policies


def policies_json(policies: Policies) -> dict[str, Any]:
    """The policies as a privacy officer reads them: default, sharing rules, labels, break-glass purposes."""
    return {
        "jurisdiction_default": policies.jurisdiction.value,
        "sharing_rules": [
            {
                "id": rule.id,
                "partner_kind": rule.partner_kind,
                "event_kinds": sorted(rule.event_kinds),
                "relationship": rule.relationship.value,
                "purposes": sorted(rule.purposes),
                "redaction_profile": rule.redaction_profile,
                "description": rule.description,
            }
            for rule in policies.rules
        ],
        "labels_needing_a_consent": sorted(policies.consent_labels),
        "labels_needing_a_consent_naming_the_recipient": sorted(policies.specific_labels),
        "break_glass_purposes": sorted(policies.break_glass_purposes),
        "break_glass_for_cbos": False,
    }


def build_policies_router(*, policies: Policies) -> APIRouter:
    """``GET /policies``; include it into the authenticated ``/admin/v1`` router."""
    router = APIRouter()
    shown = policies_json(policies)

    @router.get("/policies")
    async def show_policies() -> dict[str, Any]:
        """The sharing policies the consent engine applies (default deny where nothing permits)."""
        return shown

    return router
