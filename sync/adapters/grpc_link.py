"""Replication links over gRPC: one bidirectional stream per link.

``GrpcLinks`` carries an ``AsyncReplica``'s links. It serves the ``Replication``
service for peers that dial in, and dials peers itself, reconnecting with
exponential backoff and jitter for as long as it runs. Each stream frame holds
one canonical protocol message (``sync/_messages.py``): the replica does all
protocol work, and this module only moves bytes and reports links coming and
going.

A frame the replica refuses (``ProtocolError``: malformed, oversized, unknown, a
clock far ahead) is logged and dropped; the link stays up and nothing stored
changes. The peer is told why, in a frame with ``refusal`` set and no message, so
the refused side logs it and shows it in status too: a node whose clock runs far
ahead learns it from its hub, instead of only seeing its writes never arrive.
A refusal is never refused back.

Who a peer is comes from its certificate. On a plain-text link (``--insecure``,
loopback only) there is none, so the dialer states its node id and role in the
call's metadata and the side it dials takes that claim: the same rules then
hold as under TLS (an edge may send only its own writes, and a wiped edge gets
its earlier epochs' entries back, which a relay is never sent), where the peer
would otherwise count as a relay. It trusts nothing new: on such a link any
process may say anything in a Hello anyway.

A node may cap the links it accepts (``max_accepted``; a hub's fan-in): one
more is refused with RESOURCE_EXHAUSTED, and its dialer backs off and retries.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from sync._errors import ProtocolError
from sync._policy import EVERYTHING, LinkPolicy
from sync.adapters import frames as wire
from sync.adapters.aio import AsyncReplica
from sync.adapters.gc_policy import applying_large_frame

log = logging.getLogger("edgesync.link")
FRAME_OVERHEAD = 1024
MAX_REFUSAL_CHARS = 500  # of a refusal's reason, sent or taken
REFUSAL_LOG_EVERY_S = 10.0  # a peer refusing frame after frame: one log line per this
Outgoing = asyncio.Queue[bytes | str | None]  # a message; a refusal's reason; the end
Identity = tuple[str, str]  # (node id, role)
CLAIM_ID, CLAIM_ROLE = "edgesync-node-id", "edgesync-role"  # a dialer's claim (plain text)
ROLES = ("edge", "regional", "cloud")


def channel_options(max_message: int) -> list[tuple[str, int]]:
    limit = max_message + FRAME_OVERHEAD
    return [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
        ("grpc.keepalive_time_ms", 10_000),
        ("grpc.keepalive_timeout_ms", 5_000),
    ]


class GrpcLinks:
    def __init__(
        self,
        replica: AsyncReplica,
        *,
        policy_for: Callable[[str, bool], LinkPolicy] = lambda link, accepted: EVERYTHING,
        backoff_ms: tuple[int, int] = (100, 10_000),
        rng: random.Random | None = None,
        authenticate: Callable[[Any], Identity | None] = lambda context: None,
        credentials: grpc.ChannelCredentials | None = None,
        claim: Identity | None = None,
        max_accepted: int | None = None,
    ) -> None:
        """``policy_for(link, accepted)`` gives a link's filters (``accepted``: the
        peer dialed us); ``authenticate(context)`` an incoming peer's (node id, role)
        from its certificate; ``credentials`` secure the links this side dials.
        Without credentials, ``claim`` is this node's identity, stated to the peers it
        dials, and an incoming peer's own claim is taken (module docstring)."""
        self.replica = replica
        self.policy_for = policy_for
        self.authenticate = authenticate
        self.credentials = credentials
        self.claim = claim
        self.max_accepted = max_accepted
        self.accepted: set[str] = set()
        self.turned_away = 0  # links refused at max_accepted
        self.backoff_ms = backoff_ms
        self.rng = rng or random.Random()
        self.outgoing: dict[str, Outgoing] = {}
        self.connected: dict[str, bool] = {}
        # Frames refused per link, and why the last was: status shows a link whose
        # frames are refused (a peer's clock far ahead, a broken peer) without the logs.
        self.refused: dict[str, tuple[int, str]] = {}
        # Frames of ours each peer said it refused, and the reason it gave last.
        self.refused_by_peer: dict[str, tuple[int, str]] = {}
        self._refusal_logged_at: dict[str, float] = {}
        replica.send = self._send

    def _send(self, link: str, data: bytes) -> None:
        queue = self.outgoing.get(link)
        if queue is not None:
            queue.put_nowait(data)

    async def _open(
        self, link: str, certified: str | None, edge: bool, accepted: bool = False
    ) -> Outgoing:
        """A link is up: ``certified`` is the peer's node id where its certificate (or,
        in plain text, its claim) says it; an ``edge`` may send only its own writes."""
        queue: Outgoing = asyncio.Queue()
        self.outgoing[link] = queue
        self.connected[link] = True
        log.info("link up", extra={"link": link, "node": self.replica.replica.node_id})
        policy = self.policy_for(link, accepted)
        await self.replica.connect(link, policy, certified, edge)
        return queue

    def _close(self, link: str) -> None:
        if self.outgoing.pop(link, None) is not None:
            self.replica.disconnect(link)
            self.connected[link] = False
            log.info("link down", extra={"link": link, "node": self.replica.replica.node_id})

    async def _receive(self, link: str, frames: AsyncIterator[bytes]) -> None:
        """Apply each frame as it comes; commits (and the acks after them) follow.

        The next frame is applied while the last one commits: the window of
        intervals in flight bounds how far applying runs ahead of the store.
        """
        async for raw in frames:
            try:
                frame = wire.decode(raw)
            except wire.FrameError as exc:
                self._refuse(link, str(exc))
                continue
            if frame.refusal:
                self._refused_by_peer(link, frame.refusal[:MAX_REFUSAL_CHARS])
                continue
            data = frame.message
            try:
                with applying_large_frame(len(data)):
                    durable = self.replica.deliver_soon(link, data)
            except (ProtocolError, ValueError) as exc:  # refused input: log, keep serving
                self._refuse(link, str(exc))
            else:
                durable.add_done_callback(functools.partial(_commit_failed, link))

    def _refuse(self, link: str, reason: str) -> None:
        """Log a refused frame, count it, and tell the peer why."""
        log.warning("rejected frame", extra={"link": link, "reason": reason})
        _count(self.refused, link, reason)
        queue = self.outgoing.get(link)
        if queue is not None:
            queue.put_nowait(reason[:MAX_REFUSAL_CHARS])

    def _refused_by_peer(self, link: str, reason: str) -> None:
        last = self.refused_by_peer.get(link, (0, ""))[1]
        count = _count(self.refused_by_peer, link, reason)
        now = asyncio.get_running_loop().time()
        if reason != last or now - self._refusal_logged_at.get(link, -1e9) >= REFUSAL_LOG_EVERY_S:
            self._refusal_logged_at[link] = now
            extra = {"link": link, "reason": reason, "refused": count}
            log.warning("peer refused our frame", extra=extra)

    async def _frames(self, queue: Outgoing) -> AsyncIterator[bytes]:
        while (item := await queue.get()) is not None:
            if isinstance(item, str):
                yield wire.encode_refusal(item)
            else:
                yield wire.encode_message(item)

    # ---- serving peers that dial in ------------------------------------------------

    def add_to_server(self, server: grpc.aio.Server) -> None:
        """Serve the ``Replication`` service on ``server``. Its frames pass as bytes,
        encoded and decoded by ``sync.adapters.frames`` (see there for why)."""
        method = grpc.stream_stream_rpc_method_handler(self.Link)
        handler = grpc.method_handlers_generic_handler(wire.SERVICE, {wire.LINK: method})
        server.add_generic_rpc_handlers((handler,))

    async def Link(
        self, request_iterator: AsyncIterator[bytes], context: Any
    ) -> AsyncIterator[bytes]:
        link = f"in:{context.peer()}"
        if self.max_accepted is not None and len(self.accepted) >= self.max_accepted:
            self.turned_away += 1
            log.warning("link refused", extra={"link": link, "reason": "max links"})
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{self.replica.replica.node_id} already holds {len(self.accepted)} links "
                f"from peers that dialed it, its limit (--max-links): dial another",
            )
        peer = self.authenticate(context)
        if peer is None and self.credentials is None:
            peer = claimed_identity(context)
        certified, role = peer if peer is not None else (None, None)
        self.accepted.add(link)
        try:
            queue = await self._open(link, certified, role == "edge", accepted=True)
            reader = asyncio.create_task(self._receive(link, request_iterator))
            reader.add_done_callback(lambda _: queue.put_nowait(None))
            try:
                async for frame in self._frames(queue):
                    yield frame
            finally:
                reader.cancel()
                self._close(link)
        finally:
            self.accepted.discard(link)

    # ---- dialing peers ---------------------------------------------------------------------

    async def dial(
        self, address: str, edge: bool = False, node: str | None = None,
        server_name: str | None = None,
    ) -> None:  # fmt: skip
        """Keep a link to ``address`` up until cancelled, backing off between attempts.

        ``edge``: the node there is an edge (``--peer``), which may send only its own
        writes, as it may when it dials us. ``node``: the node it must be; its Hello
        must say so. ``server_name``: under TLS, the name its certificate must carry,
        checked in the handshake (``edge_node.certs.expected_name``) in place of the
        address, as gRPC's Python client does not show the certificate itself."""
        delay = self.backoff_ms[0]
        while True:
            try:
                await self._run_link(address, edge, node, server_name)
                delay = self.backoff_ms[0]  # it was up: start the backoff afresh
            except (grpc.aio.AioRpcError, TimeoutError) as exc:
                reason = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else "timeout"
                extra = {"link": address, "reason": reason}
                if server_name is not None:  # a refused certificate looks like a timeout
                    extra["certificate_must_name"] = server_name
                log.info("link failed", extra=extra)
            finally:
                self._close(address)
            await asyncio.sleep(self.rng.uniform(0, delay) / 1000)  # full jitter
            delay = min(delay * 2, self.backoff_ms[1])

    async def _run_link(
        self, address: str, edge: bool, node: str | None, server_name: str | None
    ) -> None:
        credentials = self.credentials
        options: list[tuple[str, int | str]] = [
            *channel_options(self.replica.replica.config.max_message_bytes)
        ]
        if credentials is None:
            channel = grpc.aio.insecure_channel(address, options=options)
        else:
            if server_name is not None:
                options.append(("grpc.ssl_target_name_override", server_name))
            channel = grpc.aio.secure_channel(address, credentials, options=options)
        async with channel:
            await asyncio.wait_for(channel.channel_ready(), timeout=5)
            queue = await self._open(address, node, edge)
            metadata = None
            if credentials is None and self.claim is not None:
                metadata = ((CLAIM_ID, self.claim[0]), (CLAIM_ROLE, self.claim[1]))
            call = channel.stream_stream(wire.METHOD)(self._frames(queue), metadata=metadata)
            await self._receive(address, call)


def claimed_identity(context: Any) -> Identity | None:
    """The (node id, role) a plain-text dialer states, if it states a known role."""
    claims = dict(context.invocation_metadata() or ())
    node, role = claims.get(CLAIM_ID), claims.get(CLAIM_ROLE)
    if not isinstance(node, str) or not node or len(node) > 200 or role not in ROLES:
        return None
    return node, role


def _count(refusals: dict[str, tuple[int, str]], link: str, reason: str) -> int:
    """Count one more refusal on ``link``, keeping its reason as the last; the count."""
    count = refusals.get(link, (0, ""))[0] + 1
    refusals[link] = (count, reason)
    return count


def _commit_failed(link: str, durable: asyncio.Future[None]) -> None:
    """The commit holding a frame failed: the replica reloaded, its peer will resend."""
    if not durable.cancelled() and (exc := durable.exception()) is not None:
        log.warning("frame not committed", extra={"link": link, "reason": str(exc)})


async def ticker(replica: AsyncReplica, every_ms: int = 200) -> None:
    """Drive retransmission and flushing until cancelled."""
    while True:
        await asyncio.sleep(every_ms / 1000)
        await replica.tick()
