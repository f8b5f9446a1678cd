"""How much of taking a frame in gRPC's Python layer does on the receiver's event loop.

Run ``python bench/loop_share.py``. A client streams ``--frames`` frames of
``--size`` bytes (a relay's ~985 KB frames by default) over a grpc.aio stream on
loopback to a server in a child process, which spends ``--work`` ms of CPU on its
event loop per frame (a stand-in for a hub applying the frame) and answers each with
one byte (a stand-in for its ack). Timed until the last answer is home, with no
work (the stream alone) and with ``--work`` ms a frame. Were taking a frame in done
beside the server's work, the second would take max(work, stream) a frame; the
excess over the work is what the server's loop spends per frame on gRPC's part.
Both processes run as the daemons do (uvloop where installed, the daemons'
allocator policy); no code of the project's runs but their settings.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from edge_node.daemon import run_event_loop
from sim.fleet import free_port
from sync.adapters.frames import LINK, METHOD, SERVICE
from sync.adapters.grpc_link import channel_options
from sync.adapters.malloc_policy import tune_malloc

OPTIONS = channel_options(8 * 1024 * 1024)


def spend(seconds: float) -> None:
    """Hold the CPU (and the GIL) for ``seconds``, as applying a frame does."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def serve(port: int, work_ms: float) -> None:
    async def link(frames: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        async for _ in frames:
            spend(work_ms / 1000)
            yield b"."

    server = grpc.aio.server(options=OPTIONS)
    handler = grpc.stream_stream_rpc_method_handler(link)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {LINK: handler}),)
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


async def stream(port: int, frames: int, size: int) -> float:
    """Seconds to send ``frames`` frames and have every answer back."""
    payload = os.urandom(size)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=OPTIONS) as channel:
        await asyncio.wait_for(channel.channel_ready(), timeout=10)

        async def outgoing() -> AsyncIterator[bytes]:
            for _ in range(frames):
                yield payload

        began, answered = time.perf_counter(), 0
        async for _ in channel.stream_stream(METHOD)(outgoing()):
            answered += 1
            if answered == frames:
                break
        return time.perf_counter() - began


def measure(port: int, work_ms: float, frames: int, size: int) -> float:
    """Milliseconds a frame, after a warm-up of a tenth as many frames."""
    server = [sys.executable, __file__, "--serve", str(port), str(work_ms)]
    with subprocess.Popen(server, stdout=subprocess.PIPE) as child:
        try:
            assert child.stdout is not None and child.stdout.readline()
            run_event_loop(stream(port, max(10, frames // 10), size))
            return run_event_loop(stream(port, frames, size)) * 1000 / frames
        finally:
            child.terminate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--size", type=int, default=984_817)
    parser.add_argument("--work", type=float, default=1.1, help="server ms per frame")
    parser.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    tune_malloc()
    if args.serve:
        port, work_ms = args.serve
        run_event_loop(serve(int(port), float(work_ms)))
        return
    print(f"{args.frames} frames of {args.size:,} B, load average {os.getloadavg()[0]:.2f}")
    alone = measure(free_port(), 0.0, args.frames, args.size)
    working = measure(free_port(), args.work, args.frames, args.size)
    for name, ms in (("stream alone", alone), (f"{args.work} ms work a frame", working)):
        print(f"{name:24} {ms:6.2f} ms a frame  {args.size / ms / 1000:7.1f} MB/s")
    share = working - args.work
    print(
        f"the receiver's loop per frame besides the work: {share:.2f} ms"
        f" ({share / alone:.2f}x the stream alone's whole frame time)"
    )


if __name__ == "__main__":
    main()
