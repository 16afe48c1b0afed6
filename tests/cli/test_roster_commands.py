"""``carehub partners roster add|list|remove`` as an operator runs them (a real subprocess)."""

# Asserts put the expected value first (assert expected == actual); SIM300 would flip them.

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from hub.control import db, partners
from tests.cli.test_carehub_command import assert_one_line_error, run_cli

MRN = "urn:oid:1.2.3|MRN-1"


async def _seed(url: str) -> None:
    await db.upgrade(url)
    engine = db.make_engine(url)
    try:
        async with db.make_sessionmaker(engine)() as session:
            await partners.create_partner(session, id="foodbank", kind="cbo", name="Food Bank",
                                          organization="Organization/foodbank")
            await partners.create_partner(session, id="general", kind="hospital", name="General",
                                          organization="Organization/general")
    finally:
        await engine.dispose()


def test_an_operator_adds_lists_and_removes_roster_entries_and_gets_one_line_errors(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    asyncio.run(_seed(url))
    env = {"HUB_DATABASE_URL": url, "COLUMNS": "250"}

    added = run_cli(["partners", "roster", "add", "foodbank", MRN], env, tmp_path)
    assert 0 == added.returncode, added.stderr
    assert "entry 1: patient added to the roster of foodbank" in added.stdout
    again = run_cli(["partners", "roster", "add", "foodbank", "|C-42"], env, tmp_path)
    assert "entry 2: patient added" in again.stdout

    listed = run_cli(["partners", "roster", "list", "foodbank", "--json"], env, tmp_path)
    assert 0 == listed.returncode, listed.stderr
    entries = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [MRN, "urn:carehub:partner:foodbank|C-42"] == [e["patient"] for e in entries]

    removed = run_cli(["partners", "roster", "remove", "foodbank", MRN], env, tmp_path)
    assert 0 == removed.returncode, removed.stderr
    assert "entry 1 removed from the roster of foodbank" in removed.stdout
    table = run_cli(["partners", "roster", "list", "foodbank"], env, tmp_path)
    assert "urn:carehub:partner:foodbank|C-42" in table.stdout
    assert MRN not in table.stdout

    assert_one_line_error(run_cli(["partners", "roster", "remove", "foodbank", MRN], env, tmp_path),
                          "has no such roster entry")
    assert_one_line_error(run_cli(["partners", "roster", "add", "general", MRN], env, tmp_path),
                          "only community-based organizations")
    assert_one_line_error(run_cli(["partners", "roster", "add", "foodbank", "MRN-1"], env, tmp_path),
                          "patient must be an identifier")


def test_an_operator_syncs_a_cbos_whole_roster_from_a_client_list(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    asyncio.run(_seed(url))
    env = {"HUB_DATABASE_URL": url, "COLUMNS": "250"}
    assert 0 == run_cli(["partners", "roster", "add", "foodbank", MRN], env, tmp_path).returncode
    assert 0 == run_cli(["partners", "roster", "add", "foodbank", "|OLD"], env, tmp_path).returncode
    clients = tmp_path / "clients.txt"
    clients.write_text(f"# nightly export\n{MRN}\n|C-1\n\n|C-2\n|C-1\n")

    synced = run_cli(["partners", "roster", "sync", "foodbank", str(clients)], env, tmp_path)

    assert 0 == synced.returncode, synced.stderr
    assert "2 added, 1 removed, 1 kept, 3 in all" in synced.stdout
    listed = run_cli(["partners", "roster", "list", "foodbank", "--json"], env, tmp_path)
    assert [MRN, "urn:carehub:partner:foodbank|C-1", "urn:carehub:partner:foodbank|C-2"] == [
        json.loads(line)["patient"] for line in listed.stdout.splitlines()]
    bad = tmp_path / "bad.txt"
    bad.write_text(f"{MRN}\nnot an identifier\n")
    assert_one_line_error(run_cli(["partners", "roster", "sync", "foodbank", str(bad)], env, tmp_path),
                          "patient must be an identifier")
    assert 3 == len(run_cli(["partners", "roster", "list", "foodbank", "--json"], env, tmp_path).stdout.splitlines())
