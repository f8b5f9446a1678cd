"""Replicas linked over real gRPC streams on loopback sockets."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc

from sync import AWSet, LWWRegister, PNCounter
from sync.adapters import frames
from sync.adapters.aio import AsyncReplica
from sync.adapters.grpc_link import GrpcLinks, channel_options, ticker
from sync.adapters.lmdb_storage import LMDBStorage
from sync.adapters.pb import replication_pb2, replication_pb2_grpc

CLOCK = itertools.count(1_700_000_000_000, 7).__next__


def tagger(tag: str) -> Callable[[AWSet, str], AWSet]:
    return lambda s, actor: s.add(actor, tag)


def replica(path: Path, name: str, seed: int, clock: Callable[[], int] = CLOCK) -> AsyncReplica:
    rng = random.Random(seed)
    return AsyncReplica(LMDBStorage(path), name, clock=clock, new_epoch=lambda: rng.getrandbits(64))


async def serve(links: GrpcLinks) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server(
        options=channel_options(links.replica.replica.config.max_message_bytes)
    )
    links.add_to_server(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


async def shut_down(
    tasks: list[asyncio.Task[None]], server: grpc.aio.Server, *replicas: AsyncReplica
) -> None:
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await server.stop(grace=None)
    for r in replicas:
        await r.close()


async def until(check: object, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out waiting for convergence")
        await asyncio.sleep(0.05)


def test_two_replicas_converge_over_grpc_and_survive_garbage(tmp_path: Path) -> None:
    async def main() -> None:
        a, b = replica(tmp_path / "a", "a", 1), replica(tmp_path / "b", "b", 2)
        links_a, links_b = GrpcLinks(a), GrpcLinks(b)
        server, address = await serve(links_b)
        tasks = [asyncio.create_task(t) for t in (links_a.dial(address), ticker(a), ticker(b))]
        try:
            for i in range(50):
                await a.update("hits", PNCounter, lambda c, actor: c.increment(actor, 1))
                await b.update("tags", AWSet, tagger(f"t{i}"))

            def same() -> bool:
                return a.replica.keyspace.digest() == b.replica.keyspace.digest()

            await until(same)
            # Garbage on a fresh stream: refused frame by frame, b keeps serving.
            async with grpc.aio.insecure_channel(address) as channel:
                stub = replication_pb2_grpc.ReplicationStub(channel)  # type: ignore[no-untyped-call]

                async def junk() -> AsyncIterator[replication_pb2.Frame]:
                    for blob in (b"\xff\x00", b"", b"\x01\x02garbage"):
                        yield replication_pb2.Frame(message=blob)

                call = stub.Link(junk())
                refusals = [frame.refusal async for frame in call if frame.refusal]
                # Bytes that are no Frame at all: refused the same way, not a broken stream.
                raw_call = channel.stream_stream(frames.METHOD)(iter([b"\xff\xff", b"\x0a\x09x"]))
                replies = [frames.decode(raw) async for raw in raw_call]
                raw_refusals = [frame.refusal for frame in replies if frame.refusal]
            assert len(refusals) == 3 and all(refusals)  # each one told why
            assert len(raw_refusals) == 2
            assert all("not a replication frame" in reason for reason in raw_refusals)
            await a.update("hits", PNCounter, lambda c, actor: c.increment(actor, 5))
            await until(same)
            counter = b.replica.get("hits", PNCounter)
            assert counter is not None and counter.value() == 55
        finally:
            await shut_down(tasks, server, a, b)

    asyncio.run(main())


def test_a_node_whose_frames_are_refused_is_told_why(tmp_path: Path) -> None:
    async def main() -> None:
        ahead = replica(tmp_path / "a", "a", 1, clock=lambda: CLOCK() + 3_600_000)  # 1 h fast
        b = replica(tmp_path / "b", "b", 2)
        links_a, links_b = GrpcLinks(ahead), GrpcLinks(b)
        server, address = await serve(links_b)
        tasks = [asyncio.create_task(t) for t in (links_a.dial(address), ticker(ahead))]
        try:
            stamp = ahead.replica.hlc.now()
            await ahead.update("cfg", LWWRegister, lambda g, actor: g.set(actor, "x", stamp))
            await until(lambda: links_a.refused_by_peer)
            [(count, reason)] = links_a.refused_by_peer.values()
            assert count >= 1 and "ahead of the local clock" in reason
            assert links_b.refused and b.replica.get("cfg", LWWRegister) is None
        finally:
            await shut_down(tasks, server, ahead, b)

    asyncio.run(main())
