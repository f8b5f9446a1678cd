"""Hosts and links for real daemons: one network namespace per member (needs root).

Every member gets a namespace and one *service address* ``10.252.S.N`` on its
loopback, the address its daemon is dialled and asked at, so its certificate can
name it before any link exists. The harness in the root namespace reaches it over
a management veth; each link between two members is its own pair of veths whose
outer ends a ``wire.Switch`` joins, so cutting a link or adding packet faults to
it touches that link alone. Linux answers ARP for any local address, so a dialer
reaches its upstream's service address through the link with one on-link route.

Everything is made under one prefix and ``close()`` removes it all (namespaces
take their veths with them); ``sweep_leftovers`` removes what a killed run left.
The service and management addresses live in the root namespace's routing table,
so each run takes a *slot* S of its own (``free_slot``): two runs on one host at
once (a chaos run and a test suite's) would otherwise both route 10.252.0.1.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from dataclasses import dataclass, field

from sim.wire import Faults, Switch, Wire

SERVICE_PORT = 7000
PREFIX = "es-"
MAX_MEMBERS = 63  # management /30s in one 10.250.S.0/24, from 10.250.S.4


def can_use_namespaces() -> bool:
    """Root, with ``ip`` from iproute2 and a kernel that allows new namespaces."""
    if os.geteuid() != 0:
        return False
    probe = f"{PREFIX}probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, check=False)
    if made.returncode != 0:
        return False
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return True


def ip(*args: str, ns: str | None = None) -> None:
    command = ["ip", *(["-n", ns] if ns else []), *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise OSError(f"{' '.join(command)}: {done.stderr.strip()}")


def in_namespace(ns: str, *command: str) -> None:
    done = subprocess.run(["ip", "netns", "exec", ns, *command], capture_output=True,
                          text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        raise OSError(f"in {ns}: {' '.join(command)}: {done.stderr.strip()}")


@dataclass
class NamespaceLink:
    """A link the fleet can cut, restore and load with packet faults."""

    name: str
    address: str  # what the dialer dials: its upstream's service address
    switch: Switch
    faults: Faults = field(default_factory=Faults)

    def sever(self) -> None:
        self.set_faults(Faults(cut=True))

    def restore(self) -> None:
        self.set_faults(Faults())

    def retarget(self, address: str) -> None:
        raise RuntimeError(f"{self.name}: a member's service address in its namespace is fixed")

    def set_faults(self, faults: Faults) -> None:
        self.faults = faults
        self.switch.set_faults(self.name, faults)

    @property
    def bytes_sent(self) -> int:
        return self.switch.wires[self.name].bytes


def free_slot() -> int:
    """A third octet no other run routes service addresses in, tried from one the
    process id picks (so runs started together try different ones first)."""
    routes = subprocess.run(["ip", "route"], capture_output=True, text=True, check=False).stdout
    start = os.getpid() % 250
    for slot in ((start + i) % 250 for i in range(250)):
        if f"10.252.{slot}." not in routes:
            return slot
    raise OSError("every 10.252.S.0/24 slot is routed: too many chaos runs at once")


class NamespaceNetwork:
    def __init__(self, rng: random.Random) -> None:
        self.tag = f"{PREFIX}{os.getpid() % 100000}"
        self.slot = free_slot()
        self.switch = Switch(rng)
        self.switch.start()
        self.index: dict[str, int] = {}
        self.links = 0

    def __repr__(self) -> str:
        return f"NamespaceNetwork({self.tag}, {sorted(self.index)})"

    def namespace(self, member: str) -> str:
        return f"{self.tag}-{member}"

    def service_address(self, member: str) -> str:
        return f"10.252.{self.slot}.{self.index[member]}"

    def place(self, member: str) -> tuple[str, str]:
        """Make ``member``'s namespace; returns (listen address, client address)."""
        n = len(self.index) + 1
        if n > MAX_MEMBERS:
            raise OSError(f"at most {MAX_MEMBERS} members on namespaces (one /30 each)")
        self.index[member] = n
        ns, service = self.namespace(member), self.service_address(member)
        # The management veth's /30 (4n + 1 and 4n + 2) within the slot's 10.250.S.0/24.
        outer_ip, inner_ip = f"10.250.{self.slot}.{4 * n + 1}", f"10.250.{self.slot}.{4 * n + 2}"
        ip("netns", "add", ns)
        ip("link", "set", "lo", "up", ns=ns)
        ip("addr", "add", f"{service}/32", "dev", "lo", ns=ns)
        outer, inner = f"{self.tag}m{n}", "mgmt"
        ip("link", "add", outer, "type", "veth", "peer", "name", inner, "netns", ns)
        ip("addr", "add", f"{outer_ip}/30", "dev", outer)
        ip("link", "set", outer, "up")
        ip("addr", "add", f"{inner_ip}/30", "dev", inner, ns=ns)
        ip("link", "set", inner, "up", ns=ns)
        ip("route", "add", f"{service}/32", "via", inner_ip)
        address = f"{service}:{SERVICE_PORT}"
        return address, address

    async def connect(self, dialer: str, target: str, target_address: str) -> NamespaceLink:
        """A link of its own from ``dialer`` to ``target``'s service address."""
        self.links += 1
        k = self.links
        name = f"{dialer}->{target}"
        ends = []
        for side, member, host in (("a", dialer, 1), ("b", target, 2)):
            ns, outer, inner = self.namespace(member), f"{self.tag}l{k}{side}", f"l{k}"
            ip("link", "add", outer, "type", "veth", "peer", "name", inner, "netns", ns)
            ip("addr", "add", f"10.251.{k}.{host}/24", "dev", inner, ns=ns)
            in_namespace(ns, sys.executable, "-c", _TX_OFF, inner)
            ip("link", "set", inner, "up", ns=ns)
            ip("link", "set", outer, "up")
            ends.append(outer)
        ip("route", "add", f"{self.service_address(target)}/32", "dev", f"l{k}",
           ns=self.namespace(dialer))  # fmt: skip
        self.switch.add(Wire(name, ends[0], ends[1]))
        return NamespaceLink(name, f"{self.service_address(target)}:{SERVICE_PORT}", self.switch)

    def command_prefix(self, member: str) -> list[str]:
        return ["ip", "netns", "exec", self.namespace(member)]

    def moved(self, member: str) -> None:
        """Never: each member has its namespace's port space to itself."""
        return None

    async def close(self) -> None:
        self.switch.close()
        sweep_leftovers(self.tag)


_TX_OFF = "import sys; from sim.wire import disable_tx_checksum; disable_tx_checksum(sys.argv[1])"


def sweep_leftovers(tag: str = PREFIX) -> list[str]:
    """Delete every namespace and root-side veth whose name starts with ``tag``."""
    removed = []
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    for line in listed.stdout.splitlines():
        ns = line.split()[0] if line.split() else ""
        if ns.startswith(tag):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
            removed.append(ns)
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=False)
    for line in links.stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
        if name.startswith(tag):  # root-side veth ends carry the run's tag
            subprocess.run(["ip", "link", "del", name], capture_output=True, check=False)
    return removed
