"""The hub roles (cloud_hub/hub.py): fan-in, what flows up and down, and who a
plain-text peer is. Real daemons on loopback where a link is involved."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from pathlib import Path

import pytest
from test_daemons import Fleet, cli

from cloud_hub.hub import HubRole
from edge_node.config import ConfigError, DaemonConfig
from edge_node.daemon import check_config
from edge_node.edge import EDGE
from sim.fleet import free_port
from sync import GCounter
from sync._policy import LinkPolicy
from sync.adapters.aio import AsyncReplica
from sync.adapters.lmdb_storage import LMDBStorage


def config(role: str, **keys: object) -> DaemonConfig:
    return DaemonConfig(id="x", data=Path("/nonexistent"), listen="127.0.0.1:1",
                        role=role, insecure=True, **keys)  # type: ignore[arg-type]  # fmt: skip


def test_a_hub_relays_and_an_edge_does_not() -> None:
    assert HubRole("regional").replica_config().relay
    assert not EDGE.replica_config().relay
    assert EDGE.replica_config().batch_bytes > HubRole("cloud").replica_config().batch_bytes
    with pytest.raises(ValueError, match="regional or cloud"):
        HubRole("edge")


def test_links_from_below_take_the_down_filters_and_upstream_links_the_others() -> None:
    hub = HubRole("regional")
    cfg = config("regional", push=["fleet/"], down_push=["config/"], down_pull=["telemetry/"])
    assert hub.link_policy(cfg, accepted=True) == LinkPolicy(("config/",), ("telemetry/",))
    assert hub.link_policy(cfg, accepted=False) == LinkPolicy(("fleet/",), ("",))
    plain = config("regional", pull=["a/"])
    assert hub.link_policy(plain, accepted=True) == hub.link_policy(plain, accepted=False)


@pytest.mark.parametrize(
    ("role", "keys", "refusal"),
    [
        (HubRole("cloud"), {"peer": ["127.0.0.1:9"]}, "peer: an edge node's keys"),
        (HubRole("regional"), {"sensors": ["pump"]}, "sensors: an edge node's keys"),
        (EDGE, {"down_push": ["config/"]}, "down-push: a hub's keys"),
        (EDGE, {"max_links": 0}, "--max-links must be a whole number"),
        (HubRole("cloud"), {"role": "regional"}, "runs as 'cloud', but its config says"),
    ],
)
def test_a_key_the_role_has_no_use_for_is_refused(
    role: HubRole, keys: dict[str, object], refusal: str
) -> None:
    keys = dict(keys)
    cfg = config(str(keys.pop("role", role.name)), **keys)
    with pytest.raises(ConfigError, match=refusal):
        check_config(cfg, role)


def test_the_cli_refuses_a_hub_key_on_a_node(tmp_path: Path) -> None:
    done = cli("node", "--id", "e", "--data", str(tmp_path / "e"), "--listen", "127.0.0.1:1",
               "--insecure", "--max-links", "0", check=False)  # fmt: skip
    assert done.returncode == 2 and "--max-links" in done.stderr
    toml = tmp_path / "hub.toml"
    toml.write_text('sensors = ["pump"]\n')
    done = cli("hub", "--role", "cloud", "--id", "c", "--data", str(tmp_path / "c"),
               "--listen", "127.0.0.1:1", "--insecure", "--config", str(toml),
               check=False)  # fmt: skip
    assert done.returncode == 2 and "a hub runs no sensors" in done.stderr


def keys_at(fleet: Fleet, name: str) -> set[str]:
    out = cli("keys", "--at", fleet.addr[name], "--insecure", "--json").stdout
    return {k["key"] for k in json.loads(out)["keys"]}


def wait_for(check: object, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_a_hub_at_its_fan_in_refuses_one_more_link_and_takes_it_when_one_leaves(
    fleet: Fleet,
) -> None:
    hub = fleet.start("hub", "hub", "--role", "regional", "--max-links", "1")
    fleet.start("e1", "node", "--upstream", hub)
    fleet.wait_ready()
    cli("inc", "--at", fleet.addr["e1"], "--insecure", "from/e1")
    wait_for(lambda: "from/e1" in keys_at(fleet, "hub"), "e1's write never reached the hub")
    fleet.start("e2", "node", "--upstream", hub, "--reconnect-max-ms", "500")
    fleet.wait_ready()
    cli("inc", "--at", fleet.addr["e2"], "--insecure", "from/e2")  # acknowledged offline
    hub_log, e2_log = fleet.root / "hub.log", fleet.root / "e2.log"
    wait_for(lambda: "link refused" in hub_log.read_text(), "the hub took a second link")
    assert "RESOURCE_EXHAUSTED" in e2_log.read_text()
    assert "from/e2" not in keys_at(fleet, "hub")
    assert fleet.stop("e1") == 0  # a place frees up: e2's redial gets in
    wait_for(lambda: "from/e2" in keys_at(fleet, "hub"), "e2 never got its link")


def test_a_regional_hub_sends_its_edges_only_the_prefixes_it_pushes_down(fleet: Fleet) -> None:
    cloud = fleet.start("cloud", "hub", "--role", "cloud")
    region = fleet.start("r1", "hub", "--role", "regional", "--upstream", cloud,
                         "--down-push", "config/")  # fmt: skip
    for edge in ("e1", "e2"):
        fleet.start(edge, "node", "--upstream", region)
    fleet.wait_ready()
    cli("put", "--at", cloud, "--insecure", "config/mode", "auto")
    cli("inc", "--at", fleet.addr["e1"], "--insecure", "telemetry/e1")
    wait_for(lambda: "telemetry/e1" in keys_at(fleet, "cloud"), "e1's write never went up")
    wait_for(lambda: "config/mode" in keys_at(fleet, "e2"), "config never came down")
    assert keys_at(fleet, "e2") == {"config/mode"}  # not e1's telemetry
    assert keys_at(fleet, "r1") == keys_at(fleet, "cloud") == {"config/mode", "telemetry/e1"}


async def forging_replica(root: Path, name: str) -> AsyncReplica:
    """A replica (epoch 5) holding a write of its own and one it claims for e7@9."""
    clock = itertools.count(1_700_000_000_000).__next__
    r = AsyncReplica(LMDBStorage(root / name), name, clock=clock, new_epoch=lambda: 5)
    await r.update("mine", GCounter, lambda c, actor: c.increment(actor, 1))
    await r.update("forged", GCounter, lambda c, actor: c.increment("e7@9", 1))
    return r


def test_a_plain_text_peer_that_says_it_is_an_edge_may_send_only_its_own_writes(
    fleet: Fleet,
) -> None:
    from sync.adapters.grpc_link import GrpcLinks

    cloud = fleet.start("cloud", "hub", "--role", "cloud")
    fleet.wait_ready()
    log = fleet.root / "cloud.log"

    async def edge_relaying_another_nodes_write() -> None:
        r = await forging_replica(fleet.root, "x1")
        links = GrpcLinks(r, claim=("x1", "edge"))
        task = asyncio.create_task(links.dial(cloud))
        for _ in range(300):  # until the hub has refused the forged write
            if "may send only its own updates" in log.read_text():
                break
            await asyncio.sleep(0.1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await r.close()

    asyncio.run(edge_relaying_another_nodes_write())
    assert "x1@0000000000000005 may send only its own updates" in log.read_text()
    assert "forged" not in keys_at(fleet, "cloud")


def test_an_edge_takes_only_its_peers_own_writes_on_a_link_it_dialed(fleet: Fleet) -> None:
    import grpc

    from sync.adapters.grpc_link import GrpcLinks

    fake = f"127.0.0.1:{free_port()}"
    log = fleet.root / "e1.log"

    async def peer_relaying_another_nodes_write() -> None:
        r = await forging_replica(fleet.root, "x2")
        server = grpc.aio.server()
        GrpcLinks(r).add_to_server(server)
        server.add_insecure_port(fake)
        await server.start()
        fleet.start("e1", "node", "--peer", fake)  # e1 dials the peer edge
        for _ in range(300):
            if log.exists() and "may send only its own updates" in log.read_text():
                break
            await asyncio.sleep(0.1)
        await server.stop(grace=None)
        await r.close()

    asyncio.run(peer_relaying_another_nodes_write())
    assert "x2@0000000000000005 may send only its own updates" in log.read_text()
    fleet.wait_ready()
    assert "forged" not in keys_at(fleet, "e1")


def test_a_peer_dialed_by_id_in_plain_text_must_say_that_id(fleet: Fleet) -> None:
    """``--peer ID@HOST:PORT`` under ``--insecure``: no certificate to check, but the
    Hello must name ID, or nothing it sends is taken."""
    e1 = fleet.start("e1", "node")
    fleet.wait_ready()
    cli("inc", "--at", e1, "--insecure", "peered/n", "2")
    fleet.start("e2", "node", "--peer", f"x9@{e1}")
    log = fleet.root / "e2.log"
    wait_for(lambda: log.exists() and "its Hello says it is 'e1'" in log.read_text(),
             "the Hello refused")  # fmt: skip
    assert "is 'x9' by its certificate (or the id it was dialed as)" in log.read_text()
    fleet.wait_ready()
    assert "peered/n" not in keys_at(fleet, "e2")
