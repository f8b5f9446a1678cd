"""The simulated network: per-link delay, loss, duplication, reordering, cuts, stalls.

Messages wait in one queue ordered by (delivery time, send order), so two messages
with the same delivery time leave in the order they were sent and nothing depends
on hash or set order. The queue is a heap of plain ints, ``at << ORDER_BITS | order``
(ordered as the pairs are: an order stays below 2**40), with each message's
(src, dst, generation, data) kept aside by that key: the heap compares ints, a few
instructions each, where (at, order, ...) tuples cost hundreds. Reordering comes
from random delays (and, with probability ``reorder``, a second delay on top). A
*cut* link drops what is sent over it, like a black-holed TCP connection; a
*stalled* link holds what is sent and releases it on ``unstall``, like a
connection whose peer stopped reading. Each direction of a
link has a connection *generation*, bumped when the link is re-established (a heal
that reconnects, a crash, a restart): a message of an older generation is dropped
on arrival, as a message on a closed gRPC stream would never reach the new one.

All randomness comes from the ``rng`` the simulator passes in.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from sim.scenario import LinkFaults

Pair = tuple[str, str]  # (a, b) with a < b: an undirected link
Held = tuple[str, str, int, bytes]  # a queued message: src, dst, generation, data
ORDER_BITS = 40  # a queue key: the delivery time above these bits, the send order in them
ORDER_MASK = (1 << ORDER_BITS) - 1


def pair(a: str, b: str) -> Pair:
    return (a, b) if a < b else (b, a)


class Message(NamedTuple):
    """A message in flight: taken off the queue, or held by a stall or a paused node."""

    at: int  # virtual delivery time, ms
    order: int  # send order: ties leave in the order they were sent
    src: str
    dst: str
    generation: int
    data: bytes

    def __repr__(self) -> str:
        return f"Message({self.src}>{self.dst} @{self.at}, {len(self.data)} bytes)"


@dataclass
class NetStats:
    sent: int = 0
    bytes_sent: int = 0
    delivered: int = 0
    dropped: int = 0
    duplicated: int = 0


class SimNetwork:
    def __init__(
        self,
        rng: random.Random,
        links: list[Pair],
        log: Callable[[str], None],
        faults: LinkFaults | None = None,
    ) -> None:
        self.rng = rng
        self.log = log
        self.links = sorted(pair(a, b) for a, b in links)
        self.default = faults or LinkFaults()
        self.faults: dict[Pair, LinkFaults] = {}
        self.cut: set[Pair] = set()
        self.stalled: dict[Pair, list[Message]] = {}
        self.generation: dict[tuple[str, str], int] = {}
        self.queue: list[int] = []  # a heap of keys: at << ORDER_BITS | order
        self.held: dict[int, Held] = {}  # each queued message, by its key
        self.stats = NetStats()
        self._order = 0
        # (lo, width, bits) of the one delay range every send draws from while nothing
        # else applies (no cut, stall, per-link fault, loss, duplication or reordering:
        # the speed runs, and each seed's quiet period); None otherwise. ``send_all``
        # then draws the delay and queues, and nothing more.
        self.plain: tuple[int, int, int] | None = None
        self._replan()

    # ---- configuration ------------------------------------------------------------

    def has_link(self, a: str, b: str) -> bool:
        return pair(a, b) in self.links

    def faults_of(self, a: str, b: str) -> LinkFaults:
        return self.faults.get(pair(a, b), self.default)

    def set_faults(self, faults: LinkFaults, a: str | None = None, b: str | None = None) -> None:
        if a is None or b is None:
            self.default, self.faults = faults, {}
        else:
            self.faults[pair(a, b)] = faults
        self._replan()

    def _replan(self) -> None:
        """Work out ``plain`` again: after any change to faults, cuts or stalls."""
        d = self.default
        if self.faults or self.cut or self.stalled or d.loss or d.dup or d.reorder:
            self.plain = None
            return
        lo, hi = d.delay
        width = hi - lo + 1
        self.plain = (lo, width, width.bit_length())

    def reconnect(self, a: str, b: str) -> None:
        """Both directions start a new connection: older messages will be dropped."""
        for key in ((a, b), (b, a)):
            self.generation[key] = self.generation.get(key, 0) + 1

    def current(self, msg: Message) -> bool:
        return msg.generation == self.generation.get((msg.src, msg.dst), 0)

    # ---- cuts and stalls -------------------------------------------------------------

    def cut_links(self, cut: set[Pair]) -> None:
        self.cut |= {p for p in cut if p in self.links}
        self._replan()

    def heal_cuts(self, only: Pair | None = None) -> list[Pair]:
        """Restore cut links (all, or one); return the ones healed, sorted."""
        healed = sorted(self.cut if only is None else self.cut & {only})
        self.cut -= set(healed)
        self._replan()
        return healed

    def stall(self, a: str, b: str) -> None:
        self.stalled.setdefault(pair(a, b), [])
        self._replan()

    def unstall(self, now: int, only: Pair | None = None) -> None:
        for link in sorted(self.stalled):
            if only is None or link == only:
                for msg in self.stalled.pop(link):
                    self._enqueue(now, msg.src, msg.dst, msg.generation, msg.data)
        self._replan()

    # ---- traffic ---------------------------------------------------------------------------

    def send_all(self, now: int, src: str, messages: list[tuple[str, bytes]]) -> None:
        """``send`` each (destination, data) in turn: with the same draws, in the same
        order, but while the network is ``plain``, a draw and a push a message."""
        plain = self.plain
        if plain is None:
            for dst, data in messages:
                self.send(now, src, dst, data)
            return
        lo, width, bits = plain
        at, order, queue, generations = now + lo, self._order, self.queue, self.generation
        getrandbits, held, heappush, size = self.rng.getrandbits, self.held, heapq.heappush, 0
        for dst, data in messages:
            r = getrandbits(bits)  # randint(lo, hi), drawn as CPython draws it
            while r >= width:
                r = getrandbits(bits)
            order += 1
            size += len(data)
            generation = generations.get((src, dst), 0) if generations else 0
            key = (at + r) << ORDER_BITS | order
            held[key] = (src, dst, generation, data)
            heappush(queue, key)
        self._order = order
        stats = self.stats
        stats.sent += len(messages)
        stats.bytes_sent += size

    def send(self, now: int, src: str, dst: str, data: bytes) -> None:
        stats = self.stats
        stats.sent += 1
        stats.bytes_sent += len(data)
        faults = self.default
        if self.faults or self.cut:  # (with neither, as in the speed runs: no link needed)
            link = (src, dst) if src < dst else (dst, src)  # pair(), inlined
            if link in self.cut:
                self._drop(now, src, dst, data, "cut")
                return
            faults = self.faults.get(link, faults)
        if faults.loss and self.rng.random() < faults.loss:
            self._drop(now, src, dst, data, "lost")
            return
        generation = self.generation.get((src, dst), 0) if self.generation else 0
        if not (faults.dup or self.stalled or faults.reorder):  # the usual case, inlined:
            lo, hi = faults.delay  # one draw, as randint() makes it, and the push
            n = hi - lo + 1
            bits = n.bit_length()
            r = self.rng.getrandbits(bits)
            while r >= n:
                r = self.rng.getrandbits(bits)
            self._push(now + lo + r, src, dst, generation, data)
            return
        copies = 2 if faults.dup and self.rng.random() < faults.dup else 1
        if copies == 2:
            stats.duplicated += 1
        link = (src, dst) if src < dst else (dst, src)
        for _ in range(copies):
            if link in self.stalled:
                self.stalled[link].append(Message(now, 0, src, dst, generation, data))
                self.log(f"{now} held {src}>{dst} {describe(data)}")
            else:
                self._enqueue(now, src, dst, generation, data, faults=faults)

    def _drop(self, now: int, src: str, dst: str, data: bytes, why: str) -> None:
        self.stats.dropped += 1
        self.log(f"{now} drop {src}>{dst} {describe(data)} {why}")

    def _enqueue(
        self, now: int, src: str, dst: str, generation: int, data: bytes, *,
        faults: LinkFaults | None = None,
    ) -> None:  # fmt: skip
        if faults is None:
            faults = self.faults_of(src, dst)
        lo, hi = faults.delay
        delay = randint(self.rng, lo, hi)
        if faults.reorder and self.rng.random() < faults.reorder:
            delay += randint(self.rng, lo, hi)
        self._push(now + delay, src, dst, generation, data)

    def _push(self, at: int, src: str, dst: str, generation: int, data: bytes) -> None:
        self._order += 1
        key = at << ORDER_BITS | self._order
        self.held[key] = (src, dst, generation, data)
        heapq.heappush(self.queue, key)

    def next_at(self) -> int | None:
        return self.queue[0] >> ORDER_BITS if self.queue else None

    def pop(self) -> Message:
        self.stats.delivered += 1
        return message(heapq.heappop(self.queue), self.held)

    def drop_to(self, node: str) -> None:
        """Forget every message to or from ``node`` held by a stall (it crashed)."""
        for link, held in self.stalled.items():
            self.stalled[link] = [m for m in held if node not in (m.src, m.dst)]

    def bytes_in_flight(self) -> int:
        queued = sum(len(m[3]) for m in self.held.values())
        return queued + sum(len(m.data) for held in self.stalled.values() for m in held)

    def idle(self) -> bool:
        return not self.queue and not any(self.stalled.values())


def message(key: int, held: dict[int, Held]) -> Message:
    """The queued message of ``key``, taken from ``held``."""
    src, dst, generation, data = held.pop(key)
    return Message(key >> ORDER_BITS, key & ORDER_MASK, src, dst, generation, data)


def randint(rng: random.Random, lo: int, hi: int) -> int:
    """``rng.randint(lo, hi)``, drawn as CPython draws it (``randrange``, then
    ``_randbelow``: getrandbits of the width's bit length until one falls below it),
    so a seed gives the same delays; without its three Python-level calls, once a
    message. tests/test_sim_replay.py checks it against ``randint``."""
    n = hi - lo + 1
    bits = n.bit_length()
    r = rng.getrandbits(bits)
    while r >= n:
        r = rng.getrandbits(bits)
    return lo + r


_KINDS = {
    1: "hello", 2: "deltas", 3: "ack", 11: "sources", 12: "sources-ack",
    13: "probe", 14: "probe-ack",
}  # fmt: skip


def describe(data: bytes, digest: bool = False) -> str:
    """A short, deterministic name for a message in the event log: kind, size, hash."""
    if digest:
        known = NAMED.get(data)
        if known is not None:
            return known
    kind = _KINDS.get(data[1], "catchup") if len(data) > 1 else "empty"
    name = f"{kind}:{len(data)}"
    if not digest:
        return name
    name = f"{name}:{hashlib.blake2b(data, digest_size=4).hexdigest()}"
    if len(data) <= _DIGESTED_MAX_BYTES:
        if len(NAMED) >= _DIGESTED_MAX:
            NAMED.clear()
        NAMED[data] = name
    return name


# Names of recently delivered small messages, by content: a hub sends the same delta to
# each of its edges, and they all acknowledge it with equal acks, so most deliveries
# name a message already named (a lookup, where a hash costs several times as much).
# A pure function of the bytes: what it holds changes no name.
NAMED: dict[bytes, str] = {}  # read directly by the simulator: once a message
_DIGESTED_MAX = 4096
_DIGESTED_MAX_BYTES = 1024
