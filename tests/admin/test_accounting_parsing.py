"""The accounting's pure parts: dates and times of the query, the six-year window, page sizes, cursors."""

# Asserts put the expected value first (assert expected == actual); SIM300 would flip them.

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.admin.accounting import (
    accounting_window,
    decode_cursor,
    encode_cursor,
    export_window,
    parse_instant,
    parse_limit,
    parse_verdict,
    years_before,
)
from hub.control.audit import AuditKey
from hub.errors import InvalidInput

NOW = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)


def test_six_years_before_a_leap_day_is_the_28th_of_february() -> None:
    assert datetime(2018, 2, 28, 12, tzinfo=UTC) == years_before(datetime(2024, 2, 29, 12, tzinfo=UTC), 6)
    assert datetime(2020, 11, 24, 9, 30, tzinfo=UTC) == years_before(NOW, 6)


@pytest.mark.parametrize(
    ("text", "end_of_day", "expected"),
    [
        ("2024-05-01", False, datetime(2024, 5, 1, tzinfo=UTC)),
        ("2024-05-01", True, datetime(2024, 5, 2, tzinfo=UTC)),
        ("2024-05-01T08:00:00Z", True, datetime(2024, 5, 1, 8, tzinfo=UTC)),
        ("2024-05-01T08:00:00-05:00", False, datetime(2024, 5, 1, 13, tzinfo=UTC)),
        (" 2024-05-01T08:00:00.5+00:00 ", False, datetime(2024, 5, 1, 8, 0, 0, 500000, tzinfo=UTC)),
    ],
)
def test_a_query_date_is_a_utc_day_and_a_time_keeps_its_offset(text: str, end_of_day: bool, expected: datetime) -> None:
    moment = parse_instant("since", text, end_of_day=end_of_day)
    assert expected == moment
    assert UTC == moment.tzinfo


@pytest.mark.parametrize("text", ["2024-05-01T08:00:00", "2024-02-30", "05/01/2024", "", "now"])
def test_an_ambiguous_or_malformed_time_is_refused_naming_the_parameter(text: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_instant("until", text)
    assert "until" == caught.value.expression


def test_the_default_window_is_the_six_years_before_now() -> None:
    window = accounting_window(None, None, now=NOW)
    assert (datetime(2020, 11, 24, 9, 30, tzinfo=UTC), NOW) == (window.since, window.until)
    assert (True, False) == (window.default_since, window.beyond_six_years)


def test_an_older_since_is_allowed_and_flagged_and_until_covers_its_whole_day() -> None:
    window = accounting_window("2010-01-01", "2024-12-31", now=NOW)
    assert (datetime(2010, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC)) == (window.since, window.until)
    assert (False, True) == (window.default_since, window.beyond_six_years)


def test_a_window_ending_before_it_starts_is_refused() -> None:
    with pytest.raises(InvalidInput, match="since must be before until"):
        accounting_window("2024-06-01", "2024-05-01", now=NOW)
    with pytest.raises(InvalidInput, match="give since as well") as caught:
        accounting_window(None, "2019-01-01", now=NOW)
    assert "until" == caught.value.expression


def test_the_export_window_is_open_unless_bounded() -> None:
    assert (None, None) == export_window(None, None)
    assert (None, datetime(2024, 1, 2, tzinfo=UTC)) == export_window(None, "2024-01-01")
    with pytest.raises(InvalidInput):
        export_window("2024-01-02", "2024-01-01")


@pytest.mark.parametrize(("text", "expected"), [(None, 100), ("", 100), ("1", 1), ("1000", 1000)])
def test_a_page_size_defaults_to_100_and_stays_within_1_to_1000(text: str | None, expected: int) -> None:
    assert expected == parse_limit("limit", text)


@pytest.mark.parametrize("text", ["0", "1001", "-3", "2.5", "x"])
def test_a_page_size_outside_the_bounds_is_refused(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_limit("_count", text)


def test_verdict_is_permit_deny_or_both() -> None:
    assert ("permit", "deny", None) == (parse_verdict("permit"), parse_verdict("deny"), parse_verdict(None))
    with pytest.raises(InvalidInput):
        parse_verdict("PERMIT")


@given(
    moment=st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1),  # noqa: DTZ001
                        timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))])),
    position=st.integers(min_value=0, max_value=2**62),
)
def test_a_cursor_round_trips_its_position(moment: datetime, position: int) -> None:
    key = AuditKey(moment, position)
    decoded = decode_cursor(encode_cursor(key))
    assert decoded is not None
    assert (moment, position) == (decoded.decided_at, decoded.position)


@pytest.mark.parametrize("text", ["!!", "bm90LWEtY3Vyc29y", "MjAyNC0wMS0wMQ", "YWJjfDEy", "x" * 300])
def test_a_cursor_the_server_did_not_issue_is_refused(text: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        decode_cursor(text)
    assert "cursor" == caught.value.expression
