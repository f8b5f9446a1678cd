"""A daemon's mutual TLS: its credentials from ``--tls-dir``, checked before anything
starts (the certificate names this node in its role, carries the names dialers
check, and is valid now), a daily warning as its end nears, and the identity an
incoming peer's certificate gives. Making certificates is ``edge_node/certs.py``.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from dataclasses import dataclass
from typing import Any

import grpc

from edge_node.certs import CertError, dial_names, identity_of, load_material, names_of, valid_until
from edge_node.config import ConfigError, DaemonConfig

log = logging.getLogger("edgesync.daemon")
EXPIRY_WARNING_DAYS = 30  # a certificate this close to its end is warned of daily


@dataclass(frozen=True)
class Tls:
    server: grpc.ServerCredentials
    channel: grpc.ChannelCredentials
    expires: datetime.datetime  # ours or the CA's certificate's end, the sooner


def tls_credentials(cfg: DaemonConfig) -> Tls | None:
    """Mutual TLS from ``--tls-dir``: every peer and client must hold a certificate of
    our CA, and ours must name this node and its role, and be valid now."""
    if cfg.tls_dir is None:
        return None
    try:
        material = load_material(cfg.tls_dir, cfg.id)
        mine = identity_of(material.cert)
        expires = valid_until(material, cfg.tls_dir, cfg.id)
    except (CertError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    if (mine.node_id, mine.role) != (cfg.id, cfg.role):
        raise ConfigError(
            f"{cfg.id}.pem is for {mine.node_id!r} as {mine.role!r}, not {cfg.id!r} as {cfg.role!r}"
        )
    if not set(dial_names(cfg.id, cfg.role)) <= set(names_of(material.cert)):
        # Peers dialing us check these names in the handshake, and would never link.
        raise ConfigError(
            f"{cfg.id}.pem does not name {' or '.join(dial_names(cfg.id, cfg.role))}, which "
            f"peers dialing this node check (one an earlier edgesync issued): "
            f"issue it again with `edgesync certs issue --dir {cfg.tls_dir} --id {cfg.id} "
            f"--role {cfg.role}`"
        )
    server = grpc.ssl_server_credentials(
        [(material.key, material.cert)], root_certificates=material.ca, require_client_auth=True
    )
    channel = grpc.ssl_channel_credentials(material.ca, material.key, material.cert)
    return Tls(server, channel, expires)


async def warn_before_expiry(node: str, expires: datetime.datetime) -> None:
    """Log a warning each day from ``EXPIRY_WARNING_DAYS`` before the certificate ends:
    after that, every peer refuses this node's handshakes (``certificate_expires`` in
    ``status`` and the metrics tells the same to a monitor)."""
    while True:
        left = expires - datetime.datetime.now(datetime.UTC)
        if left <= datetime.timedelta(days=EXPIRY_WARNING_DAYS):
            log.warning("certificate expires soon", extra={
                "node": node, "expires": f"{expires:%Y-%m-%d %H:%M} UTC",
                "days_left": max(0, left.days)})  # fmt: skip
        await asyncio.sleep(24 * 3600)


def peer_identity(context: Any) -> tuple[str, str] | None:
    """(node id, role) from the certificate an incoming peer presented, if any."""
    pems = context.auth_context().get("x509_pem_cert")
    if not pems:
        return None
    found = identity_of(pems[0])
    return found.node_id, found.role
