"""Partner registry: creation, bearer-token authentication, uniqueness, validation, look-ups."""

# Asserts put the expected value first (assert expected == actual); SIM300 would flip them.

from __future__ import annotations

import hashlib
from datetime import UTC, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from hub.control.partners import (
    PartnerExists,
    authenticate,
    create_partner,
    find_by_organization,
    get_partner,
    list_partners,
    set_partner_active,
    validate_partner_fields,
)
from hub.control.sqltypes import utc_now
from hub.errors import InvalidInput
from tests.control.helpers import fetch_all

VALID = {"id": "st-mary", "kind": "hospital", "name": "St. Mary", "organization": "Organization/st-mary"}


async def test_a_created_partner_authenticates_with_its_token(session: AsyncSession) -> None:
    partner, token = await create_partner(session, **VALID)
    assert partner == await authenticate(session, token)


async def test_a_created_partner_is_returned_with_its_fields_and_a_chp_token(session: AsyncSession) -> None:
    before = utc_now()
    partner, token = await create_partner(session, **VALID)
    assert (VALID["id"], "hospital", "St. Mary", "Organization/st-mary", True) == (
        partner.id,
        partner.kind,
        partner.name,
        partner.organization,
        partner.active,
    )
    assert token.startswith("chp_")
    assert len(token) >= 4 + 43
    assert before - timedelta(seconds=1) <= partner.created_at <= utc_now()


async def test_every_partner_gets_a_different_token(session: AsyncSession) -> None:
    _, first = await create_partner(session, **VALID)
    _, second = await create_partner(
        session, id="food-bank", kind="cbo", name="Food Bank", organization="urn:ietf:rfc:3986|food"
    )
    assert first != second


async def test_a_wrong_token_does_not_authenticate(session: AsyncSession) -> None:
    _, token = await create_partner(session, **VALID)
    assert await authenticate(session, token + "x") is None
    assert await authenticate(session, "") is None
    assert await authenticate(session, "chp_" + "A" * 43) is None


async def test_a_deactivated_partner_does_not_authenticate(session: AsyncSession) -> None:
    _, token = await create_partner(session, **VALID)
    updated = await set_partner_active(session, VALID["id"], False)
    assert updated is not None
    assert updated.active is False
    assert await authenticate(session, token) is None


async def test_the_token_is_stored_only_as_its_sha256(session: AsyncSession) -> None:
    _, token = await create_partner(session, **VALID)
    rows = await fetch_all(session, "SELECT * FROM partners")
    assert 1 == len(rows)
    stored = rows[0]
    assert hashlib.sha256(token.encode()).hexdigest() == stored["token_hash"]
    assert all(token not in str(value) for value in stored.values())
    assert all(token[4:20] not in str(value) for value in stored.values())


async def test_a_duplicate_id_is_refused_and_names_the_field(session: AsyncSession) -> None:
    await create_partner(session, **VALID)
    with pytest.raises(PartnerExists) as caught:
        await create_partner(session, **{**VALID, "organization": "Organization/other"})
    assert "id" == caught.value.field
    assert "a partner with this id is already registered" == str(caught.value)


async def test_a_duplicate_organization_is_refused_and_names_the_field(session: AsyncSession) -> None:
    await create_partner(session, **VALID)
    with pytest.raises(PartnerExists) as caught:
        await create_partner(session, **{**VALID, "id": "st-mary-2"})
    assert "organization" == caught.value.field
    assert [{"id": "st-mary"}] == await fetch_all(session, "SELECT id FROM partners")


async def test_invalid_fields_store_nothing(session: AsyncSession) -> None:
    with pytest.raises(InvalidInput):
        await create_partner(session, **{**VALID, "id": "Not Valid"})
    assert [] == await fetch_all(session, "SELECT id FROM partners")


async def test_get_partner_finds_by_id_and_returns_none_for_unknown_ids(session: AsyncSession) -> None:
    partner, _ = await create_partner(session, **VALID)
    assert partner == await get_partner(session, VALID["id"])
    assert await get_partner(session, "unknown") is None


async def test_created_at_reads_back_timezone_aware_in_utc(session: AsyncSession) -> None:
    partner, _ = await create_partner(session, **VALID)
    stored = await get_partner(session, partner.id)
    assert stored is not None
    assert UTC == stored.created_at.tzinfo
    assert partner.created_at == stored.created_at


async def test_list_partners_is_ordered_by_id_and_filters_by_kind(session: AsyncSession) -> None:
    await create_partner(session, id="zeta", kind="cbo", name="Zeta", organization="http://cbo.example|z")
    await create_partner(session, id="alpha", kind="hospital", name="Alpha", organization="Organization/a")
    await create_partner(session, id="mid", kind="cbo", name="Mid", organization="Organization/m")
    assert ["alpha", "mid", "zeta"] == [p.id for p in await list_partners(session)]
    assert ["mid", "zeta"] == [p.id for p in await list_partners(session, kind="cbo")]
    assert ["alpha"] == [p.id for p in await list_partners(session, kind="hospital")]


async def test_find_by_organization_matches_the_stored_string_exactly(session: AsyncSession) -> None:
    partner, _ = await create_partner(session, **{**VALID, "organization": "http://nppes.example|1234567893"})
    assert partner == await find_by_organization(session, "http://nppes.example|1234567893")
    assert await find_by_organization(session, "http://nppes.example|123456789") is None
    assert await find_by_organization(session, "Organization/1234567893") is None


async def test_to_public_is_json_ready_and_has_no_credential(session: AsyncSession) -> None:
    partner, _ = await create_partner(session, **VALID)
    assert {
        "id": "st-mary",
        "kind": "hospital",
        "name": "St. Mary",
        "organization": "Organization/st-mary",
        "active": True,
        "created_at": partner.created_at.isoformat(),
    } == partner.to_public()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("id", ""),
        ("id", "-leading-dash"),
        ("id", "UPPER"),
        ("id", "under_score"),
        ("id", "dot.ted"),
        ("id", "a" * 64),
        ("id", "trailing-newline\n"),
        ("kind", "clinic"),
        ("kind", "Hospital"),
        ("name", ""),
        ("name", "   "),
        ("name", "x" * 201),
        ("name", "two\nlines"),
        ("organization", ""),
        ("organization", "Organization/"),
        ("organization", "Organization/has space"),
        ("organization", "Patient/123"),
        ("organization", "just-a-name"),
        ("organization", "|value-without-system"),
        ("organization", "system-without-value|"),
        ("organization", "a|b|c"),
        ("organization", "sys tem|value"),
        ("organization", "http://x.example|" + "v" * 600),
        ("id", "operator"),  # reserved: the sender of the operator's own writes
    ],
)
def test_validate_partner_fields_rejects_the_invalid_field(field: str, value: str) -> None:
    fields = {**VALID, field: value}
    with pytest.raises(InvalidInput) as caught:
        validate_partner_fields(**fields)
    assert field == caught.value.expression


@pytest.mark.parametrize(
    "fields",
    [
        VALID,
        {**VALID, "id": "a"},
        {**VALID, "id": "9" + "z" * 62},
        {**VALID, "kind": "cbo"},
        {**VALID, "organization": "Organization/abc.DEF-1"},
        {**VALID, "organization": "http://hl7.org/fhir/sid/us-npi|1234567893"},
        {**VALID, "organization": "urn:oid:2.16.840.1.113883.4.6|value with space"},
    ],
)
def test_validate_partner_fields_accepts_valid_fields(fields: dict[str, str]) -> None:
    validate_partner_fields(**fields)


def test_an_invalid_id_message_explains_the_rule() -> None:
    with pytest.raises(InvalidInput, match=r"lowercase letters, digits and '-'.*partner\.<id>"):
        validate_partner_fields(**{**VALID, "id": "Bad_Id"})


@pytest.mark.parametrize(
    "organization",
    [
        "Organization/st-mary",
        "HealthcareService/food-pantry-1",
        "PractitionerRole/chw.7",
        "Practitioner/example",
        "CareTeam/ct1",
        "https://fhir.example.org/r4/Practitioner/76597",
        "http://hl7.org/fhir/sid/us-npi|1234567893",
    ],
)
def test_a_partner_may_be_named_by_any_performer_reference_or_an_identifier(organization: str) -> None:
    """Referrals name performers as Organization, HealthcareService, PractitionerRole, Practitioner or CareTeam."""
    try:
        validate_partner_fields("p-1", "cbo", "Name", organization)
    except InvalidInput as refused:
        pytest.fail(f"{organization!r} was refused: {refused}")
