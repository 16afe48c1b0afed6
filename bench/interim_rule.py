"""BENCH ONLY - the walking skeleton's interim sharing rule, kept as a baseline for ``bench.decide``.

**This is not hub code and nothing in ``hub/`` may import it.** It is the pure ``decide()`` of
``hub/consent/interim.py`` as it stood before commit 0f08976 ("Consent engine in the pipeline"), which
deleted it (recover the original with ``git show 0f08976^:hub/consent/interim.py``). The consent engine
(``hub.consent.engine``, ADR 0002) replaced it; the benchmark runs the pipeline once with each to show
what the engine costs.

The rule: a referral (ServiceRequest) is shared with the partner its ``performer`` names, for care
coordination; everything else is denied. No consent, policy, label, redaction or time is considered.

:func:`decide` is the original, verbatim. :func:`interim_decider` adapts it to the route stage's
``DecideFn`` (``facts, recipient, consents, at``), ignoring the consents and the time as the skeleton's
route stage did.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from hub.consent.decision import Decision, Recipient, Verdict
from hub.consent.model import Consent
from hub.events import RoutingFacts
from hub.pipeline.route import DecideFn

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


def interim_decider() -> DecideFn:
    """The interim rule as the route stage's decider (consents and event time ignored)."""

    def decide_interim(
        facts: RoutingFacts, recipient: Recipient, consents: Sequence[Consent], at: datetime
    ) -> Decision:
        del consents, at  # the interim rule never read them
        return decide(facts, recipient)

    return decide_interim
