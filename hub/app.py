"""Composition root: builds the broker, the control plane, the HTTP app and the pipeline. Nothing at import.

``running_hub(settings)`` is the one place that starts and stops every part, in order:

1. the embedded Tansu broker (``HUB_KAFKA_BOOTSTRAP`` unset) or a check that the given one answers;
2. the control-plane database (migrations applied on SQLite; on PostgreSQL it must be at head);
3. the registry's topics and every registered partner's topic;
4. on the embedded broker, the journal of accepted records replayed into it (docs/adr/0012);
5. the FastStream Kafka broker with the pipeline router (producer acks=all);
6. the HTTP server (FHIR API, CBO API, admin API) and the HL7 v2 MLLP listener, whose writes are
   journaled on the embedded broker (``hub.broker.journal``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import timedelta

import structlog
import uvicorn
from fastapi import FastAPI, Response
from faststream.kafka import KafkaBroker
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from hub.adapters.cds_hooks import build_cds_router, payload_too_large
from hub.adapters.cds_hooks_store import SqlConsultStore
from hub.adapters.fhir_disclosure import PolicyReads
from hub.adapters.fhir_rest import build_fhir_router, error_response, install_fhir_error_handlers
from hub.adapters.http_guard import GuardedFastAPI
from hub.adapters.mllp import start_mllp_server
from hub.adapters.mllp_limits import ConnectionLimits
from hub.adapters.operation_outcome import PayloadTooLarge
from hub.adapters.problem_json import install_problem_handlers
from hub.admin.api import PartnerCreated, build_admin_router
from hub.auth import SqlAuthenticator
from hub.broker.client_security import NO_SECURITY, ClientSecurity, client_security
from hub.broker.embedded import EmbeddedBroker, port_is_free, wait_for_metadata
from hub.broker.journal import JournalAppender, JournaledPublisher, prune_journal, prune_periodically, replay_journal
from hub.broker.topics import ensure_topics
from hub.consent import labels
from hub.consent.model import Jurisdiction, Policies
from hub.control import db, partners
from hub.control.facilities import FacilityDirectory
from hub.control.resources import SqlResourceStore
from hub.control.secrets import hub_secret
from hub.errors import ConfigurationError
from hub.pipeline.normalize import EdgeNormalizer
from hub.pipeline.publisher import AioKafkaRecordPublisher, EdgePublisher, GroupPublisher
from hub.pipeline.route import engine_decider
from hub.pipeline.stores import (
    SqlAuditLog,
    SqlConsentSource,
    SqlPartnerDirectory,
    SqlPatientIndex,
    SqlRosterSource,
    SqlSequencer,
)
from hub.pipeline.workers import PipelineDeps, build_pipeline_router
from hub.record_proof import RecordProof
from hub.settings import Settings
from hub.topics.registry import CORE_TOPICS, partner_topic

log = structlog.get_logger(__name__)

#: The control-plane secret that keys record proofs when ``HUB_RECORD_KEY`` is unset (docs/adr/0010).
RECORD_PROOF_SECRET = "record-proof"  # noqa: S105 - the name of a secret, not one

#: The control-plane secret that keys server-assigned resource ids (``hub.adapters.fhir_intake.keyed_resource_id``).
RESOURCE_ID_SECRET = "resource-ids"  # noqa: S105 - the name of a secret, not one


@dataclass
class RunningHub:
    """Handles on a started hub, for the CLI, the demo and the tests."""

    settings: Settings
    bootstrap: str
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    broker: KafkaBroker
    admin_token: str
    http_url: str | None = None
    mllp_port: int | None = None
    embedded: EmbeddedBroker | None = None
    security: ClientSecurity = NO_SECURITY  # how its Kafka clients authenticate (hub.broker.client_security)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list, repr=False)


def build_kafka_broker(bootstrap: str, security: ClientSecurity = NO_SECURITY) -> KafkaBroker:
    """The FastStream broker (its consumers are the pipeline workers); its producer waits for all in-sync
    replicas (acks=all). ``security`` says how it authenticates to the broker."""
    return KafkaBroker(
        bootstrap,
        security=security.faststream(),
        acks="all",
        enable_idempotence=False,  # Tansu has no idempotent producer
        request_timeout_ms=10_000,
        linger_ms=0,
        client_id="carehub",
        # FastStream's per-message access log goes through standard logging (WARNING and up shown).
        logger=logging.getLogger("hub.faststream"),
    )


def sharing_policies(settings: Settings) -> Policies:
    """The operator's sharing policies from the settings: the jurisdiction default (``HUB_CONSENT_DEFAULT``)
    and the labels that need a consent naming the recipient (``HUB_SPECIFIC_CONSENT_LABELS``), beside the
    default sharing rules. A label the hub cannot place (a bare code it does not know) is a
    ``ConfigurationError``: it would silently never match."""
    unknown = sorted(
        label for label in settings.specific_consent_labels if labels.normalize_label(label).startswith("|")
    )
    if unknown:
        raise ConfigurationError(
            f"HUB_SPECIFIC_CONSENT_LABELS: unknown label(s) {', '.join(unknown)}: use a DS4P code (e.g. HIV, PSY) "
            "or system|code"
        )
    return Policies(
        jurisdiction=Jurisdiction(settings.consent_default),
        specific_consent_labels=frozenset(settings.specific_consent_labels),
    )


def partner_reads(settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> PolicyReads:
    """The FHIR edge's read gate: the route stage's decision (same engine, same policies), on fresh reads
    of the patient's consents and rosters (no cache: a revocation's 2xx closes the REST path at once)."""
    return PolicyReads(
        decide=engine_decider(sharing_policies(settings)),
        patients=SqlPatientIndex(sessions),
        consents=SqlConsentSource(sessions, ttl_s=0.0),
        directory=SqlPartnerDirectory(sessions, ttl_s=1.0),
        audit=SqlAuditLog(sessions),
        rosters=SqlRosterSource(sessions, ttl_s=0.0),
    )


async def record_proof(settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> RecordProof:
    """The hub's record proof: ``HUB_RECORD_KEY`` (and ``HUB_RECORD_KEY_PREVIOUS``), or, when it is unset,
    the random key kept in the control-plane database, the same for every process on it."""
    previous = [settings.record_key_previous.get_secret_value().encode()] if settings.record_key_previous else []
    if settings.record_key is not None:
        return RecordProof(settings.record_key.get_secret_value().encode(), previous)
    if not settings.embedded:
        log.warning("record_key_from_database", hint="set HUB_RECORD_KEY outside development")
    return RecordProof(await hub_secret(sessions, RECORD_PROOF_SECRET), previous)


def build_http_app(
    *,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    authenticator: SqlAuthenticator,
    publisher: EdgePublisher,
    on_partner_created: PartnerCreated,
    id_key: bytes | None = None,
) -> FastAPI:
    """The HTTP application: FHIR R4 API under /fhir, CDS Hooks under /cds-services, admin API under /admin/v1.

    Every request body is bounded by ``HUB_MAX_BODY_BYTES`` before any route reads it and every answer is
    ``Cache-Control: no-store`` (``hub.adapters.http_guard``); errors are OperationOutcomes under /fhir,
    LEAP errors from the CDS Hooks service and RFC 9457 problem+json everywhere else.
    """
    app = GuardedFastAPI(
        title="CareHub",
        version="0.1.0",
        description="CareHub health-information-exchange hub: FHIR R4 intake, CBO case updates, admin.",
        max_body_bytes=settings.max_body_bytes,
        too_large_answers=[("/fhir", _fhir_too_large), ("/cds-services", payload_too_large)],
    )
    install_problem_handlers(app, except_under=("/fhir",))
    app.include_router(
        build_fhir_router(
            authenticator=authenticator,
            ingress=GroupPublisher(publisher),  # concurrent creates share broker round trips (issue 13)
            store=SqlResourceStore(sessions),
            max_body_bytes=settings.max_body_bytes,
            events=EdgeNormalizer(patients=SqlPatientIndex(sessions), publisher=publisher),
            reads=partner_reads(settings, sessions),
            id_key=id_key,
        ),
        prefix="/fhir",
    )
    install_fhir_error_handlers(app)
    app.include_router(
        build_cds_router(
            authenticator=authenticator, store=SqlConsultStore(sessions), max_body_bytes=settings.max_body_bytes
        )
    )
    app.include_router(
        build_admin_router(
            sessions=sessions, authenticator=authenticator, on_partner_created=on_partner_created,
            policies=sharing_policies(settings),
        )
    )

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def _fhir_too_large(limit: int) -> Response:
    return error_response(PayloadTooLarge(f"the body is larger than the limit of {limit} bytes"))


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the CLI owns Ctrl-C and stops every part in order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _start_http(app: FastAPI, settings: Settings, stack: contextlib.AsyncExitStack) -> str:
    """Serve ``app`` with uvicorn in a task; return its base URL once it listens."""
    config = uvicorn.Config(
        app, host=settings.http_host, port=settings.http_port, log_level="warning", lifespan="off",
        access_log=False, server_header=False,  # a Server header would name the framework to every caller
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            raise ConfigurationError(
                f"the HTTP server could not listen on {settings.http_host}:{settings.http_port}: "
                "set HUB_HTTP_PORT to a free port"
            )
        await asyncio.sleep(0.02)

    async def stop_http() -> None:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, timeout=10)

    stack.push_async_callback(stop_http)
    port = server.servers[0].sockets[0].getsockname()[1]
    return f"http://{settings.http_host}:{port}"


async def _start_broker(
    settings: Settings, security: ClientSecurity, stack: contextlib.AsyncExitStack
) -> EmbeddedBroker | None:
    """Start the embedded broker, or check that the configured one answers (authenticating with ``security``)."""
    if not settings.embedded:
        await wait_for_metadata(settings.bootstrap, timeout_s=settings.broker_wait_s, security=security)
        return None
    embedded = EmbeddedBroker(port=settings.embedded_kafka_port, start_timeout_s=settings.broker_wait_s)
    await embedded.start()
    stack.push_async_callback(embedded.stop)
    return embedded


#: How often the hub prunes the journal of accepted records.
JOURNAL_PRUNE_EVERY = timedelta(hours=1)


async def _durable_edge_writes(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    publisher: AioKafkaRecordPublisher,
    stack: contextlib.AsyncExitStack,
) -> EdgePublisher:
    """The writer the edges use. On the embedded broker (memory only) it journals every accepted record in
    the database, and the journal's retained records are replayed into the fresh broker first; with an
    external Kafka the acks=all write is the durable one and nothing is journaled (docs/adr/0012)."""
    retention = timedelta(hours=settings.journal_retention_hours)
    pruned = await prune_journal(sessions, retention)
    if not settings.embedded:
        return publisher
    replayed = await replay_journal(sessions, publisher)
    log.info("journal_replayed", records=replayed, pruned=pruned)
    pruning = asyncio.create_task(prune_periodically(sessions, retention, every=JOURNAL_PRUNE_EVERY))

    async def stop_pruning() -> None:
        pruning.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pruning

    stack.push_async_callback(stop_pruning)
    journal = JournalAppender(sessions)
    stack.push_async_callback(journal.close)
    return JournaledPublisher(publisher, journal)


@contextlib.asynccontextmanager
async def running_hub(
    settings: Settings, *, http: bool = True, workers: bool = True
) -> AsyncIterator[RunningHub]:
    """Start every configured part of the hub; stop them all, in reverse order, on exit."""
    policies = sharing_policies(settings)  # a policy the hub cannot apply stops it before anything starts
    security = client_security(settings)  # so do Kafka credentials that cannot work
    if http:
        for what, host, port, variable in (
            ("the HTTP API", settings.http_host, settings.http_port, "HUB_HTTP_PORT"),
            ("the MLLP listener", settings.mllp_host, settings.mllp_port, "HUB_MLLP_PORT"),
        ):
            if port and not port_is_free(host, port):
                raise ConfigurationError(
                    f"port {port} on {host} is already in use, so {what} cannot start: "
                    f"stop what uses it or set {variable} to a free port"
                )
    async with contextlib.AsyncExitStack() as stack:
        embedded = await _start_broker(settings, security, stack)
        bootstrap = embedded.bootstrap if embedded else settings.bootstrap

        await db.prepare(settings.database_url)
        engine = db.make_engine(settings.database_url)
        stack.push_async_callback(engine.dispose)
        sessions = db.make_sessionmaker(engine)

        async with sessions() as session:
            known = await partners.list_partners(session)
        await ensure_topics(bootstrap, [*CORE_TOPICS, *(partner_topic(p.id) for p in known)], security=security)

        async def new_partner_topic(partner_id: str) -> None:
            await ensure_topics(bootstrap, [partner_topic(partner_id)], security=security)

        broker = build_kafka_broker(bootstrap, security)
        proof = await record_proof(settings, sessions)
        publisher = AioKafkaRecordPublisher(bootstrap, proof=proof, security=security)
        await publisher.start()
        stack.push_async_callback(publisher.stop)
        edge_publisher = await _durable_edge_writes(settings, sessions, publisher, stack)
        directory = SqlPartnerDirectory(sessions, on_new_partner=new_partner_topic)
        roster_source = SqlRosterSource(sessions)  # the admin API below clears it on a roster change
        if workers:
            deps = PipelineDeps(
                patients=SqlPatientIndex(sessions), directory=directory, audit=SqlAuditLog(sessions),
                sequencer=SqlSequencer(sessions), publisher=publisher, consents=SqlConsentSource(sessions),
                decide=engine_decider(policies), proof=proof,
                rosters=roster_source,
            )
            broker.include_router(
                build_pipeline_router(
                    deps, group_id=settings.worker_group, fetch_max_wait_ms=settings.fetch_max_wait_ms,
                    session_timeout_ms=settings.session_timeout_ms, max_batch=settings.max_batch,
                )
            )
        await broker.start()
        stack.push_async_callback(broker.stop)

        admin_token = settings.admin_token.get_secret_value() if settings.admin_token else secrets.token_urlsafe(24)
        hub = RunningHub(
            settings=settings, bootstrap=bootstrap, engine=engine, sessions=sessions, broker=broker,
            admin_token=admin_token, embedded=embedded, security=security,
        )
        if http:
            async def partner_created(partner: partners.Partner) -> None:
                await new_partner_topic(partner.id)
                directory.invalidate()

            app = build_http_app(
                settings=settings, sessions=sessions,
                authenticator=SqlAuthenticator(sessions, admin_token=admin_token),
                publisher=edge_publisher, on_partner_created=partner_created,
                id_key=await hub_secret(sessions, RESOURCE_ID_SECRET),
            )
            app.state.roster_changed = roster_source.invalidate  # read by hub.admin.rosters_api
            hub.http_url = await _start_http(app, settings, stack)
            mllp = await start_mllp_server(
                host=settings.mllp_host, port=settings.mllp_port, ingress=edge_publisher,
                hospitals=FacilityDirectory(sessions, settings.mllp_facilities),
                max_message_bytes=settings.max_body_bytes,
                limits=ConnectionLimits(
                    max_connections=settings.mllp_max_connections,
                    max_per_source=settings.mllp_max_connections_per_source,
                    reserved=settings.mllp_reserved_connections,
                    identify_timeout=settings.mllp_identify_timeout_s,
                    frame_timeout=settings.mllp_frame_timeout_s,
                    idle_timeout=settings.mllp_idle_timeout_s,
                    max_in_flight=settings.mllp_max_in_flight,
                ),
            )
            stack.push_async_callback(mllp.stop)
            hub.mllp_port = mllp.port

        log.info("hub_started", bootstrap=bootstrap, url=hub.http_url)
        yield hub
