"""The MLLP slot table without sockets: who is admitted, who is evicted to make room, who is refused.

The TCP behaviour (timeouts, EOFs, ACKs) is in ``test_mllp_server.py``; here the rules are checked one
by one, and a hypothesis property checks the invariants under any sequence of events.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.adapters.mllp_limits import ConnectionLimits, Slot, SlotTable
from hub.errors import ConfigurationError


def table(max_connections: int = 4, max_per_source: int = 10, reserved: int = 1) -> SlotTable:
    """A small table; timeouts do not matter here."""
    limits = ConnectionLimits(max_connections=max_connections, max_per_source=max_per_source, reserved=reserved)
    return SlotTable(limits)


def admitted(slots: SlotTable, source: str) -> Slot:
    """Admit a connection that must be admitted."""
    admission = slots.admit(source)
    assert admission.slot is not None, admission
    return admission.slot


def test_unidentified_connections_never_take_the_reserved_slots() -> None:
    """max 4, reserved 1: the fourth unidentified connection evicts the oldest instead of filling the table."""
    slots = table()
    first, second, third = (admitted(slots, f"10.0.0.{n}") for n in range(3))
    admission = slots.admit("10.0.0.9")
    assert ((first,), 3, 3) == (admission.evicted, len(slots), slots.unidentified)
    assert admission.slot is not None
    assert admission.slot not in (second, third)


def test_a_hospital_gets_in_past_a_table_full_of_unidentified_peers_and_then_holds_the_reserved_slot() -> None:
    """Unidentified pool full: the newcomer evicts the oldest; once identified, it sits in the reserved slot
    and the pool is open to unidentified peers again."""
    slots = table()
    peers = [admitted(slots, "10.0.0.1") for _ in range(3)]
    hospital = slots.admit("192.0.2.7")
    assert (peers[0],) == hospital.evicted
    assert hospital.slot is not None
    slots.identify(hospital.slot)
    assert (2, 3) == (slots.unidentified, len(slots))
    another = slots.admit("10.0.0.2")
    assert ((), 4) == (another.evicted, len(slots))


def test_identified_connections_are_never_evicted_and_a_full_table_refuses() -> None:
    """Four identified connections: a fifth is refused ("full"), nobody evicted."""
    slots = table()
    for n in range(4):
        admission = slots.admit(f"10.0.0.{n}")
        assert admission.slot is not None
        slots.identify(admission.slot)
    refused = slots.admit("10.0.0.9")
    assert (None, (), "full") == (refused.slot, refused.evicted, refused.refused)
    assert 4 == len(slots)


def test_a_connection_owed_an_ack_is_not_evicted() -> None:
    """The oldest unidentified connection is busy (a frame being answered): the next oldest goes."""
    slots = table()
    busy, idle, _ = (admitted(slots, "10.0.0.1") for _ in range(3))
    busy.busy = 1
    assert (idle,) == slots.admit("10.0.0.2").evicted


def test_when_every_unidentified_connection_is_busy_a_newcomer_is_refused() -> None:
    """Nothing evictable and the unidentified pool full: refused, and the table is unchanged."""
    slots = table()
    for slot in [admitted(slots, "10.0.0.1") for _ in range(3)]:
        slot.busy = 1
    admission = slots.admit("10.0.0.2")
    assert (None, "full", 3) == (admission.slot, admission.refused, len(slots))


def test_a_source_at_its_limit_loses_its_own_oldest_unidentified_connection() -> None:
    """Per-source limit 2: the third connection from one address evicts that address's oldest, not another's."""
    slots = table(max_connections=10, max_per_source=2)
    other = admitted(slots, "10.0.0.2")
    mine = [admitted(slots, "10.0.0.1") for _ in range(2)]
    admission = slots.admit("10.0.0.1")
    assert ((mine[0],), 2, 1) == (admission.evicted, slots.from_source("10.0.0.1"), slots.from_source("10.0.0.2"))
    assert other not in admission.evicted


def test_a_source_whose_connections_are_all_identified_is_refused_at_its_limit() -> None:
    """Per-source limit 2 with two identified connections: the third is refused ("source_full")."""
    slots = table(max_connections=10, max_per_source=2)
    for _ in range(2):
        slots.identify(admitted(slots, "10.0.0.1"))
    admission = slots.admit("10.0.0.1")
    assert (None, "source_full") == (admission.slot, admission.refused)
    assert admitted(slots, "10.0.0.2").source == "10.0.0.2"


def test_release_frees_the_slot_and_is_idempotent() -> None:
    """Releasing twice (eviction, then the connection's own end) counts once."""
    slots = table()
    slot = admitted(slots, "10.0.0.1")
    slots.release(slot)
    slots.release(slot)
    slots.identify(slot)
    assert (0, 0, 0) == (len(slots), slots.unidentified, slots.from_source("10.0.0.1"))


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"max_connections": 0, "reserved": 0}, "at least 1"),
        ({"max_per_source": 0}, "per-source"),
        ({"max_connections": 8, "reserved": 8}, "reserved"),
        ({"reserved": -1}, "reserved"),
        ({"max_in_flight": 0}, "in flight"),
        ({"identify_timeout": 0}, "identify timeout"),
        ({"frame_timeout": -1}, "frame timeout"),
        ({"idle_timeout": 0}, "idle timeout"),
    ],
)
def test_impossible_limits_are_a_configuration_error(kwargs: dict[str, float], words: str) -> None:
    """A reserve as large as the table would admit nobody; zero timeouts would close everyone."""
    with pytest.raises(ConfigurationError, match=words):
        ConnectionLimits(**kwargs)  # type: ignore[arg-type]


EVENTS = st.lists(
    st.one_of(
        st.tuples(st.just("admit"), st.integers(0, 3)),
        st.tuples(st.sampled_from(["identify", "release", "busy", "idle"]), st.integers(0, 40)),
    ),
    max_size=120,
)


@given(
    events=EVENTS,
    max_connections=st.integers(1, 8),
    reserved=st.integers(0, 7),
    max_per_source=st.integers(1, 5),
)
def test_the_limits_hold_after_any_sequence_of_connections(
    events: list[tuple[str, int]], max_connections: int, reserved: int, max_per_source: int
) -> None:
    """Whatever happens: total <= max, unidentified <= max - reserved, per source <= its limit;
    identified or busy connections are never evicted; a refusal evicts nobody."""
    limits = ConnectionLimits(
        max_connections=max_connections, reserved=min(reserved, max_connections - 1), max_per_source=max_per_source
    )
    slots = SlotTable(limits)
    live: list[Slot] = []
    for action, number in events:
        if action == "admit":
            admission = slots.admit(f"10.0.0.{number}")
            assert (admission.slot is None) == (admission.refused is not None)
            assert len(admission.evicted) <= (0 if admission.slot is None else 1)
            for victim in admission.evicted:
                assert victim.evictable
                live.remove(victim)
            if admission.slot is not None:
                live.append(admission.slot)
        elif live:
            slot = live[number % len(live)]
            if action == "identify":
                slots.identify(slot)
            elif action == "release":
                slots.release(slot)
                live.remove(slot)
            else:
                slot.busy = 1 if action == "busy" else 0
        assert len(live) == len(slots) <= limits.max_connections
        assert sum(not s.identified for s in live) == slots.unidentified <= limits.unidentified_slots
        for source in {s.source for s in live}:
            assert sum(s.source == source for s in live) == slots.from_source(source) <= limits.max_per_source
