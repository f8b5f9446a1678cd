"""The replica state machine, in the sans-IO style of etcd's raft.

Inputs go in (a local update, bytes from a peer, a tick, a link coming up or
going down) and change the replica in memory; ``ready()`` then hands out
everything they call for: a ``WriteBatch`` to persist and messages to send. The
driver (a daemon, the simulator, the embedding API) must commit the batch
*before* it sends the messages or acknowledges the updates to their clients: that
ordering is what makes an acknowledged write durable, and a sent delta one that
survives a crash of its sender. Calling ``ready()`` once for many inputs is how
writes share a commit: all local deltas since the last ``ready()`` become one log
entry, and each key touched is encoded once.

The replica reads no clock and draws no random numbers of its own: ``clock``
(milliseconds) and ``new_epoch`` (a source of fresh 64-bit epochs) are parameters,
so the simulator replays a run exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sync._catchup import CatchUp, answer_expand, answer_list, check_answer
from sync._causal import actor_name, node_of
from sync._codec import Reader, Span, Writer
from sync._crdt import CRDT, decode
from sync._digest import DigestTree
from sync._errors import CodecError, ProtocolError
from sync._hlc import DEFAULT_MAX_AHEAD_MS, HybridLogicalClock
from sync._keyspace import (
    Key,
    KeyOffsets,
    Keyspace,
    decode_with_encodings,
    parse_storage_key,
    storage_key,
)
from sync._messages import (
    DEFAULT_MAX_MESSAGE,
    CaughtUp,
    Expand,
    Fingerprints,
    Hello,
    Items,
    ListItems,
    Message,
    Probe,
    ProbeAck,
    Push,
    PushAck,
    Sources,
    SourcesAck,
    decode_interval,
    decode_message,
    encode_ack,
    encode_deltas,
    encode_message,
)
from sync._policy import EVERYTHING, LinkPolicy
from sync._propagation import (
    DeltaLog,
    backed_off,
    joined_end,
    overdue,
    prefix_over,
    probe_sent_at,
    probe_stamp,
)
from sync._storage import Storage, StorageError, StoreMeta, WriteBatch

T = TypeVar("T", bound=CRDT)


@dataclass(frozen=True)
class ReplicaConfig:
    batch_bytes: int = 256 * 1024  # delta interval budget, below the message limit
    # ... and at most this many keys per interval (None: bytes alone), counted in the
    # entries the log holds decoded (every local one; a relayed entry kept only as its
    # payload counts by its bytes). A byte budget that carries large values in few,
    # large frames would otherwise make frames of many thousands of small deltas.
    batch_keys: int | None = None
    max_message_bytes: int = DEFAULT_MAX_MESSAGE
    window: int = 8  # intervals in flight per peer
    # At most this many new intervals per link in one ready() (None: fill the window).
    # A driver that sends each ready()'s messages before building the next (daemons:
    # 1) gets a backlog's first interval on the wire after one interval's work, not
    # after the whole window's: the peer starts applying while the rest is built.
    # ``Ready.more`` says when the cap held something back.
    intervals_per_ready: int | None = None
    retransmit_ms: int = 2_000
    # A peer that acknowledges nothing has its timeout doubled each time, up to this; a
    # Probe goes to it at most once per probe_ms (once per tick, for a daemon's
    # 200 ms ticks), and its first answer resends what it lacks (sync/_propagation.py).
    retransmit_max_ms: int = 32_000
    probe_ms: int = 200
    # A Probe to a silent peer follows its oldest unacknowledged interval when that
    # interval's Deltas message comes to at most this many bytes, so a heal delivers
    # it a tick and a link delay later; 0 sends bare Probes (sync/_propagation.py,
    # "Data in probes").
    probe_data_bytes: int = 1024
    max_ahead_ms: int = DEFAULT_MAX_AHEAD_MS
    log_max_entries: int = 100_000
    log_max_bytes: int = 64 * 1024 * 1024
    # Hubs relay what they receive; an edge sends only its own updates (a hub refuses
    # an edge's delta carrying anyone else's), so its peers' writes travel their way.
    relay: bool = True
    # The store was restored from a copy: its epoch's dots may already be out in the
    # fleet. A new epoch at open makes every later dot new, even before any peer can
    # tell us we are behind (which a Hello would, but only once a link is up).
    new_epoch: bool = False


@dataclass
class Event:
    """Something an operator wants in the log: a catch-up, a rewind, a new epoch."""

    what: str
    fields: dict[str, object]

    def __repr__(self) -> str:
        return f"Event({self.what!r}, {self.fields!r})"


@dataclass
class Ready:
    """What the driver must do: persist ``batch``, then send ``messages``; and log
    ``events``."""

    batch: WriteBatch = field(default_factory=WriteBatch)
    messages: list[tuple[str, bytes]] = field(default_factory=list)  # (link, encoded)
    events: list[Event] = field(default_factory=list)
    more: bool = False  # intervals_per_ready held some back: call ready() again soon

    def __init__(
        self,
        batch: WriteBatch | None = None,
        messages: list[tuple[str, bytes]] | None = None,
        events: list[Event] | None = None,
    ) -> None:
        # Written out, not generated: compiled, a dataclass's generated __init__ stays
        # interpreted, and every ready() makes a Ready.
        self.batch = WriteBatch() if batch is None else batch
        self.messages = [] if messages is None else messages
        self.events = [] if events is None else events
        self.more = False

    def absorb(self, later: Ready) -> None:
        self.batch.absorb(later.batch)
        self.messages.extend(later.messages)
        self.events.extend(later.events)
        self.more = later.more

    def is_empty(self) -> bool:
        return self.batch.is_empty() and not self.messages


@dataclass
class Link:
    policy: LinkPolicy
    remote: str | None = None  # the peer's actor, once its Hello arrived
    hello_sent_at: int = 0
    # What the transport authenticated (a TLS certificate): the node the peer must
    # say it is, and whether it may only send updates it made itself (an edge).
    certified_node: str | None = None
    own_writes_only: bool = False
    # Relay sources (sync/_propagation.py): the prefixes the peer pushes us (from its
    # Hello); the nodes we last told it we receive from directly (None: Hellos told it
    # different sets, so it must be told again); a Sources message awaiting its answer
    # (serial, sent at); the highest serial the peer's Sources messages reached here.
    remote_push: tuple[str, ...] = ()
    # Something we sent went unanswered for a retransmission timeout, and nothing has
    # come from the peer since: it is not declared a source while so, and it is
    # probed (the last resend or Probe to it went at ``probed_at``).
    silent: bool = False
    probed_at: int = 0
    hellos: int = 0  # Hellos sent on this link
    # Intervals of the peer's log merged here that start past our position in it:
    # the position moves over each once it reaches its start (see ``_on_deltas``).
    held: set[tuple[int, int]] = field(default_factory=set)
    declared: frozenset[str] | None = None
    sources_pending: tuple[int, int] | None = None
    sources_in: int = 0


class Replica:
    def __init__(
        self,
        node_id: str,
        epoch: int,
        clock: Callable[[], int],
        new_epoch: Callable[[], int],
        config: ReplicaConfig | None = None,
    ) -> None:
        if not node_id or "@" in node_id or any(c.isspace() for c in node_id):
            raise ValueError(f"node id {node_id!r} must be non-empty, without '@' or spaces")
        self.node_id = node_id
        self.epoch = epoch
        self._actor = (epoch, actor_name(node_id, epoch))
        self.config = config or ReplicaConfig()
        self.clock = clock
        self.new_epoch = new_epoch
        self.hlc = HybridLogicalClock(clock, self.config.max_ahead_ms)
        self.keyspace = Keyspace()
        self.log = DeltaLog(
            max_entries=self.config.log_max_entries, max_bytes=self.config.log_max_bytes
        )
        self.links: dict[str, Link] = {}
        self.acked_at_open: dict[str, int] = {}
        # Per peer, our position in its log: everything it held for us below it is
        # merged here, and nothing from past it (see _on_deltas). Persisted with the
        # merge, and told to peers in each Hello (see _resume). Keyed by the epoch
        # whose log it is: a new epoch's log may reuse an old one's sequence numbers
        # for other entries (see _supersede).
        self.received: dict[str, int] = {}
        # Our earlier epochs whose logs ours goes on from, each with the sequence number
        # below which ours holds what theirs held (see _position_in_our_log).
        self.earlier_logs: dict[str, int] = {}
        self.rewinds = 0  # peers found to have lost deltas they had acknowledged
        # Fingerprints of the state as of the last ready() (a large value's, of the state
        # when the tree is next read: it encodes such values again then, see _digest.py).
        self.tree = DigestTree(self._encode_current)
        self.catchups: dict[str, tuple[str, CatchUp]] = {}  # remote -> (link, session)
        self._sessions = 0
        self.last_catch_up: CatchUp | None = None
        # What the inputs since the last ready() call for:
        self._pending: dict[str | None, Keyspace] = {}  # origin -> joined deltas
        self._unlogged = False  # a change was made that no tracked peer needs logged
        # ... and it came from the one peer tracked, which the skip must not leave behind
        self._unlogged_from: str | None = None
        self._pending_encoded: dict[str | None, bytes] = {}  # of a pending delta, if known
        self._pending_end: dict[str | None, int | None] = {}  # its end in the origin's log
        self._sources_serial = 0
        self._dirty: set[Key] = set()
        # Encodings of dirty keys' values, where known without encoding them (a key
        # stored just as a peer sent it); any later change to the key drops its entry.
        self._encoded: dict[Key, bytes] = {}
        self._outbox: list[tuple[str, bytes]] = []
        self._events: list[Event] = []
        self._batch = WriteBatch()

    @property
    def actor(self) -> str:
        # Read once per update: format it again only when the epoch changed.
        if self._actor[0] != self.epoch:
            self._actor = (self.epoch, actor_name(self.node_id, self.epoch))
        return self._actor[1]

    # ---- opening ------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        storage: Storage,
        node_id: str,
        clock: Callable[[], int],
        new_epoch: Callable[[], int],
        config: ReplicaConfig | None = None,
    ) -> Replica:
        """Load a replica from ``storage``; its first ``ready()`` marks the store in use."""
        meta = storage.meta()
        if meta is not None and meta.node_id != node_id:
            raise StorageError(
                f"this store belongs to node {meta.node_id!r}, not {node_id!r}; "
                "use that id or another data directory"
            )
        restored = config is not None and config.new_epoch
        # After a crash, or on a copy of a store that was in use (a backup or snapshot
        # restored without telling us), the store may be behind dots this node already
        # sent: only a clean shutdown vouches that it is not (kv679). Peers carry their
        # progress over to the new epoch (_supersede), so a crash costs no catch-up.
        unclean = meta is not None and not meta.clean_shutdown
        epoch = new_epoch() if meta is None or restored or unclean else meta.epoch
        replica = cls._loaded(
            storage, node_id, epoch, clock=clock, new_epoch=new_epoch, config=config
        )
        if meta is not None and epoch != meta.epoch:
            # The store's log is its last epoch's as far as it goes, crashed or copied.
            replica.earlier_logs[actor_name(node_id, meta.epoch)] = replica.log.next_seq
            why = "asked to (--new-epoch)" if restored else "the store was not shut down cleanly"
            replica._events.append(Event("new epoch", {"epoch": f"{epoch:016x}", "why": why}))
        return replica

    @classmethod
    def _loaded(
        cls,
        storage: Storage,
        node_id: str,
        epoch: int,
        *,
        clock: Callable[[], int],
        new_epoch: Callable[[], int],
        config: ReplicaConfig | None,
    ) -> Replica:
        replica = cls(node_id, epoch, clock, new_epoch, config)
        replica._load(storage)
        replica._batch.meta = StoreMeta(node_id, epoch, clean_shutdown=False)
        return replica

    def _load(self, storage: Storage) -> None:
        self.tree.load(self._load_entries(storage))
        last = 0
        for seq, record in storage.log():
            origin, payload = decode_log_record(record)
            self.log.next_seq = seq
            self.log.append(Keyspace.decode(payload), origin, len(payload), payload)
            last = seq
        self.acked_at_open = storage.acks()
        self.received = storage.received()
        self.log.next_seq = max(last + 1, max(self.acked_at_open.values(), default=1), 1)
        # Changes before the oldest logged entry (or all, if none is logged) are only in
        # the state: a peer that needs them is caught up from it.
        self.log.complete_from = self.log.first_seq()
        if not self.log.entries and self.keyspace.entries:
            self.log.skip()
        for peer, acked in self.acked_at_open.items():
            # Taken as delivered: the ack may cover stretches that held nothing for the
            # peer, past its position; a Hello from the very epoch the row is for says
            # where it really stands, and one from another epoch is checked (_resume).
            progress = self.log.track(peer, acked)
            progress.delivered = acked
            progress.skips_forgotten, progress.sources_known = True, False

    def _load_entries(self, storage: Storage) -> Iterator[tuple[Key, bytes, bytes]]:
        entries = self.keyspace.entries
        for raw_key, raw_value in storage.entries():
            key = parse_storage_key(raw_key)
            child = decode(raw_value)
            if key[1] != child.TYPE_TAG:
                raise CodecError(f"stored entry {key[0]!r} has the wrong type")
            entries[key] = child
            yield key, raw_key, raw_value

    def reloaded(self, storage: Storage) -> Replica:
        """A replica rebuilt from ``storage`` with this one's links, introduced afresh.

        For when a commit failed: memory then holds changes the store does not. It
        keeps its epoch, unlike a restart after a crash: a batch's messages are sent,
        and its writers acknowledged, only after it commits, so no peer or client saw
        a dot the store lacks, and the next updates may take those dots again. (A
        new epoch each time would add an actor to every version vector per failed
        commit: on a full disk, one per refused write.)
        """
        fresh = Replica._loaded(
            storage, self.node_id, self.epoch,
            clock=self.clock, new_epoch=self.new_epoch, config=self.config,
        )  # fmt: skip
        fresh.earlier_logs = dict(self.earlier_logs)
        for link, state in self.links.items():
            fresh.connect(link, state.policy, state.certified_node, state.own_writes_only)
        return fresh

    def close(self) -> Ready:
        """The last ``ready()``, recording a clean shutdown."""
        self._batch.meta = StoreMeta(self.node_id, self.epoch, clean_shutdown=True)
        return self.ready()

    # ---- local updates -------------------------------------------------------------

    def update(self, path: str, cls: type[T], mutate: Callable[[T], T]) -> Keyspace:
        """Apply a mutator of ``cls`` at ``path``; return the delta.

        The update is durable only once the batch of the next ``ready()`` is committed.
        The replica keeps the returned delta (and may merge later ones into it, or
        take its values into an earlier one): copy it to keep it as it was.
        """
        delta = self.keyspace.apply(path, cls, mutate)
        self._note(delta, origin=None)
        return delta

    def remove(self, path: str, cls: type[CRDT]) -> Keyspace:
        delta = self.keyspace.remove(path, cls)
        self._note(delta, origin=None)
        return delta

    def _note(
        self,
        delta: Keyspace,
        origin: str | None,
        encoded: Span | None = None,
        origin_end: int | None = None,
    ) -> None:
        """Remember a delta already applied to the keyspace, for the next ready().

        ``encoded``: the delta's canonical encoding, when the caller has it (copied out
        of the message it came in only if the log keeps it);
        ``origin_end``: where it ends in the origin's log, when known.
        """
        if delta.is_bottom():
            return
        if origin is not None and not self.config.relay:
            pass  # a replica that does not relay never sends this: no log entry (_pump)
        elif not self.log.peers:
            # Nobody to send it to: the log would skip it anyway, so do not join it.
            self._unlogged = True
        elif origin is not None and self._only_its_origin_tracked(origin):
            self._unlog_from(origin)
        else:
            pending = self._pending.get(origin)
            if pending is not None and encoded is not None and origin in self._pending_encoded:
                # Two deltas that each arrived as their own canonical encoding (frames a
                # link applies while the last commit runs): two log entries keep both
                # encodings, where one joined entry would have to be encoded again.
                self._seal(origin, self._batch)
                pending = None
            if pending is None:
                self._pending[origin] = delta  # the replica owns it from here on
                self._pending_end[origin] = origin_end
                if encoded is not None:
                    self._pending_encoded[origin] = encoded.take()
            else:
                pending.absorb(delta)  # deltas of one key coalesce: their join is a delta
                self._pending_encoded.pop(origin, None)
                self._pending_end[origin] = joined_end(self._pending_end.get(origin), origin_end)
        self._dirty.update(delta.entries)
        if self._encoded:
            for key in delta.entries:
                self._encoded.pop(key, None)

    def _note_taken(
        self, delta: Keyspace, origin: str, encoded: Span, origin_end: int | None
    ) -> None:
        """Like ``_note``, for a received delta whose values the state now holds (so
        the log must not keep them, nor join later deltas into them): it is logged
        at once, by its encoding alone, after what is pending from its origin."""
        if delta.is_bottom():
            return  # an empty payload: nothing to log, as ``_note`` would not
        if not self.config.relay:
            pass  # a replica that does not relay never sends this: no log entry (_note)
        elif not self.log.peers:
            self._unlogged = True
        elif self._only_its_origin_tracked(origin):
            self._unlog_from(origin)
        else:
            if origin in self._pending:
                self._seal(origin, self._batch)
            self._append_log(None, origin, encoded.take(), origin_end, self._batch)
        self._dirty.update(delta.entries)

    # ---- the output --------------------------------------------------------------

    def ready(self) -> Ready:
        """Everything the inputs since the last call require: persist, then send."""
        # The inputs' batch, which this call fills up (the pump's own acks and
        # collection too, through ``_batch``) before handing it out.
        batch = self._batch
        if self._unlogged:
            self._unlogged = False
            self._skip(batch)
            if self._unlogged_from is not None:
                self._keep_up_past_skip(self._unlogged_from, batch)
        if self._pending:  # (most inputs are acks: nothing to log or store but them)
            self._log_pending(batch)
        if self._dirty:
            self._store_dirty(batch)
        self._encoded.clear()
        if self.log.over_bounds():
            batch.log_drop_below = self.log.collect()
        ready = Ready(batch, [])
        self._pump(ready)
        self._batch = WriteBatch()
        ready.messages[:0], self._outbox = self._outbox, []
        ready.events, self._events = self._events, []
        return ready

    def _skip(self, batch: WriteBatch) -> None:
        """The log skips a change (``DeltaLog.skip``); the entries it dropped with it
        leave the store too."""
        if self.log.skip():
            batch.log_drop_below = self.log.next_seq

    def _only_its_origin_tracked(self, origin: str) -> bool:
        """Whether the one peer our log tracks is ``origin``, and it has every entry:
        then a delta from it is needed by no peer (it is never sent back), and a peer
        that turns up later is caught up from the state, as with no peer at all. A
        cloud hub fed by one link writes each received delta once, not twice."""
        peers = self.log.peers
        if len(peers) != 1:
            return False
        progress = peers.get(origin)
        return progress is not None and progress.settled_at(self.log.next_seq)

    def _unlog_from(self, origin: str) -> None:
        self._unlogged = True
        self._unlogged_from = origin

    def _keep_up_past_skip(self, origin: str, batch: WriteBatch) -> None:
        """The log skipped deltas from ``origin``, its one peer, which had every entry
        before: it has every entry still (none it needs was skipped), so it must not
        fall behind the log's new start and be caught up for nothing."""
        self._unlogged_from = None
        progress = self.log.peers.get(origin)
        if progress is None or not progress.settled_at(self.log.next_seq - 1):
            return  # it moved since (a Hello rewound it): a catch-up settles it
        progress.acked = progress.sent = self.log.next_seq
        batch.acks[origin] = progress.acked

    def _log_pending(self, batch: WriteBatch) -> None:
        """Seal the deltas since the last ready(): one log entry per origin."""
        for origin in list(self._pending):
            self._seal(origin, batch)

    def _seal(self, origin: str | None, batch: WriteBatch) -> None:
        """Log the pending delta from ``origin`` into ``batch``."""
        delta = self._pending.pop(origin)
        payload = self._pending_encoded.pop(origin, None)
        end = self._pending_end.pop(origin, None)
        if not self.log.peers:
            self._skip(batch)
            return
        if payload is not None:
            self._append_log(delta, origin, payload, end, batch)
            return
        encoded, offsets = delta.encode_indexed()  # a backlog of these is spliced, not encoded
        self._append_log(delta, origin, encoded, end, batch, offsets=offsets)

    def _append_log(
        self,
        delta: Keyspace | None,
        origin: str | None,
        payload: bytes,
        end: int | None,
        batch: WriteBatch,
        *,
        offsets: KeyOffsets | None = None,
    ) -> None:
        entry = self.log.append(delta, origin, len(payload), payload, end, offsets=offsets)
        batch.log_append.append((entry.seq, encode_log_record(origin, payload)))

    def _encode_current(self, key: Key) -> bytes | None:
        child = self.keyspace.entries.get(key)
        return None if child is None else child.encode()

    def _store_dirty(self, batch: WriteBatch) -> None:
        """Each key changed since the last ready(), encoded once, for the store and tree."""
        entries, known = self.keyspace.entries, self._encoded
        for key in self._dirty:
            encoded = known.get(key)
            if encoded is None:
                child = entries.get(key)
                encoded = None if child is None else child.encode()
            stored = storage_key(key)
            batch.entries[stored] = encoded
            self.tree.set(key, encoded, stored)
        self._dirty.clear()

    # ---- links -------------------------------------------------------------------------

    def connect(
        self,
        link: str,
        policy: LinkPolicy = EVERYTHING,
        certified_node: str | None = None,
        own_writes_only: bool = False,
    ) -> None:
        """A link came up: introduce ourselves. Deltas flow once the peer's Hello (who it
        is, and where its store stands in our log) arrived."""
        self.links[link] = Link(
            policy, certified_node=certified_node, own_writes_only=own_writes_only
        )
        self._hello(link)

    def _hello(self, link: str) -> None:
        """Introduce ourselves; ``knows_you=False`` asks the peer for an answer."""
        state = self.links[link]
        first = state.hellos == 0
        state.hellos += 1
        state.hello_sent_at = self.clock()
        progress = self.keyspace.actor_progress()
        knows_you = state.remote is not None
        if knows_you and state.declared is not None:
            sources = state.declared  # told already (a Sources message may be on its way)
        else:
            sources = self._direct_sources(link)
            # The peer takes the sources of the first Hello it gets, perhaps not ours.
            state.declared = sources if first or state.declared == sources else None
        hello = Hello(
            self.node_id, self.epoch, progress, knows_you, dict(self.received),
            tuple(sorted(state.policy.push)), tuple(sorted(sources)),
        )  # fmt: skip
        self._outbox.append((link, encode_message(hello)))

    def disconnect(self, link: str) -> None:
        """A link went down. Its peer stays tracked, so the log waits for it."""
        gone = self.links.pop(link, None)
        if gone is not None and gone.remote is not None:
            self.catchups.pop(gone.remote, None)  # restarted when the link comes back
            if gone.remote in self.log.peers:
                self.log.reset_sent(gone.remote)
            self._update_sources()  # the peers it was a direct source for must know

    # ---- relay sources (sync/_propagation.py, "declare sources") ----------------------

    def _direct_sources(self, link: str) -> frozenset[str]:
        """The nodes we receive from directly that the peer on ``link`` need not relay.

        Each must be up (its Hello arrived) and push us, and we pull from it, all that
        we pull from that peer: then whatever the peer got from it, it sends us too,
        and we take it. A peer that does not relay (an edge) is told nothing, and edges
        are not declared: in a hierarchy no other relaying node links to our edges, and
        declaring them would tell every relaying peer of every edge's link coming and
        going (a hub starting would send each peer one Sources per edge).
        """
        target = self.links[link]
        if target.own_writes_only:
            return frozenset()
        want = target.policy.pull
        nodes = {
            node_of(state.remote)
            for other, state in self.links.items()
            if other != link
            and state.remote is not None
            and not state.own_writes_only
            and not state.silent
            and covers(state.remote_push, want)
            and covers(state.policy.pull, want)
        }
        if target.remote is not None:
            nodes.discard(node_of(target.remote))
        return frozenset(nodes)

    def _update_sources(self) -> None:
        """Tell each peer that knows us a changed set of sources (until it answers).

        At once, on every link change: a tick's delay (which would tell each peer once
        when many links come up together) slowed convergence after heals in the
        swarm sweep (median rounds 6 to 7 over 300 seeds).
        """
        for link, state in self.links.items():
            if state.remote is None:
                continue  # our next Hello carries the set
            sources = self._direct_sources(link)
            if sources != state.declared:
                state.declared = sources
                self._sources_serial += 1
                state.sources_pending = (self._sources_serial, self.clock())
                self._send_sources(link, state)

    def _send_sources(self, link: str, state: Link) -> None:
        assert state.sources_pending is not None and state.declared is not None
        nodes = tuple(sorted(state.declared))
        msg = Sources(state.sources_pending[0], nodes, dict(self.received))
        self._outbox.append((link, encode_message(msg)))

    def _note_silent(self, peers: list[str], now: int) -> None:
        """Peers that left an interval unanswered for a retransmission timeout.

        The link may be cut without the transport knowing yet (a keepalive takes
        longer): while it says nothing, it is no direct source of ours, so the other
        peers relay what came from it again, and it is probed (``_probe``); the
        resend that ``tick`` just made is this tick's probe.
        """
        changed = False
        for state in self.links.values():
            if state.remote in peers:
                state.probed_at = now
                if not state.silent:
                    state.silent = changed = True
        if changed:
            self._update_sources()

    def _heard_again(self, remote: str) -> None:
        """A silent peer spoke: resend to it, and to the other silent peers, what the
        fixed timer would have by now (see "Stalls" in sync/_propagation.py)."""
        now, timeout = self.clock(), self.config.retransmit_ms
        self.log.resend_stale(remote, now, timeout)
        for state in self.links.values():
            if state.silent and state.remote is not None:
                self.log.resend_stale(state.remote, now, timeout)

    def _probe(self, now: int) -> None:
        """Ask each silent peer that still owes us acks whether the link is back; the
        oldest of what it owes goes just before the question when small, so the
        answer comes after its ack and resends only what is still missing
        (sync/_propagation.py, "Data in probes")."""
        for link, state in self.links.items():
            if self._probing(state) and overdue(now, state.probed_at, self.config.probe_ms):
                state.probed_at = now
                if state.silent:
                    self._probe_data(link, state)
                self._outbox.append((link, encode_message(Probe(probe_stamp(now)))))

    def _probe_data(self, link: str, state: Link) -> None:
        """The silent peer's oldest unacknowledged interval, if its Deltas are small."""
        assert state.remote is not None  # probed: its Hello arrived
        budget = self.config.probe_data_bytes
        interval = self.log.probe_interval(
            state.remote, budget, state.policy.may_push, local_only=not self.config.relay
        )
        if interval is not None:
            raw = interval.message()
            if len(raw) <= budget:
                self._outbox.append((link, raw))

    def _probing(self, state: Link) -> bool:
        """The link is silent, and its peer has intervals of ours in flight; or our
        catch-up session with its peer has resent requests that went unanswered."""
        if state.remote is None:
            return False
        running = self.catchups.get(state.remote)
        if running is not None and running[1].timeouts:
            return True
        if not state.silent:
            return False
        progress = self.log.peers.get(state.remote)
        return progress is not None and bool(progress.inflight)

    def _on_sources(self, link: str, remote: str, msg: Sources) -> None:
        state = self.links[link]
        if msg.serial > state.sources_in:  # else a late copy: a newer set is in force
            state.sources_in = msg.serial
            if self.log.declare(remote, frozenset(msg.nodes), msg.received, self.received):
                self._store_rewind(remote)
        self._outbox.append((link, encode_message(SourcesAck(msg.serial))))

    def _on_sources_ack(self, link: str, ack: SourcesAck) -> None:
        state = self.links[link]
        if state.sources_pending is not None and state.sources_pending[0] == ack.serial:
            state.sources_pending = None

    # ---- receiving -----------------------------------------------------------------------

    def receive(self, link: str, raw: bytes) -> None:
        """Handle bytes from ``link``. Bad input raises ``ProtocolError`` and changes nothing."""
        if link not in self.links:
            raise ProtocolError(f"message on unknown link {link!r}")
        # Deltas and Acks, most of what arrives, are read without a message object.
        interval = decode_interval(raw, self.config.max_message_bytes)
        msg = None if interval is not None else decode_message(raw, self.config.max_message_bytes)
        if isinstance(msg, Hello):
            self._on_hello(link, msg)
            return
        state = self.links[link]
        remote = state.remote
        if remote is None:
            kind = type(msg).__name__ if msg is not None else "Ack"
            if interval is not None and interval[2] is not None:
                kind = "Deltas"
            raise ProtocolError(f"{kind} before Hello on link {link!r}")
        heard_again = state.silent  # settled after the message: a refused one changes nothing
        if interval is not None:
            start, end, payload = interval
            if payload is None:
                self._on_ack(remote, start, end)
            else:
                self._on_deltas(link, remote, start, end, payload)
        elif isinstance(msg, CaughtUp):
            self._advance_received(remote, msg.next_seq)
            self._release_held(link, remote)
        elif isinstance(msg, Sources):
            self._on_sources(link, remote, msg)
        elif isinstance(msg, SourcesAck):
            self._on_sources_ack(link, msg)
        elif isinstance(msg, Probe):
            self._outbox.append((link, encode_message(ProbeAck(msg.stamp))))
        elif isinstance(msg, ProbeAck):
            # Never past our last probe: a forged or replayed answer resends at most
            # what a true one would, once (the resend is newer than any probe).
            self.log.resend_sent_by(remote, probe_sent_at(msg.stamp, state.probed_at))
        elif isinstance(msg, Expand | ListItems | Push):
            self._answer_catch_up(link, remote, msg)
        elif isinstance(msg, Fingerprints | Items | PushAck):
            self._on_catch_up_answer(link, remote, msg)
        if heard_again:  # it answers again: a direct source once more
            state.silent = False
            self._update_sources()
            self._heard_again(remote)  # after the message: what it acknowledged is not resent
        running = self.catchups.get(remote)
        if running is not None and running[1].timeouts:  # a stalled session, heard again
            self._outbox.extend((running[0], raw) for raw in running[1].heard(self.clock()))

    def _on_hello(self, link: str, hello: Hello) -> None:
        certified = self.links[link].certified_node
        if certified is not None and hello.node_id != certified:
            raise ProtocolError(  # certified: by its certificate, or the id it was dialed as
                f"peer is {certified!r} by its certificate (or the id it was dialed as), "
                f"but its Hello says it is {hello.node_id!r}"
            )
        ours = self.keyspace.actor_progress()
        if hello.progress.get(self.actor, 0) > ours.get(self.actor, 0):
            # Our store is behind what a peer saw of us (wiped or restored): our next
            # dots would repeat ones it holds. A fresh epoch makes them new (kv679).
            # Our log goes on in memory: positions in it under the old epoch hold.
            self.earlier_logs[self.actor] = self.log.next_seq
            self.epoch = self.new_epoch()
            why = f"{hello.node_id} saw more of our updates than the store holds"
            self._events.append(Event("new epoch", {"epoch": f"{self.epoch:016x}", "why": why}))
            self._batch.meta = StoreMeta(self.node_id, self.epoch, clean_shutdown=False)
        remote = actor_name(hello.node_id, hello.epoch)
        state = self.links[link]
        # This link's first Hello from this peer, or from another epoch of it, which may
        # run on another copy of the store (or be a stale Hello, overtaken): where it
        # stands in our log is taken from it (_resume).
        first = state.remote != remote
        new_epoch = False  # it came back under another epoch than the one we tracked
        if first:
            state.held.clear()  # another log's intervals, or ones the peer will resend
            new_epoch = self._supersede(hello.node_id, remote)
            if remote in self.log.peers:
                self.log.reset_sent(remote)  # what was in flight before is presumed lost
            state.remote = remote
        progress = self.log.track(remote, self.acked_at_open.get(remote, 1))
        progress.relays = not state.own_writes_only
        restored = False  # its store lost what it had
        if lost_own_events(hello, ours):
            # Its store lost updates it made (wiped, or an older copy): our log never
            # sends a peer its own updates back, so only a catch-up by digest can.
            progress.behind = True
            restored = True
        if first:
            held = self._position_in_our_log(hello.received)
            restored = self._resume(remote, held) or restored
            if new_epoch:
                if not progress.relays:
                    self._resend_earlier_epochs(remote, held)
                # Its earlier epoch's acked point (or the rewound one) is now this
                # epoch's: kept under this epoch's name too, so that after our restart a
                # Hello from this epoch is from the one whose acked point we kept
                # (``_resume``).
                self._store_rewind(remote)
            self.log.heard_from(remote)
            if restored and progress.relays:  # edges are never declared sources
                for peer in self.log.source_lost_updates(hello.node_id):
                    self._store_rewind(peer)
            state.remote_push = hello.push
            if self.log.declare(remote, frozenset(hello.sources), hello.received, self.received):
                self._store_rewind(remote)
            self._update_sources()  # a new direct source for the other peers
        if not hello.knows_you:  # it has not heard from us (our Hello may be lost)
            self._hello(link)

    def _store_rewind(self, remote: str) -> None:
        """Store a peer's lowered acknowledged point (a rewind, or a catch-up owed)
        with the batch. The ack row in the store is the old, higher one: a restart
        before the peer acknowledged the resend, or before its catch-up was done,
        would go on from there, past what the peer lacks (simulator seed 1966 under
        ``rollback-hub``, with a crash of the relay after). A catch-up owed is stored
        as 0, below any log's floor: reopened, the log catches the peer up again.
        (Also a new epoch's acked point carried over from its earlier one, ``_resume``.)"""
        progress = self.log.peers[remote]
        self._batch.acks[remote] = 0 if progress.behind else progress.acked

    def _supersede(self, node_id: str, remote: str) -> bool:
        """``remote`` is ``node_id``'s current epoch: its earlier epochs hand over.
        True if our log tracked an earlier one.

        The peer kept its store across the restart (a crash takes a new epoch too), so
        its position in our log carries over; if the store is another one (wiped, or an
        older copy), its Hello rewinds what it lacks (_resume). Forgetting the old
        epoch instead would hold the delta log for a peer that is never coming back.

        Our position in its log does not carry over: it stays under the old epoch
        until the new one sends us something (_advance_received). A store restored
        from an older copy goes on from the copy's end of the log, and its new epoch
        gives the sequence numbers past that to other entries. Carried over, a
        position past the copy's end claimed the new entries too; a copy of *our*
        store taken then claimed them for good, and the peer, which had delivered
        them, never sent them again (``sim/scenarios/restored-hub-and-edge-positions``).
        Only the peer knows how far its new log agrees with its old one; it reads the
        old position so (``_position_in_our_log``).
        """
        earlier = [p for p in self.log.peers if p != remote and node_of(p) == node_id]
        for old in earlier:
            self.log.rename(old, remote)
            self.catchups.pop(old, None)  # else it would retry for good
        return bool(earlier)

    def _on_deltas(self, link: str, remote: str, start: int, end: int, payload: Span) -> None:
        """Merge and acknowledge an interval; move our position in ``remote``'s log to
        its end once the position reaches its start.

        Our position is a *prefix*: everything the peer's log held for us below it is
        merged here. The sender vouches for that: an interval ``[start, end)`` holds
        every entry of its log in that stretch that it sends us, save those it knows
        we merged already (``sync._propagation.claimed_start``). So merging one that
        starts at or below our position takes it to ``end``. One that starts past it
        would leave a gap (an interval lost, or still on its way) that a position at
        its end would claim, and a copy of this store taken then would claim it for
        good: the peer rewinds a restored store only to the position it tells
        (``_resume``), and we did not lack the gap while it was being resent (the
        ``copy-taken-across-a-gap`` scenario). Such an interval is merged and
        acknowledged as before (a copy of the store, and the peers we relay to, have
        it at once), but only its end is held, in memory (``Link.held``, at most
        ``window`` per link), until the gap fills; the position then moves over it.
        The sender mirrors this (``PeerProgress.note_delivered``), so what it takes
        as delivered never passes our position; a held end lost with a restart
        costs a resend once, not a loss. A copy of the store may hold more than its
        position says, which costs it a resend once restored, never an entry.

        A sender of an older build leaves gaps where its log held nothing for us:
        the position stops at the first, and each Hello of ours costs it a rewind
        from there (its acks are as before, so the link flows).
        """
        self._merge_from(link, remote, payload, end)
        self._outbox.append((link, encode_ack(start, end)))
        if start <= self.received.get(remote, 1):
            self._advance_received(remote, end)
            self._release_held(link, remote)
            return
        held = self.links[link].held
        if len(held) < self.config.window:  # else its end is forgotten: a resend covers it
            held.add((start, end))

    def _release_held(self, link: str, remote: str) -> None:
        """Move our position over the held intervals it now reaches, in order; drop
        those it passed."""
        position = self.received.get(remote, 1)
        reached = prefix_over(position, self.links[link].held)
        if reached > position:
            self._advance_received(remote, reached)

    def _advance_received(self, remote: str, end: int) -> None:
        """This store now goes up to ``end`` into ``remote``'s log (see ``_on_deltas``:
        every entry the peer's log holds for us below ``end`` is merged here)."""
        held = self.received.get(remote)
        if held is None:  # the first from this epoch: it says where we stand from now on
            for old in [p for p in self.received if node_of(p) == node_of(remote)]:
                del self.received[old]  # in memory: the store keeps it, a true statement
            held = 1
        if end > held:
            self.received[remote] = self._batch.received[remote] = end

    def _resume(self, remote: str, held: int) -> bool:
        """The peer's store goes up to ``held`` into our log: resend what it lost, if any;
        True if it lost some (its store is an older copy, or empty).

        What we take as delivered never passes the position of a live store
        (``PeerProgress.note_delivered``), so a position below it is one from a store
        that lost what it acknowledged: restored from an older copy, or wiped. Then the
        deltas it acknowledged since that copy are gone from it (and perhaps from our
        log too, once every peer had acknowledged them): rewind the peer to its
        position, which resends them, or catches it up by digest if the log no longer
        holds them. Only the first Hello on a link (or from a new epoch) counts: a
        store cannot be restored under a live link, and a later Hello may predate a
        catch-up that has since finished.

        After our own restart, what we take as delivered is the acked point our store
        kept (``_load``), and that can pass a live store's position: it covers
        stretches we acknowledged ourselves (they held nothing for the peer), which the
        position crosses only once an interval claimed from below them is merged
        (``sync._propagation.claimed_start``), and one carrying a write stamped too far
        ahead is refused until the clocks agree. Taken as a loss, that rewound the
        peer and, as if its store had lost its log too, caught up by digest every
        peer whose skips our restart forgot (``DeltaLog.source_lost_updates``): in
        seeds 464 and 351 of the default sweep those catch-ups carried a fast clock's
        writes and were refused for minutes. A store that loses what it acknowledged
        comes back under a new epoch (wiped: no meta; crashed, or a copy of a live
        store: not shut down cleanly; a copy of a stopped one: ``--new-epoch``, as
        README asks, without which its dots could repeat too), so a Hello from the
        very epoch whose acked point we kept lost nothing below it: its position is
        what we delivered, and nothing is resent. ``_on_hello`` keeps the acked point
        under a new epoch's name once its first Hello was checked here, so an epoch
        we heard just before restarting counts too.
        """
        progress = self.log.peers.get(remote)
        if progress is None or held >= progress.delivered:
            return False
        if progress.delivered <= self.acked_at_open.get(remote, 0):
            progress.delivered = held  # the same store, short of a stretch we acked
            return False
        lost = {"peer": remote, "from": held, "to": progress.delivered}
        self._events.append(Event("peer lost acknowledged deltas: resending", lost))
        self.log.rewind(remote, held)
        # Stored too (simulator seed 12408: the resend was refused for clock skew,
        # the peer acknowledged a later interval, and the hub crashed).
        self._store_rewind(remote)
        self.rewinds += 1
        return True

    def _position_in_our_log(self, received: dict[str, int]) -> int:
        """Where a peer's store stands in our log, from ``received`` (its Hello's
        positions in each epoch's log of ours it merged from).

        A position in our current epoch's log counts as it is. One in an earlier
        epoch's log counts only below where our log stopped agreeing with that one
        (``earlier_logs``): a store restored from an older copy takes a new epoch and
        goes on logging from the copy's end, giving the old sequence numbers past it
        to other entries, which the peer's old position does not hold. After a
        crash, the store's log is the old one, so nothing is lost (no catch-up). An
        epoch we know nothing of (one that ran on a store since lost, or one before
        the epoch our store had when we opened it) counts for nothing: we cannot
        tell where its log and ours part, and the peer is sent again what we
        delivered it (or caught up by digest, which sends only what differs). That
        costs bytes when a peer got nothing from our last epoch before we restarted
        again; keeping the epochs' parting points in the store would save it.
        Nothing here mints a dot or sends anything but our own log's entries (no
        dot reused, no loop); a position only lowers what the peer is taken to hold.
        """
        held = received.get(self.actor, 1)
        for actor, end in received.items():
            agreed_below = self.earlier_logs.get(actor)
            if agreed_below is not None:
                held = max(held, min(end, agreed_below))
        return held

    def _resend_earlier_epochs(self, remote: str, held: int) -> None:
        """An edge came back under a new epoch: rewind it to its position in our log
        (``held``), so it is sent again what its earlier epochs were never sent.

        An edge is sent back its earlier epochs' entries (sync/_propagation.py,
        "Epochs"), but the log sends a peer only what lies past its acked point, and
        an interval that held nothing but the edge's own entries held nothing for it:
        we acknowledged it ourselves. A store that lost such entries (wiped, or an
        older copy) gets its dotted updates back by catch-up (``lost_own_events``),
        but not a removal, which mints no dot; and ``_resume`` rewinds only to what
        we delivered, which is nothing when we delivered it nothing since our own
        restart (simulator seed 3847 under ``rollback-hub``: a hub restored from an
        older copy took an edge's removals, acknowledged the interval itself, and
        the edge was wiped before the hub had sent it anything). Its Hello cannot
        tell us whether it lost them: a removal counts no event of its own.

        Why ``held`` is far enough: an entry of its own that we logged below it, it
        made before sending it to us, so before it merged the interval that took its
        store to ``held``. Between ``held`` and the acked point lie only intervals we
        acknowledged ourselves: its earlier epochs' entries, now sent, and what its
        policy excludes, excluded again. The cost, for an edge that kept its store (a
        crash takes a new epoch too), is its own updates since our last delivery to
        it, once; or a catch-up by digest, which sends what differs, if the log
        collected them. No dot is reused: they are its earlier epochs' dots, and it
        mints its new epoch's. Nothing loops: an edge logs nothing it receives, and
        what it may push back in a catch-up of its own we hold already (merged as
        nothing, logged as nothing).
        """
        progress = self.log.peers[remote]
        if held < progress.acked:
            resent = {"peer": remote, "from": held, "to": progress.acked}
            self._events.append(Event("resending an edge its earlier epochs' updates", resent))
            self.log.rewind(remote, held)  # stored by the caller (_on_hello)

    def _merge_from(
        self, link: str, remote: str, payload: Span, origin_end: int | None = None
    ) -> None:
        """Merge a Keyspace a peer sent: checked whole first, so bad input changes nothing.

        It is decoded where it lies in the message it came in, and copied out of it
        only if the log keeps it (a hub fed by one link does not)."""
        try:
            incoming, encodings = decode_with_encodings(
                payload.data, self.config.max_message_bytes, True, payload.first, payload.last
            )
        except CodecError as exc:
            raise ProtocolError(f"malformed delta payload from {remote}: {exc}") from None
        state = self.links[link]
        policy = state.policy
        whole = all(policy.may_pull(key[0]) for key in incoming.entries)
        admitted = incoming if whole else incoming.filtered(policy.may_pull)
        # Keys all new here and none filtered out: the novel part is the delta as received,
        # and its canonical encoding is the payload, which the log can keep as it is.
        as_received = whole and _none_held(self.keyspace.entries, incoming.entries)
        if as_received or not (self.config.relay or state.own_writes_only):
            # A replica that does not relay logs nothing it receives, so the novel part
            # would only tell it which keys to store again: the join is the same with
            # the whole delta, which a key it already held (a resend) stores unchanged.
            novel = admitted
        else:
            novel = admitted.novel_part(self.keyspace, owned=True)
        if state.own_writes_only:
            # Only what is new here counts: an edge's catch-up pushes whole keys, which
            # hold the updates of others it received; resending what we hold forges
            # nothing, and refusing it would stall the edge's catch-up for good.
            node = node_of(remote)
            foreign = {a for a in novel.writers() if node_of(a) != node}
            if foreign:
                raise ProtocolError(
                    f"{remote} may send only its own updates, not those of {sorted(foreign)}"
                )
        newest = admitted.newest_timestamp()  # (witness_all of timestamps(), without iterators)
        if newest is not None:
            self.hlc.witness(newest)  # refuses far-future clocks, changes nothing
        if as_received and not self._relays(remote):
            # Nobody but the sender tracks our log, and it is never sent back what it
            # sent: the state takes the decoded values rather than copies of them, and
            # the log keeps the payload alone (decoded again only if a new peer needs it).
            self.keyspace.absorb(novel)
            self._note_taken(novel, remote, payload, origin_end)
        else:
            self.keyspace.merge(novel)
            self._note(novel, remote, payload if as_received else None, origin_end)
        if as_received and encodings is not None:
            # Every key was new here and is now exactly as received: its encoding is
            # the slice of the payload the decoder cut out.
            self._encoded.update(encodings)

    def _relays(self, remote: str) -> bool:
        """Whether our log has a peer besides ``remote`` (which may be sent its deltas)."""
        peers = self.log.peers
        return len(peers) > 1 or (len(peers) == 1 and remote not in peers)

    # ---- catch-up by digest (sync/_catchup.py) ----------------------------------------

    def _answer_catch_up(self, link: str, remote: str, msg: Expand | ListItems | Push) -> None:
        """The peer is catching us up: answer from our tree, merge what it pushes."""
        answer: Message
        if isinstance(msg, Expand):
            answer = answer_expand(msg, self.tree)
        elif isinstance(msg, ListItems):
            answer = answer_list(msg, self.tree)
        else:
            self._merge_from(link, remote, Span(msg.payload))
            answer = PushAck(msg.session, msg.chunk)
        self._outbox.append((link, encode_message(answer)))

    def _on_catch_up_answer(
        self, link: str, remote: str, msg: Fingerprints | Items | PushAck
    ) -> None:
        running = self.catchups.get(remote)
        if running is None or running[1].session != msg.session:
            return  # an answer to a session that is over: nothing to do
        session, now = running[1], self.clock()
        if isinstance(msg, Fingerprints):
            check_answer(msg)
            follow = session.on_fingerprints(msg, self.tree, self.keyspace, now)
        elif isinstance(msg, Items):
            check_answer(msg)
            follow = session.on_items(msg, self.tree, self.keyspace, now)
        else:
            session.on_push_ack(msg)
            follow = []
        self._outbox.extend((link, raw) for raw in follow)
        if session.done():
            del self.catchups[remote]
            self.log.caught_up_from(remote, session.start_seq)
            self._collect()  # it may have been the one holding entries back
            self._outbox.append((link, encode_message(CaughtUp(session.start_seq))))
            fields = {"peer": remote, "keys": session.pushed_keys, "bytes": session.bytes_sent}
            self._events.append(Event("catch-up done", fields))
            self.last_catch_up = session

    def _start_catch_up(self, link: str, remote: str) -> None:
        self._sessions += 1
        session = CatchUp(
            self._sessions, self.log.next_seq, self.config.batch_bytes,
            only_writer=None if self.config.relay else self.node_id,
        )  # fmt: skip
        self.catchups[remote] = (link, session)
        self._outbox.extend((link, raw) for raw in session.start(self.clock()))
        self._events.append(Event("catch-up started", {"peer": remote, "from": session.start_seq}))

    def _on_ack(self, remote: str, start: int, end: int) -> None:
        if end > self.log.next_seq:
            raise ProtocolError(
                f"ack [{start}, {end}) from {remote} is past the log (next {self.log.next_seq})"
            )
        self._acknowledged(remote, start, end)
        progress = self.log.peers.get(remote)
        if progress is not None:
            progress.note_delivered(start, end)
            self.log.end_backoff(remote)

    def _acknowledged(self, remote: str, start: int, end: int) -> None:
        log = self.log
        if log.acknowledge(remote, start, end, self.clock()):
            acked = self._batch.acks[remote] = log.peers[remote].acked
            # The floor of collection is at most this peer's acked point: none above the
            # oldest entry, nothing to collect (and no pass over every peer, on a hub).
            if acked > log.first_seq():
                self._collect()

    def _collect(self) -> None:
        """Drop what every peer has; the store drops it too (only if there was any)."""
        first = self.log.first_seq()
        if self.log.collect() != first:
            self._batch.log_drop_below = self.log.first_seq()

    # ---- time -------------------------------------------------------------------------------

    def tick(self) -> None:
        """Mark overdue Hellos and unacknowledged intervals for resending."""
        now = self.clock()
        for link, state in self.links.items():
            if state.remote is None and overdue(
                now, state.hello_sent_at, self.config.retransmit_ms
            ):
                self._hello(link)  # the peer has not said hello yet: ours may be lost
        config = self.config
        overdue_peers = self.log.retransmit_due(now, config.retransmit_ms, config.retransmit_max_ms)
        if overdue_peers:
            self._note_silent(overdue_peers, now)
        self._probe(now)
        for link, state in self.links.items():
            pending = state.sources_pending
            if pending is not None and overdue(now, pending[1], self.config.retransmit_ms):
                state.sources_pending = (pending[0], now)
                self._send_sources(link, state)
        for link, session in self.catchups.values():
            due = session.due(now, config.retransmit_ms, config.retransmit_max_ms)
            self._outbox.extend((link, raw) for raw in due)

    def awaiting(self) -> tuple[int, int] | None:
        """When ``tick()`` next has work, and the newest send time it may act on.

        Unanswered Hellos and Sources, unacknowledged intervals (after their
        peer's backed-off timeout), catch-up requests, and Probes to silent peers:
        a tick has work once the clock reads the first value or later, or reads
        before the second (it went back; see ``overdue``). Until then a tick changes
        nothing, so a driver may sleep until a message arrives or that time comes.
        None: nothing awaits an answer.
        """
        config = self.config
        stamps: list[int] = []  # send times of what is resent after retransmit_ms
        later: list[tuple[int, int]] = []  # (due, newest) of probes and backed-off peers
        for state in self.links.values():
            if state.remote is None:
                stamps.append(state.hello_sent_at)
            if state.sources_pending is not None:
                stamps.append(state.sources_pending[1])
            if self._probing(state):
                later.append((state.probed_at + config.probe_ms, state.probed_at))
        for _, session in self.catchups.values():
            waiting = session.waiting(config.retransmit_ms, config.retransmit_max_ms)
            if waiting is not None:
                later.append(waiting)
        for progress in self.log.peers.values():
            if not progress.inflight:
                continue
            if not progress.timeouts:  # the usual case: the plain timeout
                stamps.extend(progress.timer_starts())
                continue
            sent = progress.timer_starts()
            wait = backed_off(config.retransmit_ms, progress.timeouts, config.retransmit_max_ms)
            later.append((min(sent) + wait, max(sent)))
        if stamps:
            later.append((min(stamps) + config.retransmit_ms, max(stamps)))
        if not later:
            return None
        return min(due for due, _ in later), max(newest for _, newest in later)

    # ---- sending ---------------------------------------------------------------------------

    def _pump(self, ready: Ready) -> None:
        """Fill every live link's window with intervals from the log."""
        now = None  # read the clock only to send
        log = self.log
        floor = log.catch_up_floor()  # log.needs_catch_up, inlined: this loop is hot on hubs
        cap = self.config.intervals_per_ready
        # The last Deltas encoded (start, end, payload, message): a hub sends one interval
        # to most of its peers alike, and the same bytes serve them all.
        last: tuple[int, int, bytes, bytes] | None = None
        for link, state in self.links.items():
            remote = state.remote
            if remote is None:
                continue  # until the peer's Hello said where its store stands in our log
            progress = log.peers[remote]  # tracked from its Hello on
            if progress.behind or progress.acked < floor:
                if remote not in self.catchups:
                    self._start_catch_up(link, remote)
                continue  # intervals resume once the catch-up is done
            if progress.sent >= log.next_seq:
                continue  # sent everything: the usual case on a busy hub's other links
            if now is None:
                now = self.clock()
            built = 0
            while len(progress.inflight) < self.config.window and progress.sent < log.next_seq:
                if built == cap:
                    ready.more = True
                    break
                interval = self.log.next_interval(
                    remote, self.config.batch_bytes, state.policy.may_push, now,
                    local_only=not self.config.relay, max_keys=self.config.batch_keys,
                )  # fmt: skip
                if interval is None:
                    break
                if interval.is_bottom():  # everything filtered: nothing to say
                    self._acknowledged(remote, interval.start, interval.end)
                    floor = log.catch_up_floor()  # the ack may have collected entries
                    continue
                if interval.pieces is not None:  # spliced for this peer: no other shares it
                    ready.messages.append((link, interval.message()))
                else:  # a log entry as logged: the same message for every peer it goes to
                    start, end, payload = interval.start, interval.end, interval.payload()
                    if last is None or last[2] is not payload or last[:2] != (start, end):
                        last = (start, end, payload, encode_deltas(start, end, payload))
                    ready.messages.append((link, last[3]))
                built += 1

    # ---- reads -----------------------------------------------------------------------------

    def get(self, path: str, cls: type[T]) -> T | None:
        return self.keyspace.get(path, cls)

    def status(self, prefix: str = "") -> dict[str, object]:
        return {
            "id": self.node_id,
            "epoch": f"{self.epoch:016x}",
            "actor": self.actor,
            "version_vector": self.keyspace.actor_progress(),
            "digest": self.keyspace.digest(prefix),
            "keys": len(self.keyspace),
            "log_entries": len(self.log),
            "peers": {
                link: {"remote": s.remote, "lag": self._lag(s.remote)}
                for link, s in sorted(self.links.items())
            },
        }

    def _lag(self, remote: str | None) -> int | None:
        if remote is None or remote not in self.log.peers:
            return None
        return self.log.next_seq - self.log.peers[remote].acked

    def __repr__(self) -> str:
        return f"Replica({self.actor!r}, keys={len(self.keyspace)}, log={len(self.log)})"


def _none_held(held: dict[Any, CRDT], keys: dict[Any, CRDT]) -> bool:
    """Whether no key of ``keys`` is in ``held``: compiled, a loop (``all`` of a
    generator is one) over the keys as the dicts hold them, where ``isdisjoint`` of
    a keys view was a view and a call by name per received payload."""
    return all(key not in held for key in keys)


def covers(prefixes: tuple[str, ...], wanted: tuple[str, ...]) -> bool:
    """Whether every path under one of ``wanted`` is under one of ``prefixes``."""
    return all(path.startswith(prefixes) for path in wanted)


def lost_own_events(hello: Hello, ours: dict[str, int]) -> bool:
    """True if we hold more of the peer's own events, of any of its epochs, than it does.

    A peer has at least every event it made that we have, unless its store lost them.
    """
    mine = hello.node_id + "@"
    return any(n > hello.progress.get(a, 0) for a, n in ours.items() if a.startswith(mine))


def encode_log_record(origin: str | None, payload: bytes) -> bytes:
    """``text(origin)`` then ``blob(payload)``, the payload copied once: a hub logs
    every payload it relays, and ``Writer.blob`` would copy it into its buffer and
    again out of it."""
    w = Writer()
    w.text(origin or "")
    w.uvarint(len(payload))
    return w.getvalue() + payload


def decode_log_record(record: bytes) -> tuple[str | None, bytes]:
    r = Reader(record)
    origin = r.text()
    payload = r.blob()
    r.expect_end()
    return origin or None, payload
