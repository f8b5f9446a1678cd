"""Packet faults on real links: a userspace netem between two network interfaces.

Each link between two namespaces is two veth pairs whose outer ends stay in the
root namespace; a ``Wire`` copies Ethernet frames between those outer ends with
raw ``AF_PACKET`` sockets, and on the way drops, duplicates, delays and reorders
them, drops everything while the link is cut, or holds everything while it is
stalled and delivers what it held, in order, when the stall ends. The daemons'
TCP stacks see real packet loss and reordering and recover as they would on a
bad network; a stall is a path that goes quiet (a congested uplink, a radio that
fades) rather than one that breaks: the connection stays open, its segments and
their retransmissions arrive late, and no reset tells either end anything.

Why not ``tc netem``: the kernel this runs on may lack ``sch_netem`` (this one
does: "Specified qdisc kind is unknown"), and a forwarder works on any kernel
with veth. The namespace side of each veth must not offload TCP checksums, or
the copied frames would carry none; ``disable_tx_checksum`` turns that off.

All randomness comes from the ``random.Random`` given to the switch, so a seed
fixes which frames a fault picks, though not the timing of the real network.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import heapq
import random
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

ETH_P_ALL = 0x0003
SIOCETHTOOL = 0x8946
ETHTOOL_STXCSUM = 0x17
MAX_FRAME = 65536
MAX_HELD = 4096  # frames a stalled wire holds; beyond it drops, as a full buffer would


def disable_tx_checksum(ifname: str) -> None:
    """``ethtool -K IF tx off`` by ioctl (run inside the interface's namespace)."""
    value = array.array("I", [ETHTOOL_STXCSUM, 0])
    address, _ = value.buffer_info()
    request = struct.pack("16sP", ifname.encode(), address)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s.fileno(), SIOCETHTOOL, request)


@dataclass
class Faults:
    """What a link does to each frame; all zero is a clean link."""

    loss: float = 0.0  # probability a frame is dropped
    duplicate: float = 0.0  # probability a frame is sent twice
    delay_ms: float = 0.0  # every frame waits this long...
    jitter_ms: float = 0.0  # ...plus up to this much more, so frames overtake each other
    cut: bool = False  # drop everything: a partition
    stall: bool = False  # hold everything, and deliver it in order when the stall ends

    def __repr__(self) -> str:
        if self.cut or self.stall:
            return "Faults(cut)" if self.cut else "Faults(stall)"
        shown = [f"{k}={v:.3g}" for k, v in vars(self).items() if v and not isinstance(v, bool)]
        return f"Faults({', '.join(shown) or 'none'})"


HeldFrame = tuple[socket.socket, bytes]  # where it goes, and the frame


@dataclass
class Wire:
    """One link: frames between two root-namespace interfaces."""

    name: str
    left: str
    right: str
    faults: Faults = field(default_factory=Faults)
    frames: int = 0
    bytes: int = 0
    dropped: int = 0
    held: list[HeldFrame] = field(default_factory=list)  # while stalled


class Switch:
    """Forwards every wire's frames on one thread until ``close()``."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.wires: dict[str, Wire] = {}
        self._sockets: dict[int, tuple[socket.socket, socket.socket, Wire]] = {}
        self._delayed: list[tuple[float, int, socket.socket, bytes]] = []
        self._sequence = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"Switch({sorted(self.wires)})"

    def add(self, wire: Wire) -> None:
        a, b = _raw_socket(wire.left), _raw_socket(wire.right)
        with self._lock:
            self.wires[wire.name] = wire
            self._sockets[a.fileno()] = (a, b, wire)
            self._sockets[b.fileno()] = (b, a, wire)

    def set_faults(self, name: str, faults: Faults) -> None:
        """Apply ``faults`` to the wire; ending a stall sends what it held, in order,
        through the new faults (so a stall that becomes a cut loses what it held)."""
        with self._lock:
            wire = self.wires[name]
            wire.faults = faults
            if not faults.stall:
                held, wire.held = wire.held, []
                for other, frame in held:
                    self._forward(frame, other, wire)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="wire-switch", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for own, _, _ in self._sockets.values():
            own.close()
        self._sockets.clear()

    def _run(self) -> None:
        while not self._stop.is_set():
            timeout = 0.05
            if self._delayed:
                timeout = max(0.0, min(timeout, self._delayed[0][0] - time.monotonic()))
            ready, _, _ = select.select(list(self._sockets), [], [], timeout)
            for fd in ready:
                self._drain(*self._sockets[fd])
            with self._lock:  # ending a stall (set_faults, another thread) may add to the heap
                self._release_due()

    def _drain(self, own: socket.socket, other: socket.socket, wire: Wire) -> None:
        while True:
            try:
                frame, address = own.recvfrom(MAX_FRAME)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # the interface went away: the fleet is being torn down
            if address[2] == socket.PACKET_OUTGOING:
                continue  # our own send, looped back to the packet socket
            with self._lock:
                self._forward(frame, other, wire)

    def _forward(self, frame: bytes, other: socket.socket, wire: Wire) -> None:
        f = wire.faults
        if f.stall and len(wire.held) < MAX_HELD:
            wire.held.append((other, frame))
            return
        if f.cut or f.stall or self.rng.random() < f.loss:
            wire.dropped += 1
            return
        copies = 2 if self.rng.random() < f.duplicate else 1
        for _ in range(copies):
            wait = f.delay_ms + self.rng.random() * f.jitter_ms
            if wait <= 0:
                _send(other, frame)
            else:
                self._sequence += 1
                due = time.monotonic() + wait / 1000
                heapq.heappush(self._delayed, (due, self._sequence, other, frame))
            wire.frames += 1
            wire.bytes += len(frame)

    def _release_due(self) -> None:
        now = time.monotonic()
        while self._delayed and self._delayed[0][0] <= now:
            _, _, other, frame = heapq.heappop(self._delayed)
            _send(other, frame)


def _raw_socket(ifname: str) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((ifname, 0))
    s.setblocking(False)
    return s


def _send(s: socket.socket, frame: bytes) -> None:
    with contextlib.suppress(OSError):  # a full queue or a gone interface drops it, as a NIC
        s.send(frame)
