"""The sensor parts of the ``edgesync`` command line.

``edge_node/cli.py`` calls three hooks: ``add_node_flags`` (the node's
``--sensors``, ``--mqtt``, ``--mqtt-topic``, ``--sensor-seed``), ``node_flags``
(their values for the daemon's config) and ``add_commands`` (``edgesync sensors
eval``). This module imports nothing heavy at load time, so ``edgesync --help``
stays fast.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_node_flags(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("sensors and inference")
    group.add_argument("--sensors", action="append", default=[], metavar="SPEC",
                       help="sim:KIND:N[@HZ] or file:KIND:PATH, comma-separated "
                            "(KIND: vibration, temperature)")  # fmt: skip
    group.add_argument("--mqtt", metavar="HOST:PORT", help="MQTT broker to read sensors from")
    group.add_argument("--mqtt-topic", action="append", default=[], metavar="TOPIC",
                       help="topic filter (repeatable; + and # allowed)")  # fmt: skip
    group.add_argument("--sensor-seed", type=int, metavar="N",
                       help="seed of simulated sensors (default: from the node id)")  # fmt: skip


def node_flags(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "sensors": getattr(args, "sensors", []),
        "mqtt": getattr(args, "mqtt", None),
        "mqtt_topic": getattr(args, "mqtt_topic", []),
        "sensor_seed": getattr(args, "sensor_seed", None),
    }


def add_commands(commands: Any) -> None:
    sensors = commands.add_parser("sensors", help="sensor models: evaluate detection quality")
    actions = sensors.add_subparsers(dest="action", required=True)
    evaluate = actions.add_parser("eval", help="precision and recall per anomaly kind")
    evaluate.add_argument("--seed", type=int, help="evaluation seed (default: the card's)")
    evaluate.add_argument("--kind", action="append", choices=["vibration", "temperature"])
    evaluate.add_argument("--json", action="store_true")
    sensors.set_defaults(run=_eval)


def _eval(args: argparse.Namespace) -> int:
    from sensors.evaluate import EVAL_SEED, main

    argv = ["--seed", str(EVAL_SEED if args.seed is None else args.seed)]
    argv += [f"--kind={k}" for k in args.kind or []] + (["--json"] if args.json else [])
    return main(argv)
