"""The MLLP listener over real TCP: hospitals' python-hl7 ``MLLPClient`` and raw sockets for misbehaving peers.

Every test starts its own listener on port 0 with in-memory fakes behind it, and most end by
checking that a good message still gets its AA: one bad peer must never cost anyone else.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import orjson
import pytest
from hl7.client import MLLPClient

from hub.adapters.mllp import MllpServer, RecentlyAcknowledged, start_mllp_server
from hub.adapters.mllp_limits import ConnectionLimits
from hub.events import CloudEvent, decode
from tests.adapters.hl7_fakes import (
    FACILITY,
    HOSPITAL,
    FakeHospitalDirectory,
    GatedIngress,
    adt,
    client_send,
    make_intake,
    read_ack,
)
from tests.fakes import FakeIngressWriter

VT, FS_CR = b"\x0b", b"\x1c\r"
LIMIT = 1_048_576


@dataclass
class Listener:
    """A running listener and the fakes behind it."""

    server: MllpServer
    ingress: FakeIngressWriter
    hospitals: FakeHospitalDirectory

    @property
    def port(self) -> int:
        """The bound port."""
        return self.server.port


async def _start(ingress: FakeIngressWriter | None = None, **kwargs: object) -> Listener:
    ingress = ingress if ingress is not None else FakeIngressWriter()
    hospitals = FakeHospitalDirectory()
    server = await start_mllp_server(
        host="127.0.0.1",
        port=0,
        ingress=ingress,
        hospitals=hospitals,
        **kwargs,  # type: ignore[arg-type]
    )
    return Listener(server, ingress, hospitals)


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    """A listener whose broker acknowledges every write."""
    running = await _start()
    yield running
    await running.server.stop()


def message(number: int, **fields: str) -> bytes:
    """A valid ADT^A01 with MSH-10 ``MSG-<number>`` and a patient of its own."""
    return adt({"MSH-10": f"MSG-{number}", "PID-3": f"P{number}^^^GHH", **fields})


def send_all(port: int, messages: list[bytes]) -> list[bytes]:
    """One MLLPClient connection sending ``messages`` in order (blocking: run it in a thread)."""
    with MLLPClient("127.0.0.1", port) as client:
        return [client_send(client, data) for data in messages]


async def raw_exchange(port: int, payload: bytes, *, frames: int = 1) -> list[bytes]:
    """Write raw bytes on a fresh socket and read ``frames`` ACK frames back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        return [await asyncio.wait_for(reader.readuntil(FS_CR), 5) for _ in range(frames)]
    finally:
        writer.close()
        await writer.wait_closed()


async def still_serving(listener: Listener, number: int = 999_999) -> None:
    """A good message on a new connection gets AA and is written."""
    before = len(listener.ingress.written)
    [answer] = await asyncio.to_thread(send_all, listener.port, [message(number)])
    assert ("AA", f"MSG-{number}") == (read_ack(answer).code, read_ack(answer).control_id)
    assert before + 1 == len(listener.ingress.written)


# --- hospitals using the python-hl7 client ----------------------------------------------------


async def test_fifty_messages_on_one_connection_are_each_acknowledged_aa_in_order(listener: Listener) -> None:
    """Each ACK echoes its own MSH-10 in MSA-2; each message is written once, in order."""
    messages = [message(n) for n in range(50)]
    answers = await asyncio.to_thread(send_all, listener.port, messages)
    assert [("AA", f"MSG-{n}") for n in range(50)] == [(read_ack(a).code, read_ack(a).control_id) for a in answers]
    assert [f"{HOSPITAL}|urn:carehub:partner:{HOSPITAL}:assigner:GHH|P{n}".encode() for n in range(50)] == [
        key for key, _, _ in listener.ingress.written
    ]


async def test_a_written_event_is_the_canonical_encounter_event(listener: Listener) -> None:
    """Value: HubEvent with the Encounter body and the HL7 original; headers: CloudEvent binary mode."""
    await asyncio.to_thread(send_all, listener.port, [message(1)])
    [(_, value, headers)] = listener.ingress.written
    event = decode(value)
    envelope = CloudEvent.from_headers(headers)
    assert ("org.carehub.encounter.admit", f"/partners/{HOSPITAL}") == (envelope.type, envelope.source)
    assert envelope.id == event.facts.resource_id
    assert "Encounter" == orjson.loads(event.body)["resourceType"]
    assert message(1).decode() == event.original
    assert "x-application/hl7-v2+er7" == event.original_media_type


async def test_eight_concurrent_connections_of_fifty_messages_are_all_acknowledged(listener: Listener) -> None:
    """400 messages over 8 simultaneous connections: 400 AA, 400 writes, 400 distinct event ids."""
    batches = [[message(c * 1000 + n) for n in range(50)] for c in range(8)]
    results = await asyncio.gather(*(asyncio.to_thread(send_all, listener.port, b) for b in batches))
    assert 400 == sum(1 for answers in results for a in answers if read_ack(a).code == "AA")
    assert 400 == len({headers["ce_id"] for _, _, headers in listener.ingress.written})


async def test_a_retransmission_is_acknowledged_aa_without_a_second_event(listener: Listener) -> None:
    """Same MSH-10, same content (new MSH-7), again and on another connection: AA, one write."""
    first = message(7)
    again = message(7, **{"MSH-7": "20250116000000+0100"})
    answers = await asyncio.to_thread(send_all, listener.port, [first, again])
    answers += await asyncio.to_thread(send_all, listener.port, [again])
    assert ["AA", "AA", "AA"] == [read_ack(a).code for a in answers]
    assert 1 == len(listener.ingress.written)


async def test_a_control_id_reused_for_a_different_message_is_a_new_event(listener: Listener) -> None:
    """Same MSH-10, different content: not a retransmission, so it is written with its own ce_id."""
    answers = await asyncio.to_thread(send_all, listener.port, [message(8), message(8, **{"MSH-9": "ADT^A03"})])
    assert ["AA", "AA"] == [read_ack(a).code for a in answers]
    assert 2 == len({headers["ce_id"] for _, _, headers in listener.ingress.written})


async def test_the_aa_is_sent_only_after_the_broker_acknowledged() -> None:
    """While the write waits for the broker, the sender has no ACK; it comes once the write returns."""
    ingress = GatedIngress()
    running = await _start(ingress)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
        writer.write(VT + message(1) + FS_CR)
        await writer.drain()
        await ingress.entered.wait()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.readuntil(FS_CR), 0.2)
        assert [] == ingress.written
        ingress.gate.set()
        assert "AA" == read_ack(await asyncio.wait_for(reader.readuntil(FS_CR), 5)).code
        writer.close()
        await writer.wait_closed()
    finally:
        await running.server.stop()


async def test_a_retransmission_racing_its_original_on_another_connection_is_written_once() -> None:
    """Original still waiting for the broker, the resend arrives elsewhere: both AA, one write."""
    ingress = GatedIngress()
    running = await _start(ingress)
    try:
        first = asyncio.create_task(raw_exchange(running.port, VT + message(3) + FS_CR))
        await ingress.entered.wait()
        second = asyncio.create_task(raw_exchange(running.port, VT + message(3) + FS_CR))
        await asyncio.sleep(0.05)
        ingress.gate.set()
        answers = [*await first, *await second]
        assert ["AA", "AA"] == [read_ack(a).code for a in answers]
        assert 1 == len(ingress.written)
    finally:
        await running.server.stop()


async def test_a_broker_that_does_not_acknowledge_gets_ae_207_and_the_resend_succeeds(listener: Listener) -> None:
    """Broker down: AE with ERR-3 207, nothing written, no AA. Broker back: the resend is AA, written once."""
    listener.ingress.fail = True
    [down] = await asyncio.to_thread(send_all, listener.port, [message(5)])
    answer = read_ack(down)
    assert ("AE", "207", "MSG-5") == (answer.code, answer.error_code, answer.control_id)
    assert [] == listener.ingress.written
    listener.ingress.fail = False
    [up] = await asyncio.to_thread(send_all, listener.port, [message(5)])
    assert "AA" == read_ack(up).code
    assert 1 == len(listener.ingress.written)


async def test_an_unavailable_facility_directory_gets_ae_207(listener: Listener) -> None:
    """The control plane did not answer: AE 207, nothing written, and the next message is fine."""
    listener.hospitals.fail = True
    [answer] = await asyncio.to_thread(send_all, listener.port, [message(6)])
    assert ("AE", "207") == (read_ack(answer).code, read_ack(answer).error_code)
    listener.hospitals.fail = False
    await still_serving(listener)


async def test_an_unknown_sending_facility_is_rejected_ar_at_msh_4(listener: Listener) -> None:
    """MSH-4 names no registered hospital: AR, ERR MSH-4 code 103."""
    [answer] = await asyncio.to_thread(send_all, listener.port, [message(9, **{"MSH-4": "NOT-REGISTERED"})])
    assert ("AR", "103", "MSH-4") == (read_ack(answer).code, read_ack(answer).error_code, read_ack(answer).location)
    assert [] == listener.ingress.written
    assert ["NOT-REGISTERED"] == listener.hospitals.asked


async def test_a_broken_message_gets_its_error_and_the_connection_goes_on(listener: Listener) -> None:
    """AE at PID-3, then a good message on the same connection: AA."""
    answers = await asyncio.to_thread(send_all, listener.port, [message(10, **{"PID-3": ""}), message(11)])
    assert [("AE", "PID-3"), ("AA", "")] == [(read_ack(a).code, read_ack(a).location) for a in answers]


# --- misbehaving peers (raw sockets) ----------------------------------------------------------


async def test_garbage_ended_like_a_frame_gets_an_ar_and_the_connection_stays_usable(listener: Listener) -> None:
    """No <VT>: AR 100 with an empty MSA-2; the next, proper frame on the same socket gets AA."""
    answers = await raw_exchange(listener.port, b"\x00\xffgarbage" + FS_CR + VT + message(12) + FS_CR, frames=2)
    assert [("AR", "100", ""), ("AA", "", "MSG-12")] == [
        (read_ack(a).code, read_ack(a).error_code, read_ack(a).control_id) for a in answers
    ]


async def test_line_ends_between_frames_are_ignored(listener: Listener) -> None:
    """Bytes before <VT> (some senders add CR LF after each frame) are outside any frame."""
    payload = VT + message(13) + FS_CR + b"\r\n" + VT + message(14) + FS_CR
    answers = await raw_exchange(listener.port, payload, frames=2)
    assert ["MSG-13", "MSG-14"] == [read_ack(a).control_id for a in answers]


async def test_pipelined_frames_in_one_write_are_answered_in_order(listener: Listener) -> None:
    """Ten frames sent at once: ten ACKs, in the order of the frames."""
    payload = b"".join(VT + message(n) + FS_CR for n in range(20, 30))
    answers = await raw_exchange(listener.port, payload, frames=10)
    assert [f"MSG-{n}" for n in range(20, 30)] == [read_ack(a).control_id for a in answers]


async def test_half_a_frame_then_close_costs_nothing(listener: Listener) -> None:
    """A peer that leaves mid-frame: nothing written, connection cleaned up, listener serving."""
    _, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    writer.write(VT + message(15)[:40])
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    await still_serving(listener)
    assert 1 == len(listener.ingress.written)


async def test_a_twenty_megabyte_frame_gets_ar_104_and_the_connection_is_closed(listener: Listener) -> None:
    """The frame is refused after the limit (never buffered whole): AR 104 echoing MSH-10, then EOF."""
    huge = VT + message(16, **{"PV1-3": "x" * (20 * 1024 * 1024)}) + FS_CR
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)

    async def push() -> None:
        try:
            writer.write(huge)
            await writer.drain()
        except ConnectionError:
            pass

    pushing = asyncio.create_task(push())
    received = await asyncio.wait_for(reader.read(), 10)
    await pushing
    writer.close()
    answer = read_ack(received)
    assert ("AR", "104", "MSG-16") == (answer.code, answer.error_code, answer.control_id)
    await still_serving(listener)
    assert 1 == len(listener.ingress.written)


async def test_endless_garbage_is_cut_off_while_other_peers_are_served(listener: Listener) -> None:
    """A peer streaming bytes that never end a frame is disconnected at the limit; meanwhile a
    well-behaved hospital on another connection gets its AAs."""
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)

    async def flood() -> None:
        chunk = b"\x0bnot hl7 " * 8192
        try:
            for _ in range(4 * LIMIT // len(chunk)):
                writer.write(chunk)
                await writer.drain()
        except ConnectionError:
            pass

    flooding = asyncio.create_task(flood())
    answers = await asyncio.to_thread(send_all, listener.port, [message(n) for n in range(40, 45)])
    assert ["AA"] * 5 == [read_ack(a).code for a in answers]
    received = await asyncio.wait_for(reader.read(), 10)
    await flooding
    writer.close()
    assert b"" == received or "AR" == read_ack(received).code


async def test_eight_garbage_peers_and_eight_hospitals_at_once() -> None:
    """Mixed load: every hospital message is AA and written; every garbage peer gets AR or EOF."""
    running = await _start()
    try:

        async def garbage(n: int) -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
            writer.write(bytes([n]) * 1000 + FS_CR + VT + b"MSH|^~" + FS_CR)
            await writer.drain()
            data = b"".join([await reader.readuntil(FS_CR), await reader.readuntil(FS_CR)])
            writer.close()
            return data

        hospitals = [
            asyncio.to_thread(send_all, running.port, [message(c * 100 + n) for n in range(10)]) for c in range(8)
        ]
        batches, refusals = await asyncio.gather(
            asyncio.gather(*hospitals), asyncio.gather(*(garbage(n) for n in range(8)))
        )
        assert 80 == sum(read_ack(a).code == "AA" for batch in batches for a in batch)
        assert 80 == len(running.ingress.written)
        for data in refusals:
            assert 2 == data.count(b"MSA|AR|")
    finally:
        await running.server.stop()


async def test_connections_over_the_limit_are_closed_at_once() -> None:
    """``max_connections=2``: with two identified connections open, a third is closed at once; the two keep working."""
    running = await _start(limits=ConnectionLimits(max_connections=2, reserved=0))
    try:
        held = [await asyncio.open_connection("127.0.0.1", running.port) for _ in range(2)]
        for held_reader, held_writer in held:  # an answered frame proves the connection is being served
            held_writer.write(VT + message(50 + len(running.ingress.written)) + FS_CR)
            await held_writer.drain()
            assert "AA" == read_ack(await held_reader.readuntil(FS_CR)).code
        assert 2 == running.server.connection_count
        reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
        assert b"" == await asyncio.wait_for(reader.read(), 5)
        writer.close()
        for held_reader, held_writer in held:
            held_writer.write(VT + message(len(running.ingress.written) + 50) + FS_CR)
            await held_writer.drain()
            assert "AA" == read_ack(await held_reader.readuntil(FS_CR)).code
            held_writer.close()
        assert 4 == len(running.ingress.written)
    finally:
        await running.server.stop()


async def test_a_peer_that_connects_and_sends_nothing_is_closed_after_the_identify_timeout() -> None:
    """A peer that never delivers a frame is disconnected once ``identify_timeout`` ran out."""
    running = await _start(limits=ConnectionLimits(identify_timeout=0.1))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
        assert b"" == await asyncio.wait_for(reader.read(), 5)
        writer.close()
    finally:
        await running.server.stop()


async def test_stop_lets_an_in_flight_message_get_its_ack_then_closes_everything() -> None:
    """Stopping while a write waits for the broker: that message still gets AA, idle peers get
    EOF, and the port stops accepting."""
    ingress = GatedIngress()
    running = await _start(ingress)
    busy_reader, busy_writer = await asyncio.open_connection("127.0.0.1", running.port)
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", running.port)
    busy_writer.write(VT + message(60) + FS_CR)
    await busy_writer.drain()
    await ingress.entered.wait()
    stopping = asyncio.create_task(running.server.stop(grace=5))
    await asyncio.sleep(0.05)
    ingress.gate.set()
    await stopping
    assert "AA" == read_ack(await busy_reader.readuntil(FS_CR)).code
    assert b"" == await idle_reader.read()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", running.port)
    busy_writer.close()
    idle_writer.close()


async def test_a_shared_acknowledged_memory_spans_listeners() -> None:
    """Two listeners of one hub sharing :class:`RecentlyAcknowledged`: a resend to the other is AA, not a write."""
    memory = RecentlyAcknowledged(capacity=10)
    ingress = FakeIngressWriter()
    first = await _start(ingress, acknowledged=memory)
    second = await _start(ingress, acknowledged=memory)
    try:
        await asyncio.to_thread(send_all, first.port, [message(70)])
        [answer] = await asyncio.to_thread(send_all, second.port, [message(70)])
        assert "AA" == read_ack(answer).code
        assert 1 == len(ingress.written)
    finally:
        await first.server.stop()
        await second.server.stop()


async def test_recently_acknowledged_forgets_the_least_recently_used() -> None:
    """Bounded memory: at capacity the oldest id goes; a looked-up id counts as recently used."""
    memory = RecentlyAcknowledged(capacity=2)
    await memory.add("a")
    await memory.add("b")
    assert await memory.contains("a")
    await memory.add("c")
    assert (True, False, True) == (await memory.contains("a"), await memory.contains("b"), await memory.contains("c"))
    assert 2 == len(memory)
    with pytest.raises(ValueError, match="capacity"):
        RecentlyAcknowledged(capacity=0)


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something else already listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


async def test_a_port_in_use_fails_at_start(busy_port: int) -> None:
    """Starting on a taken port raises OSError (the composition root reports it)."""
    with pytest.raises(OSError):
        await start_mllp_server(
            host="127.0.0.1",
            port=busy_port,
            ingress=FakeIngressWriter(),
            hospitals=FakeHospitalDirectory({FACILITY: HOSPITAL}),
        )


# --- the intake without sockets ---------------------------------------------------------------


async def test_three_copies_racing_in_the_intake_are_written_once() -> None:
    """Three handles of one message while the broker has not answered: one write, three AA."""
    ingress = GatedIngress()
    intake = make_intake(ingress)
    handles = [asyncio.create_task(intake.handle(message(80))) for _ in range(3)]
    await ingress.entered.wait()
    ingress.gate.set()
    answers = await asyncio.gather(*handles)
    assert ["AA", "AA", "AA"] == [read_ack(a).code for a in answers]
    assert 1 == len(ingress.written)


async def test_an_unexpected_failure_in_the_ingress_is_answered_ae_207() -> None:
    """An exception outside the hub's error tree (an untranslated driver error) costs one AE 207, no AA."""

    class Exploding(FakeIngressWriter):
        async def write(self, *, key: bytes, value: bytes, headers: dict[str, str]) -> None:
            raise RuntimeError("driver bug")

    answer = read_ack(await make_intake(Exploding()).handle(message(81)))
    assert ("AE", "207", "MSG-81") == (answer.code, answer.error_code, answer.control_id)


async def test_the_directory_is_asked_with_the_whole_sending_facility() -> None:
    """MSH-4 ``GHH^2.16.840.1.113883.19.1^ISO`` is looked up as written, components joined by ``^``."""
    hospitals = FakeHospitalDirectory({"GHH^2.16.840.1.113883.19.1^ISO": HOSPITAL})
    answer = read_ack(await make_intake(hospitals=hospitals).handle(adt({"MSH-4": "GHH^2.16.840.1.113883.19.1^ISO^"})))
    assert ("AA", ["GHH^2.16.840.1.113883.19.1^ISO"]) == (answer.code, hospitals.asked)


# --- starvation: connection limits and timeouts (issue 9) -------------------------------------


@dataclass
class Peer:
    """A raw connection from a chosen loopback address (the whole 127/8 is loopback on Linux)."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def closed_by_hub(self) -> bool:
        """Wait for the hub to close this connection: True on EOF or reset, False when bytes came instead."""
        try:
            return b"" == await self.reader.read(65_536)
        except ConnectionError:
            return True

    async def exchange(self, data: bytes) -> bytes:
        """Send one frame, read its ACK frame."""
        self.writer.write(VT + data + FS_CR)
        await self.writer.drain()
        return await asyncio.wait_for(self.reader.readuntil(FS_CR), 10)

    def close(self) -> None:
        """Close our end."""
        self.writer.close()


async def connect(port: int, source: str = "127.0.0.1", first: bytes = b"") -> Peer:
    """A connection from ``source`` that has sent ``first`` (e.g. half a frame)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    if first:
        writer.write(first)
        await writer.drain()
    return Peer(reader, writer)


HALF_FRAME = VT + message(0)[:40]


async def test_three_hundred_half_frame_connections_do_not_lock_out_a_registered_hospital() -> None:
    """The slow-loris flood of issue 9 with the default limits: 300 connections from ten addresses each
    send half a frame and wait. A hospital connecting after them gets its AA (on a listener that only
    counts connections it would be refused), and a hospital connected before the flood keeps working.
    Unidentified peers may hold only 256 - 32 slots, so 77 of the flood, the oldest, were closed.
    (Default limits; only the timeouts are long, so that no flood connection times out meanwhile.)"""
    running = await _start(limits=ConnectionLimits(identify_timeout=600, frame_timeout=600))
    try:
        before = await connect(running.port)
        assert "AA" == read_ack(await before.exchange(message(1))).code
        flood = [await connect(running.port, f"127.0.0.{2 + n % 10}", HALF_FRAME) for n in range(300)]
        hospital = await connect(running.port)  # accepted after the whole flood: the kernel queue is FIFO
        answer = read_ack(await hospital.exchange(message(2)))
        assert ("AA", "MSG-2") == (answer.code, answer.control_id)
        assert "AA" == read_ack(await before.exchange(message(3))).code
        assert 3 == len(running.ingress.written)
        closing = [asyncio.ensure_future(peer.closed_by_hub()) for peer in flood]
        evicted = [await closed for closed in itertools.islice(asyncio.as_completed(closing), 77)]
        assert [True] * 77 == evicted
        assert 2 + running.server.limits.unidentified_slots - 1 == running.server.connection_count
        for task in closing:
            task.cancel()
        for peer in [before, hospital, *flood]:
            peer.close()
    finally:
        await running.server.stop()


async def test_a_slow_loris_trickling_bytes_is_closed_once_its_frame_takes_longer_than_the_frame_timeout() -> None:
    """An identified connection (one AA) then trickles the next frame a byte at a time, each byte well
    within the frame timeout of the last: the hub closes it, unanswered, and writes nothing more."""
    running = await _start(limits=ConnectionLimits(frame_timeout=0.3, identify_timeout=60))
    try:
        loris = await connect(running.port)
        assert "AA" == read_ack(await loris.exchange(message(1))).code
        frame = VT + message(2, **{"PV1-3": "x" * 4000}) + FS_CR

        async def trickle() -> None:
            try:
                for byte in frame:
                    loris.writer.write(bytes([byte]))
                    await loris.writer.drain()
                    await asyncio.sleep(0.01)
            except ConnectionError:
                pass

        trickling = asyncio.create_task(trickle())
        assert await asyncio.wait_for(loris.closed_by_hub(), 30)  # an AA instead would fail here
        trickling.cancel()
        loris.close()
        assert 1 == len(running.ingress.written)
        await still_serving(running)
    finally:
        await running.server.stop()


async def test_half_a_frame_from_an_identified_connection_is_closed_after_the_frame_timeout() -> None:
    """A hospital's connection that stops in the middle of a frame does not hold its slot forever."""
    running = await _start(limits=ConnectionLimits(frame_timeout=0.2, identify_timeout=60))
    try:
        peer = await connect(running.port)
        assert "AA" == read_ack(await peer.exchange(message(1))).code
        peer.writer.write(HALF_FRAME)
        await peer.writer.drain()
        assert await asyncio.wait_for(peer.closed_by_hub(), 30)
        peer.close()
        assert 1 == len(running.ingress.written)
    finally:
        await running.server.stop()


async def test_a_peer_sending_only_unregistered_facilities_is_closed_at_the_identify_timeout() -> None:
    """Busy but never identified: each frame gets AR 103, and the connection ends at the identify
    timeout all the same - an unregistered peer never holds a slot for long."""
    running = await _start(limits=ConnectionLimits(identify_timeout=0.3))
    try:
        peer = await connect(running.port)
        codes: set[str] = set()

        async def keep_sending() -> None:
            for n in range(100_000):
                codes.add(read_ack(await peer.exchange(message(n, **{"MSH-4": "NOT-REGISTERED"}))).error_code)

        with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
            await keep_sending()
        peer.close()
        assert {"103"} == codes
        assert [] == running.ingress.written
    finally:
        await running.server.stop()


async def test_a_trickle_that_started_unidentified_is_closed_at_the_identify_timeout() -> None:
    """A new connection trickling its first frame for longer than the identify timeout is closed, even
    though that is shorter than the frame timeout."""
    running = await _start(limits=ConnectionLimits(identify_timeout=0.3, frame_timeout=600))
    try:
        peer = await connect(running.port, first=HALF_FRAME)

        async def trickle() -> None:
            try:
                while True:
                    peer.writer.write(b"x")
                    await peer.writer.drain()
                    await asyncio.sleep(0.01)
            except ConnectionError:
                pass

        trickling = asyncio.create_task(trickle())
        assert await asyncio.wait_for(peer.closed_by_hub(), 30)
        trickling.cancel()
        peer.close()
    finally:
        await running.server.stop()


async def test_a_hospitals_persistent_connection_stays_open_while_idle_and_keeps_working() -> None:
    """Identified, then silent for longer than the identify and frame timeouts (a marker connection
    opened after its AA is closed by the identify timeout first): the next message is still AA on
    the same connection. Interface engines hold connections open for hours."""
    running = await _start(limits=ConnectionLimits(identify_timeout=0.2, frame_timeout=0.2))
    try:
        hospital = await connect(running.port)
        assert "AA" == read_ack(await hospital.exchange(message(1))).code
        marker = await connect(running.port)
        assert await asyncio.wait_for(marker.closed_by_hub(), 30)
        marker.close()
        assert "AA" == read_ack(await hospital.exchange(message(2))).code
        hospital.close()
    finally:
        await running.server.stop()


async def test_an_identified_connection_idle_past_the_idle_timeout_is_closed() -> None:
    """With ``idle_timeout`` set, an identified connection silent that long is closed."""
    running = await _start(limits=ConnectionLimits(idle_timeout=0.2))
    try:
        hospital = await connect(running.port)
        assert "AA" == read_ack(await hospital.exchange(message(1))).code
        assert await asyncio.wait_for(hospital.closed_by_hub(), 30)
        hospital.close()
    finally:
        await running.server.stop()


async def test_one_address_holds_at_most_its_per_source_limit_and_others_are_unaffected() -> None:
    """Per-source limit 2: a third connection from one address closes that address's oldest
    unidentified connection; a hospital on another address still gets its AA."""
    running = await _start(limits=ConnectionLimits(max_per_source=2))
    try:
        first, second = [await connect(running.port, "127.0.0.2", HALF_FRAME) for _ in range(2)]
        third = await connect(running.port, "127.0.0.2", HALF_FRAME)
        assert await asyncio.wait_for(first.closed_by_hub(), 30)
        assert 2 == running.server.connection_count
        [answer] = await asyncio.to_thread(send_all, running.port, [message(1)])
        assert "AA" == read_ack(answer).code
        for peer in (first, second, third):
            peer.close()
    finally:
        await running.server.stop()


async def test_an_address_whose_connections_are_all_identified_is_refused_a_third() -> None:
    """Per-source limit 2, both identified: a third connection from that address is closed at once and
    the two keep working."""
    running = await _start(limits=ConnectionLimits(max_per_source=2))
    try:
        held = [await connect(running.port, "127.0.0.3") for _ in range(2)]
        for n, peer in enumerate(held):
            assert "AA" == read_ack(await peer.exchange(message(n))).code
        refused = await connect(running.port, "127.0.0.3")
        assert await asyncio.wait_for(refused.closed_by_hub(), 30)
        for n, peer in enumerate(held, start=10):
            assert "AA" == read_ack(await peer.exchange(message(n))).code
            peer.close()
        refused.close()
    finally:
        await running.server.stop()
