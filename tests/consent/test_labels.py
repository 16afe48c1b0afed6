"""DS4P labels: canonical forms, the code table, R from sensitivity, and the label hierarchy."""

from __future__ import annotations

import pytest

from hub.consent import labels as lbl
from tests.consent.helpers import FOOD_PANTRY, referral

ICD = "http://hl7.org/fhir/sid/icd-10-cm"
SCT = "http://snomed.info/sct"


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("http://terminology.hl7.org/CodeSystem/v3-Confidentiality|R", lbl.R),
        ("http://hl7.org/fhir/v3/Confidentiality|R", lbl.R),
        ("urn:oid:2.16.840.1.113883.5.25|V", lbl.V),
        ("|R", lbl.R),
        ("R", lbl.R),
        ("http://hl7.org/fhir/v3/ActCode|PSY", lbl.PSY),
        ("http://terminology.hl7.org/ValueSet/v3-InformationSensitivityPolicy|ETHUD", lbl.ETHUD),
        ("|SUD", lbl.SUD),
        ("|42CFRPart2", lbl.PART2_BASIS),
        ("http://example.org/labels|R", "http://example.org/labels|R"),
        ("|XYZ", "|XYZ"),
    ],
)
def test_labels_are_canonicalised(written: str, canonical: str) -> None:
    """Legacy URIs, OIDs, value-set URLs and system-less known codes map to the terminology.hl7.org form."""
    assert canonical == lbl.normalize_label(written)


@pytest.mark.parametrize(
    ("codes", "labels"),
    [
        pytest.param((f"{ICD}|F11.20",), {lbl.SUD, lbl.OPIOIDUD, lbl.R}, id="opioid dependence"),
        pytest.param((f"{ICD}|F1120",), {lbl.SUD, lbl.OPIOIDUD, lbl.R}, id="without the dot"),
        pytest.param((f"{ICD}|f10.10",), {lbl.SUD, lbl.ETHUD, lbl.R}, id="alcohol, lower case"),
        pytest.param(("http://hl7.org/fhir/sid/icd-10|F19.1",), {lbl.SUD, lbl.R}, id="LEAP fixture F19.1"),
        pytest.param((f"{ICD}|F17.210",), set(), id="nicotine is not Part 2"),
        pytest.param((f"{ICD}|F32.9",), set(), id="depression is not labelled"),
        pytest.param((f"{ICD}|F20.9",), {lbl.PSY, lbl.R}, id="schizophrenia"),
        pytest.param((f"{ICD}|B20",), {lbl.HIV, lbl.R}, id="HIV disease"),
        pytest.param(("urn:oid:2.16.840.1.113883.6.90|Z21",), {lbl.HIV, lbl.R}, id="HIV status by OID"),
        pytest.param((f"{SCT}|724713006",), {lbl.SUD, lbl.R}, id="ketamine (LEAP fixture)"),
        pytest.param((f"{SCT}|145121000119106",), {lbl.SUD, lbl.OPIOIDUD, lbl.R}, id="IV opioid (LEAP fixture)"),
        pytest.param(("urn:oid:2.16.840.1.113883.6.285|H0010",), {lbl.SUD, lbl.R}, id="detox (HCPCS)"),
        pytest.param(("http://www.ama-assn.org/go/cpt|86703",), {lbl.HIV, lbl.R}, id="HIV antibody test"),
        pytest.param((f"{SCT}|86406008",), {lbl.HIV, lbl.R}, id="HIV infection"),
        pytest.param((FOOD_PANTRY,), set(), id="a food pantry referral"),
        pytest.param(("http://loinc.org|F11.20",), set(), id="an ICD-looking code in another system"),
    ],
)
def test_codes_imply_sensitivity_and_sensitivity_implies_restricted(codes: tuple[str, ...], labels: set[str]) -> None:
    """The rule table labels unlabelled payloads from their codes, and any sensitivity adds R (as LEAP does)."""
    assert frozenset(labels) == lbl.effective_labels(referral(codes=codes))


def test_category_codings_are_read_too() -> None:
    """Category codings feed the table like the main code."""
    facts = referral(codes=()).model_copy(update={"categories": (f"{ICD}|F11.20",)})
    assert lbl.SUD in lbl.effective_labels(facts)


def test_code_labels_are_added_to_the_payload_labels() -> None:
    """A payload labelled N whose code says SUD carries both (adding labels only makes decisions stricter)."""
    facts = referral(labels=("http://hl7.org/fhir/v3/Confidentiality|N",), codes=(f"{ICD}|F11.20",))
    assert frozenset({lbl.N, lbl.SUD, lbl.OPIOIDUD, lbl.R}) == lbl.effective_labels(facts)


def test_inline_labels_make_the_payload_restricted() -> None:
    """PROCESSINLINELABEL means element-level labels the facts cannot see: the whole payload counts as R."""
    assert frozenset({lbl.PROCESS_INLINE_LABEL, lbl.R}) == lbl.effective_labels(
        referral(labels=(lbl.PROCESS_INLINE_LABEL,), codes=())
    )


def test_a_jurisdiction_can_bring_its_own_table() -> None:
    """Custom rules replace the default table."""
    rules = lbl.LabelRules(
        rules=(
            lbl.LabelRule(
                "depression", "Depressive episode", (lbl.PSY,), frozenset({ICD}), icd10_categories=frozenset({"F32"})
            ),
        ),
    )
    assert frozenset({lbl.PSY, lbl.R}) == lbl.effective_labels(referral(codes=(f"{ICD}|F32.9",)), rules)
    assert frozenset() == lbl.effective_labels(referral(codes=(f"{ICD}|F11.20",)), rules)


@pytest.mark.parametrize(
    ("provision", "data", "deny_covers", "permit_covers"),
    [
        pytest.param(lbl.R, lbl.R, True, True, id="R covers R"),
        pytest.param(lbl.R, lbl.V, True, False, id="a deny on R covers V; a permit on R does not"),
        pytest.param(lbl.V, lbl.R, False, False, id="V does not cover R"),
        pytest.param(lbl.N, lbl.R, True, False, id="a deny on N covers everything above"),
        pytest.param(lbl.SUD, lbl.OPIOIDUD, True, True, id="SUD covers its members"),
        pytest.param(lbl.ETH, lbl.SUD, True, True, id="ETH is SUD's older umbrella"),
        pytest.param(lbl.PART2_BASIS, lbl.ETHUD, True, True, id="the 42CFRPart2 basis covers the family"),
        pytest.param(lbl.ETHUD, lbl.SUD, False, False, id="a member does not cover the umbrella"),
        pytest.param(lbl.PSY, lbl.PSYTHPN, True, False, id="a permit on PSY does not release psychotherapy notes"),
        pytest.param(lbl.HIV, lbl.SUD, False, False, id="unrelated labels"),
    ],
)
def test_the_label_hierarchy(provision: str, data: str, deny_covers: bool, permit_covers: bool) -> None:
    """Denies read labels widely (levels above, family members), permits narrowly."""
    assert (deny_covers, permit_covers) == (data in lbl.deny_scope([provision]), data in lbl.permit_scope([provision]))


def test_security_labels_from_meta_carry_the_ds4p_basis() -> None:
    """The edge helper keeps meta.security codes and adds each label's basis (e.g. 42CFRPart2)."""
    resource = {
        "resourceType": "Observation",
        "meta": {
            "security": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
                    "code": "R",
                    "extension": [
                        {
                            "url": lbl.SEC_LABEL_BASIS_URL,
                            "valueCoding": {"system": lbl.ACT_CODE_SYSTEM, "code": "42CFRPart2"},
                        },
                    ],
                },
                {"code": "N"},
                "not a coding",
            ],
        },
    }
    assert (lbl.R, lbl.PART2_BASIS, "|N") == lbl.security_labels_from_meta(resource)
    assert () == lbl.security_labels_from_meta({"resourceType": "Patient"})
