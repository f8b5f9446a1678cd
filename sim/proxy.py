"""A TCP proxy in front of one replication link: count its bytes, cut it, restore it.

The demo and the chaos harness put one proxy on every link between real daemons
(the dialer is given the proxy's address instead of its upstream's). Bytes are
counted as they cross, so the totals are what the link really carried, TLS and
HTTP/2 framing included. ``sever()`` is a partition as the daemons see it: every
open connection is reset and new ones are refused until ``restore()``; the
dialer notices, backs off with jitter and redials, as it would after a real cut.
A stall (``Faults(stall=True)``) is the other way a link fails: the proxy stops
relaying but keeps every connection open, so what is sent waits (in the proxy's
hands, then in the kernel's socket buffers as back-pressure builds) and arrives
late, in order, once the stall ends; nothing is reset and nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import random

from sim.wire import Faults

CHUNK = 1 << 16


class LinkProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target``; runs on the caller's event loop."""

    def __init__(self, name: str, target: str, rng: random.Random | None = None) -> None:
        self.name = name
        self.target = target
        self.rng = rng or random.Random(0)
        self.faults = Faults()
        self.bytes_up = 0  # dialer to target
        self.bytes_down = 0  # target to dialer
        self.severed = False
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()  # cleared while the link is stalled
        self._flowing.set()

    def __repr__(self) -> str:
        state = "severed" if self.severed else "up"
        return f"LinkProxy({self.name!r} -> {self.target}, {state}, {self.bytes_sent} B)"

    @property
    def bytes_sent(self) -> int:
        return self.bytes_up + self.bytes_down

    @property
    def address(self) -> str:
        assert self._server is not None, "start() the proxy first"
        port = self._server.sockets[0].getsockname()[1]
        return f"127.0.0.1:{port}"

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self.address

    def sever(self) -> None:
        """Reset every open connection and refuse new ones."""
        self.severed = True
        for writer in list(self._writers):
            _reset(writer)

    def restore(self) -> None:
        self.severed = False
        self.faults = Faults()
        self._flowing.set()

    def retarget(self, address: str) -> None:
        """Forward new connections to ``address`` (the target moved)."""
        self.target = address

    def set_faults(self, faults: Faults) -> None:
        """Cut, stall, delay and jitter apply here; a byte stream cannot lose, duplicate
        or reorder packets, so those need the namespace network's packet switch."""
        if faults.cut:
            self.sever()
        else:
            self.severed = False
        if faults.stall:
            self._flowing.clear()
        else:
            self._flowing.set()
        self.faults = faults

    async def close(self) -> None:
        self.sever()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.severed:
            _reset(writer)
            return
        host, port = self.target.rsplit(":", 1)
        try:
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            _reset(writer)  # the target is down: the dialer sees what it would see directly
            return
        self._writers |= {writer, up_writer}
        pipes = [
            asyncio.create_task(self._pipe(reader, up_writer, upward=True)),
            asyncio.create_task(self._pipe(up_reader, writer, upward=False)),
        ]
        self._pipes.update(pipes)
        # When either direction ends, the connection is over: close both ends.
        await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        for w in (writer, up_writer):
            self._writers.discard(w)
            _reset(w)
        for task in pipes:
            task.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)
        self._pipes.difference_update(pipes)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, upward: bool
    ) -> None:
        try:
            while chunk := await reader.read(CHUNK):
                wait = self.faults.delay_ms + self.rng.random() * self.faults.jitter_ms
                if wait > 0:
                    await asyncio.sleep(wait / 1000)
                await self._flowing.wait()  # a stall holds the chunk, and stops reading more
                if self.severed:
                    return
                writer.write(chunk)
                if upward:
                    self.bytes_up += len(chunk)
                else:
                    self.bytes_down += len(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            return


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close at once, dropping unsent data: what a cut cable looks like to both ends."""
    with contextlib.suppress(OSError, RuntimeError):
        writer.transport.abort()
