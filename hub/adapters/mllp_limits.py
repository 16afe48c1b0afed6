"""Who may hold an MLLP connection: the listener's limits and its slot table (pure: no sockets, no clock).

MLLP carries no credentials, so the listener cannot know who connects until a frame arrives. A new
connection is *unidentified*; it becomes *identified* once it delivered a frame whose MSH-4 names a
registered hospital (the hospital directory said so). The table keeps these rules, checked on every
accept:

* at most ``max_connections`` connections in all;
* at most ``max_connections - reserved`` unidentified ones: the ``reserved`` slots are only ever held by
  identified connections, so unknown peers can never take the whole listener;
* at most ``max_per_source`` connections from one source (peer IP address), identified or not;
* when a new connection would break a rule, the *oldest idle unidentified* connection (of that source,
  for the per-source rule) is evicted to make room; only when there is none (everything is identified
  or has a frame being answered) is the new connection refused. A hospital's fresh connection sends
  its first frame at once and is identified within a round trip, so a crowd of half-open connections
  cannot keep it out; identified connections are never evicted.

Time limits (``identify_timeout``, ``frame_timeout``, ``idle_timeout``) are applied by the listener
(:mod:`hub.adapters.mllp`) while it reads; they live here so that all limits are configured together.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Literal

from hub.errors import ConfigurationError

RefusalReason = Literal["full", "source_full"]


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """What one MLLP listener allows; see the module docstring. Times are seconds.

    * ``identify_timeout``: from accept, how long a connection may stay unidentified (it must deliver
      a frame from a registered facility by then, or be closed);
    * ``frame_timeout``: how long one frame may take to arrive once its first byte came (a half frame,
      or a peer trickling a byte every few seconds, is closed after it); also bounds sending an ACK;
    * ``idle_timeout``: how long an identified connection may stay silent between frames (``None``:
      as long as it likes; interface engines hold connections open for hours);
    * ``max_in_flight``: how many frames one connection may have sent and not yet been answered
      (MLLP senders may pipeline): the listener answers up to that many at once and reads no further
      frame of that connection until an ACK left, so a connection holds at most that many frames.
    """

    max_connections: int = 256
    max_per_source: int = 32
    reserved: int = 32
    identify_timeout: float = 10.0
    frame_timeout: float = 30.0
    idle_timeout: float | None = None
    max_in_flight: int = 32

    def __post_init__(self) -> None:
        problems = []
        if self.max_connections < 1:
            problems.append("the MLLP connection limit must be at least 1")
        if self.max_per_source < 1:
            problems.append("the MLLP per-source connection limit must be at least 1")
        if self.max_in_flight < 1:
            problems.append("the MLLP frames in flight per connection must be at least 1")
        if not 0 <= self.reserved < self.max_connections:
            problems.append(
                "the MLLP reserved connections must be at least 0 and fewer than the connection limit "
                f"({self.reserved} reserved of {self.max_connections}), or no new connection could ever start"
            )
        for name, value in (
            ("identify", self.identify_timeout),
            ("frame", self.frame_timeout),
            ("idle", self.idle_timeout),
        ):
            if value is not None and not value > 0:
                problems.append(f"the MLLP {name} timeout must be more than 0 seconds")
        if problems:
            raise ConfigurationError("; ".join(problems))

    @property
    def unidentified_slots(self) -> int:
        """How many connections may be unidentified at once."""
        return self.max_connections - self.reserved


@dataclass(eq=False, slots=True)
class Slot:
    """One admitted connection, as the table sees it."""

    source: str
    identified: bool = False
    #: Frames received and not yet answered; a busy connection is never evicted (its ACK is owed).
    busy: int = 0

    @property
    def evictable(self) -> bool:
        """Unidentified and owed no ACK: may be closed to make room for a newcomer."""
        return not self.identified and self.busy == 0


@dataclass(frozen=True, slots=True)
class Admission:
    """The table's answer to a new connection: its slot (``None``: refused, for ``refused``), and the
    connections the listener must now close to make room for it (already out of the table)."""

    slot: Slot | None
    evicted: tuple[Slot, ...] = ()
    refused: RefusalReason | None = None


class SlotTable:
    """The open connections of one listener, by source and identification; see the module docstring."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self._identified: set[Slot] = set()
        self._unidentified: dict[Slot, None] = {}  # insertion order = accept order: oldest first
        self._per_source: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._identified) + len(self._unidentified)

    @property
    def unidentified(self) -> int:
        """Connections not identified yet."""
        return len(self._unidentified)

    def from_source(self, source: str) -> int:
        """Connections open from ``source``."""
        return self._per_source[source]

    def admit(self, source: str) -> Admission:
        """Take a new, unidentified connection from ``source``, evicting at most one idle unidentified
        connection to make room, or refuse it."""
        evicted: tuple[Slot, ...] = ()
        if self._per_source[source] >= self.limits.max_per_source:
            victim = self._oldest_evictable(source)
            if victim is None:
                return Admission(slot=None, refused="source_full")
            self.release(victim)
            evicted = (victim,)
        elif len(self) >= self.limits.max_connections or self.unidentified >= self.limits.unidentified_slots:
            victim = self._oldest_evictable(None)
            if victim is None:
                return Admission(slot=None, refused="full")
            self.release(victim)
            evicted = (victim,)
        # After one eviction both global rules hold with room to spare: the victim was unidentified.
        slot = Slot(source)
        self._unidentified[slot] = None
        self._per_source[source] += 1
        return Admission(slot=slot, evicted=evicted)

    def identify(self, slot: Slot) -> None:
        """``slot`` delivered a frame from a registered facility: it may use the reserved slots and is
        never evicted. Idempotent; a released slot stays released."""
        if slot in self._unidentified:
            del self._unidentified[slot]
            self._identified.add(slot)
        slot.identified = True

    def release(self, slot: Slot) -> None:
        """``slot``'s connection is gone (or evicted). Idempotent."""
        if slot in self._unidentified:
            del self._unidentified[slot]
        elif slot in self._identified:
            self._identified.remove(slot)
        else:
            return
        self._per_source[slot.source] -= 1
        if not self._per_source[slot.source]:
            del self._per_source[slot.source]

    def _oldest_evictable(self, source: str | None) -> Slot | None:
        return next(
            (s for s in self._unidentified if s.evictable and (source is None or s.source == source)),
            None,
        )
