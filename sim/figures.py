"""The simulator's figures: sweep rate, simulated time per wall second, gossip rounds.

``bench/sim_bench.py`` prints them; each is a plain function here so a test can
run a small instance of it.

**Gossip round.** edgesync has no gossip timer: a replica forwards a delta to its
peers the moment it merges it, and its timer (the simulator's tick, every
``TICK_MS`` = 250 ms) only resends what went unacknowledged for 2 s (longer, backing
off, while the peer says nothing) and probes peers that owe it acks. A round is
therefore one period of the latency that bounds forwarding: every link delays
each message by ``ROUND_DELAY`` = 240..249 ms, just under one 250 ms round, so a
change crosses exactly one link per round, as in the synchronous-rounds model of
gossip. *Rounds to converge* counts whole rounds from the heal (at a tick) to the
first tick at which every replica holds equal state (equal digests).

**The experiment.** Partition the fleet, write on both sides, let each side
settle, heal, count rounds. The partition lasts ``PARTITION_MS`` = 20 s, longer
than the daemons' gRPC keepalive (10 s, 5 s timeout): their streams break, and
the heal reconnects every cut link (fresh Hellos). A partition shorter than the
keepalive keeps its streams, which the ``kept`` column measures: nothing tells the
replicas of the heal, and they see it when the first probe gets through (a node
probes each peer that owes it acks once a tick, and resends what the peer lacks
when it hears from it; sync/_propagation.py, "Stalls"). The probe goes after a
copy of the peer's oldest unacknowledged interval when that is small ("Data in
probes"), so the data crosses on the first tick after the heal, as a reconnect's
Hellos do; with bare probes it crossed a round trip later, a round more.
"""

from __future__ import annotations

import math
import random
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from sim.runs import run_seed
from sim.scenario import Scenario, Step
from sim.simulator import TICK_MS, Simulator
from sim.topology import Mesh, Shape, Topology
from sync.adapters.gc_policy import daemon_gc

ROUND_DELAY = "240..249"  # ms per link: a change crosses one link per round
PARTITION_MS = 20_000
SETTLE_MS = 5_000  # after the heal: what the check waits past agreement, at most
MESH_DEGREE = 4
TREE_DEPTH = 2  # cloud > regional hub > edge


# ---- rounds to converge after a heal ------------------------------------------------------


@dataclass(frozen=True)
class Rounds:
    shape: str  # "mesh" or "hierarchy"
    partition: str  # "split" (two halves) or "isolate" (one node alone)
    nodes: int
    reconnect: bool  # the heal reconnects every cut link (streams broke)
    rounds: int | None  # None: did not converge within the quiet limit
    target: int

    @property
    def met(self) -> bool:
        return self.rounds is not None and self.rounds <= self.target


def hierarchy(n: int) -> Topology:
    """About ``n`` nodes: sqrt(n) regional hubs, meshed, each with its share of edges."""
    regions = max(2, math.isqrt(n))
    edges = max(1, round((n - 1 - regions) / regions))
    return Topology(regions=regions, edges_per_region=edges)


def target_for(shape: Shape) -> int:
    """log2(N) + 3 for a flat mesh; tree depth + 2 for the hierarchy."""
    if isinstance(shape, Mesh):
        return math.ceil(math.log2(shape.size)) + 3
    return TREE_DEPTH + 2


def partition_steps(shape: Shape, how: str, rng: random.Random) -> tuple[list[Step], list[str]]:
    """The cut, and one node on each side to write on (the lone side first)."""
    nodes = shape.nodes()
    if how == "isolate":
        alone = rng.choice(nodes if isinstance(shape, Mesh) else shape.edges())
        rest = [n for n in nodes if n != alone]
        return [Step("isolate", (alone,))], [alone, rng.choice(rest)]
    if isinstance(shape, Mesh):
        side = sorted(rng.sample(nodes, len(nodes) // 2))
    else:  # a whole region: its hub and edges, away from the cloud and the other hubs
        side = ["r1", *shape.edges(1)]
    rest = [n for n in nodes if n not in side]
    cut = Step("partition", (*side, "|", "*"))
    return [cut], [rng.choice(side), rng.choice(rest)]


def measure_rounds(shape: Shape, how: str, seed: int, reconnect: bool) -> Rounds:
    rng = random.Random(seed)
    cut, writers = partition_steps(shape, how, rng)
    steps = [Step("network", (f"delay={ROUND_DELAY}",)), Step("wait", ("3000",)), *cut]
    for i, node in enumerate(writers):  # each side: a register, a counter, a set
        steps += [
            Step("write", (node, "set", "r0", f"side{i}")),
            Step("write", (node, "inc", "c0", str(i + 1))),
            Step("write", (node, "add", "s0", f"x{i}")),
        ]
    steps += [Step("wait", (str(PARTITION_MS),)), Step("check")]
    scenario = Scenario(seed, shape, "memory", steps)
    sim = Simulator(
        scenario, random.Random(seed), quiet_limit_ms=120_000,
        reconnect_on_heal=1.0 if reconnect else 0.0,
    )  # fmt: skip
    result = sim.run()
    if result.violations:
        raise AssertionError(f"{shape.describe()} seed {seed}: {result.violations[0]}")
    kind = "mesh" if isinstance(shape, Mesh) else "hierarchy"
    nodes = len(shape.nodes())
    return Rounds(kind, how, nodes, reconnect, result.rounds_to_converge, target_for(shape))


def rounds_table(sizes: list[int], seeds: int = 3, jobs: int = 1) -> list[Rounds]:
    """The worst of ``seeds`` runs for each size, shape, partition and heal."""
    cases = [
        (shape_of(kind, n, seed), how, seed, reconnect)
        for n in sizes
        for kind in ("mesh", "hierarchy")
        for how in ("split", "isolate")
        for reconnect in (True, False)
        for seed in range(seeds)
    ]
    with ProcessPoolExecutor(jobs) as pool:
        measured = list(pool.map(_measure, cases))
    worst: dict[tuple[str, str, int, bool], Rounds] = {}
    for r in measured:  # not converging counts as the worst of all
        key = (r.shape, r.partition, r.nodes, r.reconnect)
        held = worst.get(key)
        if held is None or _badness(r) > _badness(held):
            worst[key] = r
    return list(worst.values())


def _badness(r: Rounds) -> tuple[bool, int]:
    return (r.rounds is None, r.rounds or 0)


def shape_of(kind: str, n: int, seed: int) -> Shape:
    return Mesh(n, MESH_DEGREE, graph=seed) if kind == "mesh" else hierarchy(n)


def _measure(case: tuple[Shape, str, int, bool]) -> Rounds:
    return measure_rounds(*case)


# ---- simulated time per wall second --------------------------------------------------------


@dataclass(frozen=True)
class Speed:
    nodes: int
    write_every_s: int  # each node writes once per this many simulated seconds
    simulated_s: float
    wall_s: float
    cpu_s: float  # this process's CPU time: the wall time on an idle core
    writes: int
    messages: int

    @property
    def ratio(self) -> float:
        return self.simulated_s / self.wall_s

    @property
    def cpu_ratio(self) -> float:
        return self.simulated_s / self.cpu_s


def fleet_of(nodes: int) -> Topology:
    """``nodes`` nodes exactly when it can: a cloud, R hubs and R*E edges (R*(E+1)+1)."""
    for regions in range(max(1, math.isqrt(nodes - 1)), 0, -1):
        if (nodes - 1) % regions == 0:
            return Topology(regions=regions, edges_per_region=(nodes - 1) // regions - 1)
    return hierarchy(nodes)


def workload(topology: Topology, write_every_s: int, duration_s: int, seed: int) -> list[Step]:
    """Each node writes once every ``write_every_s``, at its own phase, for the duration."""
    rng = random.Random(seed)
    names = topology.nodes()
    every_ms = write_every_s * 1000
    phases = {name: i * every_ms // len(names) for i, name in enumerate(names)}
    due = sorted(
        (at, name)
        for name, phase in phases.items()
        for at in range(phase, duration_s * 1000, every_ms)
    )
    steps, now = [], 0
    for at, name in due:
        if at > now:
            steps.append(Step("wait", (str(at - now),)))
            now = at
        kind = rng.choice(("inc", "set", "add"))
        path = {"inc": "c", "set": "r", "add": "s"}[kind] + str(rng.randrange(8))
        arg = {"inc": "1", "set": f"{name}.{at}", "add": rng.choice("xyzw")}[kind]
        steps.append(Step("write", (name, kind, path, arg)))
    steps.append(Step("wait", (str(duration_s * 1000 - now),)))
    return steps


def measure_speed(nodes: int, write_every_s: int, duration_s: int, seed: int = 1) -> Speed:
    """Wall time of ``duration_s`` simulated seconds of the workload (setup excluded)."""
    topology = fleet_of(nodes)
    steps = workload(topology, write_every_s, duration_s, seed)
    sim = Simulator(Scenario(seed, topology, "memory", steps), random.Random(seed))
    sim.advance(10 * TICK_MS)  # links up
    start_ms, sent_before = sim.t(), sim.network.stats.sent  # (the links' Hellos: setup)
    with daemon_gc():  # as Simulator.run: the daemons' collector policy
        started, cpu_started = time.perf_counter(), time.process_time()
        for step in steps:
            sim.apply(step)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    writes = sum(1 for s in steps if s.verb == "write")
    simulated = (sim.t() - start_ms) / 1000
    sim.close()
    return Speed(len(topology.nodes()), write_every_s, simulated, wall, cpu, writes,
                 sim.network.stats.sent - sent_before)  # fmt: skip


# ---- the sweep -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepRate:
    seeds: int
    jobs: int
    wall_s: float
    cpu_s: float  # summed over the processes: what the sweep costs on idle cores
    failed: list[int]

    @property
    def per_second(self) -> float:
        return self.seeds / self.wall_s


def measure_sweep(seeds: int, jobs: int, start: int = 0) -> SweepRate:
    started = time.perf_counter()
    with ProcessPoolExecutor(jobs) as pool:
        runs = list(pool.map(_violations, range(start, start + seeds), chunksize=8))
    wall = time.perf_counter() - started
    cpu = sum(c for _, _, c in runs)
    return SweepRate(seeds, jobs, wall, cpu, [s for s, bad, _ in runs if bad])


def _violations(seed: int) -> tuple[int, bool, float]:
    started = time.process_time()
    bad = bool(run_seed(seed).result.violations)
    return seed, bad, time.process_time() - started
