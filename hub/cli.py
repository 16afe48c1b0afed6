"""The ``carehub`` command: run the hub, run workers, the demo, and operator sub-commands.

Every error an operator can fix is printed as one line (no traceback) with exit code 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from hub import logs
from hub.errors import ConfigurationError, HubError, InvalidInput
from hub.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

app = typer.Typer(help="CareHub: an event-driven health-information-exchange hub.", no_args_is_help=True)
db_app = typer.Typer(help="The control-plane database.", no_args_is_help=True)
partners_app = typer.Typer(help="Hospitals and community-based organizations.", no_args_is_help=True)
facility_app = typer.Typer(help="A hospital's HL7 v2 sending facilities (MSH-4).", no_args_is_help=True)
partners_app.add_typer(facility_app, name="facility")
roster_app = typer.Typer(help="The patients on a CBO's roster (their admit/discharge events reach it).",
                          no_args_is_help=True)
partners_app.add_typer(roster_app, name="roster")
audit_app = typer.Typer(help="The audit of sharing decisions.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(partners_app, name="partners")
app.add_typer(audit_app, name="audit")

console = Console()
err_console = Console(stderr=True)
T = TypeVar("T")


def _settings() -> Settings:
    settings = Settings()
    logs.configure(level=settings.log_level, json=settings.log_json)
    return settings


def _run(main: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine; turn the errors an operator can fix into one line and exit code 2."""
    try:
        return asyncio.run(_main_wrapper(main))
    except (ConfigurationError, InvalidInput) as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except HubError as exc:
        err_console.print(f"[bold red]error:[/] {type(exc).__name__}: {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


async def _main_wrapper(main: Callable[[], Awaitable[T]]) -> T:
    return await main()


def _stop_requested() -> asyncio.Event:
    """An event set by Ctrl-C or SIGTERM. Install it first thing, so a signal during start-up also
    stops the hub in order instead of interrupting it half-started."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    return stop


@app.command()
def run() -> None:
    """Start the whole hub in the foreground (broker, database, HTTP, workers); Ctrl-C stops it."""
    from hub.app import running_hub  # noqa: PLC0415 - keep `carehub --help` fast

    settings = _settings()

    async def main() -> None:
        stop = _stop_requested()
        async with running_hub(settings) as hub:
            console.print(f"[bold green]CareHub is running[/]  Kafka {hub.bootstrap}  HTTP {hub.http_url}")
            console.print(f"  FHIR API   {hub.http_url}/fhir/metadata")
            console.print(f"  API docs   {hub.http_url}/docs")
            console.print(f"  HL7 MLLP   {settings.mllp_host}:{hub.mllp_port}")
            if settings.admin_token is None:
                console.print(f"  admin token (generated; set HUB_ADMIN_TOKEN to fix it): {hub.admin_token}",
                              soft_wrap=True)
            console.print("Press Ctrl-C to stop.")
            await stop.wait()
        console.print("CareHub stopped.")

    _run(main)


@app.command()
def worker() -> None:
    """Run only the pipeline workers (normalize, route) against HUB_KAFKA_BOOTSTRAP; Ctrl-C stops them."""
    from hub.app import running_hub  # noqa: PLC0415

    settings = _settings()

    async def main() -> None:
        stop = _stop_requested()
        async with running_hub(settings, http=False) as hub:
            console.print(f"[bold green]CareHub workers running[/] on {hub.bootstrap}; Ctrl-C stops them.")
            await stop.wait()

    _run(main)


@app.command()
def demo(
    keep_running: Annotated[bool, typer.Option(help="Keep the hub running after the demo.")] = False,
) -> None:
    """Start the hub with a sample hospital and CBO, send a referral and show what the CBO receives."""
    from hub.demo import run_demo  # noqa: PLC0415

    settings = _settings()
    async def main() -> None:
        stop = _stop_requested()
        await run_demo(settings, console=console, keep_running=keep_running, until=stop.wait)

    _run(main)


@app.command()
def asyncapi(
    write: Annotated[Path | None, typer.Option(help="Write the document to this file instead of printing it.")] = None,
) -> None:
    """Print (or write) the AsyncAPI document of the hub's topics."""
    from hub.topics.asyncapi import asyncapi_json  # noqa: PLC0415

    text = asyncapi_json()
    if write is None:
        sys.stdout.write(text)
    else:
        write.write_text(text, encoding="utf-8")
        console.print(f"wrote {write}")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the control-plane migrations to HUB_DATABASE_URL (run this before starting in production)."""
    from hub.control import db  # noqa: PLC0415

    settings = _settings()

    async def main() -> None:
        await db.upgrade(settings.database_url)
        console.print(f"database at revision {await db.current_revision(settings.database_url)}")

    _run(main)


@db_app.command("current")
def db_current() -> None:
    """Print the database's migration revision."""
    from hub.control import db  # noqa: PLC0415

    settings = _settings()
    console.print(_run(lambda: db.current_revision(settings.database_url)) or "none (run `carehub db upgrade`)")


@partners_app.command("add")
def partners_add(
    partner_id: Annotated[str, typer.Option("--id", help="Lowercase id; names the topic partner.<id>.")],
    kind: Annotated[str, typer.Option(help="hospital or cbo")],
    name: Annotated[str, typer.Option(help="Display name.")],
    organization: Annotated[
        str, typer.Option(help="How referrals name it: Organization/123 or system|value.")
    ],
) -> None:
    """Register a partner and print its bearer token (shown once)."""
    from hub.control import partners  # noqa: PLC0415

    settings = _settings()

    async def main() -> str:
        try:
            async with _control_session(settings) as session:
                _partner, token = await partners.create_partner(
                    session, id=partner_id, kind=kind, name=name, organization=organization
                )
        except partners.PartnerExists as exc:
            raise ConfigurationError(str(exc)) from exc
        return token

    token = _run(main)
    console.print(f"partner {partner_id} registered; its bearer token (shown once):")
    console.print(token, highlight=False)


@partners_app.command("list")
def partners_list() -> None:
    """List registered partners."""
    from hub.control import partners  # noqa: PLC0415

    settings = _settings()

    async def main() -> list[partners.Partner]:
        async with _control_session(settings) as session:
            return await partners.list_partners(session)

    table = Table("id", "kind", "name", "organization", "active")
    for p in _run(main):
        table.add_row(p.id, p.kind, p.name, p.organization, "yes" if p.active else "no")
    console.print(table)


@facility_app.command("add")
def facility_add(
    partner_id: Annotated[str, typer.Argument(help="The hospital partner's id.")],
    facility: Annotated[str, typer.Argument(help="MSH-4 as sent: GHH, or GHH^1.2.3^ISO.")],
) -> None:
    """Register an MSH-4 sending facility for a hospital (MLLP messages from it are accepted within 10 s)."""
    from hub.control import facilities  # noqa: PLC0415

    settings = _settings()

    async def main() -> facilities.Facility:
        async with _control_session(settings) as session:
            return await facilities.add_facility(session, partner_id, facility)

    added = _run(main)
    console.print(f"facility {added.facility} registered for {added.partner_id}", highlight=False)


@facility_app.command("remove")
def facility_remove(
    partner_id: Annotated[str, typer.Argument(help="The hospital partner's id.")],
    facility: Annotated[str, typer.Argument(help="MSH-4 as registered.")],
) -> None:
    """Unregister a sending facility (its messages are refused within 10 s)."""
    from hub.control import facilities  # noqa: PLC0415

    settings = _settings()

    async def main() -> bool:
        async with _control_session(settings) as session:
            return await facilities.remove_facility(session, partner_id, facility)

    if not _run(main):
        err_console.print(f"[bold red]error:[/] {facility} is not registered for {partner_id}", highlight=False)
        raise typer.Exit(2)
    console.print(f"facility {facility} removed from {partner_id}", highlight=False)


@facility_app.command("list")
def facility_list(
    partner_id: Annotated[str | None, typer.Argument(help="Only this partner's facilities.")] = None,
) -> None:
    """List registered sending facilities."""
    from hub.control import facilities  # noqa: PLC0415

    settings = _settings()

    async def main() -> list[facilities.Facility]:
        async with _control_session(settings) as session:
            return await facilities.list_facilities(session, partner_id)

    table = Table("facility", "partner", "registered at")
    for found in _run(main):
        table.add_row(found.facility, found.partner_id, found.created_at.isoformat(timespec="seconds"))
    console.print(table)


_ROSTER_PATIENT = "system|value as the CBO (or a hospital) knows the patient, |value for the CBO's own id, or hp-<id>"
_ROSTER_BOUND = "running hubs apply it within 5 s"


@roster_app.command("add")
def roster_add(
    partner_id: Annotated[str, typer.Argument(help="The CBO's partner id.")],
    patient: Annotated[str, typer.Argument(help=_ROSTER_PATIENT)],
) -> None:
    """Put a patient on a CBO's roster (idempotent)."""
    from hub.control import rosters  # noqa: PLC0415

    settings = _settings()

    async def main() -> tuple[rosters.RosterEntry, bool]:
        async with _control_session(settings) as session:
            return await rosters.add_to_roster(session, partner_id, patient)

    entry, created = _run(main)
    what = "added to" if created else "already on"
    console.print(f"entry {entry.id}: patient {what} the roster of {partner_id} ({_ROSTER_BOUND})", highlight=False)


@roster_app.command("remove")
def roster_remove(
    partner_id: Annotated[str, typer.Argument(help="The CBO's partner id.")],
    patient: Annotated[str | None, typer.Argument(help=f"{_ROSTER_PATIENT}, as the entry names it.")] = None,
    entry: Annotated[int | None, typer.Option("--entry", help="The entry id instead of the patient.")] = None,
) -> None:
    """Take a patient off a CBO's roster (by the patient as the entry names it, or by --entry ID)."""
    from hub.control import rosters  # noqa: PLC0415

    settings = _settings()

    async def main() -> rosters.RosterEntry | None:
        async with _control_session(settings) as session:
            return await rosters.remove_from_roster(session, partner_id, entry_id=entry, patient=patient)

    removed = _run(main)
    if removed is None:
        err_console.print(f"[bold red]error:[/] partner {partner_id} has no such roster entry", highlight=False)
        raise typer.Exit(2)
    console.print(f"entry {removed.id} removed from the roster of {partner_id} ({_ROSTER_BOUND})", highlight=False)


@roster_app.command("sync")
def roster_sync(
    partner_id: Annotated[str, typer.Argument(help="The CBO's partner id.")],
    source: Annotated[
        typer.FileText, typer.Argument(help="The CBO's whole client list, one patient per line ('-': stdin).")
    ],
) -> None:
    """Replace a CBO's roster with a client list (one 'system|value', '|local-id' or hub patient id a line)."""
    from hub.control import rosters  # noqa: PLC0415

    settings = _settings()
    patients = [line.strip() for line in source if line.strip() and not line.lstrip().startswith("#")]

    async def main() -> rosters.RosterSync:
        async with _control_session(settings) as session:
            return await rosters.replace_roster(session, partner_id, patients)

    synced = _run(main)
    console.print(
        f"roster of {partner_id}: {synced.added} added, {synced.removed} removed, {synced.kept} kept, "
        f"{synced.total} in all ({_ROSTER_BOUND})",
        highlight=False,
    )


@roster_app.command("list")
def roster_list(
    partner_id: Annotated[str, typer.Argument(help="The CBO's partner id.")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line instead of a table.")] = False,
) -> None:
    """List a CBO's roster; 'hub patient' is empty while the hub does not know the patient yet."""
    from hub.control import rosters  # noqa: PLC0415

    settings = _settings()

    async def main() -> list[rosters.RosterEntry]:
        found: list[rosters.RosterEntry] = []
        async with _control_session(settings) as session:
            while True:
                page = await rosters.list_roster(session, partner_id, after=found[-1].id if found else 0)
                found.extend(page)
                if len(page) < rosters.DEFAULT_LIMIT:
                    return found

    entries = _run(main)
    if as_json:
        for item in entries:
            sys.stdout.write(json.dumps(item.to_public()) + "\n")
        return
    table = Table("entry", "patient", "hub patient", "added at")
    for item in entries:
        added = item.added_at.isoformat(timespec="seconds")
        table.add_row(str(item.id), item.patient, item.hub_patient_id or "", added)
    console.print(table)


@audit_app.command("list")
def audit_list(
    patient: Annotated[str | None, typer.Option(help="hub patient id")] = None,
    event: Annotated[str | None, typer.Option(help="event id (ce_id)")] = None,
    limit: int = 100,
) -> None:
    """Show sharing decisions, permit and deny."""
    from hub.control import audit  # noqa: PLC0415

    settings = _settings()

    async def main() -> list[audit.DecisionRecord]:
        async with _control_session(settings) as session:
            return await audit.list_decisions(session, hub_patient_id=patient, event_id=event, limit=limit)

    table = Table("decided at", "event", "recipient", "verdict", "rule", "reason")
    for r in _run(main):
        table.add_row(r.decided_at.isoformat(timespec="seconds"), r.event_id[:8], r.recipient_id,
                      r.verdict, r.rule, r.reason)
    console.print(table)


@audit_app.command("disclosures")
def audit_disclosures(
    patient: Annotated[str, typer.Option(help="hub patient id or any identifier system|value of the patient")],
    since: Annotated[
        str | None, typer.Option(help="start, inclusive: YYYY-MM-DD (UTC) or a time with offset; default 6 years ago")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="end, exclusive (a date covers that whole day); default now")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the accounting as JSON")] = False,
) -> None:
    """Accounting of disclosures (HIPAA 164.528): every permitted sharing of one patient's data."""
    from hub.admin import accounting  # noqa: PLC0415
    from hub.control.sqltypes import utc_now  # noqa: PLC0415

    settings = _settings()

    async def main() -> dict[str, Any]:
        window = accounting.accounting_window(since, until, now=utc_now())
        lines: list[dict[str, Any]] = []
        async with _control_session(settings) as session:
            page = await accounting.read_accounting(session, patient, window, limit=accounting.MAX_LIMIT)
            lines.extend(page.disclosures)
            while page.next_after is not None:
                page = await accounting.read_accounting(
                    session, patient, window, after=page.next_after, limit=accounting.MAX_LIMIT
                )
                lines.extend(page.disclosures)
        return accounting.accounting_json(replace(page, disclosures=tuple(lines), next_after=None))

    found = _run(main)
    if as_json:
        sys.stdout.write(json.dumps(found, indent=2) + "\n")
        return
    period = found["period"]
    who = found["patient"]["hub_patient_id"] or "unknown patient"
    console.print(f"Accounting of disclosures for {who}, {_seconds(period['since'])} to {_seconds(period['until'])}"
                  f" (UTC): {found['count']} disclosure(s)", highlight=False, soft_wrap=True)
    table = Table("date (UTC)", "recipient", "organization", "description", "purpose", "rule", "event")
    for column in table.columns:
        column.overflow = "fold"
    for line in found["disclosures"]:
        recipient = line["recipient"]
        table.add_row(_seconds(line["date"]), f"{recipient['name'] or '?'} ({recipient['id']})",
                      recipient["organization"] or "", line["description"],
                      f"{line['purpose']['display']} ({line['purpose']['code']})", line["rule"], line["event_id"])
    console.print(table)


def _seconds(instant: str) -> str:
    """``2026-11-20T17:39:29.885172Z`` -> ``2026-11-20 17:39:29``."""
    return instant[:19].replace("T", " ")


@audit_app.command("export")
def audit_export(
    patient: Annotated[str | None, typer.Option(help="only this patient: hub patient id or system|value")] = None,
    since: Annotated[str | None, typer.Option(help="start, inclusive: YYYY-MM-DD or a time with offset")] = None,
    until: Annotated[str | None, typer.Option(help="end, exclusive (a date covers that whole day)")] = None,
    verdict: Annotated[str | None, typer.Option(help="permit or deny; default both")] = None,
    output: Annotated[Path | None, typer.Option(help="write to this file instead of standard output")] = None,
) -> None:
    """Export audited decisions as FHIR R4 AuditEvents (IHE BALP style), one JSON per line (NDJSON)."""
    from hub.admin import accounting  # noqa: PLC0415

    settings = _settings()

    async def main() -> int:
        start, end = accounting.export_window(since, until)
        chosen = accounting.parse_verdict(verdict)
        with contextlib.ExitStack() as files:
            sink = files.enter_context(output.open("w", encoding="utf-8")) if output else sys.stdout
            written = 0
            after = None
            async with _control_session(settings) as session:
                while True:
                    events, after = await accounting.read_audit_events(
                        session, patient=patient, since=start, until=end, verdict=chosen, after=after,
                        limit=accounting.MAX_LIMIT,
                    )
                    for event in events:
                        sink.write(json.dumps(event, separators=(",", ":")) + "\n")
                    written += len(events)
                    if after is None:
                        return written

    written = _run(main)
    if output is not None:
        err_console.print(f"wrote {written} AuditEvent(s) to {output}", highlight=False)


@contextlib.asynccontextmanager
async def _control_session(settings: Settings) -> AsyncIterator[AsyncSession]:
    """A session on the control plane, for one operator command (migrated first on SQLite)."""
    from hub.control import db  # noqa: PLC0415

    await db.prepare(settings.database_url)
    engine = db.make_engine(settings.database_url)
    try:
        async with db.make_sessionmaker(engine)() as session:
            yield session
    finally:
        await engine.dispose()


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
