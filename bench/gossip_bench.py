"""Benchmark one replication link against a raw gRPC stream, in one run.

Run ``python bench/gossip_bench.py`` (``--quick`` for a ~10x smaller smoke run,
``--json PATH`` to also write the results). Two processes talk over loopback in
each workload:

(raw) a grpc.aio bidirectional stream to an echo server in a child process:
    frames of the size of our replication frames (measured in (link)), sent as
    fast as the stream takes them and echoed back; messages/s and MB/s counted
    one way, when the last echo is home.
(link) a sender in this process (``AsyncReplica`` over LMDB with ``GrpcLinks``,
    the machinery of ``edgesync node``) and a real ``edgesync hub --insecure``
    daemon as the receiver. The sender meets the hub once (so it keeps a delta log
    for it), the link goes down, the sender makes ``updates`` durable updates on
    as many distinct keys (so no delta is folded into another), and the link comes
    back up. Timed from the redial until the sender holds the hub's
    acknowledgement of its whole log: the hub acknowledges an interval only after
    the commit that holds it, so that is every delta applied *and* durable on the
    receiver. The hub's version vector is checked afterwards.

Both run for two workloads, each against a raw stream of its own median frame size
(the link's first round's), in rounds that alternate: drain the backlog over the
link, then stream a segment of the raw frames, so that the machine's drifts (other
load, the page cache, the CPU's clock) fall on both sides of the ratio; the ratio
printed pools the rounds, and each round's own is shown beside it:

small: 200,000 updates, half PNCounter increments and half LWWRegister sets of a small
    integer, 1,000 per sender commit: about 25 bytes per delta, so the link is bound
    by the CPU each delta costs (decode, merge, digest, store), and the deltas/s
    target is the one that speaks. At 25 bytes a delta, half the raw stream's bytes/s
    would take millions of deltas/s: the bytes target does not apply to it.
large: 5 rounds of 3,600 LWWRegister sets of 16 KiB values, 15 per sender commit: the
    payload-heavy relay path the bytes target is about. 16 KiB is what an edge
    writes when it writes a blob: a camera's thumbnail or a sensor's summary (a
    4,096-bin float32 spectrum or histogram), a model's config; large enough that
    copying and hashing bytes dominates, small enough to be state rather than a
    file. 3,600 of them (about 59 MB) stay under the sender's delta-log bound
    (``ReplicaConfig.log_max_bytes``, 64 MiB), beyond which the log is collected and
    the hub is caught up by digest instead of by deltas. 15 per commit makes log
    entries of about 246 KB, and an edge's intervals of up to 1 MiB
    (``edge_node.edge.EDGE_BATCH_BYTES``) splice four of them into a frame of about
    985 KB; the small workload's frames stay at 10,000 deltas (``EDGE_BATCH_KEYS``).

The raw stream runs in client and server processes of their own, twice a round:
with the allocator policy the daemons run (``sync.adapters.malloc_policy``; the
sender here runs it too, as ``edgesync node`` does), the baseline the target is
held to, and with glibc's defaults, for reference. The policy spares a process the
page faults of copying big frames into memory just returned to the kernel: a
fresh process streaming 1 MB frames with glibc's defaults runs at less than half
the speed. Held against that, the link would look twice as good as it is; so the
baseline gets the same policy as the processes it is compared with.

Every process here runs on the daemons' event loop (uvloop where installed,
``edge_node.daemon.run_event_loop``): the sender as ``edgesync node`` would, and the
raw stream's client and server likewise, so the loop is no difference between them.

Two more figures say where the large workload's time goes, and hold up under other
load better than bytes/s: CPU per MB of throughput, both processes together, of
the link (sender and hub) and of the raw stream (client and server; each of its
MB goes there and back). At equal use of the two cores, half the raw stream's
bytes/s means at most twice its CPU per MB. And (raw) py-lmdb making the writes
the hub makes for the same values (``store_floor``): a floor under the hub's CPU
that no Python work of ours is part of.

Bytes on the wire are the encoded protocol messages the link carries each way
(gRPC adds a few bytes of framing per message). Nothing asserts on timings.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc

from edge_node.daemon import run_event_loop
from edge_node.edge import EDGE
from sim.fleet import free_port
from sync import LWWRegister, PNCounter
from sync._messages import Deltas, encode_message
from sync._replica import Replica
from sync.adapters import frames as frames_codec
from sync.adapters.aio import AsyncReplica
from sync.adapters.embedded import fresh_epoch, wall_clock_ms
from sync.adapters.gc_policy import tune_gc
from sync.adapters.grpc_link import GrpcLinks, channel_options
from sync.adapters.lmdb_storage import LMDBStorage
from sync.adapters.malloc_policy import tune_malloc
from sync.adapters.pb import client_pb2, client_pb2_grpc, replication_pb2, replication_pb2_grpc

TARGET_DELTAS = 50_000  # deltas/s over one link, applied and durable on the receiver
TARGET_BYTES_SHARE = 0.5  # of the raw stream's bytes/s
HUB = [sys.executable, "-m", "edge_node.cli", "hub"]
DELTAS_KIND = encode_message(Deltas(1, 2, b""))[1]  # messages are u8 version | u8 kind | ...


@dataclass(frozen=True)
class Workload:
    name: str
    updates: int  # (link): durable updates on distinct keys, then drained over the link
    value_bytes: int  # 0: small counters and registers; else register values this large
    per_commit: int  # updates per sender commit while loading the backlog
    echo_frames: int  # (raw), over all rounds
    rounds: int = 1  # link drains, each followed by a raw segment of echo_frames / rounds

    @property
    def bytes_bound(self) -> bool:
        """Whether the bytes target speaks for this workload (large values) rather
        than the deltas/s one (small deltas): see the module docstring."""
        return self.value_bytes > 0


FULL = (
    Workload("small", updates=200_000, value_bytes=0, per_commit=1_000, echo_frames=2_000),
    Workload("large", updates=3_600, value_bytes=16 * 1024, per_commit=15, echo_frames=2_000,
             rounds=5),
)  # fmt: skip
QUICK = (
    Workload("small", updates=20_000, value_bytes=0, per_commit=1_000, echo_frames=200),
    Workload("large", updates=360, value_bytes=16 * 1024, per_commit=15, echo_frames=200,
             rounds=2),
)  # fmt: skip


@dataclass
class LinkResult:
    updates: int
    seconds: float
    delta_frames: int  # Deltas messages sent
    delta_bytes: int  # their encoded bytes
    other_bytes: int  # every other message, both ways (Hello, Ack)
    frame_sizes: list[int]
    receiver_cpu_seconds: float  # the hub process's user+system CPU in the timed window
    sender_cpu_seconds: float  # this process's, in the same window
    # (raw) py-lmdb making the hub's writes of the link's values alone (large values):
    # CPU seconds, for this many values; see ``store_floor``
    floor_cpu_seconds: float = 0.0
    floor_values: int = 0
    round_shares: list[float] = field(default_factory=list)  # each round's bytes/s over
    # the raw segment's after it (with the allocator policy): how much the pooled ratio
    # moves round to round

    @property
    def deltas_per_receiver_cpu_second(self) -> float:
        """What the receiver would do with a core to itself: robust to other load."""
        return self.updates / self.receiver_cpu_seconds

    @property
    def deltas_per_second(self) -> float:
        return self.updates / self.seconds

    @property
    def bytes_per_second(self) -> float:
        return self.delta_bytes / self.seconds

    def typical_frame(self) -> int:
        """The median Deltas message size: what the raw stream sends."""
        ordered = sorted(self.frame_sizes)
        return ordered[len(ordered) // 2]


@dataclass
class RawResult:
    frames: int
    frame_bytes: int
    seconds: float
    cpu_seconds: float = 0.0  # client's and server's, each frame going both ways

    @property
    def cpu_per_mb(self) -> float:
        """CPU seconds both processes spend per MB of the stream's one-way throughput
        (each MB goes there and back): the CPU side of its bytes/s."""
        return self.cpu_seconds / (self.frames * self.frame_bytes / 1e6)

    @property
    def messages_per_second(self) -> float:
        return self.frames / self.seconds

    @property
    def bytes_per_second(self) -> float:
        return self.frames * self.frame_bytes / self.seconds


# ---- (raw) the echo stream ----------------------------------------------------------


class Echo(replication_pb2_grpc.ReplicationServicer):
    async def Link(self, request_iterator: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        async for frame in request_iterator:
            yield frame


async def serve_echo(port: int, max_message: int) -> None:
    server = grpc.aio.server(options=channel_options(max_message))
    replication_pb2_grpc.add_ReplicationServicer_to_server(Echo(), server)  # type: ignore[no-untyped-call]
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


def echo_segment(
    port: int, server: int, frames: int, size: int, tuned: bool
) -> tuple[float, float]:
    """Seconds a fresh client process (``tuned``: with the daemons' allocator policy)
    takes to stream ``frames`` frames of ``size`` bytes to the echo server at ``port``
    (process ``server``) and get them back, after a warm-up of a tenth as many; and
    the CPU seconds the client and the server spent in that time."""
    cmd = [sys.executable, __file__, "--echo-client", str(port), str(server), str(frames),
           str(size)]  # fmt: skip
    done = subprocess.run([*cmd, *(["--tuned"] if tuned else [])], capture_output=True,
                          text=True, check=True, timeout=600)  # fmt: skip
    seconds, cpu = done.stdout.split()[-2:]
    return float(seconds), float(cpu)


def run_echo_client(port: int, server: int, frames: int, size: int, max_message: int) -> None:
    run_event_loop(timed_echo(port, max(10, frames // 10), size, max_message))
    cpu = time.process_time() + cpu_seconds(server)
    seconds = run_event_loop(timed_echo(port, frames, size, max_message))
    print(seconds, time.process_time() + cpu_seconds(server) - cpu)


async def timed_echo(port: int, frames: int, size: int, max_message: int) -> float:
    """Seconds to stream ``frames`` frames of ``size`` bytes and get every echo back."""
    payload = os.urandom(size)
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{port}", options=channel_options(max_message)
    ) as channel:
        await asyncio.wait_for(channel.channel_ready(), timeout=10)
        stub = replication_pb2_grpc.ReplicationStub(channel)  # type: ignore[no-untyped-call]

        async def outgoing() -> AsyncIterator[Any]:
            for _ in range(frames):
                yield replication_pb2.Frame(message=payload)

        began = time.perf_counter()
        received = 0
        async for frame in stub.Link(outgoing()):
            received += 1
            assert len(frame.message) == size
            if received == frames:
                break
        return time.perf_counter() - began


@contextlib.contextmanager
def child(cmd: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=out)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")
        time.sleep(0.05)


# ---- (link) sender in process, receiver a real hub daemon ----------------------------


class CountingLinks(GrpcLinks):
    """``GrpcLinks`` that counts the bytes of every message it sends and receives."""

    def __init__(self, replica: AsyncReplica) -> None:
        super().__init__(replica, backoff_ms=(10, 100))
        self.frame_sizes: list[int] = []
        self.other_bytes = 0
        replica.send = self._count_and_send

    def _count_and_send(self, link: str, data: bytes) -> None:
        if data[1] == DELTAS_KIND:
            self.frame_sizes.append(len(data))
        else:
            self.other_bytes += len(data)
        self._send(link, data)

    async def _receive(self, link: str, frames: AsyncIterator[bytes]) -> None:
        async def counted() -> AsyncIterator[bytes]:
            async for frame in frames:
                self.other_bytes += len(frames_codec.decode(frame).message)
                yield frame

        await super()._receive(link, counted())


def the_remote(r: Replica, link: str) -> str | None:
    state = r.links.get(link)
    return None if state is None else state.remote


async def until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout} s waiting for {what}")
        await asyncio.sleep(0.002)


async def load_backlog(r: AsyncReplica, work: Workload, offset: int = 0) -> None:
    """The workload's durable updates on distinct keys (numbered from ``offset``),
    ``per_commit`` per commit."""
    replica = r.replica
    blob = os.urandom(work.value_bytes)
    end = offset + work.updates
    for first in range(offset, end, work.per_commit):
        for i in range(first, min(first + work.per_commit, end)):
            if work.value_bytes:
                write_blob(replica, i, blob)
            else:
                write_one(replica, i)
        await r.tick()  # returns once the commit holding them (and their log entry) is done


def write_one(replica: Replica, i: int) -> None:
    """Update ``i``: a counter increment (even) or a register set (odd), on a key of its own."""
    actor = replica.actor
    if i % 2 == 0:
        replica.update(f"c/{i}", PNCounter, lambda c: c.increment(actor, 1))
    else:
        ts = replica.hlc.now()
        replica.update(f"r/{i}", LWWRegister, lambda g: g.set(actor, i, ts))


def write_blob(replica: Replica, i: int, blob: bytes) -> None:
    """Update ``i`` of the large workload: a register set to a value of its own, of
    ``len(blob)`` bytes."""
    actor, ts = replica.actor, replica.hlc.now()
    value = i.to_bytes(8, "big") + blob[8:]
    replica.update(f"blob/{i}", LWWRegister, lambda g: g.set(actor, value, ts))


async def hub_version_of(address: str, actor: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = client_pb2_grpc.ClientStub(channel)  # type: ignore[no-untyped-call]
        reply = await stub.Status(client_pb2.StatusRequest(prefix=""), timeout=120)
        return int(reply.version_vector.get(actor, 0))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drive_link(
    address: str,
    work: Workload,
    data: Path,
    *,
    hub_pid: int,
    echo: tuple[tuple[int, int], tuple[int, int]],
) -> tuple[LinkResult, RawResult, RawResult]:
    """``work.rounds`` rounds of: go offline, load the backlog, drain it over the link
    (timed), then time a raw echo segment of the first round's median frame size, with
    glibc's allocator defaults and then with the daemons' policy (``echo_ports``: the
    echo servers of each). Alternating spreads the machine's drifts over both sides
    of the ratio."""
    r = AsyncReplica(
        LMDBStorage(data), "sender", clock=wall_clock_ms, new_epoch=fresh_epoch,
        config=EDGE.replica_config(),
    )  # fmt: skip
    links = CountingLinks(r)
    log = r.replica.log
    # Meet the hub once, so the sender keeps a delta log for it, then go offline.
    dial = asyncio.create_task(links.dial(address))
    await until(lambda: the_remote(r.replica, address) in log.peers, 60, "the hub's Hello")
    hub = the_remote(r.replica, address)
    assert hub is not None
    link = LinkResult(0, 0.0, 0, 0, 0, [], 0.0, 0.0)
    plain, raw = RawResult(0, 0, 0.0), RawResult(0, 0, 0.0)  # glibc's defaults; the policy
    segment = max(1, work.echo_frames // work.rounds)
    for n in range(work.rounds):
        dial.cancel()
        await asyncio.gather(dial, return_exceptions=True)
        await load_backlog(r, work, offset=n * work.updates)
        links.frame_sizes.clear()
        links.other_bytes = 0
        began, hub_cpu, own_cpu = time.perf_counter(), cpu_seconds(hub_pid), time.process_time()
        dial = asyncio.create_task(links.dial(address))
        await until(lambda: log.peers[hub].acked >= log.next_seq, 600, "the hub's acks")
        seconds = time.perf_counter() - began
        hub_cpu, own_cpu = cpu_seconds(hub_pid) - hub_cpu, time.process_time() - own_cpu
        sizes = links.frame_sizes
        if n == 0:
            size = sorted(sizes)[len(sizes) // 2]
        plain_seconds, _ = await asyncio.to_thread(echo_segment, *echo[0], segment, size, False)
        tuned_seconds, tuned_cpu = await asyncio.to_thread(
            echo_segment, *echo[1], segment, size, True
        )
        link.round_shares.append(sum(sizes) / seconds / (segment * size / tuned_seconds))
        link.updates += work.updates
        link.seconds += seconds
        link.delta_frames += len(sizes)
        link.delta_bytes += sum(sizes)
        link.other_bytes += links.other_bytes
        link.frame_sizes += sizes
        link.receiver_cpu_seconds += hub_cpu
        link.sender_cpu_seconds += own_cpu
        if work.value_bytes:
            per_frame = max(1, round(work.updates / len(sizes)))
            floor = store_floor(data.parent / f"floor-{n}", work.updates, per_frame,
                                work.value_bytes)  # fmt: skip
            link.floor_cpu_seconds += floor
            link.floor_values += work.updates
        plain = RawResult(plain.frames + segment, size, plain.seconds + plain_seconds)
        raw = RawResult(raw.frames + segment, size, raw.seconds + tuned_seconds,
                        raw.cpu_seconds + tuned_cpu)  # fmt: skip
    dial.cancel()
    await asyncio.gather(dial, return_exceptions=True)
    seen = await hub_version_of(address, r.actor)
    assert seen == link.updates, f"the hub has {seen} of {link.updates} updates"
    await r.close()
    return link, plain, raw


def store_floor(directory: Path, values: int, per_frame: int, value_bytes: int) -> float:
    """CPU seconds raw py-lmdb takes to make the durable writes the bench's hub makes
    for ``values`` received values: per frame of ``per_frame`` values, one
    transaction that puts each value under a key of its own, committed with an
    fsync, on an environment opened as ``LMDBStorage`` opens its own. (The hub
    keeps no relay log here: its one peer is the values' origin. A hub with other
    peers would also store each frame's payload once more, as its log record.)
    What the hub spends besides (gRPC, decoding, merging, acknowledging) is over
    this floor."""
    import lmdb

    env = lmdb.open(str(directory), map_size=4 << 30, max_dbs=2, sync=True, metasync=True,
                    readahead=False)  # fmt: skip
    entries = env.open_db(b"entries")
    value = os.urandom(value_bytes + 32)
    began = time.process_time()
    for first in range(0, values, per_frame):
        with env.begin(write=True) as txn, txn.cursor(entries) as cursor:
            keys = range(first, min(first + per_frame, values))
            cursor.putmulti([(b"blob/%d\x04" % i, value) for i in keys])
    cpu = time.process_time() - began
    env.close()
    return cpu


Run = tuple[Workload, LinkResult, RawResult, RawResult]


def run_workload(work: Workload, tmp: Path) -> Run:
    port, plain, tuned = free_port(), free_port(), free_port()
    address = f"127.0.0.1:{port}"
    cmd = [*HUB, "--id", "hub", "--role", "cloud", "--data", str(tmp / f"hub-{work.name}"),
           "--listen", address, "--insecure"]  # fmt: skip
    echo = [sys.executable, __file__, "--echo-server"]
    with (
        child(cmd, tmp / f"hub-{work.name}.log") as hub,
        child([*echo, str(plain)], tmp / "echo.log") as plain_server,
        child([*echo, str(tuned), "--tuned"], tmp / "echo-tuned.log") as tuned_server,
    ):
        for p in (port, plain, tuned):
            wait_for_port(p)
        data = tmp / f"sender-{work.name}"
        servers = ((plain, plain_server.pid), (tuned, tuned_server.pid))
        run = drive_link(address, work, data, hub_pid=hub.pid, echo=servers)
        return (work, *run_event_loop(run))


# ---- output -----------------------------------------------------------------------------


def table(runs: list[Run]) -> list[list[str]]:
    rows = [["workload", "metric", "value", "ratio", "target"]]
    for run in runs:
        rows += workload_rows(*run)
    return rows


def workload_rows(
    work: Workload, link: LinkResult, plain: RawResult, raw: RawResult
) -> list[list[str]]:
    """``raw``: the stream with the daemons' allocator policy, the baseline the target
    is held to; ``plain``: with glibc's defaults, for reference."""
    mb = 1e6
    share = link.bytes_per_second / raw.bytes_per_second
    link_cpu_per_mb = (link.receiver_cpu_seconds + link.sender_cpu_seconds) / (
        link.delta_bytes / mb
    )
    met_rate = link.deltas_per_second >= TARGET_DELTAS
    met_share = share >= TARGET_BYTES_SHARE
    echo = f"{work.name}: (raw) grpc.aio echo"
    ours = f"{work.name}: (link) sender -> hub"
    return [
        [echo, "frame size", f"{raw.frame_bytes:,} B", "", ""],
        [echo, "messages/s", f"{raw.messages_per_second:,.0f}/s", "", ""],
        [echo, "MB/s (one way)", f"{raw.bytes_per_second / mb:,.1f}", "", ""],
        [echo, "CPU per MB, client and server", f"{raw.cpu_per_mb * 1e3:,.2f} ms", "", ""],
        [echo, "  with glibc's allocator defaults", f"{plain.bytes_per_second / mb:,.1f}",
         f"{plain.bytes_per_second / raw.bytes_per_second:.2f}x", ""],
        [ours, "deltas/s applied+durable", f"{link.deltas_per_second:,.0f}/s", "",
         "" if work.bytes_bound else
         f">= {TARGET_DELTAS:,}/s: {'met' if met_rate else 'MISSED'}"],
        [ours, "deltas per hub CPU second", f"{link.deltas_per_receiver_cpu_second:,.0f}/s",
         f"{link.receiver_cpu_seconds * 1e6 / link.updates:,.1f} us/delta", ""],
        *([[ours, "  (raw) py-lmdb making the hub's writes alone",
            f"{link.floor_cpu_seconds * 1e6 / link.floor_values:,.1f} us/delta", "", ""]]
          if link.floor_values else []),
        [ours, "CPU per MB, sender and hub", f"{link_cpu_per_mb * 1e3:,.2f} ms",
         f"{link_cpu_per_mb / raw.cpu_per_mb:.2f}x (raw)", ""],
        [ours, "sender CPU per delta",
         f"{link.sender_cpu_seconds * 1e6 / link.updates:,.1f} us", "", ""],
        [ours, "Deltas frames/s", f"{link.delta_frames / link.seconds:,.1f}/s",
         f"{link.delta_frames / link.seconds / raw.messages_per_second:.3f}x (raw) msgs", ""],
        [ours, "MB/s (Deltas messages)", f"{link.bytes_per_second / mb:,.2f}",
         f"{share:.3f}x (raw) MB/s",
         f">= {TARGET_BYTES_SHARE}x (raw): {'met' if met_share else 'MISSED'}"
         if work.bytes_bound else ""],
        [ours, "  against the raw stream with glibc's defaults", "",
         f"{link.bytes_per_second / plain.bytes_per_second:.3f}x", ""],
        [ours, "MB per hub CPU second",
         f"{link.delta_bytes / link.receiver_cpu_seconds / mb:,.1f}",
         f"{link.delta_bytes / link.receiver_cpu_seconds / raw.bytes_per_second:.3f}x (raw)",
         ""],
        [ours, "bytes per delta on the wire",
         f"{(link.delta_bytes + link.other_bytes) / link.updates:,.1f} B", "", ""],
        [ours, "  of which Deltas payload", f"{link.delta_bytes / link.updates:,.1f} B", "", ""],
        [ours, "Deltas frames (median size)",
         f"{link.delta_frames:,} ({link.typical_frame():,} B)", "", ""],
        *([[ours, "rounds, each over the raw segment after it",
            f"{len(link.round_shares)}",
            f"{min(link.round_shares):.3f}-{max(link.round_shares):.3f}x", ""]]
          if len(link.round_shares) > 1 else []),
    ]  # fmt: skip


def print_table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        cells = [
            c.rjust(w) if i == 2 else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        print(" | ".join(cells).rstrip())
        if n == 0:
            print("-+-".join("-" * w for w in widths))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="~10x smaller sizes")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results as JSON")
    parser.add_argument("--only", choices=[w.name for w in FULL], help="run one workload")
    parser.add_argument("--echo-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--echo-client", type=int, nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--tuned", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    max_message = Replica("x", 1, wall_clock_ms, fresh_epoch).config.max_message_bytes
    if args.tuned:
        tune_malloc()
    if args.echo_server:
        run_event_loop(serve_echo(args.echo_server, max_message))
        return
    if args.echo_client:
        port, server, frames, size = args.echo_client
        run_echo_client(port, server, frames, size, max_message)
        return
    # The sender runs as `edgesync node` does (the hub is a daemon): with glibc's
    # defaults it took a page fault for most pages of every frame it built.
    tune_malloc()
    tune_gc()
    workloads = tuple(w for w in (QUICK if args.quick else FULL) if args.only in (None, w.name))
    print(
        f"Python {platform.python_version()}, grpcio {grpc.__version__}, {os.cpu_count()} CPUs,"
        f" load average {os.getloadavg()[0]:.2f} at start; workloads: {workloads}"
    )
    started = time.perf_counter()
    runs: list[Run] = []
    with tempfile.TemporaryDirectory() as tmp:
        runs = [run_workload(workload, Path(tmp)) for workload in workloads]
    print_table(table(runs))
    print(
        "\nnotes: (link) times each workload's updates (see the module docstring), each on"
        " its own key, from the redial until the hub has acknowledged the sender's whole"
        " log; the hub acknowledges an interval after the commit holding it. Bytes per"
        " delta counts every message both ways (Hello, Deltas, Ack) over the updates."
        " MB per hub CPU second: the link's bytes over the hub's CPU time, what a hub with"
        " a core to itself would take. Each workload is held to the target that speaks"
        " for it: small deltas to deltas/s, large values to the raw stream's bytes/s"
        " (neither could meet the other's).\n(raw) streams frames of the workload's median"
        " Deltas message size and times until the last echo is back, in client and server"
        " processes of their own, with the allocator policy the daemons and the sender run"
        " (sync/adapters/malloc_policy.py), as the baseline; and with glibc's defaults,"
        " for reference (page faults on most pages it copies).\n"
        f"whole run: {time.perf_counter() - started:.1f} s,"
        f" load average {os.getloadavg()[0]:.2f} at end"
    )
    if args.json:
        payload = {
            w.name: {"workload": asdict(w), "link": asdict(link) | {"frame_sizes": None},
                     "raw": asdict(raw), "raw_glibc_defaults": asdict(plain)}
            for w, link, plain, raw in runs
        } | {"table": table(runs)}  # fmt: skip
        args.json.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
