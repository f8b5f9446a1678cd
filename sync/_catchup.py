"""Catch-up by digest: bring a peer level without shipping the whole state.

A peer that needs entries the delta log no longer holds (a new peer, or one that
was away while the log was collected) is reconciled range by range over the
``DigestTree``. The side that owes the catch-up (the *initiator*) drives; the peer
only answers, from its own tree:

1. ``Expand(level, nodes)`` -> ``Fingerprints``: fingerprints and key counts of the
   children. Equal children are done; differing ones are expanded again, until a
   range holds only a few keys on both sides (or the tree's last level). A range
   the peer holds nothing in is pushed without asking.
2. ``ListItems`` -> ``Items``: each key's position and fingerprint in those ranges.
3. The initiator ``Push``es its entries the peer lacks or holds differently; the
   peer merges them like any delta and acknowledges.

A session only ever sends the initiator's state to the peer. What the peer holds
that the initiator lacks reaches the initiator the way everything of the peer's
does: through the peer's own delta log, or through the peer's own catch-up session
if its log toward us was collected too. Asking for the peer's version of every
differing key would double the bytes for the common case, a peer that was away.

Every request is resent until answered, so loss costs time, not state. Resends
back off as interval resends do (doubling from the retransmission timeout up to
``retransmit_max_ms``), so a session stalled by a cut link costs a few resends,
not one every timeout; meanwhile the replica probes the link each tick, and the
first message heard from the peer ends the backoff and resends at once what is
still unanswered (``heard``), so a healed link resumes the session within a
round trip rather than at the next backed-off timer. When nothing is outstanding,
the peer holds everything the initiator held when the session began, and delta
intervals resume from the log position of that moment.
Bytes sent grow with the number of differing keys times the tree's depth, not with
the size of the state.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sync._digest import FANOUT, MAX_LEVEL, DigestTree, valid_node
from sync._errors import ProtocolError
from sync._keyspace import Key, Keyspace, own_part
from sync._messages import (
    Expand,
    Fingerprints,
    Items,
    ListItems,
    Message,
    Push,
    PushAck,
    encode_message,
)
from sync._propagation import backed_off, overdue

FEW_KEYS = 3  # a differing range this small is compared key by key
MAX_NODES = 4096  # per query message
LOW32 = 0xFFFFFFFF


def short_position(pos: int) -> int:
    return pos >> 16


def short_fp(fp: int) -> int:
    return fp & LOW32


@dataclass
class CatchUp:
    """The initiator's side of one catch-up session with one peer."""

    session: int
    start_seq: int  # the log position the peer resumes from once this is done
    budget: int  # bytes per Push payload
    outstanding: dict[tuple[str, int], tuple[bytes, int]] = field(default_factory=dict)
    next_chunk: int = 0
    pushed_keys: int = 0
    bytes_sent: int = 0
    timeouts: int = 0  # resends since the peer was last heard: the wait doubles
    # A node that may send only its own updates (an edge) pushes only its own part of
    # each key; the peer gets the rest from those who may relay it.
    only_writer: str | None = None

    # ---- sending ------------------------------------------------------------------

    def _request(self, msg: Message, now: int) -> bytes:
        raw = encode_message(msg)
        self.outstanding[(type(msg).__name__, self._id(msg))] = (raw, now)
        self.bytes_sent += len(raw)
        return raw

    def _id(self, msg: Message) -> int:
        if isinstance(msg, Expand | ListItems):
            return msg.level * (1 << 40) + msg.nodes[0]
        assert isinstance(msg, Push)
        return msg.chunk

    def start(self, now: int) -> list[bytes]:
        return [self._request(Expand(self.session, 0, (0,)), now)]

    def due(self, now: int, timeout: int, longest: int | None) -> list[bytes]:
        """Requests unanswered for ``timeout``, doubled for each resend since the peer
        was last heard (up to ``longest``): send them again."""
        again = self._resend(now, backed_off(timeout, self.timeouts, longest))
        if again:
            self.timeouts += 1
        return again

    def heard(self, now: int) -> list[bytes]:
        """The peer spoke after resends went unanswered: the link works again, so
        end the backoff and resend every request still outstanding, at once."""
        if not self.timeouts:
            return []
        self.timeouts = 0
        return self._resend(now, 0)

    def waiting(self, timeout: int, longest: int | None) -> tuple[int, int] | None:
        """When ``due`` next resends, and the newest send time it may act on."""
        if not self.outstanding:
            return None
        sent = [sent_at for _, sent_at in self.outstanding.values()]
        return min(sent) + backed_off(timeout, self.timeouts, longest), max(sent)

    def _resend(self, now: int, wait: int) -> list[bytes]:
        again = []
        for key, (raw, sent_at) in self.outstanding.items():
            if overdue(now, sent_at, wait):
                self.outstanding[key] = (raw, now)
                self.bytes_sent += len(raw)
                again.append(raw)
        return again

    def done(self) -> bool:
        return not self.outstanding

    # ---- answers --------------------------------------------------------------------

    def on_fingerprints(
        self, msg: Fingerprints, tree: DigestTree, keyspace: Keyspace, now: int
    ) -> list[bytes]:
        if self.outstanding.pop(("Expand", _first(msg.level, msg.nodes)), None) is None:
            return []  # a duplicate answer
        if msg.level == 0 and msg.root == tree.root():
            return []  # identical already
        child_level = msg.level + 1
        expand, listing, push = [], [], []
        for i, node in enumerate(msg.nodes):
            for c in range(FANOUT):
                child = node * FANOUT + c
                fp, count = tree.node(child_level, child)
                theirs = (msg.fps[i * FANOUT + c], msg.counts[i * FANOUT + c])
                if (short_fp(fp), count) == theirs:
                    continue
                if theirs[1] == 0:
                    push.append(child)  # they hold nothing here: no need to ask
                elif child_level == MAX_LEVEL or count + theirs[1] <= FEW_KEYS:
                    listing.append(child)
                else:
                    expand.append(child)
        out = [self._request(Expand(self.session, child_level, c), now) for c in _chunks(expand)]
        out += [
            self._request(ListItems(self.session, child_level, c), now) for c in _chunks(listing)
        ]
        keys = [key for node in push for key, _ in tree.items(child_level, node).values()]
        out += self._push(keys, keyspace, now)
        return out

    def on_items(self, msg: Items, tree: DigestTree, keyspace: Keyspace, now: int) -> list[bytes]:
        if self.outstanding.pop(("ListItems", _first(msg.level, msg.nodes)), None) is None:
            return []
        theirs = dict(zip(msg.positions, msg.fps, strict=True))
        push = [
            key
            for node in msg.nodes
            for pos, (key, fp) in tree.items(msg.level, node).items()
            if theirs.get(short_position(pos)) != short_fp(fp)
        ]
        return self._push(push, keyspace, now)

    def on_push_ack(self, msg: PushAck) -> None:
        self.outstanding.pop(("Push", msg.chunk), None)

    def _push(self, keys: Iterable[Key], keyspace: Keyspace, now: int) -> list[bytes]:
        out = []
        for chunk in _key_chunks(keys, keyspace, self.budget, self.only_writer):
            self.pushed_keys += len(chunk.entries)
            out.append(self._request(Push(self.session, self._chunk(), chunk.encode()), now))
        return out

    def _chunk(self) -> int:
        self.next_chunk += 1
        return self.next_chunk


# ---- the answering side: stateless, from the answerer's own tree ---------------------


def answer_expand(msg: Expand, tree: DigestTree) -> Fingerprints:
    _check_nodes(msg.level, msg.nodes, expandable=True)
    fps, counts = [], []
    for node in msg.nodes:
        for c in range(FANOUT):
            fp, count = tree.node(msg.level + 1, node * FANOUT + c)
            fps.append(short_fp(fp))
            counts.append(count)
    return Fingerprints(msg.session, msg.level, msg.nodes, tree.root(), tuple(fps), tuple(counts))


def answer_list(msg: ListItems, tree: DigestTree) -> Items:
    _check_nodes(msg.level, msg.nodes, expandable=False)
    found: dict[int, int] = {}
    for node in msg.nodes:
        for pos, (_, fp) in tree.items(msg.level, node).items():
            found[short_position(pos)] = short_fp(fp)
    positions = tuple(sorted(found))
    return Items(msg.session, msg.level, msg.nodes, positions, tuple(found[p] for p in positions))


def check_answer(msg: Fingerprints | Items) -> None:
    """Refuse answers whose shape does not match their own nodes."""
    if isinstance(msg, Fingerprints):
        _check_nodes(msg.level, msg.nodes, expandable=True)
        expected = len(msg.nodes) * FANOUT
        if len(msg.fps) != expected or len(msg.counts) != expected:
            raise ProtocolError("fingerprints answer has the wrong number of entries")
    else:
        _check_nodes(msg.level, msg.nodes, expandable=False)
        if len(msg.positions) != len(msg.fps):
            raise ProtocolError("items answer has positions and fingerprints of unequal length")


def _check_nodes(level: int, nodes: tuple[int, ...], expandable: bool) -> None:
    if expandable and level >= MAX_LEVEL:
        raise ProtocolError(f"cannot expand below the last level ({MAX_LEVEL})")
    if not nodes or len(nodes) > MAX_NODES:
        raise ProtocolError(f"a query names 1 to {MAX_NODES} nodes, not {len(nodes)}")
    if not all(valid_node(level, n) for n in nodes):
        raise ProtocolError(f"no such node at level {level}")


def _first(level: int, nodes: tuple[int, ...]) -> int:
    return level * (1 << 40) + (nodes[0] if nodes else 0)


def _chunks(items: list[int], size: int = MAX_NODES) -> list[tuple[int, ...]]:
    return [tuple(items[i : i + size]) for i in range(0, len(items), size)]


def _key_chunks(
    keys: Iterable[Key], keyspace: Keyspace, budget: int, only_writer: str | None = None
) -> list[Keyspace]:
    chunks, current, size = [], Keyspace(), 0
    for key in keys:
        child = keyspace.entries.get(key)
        if child is not None and only_writer is not None:
            child = own_part(child, only_writer)
        if child is None or child.is_bottom():
            continue
        encoded = len(child.encode()) + len(key[0]) + 2
        if current.entries and size + encoded > budget:
            chunks.append(current)
            current, size = Keyspace(), 0
        current.entries[key] = child.copy()
        size += encoded
    if current.entries:
        chunks.append(current)
    return chunks
