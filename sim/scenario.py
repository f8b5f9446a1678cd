"""Scenario files: a fault schedule as readable text, one step per line.

In the spirit of etcd raft's testdata: a file is a header (``seed``, ``topology``,
``storage``) and then steps, run in order; virtual time passes only in ``wait``.
``#`` starts a comment. A swarm run writes its generated schedule in this very
format, so any seed can be replayed, shrunk and kept as a file::

    seed 7
    topology regions=2 edges=2 peering=yes hubmesh=yes
    storage lmdb
    network delay=5..40 loss=0.02 dup=0.01 reorder=0.1
    write e1 set r0 hello          # LWW register
    write e2 inc c0 3              # counter (negative decrements)
    write e3 add s0 x              # set add; `rm` removes
    write e4 map m0 n inc 2        # nested map field
    write e1 del c0 counter        # key remove (types: lww mv counter set map)
    partition e1 e2 | r1           # cut every link between the groups; `*` = the rest
    isolate e3                     # cut every link of e3
    ring                           # overlapping majorities
    stall r1 cloud                 # hold messages, release them on `unstall`
    crash e1 / restart e1 / wipe e1 / snapshot e1 / rollback e1 / pause e1 / unpause e1
    skew e2 +120                   # clock offset in seconds; `jump` adds to it
    wait 2000                      # milliseconds of virtual time
    heal                           # every cut and stall (or `heal A B` for one link)
    check                          # heal all, settle, run the checkers

Every error names the file and line and says what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sim.topology import Mesh, Shape, Topology

TYPES = ("lww", "mv", "counter", "set", "map")
STORAGES = ("memory", "lmdb")
MAX_SKEW_S = 300
NODE_VERBS = ("crash", "restart", "wipe", "rollback", "snapshot", "pause", "unpause")
LINK_VERBS = ("stall", "unstall")
FAULT_KEYS = ("delay", "loss", "dup", "reorder")


class ScenarioError(ValueError):
    """A scenario file is malformed; the message names the line."""


@dataclass(frozen=True)
class Step:
    verb: str
    args: tuple[str, ...] = ()

    def text(self) -> str:
        return " ".join((self.verb, *self.args))

    def __repr__(self) -> str:
        return f"Step({self.text()!r})"


@dataclass(frozen=True)
class LinkFaults:
    """Per-link packet faults: delay range (ms), loss, duplication, reordering."""

    delay: tuple[int, int] = (5, 40)
    loss: float = 0.0
    dup: float = 0.0
    reorder: float = 0.0  # probability a message is held back a further delay range

    def text(self) -> str:
        lo, hi = self.delay
        return f"delay={lo}..{hi} loss={self.loss:g} dup={self.dup:g} reorder={self.reorder:g}"


@dataclass
class Scenario:
    seed: int = 0
    topology: Shape = field(default_factory=Topology)
    storage: str = "memory"
    steps: list[Step] = field(default_factory=list)

    def text(self) -> str:
        head = [
            f"seed {self.seed}",
            f"topology {self.topology.describe()}",
            f"storage {self.storage}",
        ]
        return "\n".join(head + [s.text() for s in self.steps]) + "\n"

    def with_steps(self, steps: list[Step]) -> Scenario:
        return Scenario(self.seed, self.topology, self.storage, list(steps))


# ---- parsing --------------------------------------------------------------------------


def load(path: str | Path) -> Scenario:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: cannot read scenario: {exc}") from None
    return parse(text, str(path))


def parse(text: str, source: str = "<scenario>") -> Scenario:
    scenario = Scenario()
    for number, raw in enumerate(text.splitlines(), start=1):
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        try:
            _parse_line(scenario, words)
        except ScenarioError as exc:
            raise ScenarioError(f"{source}:{number}: {exc}") from None
    return scenario


def _parse_line(scenario: Scenario, words: list[str]) -> None:
    verb, args = words[0], words[1:]
    if verb in ("seed", "topology", "storage"):
        if scenario.steps:
            raise ScenarioError(f"`{verb}` must come before the first step")
        _header(scenario, verb, args)
        return
    check = _CHECKS.get(verb)
    if check is None:
        raise ScenarioError(f"unknown step {verb!r}; expected one of {', '.join(sorted(_CHECKS))}")
    check(args, set(scenario.topology.nodes()))
    scenario.steps.append(Step(verb, tuple(args)))


def _header(scenario: Scenario, verb: str, args: list[str]) -> None:
    if verb == "seed":
        _arity(args, 1, "seed N")
        scenario.seed = _int(args[0], "seed")
    elif verb == "storage":
        _arity(args, 1, "storage memory|lmdb")
        if args[0] not in STORAGES:
            raise ScenarioError(f"storage must be memory or lmdb, not {args[0]!r}")
        scenario.storage = args[0]
    else:
        try:
            scenario.topology = _topology(args)
        except ValueError as exc:
            raise ScenarioError(str(exc)) from None


def _topology(args: list[str]) -> Shape:
    """``regions=R edges=E peering=yes|no hubmesh=yes|no``, or ``mesh=N degree=D graph=S``."""
    if any(a.startswith("mesh=") for a in args):
        opts = _options(args, ("mesh", "degree", "graph"))
        return Mesh(
            size=_int(opts["mesh"], "mesh"),
            degree=_int(opts.get("degree", "4"), "degree"),
            graph=_int(opts.get("graph", "0"), "graph"),
        )
    opts = _options(args, ("regions", "edges", "peering", "hubmesh"))
    return Topology(
        regions=_int(opts.get("regions", "2"), "regions"),
        edges_per_region=_int(opts.get("edges", "2"), "edges"),
        edge_peering=_yes(opts.get("peering", "no"), "peering"),
        hub_mesh=_yes(opts.get("hubmesh", "yes"), "hubmesh"),
    )


def parse_faults(args: list[str] | tuple[str, ...], base: LinkFaults) -> LinkFaults:
    opts = _options(list(args), FAULT_KEYS)
    delay = base.delay
    if "delay" in opts:
        lo, sep, hi = opts["delay"].partition("..")
        delay = (_int(lo, "delay"), _int(hi if sep else lo, "delay"))
        if not 0 <= delay[0] <= delay[1]:
            raise ScenarioError(f"delay needs 0 <= LO <= HI, got {opts['delay']!r}")
    return LinkFaults(
        delay=delay,
        loss=_prob(opts.get("loss"), base.loss, "loss"),
        dup=_prob(opts.get("dup"), base.dup, "dup"),
        reorder=_prob(opts.get("reorder"), base.reorder, "reorder"),
    )


# ---- per-step checks --------------------------------------------------------------------


def _arity(args: list[str], n: int, usage: str, at_least: bool = False) -> None:
    if len(args) < n if at_least else len(args) != n:
        raise ScenarioError(f"expected `{usage}`")


def _nodes(args: list[str], nodes: set[str]) -> None:
    for name in args:
        if name not in nodes:
            raise ScenarioError(f"no node {name!r}; this topology has {', '.join(sorted(nodes))}")


def _int(word: str, what: str) -> int:
    try:
        return int(word)
    except ValueError:
        raise ScenarioError(f"{what} must be an integer, not {word!r}") from None


def _prob(word: str | None, default: float, what: str) -> float:
    if word is None:
        return default
    try:
        p = float(word)
    except ValueError:
        raise ScenarioError(f"{what} must be a probability, not {word!r}") from None
    if not 0.0 <= p <= 1.0:
        raise ScenarioError(f"{what} must be between 0 and 1, got {word}")
    return p


def _yes(word: str, what: str) -> bool:
    if word not in ("yes", "no"):
        raise ScenarioError(f"{what} must be yes or no, not {word!r}")
    return word == "yes"


def _options(args: list[str], allowed: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or key not in allowed:
            raise ScenarioError(f"expected KEY=VALUE with KEY in {', '.join(allowed)}; got {arg!r}")
        out[key] = value
    return out


def _check_write(args: list[str], nodes: set[str]) -> None:
    _arity(args, 3, "write NODE OP PATH ...", at_least=True)
    _nodes(args[:1], nodes)
    check_op(args[1:])


def check_op(op: list[str], nested: bool = False) -> None:
    """``OP PATH ARG`` (or, in a map, ``OP FIELD ARG``); ``map PATH FIELD OP ARG``."""
    kind = op[0]
    usage = {
        "set": "set PATH VALUE", "mv": "mv PATH VALUE", "inc": "inc PATH N",
        "add": "add PATH ELEMENT", "rm": "rm PATH ELEMENT", "del": "del PATH TYPE",
        "map": "map PATH FIELD OP ARG",
    }  # fmt: skip
    if kind not in usage or (nested and kind == "map"):
        raise ScenarioError(f"unknown write {kind!r}; expected one of {', '.join(usage)}")
    if kind == "map":
        _arity(op, 5, usage[kind])
        check_op([op[3], op[2], op[4]], nested=True)
        return
    _arity(op, 3, usage[kind])
    if kind == "inc":
        _int(op[2], "increment")
    if kind == "del" and op[2] not in TYPES:
        raise ScenarioError(f"type must be one of {', '.join(TYPES)}, not {op[2]!r}")


def _check_wait(args: list[str], nodes: set[str]) -> None:
    _arity(args, 1, "wait MS")
    if _int(args[0], "wait") < 0:
        raise ScenarioError("wait needs a non-negative number of milliseconds")


def _check_partition(args: list[str], nodes: set[str]) -> None:
    groups = split_groups(args)
    if len(groups) < 2 or any(not g for g in groups):
        raise ScenarioError("expected `partition A... | B... [| C...]` with no empty group")
    named = [n for g in groups for n in g if n != "*"]
    _nodes(named, nodes)
    if len(set(named)) != len(named) or sum(g.count("*") for g in groups) > 1:
        raise ScenarioError("a node (or `*`) may appear in only one group")


def split_groups(args: list[str] | tuple[str, ...]) -> list[list[str]]:
    groups: list[list[str]] = [[]]
    for word in args:
        if word == "|":
            groups.append([])
        else:
            groups[-1].append(word)
    return groups


def _check_isolate(args: list[str], nodes: set[str]) -> None:
    _arity(args, 1, "isolate NODE...", at_least=True)
    _nodes(args, nodes)


def _check_none(args: list[str], nodes: set[str]) -> None:
    if args:
        raise ScenarioError("this step takes no arguments")


def _check_heal(args: list[str], nodes: set[str]) -> None:
    if len(args) not in (0, 2):
        raise ScenarioError("expected `heal` or `heal A B`")
    _nodes(args, nodes)


def _check_node(args: list[str], nodes: set[str]) -> None:
    _arity(args, 1, "VERB NODE")
    _nodes(args, nodes)


def _check_link(args: list[str], nodes: set[str]) -> None:
    _arity(args, 2, "VERB A B")
    _nodes(args, nodes)


def _check_clock(args: list[str], nodes: set[str]) -> None:
    _arity(args, 2, "skew|jump NODE +-SECONDS")
    _nodes(args[:1], nodes)
    if abs(_int(args[1], "seconds")) > MAX_SKEW_S:
        raise ScenarioError(f"clock offsets are limited to +-{MAX_SKEW_S} s, got {args[1]}")


def _check_network(args: list[str], nodes: set[str]) -> None:
    parse_faults(args, LinkFaults())


def _check_link_faults(args: list[str], nodes: set[str]) -> None:
    _arity(args, 2, "link A B KEY=VALUE...", at_least=True)
    _nodes(args[:2], nodes)
    parse_faults(args[2:], LinkFaults())


_CHECKS = {
    "write": _check_write,
    "wait": _check_wait,
    "partition": _check_partition,
    "isolate": _check_isolate,
    "ring": _check_none,
    "heal": _check_heal,
    "check": _check_none,
    "network": _check_network,
    "link": _check_link_faults,
    "skew": _check_clock,
    "jump": _check_clock,
    **dict.fromkeys(NODE_VERBS, _check_node),
    **dict.fromkeys(LINK_VERBS, _check_link),
}
