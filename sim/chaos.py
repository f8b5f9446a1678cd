"""``edgesync sim chaos``: the workload and its checkers against real daemons under faults.

A cloud hub, two regional hubs and edges (two of which peer across regions) run
as real processes. As root each sits in its own network namespace and every link
has its own veths with packet faults (``sim.netns``); without root they run on
loopback behind proxies that can cut and delay links, and the run says so.

For each seed, a nemesis draws its own mix (swarm testing) of partitions (one
node isolated, a region isolated, a region cut off from the cloud but bridged by
an edge's peer link, a three-way split), packet faults (loss, duplication,
delay, reordering), SIGKILL-and-restart and SIGSTOP/SIGCONT, while writers on
every edge add and remove set elements, increment a counter and set a register,
recording what each node acknowledged. Then everything heals and the checkers
run: every replica converges; every acknowledged add is present unless its own
acknowledged remove followed; the counter holds every acknowledged increment;
each register holds its edge's last acknowledged write (or a later attempt).
Writes that timed out may or may not have happened, and the checks allow both.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from sim.fleet import Fleet, LoopbackNetwork, Network, edges_under_hubs, start_tree
from sim.netns import NamespaceNetwork, can_use_namespaces, sweep_leftovers
from sim.wire import Faults

WRITE_TIMEOUT_S = 3.0
SHAPES = ("isolate-node", "isolate-region", "bridged-region", "three-way-split")
PACKET_FAULTS = ("loss", "duplicate", "delay", "reorder")
PROCESS_FAULTS = ("kill-restart", "pause")


@dataclass
class Topology:
    edges: int = 4

    def under(self) -> dict[str, str]:
        return edges_under_hubs(self.edges)

    def bridge(self) -> tuple[str, str]:
        """Two edges of different regions that peer with each other."""
        return "e1", f"e{self.edges // 2 + 1}"


@dataclass
class History:
    """What one edge's writer asked for, and what its node acknowledged."""

    added: set[str] = field(default_factory=set)  # acknowledged adds
    removed: set[str] = field(default_factory=set)  # acknowledged removes (of acked adds)
    maybe: set[str] = field(default_factory=set)  # adds or removes that timed out
    increments: int = 0  # acknowledged
    maybe_increments: int = 0  # timed out
    register: int | None = None  # last acknowledged value
    register_failed: set[int] = field(default_factory=set)  # may land late, even after it


@dataclass
class Outcome:
    seed: int
    faults: list[str]
    converged: bool
    seconds_to_converge: float | None
    violations: list[str]
    acknowledged: int
    timed_out: int

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


async def attempt(write: Awaitable[Any]) -> bool:
    """True if the node acknowledged the write; False if it failed or timed out."""
    try:
        await asyncio.wait_for(write, WRITE_TIMEOUT_S)
        return True
    except (TimeoutError, grpc.aio.AioRpcError):
        return False


async def writer(fleet: Fleet, edge: str, history: History, stop: asyncio.Event) -> None:
    rng = random.Random(edge)  # which own element to remove: fixed per edge
    i = 0
    while not stop.is_set():
        i += 1
        c = fleet.client(edge)
        element = f"{edge}-{i}"
        if await attempt(c.add("chaos/set", element)):
            history.added.add(element)
        else:
            history.maybe.add(element)
        if await attempt(c.inc("chaos/count", 1)):
            history.increments += 1
        else:
            history.maybe_increments += 1
        if await attempt(c.put(f"chaos/reg/{edge}", i)):
            history.register = i
        else:
            history.register_failed.add(i)
        live = sorted(history.added - history.removed)
        if i % 4 == 0 and live:
            gone = rng.choice(live)
            if await attempt(c.rm("chaos/set", gone)):
                history.removed.add(gone)
            else:
                history.maybe.add(gone)
        await asyncio.sleep(0.02)


class Nemesis:
    """Draws this seed's fault mix, then applies one fault at a time and undoes it."""

    def __init__(
        self,
        fleet: Fleet,
        topo: Topology,
        rng: random.Random,
        packets: bool,
        only: list[str] | None = None,
    ) -> None:
        self.fleet, self.topo, self.rng = fleet, topo, rng
        kinds = list(SHAPES) + list(PROCESS_FAULTS) + (list(PACKET_FAULTS) if packets else [])
        if only:
            self.mix = sorted(only)  # chosen by the operator: no draw
        else:
            self.mix = sorted(rng.sample(kinds, rng.randint(2, min(5, len(kinds)))))
        self.applied: list[str] = []

    async def run(self, steps: int) -> None:
        for _ in range(steps):
            kind = self.rng.choice(self.mix)
            undo = await self.apply(kind)
            await asyncio.sleep(self.rng.uniform(0.5, 2.0))
            await undo()
            await asyncio.sleep(self.rng.uniform(0.2, 0.8))

    async def apply(self, kind: str) -> Callable[[], Any]:
        if kind in SHAPES:
            links = self.partition(kind)
            self.applied.append(f"{kind}: cut {', '.join(sorted(links))}")
            return await self._with_faults(links, Faults(cut=True))
        if kind in PACKET_FAULTS:
            faults = self.packet_faults(kind)
            links = self.rng.sample(self.all_links(), 3)
            self.applied.append(f"{kind} {faults!r} on {', '.join(sorted(links))}")
            return await self._with_faults(links, faults)
        victim = self.rng.choice(sorted(self.fleet.members))
        self.applied.append(f"{kind} {victim}")
        if kind == "pause":
            self.fleet.pause(victim)

            async def resume() -> None:
                self.fleet.pause(victim, paused=False)

            return resume
        await self.fleet.kill(victim)

        async def restart() -> None:
            member = self.fleet.members[victim]
            await self.fleet.start(victim, member.role)

        return restart

    def all_links(self) -> list[str]:
        return [f"{m.name}->{o}" for m in self.fleet.members.values() for o in m.links]

    def partition(self, shape: str) -> list[str]:
        left, right = self.topo.bridge()
        bridge = f"{right}->{left}"
        if shape == "isolate-node":
            victim = self.rng.choice(sorted(self.fleet.members))
            return [n for n in self.all_links() if victim in n.split("->")]
        region = self.rng.choice(["r1", "r2"])
        if shape == "isolate-region":
            return [f"{region}->cloud", bridge]
        if shape == "bridged-region":
            return [f"{region}->cloud"]  # the edges' peer link still joins both sides
        return ["r1->cloud", "r2->cloud", bridge]  # three-way split: cloud alone, r1, r2

    def packet_faults(self, kind: str) -> Faults:
        r = self.rng
        if kind == "loss":
            return Faults(loss=r.uniform(0.05, 0.3))
        if kind == "duplicate":
            return Faults(duplicate=r.uniform(0.05, 0.3))
        if kind == "delay":
            return Faults(delay_ms=r.uniform(20, 200))
        return Faults(delay_ms=5, jitter_ms=r.uniform(20, 100))  # reorder by jitter

    async def _with_faults(self, names: list[str], faults: Faults) -> Callable[[], Any]:
        links = [self.fleet.link(*n.split("->")) for n in names]
        for link in links:
            link.set_faults(faults)

        async def undo() -> None:
            for link in links:
                link.restore()

        return undo


async def heal(fleet: Fleet) -> None:
    for member in fleet.members.values():
        for link in member.links.values():
            link.restore()
        process = member.process
        if process is None or process.returncode is not None:
            await fleet.start(member.name, member.role)
        else:
            fleet.pause(member.name, paused=False)
    await fleet.wait_serving(timeout=90)


@dataclass
class Observed:
    """What one replica holds of the workload's keys after the heal."""

    elements: set[str]
    count: int
    registers: dict[str, object]


async def observe(fleet: Fleet, name: str, edges: list[str]) -> Observed:
    c = fleet.client(name)
    elements = set((await c.get("chaos/set")).get("AWSet", []))
    count = (await c.get("chaos/count")).get("PNCounter", 0)
    registers = {e: (await c.get(f"chaos/reg/{e}")).get("LWWRegister") for e in edges}
    return Observed(elements, count, registers)


def check(histories: dict[str, History], name: str, seen: Observed) -> list[str]:
    """The set-full, counter and register checks of one replica against the histories."""
    violations = []
    must = set().union(*(h.added - h.removed - h.maybe for h in histories.values()))
    must_not = set().union(*(h.removed - h.maybe for h in histories.values()))
    if lost := sorted(must - seen.elements):
        violations.append(f"{name}: acknowledged adds missing: {lost[:5]}")
    if back := sorted(must_not & seen.elements):
        violations.append(f"{name}: acknowledged removes undone: {back[:5]}")
    low = sum(h.increments for h in histories.values())
    high = low + sum(h.maybe_increments for h in histories.values())
    if not low <= seen.count <= high:
        violations.append(f"{name}: counter {seen.count}, acknowledged {low}, attempted {high}")
    for edge, h in histories.items():
        got = seen.registers.get(edge)
        # A write that timed out may have landed, even after a later one (a paused node
        # handles both on resume); with nothing acknowledged, no value is correct too.
        allowed = {h.register, *h.register_failed}
        if got not in allowed:
            violations.append(f"{name}: chaos/reg/{edge} = {got}, last acked {h.register}")
    return violations


async def run_seed(
    seed: int,
    root: Path,
    topo: Topology,
    steps: int,
    *,
    network: Network,
    packets: bool,
    only: list[str] | None = None,
) -> Outcome:
    rng = random.Random(seed)
    async with Fleet(root, network=network, reconnect_max_ms=1000) as fleet:
        left, right = topo.bridge()
        await start_tree(fleet, topo.edges, peers={right: [left]}, timeout=90)
        histories = {edge: History() for edge in topo.under()}
        stop = asyncio.Event()
        writers = [asyncio.create_task(writer(fleet, e, h, stop)) for e, h in histories.items()]
        nemesis = Nemesis(fleet, topo, rng, packets, only)
        await nemesis.run(steps)
        stop.set()
        await asyncio.gather(*writers)
        await heal(fleet)
        try:
            took: float | None = await fleet.wait_converged(timeout=120)
        except Exception as exc:  # report it as the violation it is, and still check
            took = None
            violations = [f"no convergence: {exc}"]
        else:
            violations = []
        for name in fleet.members:
            violations += check(histories, name, await observe(fleet, name, list(histories)))
        for name in list(fleet.members):
            if await fleet.stop(name) != 0:
                violations.append(f"{name} did not exit 0 on SIGTERM")
    acked = sum(len(h.added) + len(h.removed) + h.increments for h in histories.values())
    timed_out = sum(len(h.maybe) + h.maybe_increments for h in histories.values())
    return Outcome(seed, nemesis.applied, took is not None, took, violations, acked, timed_out)


def namespaces_or_say_why(loopback: bool) -> bool:
    """Namespaces when we may; otherwise say so (on stderr, even with --json)."""
    if not loopback and can_use_namespaces():
        return True
    reason = "as asked" if loopback else "not root or no network namespaces here"
    print(f"chaos: loopback with a fault-injecting proxy on each link ({reason}): links are "
          "cut and delayed; packet loss, duplication and reordering need namespaces",
          file=sys.stderr, flush=True)  # fmt: skip
    return False


async def sweep(args: argparse.Namespace, say: Callable[[str], None]) -> list[Outcome]:
    seeds = [args.seed] if args.seed is not None else list(range(1, args.seeds + 1))
    namespaces = namespaces_or_say_why(args.loopback)
    if args.faults and not namespaces and set(args.faults) & set(PACKET_FAULTS):
        raise SystemExit("edgesync sim chaos: error: packet faults need network namespaces")
    outcomes = []
    for seed in seeds:
        root = Path(tempfile.mkdtemp(prefix=f"edgesync-chaos-{seed}-"))
        network = NamespaceNetwork(random.Random(seed)) if namespaces else LoopbackNetwork()
        started = time.monotonic()
        try:
            outcome = await run_seed(
                seed, root, Topology(args.edges), args.steps,
                network=network, packets=namespaces, only=args.faults,
            )  # fmt: skip
        finally:
            if args.keep:
                say(f"  files of seed {seed} kept in {root}")
            else:
                shutil.rmtree(root, ignore_errors=True)
        outcomes.append(outcome)
        verdict = "ok" if not outcome.violations else f"{len(outcome.violations)} VIOLATIONS"
        say(f"seed {seed}: {verdict}; converged in {outcome.seconds_to_converge or 0:.1f} s; "
            f"{outcome.acknowledged} writes acknowledged, {outcome.timed_out} timed out; "
            f"{time.monotonic() - started:.0f} s")  # fmt: skip
        for fault in outcome.faults:
            say(f"    {fault}")
        for violation in outcome.violations:
            say(f"    VIOLATION {violation}")
    return outcomes


def main(args: argparse.Namespace) -> int:
    if args.edges < 2:
        print("edgesync sim chaos: error: --edges must be at least 2", file=sys.stderr)
        return 2
    quiet = args.json

    def say(text: str) -> None:
        if not quiet:
            print(text, flush=True)

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # clean up as on Ctrl-C
    try:
        outcomes = asyncio.run(sweep(args, say))
    except KeyboardInterrupt:
        sweep_leftovers()
        print("edgesync sim chaos: interrupted; every process and namespace removed",
              file=sys.stderr)  # fmt: skip
        return 130
    if args.json:
        for outcome in outcomes:
            print(json.dumps(outcome.as_dict(), sort_keys=True))
    bad = [o.seed for o in outcomes if o.violations]
    if bad:
        print(f"edgesync sim chaos: violations in seeds {bad}", file=sys.stderr)
        return 1
    return 0
