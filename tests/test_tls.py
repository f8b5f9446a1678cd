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
    cloud = tls_fleet.start("cloud", "hub", "--role", "cloud")
    tls_fleet.start("e1", "node", "--upstream", cloud)
    tls_fleet.wait_ready()
    tls_fleet.ask("e1", "inc", "fleet/n", "4")
    assert len(tls_fleet.converged()) == 1
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
            if "certificate is for 'e1'" in log.read_text():
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
    assert "certificate is for 'e1'" in (tls_fleet.root / "cloud.log").read_text()


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
