"""The flat mesh, event-driven time, and the figures' measurements on small fleets."""

from __future__ import annotations

import heapq
import random
from collections import deque

import pytest

from sim.figures import fleet_of, measure_rounds, measure_speed, shape_of, target_for
from sim.network import Message
from sim.scenario import Step, parse
from sim.simulator import Simulator
from sim.swarm import FAULT_KINDS, generate
from sim.topology import Mesh, Topology, neighbour_map


def reachable(peers: dict[str, list[str]], start: str) -> set[str]:
    seen, todo = {start}, deque([start])
    while todo:
        for peer in peers[todo.popleft()]:
            if peer not in seen:
                seen.add(peer)
                todo.append(peer)
    return seen


@pytest.mark.parametrize("size", [2, 9, 200])
def test_a_mesh_is_connected_and_every_node_has_its_degree(size: int) -> None:
    mesh = Mesh(size, degree=min(4, size - 1), graph=3)
    peers = neighbour_map(mesh)
    assert reachable(peers, "n1") == set(mesh.nodes())
    assert min(len(p) for p in peers.values()) >= mesh.degree
    assert mesh.links() == Mesh(size, mesh.degree, graph=3).links()  # drawn from its seed
    if size > 9:
        assert mesh.links() != Mesh(size, mesh.degree, graph=4).links()


def test_a_mesh_scenario_parses_and_rejects_a_bad_size() -> None:
    scenario = parse("topology mesh=12 degree=3 graph=5\nwrite n12 inc c0 1\ncheck\n")
    assert scenario.topology == Mesh(12, 3, 5)
    assert parse(scenario.text()).topology == scenario.topology
    with pytest.raises(ValueError, match="mesh nodes"):
        parse("topology mesh=1\n")


class EveryTick(Simulator):
    """The simulator as it was: every tick taken, every node ticked."""

    def next_busy_tick(self) -> int:
        return self.next_tick

    def tick(self) -> None:
        for name in self.nodes:  # due now, whatever their timers say
            self.wake[name] = self.now
            heapq.heappush(self.wakes, (self.now, self.index[name], name))
        super().tick()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_skipping_idle_ticks_changes_no_event(seed: int) -> None:
    topology = Topology(2, 2, edge_peering=True)
    scenario, _ = generate(random.Random(seed), topology, "memory", FAULT_KINDS)
    skipping = Simulator(scenario, random.Random(scenario.seed)).run()
    ticking = EveryTick(scenario, random.Random(scenario.seed)).run()
    assert skipping.events == ticking.events
    assert [str(v) for v in skipping.violations] == [str(v) for v in ticking.violations]
    assert skipping.samples == ticking.samples


class EagerSchedule(Simulator):
    """Every input's node rescheduled at once, not when the schedule is next read."""

    def send(self, src: str, messages: list[tuple[str, bytes]]) -> None:
        super().send(src, messages)
        self.schedule_inputs()

    def reject(self, kind: str, msg: Message, exc: Exception) -> None:
        super().reject(kind, msg, exc)
        self.schedule_inputs()


@pytest.mark.parametrize("seed", [5, 6])  # both refuse messages (clock skew, Hellos)
def test_rescheduling_lazily_changes_no_event(seed: int) -> None:
    scenario, _ = generate(random.Random(seed), Topology(2, 2), "memory", FAULT_KINDS)
    lazy = Simulator(scenario, random.Random(scenario.seed)).run()
    eager = EagerSchedule(scenario, random.Random(scenario.seed)).run()
    assert lazy.stats["rejections"]
    assert lazy.events == eager.events
    assert lazy.samples == eager.samples


class RootChecked(Simulator):
    """Asks the digest trees for the roots nodes kept themselves: at every sample of a
    node, and of every node up after every step (a restart, say)."""

    roots_checked = 0

    def check_root(self, name: str) -> None:
        node = self.nodes[name]
        if node.replica is not None:
            assert node.root == node.replica.tree.root(), f"{name} at {self.t()}"
            self.roots_checked += 1

    def sample(self) -> None:
        for name in self.touched:  # the nodes whose roots the sample counts again
            self.check_root(name)
        super().sample()

    def apply(self, step: Step) -> None:
        super().apply(step)
        for name in self.nodes:
            self.check_root(name)


@pytest.mark.parametrize(("seed", "storage"), [(1, "lmdb"), (2, "lmdb"), (3, "memory")])
def test_the_root_a_node_keeps_is_its_digest_trees_root(seed: int, storage: str) -> None:
    """Through crashes, wipes and rollbacks (a restart reads the root from the store)."""
    faults = ("crash", "wipe", "rollback", "partition")
    scenario, _ = generate(random.Random(seed), Topology(2, 2), storage, faults)
    assert {"crash", "restart"} & {step.verb for step in scenario.steps}
    sim = RootChecked(scenario, random.Random(scenario.seed))
    sim.run()
    assert sim.roots_checked > 10


@pytest.mark.parametrize("kind", ["mesh", "hierarchy"])
@pytest.mark.parametrize("how", ["split", "isolate"])
def test_a_heal_that_reconnects_converges_within_the_target_rounds(kind: str, how: str) -> None:
    shape = shape_of(kind, 32, seed=1)
    measured = measure_rounds(shape, how, seed=1, reconnect=True)
    assert measured.target == (8 if kind == "mesh" else 4) == target_for(shape)
    assert measured.rounds is not None and measured.met
    assert measured.rounds >= 2  # a Hello, then the deltas: a round each at least


@pytest.mark.parametrize("kind", ["mesh", "hierarchy"])
def test_a_heal_that_keeps_connections_converges_within_the_target_rounds(kind: str) -> None:
    # Nothing tells the replicas of the heal: a silent peer's probe, with the small
    # backlog it goes after, gets through on the first tick after it. An isolated
    # edge's write then crosses edge, hub, hub, edge by depth + 2 rounds.
    shape = shape_of(kind, 16, seed=2)
    measured = measure_rounds(shape, "isolate", seed=2, reconnect=False)
    assert measured.rounds is not None and measured.met
    assert measured.rounds > 2  # a tick to send, then a round for each link crossed


def test_the_speed_workload_writes_at_its_rate_for_its_duration() -> None:
    assert len(fleet_of(100).nodes()) == 100
    speed = measure_speed(nodes=21, write_every_s=60, duration_s=300)
    assert speed.nodes == 21 and speed.simulated_s == 300
    assert speed.writes == 21 * 5 and speed.messages > speed.writes
