"""Exact replay: a seed (or a scenario) and the code fix every event and its hash."""

from __future__ import annotations

import hashlib
import random

from sim.network import randint
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


def test_the_hash_is_of_the_event_log_line_by_line() -> None:
    result = run_seed(3).result
    digest = hashlib.sha256()
    for line in result.events:
        digest.update(line.encode() + b"\n")
    assert result.event_log_hash == digest.hexdigest()


def test_the_network_draws_delays_as_random_randint_does() -> None:
    ours, theirs = random.Random(11), random.Random(11)
    for lo, hi in [(5, 40), (240, 249), (0, 0), (7, 7), (1, 1024), (0, 1023), (3, 2**40)]:
        for _ in range(200):
            assert randint(ours, lo, hi) == theirs.randint(lo, hi)
    assert ours.getstate() == theirs.getstate()


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
        seed 306421970
        topology regions=2 edges=2 peering=no hubmesh=yes
        write e3 inc c0 1
        wait 286
        partition r1 e1 e2 | *
        write e4 add s0 a
        wait 1011
        write cloud inc c0 2
        wait 640
        write r1 mv v0 r1.70
        write e3 add s0 b
        wait 399
        wipe r1
        check
        """
    )  # the shrunk open finding in sim/findings/, padded with steps that do not matter
    broken = {v.checker for v in run_scenario(failing, quiet_limit_ms=20_000).violations}
    assert "convergence" in broken  # the open wipe-hub finding (sim/findings/)
    small = shrink(failing, broken, budget=40, run=lambda s: run_scenario(s, 20_000))
    assert len(small.steps) < len(failing.steps)
    assert {v.checker for v in run_scenario(small, 20_000).violations} & broken
