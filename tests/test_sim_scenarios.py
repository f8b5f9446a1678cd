"""Scenario files: every file in sim/scenarios/ passes; bad input names its line;
the open findings in sim/findings/ still fail (a fix makes the test say so)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from sim.scenario import ScenarioError, load, parse
from sim.simulator import Simulator, run_scenario

ROOT = Path(__file__).resolve().parent.parent / "sim"
SCENARIOS = sorted((ROOT / "scenarios").glob("*.scenario"))
FINDINGS = sorted((ROOT / "findings").glob("*.scenario"))


def test_there_is_a_scenario_per_fault_kind() -> None:
    steps = {s.verb for f in SCENARIOS for s in load(f).steps}
    wanted = {"partition", "isolate", "ring", "stall", "crash", "wipe", "pause", "skew", "jump"}
    assert wanted <= steps
    assert {load(f).storage for f in SCENARIOS} == {"memory", "lmdb"}


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_scenario_passes_every_checker(path: Path) -> None:
    result = run_scenario(load(path))
    assert result.violations == [], "\n".join(map(str, result.violations))
    assert result.converged and result.stats["acknowledged_writes"] > 0


@pytest.mark.parametrize("path", FINDINGS, ids=lambda p: p.stem)
def test_open_finding_still_reproduces(path: Path) -> None:
    """Each file documents a core bug not fixed yet; when one is, move it to scenarios/."""
    result = run_scenario(load(path), quiet_limit_ms=60_000)
    assert any(v.checker in ("convergence", "durability", "register") for v in result.violations)


def test_skewed_clocks_are_refused_counted_and_healed() -> None:
    result = run_scenario(load(ROOT / "scenarios" / "clock-skew.scenario"))
    assert result.stats["rejections"].get("clock-skew", 0) > 0
    assert any(" reject clock-skew " in e for e in result.events)
    assert result.converged


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("write e1 set r0", "2: expected `set PATH VALUE`"),
        ("crash e9", "2: no node 'e9'"),
        ("partition e1 |", "2: expected `partition A... | B..."),
        ("skew e1 +301", "2: clock offsets are limited to +-300 s"),
        ("write e1 map m0 n frob x", "2: unknown write 'frob'"),
        ("write e1 del c0 gauge", "2: type must be one of"),
        ("wait soon", "2: wait must be an integer"),
        ("network loss=2", "2: loss must be between 0 and 1"),
        ("teleport e1", "2: unknown step 'teleport'"),
        ("heal\nseed 3", "3: `seed` must come before the first step"),
        ("topology regions=0", "2: need 1..64 regions"),
    ],
)
def test_a_bad_line_gets_one_clear_error_naming_it(text: str, message: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse("# comment\n" + text, "bad.scenario")
    assert str(caught.value).startswith("bad.scenario:") and message in str(caught.value)


def test_text_round_trips() -> None:
    scenario = load(SCENARIOS[0])
    assert parse(scenario.text()).text() == scenario.text()


def test_a_clock_stepped_back_does_not_stall_retransmission() -> None:
    """Found by the simulator: resends waited for the clock to pass the send times again
    (300 virtual seconds, 1,207 rounds, for this scenario)."""
    result = run_scenario(load(ROOT / "scenarios" / "clock-step-back.scenario"))
    assert result.rounds_to_converge is not None and result.rounds_to_converge < 40


def test_an_isolated_edge_whose_streams_survive_converges_in_depth_plus_two_rounds() -> None:
    """Nothing tells the edge of the heal: the copy of its write that goes with its
    first probe after it crosses edge, hub, hub, edge by the fourth round (one
    round more, before probes carried data)."""
    scenario = load(ROOT / "scenarios" / "isolate-edge-kept.scenario")
    kept = Simulator(scenario, random.Random(scenario.seed), reconnect_on_heal=0.0).run()
    assert kept.violations == [] and kept.converged
    assert kept.rounds_to_converge is not None and kept.rounds_to_converge <= 4
