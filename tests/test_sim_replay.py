"""Exact replay: a seed (or a scenario) and the code fix every event and its hash."""

from __future__ import annotations

from sim.runs import run_seed, shrink
from sim.scenario import parse
from sim.simulator import run_scenario
from sim.topology import Topology


def test_the_same_seed_gives_the_same_events_and_hash() -> None:
    first, again = run_seed(17), run_seed(17)
    assert first.result.events == again.result.events
    assert first.result.event_log_hash == again.result.event_log_hash
    assert len(first.result.events) > 100  # a run with real traffic, not a trivial one
    assert first.summary() == again.summary()


def test_different_seeds_give_different_hashes() -> None:
    hashes = {run_seed(seed).result.event_log_hash for seed in range(3)}
    assert len(hashes) == 3


def test_a_seed_replays_exactly_from_the_scenario_it_wrote() -> None:
    seed_run = run_seed(5)
    text = seed_run.result.scenario.text()
    replayed = run_scenario(parse(text))
    assert replayed.event_log_hash == seed_run.result.event_log_hash


def test_lmdb_runs_replay_exactly_too() -> None:
    topology = Topology(regions=1, edges_per_region=2)
    a = run_seed(9, topology, storage="lmdb", faults=("crash", "wipe"))
    b = run_seed(9, topology, storage="lmdb", faults=("crash", "wipe"))
    assert a.result.event_log_hash == b.result.event_log_hash
    assert not a.result.violations


def test_shrinking_keeps_a_failure_and_drops_what_does_not_matter() -> None:
    failing = parse(
        """
        seed 3220213354
        topology regions=2 edges=2 peering=no hubmesh=yes
        network delay=1..197 loss=0.15 dup=0.02 reorder=0.2
        pause cloud
        wait 338
        write e1 inc c1 -1
        wait 2000
        write e2 map m1 t add y
        snapshot e2
        write e3 add s0 a
        wait 1227
        write e1 inc c0 1
        wait 679
        write e2 mv v1 e2.31
        write e4 inc c0 2
        rollback e2
        restart e2
        write e2 mv v1 e2.81
        write e1 add s0 b
        check
        """
    )  # the shrunk open finding in sim/findings/, padded with steps that do not matter
    broken = {v.checker for v in run_scenario(failing, quiet_limit_ms=20_000).violations}
    assert "register" in broken  # the open rollback finding (sim/findings/): a reused dot
    small = shrink(failing, broken, budget=40, run=lambda s: run_scenario(s, 20_000))
    assert len(small.steps) < len(failing.steps)
    assert {v.checker for v in run_scenario(small, 20_000).violations} & broken
