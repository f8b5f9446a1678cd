"""The flat mesh, event-driven time, and the figures' measurements on small fleets."""

from __future__ import annotations

import heapq
import math
import random
from collections import deque

import pytest

from sim.figures import fleet_of, measure_rounds, measure_speed, shape_of, target_for
from sim.scenario import parse
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


@pytest.mark.parametrize("kind", ["mesh", "hierarchy"])
@pytest.mark.parametrize("how", ["split", "isolate"])
def test_a_heal_that_reconnects_converges_within_the_target_rounds(kind: str, how: str) -> None:
    shape = shape_of(kind, 32, seed=1)
    measured = measure_rounds(shape, how, seed=1, reconnect=True)
    assert measured.target == (8 if kind == "mesh" else 4) == target_for(shape)
    assert measured.rounds is not None and measured.met
    assert measured.rounds >= 2  # a Hello, then the deltas: a round each at least


def test_a_heal_that_keeps_connections_waits_for_retransmission() -> None:
    measured = measure_rounds(shape_of("mesh", 16, seed=2), "isolate", seed=2, reconnect=False)
    assert measured.rounds is not None and measured.rounds > math.log2(16)


def test_the_speed_workload_writes_at_its_rate_for_its_duration() -> None:
    assert len(fleet_of(100).nodes()) == 100
    speed = measure_speed(nodes=21, write_every_s=60, duration_s=300)
    assert speed.nodes == 21 and speed.simulated_s == 300
    assert speed.writes == 21 * 5 and speed.messages > speed.writes
