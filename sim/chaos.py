"""``edgesync sim chaos``: the workload and its checkers against real daemons under faults.

A cloud hub, two regional hubs and edges (two of which peer across regions) run
as real processes. As root each sits in its own network namespace and every link
has its own veths with packet faults (``sim.netns``); without root they run on
loopback behind proxies that can cut and delay links, and the run says so.

For each seed, a nemesis draws its own mix (swarm testing) of partitions (one
node isolated, a region isolated, a region cut off from the cloud but bridged by
an edge's peer link, a three-way split, a minority, a ring of overlapping views,
a stalled link: ``partition``), packet faults (loss, duplication,
delay, reordering), SIGKILL-and-restart and SIGSTOP/SIGCONT, while writers on
every edge add and remove set elements, increment a counter and set a register,
recording what each node acknowledged. Then everything heals and the checkers
run: every replica converges; every acknowledged add is present unless its own
acknowledged remove followed; the counter holds every acknowledged increment;
each register holds its edge's last acknowledged write (or a later attempt).
Writes that timed out may or may not have happened, and the checks allow both.
``--each N`` runs every partition shape and packet fault alone on seeds 1..N and
prints the table that is the harness's figure (``coverage``, ``table``).
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
# The partition shapes; ``minority``, ``ring`` and ``stall`` carry the simulator's names
# (sim/swarm.py, sim/scenario.py) for the same faults, fitted to this fleet (``partition``).
SHAPES = ("isolate-node", "isolate-region", "bridged-region", "three-way-split", "minority",
          "ring", "stall")  # fmt: skip
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

    def links(self) -> list[str]:
        """Every link the fleet makes, named ``dialer->target`` as ``Fleet.link`` takes them."""
        left, right = self.bridge()
        hubs = ["r1->cloud", "r2->cloud"]
        return [*hubs, *(f"{e}->{hub}" for e, hub in self.under().items()), f"{right}->{left}"]


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
    lost: int = 0  # the most acknowledged writes missing from any one replica
    seconds: float = 0.0  # wall time of the seed, start to clean-up

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
            verb = "stall" if kind == "stall" else "cut"
            self.applied.append(f"{kind}: {verb} {', '.join(sorted(links))}")
            return await self._with_faults(links, Faults(stall=True) if verb == "stall" else
                                           Faults(cut=True))  # fmt: skip
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
        return partition(shape, self.all_links(), self.topo, self.rng)

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


def ends(link: str) -> tuple[str, str]:
    dialer, target = link.split("->")
    return dialer, target


def members_of(links: list[str]) -> list[str]:
    return sorted({m for link in links for m in ends(link)})


def partition(shape: str, links: list[str], topo: Topology, rng: random.Random) -> list[str]:
    """The links ``shape`` cuts (or, for ``stall``, holds) on a fleet with ``links``.

    ``isolate-node``: every link of one member. ``isolate-region``: a regional hub
    and its edges against the cloud and the other region (its uplink and the peer
    link cut; with the cloud on the other side, a majority against a minority along
    the region boundary). ``bridged-region``: only the hub's uplink, so the edges'
    peer link is a bridge that sees both sides (the simulator's ``bridge``).
    ``three-way-split``: both uplinks and the peer link; the cloud alone, r1's
    region, r2's region. ``minority``, ``ring`` and ``stall``: see ``minority``,
    ``ring`` and ``stall``.
    """
    left, right = topo.bridge()
    bridge = f"{right}->{left}"
    if shape == "isolate-node":
        victim = rng.choice(members_of(links))
        return [n for n in links if victim in ends(n)]
    if shape == "minority":
        return minority(links, rng)
    if shape == "ring":
        return ring(topo, rng)
    if shape == "stall":
        return stall(links, rng)
    region = rng.choice(["r1", "r2"])
    if shape == "isolate-region":
        return [f"{region}->cloud", bridge]
    if shape == "bridged-region":
        return [f"{region}->cloud"]  # the edges' peer link still joins both sides
    return ["r1->cloud", "r2->cloud", bridge]  # three-way split: cloud alone, r1, r2


def minority(links: list[str], rng: random.Random) -> list[str]:
    """A majority/minority split, the simulator's ``minority`` (``partition A B | *``):
    floor((n - 1) / 2) members against the rest, every link between the sides cut.

    ``isolate-region`` already splits along the region boundary; this draws the
    minority anywhere, so it cuts inside regions and through hubs (e.g. r1 with e1
    and, over the peer link, e3, against the cloud, r2, e2 and e4). The minority is
    grown link by link from a random member, so it stays in one piece, as a real
    minority (a site, a rack) would; the majority, on a fleet that is a tree plus
    one peer link, may fall into pieces.
    """
    members = members_of(links)
    side = {rng.choice(members)}
    while len(side) < (len(members) - 1) // 2:
        reach = {m for link in links for m in ends(link) if set(ends(link)) & side}
        side.add(rng.choice(sorted(reach - side)))
    return [link for link in links if len(set(ends(link)) & side) == 1]


def ring(topo: Topology, rng: random.Random) -> list[str]:
    """Overlapping majorities, as near as this fleet comes (the simulator's ``ring``):
    nobody is apart and every two members hear a common one, yet they hear different
    sets, so no group of members agrees on what the fleet holds.

    In the simulator's full mesh of hubs a ring cuts every long link, so each node
    reaches its neighbours and, through them, a majority, and no two nodes the same
    one. Here the links are a tree and one peer link, which close one cycle,
    cloud - r1 - e1 ~ e3 - r2 - cloud; and hubs relay while an edge sends only its own
    updates, so "who hears whom" (``hears_from``) is not transitive across an edge. A
    cut along the hubs (``bridged-region``, ``three-way-split``) splits the fleet into
    sides that hear nothing of each other's edges; the one cut that keeps every two
    members hearing a common member while they hear different sets is the ring opened
    at one of the peered edges' uplinks (e1 -> r1, say): e1 then hears only its peer
    e3; e3 hears everyone (its hub, and e1 over the peer link); every other member
    hears everyone but e1. Each member's view overlaps every other's (all hold e3),
    no two of e1, e3 and the rest agree, and nothing reaches the whole fleet until the
    heal: what e1 writes lives on e1 and e3 only, and reaches the rest the long way
    round once e3's hub hears it after the heal. (Jepsen's ring, where every member
    also hears a majority, does not exist here: no cut of this fleet leaves all seven
    hearing four or more with views unequal.) ``tests/test_chaos.py`` checks these
    properties against ``hears_from`` for the cut this draws, that no other cut of up
    to three links has them, and that no cut at all gives Jepsen's ring.
    """
    left, right = topo.bridge()
    edge = rng.choice([left, right])
    return [f"{edge}->{topo.under()[edge]}"]


def stall(links: list[str], rng: random.Random) -> list[str]:
    """The simulator's ``stall``: one link goes quiet (held, not dropped, and not
    reset) and resumes with what it held, late and in order."""
    return [rng.choice(sorted(links))]


def hears_from(links: list[str], cut: list[str]) -> dict[str, set[str]]:
    """Whose writes reach each member with ``cut`` down: along any path whose inner
    members relay. Hubs relay what they merge; an edge sends only its own updates
    (sync/_replica.py, ``relay``), so a path may end at an edge but not pass one."""
    up = [ends(link) for link in links if link not in cut]
    members = members_of(links)
    heard: dict[str, set[str]] = {m: {m} for m in members}
    for writer in members:
        reached, frontier = {writer}, [writer]
        while frontier:
            here = frontier.pop()
            if here != writer and here.startswith("e"):
                continue  # an edge passes on nothing it did not write
            for a, b in up:
                other = b if a == here else a if b == here else None
                if other is not None and other not in reached:
                    reached.add(other)
                    frontier.append(other)
        for member in reached:
            heard[member].add(writer)
    return heard


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


@dataclass
class Expected:
    """What every replica must hold after the heal, from all the edges' histories."""

    present: set[str]  # acknowledged adds not (possibly) removed since
    absent: set[str]  # acknowledged removes
    low: int  # acknowledged increments
    high: int  # ...plus those that timed out

    @classmethod
    def of(cls, histories: dict[str, History]) -> Expected:
        hs = histories.values()
        low = sum(h.increments for h in hs)
        return cls(set().union(*(h.added - h.removed - h.maybe for h in hs)),
                   set().union(*(h.removed - h.maybe for h in hs)),
                   low, low + sum(h.maybe_increments for h in hs))  # fmt: skip


def wrong_registers(histories: dict[str, History], seen: Observed) -> list[str]:
    """The edges whose register holds neither its last acknowledged write nor a later
    attempt. A write that timed out may have landed, even after a later one (a paused
    node handles both on resume); with nothing acknowledged, no value is correct too."""
    return [e for e, h in histories.items()
            if seen.registers.get(e) not in {h.register, *h.register_failed}]  # fmt: skip


def check(histories: dict[str, History], name: str, seen: Observed) -> list[str]:
    """The set-full, counter and register checks of one replica against the histories."""
    violations = []
    want = Expected.of(histories)
    if lost := sorted(want.present - seen.elements):
        violations.append(f"{name}: acknowledged adds missing: {lost[:5]}")
    if back := sorted(want.absent & seen.elements):
        violations.append(f"{name}: acknowledged removes undone: {back[:5]}")
    if not want.low <= seen.count <= want.high:
        violations.append(
            f"{name}: counter {seen.count}, acknowledged {want.low}, attempted {want.high}"
        )
    for edge in wrong_registers(histories, seen):
        got, last = seen.registers.get(edge), histories[edge].register
        violations.append(f"{name}: chaos/reg/{edge} = {got}, last acked {last}")
    return violations


def lost_writes(histories: dict[str, History], seen: Observed) -> int:
    """Acknowledged writes one replica does not reflect: adds missing, removes undone,
    increments short of the acknowledged sum, and registers whose acknowledged write
    was lost (a counter above the attempts is a violation, but loses no write)."""
    want = Expected.of(histories)
    registers = [e for e in wrong_registers(histories, seen) if histories[e].register is not None]
    return (len(want.present - seen.elements) + len(want.absent & seen.elements)
            + max(0, want.low - seen.count) + len(registers))  # fmt: skip


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
        lost = 0
        for name in fleet.members:
            seen = await observe(fleet, name, list(histories))
            violations += check(histories, name, seen)
            lost = max(lost, lost_writes(histories, seen))
        for name in list(fleet.members):
            if await fleet.stop(name) != 0:
                violations.append(f"{name} did not exit 0 on SIGTERM")
    acked = sum(len(h.added) + len(h.removed) + h.increments for h in histories.values())
    timed_out = sum(len(h.maybe) + h.maybe_increments for h in histories.values())
    return Outcome(seed, nemesis.applied, took is not None, took, violations, acked, timed_out,
                   lost)  # fmt: skip


def namespaces_or_say_why(loopback: bool) -> bool:
    """Namespaces when we may; otherwise say so (on stderr, even with --json)."""
    if not loopback and can_use_namespaces():
        return True
    reason = "as asked" if loopback else "not root or no network namespaces here"
    print(f"chaos: loopback with a fault-injecting proxy on each link ({reason}): links are "
          "cut, stalled and delayed; packet loss, duplication and reordering need namespaces",
          file=sys.stderr, flush=True)  # fmt: skip
    return False


async def sweep(
    args: argparse.Namespace,
    say: Callable[[str], None],
    seeds: list[int],
    only: list[str] | None,
    namespaces: bool,
) -> list[Outcome]:
    """Run ``seeds`` one after another, each on a fresh fleet; report each as it ends."""
    outcomes = []
    for seed in seeds:
        root = Path(tempfile.mkdtemp(prefix=f"edgesync-chaos-{seed}-"))
        network = NamespaceNetwork(random.Random(seed)) if namespaces else LoopbackNetwork()
        started = time.monotonic()
        try:
            outcome = await run_seed(
                seed, root, Topology(args.edges), args.steps,
                network=network, packets=namespaces, only=only,
            )  # fmt: skip
        finally:
            if args.keep:
                say(f"  files of seed {seed} kept in {root}")
            else:
                shutil.rmtree(root, ignore_errors=True)
        outcome.seconds = round(time.monotonic() - started, 1)
        outcomes.append(outcome)
        verdict = "ok" if not outcome.violations else f"{len(outcome.violations)} VIOLATIONS"
        say(f"seed {seed}: {verdict}; converged in {outcome.seconds_to_converge or 0:.1f} s; "
            f"{outcome.acknowledged} writes acknowledged, {outcome.timed_out} timed out; "
            f"{outcome.seconds:.0f} s")  # fmt: skip
        for fault in outcome.faults:
            say(f"    {fault}")
        for violation in outcome.violations:
            say(f"    VIOLATION {violation}")
    return outcomes


@dataclass
class Row:
    """One line of the coverage table: one fault kind alone, on every seed."""

    kind: str
    outcomes: list[Outcome]

    def as_dict(self) -> dict[str, Any]:
        o = self.outcomes
        return {
            "kind": self.kind,
            "seeds": [x.seed for x in o],
            "acknowledged": sum(x.acknowledged for x in o),
            "lost": sum(x.lost for x in o),
            "violations": sum(len(x.violations) for x in o),
            "converged": sum(x.converged for x in o),
            "seconds": round(sum(x.seconds for x in o), 1),
            "outcomes": [x.as_dict() for x in o],
        }


TABLE = "{:<16} {:>5} {:>12} {:>5} {:>10} {:>9} {:>7}"


def table(rows: list[Row]) -> list[str]:
    """The coverage figure: per kind, seeds run, acknowledged writes, lost acknowledged
    writes (summed over seeds, each seed's worst replica), violations, converged, wall."""
    lines = [TABLE.format("kind", "seeds", "acknowledged", "lost", "violations", "converged",
                          "wall s")]  # fmt: skip
    for row in rows:
        d, runs = row.as_dict(), len(row.outcomes)
        lines.append(TABLE.format(row.kind, runs, d["acknowledged"], d["lost"], d["violations"],
                                  f"{d['converged']}/{runs}", f"{d['seconds']:.0f}"))  # fmt: skip
    return lines


def coverage_kinds(
    asked: list[str] | None, namespaces: bool, say: Callable[[str], None]
) -> list[str]:
    """Every partition shape and packet fault (or the kinds asked for), in that order;
    packet faults only where the namespace network's packet switch can make them."""
    kinds = asked or [*SHAPES, *PACKET_FAULTS]
    if not namespaces and (skipped := [k for k in kinds if k in PACKET_FAULTS]):
        say(f"(on loopback: {', '.join(skipped)} left out; packet faults need namespaces)")
        kinds = [k for k in kinds if k not in PACKET_FAULTS]
    return kinds


async def coverage(
    args: argparse.Namespace, say: Callable[[str], None], namespaces: bool
) -> list[Row]:
    """Each kind alone (``--faults KIND``) on seeds 1..``--each``."""
    rows = []
    for kind in coverage_kinds(args.faults, namespaces, say):
        say(f"== {kind}")
        seeds = list(range(1, args.each + 1))
        rows.append(Row(kind, await sweep(args, say, seeds, [kind], namespaces)))
    return rows


def run(args: argparse.Namespace, say: Callable[[str], None]) -> tuple[list[Outcome], list[Row]]:
    """The seeds asked for, or with ``--each`` the coverage rows (and their outcomes)."""
    namespaces = namespaces_or_say_why(args.loopback)
    if (
        args.each is None
        and args.faults
        and not namespaces
        and set(args.faults) & set(PACKET_FAULTS)
    ):
        raise SystemExit("edgesync sim chaos: error: packet faults need network namespaces")
    if args.each is not None:
        rows = asyncio.run(coverage(args, say, namespaces))
        return [o for row in rows for o in row.outcomes], rows
    seeds = [args.seed] if args.seed is not None else list(range(1, args.seeds + 1))
    return asyncio.run(sweep(args, say, seeds, args.faults, namespaces)), []


def main(args: argparse.Namespace) -> int:
    if args.edges < 2:
        print("edgesync sim chaos: error: --edges must be at least 2", file=sys.stderr)
        return 2
    if args.each is not None and args.seed is not None:
        print("edgesync sim chaos: error: --each runs seeds 1..N; drop --seed", file=sys.stderr)
        return 2
    quiet = args.json

    def say(text: str) -> None:
        if not quiet:
            print(text, flush=True)

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # clean up as on Ctrl-C
    started = time.monotonic()
    try:
        outcomes, rows = run(args, say)
    except KeyboardInterrupt:
        sweep_leftovers()
        print("edgesync sim chaos: interrupted; every process and namespace removed",
              file=sys.stderr)  # fmt: skip
        return 130
    if args.json:
        for item in rows or outcomes:
            print(json.dumps(item.as_dict(), sort_keys=True))
    elif rows:
        print()
        for line in table(rows):
            print(line)
        print(f"{len(outcomes)} runs in {time.monotonic() - started:.0f} s")
    if rows:
        bad = [f"{r.kind} {o.seed}" for r in rows for o in r.outcomes if o.violations]
    else:
        bad = [str(o.seed) for o in outcomes if o.violations]
    if bad:
        print(f"edgesync sim chaos: violations in seeds {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0
