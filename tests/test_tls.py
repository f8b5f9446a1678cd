"""Mutual TLS between real daemon processes: certificates decide who may talk."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_daemons import Fleet, cli


class TlsFleet(Fleet):
    def __init__(self, root: Path, tls: Path) -> None:
        super().__init__(root)
        self.tls = tls

    def start(self, name: str, *args: str) -> str:
        import subprocess

        from test_daemons import CLI

        from sim.fleet import free_port

        self.addr.setdefault(name, f"127.0.0.1:{free_port()}")
        cmd = [*CLI, *args, "--id", name, "--data", str(self.root / name),
               "--listen", self.addr[name], "--tls-dir", str(self.tls)]  # fmt: skip
        with (self.root / f"{name}.log").open("a") as log:
            self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=log, text=True)
        return self.addr[name]

    def ask(self, name: str, *args: str, check: bool = True) -> str:
        return cli(args[0], "--at", self.addr[name], "--tls-dir", str(self.tls), *args[1:],
                   check=check).stdout  # fmt: skip

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        for name in self.procs:
            while cli("status", "--at", self.addr[name], "--tls-dir", str(self.tls),
                      check=False).returncode:  # fmt: skip
                assert time.monotonic() < deadline, (self.root / f"{name}.log").read_text()
                time.sleep(0.2)

    def status(self, name: str) -> dict[str, object]:
        parsed: dict[str, object] = json.loads(self.ask(name, "status", "--json"))
        return parsed


@pytest.fixture
def tls_fleet(tmp_path: Path) -> Iterator[TlsFleet]:
    tls = tmp_path / "tls"
    cli("certs", "init", "--dir", str(tls))
    for ident, role in (("cloud", "cloud"), ("e1", "edge"), ("e2", "edge"), ("ops", "client")):
        cli("certs", "issue", "--dir", str(tls), "--id", ident, "--role", role)
    f = TlsFleet(tmp_path, tls)
    yield f
    for name in list(f.procs):
        f.procs[name].kill()
        f.procs.pop(name).wait()


def test_mutual_tls_fleet_converges_and_refuses_strangers(
    tls_fleet: TlsFleet, tmp_path: Path
) -> None:
    from cryptography import x509

    cloud = tls_fleet.start("cloud", "hub", "--role", "cloud")
    tls_fleet.start("e1", "node", "--upstream", cloud)
    tls_fleet.wait_ready()
    tls_fleet.ask("e1", "inc", "fleet/n", "4")
    assert len(tls_fleet.converged()) == 1
    pem = x509.load_pem_x509_certificate((tls_fleet.tls / "e1.pem").read_bytes())
    expires = tls_fleet.status("e1")["certificate_expires"]
    assert expires == int(pem.not_valid_after_utc.timestamp())  # before the CA's end
    assert "certificate valid until" in tls_fleet.ask("e1", "status")
    assert json.loads(tls_fleet.ask("cloud", "get", "--json", "fleet/n"))["values"] == {
        "PNCounter": 4
    }
    # No certificate at all: plain text against a TLS port fails.
    assert cli("get", "--at", cloud, "--insecure", "fleet/n", check=False).returncode == 1
    # A certificate from another CA is refused.
    other = tmp_path / "other"
    cli("certs", "init", "--dir", str(other))
    cli("certs", "issue", "--dir", str(other), "--id", "ops", "--role", "client")
    assert (
        cli("get", "--at", cloud, "--tls-dir", str(other), "fleet/n", check=False).returncode == 1
    )


def test_a_peer_claiming_another_id_is_not_listened_to(tls_fleet: TlsFleet) -> None:
    cloud = tls_fleet.start("cloud", "hub", "--role", "cloud")
    # e2 runs with e1's certificate under its own name: its Hello says e2, its cert e1.
    for ext in ("pem", "key"):
        shutil.copy(tls_fleet.tls / f"e1.{ext}", tls_fleet.tls / f"impostor.{ext}")
    tls = str(tls_fleet.tls)
    data = str(tls_fleet.root / "x")
    refused = cli("node", "--id", "impostor", "--data", data, "--listen", "127.0.0.1:1",
                  "--tls-dir", tls, check=False)  # fmt: skip
    assert refused.returncode == 1 and "is for 'e1'" in refused.stderr  # its own check
    assert not Path(data).exists()  # refused before its store was made (or claimed)
    tls_fleet.wait_ready()
    assert json.loads(tls_fleet.ask("cloud", "keys", "--json"))["keys"] == []
    assert cloud


def test_hub_ignores_a_peer_whose_hello_contradicts_its_certificate(
    tls_fleet: TlsFleet,
) -> None:
    import asyncio
    import itertools

    import grpc

    from sync import GCounter
    from sync.adapters.aio import AsyncReplica
    from sync.adapters.grpc_link import GrpcLinks
    from sync.adapters.lmdb_storage import LMDBStorage

    cloud = tls_fleet.start("cloud", "hub", "--role", "cloud")
    tls_fleet.wait_ready()
    tls = tls_fleet.tls
    creds = grpc.ssl_channel_credentials(
        (tls / "ca.pem").read_bytes(), (tls / "e1.key").read_bytes(), (tls / "e1.pem").read_bytes()
    )

    async def impostor() -> None:
        clock = itertools.count(1_700_000_000_000).__next__
        r = AsyncReplica(
            LMDBStorage(tls_fleet.root / "imp"), "e2", clock=clock, new_epoch=lambda: 5
        )
        links = GrpcLinks(r, credentials=creds)
        await r.update("stolen", GCounter, lambda c, actor: c.increment(actor, 1))
        task = asyncio.create_task(links.dial(cloud))
        log = tls_fleet.root / "cloud.log"
        for _ in range(200):  # until the hub has heard (and refused) the Hello
            if "is 'e1' by its certificate" in log.read_text():
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # time for anything it wrongly accepted to land
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await r.close()

    asyncio.run(impostor())
    keys = json.loads(tls_fleet.ask("cloud", "keys", "--json"))["keys"]
    assert (
        keys == []
    )  # the hub heard "I am e2" from a certificate for e1, and listened to none of it
    assert "is 'e1' by its certificate" in (tls_fleet.root / "cloud.log").read_text()


def test_a_certificate_names_the_hosts_peers_dial(tmp_path: Path) -> None:
    from cryptography import x509

    from edge_node.certs import init_ca, issue

    init_ca(tmp_path)
    pem = issue(tmp_path, "e9", "edge", ["10.7.0.2", "e9.factory.example"]).read_bytes()
    names = x509.load_pem_x509_certificate(pem).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    ips = {str(ip) for ip in names.value.get_values_for_type(x509.IPAddress)}
    assert {"127.0.0.1", "10.7.0.2"} <= ips
    assert "e9.factory.example" in names.value.get_values_for_type(x509.DNSName)


def test_a_certificate_names_its_node_and_role_for_dialers(tmp_path: Path) -> None:
    from edge_node.certs import CertError, expected_name, init_ca, issue, names_of

    init_ca(tmp_path)
    names = names_of(issue(tmp_path, "r1", "regional").read_bytes())
    assert expected_name("r1", edge=False) in names  # --upstream r1@HOST:PORT
    assert expected_name(None, edge=False) in names  # --upstream HOST:PORT: any hub
    assert expected_name(None, edge=True) not in names  # a hub is no --peer
    edge = names_of(issue(tmp_path, "e1", "edge").read_bytes())
    assert expected_name(None, edge=True) in edge and expected_name(None, edge=False) not in edge
    with pytest.raises(CertError, match="edgesync's own"):
        issue(tmp_path, "e2", "edge", ["hub.role.edgesync.invalid"])  # no role by --host


def test_dial_targets_may_name_the_node() -> None:
    from edge_node.config import ConfigError, dial_target

    assert dial_target("10.0.0.7:7402") == (None, "10.0.0.7:7402")
    assert dial_target("e2@[::1]:7402") == ("e2", "[::1]:7402")
    for bad in ("@127.0.0.1:7402", "e2@127.0.0.1", "e2@"):
        with pytest.raises(ConfigError, match=r"\[ID@\]HOST:PORT"):
            dial_target(bad, "--peer")


def _link_up_or_refused(log: Path, refused: str, timeout: float = 60) -> None:
    """Wait until the daemon logging to ``log`` takes its link, or logs ``refused``."""
    deadline = time.monotonic() + timeout
    while not any(t in (log.read_text() if log.exists() else "") for t in ("link up", refused)):
        assert time.monotonic() < deadline, f"neither link up nor {refused!r} in {log}"
        time.sleep(0.1)


def test_an_edge_takes_no_upstream_without_a_hub_certificate(tls_fleet: TlsFleet) -> None:
    """Someone holding an edge certificate answers at an edge's upstream address and
    says it is the cloud: the edge would take its forged writes as a hub's relayed
    ones. The handshake refuses it: the certificate does not name a hub."""
    import asyncio
    import itertools

    import grpc

    from sim.fleet import free_port
    from sync import GCounter
    from sync.adapters.aio import AsyncReplica
    from sync.adapters.grpc_link import GrpcLinks
    from sync.adapters.lmdb_storage import LMDBStorage

    tls = tls_fleet.tls
    address = f"127.0.0.1:{free_port()}"
    e2_log = tls_fleet.root / "e2.log"

    async def impostor() -> None:
        clock = itertools.count(1_700_000_000_000).__next__
        r = AsyncReplica(LMDBStorage(tls_fleet.root / "imp"), "cloud", clock=clock,
                         new_epoch=lambda: 5)  # fmt: skip
        await r.update("forged", GCounter, lambda c, actor: c.increment(actor, 1))
        server = grpc.aio.server()
        creds = grpc.ssl_server_credentials(
            [((tls / "e1.key").read_bytes(), (tls / "e1.pem").read_bytes())],
            root_certificates=(tls / "ca.pem").read_bytes(), require_client_auth=True,
        )  # fmt: skip
        GrpcLinks(r).add_to_server(server)
        server.add_secure_port(address, creds)
        await server.start()
        tls_fleet.start("e2", "node", "--upstream", address)
        await asyncio.to_thread(_link_up_or_refused, e2_log, "hub.role.edgesync.invalid")
        await asyncio.sleep(1)  # time for anything it wrongly took to land
        await server.stop(None)
        await r.close()

    asyncio.run(impostor())
    tls_fleet.wait_ready()
    assert json.loads(tls_fleet.ask("e2", "keys", "--json"))["keys"] == []
    assert "link up" not in e2_log.read_text()


def test_a_peer_named_in_its_address_must_hold_that_nodes_certificate(
    tls_fleet: TlsFleet,
) -> None:
    e1 = tls_fleet.start("e1", "node")
    tls_fleet.start("e2", "node", "--peer", f"e1@{e1}")
    tls_fleet.wait_ready()
    tls_fleet.ask("e1", "inc", "peered/n", "2")
    assert len(tls_fleet.converged()) == 1  # e1's certificate names e1: linked
    e2 = tls_fleet.procs.pop("e2")
    e2.kill()
    e2.wait()
    # The same address, named as another node: the handshake refuses e1's certificate.
    tls_fleet.start("e2", "node", "--peer", f"cloud@{e1}")
    _link_up_or_refused(tls_fleet.root / "e2.log", "cloud.node.edgesync.invalid")
    tls_fleet.ask("e1", "inc", "peered/n", "3")
    time.sleep(1)
    got = json.loads(tls_fleet.ask("e2", "get", "--json", "peered/n"))["values"]
    assert got == {"PNCounter": 2}  # what it had; nothing since


def test_a_node_with_a_certificate_dialers_cannot_check_refuses_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge_node import certs

    tls = tmp_path / "tls"
    certs.init_ca(tls)
    monkeypatch.setattr(certs, "dial_names", lambda node_id, role: ())  # an older issue
    certs.issue(tls, "old", "edge")
    refused = cli("node", "--id", "old", "--data", str(tmp_path / "old"), "--listen",
                  "127.0.0.1:1", "--tls-dir", str(tls), check=False)  # fmt: skip
    assert refused.returncode == 1
    assert "old.node.edgesync.invalid" in refused.stderr and "certs issue" in refused.stderr
    assert not (tmp_path / "old").exists()


def test_an_expired_certificate_is_refused_at_start_and_one_near_its_end_warned_of(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datetime
    import subprocess
    import types

    from test_daemons import CLI

    from edge_node import certs
    from sim.fleet import free_port

    tls = tmp_path / "tls"
    certs.init_ca(tls)

    class LongAgo(datetime.datetime):
        @classmethod
        def now(cls, tz: datetime.tzinfo | None = None) -> LongAgo:
            return cls.fromtimestamp(time.time() - 900 * 86400, tz)

    with monkeypatch.context() as patch:  # issued 900 days ago, valid for 825
        patch.setattr(certs, "datetime", types.SimpleNamespace(
            datetime=LongAgo, UTC=datetime.UTC, timedelta=datetime.timedelta))  # fmt: skip
        certs.issue(tls, "old", "edge")
    refused = cli("node", "--id", "old", "--data", str(tmp_path / "old"), "--listen",
                  "127.0.0.1:1", "--tls-dir", str(tls), check=False)  # fmt: skip
    assert refused.returncode == 1 and "old.pem expired on" in refused.stderr
    assert "edgesync certs issue" in refused.stderr and not (tmp_path / "old").exists()
    certs.issue(tls, "soon", "edge", days=3)
    cmd = [*CLI, "node", "--id", "soon", "--data", str(tmp_path / "soon"),
           "--listen", f"127.0.0.1:{free_port()}", "--tls-dir", str(tls)]  # fmt: skip
    log = tmp_path / "soon.log"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 60
        while "certificate expires soon" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert "days_left=2" in log.read_text()  # 3 days less the moments since
    finally:
        proc.terminate()
        assert proc.wait(timeout=20) == 0
