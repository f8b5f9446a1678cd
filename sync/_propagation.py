"""Delta propagation policy: what each peer is sent, when, and when to forget it.

This is Algorithm 2 of Almeida, Shoker and Baquero, "Delta State Replicated Data
Types" (JPDC 2018), with the two refinements of Enes et al., "Efficient
Synchronization of State-based CRDTs" (ICDE 2019):

- Every delta this replica makes or receives (reduced to its novel part, see
  ``Keyspace.novel_part``) is appended to a log under a sequence number.
- A peer is sent *delta intervals*: the join of log entries ``[start, end)``, up to
  a byte budget. Entries that came from that very peer are left out (no
  back-propagation), and so are keys its push policy excludes.
- A peer acknowledges an interval by its ``(start, end)``. Its *acked* point is the
  end of the longest acknowledged prefix; an interval not acknowledged in time is
  sent again, so loss and reordering cost time, never state.
- A replica that does not relay (an edge) sends a peer only its own updates, so
  it logs only those: a delta it merges from a peer goes to its store, never into
  its log (where it used to wait for an interval that would leave it out, which
  the replica then acknowledged itself). Its sequence numbers count its own
  updates, and nothing it sends changes: the same updates, in the same order.
- An entry is collected once every known peer's acked point has passed it. A peer
  whose needed entries were collected anyway (the log hit its size bound) must
  catch up another way; ``needs_catch_up`` says so.
- A peer may *declare sources*: nodes it receives from directly, over live links,
  each pushing it everything it would accept from us. Entries that came from one
  of them are left out of what it is sent, like back-propagation one hop further:
  in a mesh of hubs, a hub that got an edge's write from the edge's hub need not
  forward it to the other hubs, which got it from that hub too. Each source's
  first left-out entry is remembered (``PeerProgress.skipped``); when the peer
  declares a source gone (its direct link broke), it is rewound to that entry, so
  what it may have missed is sent again through us (or it is caught up by digest
  if the log has collected it). Skipping is a saving, never a dependency: a peer
  that declared nothing is sent everything, as before. A node whose store lost
  what it had (restored from an older copy, or wiped) lost the resends it owed
  the peers that declared it: those that relay its entries take them over
  (``source_lost_updates``).
- *Epochs.* Entries that came from a relaying node are sent back to none of its
  epochs. One restarted on its store has them; one whose store lost them gets each
  back from where it came: its own updates by catch-up (a peer's Hello shows it
  lacks them), the others resent by the peer it had them from (its Hello's position
  in that peer's log is behind what it acknowledged). It then holds them as that
  peer's, and relays them on. Sent back by us, it held them as ours, and left them
  out for a peer that declared us, while we left them out as its (simulator seed
  3847, shrunk, under ``rollback-hub``). An edge, which relays nothing, is sent
  back its earlier epochs' entries: a wiped edge that got only others' adds back,
  not its own removal of them, held the removed elements for good (seed 20783).
  Those its earlier epoch was never sent count too (an interval of only its own
  entries held nothing for it, and we acknowledged it ourselves): an edge back
  under a new epoch is rewound to its position in our log
  (``Replica._resend_earlier_epochs``, seed 3847).
  Likewise, of a declared source's entries only
  those of its current epoch (as of its last Hello to us) are left out: a new
  epoch resends what its store kept, but one whose store lost them cannot, and
  sending them costs bytes once, where leaving them out loses them (seed 1966: a
  relay that restarted had forgotten it saw the source's store lose them).

**Stalls.** A link can stop carrying messages without the transport noticing (a
partition shorter than the keepalive: the stream survives, what was sent into it
is lost) and start again just as silently. The retransmission timer alone
recovers late: the heal goes unseen until the next timeout, up to a whole timeout
later, and a short timeout resent everything unacknowledged every time it fired,
for as long as the partition lasted. So a stall is handled as TCP handles a closed
window (a persist timer's probes) and a loss it has evidence of (fast retransmit):

- the first timeout of a peer's interval resends what the peer has not
  acknowledged, as before; each further timeout with no ack from the peer
  doubles the next one (``timeouts``, up to a cap: RFC 6298's backoff), so a long
  partition costs a few full resends, not one per timeout;
- meanwhile the replica sends the peer a ``Probe`` (four bytes) once a tick, which
  any message back answers (a ``ProbeAck`` at least): a cheap question, asked
  often, so the heal is seen within a tick and a round trip, or a tick and one
  link delay when the peer is probing us too;
- the first message from a silent peer proves its link carries traffic again:
  whatever the fixed timer would have resent by now, to it and to every other
  silent peer of the node, is resent at once (``resend_stale``), rather than at
  the backed-off timeout. The other peers are included because a node's links
  tend to fail and heal together (its own uplink or interface, a region cut off),
  and a peer with nothing to send us never probes us, so it would otherwise be
  resent to only after our probe's answer, a round trip later. Nothing younger
  than a timeout is resent: a resend the last timeout made, or a delta sent
  since, may be on its way, and is left to its own timer. So a stall costs the
  probes and fewer full resends than the fixed timer made, and never resends
  more often;
- the answer to a probe echoes its send time, and whatever was sent before it
  and is still unacknowledged is resent at once (``resend_sent_by``): a stream
  delivers in order and the peer answers in order, so the ack of anything that
  arrived would have come before the probe's answer. This catches what the
  timeout-old rule leaves, such as a resend made shortly before the heal;
- the backoff ends when the peer acknowledges something (``end_backoff``), as a
  new ack ends TCP's, not at a mere answer: a peer that answers probes but
  refuses our deltas (stamped by a clock too far ahead, say) keeps backing off,
  rather than being found silent, then heard, every timeout.

**Restarting the timer.** A peer acknowledges an interval only once it applied
and committed it, so a busy peer (a hub taking in many links, a slow device, a
backlog of big intervals) acknowledges a full window one interval at a time, and
the last one may come more than a timeout after it was sent. Timed from its send,
it was resent while the peer was still working towards it, and so was everything
after it, which the peer then decoded and merged again for nothing: a window of
32 intervals to a peer taking 150 ms over each sent 683 messages for 100
intervals, a resend storm that makes a busy peer busier. So, as TCP does (RFC
6298, 5.3: an ack of new data restarts the retransmission timer), an interval's
timeout runs from its send or from the last time the peer's acked point moved,
whichever is later (``PeerProgress.timer_starts``). A peer that acknowledges
nothing still times out a timeout after the send; one that acknowledges out of
order (the simulator's reordering links) does not move its acked point past a
lost interval, so that interval times out as before.

**Data in probes.** A bare probe finds the heal, but only its answer sets the
resend going: the data crosses the link a round trip after the first probe that
got through, and a node cannot know at the heal itself that the partition is
over (nothing has reached it yet, so its state is the same either way). TCP's
zero-window probe carries a byte of data for the same reason; here the probe to
a silent peer goes just after its oldest unacknowledged interval, built again
from the log (``probe_interval``), when that interval's ``Deltas`` message comes
to at most ``probe_data_bytes`` (1 KiB by default: a few small writes; a larger
backlog gets a bare probe and the resend on hearing, as before). A heal then
delivers the oldest data a tick and a link delay after it, where it used to take
a round trip more: an isolated edge's write reaches its hub, the other hubs and
their edges in the tree's depth plus one link, as when the transport reports the
heal.

- *Wire.* The data is a plain ``Deltas`` of the interval, sent before the
  ``Probe``, not a new kind of message: the receiver applies and acknowledges
  it as any interval (a copy it already has is merged as nothing and
  acknowledged again) and answers the probe after the ack, so the answer resends
  only what is still missing. A peer of an older build takes both as it always
  did; a message kind it did not know would have been refused with its data,
  and a longer ``Probe`` too, which would lose the probe's answer as well.
- *Cost.* During a partition a silent link carries, per tick, the probe's four
  bytes plus at most ``probe_data_bytes``, whether or not anything gets
  through: at the daemon's 200 ms tick, 5 KiB/s per silent link at most, and
  nothing for a peer that owes us nothing or a backlog over the budget. The
  interval is not a resend: its timer and backoff run on, and ``inflight`` is
  unchanged, so the full resends are as many as before. At a heal, hearing from
  the peer still resends what the fixed timer would have by then
  (``resend_stale``), which may repeat a copy on its way: one copy more per link
  and heal. (Counting the copy as a send there saved nothing in the sweep: the
  peer's resend then waits for our next probe.) A peer that answers but
  refuses the data (a clock too far ahead) is found silent again only at its
  backed-off timeouts, so it is sent the data once a timeout, as the resends.
  In the simulator's 1,000-seed sweep the copies add 5.7% to the bytes sent.
- *Determinism.* It reads no clock of its own and draws nothing at random: the
  interval is a function of the log and the peer's progress.

An adaptive timeout (Jacobson/Karels, RFC 6298) was weighed and left out: it
would shorten only the first timeout, which a stall is not waiting on any more,
and it needs round-trip samples that retransmissions make ambiguous (Karn's
rule); the fixed timeout stays the answer to a single loss on a working link.

The policy does no I/O and reads no clock: ``now`` is a parameter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from sync._causal import node_of
from sync._keyspace import Key, KeyOffsets, Keyspace, splice
from sync._messages import encode_deltas, encode_deltas_of_pieces


@dataclass
class LogEntry:
    seq: int
    # None: not kept decoded (a received payload whose values the state took as they
    # were, see ``Replica._merge_from``); ``keyspace()`` decodes ``encoded`` if needed.
    delta: Keyspace | None
    origin: str | None  # the peer it came from; None for local updates
    size: int  # encoded bytes, for budgets and the log bound
    encoded: bytes | None = None  # ``delta.encode()``, when the caller has it
    # Where it ends in the origin's log (the end of the interval that brought it);
    # None when unknown (a catch-up push, or a local update).
    origin_end: int | None = None
    # Where each key's part is in ``encoded``, when it was encoded here (a local
    # delta): intervals of several such entries are spliced from their encodings.
    offsets: KeyOffsets | None = None
    origin_node: str | None = field(init=False)  # the origin's node id, without epoch

    def __post_init__(self) -> None:
        self.origin_node = None if self.origin is None else node_of(self.origin)

    def keyspace(self) -> Keyspace:
        """The delta, decoded from its encoding the first time it is asked for."""
        if self.delta is None:
            assert self.encoded is not None, "an entry keeps its delta or its encoding"
            self.delta = Keyspace.decode(self.encoded)
        return self.delta

    def __repr__(self) -> str:
        return f"LogEntry({self.seq}, origin={self.origin!r}, {self.size} bytes)"


class Interval:
    """Log entries ``[start, end)`` as one delta for a peer: the entries' join, which
    may be bottom when every entry was filtered out, and its encoding."""

    def __init__(
        self,
        start: int,
        end: int,
        delta: Keyspace | None,
        encoded: bytes | None = None,
        *,
        parts: list[Keyspace] | None = None,
        pieces: list[bytes | memoryview] | None = None,
    ) -> None:
        """``delta``, or the ``parts`` to join into it when it is asked for (a spliced
        interval comes with its encoding, in ``pieces`` to be joined, and its join is
        seldom needed)."""
        self.start, self.end, self.encoded = start, end, encoded
        self.pieces = pieces
        # The first entry gathered: ``start`` is lowered to the start the peer is told
        # (``claimed_start``) when it is sent.
        self.first = start
        self._delta, self._parts = delta, parts

    @property
    def delta(self) -> Keyspace:
        if self._delta is None:
            self._delta = _joined(self._parts or [])
        return self._delta

    def is_bottom(self) -> bool:
        """Nothing to send: every entry was filtered out."""
        if self._delta is None and (self.encoded is not None or self.pieces is not None):
            return False  # spliced from log entries that hold keys: no join needed to tell
        return self.delta.is_bottom()

    def payload(self) -> bytes:
        """The delta's canonical encoding, reusing the log entry's when it is one."""
        if self.encoded is None:
            self.encoded = b"".join(self.pieces) if self.pieces else self.delta.encode()
        return self.encoded

    def message(self) -> bytes:
        """Its ``Deltas`` message (as claimed: ``start`` may have been lowered)."""
        if self.encoded is None and self.pieces is not None:
            return encode_deltas_of_pieces(self.start, self.end, self.pieces)
        return encode_deltas(self.start, self.end, self.payload())

    def __repr__(self) -> str:
        return f"Interval([{self.start}, {self.end}), keys={len(self.delta.entries)})"


@dataclass
class PeerProgress:
    acked: int  # the peer has acknowledged every entry below this
    sent: int  # entries below this have been sent (acked <= sent)
    inflight: dict[tuple[int, int], int] = field(default_factory=dict)  # interval -> sent at
    done: set[tuple[int, int]] = field(default_factory=set)  # acked, beyond ``acked``
    behind: bool = False  # the size bound dropped an entry it had not acknowledged
    # At most the peer's position in our log, as the acks of what it received (or
    # caught up to) tell it (``note_delivered``); ``acked`` also covers intervals
    # that held nothing for it. Acked intervals it cannot reach yet wait in
    # ``delivered_held``.
    delivered: int = 0
    delivered_held: set[tuple[int, int]] = field(default_factory=set)
    # The nodes it receives from directly (declared); per origin actor, the first
    # entry left out of what the peer was sent and the furthest origin-log end of
    # any left out (None: unknown), to tell what it may lack when a source goes.
    sources: frozenset[str] = frozenset()
    skipped: dict[str, tuple[int, int | None]] = field(default_factory=dict)
    # Resumed from the store: entries may have been left out before the restart, which
    # ``skipped`` no longer says; and until the peer declares again, which sources it
    # declared before is forgotten too.
    skips_forgotten: bool = False
    sources_known: bool = True
    # Whether it relays (a hub): only a relay is sent nothing back from any epoch of
    # its node (see "Epochs" above); one that does not (an edge) is sent back its
    # earlier epochs' entries, as before epochs counted here.
    relays: bool = True
    # Nodes that stopped being its sources while entries of theirs left out of what
    # it was sent were not sent again, its position in their logs saying it held them
    # (see ``source_lost_updates``).
    trusted_positions: set[str] = field(default_factory=set)

    # Retransmission timeouts since the peer last acknowledged anything: the backoff
    # exponent (see "Stalls" above).
    timeouts: int = 0
    # When its acked point last moved: the retransmission timer restarts there (see
    # "Restarting the timer" above). None: not since the link (re)started.
    restarted_at: int | None = None
    # The log's end when the peer was last rewound while acks of intervals sent
    # before may still come (0: none since): until the acked point reaches it, those
    # acks are not taken, and intervals ending at or below it are labeled from where
    # they were gathered (see ``rewind``).
    rewound_until: int = 0

    def note_delivered(self, start: int, end: int) -> None:
        """The peer acknowledged ``[start, end)``: follow its position as it does.

        The peer moves its position to ``end`` when ``start`` is at or below it, and
        otherwise once the intervals before it come (``Replica._on_deltas``); the
        same rule over the acks it sent keeps ``delivered`` at most its position
        (the acks of a live store; a position is 1 until anything is merged). So a
        Hello whose position is below ``delivered`` is one from a store that lost
        what it had acknowledged (``Replica._resume``), not one that merely waits
        for a resend. Held acks are at most ``MAX_HELD`` (an older peer's gaps): a
        forgotten one only leaves ``delivered`` lower, a rewind found later or not
        needed, as before this rule.
        """
        if start > max(self.delivered, 1):
            if len(self.delivered_held) < MAX_HELD:
                self.delivered_held.add((start, end))
            return
        self.delivered = prefix_over(max(self.delivered, end), self.delivered_held)

    def settled_at(self, seq: int) -> bool:
        """Whether the peer acknowledged every entry below ``seq``, was sent none at or
        beyond it, and has nothing in flight."""
        return self.acked == seq and self.sent == seq and not self.inflight

    def timer_starts(self) -> list[int]:
        """When each interval in flight began to wait for its ack: when it was sent,
        or when the acked point last moved, whichever is later."""
        restarted = self.restarted_at
        if restarted is None:
            return list(self.inflight.values())
        return [max(sent_at, restarted) for sent_at in self.inflight.values()]


class DeltaLog:
    """The delta buffer with per-peer progress."""

    def __init__(
        self,
        next_seq: int = 1,
        max_entries: int = 100_000,
        max_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.next_seq = next_seq
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.entries: dict[int, LogEntry] = {}
        self.peers: dict[str, PeerProgress] = {}
        self.bytes = 0
        self.complete_from = next_seq  # the log holds every change from here on
        # Each node's epoch (node@epoch) as of its latest Hello to us: of a declared
        # source's entries, only that epoch's are left out (see "Epochs" above).
        self.epochs: dict[str, str] = {}

    # ---- the log ------------------------------------------------------------------

    def append(
        self,
        delta: Keyspace | None,
        origin: str | None,
        size: int,
        encoded: bytes | None = None,
        origin_end: int | None = None,
        *,
        offsets: KeyOffsets | None = None,
    ) -> LogEntry:
        entry = LogEntry(self.next_seq, delta, origin, size, encoded, origin_end, offsets)
        self.entries[entry.seq] = entry
        self.next_seq += 1
        self.bytes += size
        return entry

    def skip(self) -> bool:
        """A change nobody is waiting for: count it, but do not keep it. Return whether
        entries were dropped with it (the store must drop them too).

        With no peer to send to, logging deltas only costs encoding and disk; a peer
        that turns up later is caught up from the state instead. The entries below the
        skip go: no peer can be sent them any more (one that needs them needs the
        skipped change too, which only a catch-up gives), and kept in a store they
        would tell the log, reopened, that it is complete from the oldest of them, so
        the skipped change, in no entry, would never be sent (simulator seed 6963).
        """
        self.next_seq += 1
        self.complete_from = self.next_seq
        if not self.entries:
            return False
        self.entries.clear()
        self.bytes = 0
        return True

    def first_seq(self) -> int:
        """The lowest sequence number still held (``next_seq`` when empty)."""
        for seq in self.entries:  # kept in seq order: the first is the lowest
            return seq  # (a loop, not next(iter(...)): compiled, it is a native step)
        return self.next_seq

    def __len__(self) -> int:
        return len(self.entries)

    # ---- peers ----------------------------------------------------------------------

    def track(self, peer: str, acked: int) -> PeerProgress:
        """Start (or resume) tracking ``peer``, who has everything below ``acked``."""
        progress = self.peers.get(peer)
        if progress is None:
            progress = PeerProgress(acked=acked, sent=acked)
            self.peers[peer] = progress
        return progress

    def rename(self, old: str, new: str) -> None:
        """``old`` is an earlier epoch of ``new``: ``new`` takes over its progress.

        If ``new`` is tracked already, the progress that acknowledged less is kept: a
        store may hold an ack row for each epoch of a peer, and an older row can be
        higher than the newest (a rewind lowers only the current epoch's). Sending
        again what a peer has costs bytes; skipping what it lacks would lose it.
        """
        progress = self.peers.pop(old, None)
        if progress is None:
            return
        kept = self.peers.get(new)
        if kept is None or progress.acked < kept.acked:
            self.peers[new] = progress

    def forget(self, peer: str) -> None:
        """Stop waiting for ``peer``: it will need a catch-up if it ever returns."""
        self.peers.pop(peer, None)

    def needs_catch_up(self, peer: str) -> bool:
        progress = self.peers.get(peer)
        return progress is not None and (progress.behind or progress.acked < self.catch_up_floor())

    def catch_up_floor(self) -> int:
        """A peer that acknowledged less than this needs a catch-up: the log lacks it."""
        return max(self.first_seq(), self.complete_from)

    def caught_up_from(self, peer: str, seq: int) -> None:
        """``peer`` is being sent the whole state as of ``seq``: resume from there."""
        progress = self.peers[peer]
        progress.acked = progress.sent = seq
        progress.delivered = max(progress.delivered, seq)
        progress.delivered_held.clear()
        if seq >= progress.rewound_until:
            progress.rewound_until = 0  # past any interval sent before the rewind
        progress.behind = False
        progress.inflight.clear()
        progress.done.clear()
        progress.skipped.clear()  # the whole state went, whatever came from where
        progress.trusted_positions.clear()
        progress.skips_forgotten, progress.sources_known = False, True  # and what a restart forgot

    def declare(
        self,
        peer: str,
        sources: frozenset[str],
        received: dict[str, int],
        ours: dict[str, int] | None = None,
    ) -> bool:
        """``peer`` now receives directly from ``sources``; True if it was rewound.

        A source it no longer declares may have stopped delivering before the peer
        noticed (a link breaks silently until its keepalive fails). ``received`` is
        where the peer's store stands in each source's log: if we left out anything
        from a source beyond that (or from where, we do not know), the peer is sent
        it again, from the first entry left out. ``ours`` is where our store stands
        in each source's log, for what a restart made us forget (``_forgotten``).
        """
        progress = self.peers[peer]
        gone = progress.sources - sources
        if not progress.sources_known:  # any node it has heard from directly, perhaps
            progress.sources_known = True
            gone |= {node_of(actor) for actor, end in received.items() if end > 1} - sources
        progress.sources = sources
        if not gone:
            return False
        rewind_to = None
        for actor, (first, end) in list(progress.skipped.items()):
            if node_of(actor) not in gone:
                continue
            del progress.skipped[actor]
            if end is None or end > received.get(actor, 0):
                rewind_to = first if rewind_to is None else min(rewind_to, first)
            else:
                progress.trusted_positions.add(node_of(actor))
        if _forgotten(progress, gone, received, ours or {}):
            progress.behind = True  # a catch-up by digest finds what it lacks
            return True
        if rewind_to is None:
            return False
        self.rewind(peer, rewind_to)
        return True

    def heard_from(self, actor: str) -> None:
        """``actor`` (node@epoch) said Hello: it is its node's current epoch."""
        self.epochs[node_of(actor)] = actor

    def source_lost_updates(self, node: str) -> list[str]:
        """``node`` came back on a store that lost what it had (restored from an
        older copy, or wiped): what we left out because it came from ``node`` is ours
        to send again. Returns the peers to catch up.

        An entry from ``node`` is left out of what a peer that declared it is sent
        because ``node`` sends the peer that entry itself, resending until the peer
        acknowledges it. A node that lost its store lost those resends with its log.
        Nor does it send the update once it has it back from us (by catch-up, or by
        the log: its new epoch is another origin): it holds it as ours, and leaves it
        out for a peer that declared us. Left as they were, each of us would count on
        the other for good (simulator seeds 608, 1595, 1966 under ``rollback-hub``).
        Entries from ``node``'s earlier epochs are left out of nothing any more
        (``epochs``: the log sends them to every peer it has not sent them yet); and
        a peer that had some left out already is caught up by digest here, as our log
        cannot tell which of them it got: not by its acks (we acknowledge an interval
        that held nothing for it ourselves), nor by its position in ``node``'s log,
        which says what it got from ``node``, not which of our entries it lacks
        (the log keeps no origin position for entries it reloaded). Such a peer is one with
        ``skipped`` entries of ``node``, or whose ``trusted_positions`` hold it (left
        out, then not sent again when ``node`` stopped being its source), or any
        whose records a restart forgot.

        The catch-up sends only what differs, so an entry the peer got both ways costs
        a digest comparison, not a resend; ``caught_up_from`` clears the records, and
        nothing below the catch-up's start is sent again.
        """
        caught_up = []
        for peer, progress in self.peers.items():
            if node_of(peer) == node:
                continue  # its own updates are never left out of what it is sent
            if (
                progress.skips_forgotten
                or node in progress.trusted_positions
                or any(node_of(actor) == node for actor in progress.skipped)
            ):
                progress.behind = True
                caught_up.append(peer)
        return caught_up

    def rewind(self, peer: str, seq: int) -> None:
        """``peer`` lost what it acknowledged from ``seq`` on: send it again from there.

        An interval is labeled with the start it claims (``claimed_start``), often
        1, so one sent before the rewind and one sent after can share a label while
        holding different entries (the first left out what a declared source was to
        send, the second holds it: ``declare``, on a live link). The first one's ack,
        late or duplicated, would then move the acked point past entries the peer
        never got (simulator seed 3909 under ``rollback-hub``: a hub's write never
        reached a hub). So until the acked point reaches the log's end as of now,
        an ack is taken only for an interval in flight, and an interval ending at
        or below that end is labeled with the start it was gathered from, which
        the rewound point bounds: a label an earlier interval had only if it was
        gathered from there too (as every label was before positions were
        prefixes). The receiver moves its position over it as over any other once
        its position reaches that start, which a rewind to its position (``Replica
        ._resume``) or below where it acknowledged (``declare``) makes so.
        """
        progress = self.peers[peer]
        progress.rewound_until = max(progress.rewound_until, self.next_seq)
        progress.acked = min(progress.acked, seq)
        progress.delivered = min(progress.delivered, seq)
        progress.delivered_held.clear()
        _resend(progress)

    def reset_sent(self, peer: str) -> None:
        """A link came back: whatever was in flight is presumed lost."""
        progress = self.peers[peer]
        progress.inflight.clear()
        progress.delivered_held.clear()  # the peer may have restarted, forgetting its own
        progress.sent = progress.acked
        progress.timeouts = 0
        progress.restarted_at = None

    def end_backoff(self, peer: str) -> None:
        """``peer`` acknowledged something: its timeout is the first one again."""
        progress = self.peers.get(peer)
        if progress is not None:
            progress.timeouts = 0

    def resend_stale(self, peer: str, now: int, timeout: int) -> bool:
        """Resend to ``peer`` if its oldest interval in flight is ``timeout`` old.

        What the fixed timer would have done by now, without counting as a timeout
        (no backoff); True if it resent.
        """
        progress = self.peers.get(peer)
        if progress is None or not progress.inflight:
            return False
        if not overdue(now, min(progress.timer_starts()), timeout):
            return False
        _resend(progress)
        return True

    def resend_sent_by(self, peer: str, probe_sent_at: int) -> bool:
        """``peer`` answered a probe sent at ``probe_sent_at``: resend what it lacks
        if any of it was sent before; True if it resent.

        A stream delivers in order, and the peer answers in order: an interval sent
        before the probe whose ack did not come before the probe's answer was lost.
        (Strictly before: what a tick's ``ready()`` sends leaves after its probe.)
        """
        progress = self.peers.get(peer)
        if progress is None or not progress.inflight:
            return False
        if min(progress.inflight.values()) >= probe_sent_at:
            return False
        _resend(progress)
        return True

    def next_interval(
        self,
        peer: str,
        budget: int,
        admit: Callable[[str], bool],
        now: int,
        local_only: bool = False,
        *,
        max_keys: int | None = None,
    ) -> Interval | None:
        """The next interval to send ``peer``, or None when it is up to date: entries
        up to ``budget`` bytes and ``max_keys`` keys (``ReplicaConfig.batch_keys``)."""
        progress = self.peers[peer]
        if progress.sent >= self.next_seq or self.needs_catch_up(peer):
            return None
        start = max(progress.sent, self.first_seq())
        interval = self._gather(
            peer, start, self.next_seq, budget, admit=admit, local_only=local_only,
            max_keys=max_keys,
        )  # fmt: skip
        if interval.end > progress.rewound_until:
            interval.start = claimed_start(progress)
        progress.sent = interval.end
        progress.inflight[(interval.start, interval.end)] = now
        return interval

    def probe_interval(
        self, peer: str, budget: int, admit: Callable[[str], bool], local_only: bool = False
    ) -> Interval | None:
        """The oldest interval ``peer`` has not acknowledged, built again to go with a
        probe (see "Data in probes" above), if its entries come to at most ``budget``
        bytes; None if it has none in flight, or they are larger, or hold nothing for it.

        Nothing changes: it is not a resend (its timer, and the backoff, run on).
        """
        progress = self.peers.get(peer)
        if progress is None or not progress.inflight or self.needs_catch_up(peer):
            return None
        claimed, end = min(progress.inflight)  # the lowest start: the oldest
        # Gathered from the acked point: below it the peer holds (or was sent nothing
        # of) every entry, and the oldest interval in flight holds nothing before it.
        start = max(claimed, progress.acked)
        used = 0
        for entry in self._from(start, end):
            used += entry.size
            if used > budget:
                return None
        interval = self._gather(peer, start, end, used, admit=admit, local_only=local_only)
        interval.start = claimed  # as first sent: its ack is the one awaited
        return None if interval.is_bottom() else interval

    def _gather(
        self, peer: str, start: int, stop: int, budget: int,
        *, admit: Callable[[str], bool], local_only: bool, max_keys: int | None = None,
    ) -> Interval:  # fmt: skip
        """The interval of entries from ``start`` (below ``stop``) up to ``budget``
        bytes and ``max_keys`` keys (counted in entries held decoded), as ``peer`` is
        sent it. The first entry is always taken, whatever its size."""
        taken: list[Keyspace] = []
        # The taken entries as (delta, encoding, offsets) while every one can be spliced.
        spliceable: list[tuple[Keyspace, bytes, KeyOffsets]] | None = []
        end, used, keys = start, 0, 0
        whole: LogEntry | None = None  # the one entry sent unfiltered, if so
        progress = self.peers[peer]
        sources, skipped = progress.sources, progress.skipped
        relays, peer_node = progress.relays, node_of(peer)
        for entry in self._from(start, stop):
            if used and used + entry.size > budget:
                break
            if max_keys is not None and entry.delta is not None:
                keys += len(entry.delta.entries)
                if used and keys > max_keys:
                    break
            if entry.origin_node in sources and self.epochs.get(entry.origin_node) == entry.origin:
                # It had this from its source, directly (the source's current epoch).
                _note_skipped(skipped, entry)
            # Never send a peer what came from it; a relay, nothing from any epoch of
            # its node (see "Epochs" above). A non-relaying replica sends only its own.
            elif (entry.origin_node != peer_node if relays else entry.origin != peer) and not (
                local_only and entry.origin is not None
            ):
                logged = entry.keyspace()
                # Nothing filtered out (the usual case): the delta as logged, not a copy
                # of it (_joined leaves its parts as they are).
                unfiltered = all(admit(key[0]) for key in logged.entries)
                part = logged if unfiltered else logged.filtered(admit)
                whole = entry if not taken and unfiltered else None
                taken.append(part)
                if spliceable is not None:
                    if unfiltered and entry.offsets is not None and entry.encoded is not None:
                        spliceable.append((logged, entry.encoded, entry.offsets))
                    else:
                        spliceable = None
            used += entry.size
            end = entry.seq + 1
        if len(taken) == 1 and whole is not None:
            # One entry, nothing filtered out: send its delta and encoding as logged.
            return Interval(start, end, whole.keyspace(), whole.encoded)
        if spliceable:
            spliced = splice(spliceable)
            if spliced is not None:
                return Interval(start, end, None, parts=taken, pieces=spliced)
        return Interval(start, end, _joined(taken))

    def _from(self, start: int, stop: int) -> Iterator[LogEntry]:
        for seq in range(start, stop):
            entry = self.entries.get(seq)
            if entry is not None:
                yield entry

    def acknowledge(self, peer: str, start: int, end: int, now: int | None = None) -> bool:
        """Record an ack received at ``now``; return True if the peer's acked point
        moved (which restarts its retransmission timer)."""
        progress = self.peers.get(peer)
        if progress is None or end <= progress.acked or end > self.next_seq:
            return False  # unknown, old, or past anything ever logged: ignore
        if progress.inflight.pop((start, end), None) is None and progress.rewound_until:
            return False  # sent before a rewind, or a copy: see ``rewind``
        moved = False
        if start <= progress.acked:  # in order, the usual case: extends the prefix
            progress.acked = end
            moved = True
        else:
            progress.done.add((start, end))
        while progress.done:
            nxt = next((iv for iv in progress.done if iv[0] <= progress.acked), None)
            if nxt is None:
                break
            progress.done.discard(nxt)
            if nxt[1] > progress.acked:
                progress.acked = nxt[1]
                moved = True
        progress.sent = max(progress.sent, progress.acked)
        for stale in [iv for iv in progress.inflight if iv[1] <= progress.acked]:
            del progress.inflight[stale]  # covered by a wider ack: no longer in flight
        if progress.acked >= progress.rewound_until:
            progress.rewound_until = 0  # any ack from before the rewind is old now
        if moved and now is not None:
            progress.restarted_at = now
        return moved

    def retransmit_due(self, now: int, timeout: int, longest: int | None = None) -> list[str]:
        """Peers with an interval unacknowledged for their timeout: rewind them to resend.

        A peer's timeout is ``timeout``, doubled for each timeout since it last
        acknowledged anything, up to ``longest`` (by default no doubling).
        """
        due = []
        for peer, progress in self.peers.items():
            if not progress.inflight:
                continue
            wait = backed_off(timeout, progress.timeouts, longest)
            if any(overdue(now, began, wait) for began in progress.timer_starts()):
                _resend(progress)
                progress.timeouts = min(progress.timeouts + 1, MAX_DOUBLINGS)
                due.append(peer)
        return due

    # ---- collection -------------------------------------------------------------------

    def over_bounds(self) -> bool:
        return len(self.entries) > self.max_entries or self.bytes > self.max_bytes

    def collect(self) -> int:
        """Drop entries every peer has acknowledged, and the oldest past the bounds.

        Returns the new first sequence number: entries below it are gone.
        """
        oldest = self.first_seq()
        if not self.over_bounds():
            # A hub calls this on each ack of an entry, while its other peers have yet
            # to ack it: the first of them met ends the call, not a pass over them all.
            for progress in self.peers.values():
                if progress.acked <= oldest:
                    return oldest  # it still needs the oldest entry: nothing to drop
        floor = self.next_seq  # the lowest acked point
        for progress in self.peers.values():
            floor = min(floor, progress.acked)  # (compiled: a native comparison)
        entries = self.entries
        while entries:
            oldest = self.first_seq()  # appended in order: the first is the oldest
            if oldest >= floor:  # someone still needs it: dropped only past the bounds
                if not self.over_bounds():
                    break
                for progress in self.peers.values():
                    if progress.acked <= oldest:
                        progress.behind = True  # it will need a catch-up by digest
            self._drop(oldest)
        return self.first_seq()

    def _drop(self, seq: int) -> None:
        entry = self.entries.pop(seq)
        self.bytes -= entry.size

    def __repr__(self) -> str:
        return (
            f"DeltaLog(entries={len(self.entries)}, next_seq={self.next_seq}, "
            f"peers={ {p: (s.acked, s.sent) for p, s in self.peers.items()} })"
        )


def prefix_over(position: int, held: set[tuple[int, int]]) -> int:
    """How far a prefix at ``position`` reaches over the ``held`` intervals, taken in
    order of start as it reaches each; those it reached or passed leave ``held``.

    The one rule of a prefix position, on both sides of a link: the receiver's in the
    sender's log (``Replica._release_held``) and the sender's account of it
    (``PeerProgress.note_delivered``).
    """
    while held:
        due = min((iv for iv in held if iv[0] <= position), default=None)
        if due is None:
            break
        held.discard(due)
        position = max(position, due[1])
    return position


def claimed_start(progress: PeerProgress) -> int:
    """Where the next interval sent to the peer starts, as it is told: the end of the
    last interval still in flight to it, or 1 when none is.

    The receiver merges an interval only when its start is at or below its position
    in our log, and then moves its position to the interval's end
    (``Replica._on_deltas``), so the start is a promise: the peer is sent, in this
    interval, every entry of ours from there on that it lacks. The entries are
    gathered from ``sent``, as before; below that lie (a) intervals still in flight,
    which may be lost, so the claim starts after the last of them and waits for it;
    (b) intervals the peer acknowledged, whose entries it holds; (c) stretches that
    held nothing for it (its own entries, keys its policy excludes, a declared
    source's), which we acknowledge ourselves and never send. With none in flight,
    everything below ``sent`` is (b) or (c) (``sent`` is then the acked point: an
    interval neither in flight nor acknowledged is one a resend took back), so the
    claim goes down to the log's start, and reaches the peer's position wherever it
    stands: a (c) stretch no longer leaves a gap it cannot tell from a loss, nor
    does our restart (its position in a new epoch's log starts at 1), a lost
    ``CaughtUp``, or a rewind. A store that lost what it acknowledged tells a lower
    position in its Hello, which rewinds the acked point to it first
    (``Replica._resume``): the promise is about the store we talk to.

    Cost: none in messages, and bytes only in the start's varint, usually fewer (1
    takes one byte). Nothing is minted, so no dot is reused; nothing is sent that
    was not sent before, so nothing loops. The wire format is unchanged; its
    meaning is not: a receiver of an older build takes the start as it always did
    (its position is the furthest end, as before; ``delivered`` then lags it,
    which rewinds less); from a sender of an older build, a receiver of this build
    acknowledges all as before, its position stopping at the sender's first gap
    (``Replica._on_deltas``), so each of its Hellos costs that sender a rewind.
    """
    end = 1
    for _, sent_end in progress.inflight:
        end = max(end, sent_end)
    return end


def _forgotten(
    progress: PeerProgress, gone: frozenset[str], received: dict[str, int], ours: dict[str, int]
) -> bool:
    """Whether entries left out before a restart may be missing from the peer.

    A restart forgets ``skipped``. What the peer may lack is then known only from
    positions: our store holds more of a gone source's log than the peer's does.
    Which of our entries those were, we cannot tell (and the log may have collected
    them, acknowledged by the intervals they were left out of), so only a digest
    comparison finds them: rare, and it sends only what differs.
    """
    if not progress.skips_forgotten:
        return False
    return any(
        node_of(actor) in gone and end > received.get(actor, 1) for actor, end in ours.items()
    )


MAX_HELD = 64  # acks held per peer until the peer's position can reach them
MAX_DOUBLINGS = 16  # bounds the exponent; ``longest`` bounds the timeout itself


def backed_off(timeout: int, timeouts: int, longest: int | None) -> int:
    """``timeout`` doubled ``timeouts`` times, but no longer than ``longest``."""
    if longest is None:
        return timeout
    return max(timeout, min(timeout << timeouts, longest))


PROBE_STAMP_MASK = (1 << 14) - 1  # 14 bits: a 2-byte varint, 16.4 s of milliseconds


def probe_stamp(now: int) -> int:
    """What a Probe carries of its send time: the low bits, enough to place it."""
    return now & PROBE_STAMP_MASK


def probe_sent_at(stamp: int, last_probe: int) -> int:
    """When the probe an answer echoes ``stamp`` of was sent: the latest time with
    those low bits no later than our last probe. Exact for a probe sent within
    16 s of the last one; an older answer is placed later than it was sent, and a
    forged one no later than the last probe, so neither resends more than a true
    answer to the last probe would."""
    return last_probe - ((last_probe - stamp) & PROBE_STAMP_MASK)


def _resend(progress: PeerProgress) -> None:
    """Send the peer everything from its acked point again (their timers start at
    the resend: a restart stamped before the clock went back must not keep them due)."""
    progress.inflight.clear()
    progress.done.clear()
    progress.sent = progress.acked
    progress.restarted_at = None


def _note_skipped(skipped: dict[str, tuple[int, int | None]], entry: LogEntry) -> None:
    assert entry.origin is not None  # only a peer's entries have a source to skip
    held = skipped.get(entry.origin)
    if held is None:
        skipped[entry.origin] = (entry.seq, entry.origin_end)
        return
    skipped[entry.origin] = (min(held[0], entry.seq), joined_end(held[1], entry.origin_end))


def joined_end(a: int | None, b: int | None) -> int | None:
    """The further of two origin-log ends; unknown if either is."""
    return None if a is None or b is None else max(a, b)


def overdue(now: int, sent_at: int, timeout: int) -> bool:
    """Whether a message sent at ``sent_at`` is due to be resent at ``now``.

    Also when the clock went backwards (``now < sent_at``): the clock is the wall
    clock, which an NTP step or a corrected skew moves back by minutes, and waiting
    for it to pass ``sent_at`` again would stall every retransmission that long.
    Resending early is harmless: every message is idempotent.
    """
    return now - sent_at >= timeout or now < sent_at


def _joined(parts: list[Keyspace]) -> Keyspace:
    """The join of log deltas, to encode and send; it shares values with the log.

    A key in one part only is shared as it is; a key in several is copied once,
    then joined into, so the log's deltas never change.
    """
    out = Keyspace()
    entries = out.entries
    copied: set[Key] = set()
    for part in parts:
        for key, child in part.entries.items():
            mine = entries.get(key)
            if mine is None:
                entries[key] = child
                continue
            if key not in copied:
                mine = entries[key] = mine.copy()
                copied.add(key)
            mine.merge(child)
    return out
