"""The simulated fleet's shape: a hierarchy (edges under regional hubs under a cloud
hub), or a flat mesh of peers.

Names are fixed by position so a scenario file can name nodes: ``cloud``, regional
hubs ``r1..rR``, and edges ``e1..eN`` numbered across regions (region 1 holds
``e1..eE``). Links follow the daemons' configuration: every edge links to its
regional hub, every regional hub to the cloud; optionally the edges of a region
peer with each other and the regional hubs with each other (a mesh), which gives
partitions more than one path to cut. Edges do not relay (``relay=False``) and a
peer that is an edge may send only its own writes (``own_writes_only``), exactly as
the gRPC daemons set up links from certificates.

A ``Mesh`` has no hierarchy: ``n1..nN``, each linked to a few random others (a
connected random graph drawn from ``graph``, its own seed), every node relaying
what it receives, as the regional hubs do among themselves in the hub mesh. It is
the shape gossip is usually measured on: a change reaches every node in about
log(N) hops.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

ROLES = ("cloud", "regional", "edge", "peer")


@dataclass(frozen=True)
class Topology:
    regions: int = 2
    edges_per_region: int = 2
    edge_peering: bool = False  # opt-in: sim/findings/only-copy-on-an-edge.scenario
    hub_mesh: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.regions <= 64 or not 0 <= self.edges_per_region <= 64:
            raise ValueError(
                f"need 1..64 regions and 0..64 edges per region, got {self.regions} "
                f"and {self.edges_per_region}"
            )

    def hubs(self) -> list[str]:
        return [f"r{i}" for i in range(1, self.regions + 1)]

    def edges(self, region: int | None = None) -> list[str]:
        regions = range(1, self.regions + 1) if region is None else [region]
        e = self.edges_per_region
        return [f"e{(r - 1) * e + i}" for r in regions for i in range(1, e + 1)]

    def nodes(self) -> list[str]:
        """Every node, in the canonical order the simulator iterates them."""
        return ["cloud", *self.hubs(), *self.edges()]

    def role(self, name: str) -> str:
        if name == "cloud":
            return "cloud"
        return "regional" if name.startswith("r") else "edge"

    def region_of(self, name: str) -> int | None:
        """The region an edge or regional hub belongs to; None for the cloud."""
        if name == "cloud":
            return None
        if name.startswith("r"):
            return int(name[1:])
        return (int(name[1:]) - 1) // self.edges_per_region + 1

    def links(self) -> list[tuple[str, str]]:
        """Undirected links as (a, b) pairs, upper end first, in a fixed order."""
        out = [("cloud", hub) for hub in self.hubs()]
        for region, hub in enumerate(self.hubs(), start=1):
            out += [(hub, edge) for edge in self.edges(region)]
        if self.hub_mesh:
            hubs = self.hubs()
            out += [(a, b) for i, a in enumerate(hubs) for b in hubs[i + 1 :]]
        if self.edge_peering:
            for region in range(1, self.regions + 1):
                edges = self.edges(region)
                out += [(a, b) for i, a in enumerate(edges) for b in edges[i + 1 :]]
        return out

    def neighbours(self, name: str) -> list[str]:
        return neighbour_map(self)[name]

    def describe(self) -> str:
        return (
            f"regions={self.regions} edges={self.edges_per_region} "
            f"peering={'yes' if self.edge_peering else 'no'} "
            f"hubmesh={'yes' if self.hub_mesh else 'no'}"
        )


@dataclass(frozen=True)
class Mesh:
    """A flat mesh: ``size`` relaying peers, each linked to at least ``degree`` others."""

    size: int = 8
    degree: int = 4
    graph: int = 0  # the seed the links are drawn from

    def __post_init__(self) -> None:
        if not 2 <= self.size <= 4096 or not 1 <= self.degree < self.size:
            raise ValueError(
                f"need 2..4096 mesh nodes and a degree of 1..nodes-1, got {self.size} "
                f"and {self.degree}"
            )

    def nodes(self) -> list[str]:
        return [f"n{i}" for i in range(1, self.size + 1)]

    def role(self, name: str) -> str:
        return "peer"

    def links(self) -> list[tuple[str, str]]:
        """A random tree (connected, shallow) topped up to ``degree`` links per node."""
        rng = random.Random(self.graph)
        order = self.nodes()
        rng.shuffle(order)
        linked: set[tuple[str, str]] = set()
        degree = dict.fromkeys(order, 0)

        def link(a: str, b: str) -> None:
            linked.add((a, b) if a < b else (b, a))
            degree[a] += 1
            degree[b] += 1

        for i in range(1, len(order)):  # each node joins under a random earlier one
            link(order[i], order[rng.randrange(i)])
        for a in order:
            while degree[a] < self.degree:
                b = rng.choice(order)
                if b != a and ((a, b) if a < b else (b, a)) not in linked:
                    link(a, b)
        return sorted(linked, key=lambda p: (int(p[0][1:]), int(p[1][1:])))

    def describe(self) -> str:
        return f"mesh={self.size} degree={self.degree} graph={self.graph}"


Shape = Topology | Mesh


def neighbour_map(shape: Shape) -> dict[str, list[str]]:
    """Each node's peers, sorted, from one pass over the links."""
    out: dict[str, list[str]] = {name: [] for name in shape.nodes()}
    for a, b in shape.links():
        out[a].append(b)
        out[b].append(a)
    return {name: sorted(peers) for name, peers in out.items()}
