"""The simulated fleet's shape: edge nodes under regional hubs under one cloud hub.

Names are fixed by position so a scenario file can name nodes: ``cloud``, regional
hubs ``r1..rR``, and edges ``e1..eN`` numbered across regions (region 1 holds
``e1..eE``). Links follow the daemons' configuration: every edge links to its
regional hub, every regional hub to the cloud; optionally the edges of a region
peer with each other and the regional hubs with each other (a mesh), which gives
partitions more than one path to cut. Edges do not relay (``relay=False``) and a
peer that is an edge may send only its own writes (``own_writes_only``), exactly as
the gRPC daemons set up links from certificates.
"""

from __future__ import annotations

from dataclasses import dataclass

ROLES = ("cloud", "regional", "edge")


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
        found = [b for a, b in self.links() if a == name] + [
            a for a, b in self.links() if b == name
        ]
        return sorted(found)

    def describe(self) -> str:
        return (
            f"regions={self.regions} edges={self.edges_per_region} "
            f"peering={'yes' if self.edge_peering else 'no'} "
            f"hubmesh={'yes' if self.hub_mesh else 'no'}"
        )
