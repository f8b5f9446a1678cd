"""Running seeds: a swarm schedule per seed, the run, and the shrinking of failures.

``run_seed`` is what ``edgesync sim run --seed N`` and every sweep entry do:
``random.Random(N)`` draws the fault mix and the schedule, then the seed of the
run's own random source, so the seed's run is exactly the run of the scenario it
wrote (``result.scenario``): a failing seed can be shrunk and replayed from text.

Shrinking is delta debugging (Zeller and Hildebrandt, "Simplifying and Isolating
Failure-Inducing Input", TSE 2002) over the schedule's steps: drop chunks, halving
their size, and keep each removal after which the run still breaks a checker it
broke before.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from sim.scenario import Scenario, Step
from sim.simulator import RunResult, run_scenario
from sim.swarm import DEFAULT_FAULTS, FaultMix, generate
from sim.topology import Topology


@dataclass(frozen=True)
class SeedRun:
    seed: int
    mix: FaultMix
    result: RunResult

    def summary(self) -> dict[str, object]:
        return {**self.result.summary(), "seed": self.seed, "scenario_seed": self.result.seed,
                "fault_mix": list(self.mix.kinds), "fault_rate": self.mix.rate}  # fmt: skip


def run_seed(
    seed: int,
    topology: Topology | None = None,
    storage: str = "memory",
    faults: tuple[str, ...] = DEFAULT_FAULTS,
) -> SeedRun:
    scenario, mix = generate(random.Random(seed), topology, storage, faults)
    return SeedRun(seed, mix, run_scenario(scenario))


def checkers_broken(result: RunResult) -> set[str]:
    return {v.checker for v in result.violations}


def shrink(
    scenario: Scenario,
    broken: set[str],
    budget: int = 200,
    run: Callable[[Scenario], RunResult] = run_scenario,
) -> Scenario:
    """The shortest schedule found (in ``budget`` runs) that still breaks ``broken``."""
    steps = [s for s in scenario.steps if s.verb != "check"]
    chunk = max(1, len(steps) // 2)
    while budget > 0:
        i = 0
        while i < len(steps) and budget > 0:
            candidate = steps[:i] + steps[i + chunk :]
            budget -= 1
            if checkers_broken(run(_checked(scenario, candidate))) & broken:
                steps = candidate
            else:
                i += chunk
        if chunk == 1:
            break
        chunk //= 2
    return _checked(scenario, steps)


def _checked(scenario: Scenario, steps: list[Step]) -> Scenario:
    return scenario.with_steps([*steps, Step("check")])
