"""The ``edgesync`` command line.

Exit status: 0 success, 1 failure (one clear line on stderr), 2 usage error.
Subcommands import their machinery lazily, so ``edgesync --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _demo(args: argparse.Namespace) -> int:
    from sim.walkthrough import main as walkthrough

    return walkthrough()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgesync",
        description="CRDT-based, offline-first state sync for edge fleets.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    demo = commands.add_parser(
        "demo", help="replicas diverge under a partition and converge after it heals"
    )
    demo.set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one clear line, never a traceback, for an operator
        print(f"edgesync {args.command}: error: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
