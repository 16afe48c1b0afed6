"""MLLP pipelining over real TCP: many frames in flight per connection, produce batches across connections.

A sender may write several frames before it reads an ACK. The listener answers them concurrently,
writes their records to ``hub.ingress`` in arrival order, and writes the ACKs strictly in arrival
order, each only after its own record was acknowledged. Concurrent messages (of one connection or of
many) share ``publish_many`` calls. Each test starts its own listener on port 0 with fakes behind it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from hub.adapters.mllp import MllpServer, start_mllp_server
from hub.adapters.mllp_limits import ConnectionLimits
from hub.errors import BrokerUnavailable
from hub.pipeline.publisher import Outgoing
from hub.topics.registry import INGRESS
from tests.adapters.hl7_fakes import HOSPITAL, FakeHospitalDirectory, adt, read_ack
from tests.fakes import FakeIngressWriter

VT, FS_CR = b"\x0b", b"\x1c\r"


def message(number: int, **fields: str) -> bytes:
    """A valid ADT^A01 with MSH-10 ``MSG-<number>`` and a patient of its own."""
    return adt({"MSH-10": f"MSG-{number}", "PID-3": f"P{number}^^^GHH", **fields})


def frame(data: bytes) -> bytes:
    """``data`` in an MLLP frame."""
    return VT + data + FS_CR


def control_id(record: Outgoing) -> str:
    """MSH-10 of the HL7 original carried by a written record (its patient key ends ``P<number>``)."""
    return "MSG-" + record.key.decode().rsplit("|P", 1)[1]


@dataclass
class RecordingPublisher:
    """A ``publish_many`` writer that records each call; ``gate`` holds calls, ``fails`` refuses a call."""

    calls: list[list[Outgoing]] = field(default_factory=list)
    failed: list[list[Outgoing]] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    fails: Callable[[Sequence[Outgoing]], bool] = lambda _: False

    def __post_init__(self) -> None:
        self.gate.set()

    @property
    def written(self) -> list[Outgoing]:
        """Every record of every acknowledged call, in order."""
        return [record for call in self.calls for record in call]

    async def publish_many(self, records: Sequence[Outgoing]) -> None:
        self.entered.set()
        await self.gate.wait()
        if self.fails(records):
            self.failed.append(list(records))
            raise BrokerUnavailable("the broker did not acknowledge")
        self.calls.append(list(records))

    async def write(self, *, key: bytes, value: bytes, headers: dict[str, str]) -> None:
        await self.publish_many([Outgoing(INGRESS.name, key, value, headers)])


async def start(ingress: object, hospitals: FakeHospitalDirectory | None = None, **kwargs: object) -> MllpServer:
    """A listener on port 0 over ``ingress``."""
    return await start_mllp_server(
        host="127.0.0.1",
        port=0,
        ingress=ingress,  # type: ignore[arg-type]
        hospitals=hospitals if hospitals is not None else FakeHospitalDirectory(),
        **kwargs,  # type: ignore[arg-type]
    )


async def burst(port: int, frames: Sequence[bytes], *, half_close: bool = False) -> list[bytes]:
    """Write every frame at once on a fresh connection, then read one ACK per frame."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"".join(frames))
        await writer.drain()
        if half_close:
            writer.write_eof()
        return [await asyncio.wait_for(reader.readuntil(FS_CR), 10) for _ in frames]
    finally:
        writer.close()


async def until(condition: Callable[[], bool]) -> None:
    """Let the event loop run until ``condition`` holds (the test's own timeout bounds it)."""
    async with asyncio.timeout(10):
        while not condition():  # noqa: ASYNC110 - the condition belongs to the code under test, no event to wait on
            await asyncio.sleep(0)


async def test_fifty_frames_written_without_waiting_get_fifty_acks_in_order() -> None:
    """One write of 50 frames, among them an unregistered facility (AR 103), a message without PID-3
    (AE), a block without <VT> (AR 100) and a retransmission of an earlier one: 50 ACKs, each echoing its
    own MSH-10, in the order of the frames; the accepted records reach the broker in that order too."""
    publisher = RecordingPublisher()
    server = await start(publisher)
    try:
        frames, expected = [], []
        for n in range(50):
            if n == 10:
                frames.append(frame(message(n, **{"MSH-4": "NOT-REGISTERED"})))
                expected.append(("AR", f"MSG-{n}"))
            elif n == 20:
                frames.append(frame(message(n, **{"PID-3": ""})))
                expected.append(("AE", f"MSG-{n}"))
            elif n == 30:
                frames.append(b"garbage" + FS_CR)
                expected.append(("AR", ""))
            elif n == 40:
                frames.append(frame(message(5)))  # the same message as frame 5: AA, not written again
                expected.append(("AA", "MSG-5"))
            else:
                frames.append(frame(message(n)))
                expected.append(("AA", f"MSG-{n}"))
        answers = await burst(server.port, frames)
        assert expected == [(read_ack(a).code, read_ack(a).control_id) for a in answers]
        accepted = [f"MSG-{n}" for n in range(50) if n not in {10, 20, 30, 40}]
        assert accepted == [control_id(r) for r in publisher.written]
    finally:
        await server.stop()


@dataclass
class GatedDirectory(FakeHospitalDirectory):
    """A directory whose answer for facility ``F<n>`` waits for ``gates[n]``."""

    gates: dict[str, asyncio.Event] = field(default_factory=dict)

    async def hospital_for_facility(self, facility: str) -> str | None:
        await self.gates.setdefault(facility, asyncio.Event()).wait()
        return HOSPITAL


async def test_frames_whose_answers_finish_in_reverse_order_are_written_and_acknowledged_in_arrival_order() -> None:
    """Ten pipelined frames whose facility lookups finish last-first: the broker still gets the
    records in arrival order (a patient's A01 before its A03), and the ACKs come in arrival order."""
    publisher = RecordingPublisher()
    hospitals = GatedDirectory()
    server = await start(publisher, hospitals)
    try:
        frames = [frame(message(n, **{"MSH-4": f"F{n}"})) for n in range(10)]
        answering = asyncio.create_task(burst(server.port, frames))
        await until(lambda: len(hospitals.gates) == 10)  # all ten are being answered at once
        for n in reversed(range(10)):
            hospitals.gates[f"F{n}"].set()
            await asyncio.sleep(0)
        answers = await answering
        assert [("AA", f"MSG-{n}") for n in range(10)] == [(read_ack(a).code, read_ack(a).control_id) for a in answers]
        assert [f"MSG-{n}" for n in range(10)] == [control_id(r) for r in publisher.written]
    finally:
        await server.stop()


async def test_a_refused_frame_between_two_accepted_ones_does_not_let_the_later_one_pass() -> None:
    """MSG-0's facility lookup is slow, a garbage frame is refused at once, MSG-2 is quick: the garbage
    frame writes nothing, but MSG-2 must still reach the broker after MSG-0 (an A01 before its A03)."""
    publisher = RecordingPublisher()
    hospitals = GatedDirectory()
    server = await start(publisher, hospitals)
    try:
        frames = [frame(message(0, **{"MSH-4": "F0"})), frame(b"garbage"), frame(message(2, **{"MSH-4": "F2"}))]
        answering = asyncio.create_task(burst(server.port, frames))
        await until(lambda: {"F0", "F2"} <= set(hospitals.gates))
        hospitals.gates["F2"].set()  # the later message is ready first
        for _ in range(20):
            await asyncio.sleep(0)
        hospitals.gates["F0"].set()
        answers = await answering
        assert ["AA", "AR", "AA"] == [read_ack(a).code for a in answers]
        assert ["MSG-0", "MSG-2"] == [control_id(r) for r in publisher.written]
    finally:
        await server.stop()


async def test_no_ack_leaves_before_its_own_record_was_acknowledged() -> None:
    """The first record's batch is held by the broker while four more frames wait behind it. Each ACK,
    when it arrives, finds its own record among those the broker acknowledged; all five are AA."""
    publisher = RecordingPublisher()
    publisher.gate.clear()
    server = await start(publisher)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"".join(frame(message(n)) for n in range(5)))
        await writer.drain()

        async def read_acks() -> list[tuple[str, str, list[str]]]:
            arrived = []
            for _ in range(5):
                answer = read_ack(await asyncio.wait_for(reader.readuntil(FS_CR), 10))
                arrived.append((answer.code, answer.control_id, [control_id(r) for r in publisher.written]))
            return arrived

        reading = asyncio.create_task(read_acks())
        await until(lambda: server.intake.queued == 4)  # the other four wait behind the held batch
        publisher.gate.set()
        arrived = await reading
        assert [("AA", f"MSG-{n}") for n in range(5)] == [(code, msa2) for code, msa2, _ in arrived]
        assert all(msa2 in acknowledged for _, msa2, acknowledged in arrived)
        assert [1, 4] == [len(call) for call in publisher.calls]
        writer.close()
    finally:
        await server.stop()


async def test_a_broker_failure_in_a_pipelined_burst_gets_ae_for_exactly_the_messages_it_lost_in_order() -> None:
    """Every produce call that carries MSG-20..24 fails: each message of a failed call gets AE 207, every
    other message AA - before and after - in arrival order; only the AA messages are on the broker."""
    lost = {f"MSG-{n}" for n in range(20, 25)}
    publisher = RecordingPublisher(fails=lambda records: any(control_id(r) in lost for r in records))
    server = await start(publisher)
    try:
        answers = await burst(server.port, [frame(message(n)) for n in range(50)])
        failed = {control_id(r) for call in publisher.failed for r in call}
        assert lost <= failed
        expected = [("AE", "207", f"MSG-{n}") if f"MSG-{n}" in failed else ("AA", "", f"MSG-{n}") for n in range(50)]
        assert expected == [(read_ack(a).code, read_ack(a).error_code, read_ack(a).control_id) for a in answers]
        assert [f"MSG-{n}" for n in range(50) if f"MSG-{n}" not in failed] == [control_id(r) for r in publisher.written]
        assert "AA" == read_ack(answers[-1]).code  # the connection went on after the failure
    finally:
        await server.stop()


async def test_with_a_write_only_ingress_a_failure_reaches_only_its_own_message() -> None:
    """An ingress without ``publish_many`` is written record by record: in a pipelined burst only the
    messages whose own write failed get AE 207."""

    @dataclass
    class Refusing(FakeIngressWriter):
        refused: set[bytes] = field(default_factory=set)

        async def write(self, *, key: bytes, value: bytes, headers: dict[str, str]) -> None:
            if key in self.refused:
                raise BrokerUnavailable("the broker did not acknowledge")
            await super().write(key=key, value=value, headers=headers)

    keys = {f"{HOSPITAL}|urn:carehub:partner:{HOSPITAL}:assigner:GHH|P{n}".encode() for n in (3, 7)}
    ingress = Refusing(refused=keys)
    server = await start(ingress)
    try:
        answers = await burst(server.port, [frame(message(n)) for n in range(10)])
        assert ["AE" if n in (3, 7) else "AA" for n in range(10)] == [read_ack(a).code for a in answers]
        assert 8 == len(ingress.written)
    finally:
        await server.stop()


async def test_concurrent_connections_share_produce_batches() -> None:
    """Eight connections, one message each, while the broker holds the first batch: the other seven go
    to the broker together in one ``publish_many`` call, and every sender gets its own AA."""
    publisher = RecordingPublisher()
    publisher.gate.clear()
    server = await start(publisher)
    try:
        first = asyncio.create_task(burst(server.port, [frame(message(0))]))
        await publisher.entered.wait()
        others = [asyncio.create_task(burst(server.port, [frame(message(n))])) for n in range(1, 8)]
        await until(lambda: server.intake.queued == 7)
        publisher.gate.set()
        answers = [a for task in [first, *others] for a in await task]
        assert [("AA", f"MSG-{n}") for n in range(8)] == [(read_ack(a).code, read_ack(a).control_id) for a in answers]
        assert [["MSG-0"], [f"MSG-{n}" for n in range(1, 8)]] == [
            [control_id(r) for r in call] for call in publisher.calls
        ]
    finally:
        await server.stop()


async def test_a_connection_has_at_most_its_window_of_frames_in_flight() -> None:
    """``max_in_flight=4``: 40 pipelined frames; no produce batch ever holds more than four of them
    (a frame is read only once an earlier one's ACK left), and all 40 are AA in order."""
    publisher = RecordingPublisher()
    server = await start(publisher, limits=ConnectionLimits(max_in_flight=4))
    try:
        answers = await burst(server.port, [frame(message(n)) for n in range(40)])
        assert [f"MSG-{n}" for n in range(40)] == [read_ack(a).control_id for a in answers]
        assert 4 >= max(len(call) for call in publisher.calls)
        assert 40 == len(publisher.written)
    finally:
        await server.stop()


async def test_a_sender_that_half_closes_after_its_burst_still_gets_every_ack() -> None:
    """Frames, then end of stream from the sender: the frames already sent are answered before the close."""
    server = await start(RecordingPublisher())
    try:
        answers = await burst(server.port, [frame(message(n)) for n in range(10)], half_close=True)
        assert [f"MSG-{n}" for n in range(10)] == [read_ack(a).control_id for a in answers]
    finally:
        await server.stop()


async def test_stop_answers_the_frames_in_flight_before_closing() -> None:
    """Stopping while a pipelined burst waits for the broker: every frame already read gets its AA,
    then the connection is closed."""
    publisher = RecordingPublisher()
    publisher.gate.clear()
    server = await start(publisher)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"".join(frame(message(n)) for n in range(3)))
    await writer.drain()
    await until(lambda: server.intake.queued == 2)
    stopping = asyncio.create_task(server.stop(grace=5))
    await asyncio.sleep(0)
    publisher.gate.set()
    await stopping
    answers = [await asyncio.wait_for(reader.readuntil(FS_CR), 5) for _ in range(3)]
    assert [("AA", f"MSG-{n}") for n in range(3)] == [(read_ack(a).code, read_ack(a).control_id) for a in answers]
    assert b"" == await reader.read()
    writer.close()
