"""The deterministic simulator: one thread, virtual time, one seeded random source.

A ``Scenario`` (a header and a list of steps) runs against a fleet of real
``Replica`` state machines (``sim.node``) over a simulated network
(``sim.network``). Virtual time moves only inside ``wait`` and the final quiet
period; then the earliest event runs next: a message delivery, or a tick (every
``TICK_MS``) of the nodes whose timers are due, in node order; a node with nothing
awaiting an answer sleeps until a message arrives. Ties are broken by send order,
never by hash or set order, and every random draw comes from the one
``random.Random`` the caller passes in, so a scenario and a seed replay exactly:
every event is written to the event log, whose SHA-256 is the run's fingerprint
(hashed when the result is asked for, not line by line: the same digest).

After the last step (and at every ``check``) the simulator heals everything
(cuts, stalls, packet faults, clocks, paused and crashed nodes), lets the fleet
settle for up to ``quiet_limit_ms`` of virtual time, and runs the checkers
(``sim.checkers``) on the history of acknowledged writes and the final states.
"""

from __future__ import annotations

import hashlib
import heapq
import os
import random
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sim.checkers import Observation, Violation, check_all
from sim.history import History
from sim.network import NAMED, ORDER_BITS, ORDER_MASK, Message, Pair, SimNetwork, describe, pair
from sim.node import SimNode
from sim.scenario import MAX_SKEW_S, LinkFaults, Scenario, Step, parse_faults, split_groups
from sim.topology import neighbour_map
from sim.workload import perform, read_cells
from sync._errors import ClockSkewError, ProtocolError
from sync._keyspace import Key, Keyspace, _events_per_actor, parse_storage_key
from sync._messages import decode_message
from sync.adapters.gc_policy import daemon_gc

Progress = dict[str, dict[str, int]]  # "path:tag" -> actor -> events held
TICK_MS = 250
SAMPLE_EVERY = 4  # ticks between samples of agreement and monotonic-read observations
START_MS = 1_700_000_000_000


@dataclass(frozen=True)
class Sample:
    at: int  # virtual ms since the start
    agreeing: int  # replicas in the largest group holding equal state
    bytes_in_flight: int


class Watch:
    """What the samples know of one node: its last reading (the progress dict, and the
    node's ``version`` it was read at), its last observation, the last
    time that reading was seen again and not yet written into it, since when the node
    has been quiet (up and untouched), and the tree root it is counted under."""

    __slots__ = ("last", "name", "progress", "quiet", "root", "seen_again", "version")

    def __init__(self, name: str) -> None:
        self.name = name
        self.version = -1
        self.progress: Progress | None = None
        self.last: Observation | None = None
        self.seen_again: int | None = None
        self.quiet: int | None = None
        self.root: int | None = None

    def __repr__(self) -> str:
        return f"Watch({self.name!r}, last={self.last}, quiet={self.quiet}, root={self.root})"


@dataclass
class RunResult:
    seed: int
    scenario: Scenario
    violations: list[Violation]
    converged: bool
    rounds_to_converge: int | None
    bytes_sent: int
    event_log_hash: str
    events: list[str]
    samples: list[Sample]
    stats: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "converged": self.converged,
            "violations": [str(v) for v in self.violations],
            "rounds_to_converge": self.rounds_to_converge,
            "bytes_sent": self.bytes_sent,
            "event_log_hash": self.event_log_hash,
            **self.stats,
        }


class Simulator:
    def __init__(
        self,
        scenario: Scenario,
        rng: random.Random,
        quiet_limit_ms: int = 400_000,
        workdir: Path | None = None,
        reconnect_on_heal: float = 0.5,
    ) -> None:
        self.scenario = scenario
        self.rng = rng
        self.quiet_limit_ms = quiet_limit_ms
        self.reconnect_on_heal = reconnect_on_heal
        self.now = START_MS
        self.next_tick = START_MS + TICK_MS
        self.ticks = 0
        self.events: list[str] = []
        self.history = History()
        self.deltas: dict[int, Keyspace] = {}
        self.observations: list[Observation] = []
        self.samples: list[Sample] = []
        self.violations: list[Violation] = []
        self.rejections: dict[str, int] = {}
        self.rounds_to_converge: int | None = None
        self.converged = False
        self.inbox: dict[str, list[Message]] = {}
        topo = scenario.topology
        self.network = SimNetwork(rng, topo.links(), self.log, LinkFaults())
        self._tmp: Path | None = None
        if scenario.storage == "lmdb":
            self._tmp = Path(tempfile.mkdtemp(prefix="edgesync-sim-", dir=workdir or _fast_tmp()))
        self.nodes: dict[str, SimNode] = {}
        self.touched: set[str] = set()  # nodes that may have changed since the last sample
        peers = neighbour_map(topo)
        for name in topo.nodes():
            links = {peer: topo.role(peer) == "edge" for peer in peers[name]}
            store = None if self._tmp is None else self._tmp / name
            self.nodes[name] = SimNode(
                name, topo.role(name), links=links, now=self.clock, rng=rng, store_dir=store,
                touched=self.touched,
            )  # fmt: skip
        self.wakes: list[tuple[int, int, str]] = []  # (grid time, node index, node): a heap
        self.wake: dict[str, int] = {}  # each node's current entry; older ones are stale
        self.unscheduled: set[str] = set()  # nodes given an input since their entry was set
        self.index = {name: i for i, name in enumerate(self.nodes)}
        self.labels: dict[bytes, tuple[Key, str]] = {}  # storage key -> key, "path:tag"
        # What the samples know of each node (its last reading, root, quiet time): one
        # record a node, read once a sample of it.
        self.watches = {name: Watch(name) for name in self.nodes}
        self.last_sample_at: int | None = None
        self.root_count: dict[int, int] = {}  # nodes up, by tree root
        for name in topo.nodes():
            self.send(name, self.nodes[name].open())

    # ---- plumbing ---------------------------------------------------------------------

    def clock(self) -> int:
        return self.now

    def log(self, line: str) -> None:
        self.events.append(line)

    def event_log_hash(self) -> str:
        """SHA-256 of the event log, each line followed by a newline."""
        events = self.events
        text = "\n".join(events) + "\n" if events else ""
        return hashlib.sha256(text.encode()).hexdigest()

    def send(self, src: str, messages: list[tuple[str, bytes]]) -> None:
        """Send what node ``src`` produced; then its timers may have moved (``schedule``)."""
        if messages:
            self.network.send_all(self.now - START_MS, src, messages)
        self.unscheduled.add(src)

    def flush(self, name: str) -> None:
        self.send(name, self.nodes[name].flush())

    def schedule(self, name: str) -> None:
        """Note the first tick at which the node's timers have work (``Replica.awaiting``).

        Ticks before it would change nothing, so they are skipped: virtual time jumps
        from event to event. Waking too early costs only a tick that does nothing
        (what the simulator once did on every tick for every node); waking late
        would change the run, so the bound errs early.

        A node is rescheduled after every input, but lazily: an input marks it
        ``unscheduled``, and ``schedule_inputs`` reschedules the marked nodes just
        before anything reads the schedule or moves the tick grid (the next tick,
        a step). Until then only deliveries due before the next tick run, which
        neither read nor change it, so the entry is the one an eager reschedule
        after the node's last input would have made. A hub that hears a delta's
        acks from all its peers between two ticks is rescheduled once, not once
        an ack: ``awaiting`` walks all its links.
        """
        self.unscheduled.discard(name)
        node = self.nodes[name]
        awaiting = node.replica.awaiting() if node.live and node.replica else None
        if awaiting is None:
            self.wake.pop(name, None)
            return
        first, newest = awaiting
        if self.next_tick + node.offset_ms < newest:  # its clock went back: due at once
            at = self.next_tick
        else:
            at = max(self.next_tick, _grid_at_or_after(first - node.offset_ms))
        if self.wake.get(name) != at:
            self.wake[name] = at
            heapq.heappush(self.wakes, (at, self.index[name], name))

    def schedule_inputs(self) -> None:
        """Reschedule every node given an input since it was last scheduled."""
        if not self.unscheduled:
            return
        names, self.unscheduled = self.unscheduled, set()
        for name in names:  # in any order: each node's entry is its own
            self.schedule(name)

    def t(self) -> int:
        return self.now - START_MS

    # ---- running ------------------------------------------------------------------------

    def run(self) -> RunResult:
        """Run every step, then a check if the last step is not one.

        Under the daemons' garbage-collector policy (``sync.adapters.gc_policy``), as
        the nodes would run: the fleet's state is many small acyclic objects, which
        CPython's default thresholds walk again and again (about 4% of a write at the
        10-minute rate of ``sim.figures.measure_speed``).
        """
        try:
            with daemon_gc():
                for step in self.scenario.steps:
                    self.apply(step)
                if not self.scenario.steps or self.scenario.steps[-1].verb != "check":
                    self.apply(Step("check"))
        finally:
            self.close()
        return self.result()

    def close(self) -> None:
        for node in self.nodes.values():
            node.close()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def result(self) -> RunResult:
        stats = self.network.stats
        return RunResult(
            seed=self.scenario.seed,
            scenario=self.scenario,
            violations=self.violations,
            converged=self.converged,
            rounds_to_converge=self.rounds_to_converge,
            bytes_sent=stats.bytes_sent,
            event_log_hash=self.event_log_hash(),
            events=self.events,
            samples=self.samples,
            stats={
                "nodes": len(self.nodes),
                "steps": len(self.scenario.steps),
                "acknowledged_writes": len(self.history.ops),
                "lost_to_amnesia": sum(1 for i in self.history.at_risk if i in self.history.unseen),
                "messages_sent": stats.sent,
                "messages_dropped": stats.dropped,
                "messages_duplicated": stats.duplicated,
                "rejections": dict(sorted(self.rejections.items())),
                "virtual_ms": self.t(),
            },
        )

    def apply(self, step: Step) -> None:
        self.schedule_inputs()  # a step may change a node without an input (a crash)
        self.log(f"{self.t()} step {step.text()}")
        handler = getattr(self, f"_do_{step.verb}")
        handler(*step.args)

    # ---- time ---------------------------------------------------------------------------

    def advance(self, ms: int) -> None:
        """Run every event up to ``ms`` later: deliveries, and ticks where there is work.

        A tick comes every ``TICK_MS`` of virtual time, after the deliveries due by
        then; a tick at which no node's timer is due and no sample is taken does
        nothing, so it is skipped (``schedule``), with the same outcome.
        """
        target = self.now + ms
        network = self.network
        queue = network.queue
        while True:
            due = (queue[0] >> ORDER_BITS) + START_MS if queue else None
            if due is not None and self.next_tick - TICK_MS < due <= self.next_tick:
                if due > target:
                    break
                # Before the next tick, after the last: no tick comes first, and the
                # grid stays where it is (``schedule``: unscheduled nodes may wait).
                self.deliver_due(min(self.next_tick, target))
                continue
            grid = self.next_busy_tick()
            if due is not None and due <= grid and due <= target:
                self.pass_idle_ticks(due, inclusive=False)  # a tick at `due` comes after
                self.deliver(self.network.pop())
            elif grid <= target:
                self.pass_idle_ticks(grid, inclusive=True)
                self.tick()
            else:
                break
        self.schedule_inputs()  # none left for whatever comes next
        self.pass_idle_ticks(target, inclusive=True)

    def deliver_due(self, until: int) -> None:
        """Deliver, in order, every message due by ``until``, which is no later than the
        next tick: the network's ``pop`` and the loop in ``advance``, inlined (once a
        message). What a delivery sends arrives no earlier than it, so after it.

        A message to a node up, on its current connection, is delivered here, as
        ``deliver`` would (the same log line, the same calls): this loop runs once a
        message, and its lookups are made once a call instead."""
        network = self.network
        queue, held, generations = network.queue, network.held, network.generation
        nodes, log, unscheduled = self.nodes, self.events.append, self.unscheduled.add
        send_all, named, delivered = network.send_all, NAMED.get, 0
        first_after = (until - START_MS + 1) << ORDER_BITS  # keys below it are due
        while queue and queue[0] < first_after:
            key = heapq.heappop(queue)
            src, dst, generation, data = held.pop(key)
            at = key >> ORDER_BITS
            self.now = at + START_MS
            delivered += 1
            node = nodes[dst]
            replica = node.replica
            if (
                replica is None or node.paused
                or (generations and generation != generations.get((src, dst), 0))
            ):  # fmt: skip
                self.deliver(Message(at, key & ORDER_MASK, src, dst, generation, data))
                continue
            log(f"{at} recv {src}>{dst} {named(data) or describe(data, digest=True)}")
            try:
                replica.receive(src, data)
            except (ClockSkewError, ProtocolError, ValueError) as exc:
                self.refuse(Message(at, key & ORDER_MASK, src, dst, generation, data), exc)
                continue
            messages = node.flush()
            if messages:
                send_all(at, dst, messages)
            unscheduled(dst)
        network.stats.delivered += delivered

    def pass_idle_ticks(self, now: int, inclusive: bool) -> None:
        """Move to ``now``; the ticks before it (and at it, if ``inclusive``) are done."""
        self.now = now
        done = (now - START_MS) // TICK_MS if inclusive else _first_tick_from(now) - 1
        self.ticks = done
        self.next_tick = START_MS + (done + 1) * TICK_MS

    def next_busy_tick(self) -> int:
        """The next tick with work: a node's timer, or a sample of the fleet."""
        if self.unscheduled:
            self.schedule_inputs()
        k = (self.next_tick - START_MS) // TICK_MS
        sample_at = START_MS + -(-k // SAMPLE_EVERY) * SAMPLE_EVERY * TICK_MS
        wakes = self.wakes
        while wakes and self.wake.get(wakes[0][2]) != wakes[0][0]:
            heapq.heappop(wakes)  # stale: the node was rescheduled since
        return min(wakes[0][0], sample_at) if wakes else sample_at

    def tick(self) -> None:
        """The nodes whose timers are due, in node order (the heap's tie-break)."""
        due = []
        while self.wakes and self.wakes[0][0] <= self.now:
            at, _, name = heapq.heappop(self.wakes)
            if self.wake.get(name) == at:
                del self.wake[name]
                due.append(name)
        for name in due:
            node = self.nodes[name]
            if node.live:
                assert node.replica is not None
                node.replica.tick()
                self.flush(name)
        if self.ticks % SAMPLE_EVERY == 0:
            self.sample()

    def sample(self) -> None:
        """Agreement (equal tree roots) and a monotonic-read observation of every node.

        Taken every simulated second, mostly of nodes nothing happened to since the
        last one: only nodes touched since (``SimNode.touched``: their state may have
        changed, or they crashed or restarted) are read again; the others are
        ``quiet`` (up, their reading current as of the time noted), and the time
        their last reading was seen again is this sample's, which
        ``note_quiet_time`` works out when it is needed.
        """
        now = self.t()
        touched = sorted(self.touched, key=self.index.__getitem__)  # node order
        self.touched.clear()
        watches, nodes, last = self.watches, self.nodes, self.last_sample_at
        counts, read = self.root_count, self.read
        for name in touched:
            watch, node = watches[name], nodes[name]
            since = watch.quiet
            if since is not None:
                watch.quiet = None
                if last is not None and last > since:  # note_quiet_time, inlined
                    seen = watch.seen_again
                    watch.seen_again = last if seen is None or seen < last else seen
            up = node.replica is not None
            root = node.root if up else None  # = replica.tree.root(), kept up cheaply
            old = watch.root
            if root != old:  # counted under its new root (none if it is down)
                if old is not None:
                    left = counts[old] - 1
                    if left:
                        counts[old] = left
                    else:
                        del counts[old]
                watch.root = root
                if root is not None:
                    counts[root] = counts.get(root, 0) + 1
            if up:
                read(watch, node, now)
                watch.quiet = now
        self.last_sample_at = now
        agreeing = max(self.root_count.values(), default=0)
        self.samples.append(Sample(now, agreeing, self.network.bytes_in_flight()))

    def note_quiet_time(self, name: str) -> None:
        """A quiet node was seen again at every sample since it became quiet."""
        watch = self.watches[name]
        since, last = watch.quiet, self.last_sample_at
        if since is not None and last is not None and last > since:
            seen = watch.seen_again
            watch.seen_again = last if seen is None or seen < last else seen
            watch.quiet = last

    def observe(self, name: str) -> None:
        node = self.nodes[name]
        if node.replica is None:
            return
        self.note_quiet_time(name)
        self.read(self.watches[name], node, self.now - START_MS)

    def read(self, watch: Watch, node: SimNode, now: int) -> None:
        """A monotonic-read observation of a node up (its time seen again noted)."""
        progress = watch.progress
        if watch.version != node.version or progress is None:
            progress = watch.progress = self.read_progress(node, progress)
            watch.version = node.version
        # else unchanged since it was last read: the very same dict
        last = watch.last
        if last is not None and last.progress is progress:
            # The same reading again: one observation from when it was first seen until
            # now is all the monotonic checker compares or reports, and memory grows
            # with changes, not with time. Noted here, written into it when it is read.
            watch.seen_again = now
            return
        until = watch.seen_again
        if until is not None:
            watch.seen_again = None
            if last is not None:  # settle_observation, inlined
                last.until = until
        # Observation's fields set here: its __init__ is an interpreted call
        seen = watch.last = object.__new__(Observation)
        seen.at, seen.node, seen.incarnation = now, watch.name, node.incarnation
        seen.progress, seen.until = progress, None
        self.observations.append(seen)

    def settle_observation(self, name: str) -> None:
        """Write the last time the node's last reading was seen again into it."""
        watch = self.watches[name]
        until, last = watch.seen_again, watch.last
        if until is not None and last is not None:
            watch.seen_again = None
            last.until = until

    def read_progress(self, node: SimNode, before: Progress | None) -> Progress:
        """Events held per key and actor: the last reading, redone for the changed keys."""
        assert node.replica is not None
        entries = node.replica.keyspace.entries
        changed = node.take_changes()
        if before is None or changed is None:
            return {f"{path}:{tag}": _events_per_actor(child.ctx)
                    for (path, tag), child in sorted(entries.items())}  # fmt: skip
        progress = dict(before)  # a new dict: observations keep the old one
        labels = self.labels
        for raw in changed:
            labelled = labels.get(raw)
            if labelled is None:
                key = parse_storage_key(raw)
                labelled = labels[raw] = (key, f"{key[0]}:{key[1]}")
            key, label = labelled
            child = entries.get(key)
            if child is None:
                progress.pop(label, None)
            else:
                progress[label] = _events_per_actor(child.ctx)
        return progress

    def deliver(self, msg: Message) -> None:
        _, _, src, dst, generation, data = msg
        node = self.nodes[dst]
        replica = node.replica
        name = NAMED.get(data) or describe(data, digest=True)  # (its cache, inlined)
        generations = self.network.generation  # network.current(msg), inlined: none
        if generations and generation != generations.get((src, dst), 0):  # is 0 when empty
            self.log(f"{self.t()} stale {src}>{dst} {name}")
            return
        if replica is None:
            self.log(f"{self.t()} down {src}>{dst} {name}")
            return
        if node.paused:
            self.inbox.setdefault(dst, []).append(msg)
            return
        self.log(f"{self.t()} recv {src}>{dst} {name}")
        try:
            replica.receive(src, data)
        except (ClockSkewError, ProtocolError, ValueError) as exc:
            self.refuse(msg, exc)
            return
        self.send(dst, node.flush())

    def refuse(self, msg: Message, exc: Exception) -> None:
        """As the daemon: log a refused message and keep serving."""
        if isinstance(exc, ClockSkewError):
            self.reject("clock-skew", msg, exc)
        else:
            foreign = "only its own updates" in str(exc)
            self.reject("foreign-updates" if foreign else "protocol", msg, exc)

    def reject(self, kind: str, msg: Message, exc: Exception) -> None:
        # Refused, but heard: it may have ended the link's silence (``Replica.receive``),
        # which moves timers, so the node is rescheduled as after any input.
        self.unscheduled.add(msg.dst)
        self.rejections[kind] = self.rejections.get(kind, 0) + 1
        name = type(decode_message(msg.data)).__name__
        self.log(f"{self.t()} reject {kind} {name} {msg.src}>{msg.dst}: {exc}")

    # ---- steps: writes and time ---------------------------------------------------------------

    def _do_write(self, name: str, *words: str) -> None:
        node = self.nodes[name]
        if not node.live:
            self.log(f"{self.t()} refused write on {name}: {'paused' if node.up else 'down'}")
            return
        assert node.replica is not None
        op_id = len(self.history.ops) + 1
        delta, op = perform(node.replica, words, op_id, self.t())
        messages = node.flush()  # committed: the write is acknowledged from here on
        self.history.ops.append(op)
        self.deltas[op_id] = delta
        self.log(f"{self.t()} ack {op.text()} dot={op.dot}")
        self.send(name, messages)

    def _do_wait(self, ms: str) -> None:
        self.advance(int(ms))

    # ---- steps: the network -------------------------------------------------------------------

    def _do_partition(self, *args: str) -> None:
        groups = split_groups(args)
        named = {n for g in groups for n in g}
        group_of: dict[str, int] = {}
        for i, group in enumerate(groups):
            for name in group:
                if name == "*":
                    group_of.update({n: i for n in self.nodes if n not in named})
                else:
                    group_of[name] = i

        def across(link: Pair) -> bool:
            a, b = group_of.get(link[0]), group_of.get(link[1])
            return a is not None and b is not None and a != b

        self._cut({link for link in self.network.links if across(link)})

    def _do_isolate(self, *names: str) -> None:
        self._cut({link for link in self.network.links if set(link) & set(names)})

    def _do_ring(self) -> None:
        """Overlapping majorities: each node reaches a majority, no two the same one."""
        order = list(self.nodes)
        n = len(order)
        reach = max(1, (n // 2 + 1) // 2)
        pos = {name: i for i, name in enumerate(order)}

        def far(link: Pair) -> bool:
            d = abs(pos[link[0]] - pos[link[1]])
            return min(d, n - d) > reach

        self._cut({link for link in self.network.links if far(link)})

    def _cut(self, cut: set[Pair]) -> None:
        self.network.cut_links(cut)
        self.log(f"{self.t()} cut {' '.join(f'{a}-{b}' for a, b in sorted(cut))}")

    def _do_heal(self, a: str | None = None, b: str | None = None) -> None:
        only = None if a is None or b is None else pair(a, b)
        healed = self.network.heal_cuts(only)
        self.network.unstall(self.t(), only)
        for x, y in healed:
            # A healed partition either kept its connection (packets flow again) or
            # broke it and reconnected (new streams, fresh Hellos): both happen.
            if self.rng.random() < self.reconnect_on_heal:
                self.reconnect(x, y)

    def reconnect(self, a: str, b: str) -> None:
        if not (self.nodes[a].live and self.nodes[b].live):
            return
        self.network.reconnect(a, b)
        self.log(f"{self.t()} reconnect {a}-{b}")
        for x, y in ((a, b), (b, a)):
            self.send(x, self.nodes[x].reconnect(y))

    def _do_stall(self, a: str, b: str) -> None:
        self.network.stall(a, b)

    def _do_unstall(self, a: str, b: str) -> None:
        self.network.unstall(self.t(), pair(a, b))

    def _do_network(self, *args: str) -> None:
        self.network.set_faults(parse_faults(args, self.network.default))

    def _do_link(self, a: str, b: str, *args: str) -> None:
        self.network.set_faults(parse_faults(args, self.network.faults_of(a, b)), a, b)

    # ---- steps: processes ------------------------------------------------------------------------

    def _do_crash(self, name: str) -> None:
        node = self.nodes[name]
        if not node.up:
            return
        self.observe(name)
        node.crash()
        self.inbox.pop(name, None)
        self.network.drop_to(name)
        for peer in node.links:
            self.network.reconnect(name, peer)  # its streams are gone
            other = self.nodes[peer]
            if other.replica is not None:
                other.replica.disconnect(name)  # it tells its other peers (Sources)
                if other.live:
                    self.flush(peer)

    def _do_restart(self, name: str) -> None:
        node = self.nodes[name]
        if node.up:
            return
        for peer in node.links:
            self.network.reconnect(name, peer)
        self.send(name, node.open())
        self.observe(name)
        for peer in node.links:
            if self.nodes[peer].live:
                self.send(peer, self.nodes[peer].reconnect(name))

    def relink(self, name: str) -> None:
        """A node resumed: re-establish links that broke while it was stopped."""
        node = self.nodes[name]
        for peer in node.links:
            other = self.nodes[peer]
            if node.replica is None or other.replica is None or not other.live:
                continue
            if peer not in node.replica.links or name not in other.replica.links:
                self.reconnect(name, peer)

    def _do_wipe(self, name: str) -> None:
        self._lose(name, rollback=False)

    def _do_rollback(self, name: str) -> None:
        self._lose(name, rollback=True)

    def _lose(self, name: str, rollback: bool) -> None:
        """Crash with amnesia; the node stays down until ``restart``."""
        self._do_crash(name)
        self.nodes[name].lose_state(rollback)
        holders = [node.state() for node in self.nodes.values()]
        lost = []
        for op in self.history.ops:
            delta = self.deltas[op.id]
            if op.id not in self.history.at_risk and not any(
                delta.novel_part(state).is_bottom() for state in holders
            ):
                self.history.at_risk[op.id] = f"{'rollback' if rollback else 'wipe'} {name}"
                lost.append(f"#{op.id}")
        self.log(f"{self.t()} amnesia {name}: only copies lost of {' '.join(lost) or 'nothing'}")

    def _do_snapshot(self, name: str) -> None:
        self.nodes[name].take_snapshot()

    def _do_pause(self, name: str) -> None:
        node = self.nodes[name]
        if node.up:
            node.paused = True

    def _do_unpause(self, name: str) -> None:
        node = self.nodes[name]
        if not node.paused:
            return
        node.paused = False
        for msg in self.inbox.pop(name, []):
            self.deliver(msg)
        self.relink(name)
        self.schedule(name)

    def _do_skew(self, name: str, seconds: str) -> None:
        self.nodes[name].offset_ms = int(seconds) * 1000
        self.schedule(name)  # its timers fall due at other virtual times now

    def _do_jump(self, name: str, seconds: str) -> None:
        node = self.nodes[name]
        limit = MAX_SKEW_S * 1000
        node.offset_ms = max(-limit, min(limit, node.offset_ms + int(seconds) * 1000))
        self.schedule(name)

    # ---- the final heal and the checkers ---------------------------------------------------------

    def _do_check(self) -> None:
        self.heal_everything()
        start = self.ticks
        self.rounds_to_converge = None
        deadline = self.now + self.quiet_limit_ms
        while self.now < deadline:
            if self.rounds_to_converge is None and self.agree():
                self.rounds_to_converge = self.ticks - start
            if self.rounds_to_converge is not None and self.network.idle():
                break
            self.advance(TICK_MS)
        self.converged = self.agree()
        self.sample()
        self.log(
            f"{self.t()} settled after {self.ticks - start} rounds: converged={self.converged}"
        )
        found = self.run_checkers()
        for violation in found:
            self.log(f"{self.t()} violation {violation}")
        self.violations.extend(found)

    def heal_everything(self) -> None:
        self.network.set_faults(LinkFaults(delay=self.network.default.delay))
        self._do_heal()
        for name, node in self.nodes.items():
            node.offset_ms = 0
            self._do_unpause(name)
            self._do_restart(name)
            self.schedule(name)

    def agree(self) -> bool:
        """Every replica holds the same state (the cheap tree roots first, then digests)."""
        roots = {n.replica.tree.root() if n.replica else None for n in self.nodes.values()}
        if len(roots) > 1:
            return False
        return len({node.state().digest() for node in self.nodes.values()}) == 1

    def run_checkers(self) -> list[Violation]:
        states = {name: node.state() for name, node in self.nodes.items()}
        self.history.unseen = {}
        for op in self.history.ops:
            delta = self.deltas[op.id]
            missing = [n for n, s in states.items() if not delta.novel_part(s).is_bottom()]
            if missing:
                self.history.unseen[op.id] = missing
        for name in self.nodes:
            self.observe(name)
            self.note_quiet_time(name)
            self.settle_observation(name)
        digests = {name: s.digest() for name, s in states.items()}
        finals = {name: read_cells(s) for name, s in states.items()}
        return check_all(self.history, finals, digests, self.observations)


def _first_tick_from(at: int) -> int:
    """The number of the first tick at or after ``at`` (ticks fall every ``TICK_MS``)."""
    return -(-(at - START_MS) // TICK_MS)


def _grid_at_or_after(at: int) -> int:
    return START_MS + _first_tick_from(at) * TICK_MS


def _fast_tmp() -> str | None:
    """tmpfs when there is one: LMDB's fsyncs are real calls but cost nothing there."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


def run_scenario(scenario: Scenario, quiet_limit_ms: int = 400_000) -> RunResult:
    """Run a scenario with the random source its ``seed`` line names."""
    return Simulator(scenario, random.Random(scenario.seed), quiet_limit_ms).run()
