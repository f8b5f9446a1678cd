"""``edgesync sim run | sweep``: the deterministic simulator from the command line.

Exit status as for every edgesync command: 0 when every checker passed, 1 when a
run broke one (one line on stderr names the seed and the first violation), 2 for
a usage error (bad options, a scenario file that does not parse).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def add_sim_parser(commands: Any) -> None:
    """Register ``sim`` on the ``edgesync`` parser's subcommands."""
    sim = commands.add_parser("sim", help="partition simulator (run, sweep); chaos on daemons")
    actions = sim.add_subparsers(dest="action", metavar="ACTION", required=True)
    run = actions.add_parser("run", help="one seed, or one scenario file")
    source = run.add_mutually_exclusive_group(required=True)
    source.add_argument("--seed", type=int, help="draw a fault mix and schedule from this seed")
    source.add_argument("--scenario", type=Path, metavar="FILE", help="run a scenario file")
    run.add_argument("--no-shrink", action="store_true", help="do not shrink a failing seed")
    _common(run)
    run.set_defaults(run=_run)
    sweep = actions.add_parser("sweep", help="many seeds, a summary table")
    sweep.add_argument("--seeds", type=_positive, required=True, metavar="N")
    sweep.add_argument("--start", type=int, default=0, help="first seed (default 0)")
    sweep.add_argument(
        "--jobs", type=_positive, default=1, metavar="N",
        help="processes to run seeds in (default 1); the output is the same for any N",
    )  # fmt: skip
    _common(sweep)
    sweep.set_defaults(run=_sweep)
    chaos = actions.add_parser("chaos", help="real daemons under partitions and packet faults")
    _chaos_arguments(chaos)
    chaos.set_defaults(run=_chaos)


def _chaos_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seeds", type=int, default=3, help="run seeds 1..N (default 3)")
    parser.add_argument("--seed", type=int, help="run this one seed")
    parser.add_argument("--steps", type=int, default=6, help="faults per seed (default 6)")
    parser.add_argument("--edges", type=int, default=4, help="edge nodes (at least 2)")
    parser.add_argument("--loopback", action="store_true", help="skip namespaces even as root")
    parser.add_argument("--faults", type=_fault_kinds, metavar="KIND,...",
                        help="use only these faults instead of a drawn mix")  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep each seed's stores and logs")
    parser.add_argument("--each", type=_positive, metavar="N",
                        help="the coverage figure: every partition shape and packet fault "
                        "(or each of --faults) alone on seeds 1..N, then a table")  # fmt: skip
    parser.add_argument("--json", action="store_true",
                        help="one JSON object per seed (with --each, per kind)")  # fmt: skip


def _fault_kinds(text: str) -> list[str]:
    from sim.chaos import PACKET_FAULTS, PROCESS_FAULTS, SHAPES

    kinds = [k for k in text.split(",") if k]
    known = SHAPES + PACKET_FAULTS + PROCESS_FAULTS
    unknown = sorted(set(kinds) - set(known))
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown fault {', '.join(unknown)}; known: {', '.join(known)}"
        )
    return kinds


def _chaos(args: argparse.Namespace) -> int:
    # Imported here: every edgesync command builds this parser, and the chaos
    # harness pulls in gRPC, the fleet and the certificate code.
    from sim.chaos import main

    return main(args)


def _common(p: argparse.ArgumentParser) -> None:
    from sim.swarm import DEFAULT_FAULTS, FAULT_KINDS

    p.add_argument("--regions", type=_positive, default=2, help="regional hubs (default 2)")
    p.add_argument("--edges", type=int, default=2, help="edge nodes per region (default 2)")
    p.add_argument("--peering", action="store_true", help="edges of a region also peer")
    p.add_argument("--storage", choices=["memory", "lmdb"], default="memory")
    p.add_argument(
        "--faults", type=_faults, default=DEFAULT_FAULTS, metavar="KIND,...",
        help=f"fault kinds a seed may draw from: {', '.join(FAULT_KINDS)}, or all, or none "
        f"(default: {','.join(DEFAULT_FAULTS)})",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--out", type=Path, metavar="DIR", help="write the report here")


def _positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def _faults(text: str) -> tuple[str, ...]:
    from sim.swarm import FAULT_KINDS

    if text in ("all", "none"):
        return FAULT_KINDS if text == "all" else ()
    kinds = tuple(k for k in text.split(",") if k)
    unknown = [k for k in kinds if k not in FAULT_KINDS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown fault kind {unknown[0]!r}; choose from {', '.join(FAULT_KINDS)}"
        )
    return kinds


def _topology(args: argparse.Namespace) -> Any:
    from sim.topology import Topology

    try:
        return Topology(args.regions, args.edges, edge_peering=args.peering)
    except ValueError as exc:
        raise _Usage(str(exc)) from None


class _Usage(Exception):
    pass


def _fail(args: argparse.Namespace, message: str, code: int) -> int:
    print(f"edgesync sim {args.action}: error: {message}", file=sys.stderr)
    return code


# ---- run -----------------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    from sim.report import write_report
    from sim.runs import run_seed
    from sim.scenario import ScenarioError, load
    from sim.simulator import run_scenario

    try:
        if args.scenario is not None:
            result = run_scenario(load(args.scenario))
            summary = {**result.summary(), "scenario": str(args.scenario)}
        else:
            seed_run = run_seed(args.seed, _topology(args), args.storage, args.faults)
            result, summary = seed_run.result, seed_run.summary()
    except (ScenarioError, _Usage) as exc:
        return _fail(args, str(exc), EXIT_USAGE)
    if result.violations and args.seed is not None and not args.no_shrink:
        summary["shrunk_scenario"] = str(_shrink_to_file(args, result))
    if args.out is not None:
        summary["report"] = [str(p) for p in write_report(result, summary, args.out)]
    _print_run(summary, args.json)
    if result.violations:
        where = summary.get("shrunk_scenario") or summary.get("scenario") or f"seed {args.seed}"
        first = result.violations[0]
        count = len(result.violations)
        return _fail(args, f"{count} violation(s), first: {first}; replay: {where}", EXIT_FAILURE)
    return EXIT_OK


def _shrink_to_file(args: argparse.Namespace, result: Any) -> Path:
    from functools import partial

    from sim.runs import checkers_broken, shrink
    from sim.simulator import run_scenario

    broken = checkers_broken(result)
    # A shorter quiet period keeps shrinking fast; a failure that needs longer to show
    # simply shrinks less.
    small = shrink(result.scenario, broken, run=partial(run_scenario, quiet_limit_ms=60_000))
    out = args.out if args.out is not None else Path.cwd()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"seed-{args.seed}.scenario"
    head = (
        f"# seed {args.seed}, shrunk from {len(result.scenario.steps)} to "
        f"{len(small.steps)} steps; breaks: {', '.join(sorted(broken))}\n"
    )
    path.write_text(head + small.text(), encoding="utf-8")
    return path


def _print_run(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    print(
        f"seed {summary['seed']}: converged={summary['converged']} "
        f"violations={len(summary['violations'])} "
        f"rounds_to_converge={summary['rounds_to_converge']} bytes_sent={summary['bytes_sent']}"
    )
    print(f"event_log_hash {summary['event_log_hash']}")
    print(
        f"{summary['acknowledged_writes']} acknowledged writes, "
        f"{summary['lost_to_amnesia']} lost with a wiped store, rejections {summary['rejections']}"
    )
    for line in summary["violations"]:
        print(f"  {line}")
    for key in ("shrunk_scenario", "report"):
        if key in summary:
            print(f"{key}: {summary[key]}")


# ---- sweep ---------------------------------------------------------------------------------


def _sweep(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    try:
        topology = _topology(args)
    except _Usage as exc:
        return _fail(args, str(exc), EXIT_USAGE)
    seeds = range(args.start, args.start + args.seeds)
    one = partial(_seed_summary, topology=topology, storage=args.storage, faults=args.faults)
    started = time.perf_counter()
    with ExitStack() as stack:
        summaries: Iterator[dict[str, Any]] = map(one, seeds)
        if args.jobs > 1:
            pool = stack.enter_context(ProcessPoolExecutor(args.jobs))
            # Each seed is its own run: the pool only changes where it runs. map()
            # yields in seed order, so the output is that of --jobs 1.
            summaries = pool.map(
                one, seeds, chunksize=max(1, min(8, args.seeds // (4 * args.jobs)))
            )
        bar = tqdm(summaries, total=args.seeds, desc="seeds", unit="seed", file=sys.stderr,
                   leave=False)  # fmt: skip
        runs = list(bar)
    elapsed = time.perf_counter() - started
    failed = [r["seed"] for r in runs if r["violations"]]
    report = {"seeds": args.seeds, "start": args.start, "failed": failed,
              "wall_seconds": round(elapsed, 2), "runs": runs}  # fmt: skip
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "sweep.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2) if args.json else _table(runs, elapsed))
    if failed:
        shown = " ".join(str(s) for s in failed)
        return _fail(
            args, f"{len(failed)} of {len(runs)} seeds broke a checker: {shown} "
            f"(shrink one with: edgesync sim run --seed {failed[0]})", EXIT_FAILURE,
        )  # fmt: skip
    return EXIT_OK


def _seed_summary(
    seed: int, topology: Any, storage: str, faults: tuple[str, ...]
) -> dict[str, Any]:
    from sim.runs import run_seed

    return run_seed(seed, topology, storage, faults).summary()


def _table(runs: list[dict[str, Any]], elapsed: float) -> str:
    rows = [("fault kind", "seeds", "failed")]
    by_kind: Counter[str] = Counter()
    failed_by_kind: Counter[str] = Counter()
    for r in runs:
        for kind in r["fault_mix"]:
            by_kind[kind] += 1
            failed_by_kind[kind] += bool(r["violations"])
    rows += [(k, str(by_kind[k]), str(failed_by_kind[k])) for k in sorted(by_kind)]
    width = max(len(r[0]) for r in rows)
    lines = [f"{a:<{width}}  {b:>5}  {c:>6}" for a, b, c in rows]
    rounds = [r["rounds_to_converge"] for r in runs if r["rounds_to_converge"] is not None]
    checkers = Counter(v.split(":", 1)[0] for r in runs for v in r["violations"])
    failed = sum(1 for r in runs if r["violations"])
    lines += [
        "",
        f"runs {len(runs)}, failed {failed}, wall {elapsed:.1f} s",
        f"acknowledged writes {sum(r['acknowledged_writes'] for r in runs)}, "
        f"bytes sent {sum(r['bytes_sent'] for r in runs)}",
        "rounds to converge after the final heal: "
        + (f"median {statistics.median(rounds):g}, max {max(rounds)}" if rounds else "none"),
        "violations by checker: "
        + (", ".join(f"{k} {n}" for k, n in sorted(checkers.items())) or "none"),
    ]  # fmt: skip
    return "\n".join(lines)
