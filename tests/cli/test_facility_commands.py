"""Operators register a hospital's HL7 v2 sending facilities from the command line."""

from __future__ import annotations

from pathlib import Path

from tests.cli.test_carehub_command import assert_one_line_error, run_cli


def test_facilities_are_added_listed_and_removed_with_one_line_errors(tmp_path: Path) -> None:
    env = {"HUB_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'ops.db'}"}
    for partner, kind in (("general", "hospital"), ("pantry", "cbo")):
        added = run_cli(["partners", "add", "--id", partner, "--kind", kind, "--name", partner,
                         "--organization", f"Organization/{partner}"], env, tmp_path)
        assert 0 == added.returncode, added.stderr
    registered = run_cli(["partners", "facility", "add", "general", "GHH^1.2.3^ISO"], env, tmp_path)
    assert 0 == registered.returncode, registered.stderr
    listed = run_cli(["partners", "facility", "list", "general"], env, tmp_path)
    assert "GHH^1.2.3^ISO" in listed.stdout
    assert_one_line_error(run_cli(["partners", "facility", "add", "pantry", "FOOD"], env, tmp_path), "only hospitals")
    assert_one_line_error(run_cli(["partners", "facility", "add", "nobody", "X"], env, tmp_path), "PartnerNotFound")
    assert_one_line_error(run_cli(["partners", "facility", "add", "general", "A|B"], env, tmp_path), "facility")
    removed = run_cli(["partners", "facility", "remove", "general", "GHH^1.2.3^ISO"], env, tmp_path)
    assert 0 == removed.returncode, removed.stderr
    assert_one_line_error(run_cli(["partners", "facility", "remove", "general", "GHH^1.2.3^ISO"], env, tmp_path),
                          "not registered")
    assert "GHH" not in run_cli(["partners", "facility", "list"], env, tmp_path).stdout
