"""The inbound HL7 v2 edge: ADT messages over MLLP, on python-hl7's asyncio MLLP stream classes.

Wiring (the composition root)::

    server = await start_mllp_server(
        host=settings.mllp_host, port=settings.mllp_port,
        ingress=publisher,                 # hub.ports.IngressWriter (+ publish_many: batched); after the ack
        hospitals=facility_directory,      # HospitalDirectory: MSH-4 -> hospital partner id
        limits=ConnectionLimits(...),      # connections in all / per source IP / reserved; timeouts
    )
    ...
    await server.stop()                    # stop accepting, finish in-flight messages, close peers

A sender may pipeline: write several frames before it reads an ACK. Each connection reads frames as
they come and answers up to ``limits.max_in_flight`` of them at once (then reads no further until an
ACK left); their records reach ``hub.ingress`` in the order the frames came (a :class:`Turn` each), and
the ACKs are written strictly in that order, each once its own record was acknowledged. The records of
all connections go through one produce stage (:class:`hub.adapters.mllp_batching.IngressBatches`):
messages that arrive while a batch is in flight share the next ``publish_many`` (one broker round trip,
and one journal transaction on the embedded default). A sender that waits for each ACK sees no
difference.

What a peer gets, per MLLP frame (``<VT> message <FS><CR>``), always in the order the frames came:

* ``AA`` only after the write of its own record returned (``publish_many`` of its batch, or
  :meth:`hub.ports.IngressWriter.write`), i.e. after the broker acknowledged the event on
  ``hub.ingress`` (and, on the embedded broker, after the event was journaled in the control-plane
  database: ``hub.broker.journal``, docs/adr/0012); MSA-2 echoes MSH-10;
* ``AR``/``AE`` with an ERR segment naming segment and field for a message the hub refuses (see
  :mod:`hub.adapters.hl7_adt`), and ``AR`` 103 at MSH-4 when MSH-4 names no registered hospital;
* ``AE`` 207 when the broker (or the facility directory) did not answer: nothing was stored, the
  sender should send the message again (see :data:`TRANSIENT_FAILURE_ACK`). When a produce batch
  fails, every message in it gets AE 207 and the messages before and after it keep their AA; a
  pipelining sender that resends an AE'd message after later ones were accepted changes their order
  on ``hub.ingress``, as with any HL7 resend;
* a retransmission - same sender, same MSH-10, same segments (MSH-7 may differ) - is answered
  ``AA`` again without a second write: its ``ce_id`` (:func:`hub.adapters.hl7_adt.adt_event_id`) is
  the same, and :class:`AcknowledgedMessages` remembers the ce_ids already acknowledged (a resend that
  arrives while its original is still being written waits for that write). The default
  memory, :class:`RecentlyAcknowledged`, is bounded and in process; after a restart or an eviction a
  retransmission is written again with the *same* ``ce_id``, and the pipeline's ce_id-idempotent
  numbering keeps it from reaching a partner twice. A control id reused for a *different* message
  is a new message (new ce_id), never a silently dropped "duplicate".

Where python-hl7's ``hl7.mllp`` falls short, and what this module does instead:

* ``MLLPStreamReader.readblock`` raises ``InvalidBlockError`` and drops the block when anything
  precedes ``<VT>`` (senders that put a line end between frames exist): here bytes before the last
  ``<VT>`` of a block are ignored, as MLLP release 2 says; a block with no ``<VT>`` at all is
  answered ``AR`` 100 and the connection stays open;
* on a frame longer than the reader's limit it clears its buffer and raises ``ValueError``, after
  which the rest of that frame would be read as garbage: here the peer gets ``AR`` 104 (MSA-2 from
  the frame's MSH when it can be read) and the connection is closed. The per-connection buffer is
  bounded by the stream limit (``max_message_bytes``): a 20 MB frame never sits in memory;
* ``readmessage`` decodes ASCII and parses with ``hl7.parse`` (CR-only segments; it logs field
  values, i.e. PHI, on odd escape sequences): frames are handed on as bytes to
  :func:`hub.adapters.hl7_adt.parse_message`;
* ``start_hl7_server`` does not keep references to the connection tasks (so they cannot be awaited
  or cancelled on shutdown): :func:`start_mllp_server` builds the same ``HL7StreamReader`` /
  ``HL7StreamProtocol`` / ``HL7StreamWriter`` stack itself and tracks each connection.

Who may hold a connection, and for how long (:mod:`hub.adapters.mllp_limits`): a connection is
*unidentified* until it delivered a frame from a registered facility. Unidentified connections never
take the reserved slots, are evicted oldest first when a newcomer needs room, and are closed when not
identified within ``identify_timeout``; every frame must arrive whole within ``frame_timeout`` of its
first byte (a slow-loris trickle is closed); an identified connection may idle as long as
``idle_timeout`` allows (default: forever) and is never evicted. Logs name the peer address and
counts, never message content.

MLLP carries no credentials: MSH-4 says which hospital a message claims to come from, it does not
prove it. Expose the listener only on a network that authenticates the peer (site-to-site VPN,
stunnel/TLS with client certificates); see ``docs/adr/0004-hl7v2-leniency.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any, Final, Literal, Protocol

import structlog
from hl7.mllp import HL7StreamProtocol, HL7StreamReader, HL7StreamWriter

from hub.adapters.hl7_adt import (
    AdtMessage,
    ErrorDetail,
    ErrorLocation,
    Hl7Error,
    ack,
    adt_event_id,
    map_adt,
    parse_message,
)
from hub.adapters.mllp_batching import IngressBatches
from hub.adapters.mllp_limits import ConnectionLimits, Slot, SlotTable
from hub.errors import HubError, RetryableError
from hub.events import CloudEvent, encode, now
from hub.ports import IngressWriter

log = structlog.get_logger(__name__)

START_BLOCK: Final = b"\x0b"
END_BLOCK: Final = b"\x1c\x0d"
#: The acknowledgment code when the hub could not store a valid message (broker or directory down).
#: HL7 table 0008 reads AR as "failed for a reason unrelated to content"; CareHub answers AE with
#: ERR-3 207 as its contract says - either way the message was not stored and must be resent.
TRANSIENT_FAILURE_ACK: Final[Literal["AE", "AR"]] = "AE"
#: Bytes of an oversize frame kept to read its MSH for the AR.
_HEAD_BYTES: Final = 4096
#: After refusing an oversize frame: how long the rest of it is read and discarded before closing.
_LINGER_SECONDS: Final = 1.0


class HospitalDirectory(Protocol):
    """Which registered hospital partner sends under an MSH-4 sending facility (control-plane port)."""

    async def hospital_for_facility(self, facility: str) -> str | None:
        """The partner id of the hospital registered for ``facility``, or ``None``.

        ``facility`` is :attr:`hub.adapters.hl7_adt.MessageHeader.facility_key`: the MSH-4 components
        joined by ``^`` without trailing empty ones (``GHH`` or ``GHHS^2.16.840.1.1^ISO``).
        Raise :class:`hub.errors.StoreUnavailable` when the directory cannot answer (-> AE 207).
        """
        ...


class AcknowledgedMessages(Protocol):
    """Memory of the event ids (``ce_id``) of messages already acknowledged ``AA``."""

    async def contains(self, event_id: str) -> bool:
        """True when a message with this event id was acknowledged AA."""
        ...

    async def add(self, event_id: str) -> None:
        """Record a message that was just acknowledged AA."""
        ...


class RecentlyAcknowledged:
    """The last ``capacity`` acknowledged event ids, in memory (least recently used evicted first).

    About 150 bytes an entry: the default 65 536 entries hold well over a day of a busy hospital feed.
    """

    def __init__(self, capacity: int = 65_536) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._ids)

    async def contains(self, event_id: str) -> bool:
        """See :meth:`AcknowledgedMessages.contains`."""
        if event_id not in self._ids:
            return False
        self._ids.move_to_end(event_id)
        return True

    async def add(self, event_id: str) -> None:
        """See :meth:`AcknowledgedMessages.add`."""
        self._ids[event_id] = None
        self._ids.move_to_end(event_id)
        while len(self._ids) > self.capacity:
            self._ids.popitem(last=False)


class Turn:
    """One message's place in its connection's line to the produce stage.

    :meth:`AdtIntake.answer` waits for the turn before it submits its record and releases it right
    after (or as soon as it knows it writes nothing), so the records of one connection reach
    ``hub.ingress`` in the order their frames came, however long each message's parse, facility lookup
    and mapping took. Get turns from :class:`WriteOrder`.
    """

    def __init__(self, previous: asyncio.Future[None] | None) -> None:
        self._previous = previous
        self.released: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def wait(self) -> None:
        """Wait until the message before this one submitted its record (or wrote none)."""
        if self._previous is not None and not self._previous.done():
            await asyncio.shield(self._previous)  # cancelling this waiter must not release the previous turn

    def release(self) -> None:
        """Let the next message submit, once every message before this one did (a message that writes
        nothing may finish early, but never lets a later one pass an earlier one still writing). Idempotent."""
        if self._previous is not None and not self._previous.done():
            self._previous.add_done_callback(lambda _: self._set_released())
            return
        self._set_released()

    def _set_released(self) -> None:
        if not self.released.done():
            self.released.set_result(None)


class WriteOrder:
    """Hands out :class:`Turn` s in the order the frames of one connection arrived."""

    def __init__(self) -> None:
        self._last: asyncio.Future[None] | None = None

    def next(self) -> Turn:
        """The turn of the frame that just arrived."""
        turn = Turn(self._last)
        self._last = turn.released
        return turn


@dataclass(eq=False)
class _Write:
    """A record submitted to the produce stage, and how many messages wait for it (a retransmission
    arriving while its original is in flight waits for the same write instead of writing again)."""

    done: asyncio.Future[None]
    waiters: int = 0


@dataclass(frozen=True, slots=True)
class Answer:
    """The acknowledgment of one frame, and the registered hospital that sent it (``None``: the frame
    was unreadable, or its MSH-4 is not registered, or the directory did not answer)."""

    ack: bytes
    sender: str | None


@dataclass
class AdtIntake:
    """One frame in, one acknowledgment out: the MLLP edge without the sockets (unit-testable).

    Any number of frames may be answered at once (the listener answers the pipelined frames of a
    connection concurrently and the connections side by side); their records go through one produce
    stage (:class:`hub.adapters.mllp_batching.IngressBatches`), so concurrent messages share broker
    round trips (and journal transactions), at most ``max_batch`` records each. A message whose
    ``ce_id`` is already being written (a retransmission racing its original, on any connection)
    waits for that write instead of writing again.
    """

    ingress: IngressWriter
    hospitals: HospitalDirectory
    acknowledged: AcknowledgedMessages = field(default_factory=RecentlyAcknowledged)
    max_message_bytes: int = 1_048_576
    local_timezone: tzinfo | None = None
    validate: bool = False
    max_batch: int = 256
    _batches: IngressBatches = field(init=False, repr=False)
    _in_flight: dict[str, _Write] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self._batches = IngressBatches(self.ingress, max_batch=self.max_batch)

    @property
    def batches(self) -> int:
        """How many produce batches were written so far (for tests and benches)."""
        return self._batches.batches

    @property
    def queued(self) -> int:
        """Records waiting for the next produce batch (for tests and benches)."""
        return self._batches.queued

    async def handle(self, frame: bytes) -> bytes:
        """The acknowledgment (ER7 bytes, unframed) of one message; never raises except on cancellation."""
        return (await self.answer(frame)).ack

    async def answer(self, frame: bytes, turn: Turn | None = None) -> Answer:
        """:meth:`handle`, also saying which registered hospital the frame came from (if any).

        With ``turn``, the record is submitted only once the turn came (and the turn is released in
        every case): see :class:`Turn`.
        """
        try:
            return await self._handle(frame, turn)
        except Exception as exc:  # noqa: BLE001 - a bug must cost one AE, never the connection or the listener
            log.error("mllp.internal_error", error=type(exc).__name__)  # noqa: TRY400 - a traceback may hold PHI
            text = "the hub could not process the message; send it again"
            return Answer(ack(frame, "AE", ErrorDetail(207, None, text)), sender=None)
        finally:
            if turn is not None:
                turn.release()

    async def close(self) -> None:
        """Wait until the records already submitted were written (or failed)."""
        await self._batches.close()

    async def _handle(self, frame: bytes, turn: Turn | None) -> Answer:
        try:
            message = parse_message(frame, max_bytes=self.max_message_bytes)
        except Hl7Error as error:
            return Answer(_refused(frame, error, sender=None), sender=None)
        try:
            sender = await self.hospitals.hospital_for_facility(message.header.facility_key)
        except HubError as exc:
            return Answer(_transient(message, exc, sender=None), sender=None)
        if sender is None:
            unknown = Hl7Error(
                "MSH-4 (sending facility) names no hospital registered with this hub",
                hl7_code=103,
                location=ErrorLocation("MSH", 4),
                ack_code="AR",
            )
            return Answer(_refused(message, unknown, sender=None), sender=None)
        return Answer(await self._accept(message, sender, turn), sender=sender)

    async def _accept(self, message: AdtMessage, sender: str, turn: Turn | None) -> bytes:
        ce_id = adt_event_id(sender, message)
        try:
            mapped = map_adt(message, sender=sender, local_timezone=self.local_timezone, validate=self.validate)
        except Hl7Error as error:
            return _refused(message, error, sender=sender)
        envelope = CloudEvent(id=mapped.event_id, source=f"/partners/{sender}", type=mapped.event_type, time=now())
        value, headers = encode(mapped.event), envelope.to_headers()
        if turn is not None:
            await turn.wait()
        try:
            if await self.acknowledged.contains(ce_id):
                log.info("mllp.retransmission", sender=sender, event_id=ce_id, status="AA")
                return ack(message, "AA")
        except HubError as exc:
            return _transient(message, exc, sender=sender)
        write = self._in_flight.get(ce_id)
        if write is None:
            write = _Write(self._batches.submit(key=mapped.key, value=value, headers=headers))
            self._in_flight[ce_id] = write
        write.waiters += 1
        if turn is not None:
            turn.release()
        try:
            try:
                await asyncio.shield(write.done)
            except HubError as exc:
                return _transient(message, exc, sender=sender)
            try:
                await self.acknowledged.add(ce_id)
            except HubError:  # stored already; a retransmission keeps its ce_id and is de-duplicated downstream
                log.warning("mllp.remember_failed", sender=sender, event_id=ce_id)
            log.info("mllp.accepted", sender=sender, event_id=ce_id, status="AA")
            return ack(message, "AA")
        finally:
            write.waiters -= 1
            if (write.waiters == 0 or _failed(write.done)) and self._in_flight.get(ce_id) is write:
                del self._in_flight[ce_id]  # remembered as acknowledged, or failed: a resend writes again


def _failed(done: asyncio.Future[None]) -> bool:
    return done.done() and (done.cancelled() or done.exception() is not None)


def _refused(message: bytes | AdtMessage, error: Hl7Error, *, sender: str | None) -> bytes:
    log.info("mllp.refused", sender=sender, status=error.ack_code, error=error.hl7_code, reason=error.expression)
    return ack(message, error.ack_code, error)


def _transient(message: AdtMessage, exc: HubError, *, sender: str | None) -> bytes:
    retryable = isinstance(exc, RetryableError)
    log.warning("mllp.not_stored", sender=sender, status=TRANSIENT_FAILURE_ACK, error=type(exc).__name__)
    text = (
        "the hub could not store the message right now; send it again"
        if retryable
        else "the hub could not process the message; send it again"
    )
    return ack(message, TRANSIENT_FAILURE_ACK, ErrorDetail(207, None, text))


# --- framing ----------------------------------------------------------------------------------


class FrameTooLarge(Exception):
    """A frame exceeded the limit; ``head`` holds its first bytes (to answer its MSH)."""

    def __init__(self, head: bytes) -> None:
        super().__init__("MLLP frame larger than the limit")
        self.head = head


class NotAFrame(Exception):
    """A block ended by ``<FS><CR>`` that never started with ``<VT>``; ``block`` is its content."""

    def __init__(self, block: bytes) -> None:
        super().__init__("MLLP block without a start block character")
        self.block = block


class MllpFrameReader(HL7StreamReader):  # type: ignore[misc]  # python-hl7 ships no type hints
    """python-hl7's ``HL7StreamReader`` with a lenient, bounded :meth:`read_frame`."""

    async def first_byte(self) -> bytes:
        """Wait for the next frame to begin: its first byte (consumed; hand it to :meth:`read_frame`).

        Raises ``asyncio.IncompleteReadError`` when the peer closed instead.
        """
        first: bytes = await self.read(1)
        if not first:
            raise asyncio.IncompleteReadError(b"", 1)
        return first

    async def read_frame(self, first: bytes = b"") -> bytes:
        """The content of the next frame (between ``<VT>`` and ``<FS><CR>``); ``first`` is its first
        byte when :meth:`first_byte` already took it.

        Raises ``asyncio.IncompleteReadError`` at end of stream (also mid-frame), :class:`FrameTooLarge`
        when no frame end comes within the limit, :class:`NotAFrame` for a block without ``<VT>``.
        """
        # An empty garbage block (``<FS><CR>`` alone) whose <FS> is ``first`` is not seen as a block end:
        # it joins the next block, where only what follows the last <VT> counts, so no frame is lost.
        try:
            block: bytes = first + await self.readuntil(END_BLOCK)
        except asyncio.LimitOverrunError:
            head: bytes = first + await self.read(_HEAD_BYTES)
            raise FrameTooLarge(head) from None
        start = block.rfind(START_BLOCK)
        if start < 0:
            raise NotAFrame(block[: -len(END_BLOCK)])
        return block[start + 1 : -len(END_BLOCK)]


# --- the server -------------------------------------------------------------------------------


@dataclass(eq=False)
class _Connection:
    slot: Slot
    task: asyncio.Task[None] | None = None
    #: The task reading this connection's frames; cancelled on stop, after which the answers already
    #: owed are still written.
    reader: asyncio.Task[None] | None = None


@dataclass
class _Connections:
    table: SlotTable
    open: dict[Slot, _Connection] = field(default_factory=dict)
    closing: bool = False


class MllpServer:
    """A running MLLP listener: its address, and :meth:`stop`. Use as ``async with`` to stop on exit."""

    def __init__(self, server: asyncio.Server, connections: _Connections, intake: AdtIntake) -> None:
        self.server = server
        self.intake = intake
        self._connections = connections
        self._port = int(server.sockets[0].getsockname()[1])

    @property
    def port(self) -> int:
        """The bound TCP port (useful with ``port=0``); still known after :meth:`stop`."""
        return self._port

    @property
    def limits(self) -> ConnectionLimits:
        """The connection limits and timeouts this listener applies."""
        return self._connections.table.limits

    @property
    def connection_count(self) -> int:
        """Connections currently open."""
        return len(self._connections.open)

    async def stop(self, *, grace: float = 5.0) -> None:
        """Stop accepting; let messages already being processed get their ACK (up to ``grace``
        seconds); close every connection. A message cut off gets no ACK, so its sender resends it."""
        self.server.close()
        self._connections.closing = True
        for connection in list(self._connections.open.values()):
            if connection.reader is not None:
                connection.reader.cancel()  # no more frames; the ACKs owed are still written
            elif connection.task is not None:
                connection.task.cancel()
        tasks = [c.task for c in self._connections.open.values() if c.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self.intake.close()
        await self.server.wait_closed()

    async def __aenter__(self) -> MllpServer:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()


async def start_mllp_server(
    *,
    host: str,
    port: int,
    ingress: IngressWriter,
    hospitals: HospitalDirectory,
    acknowledged: AcknowledgedMessages | None = None,
    max_message_bytes: int = 1_048_576,
    limits: ConnectionLimits | None = None,
    local_timezone: tzinfo | None = None,
    validate: bool = False,
) -> MllpServer:
    """Listen for HL7 v2 ADT over MLLP on ``host:port`` (``port=0``: any free port, see ``.port``).

    * ``ingress`` writes each accepted event to ``hub.ingress`` (AA after it returned);
    * ``hospitals`` maps MSH-4 to the sending hospital partner;
    * ``acknowledged`` remembers the ce_ids acknowledged AA (retransmissions are answered AA without
      a write); default a fresh :class:`RecentlyAcknowledged` (share one between listeners of a hub);
    * ``max_message_bytes`` bounds one frame and so each connection's buffer (a longer frame: AR 104,
      connection closed);
    * ``limits``: how many connections (in all, per source IP, reserved for identified hospitals) and
      how long a connection may stay unidentified, take over one frame, or idle; see
      :mod:`hub.adapters.mllp_limits` (default :class:`~hub.adapters.mllp_limits.ConnectionLimits`);
    * ``local_timezone``: the hospitals' time zone, for HL7 times without a UTC offset (``None``:
      keep only their date); ``validate``: also check each generated Encounter with the R4B model
      (off: valid by construction and proven by the tests; see :mod:`hub.adapters.hl7_adt`).
    """
    intake = AdtIntake(
        ingress=ingress,
        hospitals=hospitals,
        acknowledged=acknowledged if acknowledged is not None else RecentlyAcknowledged(),
        max_message_bytes=max_message_bytes,
        local_timezone=local_timezone,
        validate=validate,
    )
    connections = _Connections(SlotTable(limits if limits is not None else ConnectionLimits()))
    loop = asyncio.get_running_loop()

    def protocol_factory() -> Any:
        reader = MllpFrameReader(limit=max_message_bytes + 1, loop=loop)

        def connected(frames: MllpFrameReader, writer: HL7StreamWriter) -> None:
            if connections.closing:
                writer.close()
                return
            source = _source(writer)
            admission = connections.table.admit(source)
            for victim in admission.evicted:
                _evict(connections, victim)
            if admission.slot is None:
                log.warning(
                    "mllp.connection_refused", reason=admission.refused, source=source,
                    open=len(connections.table), unidentified=connections.table.unidentified,
                )
                writer.close()  # nothing written to it, so it closes at once
                return
            connection = _Connection(admission.slot)
            connections.open[admission.slot] = connection
            connection.task = loop.create_task(_serve(intake, connections, connection, frames, writer))
            connection.task.add_done_callback(lambda _: _forget(connections, connection))

        return HL7StreamProtocol(reader, connected, loop=loop)

    server = await loop.create_server(protocol_factory, host, port)
    log.info("mllp.listening", port=int(server.sockets[0].getsockname()[1]))
    return MllpServer(server, connections, intake)


def _source(writer: HL7StreamWriter) -> str:
    """The peer's IP address (the unit of the per-source limit)."""
    peer = writer.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"


def _evict(connections: _Connections, slot: Slot) -> None:
    """Close an idle unidentified connection to make room (its slot has already left the table)."""
    connection = connections.open.get(slot)
    if connection is not None and connection.task is not None:
        log.info("mllp.connection_evicted", source=slot.source, unidentified=connections.table.unidentified)
        connection.task.cancel()


def _forget(connections: _Connections, connection: _Connection) -> None:
    connections.open.pop(connection.slot, None)
    connections.table.release(connection.slot)


class _Timeout(Exception):
    """A connection ran out of time; ``phase`` says which limit (for the log)."""

    def __init__(self, phase: Literal["identify", "frame", "idle", "send"]) -> None:
        super().__init__(phase)
        self.phase = phase


class _Pipeline:
    """One connection's frames between arrival and ACK: at most ``limits.max_in_flight`` at once,
    answered concurrently, their ACKs queued in arrival order."""

    def __init__(self, slot: Slot, window: int) -> None:
        self.slot = slot
        self.order = WriteOrder()
        self.linger = False  #: after the last ACK, read and discard for a moment before closing
        self._room = asyncio.Semaphore(window)
        self._answers: asyncio.Queue[asyncio.Future[bytes] | None] = asyncio.Queue()
        self._settled = asyncio.Event()
        self._settled.set()
        #: Set once a frame identified the connection (a reader waiting under the identify deadline wakes).
        self.identified = asyncio.Event()

    async def admit(self) -> None:
        """Wait for room for one more frame, and count it as owed an ACK."""
        await self._room.acquire()
        self.slot.busy += 1
        self._settled.clear()

    def answer(self, acknowledgment: asyncio.Future[bytes]) -> None:
        """Queue the ACK of the frame just admitted (a task still computing it, or a done future)."""
        self._answers.put_nowait(acknowledgment)

    def answer_now(self, acknowledgment: bytes) -> None:
        """Queue an ACK known already (a refused block), in its turn."""
        ready: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        ready.set_result(acknowledgment)
        self.answer(ready)

    def end(self) -> None:
        """No more frames will come: the writer stops after the ACKs queued so far."""
        self._answers.put_nowait(None)

    async def next(self) -> asyncio.Future[bytes] | None:
        """The next ACK to write, in arrival order (``None``: no more)."""
        return await self._answers.get()

    def sent(self) -> None:
        """One ACK left: make room for one more frame."""
        self.slot.busy -= 1
        self._room.release()
        if not self.slot.busy:
            self._settled.set()

    async def settled(self) -> None:
        """Wait until no frame is owed an ACK."""
        await self._settled.wait()

    def abandon(self) -> None:
        """The connection is going: stop answering the frames still queued (their senders get no ACK)."""
        while not self._answers.empty():
            pending = self._answers.get_nowait()
            if pending is not None:
                pending.cancel()
                self.slot.busy -= 1


async def _serve(
    intake: AdtIntake,
    connections: _Connections,
    connection: _Connection,
    frames: MllpFrameReader,
    writer: HL7StreamWriter,
) -> None:
    """One connection: a reader takes frames as they come (a sender may send several before it reads
    an ACK) and starts answering each at once, up to ``limits.max_in_flight``; this task writes the
    ACKs strictly in arrival order, each once its own answer is ready, until the peer leaves,
    misbehaves or runs out of time."""
    slot, limits = connection.slot, connections.table.limits
    pipeline = _Pipeline(slot, limits.max_in_flight)
    connection.reader = asyncio.create_task(_read(intake, connections, slot, frames, pipeline))
    try:
        while (pending := await pipeline.next()) is not None:
            await _send(writer, await pending, limits)
            pipeline.sent()
        if pipeline.linger:
            await _linger(frames, writer)
    except _Timeout as timeout:
        log.info("mllp.connection_timeout", phase=timeout.phase, identified=slot.identified, source=slot.source)
    except (ConnectionError, OSError) as exc:
        log.info("mllp.connection_lost", error=type(exc).__name__)
    finally:
        connection.reader.cancel()
        pipeline.abandon()
        with contextlib.suppress(asyncio.CancelledError):
            await connection.reader
        await _close(writer)


async def _read(
    intake: AdtIntake, connections: _Connections, slot: Slot, frames: MllpFrameReader, pipeline: _Pipeline
) -> None:
    """Read frames and start answering each, until the peer leaves, misbehaves or runs out of time,
    or the listener stops; then tell the writer that no more frames come."""
    limits = connections.table.limits
    identify_by = asyncio.get_running_loop().time() + limits.identify_timeout
    try:
        while not connections.closing:
            try:
                frame = await _receive(frames, slot, limits, identify_by, pipeline)
            except NotAFrame as garbage:
                detail = ErrorDetail(100, None, "an MLLP frame starts with <VT> (0x0B) and ends with <FS><CR>")
                await pipeline.admit()
                pipeline.answer_now(ack(garbage.block, "AR", detail))
                continue
            except FrameTooLarge as large:
                limit = intake.max_message_bytes
                body = large.head[large.head.find(START_BLOCK) + 1 :]
                await pipeline.admit()
                pipeline.answer_now(ack(body, "AR", ErrorDetail(104, None, f"the frame is larger than {limit} bytes")))
                log.warning("mllp.frame_too_large", status="AR")
                pipeline.linger = True
                break
            await pipeline.admit()
            turn = pipeline.order.next()  # taken now, in arrival order
            pipeline.answer(asyncio.create_task(_answer(intake, connections.table, frame, turn, pipeline)))
    except asyncio.IncompleteReadError:
        pass  # the peer closed (maybe mid-frame); the frames it sent before are still answered
    except _Timeout as timeout:
        log.info("mllp.connection_timeout", phase=timeout.phase, identified=slot.identified, source=slot.source)
    except (ConnectionError, OSError) as exc:
        log.info("mllp.connection_lost", error=type(exc).__name__)
    finally:
        pipeline.end()


async def _answer(intake: AdtIntake, table: SlotTable, frame: bytes, turn: Turn, pipeline: _Pipeline) -> bytes:
    """Answer one frame; a frame from a registered hospital identifies its connection."""
    answer = await intake.answer(frame, turn)
    if answer.sender is not None:
        table.identify(pipeline.slot)
        pipeline.identified.set()
    return answer.ack


async def _receive(
    frames: MllpFrameReader, slot: Slot, limits: ConnectionLimits, identify_by: float, pipeline: _Pipeline
) -> bytes:
    """The next frame, within the connection's time limits (:class:`_Timeout` otherwise).

    Waiting for a frame to begin: an unidentified connection until ``identify_by``, an identified
    one for ``limits.idle_timeout``. Once its first byte came, the whole frame within
    ``limits.frame_timeout`` (and still by ``identify_by`` when unidentified), however the bytes
    trickle in. A connection whose frames are still being answered when ``identify_by`` comes may
    yet be identified by them: it is given until they were answered.
    """
    loop = asyncio.get_running_loop()
    idle_from = loop.time()

    def begin_by() -> float | None:
        if not slot.identified:
            return identify_by
        return None if limits.idle_timeout is None else idle_from + limits.idle_timeout

    first = await _by(begin_by, frames.first_byte, slot, pipeline, lambda: "idle" if slot.identified else "identify")
    frame_by = loop.time() + limits.frame_timeout

    def end_by() -> float:
        return frame_by if slot.identified else min(frame_by, identify_by)

    def phase() -> Literal["frame", "identify"]:
        return "frame" if slot.identified or frame_by < identify_by else "identify"

    return await _by(end_by, lambda: frames.read_frame(first), slot, pipeline, phase)


async def _by(
    deadline: Callable[[], float | None],
    read: Callable[[], Awaitable[bytes]],
    slot: Slot,
    pipeline: _Pipeline,
    phase: Callable[[], Literal["identify", "frame", "idle"]],
) -> bytes:
    """``read()`` before ``deadline()``; the deadline is asked again when it passed, because the
    connection may have been identified meanwhile (``read`` loses nothing when cut off)."""
    while True:
        when = deadline()
        try:
            async with asyncio.timeout_at(when):
                if slot.identified or not slot.busy:
                    return await read()
                data = await _unless_identified(read, pipeline)
                if data is not None:
                    return data
                continue  # identified meanwhile: its deadline applies from now on
        except TimeoutError:
            if not slot.identified and slot.busy:  # a frame being answered may identify the connection yet
                await pipeline.settled()
            elif deadline() == when:
                raise _Timeout(phase()) from None


async def _unless_identified(read: Callable[[], Awaitable[bytes]], pipeline: _Pipeline) -> bytes | None:
    """``read()``, or ``None`` as soon as one of the frames being answered identified the connection."""
    reading = asyncio.ensure_future(read())
    identified = asyncio.ensure_future(pipeline.identified.wait())
    try:
        await asyncio.wait((reading, identified), return_when=asyncio.FIRST_COMPLETED)
    finally:
        identified.cancel()
        if not reading.done():
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading
    return reading.result() if not reading.cancelled() else None


async def _close(writer: HL7StreamWriter) -> None:
    """Close after the last ACK left; a peer that does not read it within a moment is reset, so a
    slow reader cannot keep a closed connection (and its slot) alive."""
    writer.close()
    try:
        async with asyncio.timeout(_LINGER_SECONDS):
            await writer.wait_closed()
    except TimeoutError:
        writer.transport.abort()
    except Exception:  # noqa: BLE001, S110 - the peer is gone either way
        pass


async def _linger(frames: MllpFrameReader, writer: HL7StreamWriter) -> None:
    """Half-close and discard what the peer still sends for a moment, so it can read our AR before
    the close (closing with unread input would reset the connection and could lose the AR)."""
    if writer.can_write_eof():
        writer.write_eof()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(_LINGER_SECONDS):
            while await frames.read(65_536):
                pass


async def _send(writer: HL7StreamWriter, acknowledgment: bytes, limits: ConnectionLimits) -> None:
    """Write one ACK frame; a peer that does not read its ACKs for ``frame_timeout`` is dropped."""
    writer.writeblock(acknowledgment)
    try:
        async with asyncio.timeout(limits.frame_timeout):
            await writer.drain()
    except TimeoutError:
        raise _Timeout("send") from None
