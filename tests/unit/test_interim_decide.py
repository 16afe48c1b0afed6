"""Truth table of the interim sharing rule: permit only a referral's addressed performer."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.consent.decision import Recipient, Verdict
from hub.consent.interim import RULE_ADDRESSED_PERFORMER, RULE_DEFAULT_DENY, decide
from hub.events import RoutingFacts

CBO = Recipient(partner_id="cbo-a", kind="cbo", organization="Organization/cbo-a")


@pytest.mark.parametrize(
    ("resource_type", "performers", "verdict", "rule"),
    [
        ("ServiceRequest", ("Organization/cbo-a",), Verdict.PERMIT, RULE_ADDRESSED_PERFORMER),
        ("ServiceRequest", ("Organization/x", "Organization/cbo-a"), Verdict.PERMIT, RULE_ADDRESSED_PERFORMER),
        ("ServiceRequest", ("Organization/cbo-b",), Verdict.DENY, RULE_DEFAULT_DENY),
        ("ServiceRequest", (), Verdict.DENY, RULE_DEFAULT_DENY),
        ("ServiceRequest", ("organization/cbo-a",), Verdict.DENY, RULE_DEFAULT_DENY),
        ("Encounter", ("Organization/cbo-a",), Verdict.DENY, RULE_DEFAULT_DENY),
        ("Task", ("Organization/cbo-a",), Verdict.DENY, RULE_DEFAULT_DENY),
    ],
)
def test_interim_rule_truth_table(resource_type: str, performers: tuple[str, ...], verdict: Verdict,
                                  rule: str) -> None:
    facts = RoutingFacts(resource_type=resource_type, sender="h", performers=performers)
    decision = decide(facts, CBO)
    assert (verdict, rule) == (decision.verdict, decision.rule)
    assert decision.reason


@given(
    resource_type=st.sampled_from(["ServiceRequest", "Encounter", "Task", "Patient"]),
    performers=st.lists(st.text(max_size=30), max_size=4),
    organization=st.text(min_size=1, max_size=30),
)
def test_no_permit_unless_the_referral_names_the_recipient(resource_type: str, performers: list[str],
                                                            organization: str) -> None:
    facts = RoutingFacts(resource_type=resource_type, sender="h", performers=tuple(performers))
    recipient = Recipient(partner_id="p", kind="cbo", organization=organization)
    decision = decide(facts, recipient)
    assert (resource_type == "ServiceRequest" and organization in performers) == decision.permitted
    assert decision == decide(facts, recipient)
