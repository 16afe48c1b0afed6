"""The interim sharing rule of the walking skeleton (pure), until the consent engine replaces it.

A referral (ServiceRequest) is shared with the partner its ``performer`` names, for care
coordination; everything else is denied. Default deny: a missing fact never permits.
"""

from __future__ import annotations

from hub.consent.decision import Decision, Recipient, Verdict
from hub.events import RoutingFacts

RULE_ADDRESSED_PERFORMER = "interim.referral-addressed-performer"
RULE_DEFAULT_DENY = "interim.default-deny"
PURPOSE_CARE_COORDINATION = "CAREMGT"


def decide(facts: RoutingFacts, recipient: Recipient) -> Decision:
    """Permit only a referral's addressed performer; deny everything else, with the reason."""
    if facts.resource_type == "ServiceRequest" and recipient.organization in facts.performers:
        return Decision(
            verdict=Verdict.PERMIT,
            rule=RULE_ADDRESSED_PERFORMER,
            reason=f"the referral names {recipient.organization} as its performer",
            purpose=PURPOSE_CARE_COORDINATION,
        )
    if facts.resource_type != "ServiceRequest":
        why = f"the interim rule shares only referrals, and this is a {facts.resource_type}"
    else:
        why = f"the referral does not name {recipient.organization} as its performer"
    return Decision(
        verdict=Verdict.DENY,
        rule=RULE_DEFAULT_DENY,
        reason=f"nothing permits sharing with partner {recipient.partner_id}: {why}",
        purpose=PURPOSE_CARE_COORDINATION,
    )
