"""Certificates for mutual TLS: a fleet CA, and one certificate per node or client.

``edgesync certs init --dir D`` makes the CA (``ca.pem``, ``ca.key``).
``edgesync certs issue --dir D --id ID --role ROLE`` makes ``ID.pem`` and ``ID.key``,
signed by it. A certificate's common name is the node's id and its organizational
unit is the role (edge, regional, cloud, client): a peer's identity and role come
from the certificate it presents, never from a message. Keys are ECDSA P-256,
written readable by their owner only.

The side that dials cannot read the certificate it is shown (gRPC's Python client
does not expose it), so a certificate also carries its node and role as names
(``dial_names``), and a dialer asks gRPC's handshake to check the one it expects
(``expected_name``, given as ``grpc.ssl_target_name_override``): an upstream
must hold a hub's certificate, and ``--peer ID@HOST:PORT`` the certificate of
node ID. Without that, anyone holding an edge certificate of the fleet who could
answer at an upstream's address would be taken for a hub, which relays others'
writes. The names end in ``.edgesync.invalid`` (``.invalid`` is reserved, RFC
2606): never a real host, and ``--host`` may not take them.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROLES = ("edge", "regional", "cloud", "client")
HUB_ROLES = ("regional", "cloud")
NAME_SUFFIX = ".edgesync.invalid"
VALID_DAYS = 825


class CertError(ValueError):
    """Certificate material is missing, unreadable or not what was asked for."""


@dataclass(frozen=True)
class Identity:
    node_id: str
    role: str


def _name(common: str, unit: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgesync"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
        x509.NameAttribute(NameOID.COMMON_NAME, common),
    ])  # fmt: skip


def node_name(node_id: str) -> str:
    """The name a certificate of ``node_id`` carries for dialers who expect that node."""
    return f"{node_id}.node{NAME_SUFFIX}"


def role_name(role: str) -> str:
    """The name a certificate carries for dialers who expect its role; regional and
    cloud hubs share one, as an upstream may be either."""
    return f"{'hub' if role in HUB_ROLES else role}.role{NAME_SUFFIX}"


def dial_names(node_id: str, role: str) -> tuple[str, str]:
    return node_name(node_id), role_name(role)


def expected_name(node_id: str | None, edge: bool) -> str:
    """What a dialer requires the certificate it is shown to name: node ``node_id``
    when the address came with it, else an edge (a ``--peer``) or a hub."""
    if node_id is not None:
        return node_name(node_id)
    return role_name("edge" if edge else "regional")


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def init_ca(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / "ca.pem").exists():
        raise CertError(f"{directory} already holds a CA; remove it first to start over")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    name = _name("edgesync fleet CA", "ca")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    _write_private(directory / "ca.key", _key_pem(key))
    (directory / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return directory / "ca.pem"


def issue(
    directory: Path, node_id: str, role: str, hosts: Sequence[str] = (), days: int = VALID_DAYS
) -> Path:
    """A certificate for ``node_id`` as ``role``, valid for the node id, its
    ``dial_names``, loopback and ``hosts`` (the addresses or DNS names clients dial
    it at), for ``days`` from now."""
    if role not in ROLES:
        raise CertError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    for host in hosts:
        if host.lower().endswith(NAME_SUFFIX):
            raise CertError(f"--host {host!r}: names ending in {NAME_SUFFIX} are edgesync's own")
    try:
        ca_key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), None)
        ca = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
    except (OSError, ValueError) as exc:
        raise CertError(f"no usable CA in {directory} (run `edgesync certs init`): {exc}") from None
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    names: list[x509.GeneralName] = [
        x509.DNSName(node_id),
        *(x509.DNSName(name) for name in dial_names(node_id, role)),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
        *(_general_name(h) for h in hosts),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(node_id, role))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(directory / f"{node_id}.key", _key_pem(key))
    path = directory / f"{node_id}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def names_of(pem: bytes) -> list[str]:
    """The DNS names a certificate is valid for."""
    cert = x509.load_pem_x509_certificate(pem)
    try:
        alternative = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(alternative.value.get_values_for_type(x509.DNSName))


def valid_until(material: TlsMaterial, directory: Path, node_id: str) -> datetime.datetime:
    """When the node's certificate, or the CA's if that ends sooner, stops being valid:
    raises ``CertError`` if either is not valid now (expired, or not yet: a clock off)."""
    now = datetime.datetime.now(datetime.UTC)
    ends = []
    for pem, name, remedy in (
        (material.ca, "the fleet's CA (ca.pem)",
         "make a new CA with `edgesync certs init` and issue every certificate again"),
        (material.cert, f"{node_id}.pem",
         f"issue a new one with `edgesync certs issue --dir {directory} --id {node_id} ...`"),
    ):  # fmt: skip
        cert = x509.load_pem_x509_certificate(pem)
        if now > cert.not_valid_after_utc:
            ended = f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
            raise CertError(f"{name} expired on {ended}: {remedy}")
        if now < cert.not_valid_before_utc:
            raise CertError(
                f"{name} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC, "
                f"and this machine's clock says {now:%Y-%m-%d %H:%M} UTC: is the clock right?"
            )
        ends.append(cert.not_valid_after_utc)
    return min(ends)


def identity_of(pem: bytes) -> Identity:
    """The node id and role a certificate names."""
    cert = x509.load_pem_x509_certificate(pem)
    common = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    unit = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    if not common or not unit:
        raise CertError("certificate names no node id or role")
    return Identity(str(common[0].value), str(unit[0].value))


@dataclass(frozen=True)
class TlsMaterial:
    ca: bytes
    cert: bytes
    key: bytes


def material_files(directory: Path, node_id: str) -> tuple[Path, Path, Path]:
    """The CA certificate, ``node_id``'s certificate and its key, in ``directory``."""
    return directory / "ca.pem", directory / f"{node_id}.pem", directory / f"{node_id}.key"


def load_material(directory: Path, node_id: str) -> TlsMaterial:
    try:
        return TlsMaterial(*(path.read_bytes() for path in material_files(directory, node_id)))
    except OSError as exc:
        raise CertError(
            f"{directory} lacks ca.pem, {node_id}.pem or {node_id}.key "
            f"(run `edgesync certs issue --dir {directory} --id {node_id} --role ...`): {exc}"
        ) from None


def client_id(directory: Path) -> str:
    """The id of the one client certificate in ``directory``."""
    for pem in sorted(directory.glob("*.pem")):
        if pem.name != "ca.pem" and identity_of(pem.read_bytes()).role == "client":
            return pem.stem
    raise CertError(f"no client certificate in {directory} (issue one with --role client)")
