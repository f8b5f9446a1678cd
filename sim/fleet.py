"""A fleet of real edgesync daemons, with every link under the fleet's control.

Each member is an ``edgesync node`` or ``edgesync hub`` process with its own
store and log file under one root directory. Where members run and how their
links are made is the fleet's *network*: ``LoopbackNetwork`` (the default) runs
them on 127.0.0.1 and dials each upstream through a ``LinkProxy``;
``sim.netns.NamespaceNetwork`` (root only) gives each its own network namespace
and each link its own veths with packet faults. Either way the fleet can cut and
restore any link and count the bytes it carried. With ``tls=True`` (the default)
the fleet makes a CA, a certificate per member and one for itself, and every link
is mutual TLS, as in production. The demo, the chaos harness and the
real-process tests drive daemons through this.
"""

from __future__ import annotations

import asyncio
import random
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from edge_node.certs import init_ca, issue
from edge_node.client import Client
from sim.proxy import LinkProxy
from sim.wire import Faults

CLIENT_ID = "fleet-client"


BIND_FAILED = "cannot listen on"  # the daemon's one line when its port is taken


FIRST_PICKED_PORT = 20_000
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_ports = random.SystemRandom()


def free_port() -> int:
    """A loopback port nothing listens on, picked at random below the kernel's
    ephemeral range. A port the kernel picks (a bind to port 0) comes from that
    range, from which it also takes the local port of every outgoing connection,
    so one of those could hold it before the daemon meant to listen on it binds
    it; below the range only another such pick can (and the fleet then moves the
    daemon, see ``Fleet._move``)."""
    first_ephemeral = _first_ephemeral_port()
    for _ in range(100):
        port = _ports.randrange(FIRST_PICKED_PORT, first_ephemeral)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use: pick another
            return port
    with socket.socket() as s:  # every pick taken: let the kernel choose
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _first_ephemeral_port() -> int:
    try:
        first = int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        first = 32_768  # Linux's default
    return max(first, FIRST_PICKED_PORT + 1_000)


class Link(Protocol):
    @property
    def address(self) -> str:
        """What the dialer dials."""
        ...

    def sever(self) -> None: ...
    def restore(self) -> None: ...
    def retarget(self, address: str) -> None:
        """Reach the target at ``address`` from now on."""
        ...

    def set_faults(self, faults: Faults) -> None: ...
    @property
    def bytes_sent(self) -> int: ...


class Network(Protocol):
    def place(self, member: str) -> tuple[str, str]:
        """Where ``member`` listens, and where the fleet reaches it."""
        ...

    async def connect(self, dialer: str, target: str, target_address: str) -> Link: ...
    def command_prefix(self, member: str) -> list[str]: ...
    def moved(self, member: str) -> tuple[str, str] | None:
        """A new place for ``member`` when its port was taken before it bound it, or
        None where ports cannot be taken from under a member."""
        ...

    async def close(self) -> None: ...


class LoopbackNetwork:
    """Every member on 127.0.0.1; each link through a ``LinkProxy``."""

    def __init__(self) -> None:
        self.proxies: list[LinkProxy] = []

    def __repr__(self) -> str:
        return "LoopbackNetwork()"

    def place(self, member: str) -> tuple[str, str]:
        address = f"127.0.0.1:{free_port()}"
        return address, address

    def moved(self, member: str) -> tuple[str, str] | None:
        """Another free port: between ``free_port`` and the daemon's bind, another
        process on the machine may take the port (seen with two test suites at once)."""
        return self.place(member)

    async def connect(self, dialer: str, target: str, target_address: str) -> LinkProxy:
        proxy = LinkProxy(f"{dialer}->{target}", target_address)
        await proxy.start()
        self.proxies.append(proxy)
        return proxy

    def command_prefix(self, member: str) -> list[str]:
        return []

    async def close(self) -> None:
        for proxy in self.proxies:
            await proxy.close()


@dataclass
class Member:
    name: str
    role: str  # edge, regional or cloud
    listen: str
    address: str  # where the fleet and dialers reach it
    upstreams: list[str]
    log: Path
    peers: list[str] = field(default_factory=list)  # edges it peers with (--peer)
    extra: list[str] = field(default_factory=list)  # more daemon flags
    process: asyncio.subprocess.Process | None = None
    links: dict[str, Link] = field(default_factory=dict)  # by the member it dials

    def __repr__(self) -> str:
        pid = self.process.pid if self.process else None
        return f"Member({self.name!r}, {self.role}, {self.address}, pid={pid})"


class FleetError(RuntimeError):
    """A member did not start, answer or stop as it should; the message names it."""


class Fleet:
    """``async with Fleet(root) as fleet``: members started inside are stopped on exit."""

    def __init__(
        self,
        root: Path,
        *,
        tls: bool = True,
        reconnect_max_ms: int = 1000,
        network: Network | None = None,
    ) -> None:
        self.root = root
        self.network: Network = network or LoopbackNetwork()
        self.tls_dir = root / "tls" if tls else None
        self.reconnect_max_ms = reconnect_max_ms
        self.members: dict[str, Member] = {}
        self._clients: dict[str, Client] = {}
        if self.tls_dir is not None:
            init_ca(self.tls_dir)
            issue(self.tls_dir, CLIENT_ID, "client")

    def __repr__(self) -> str:
        return f"Fleet({self.root}, {sorted(self.members)})"

    async def __aenter__(self) -> Fleet:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for name in list(self.members):
            await self.kill(name)
        for client in self._clients.values():
            await client.close()  # a channel outlives restarts of its daemon: close at the end
        self._clients.clear()
        await self.network.close()

    # ---- members --------------------------------------------------------------------

    async def start(
        self,
        name: str,
        role: str,
        upstreams: Iterable[str] = (),
        peers: Iterable[str] = (),
        extra: Iterable[str] = (),
    ) -> Member:
        """Start (or restart) ``name``; it dials ``upstreams`` and ``peers`` (members);
        ``extra`` are more daemon flags (kept for restarts)."""
        member = self.members.get(name)
        if member is None:
            member = await self._add(name, role, list(upstreams), list(peers))
            member.extra = list(extra)
        if member.process is not None and member.process.returncode is None:
            raise FleetError(f"{name} is already running")
        command = [*self.network.command_prefix(name), sys.executable, "-m", "edge_node.cli",
                   *self._daemon_args(member)]  # fmt: skip
        with member.log.open("a") as log:  # the child keeps its own copy of the descriptor
            member.process = await asyncio.create_subprocess_exec(
                *command, stdout=log, stderr=log, stdin=asyncio.subprocess.DEVNULL
            )
        return member

    async def _add(self, name: str, role: str, upstreams: list[str], peers: list[str]) -> Member:
        listen, address = self.network.place(name)
        if self.tls_dir is not None:
            issue(self.tls_dir, name, role, [address.rsplit(":", 1)[0]])
        member = Member(name, role, listen, address, upstreams, self.root / f"{name}.log", peers)
        for other in [*upstreams, *peers]:
            target = self.members[other].address
            member.links[other] = await self.network.connect(name, other, target)
        self.members[name] = member
        return member

    def _daemon_args(self, member: Member) -> list[str]:
        kind = ["node"] if member.role == "edge" else ["hub", "--role", member.role]
        args = [*kind, "--id", member.name, "--data", str(self.root / member.name),
                "--listen", member.listen,
                "--reconnect-max-ms", str(self.reconnect_max_ms)]  # fmt: skip
        for other, link in member.links.items():
            # Named: the handshake checks the certificate is that member's own.
            flag = "--upstream" if other in member.upstreams else "--peer"
            args += [flag, f"{other}@{link.address}"]
        args += member.extra
        if self.tls_dir is None:
            return [*args, "--insecure"]
        return [*args, "--tls-dir", str(self.tls_dir)]

    async def wait_serving(self, timeout: float = 60) -> None:
        """Wait until every running member answers its health check. A member that
        could not bind its port because another process took it is moved to another
        port and started again (its dialers reach it through links that follow)."""
        deadline = time.monotonic() + timeout
        for member in self.members.values():
            while not await self.client(member.name).serving():
                if self._lost_its_port(member) and await self._move(member):
                    continue
                self._check_alive(member)
                if time.monotonic() > deadline:
                    raise FleetError(f"{member.name} did not start; see {member.log}")
                await asyncio.sleep(0.1)

    def _lost_its_port(self, member: Member) -> bool:
        process = member.process
        if process is None or process.returncode is None:
            return False
        tail = member.log.read_text(errors="replace").strip().splitlines()[-2:]
        return any(BIND_FAILED in line and member.listen in line for line in tail)

    async def _move(self, member: Member) -> bool:
        """Start ``member`` again on another port, if its network can move it."""
        place = self.network.moved(member.name)
        if place is None:
            return False
        with member.log.open("a") as log:
            print(f"(fleet: {member.listen} was taken; moving to {place[0]})", file=log)
        member.listen, member.address = place
        for link in self.links_to(member.name):
            link.retarget(member.address)
        client = self._clients.pop(member.name, None)
        if client is not None:
            await client.close()
        await self.start(member.name, member.role)
        return True

    def _check_alive(self, member: Member) -> None:
        if member.process is not None and member.process.returncode is not None:
            tail = member.log.read_text().strip().splitlines()[-3:]
            raise FleetError(f"{member.name} exited {member.process.returncode}: {tail}")

    async def stop(self, name: str, timeout: float = 20) -> int:
        """SIGTERM, then wait; returns the exit status."""
        process = self.members[name].process
        if process is None:
            return 0  # never started
        if process.returncode is not None:
            return process.returncode
        process.send_signal(signal.SIGCONT)  # a paused process cannot act on SIGTERM
        process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise FleetError(f"{name} did not stop within {timeout} s of SIGTERM") from None

    def pause(self, name: str, paused: bool = True) -> None:
        """SIGSTOP (or SIGCONT): the process is there but does nothing, as if hung."""
        process = self.members[name].process
        if process is not None and process.returncode is None:
            process.send_signal(signal.SIGSTOP if paused else signal.SIGCONT)

    async def kill(self, name: str) -> None:
        """SIGKILL: no chance to commit or say goodbye."""
        process = self.members[name].process
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()

    # ---- links ----------------------------------------------------------------------

    def link(self, dialer: str, target: str) -> Link:
        """The link ``dialer`` opens to ``target``."""
        link = self.members[dialer].links.get(target)
        if link is None:
            raise FleetError(f"{dialer} does not dial {target}")
        return link

    def links_of(self, name: str) -> list[Link]:
        """Every link ``name`` dials or is dialled on."""
        return [*self.members[name].links.values(), *self.links_to(name)]

    def links_to(self, name: str) -> list[Link]:
        """The links others dial ``name`` on."""
        return [link for m in self.members.values() for o, link in m.links.items() if o == name]

    def sever(self, name: str) -> None:
        for proxy in self.links_of(name):
            proxy.sever()

    def restore(self, name: str) -> None:
        for proxy in self.links_of(name):
            proxy.restore()

    @property
    def bytes_sent(self) -> int:
        return sum(link.bytes_sent for m in self.members.values() for link in m.links.values())

    # ---- reading the fleet ------------------------------------------------------------

    def client(self, name: str) -> Client:
        if name not in self._clients:
            self._clients[name] = Client(self.members[name].address, tls_dir=self.tls_dir)
        return self._clients[name]

    async def digests(self, names: Iterable[str] | None = None, prefix: str = "") -> dict[str, str]:
        """Each member's digest of its state under ``prefix`` (all but local/ by default)."""
        chosen = list(self.members) if names is None else list(names)
        statuses = await asyncio.gather(*(self.client(n).status(prefix) for n in chosen))
        return {n: str(s["digest"]) for n, s in zip(chosen, statuses, strict=True)}

    async def wait_converged(
        self,
        timeout: float = 60,
        names: Iterable[str] | None = None,
        on_poll: Callable[[float, dict[str, str]], Awaitable[None] | None] = lambda t, d: None,
        interval: float = 0.25,
        prefix: str = "",
    ) -> float:
        """Poll digests until they are all equal; returns the seconds it took."""
        started = time.monotonic()
        while True:
            digests = await self.digests(names, prefix)
            elapsed = time.monotonic() - started
            shown = on_poll(elapsed, digests)
            if shown is not None:
                await shown
            if len(set(digests.values())) == 1:
                return elapsed
            if elapsed > timeout:
                raise FleetError(f"no convergence within {timeout} s: {digests}")
            await asyncio.sleep(interval)


def edges_under_hubs(edges: int) -> dict[str, str]:
    """Edges ``e1..eN``, the first half under regional hub r1, the rest under r2."""
    return {f"e{i + 1}": "r1" if i < edges // 2 else "r2" for i in range(edges)}


async def start_tree(
    fleet: Fleet,
    edges: int,
    *,
    peers: dict[str, list[str]] | None = None,
    extra: dict[str, list[str]] | None = None,
    timeout: float = 60,
) -> dict[str, str]:
    """A cloud hub, regional hubs r1 and r2 under it, and ``edges`` edges under them,
    all serving; ``peers`` and ``extra`` add an edge's peer links and daemon flags.
    Returns each edge's regional hub."""
    peers, extra = peers or {}, extra or {}
    await fleet.start("cloud", "cloud")
    for hub in ("r1", "r2"):
        await fleet.start(hub, "regional", ["cloud"])
    under = edges_under_hubs(edges)
    for edge, hub in under.items():
        await fleet.start(edge, "edge", [hub], peers.get(edge, []), extra.get(edge, []))
    await fleet.wait_serving(timeout)
    return under
