"""Create the registry's topics on a broker (idempotent): the hub's only admin-client writer."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from hub.broker.client_security import NO_SECURITY, ClientSecurity
from hub.errors import BrokerUnavailable
from hub.topics.registry import TopicSpec

log = structlog.get_logger(__name__)
TOPIC_ALREADY_EXISTS = 36


async def ensure_topics(
    bootstrap: str, specs: Iterable[TopicSpec], *, replication: int = 1, security: ClientSecurity = NO_SECURITY
) -> list[str]:
    """Create every topic in ``specs`` that does not exist yet; return the names created."""
    wanted = {spec.name: spec for spec in specs}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000, **security.aiokafka_kwargs())
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [spec for name, spec in wanted.items() if name not in existing]
        if not missing:
            return []
        response = await admin.create_topics(
            [NewTopic(s.name, s.partitions, replication, topic_configs=s.configs()) for s in missing]
        )
        created: list[str] = []
        for name, code, message in _topic_errors(response):
            if code == 0:
                created.append(name)
            elif code != TOPIC_ALREADY_EXISTS:
                raise BrokerUnavailable(f"cannot create topic {name}: error {code} {message or ''}".strip())
        log.info("topics_created", topics=created)
        return created
    except KafkaError as exc:
        raise BrokerUnavailable(f"cannot create topics on {bootstrap}: {type(exc).__name__}") from exc
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


def _topic_errors(response: object) -> list[tuple[str, int, str | None]]:
    rows = getattr(response, "topic_errors", [])
    out: list[tuple[str, int, str | None]] = []
    for row in rows:
        name, code = row[0], row[1]
        message = row[2] if len(row) > 2 else None
        out.append((str(name), int(code), message))
    return out
