"""Crash durability and amnesia, with real processes and real LMDB directories."""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sync import AWSet, LWWRegister, PNCounter
from sync._memnet import MemoryNetwork
from sync._messages import Deltas, decode_message
from sync._replica import ReplicaConfig
from sync.adapters.embedded import open_replica
from sync.adapters.lmdb_storage import LMDBStorage

WRITER = Path(__file__).with_name("crash_writer.py")
TOTAL = 10_000
KILL_POINTS = [37, 611, 2_500, 5_003, 8_999]  # acknowledgements seen before SIGKILL


def run_until_killed(directory: Path, kill_after: int) -> set[int]:
    """Start the writer, SIGKILL it after ``kill_after`` acks; return every ack it printed."""
    acked: set[int] = set()
    with subprocess.Popen(
        [sys.executable, str(WRITER), str(directory), str(TOTAL)],
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdout is not None
        for line in child.stdout:
            if line.strip().isdigit():
                acked.add(int(line))
            if len(acked) >= kill_after:
                child.send_signal(signal.SIGKILL)
                break
        rest = child.stdout.read()  # not communicate(): it skips what the wrapper buffered
        child.wait(timeout=60)
    acked |= {int(x) for x in rest.split() if x.isdigit()}  # acks printed before death
    assert child.returncode == -signal.SIGKILL, "the writer finished before the kill point"
    return acked


@pytest.mark.parametrize("kill_after", KILL_POINTS)
def test_every_acknowledged_write_survives_sigkill(tmp_path: Path, kill_after: int) -> None:
    acked = run_until_killed(tmp_path, kill_after)
    with open_replica(tmp_path, "crash-node") as r:
        present = {int(p.split("/")[1]) for p, _ in r.keys("w/")}
        assert acked <= present, f"lost acknowledged writes: {sorted(acked - present)[:10]}"
        counted = r.value("acked")
        assert counted >= len(acked)  # every acknowledged increment is there
        for i in random.Random(kill_after).sample(sorted(acked), min(50, len(acked))):
            assert r.value(f"w/{i:05d}") == i


def test_crash_then_reopen_keeps_the_epoch_and_keeps_writing(tmp_path: Path) -> None:
    run_until_killed(tmp_path, 200)
    with open_replica(tmp_path, "crash-node") as r:
        epoch = r.status()["epoch"]
        r.counter("after").increment()
    with open_replica(tmp_path, "crash-node") as r:
        assert r.status()["epoch"] == epoch and r.value("after") == 1


# ---- amnesia: a node whose store was wiped or rolled back -----------------------------


def cluster(tmp_path: Path) -> MemoryNetwork:
    net = MemoryNetwork(random.Random(11))
    for name in ("a", "b", "c"):
        net.add(name, storage=LMDBStorage(tmp_path / name))
    for x, y in (("a", "b"), ("a", "c"), ("b", "c")):
        net.link(x, y)
    net.run()
    return net


def write(net: MemoryNetwork, name: str, path: str, value: object) -> None:
    r = net.nodes[name].replica
    ts = r.hlc.now()
    r.update(path, LWWRegister, lambda g: g.set(r.actor, value, ts))
    net.flush(name)


def bump(net: MemoryNetwork, name: str, path: str, n: int) -> None:
    r = net.nodes[name].replica
    r.update(path, PNCounter, lambda c: c.increment(r.actor, n))
    net.flush(name)


def restart(
    net: MemoryNetwork,
    tmp_path: Path,
    name: str,
    prepare: object = None,
    config: ReplicaConfig | None = None,
) -> None:
    """Stop ``name`` (its links drop), let ``prepare`` touch its directory, start it again.

    A restart takes time: the clock moves on by a second, so a write made after it is
    stamped later than the last one made before (the network's clock moves only when
    it ticks, and a run with few messages may not tick at all).
    """
    net.now += 1_000
    for peer in net.nodes:
        if peer != name:
            net.nodes[peer].replica.disconnect(name)
    net.pending = [m for m in net.pending if name not in m[:2]]
    net.nodes.pop(name).storage.close()
    if callable(prepare):
        prepare()
    net.add(name, storage=LMDBStorage(tmp_path / name), config=config)


def assert_everywhere(net: MemoryNetwork, config: str, count: int) -> None:
    """Every replica holds the register and counter values, and all are equal."""
    for name in ("a", "b", "c"):
        r = net.nodes[name].replica
        assert r.get("config", LWWRegister).value() == config  # type: ignore[union-attr]
        assert r.get("count", PNCounter).value() == count  # type: ignore[union-attr]
    assert len(set(net.digests().values())) == 1


def relink(net: MemoryNetwork, name: str) -> None:
    for peer in list(net.nodes):
        if peer != name:
            net.link(name, peer)
    net.run()


def cluster_with_a_copy_of_a(tmp_path: Path) -> MemoryNetwork:
    """A cluster in which "a" wrote once, then was stopped and copied to ``old``."""
    net = cluster(tmp_path)
    write(net, "a", "config", "v1")
    net.run()
    restart(net, tmp_path, "a", prepare=lambda: shutil.copytree(tmp_path / "a", tmp_path / "old"))
    relink(net, "a")
    return net


def restore_copy(tmp_path: Path, name: str = "a") -> None:
    shutil.rmtree(tmp_path / name)
    shutil.copytree(tmp_path / "old", tmp_path / name)


def test_wiped_store_takes_a_new_epoch_and_loses_no_later_write(tmp_path: Path) -> None:
    net = cluster(tmp_path)
    for i in range(5):
        write(net, "a", "config", f"v{i}")
        bump(net, "a", "count", 1)
    net.run()
    old = net.nodes["a"].replica.actor
    restart(net, tmp_path, "a", prepare=lambda: shutil.rmtree(tmp_path / "a"))
    assert net.nodes["a"].replica.actor != old
    write(net, "a", "config", "after-wipe")  # written before it meets any peer
    bump(net, "a", "count", 10)
    relink(net, "a")
    assert_everywhere(net, config="after-wipe", count=15)


def test_restored_older_copy_takes_a_new_epoch_once_peers_show_it_is_behind(
    tmp_path: Path,
) -> None:
    net = cluster_with_a_copy_of_a(tmp_path)
    for i in range(2, 6):
        write(net, "a", "config", f"v{i}")
        bump(net, "a", "count", 1)
    net.run()
    old_actor = net.nodes["a"].replica.actor
    restart(net, tmp_path, "a", prepare=lambda: restore_copy(tmp_path))
    relink(net, "a")
    assert net.nodes["a"].replica.actor != old_actor  # peers had seen more of it
    write(net, "a", "config", "after-restore")
    bump(net, "a", "count", 10)
    net.run()
    assert_everywhere(net, config="after-restore", count=14)


def test_restored_copy_started_with_new_epoch_loses_no_write_made_before_contact(
    tmp_path: Path,
) -> None:
    net = cluster(tmp_path)
    write(net, "a", "config", "v1")
    net.run()
    shutil.copytree(tmp_path / "a", tmp_path / "old")  # a cold copy taken while running
    for i in range(2, 6):
        write(net, "a", "config", f"v{i}")
        bump(net, "a", "count", 1)
    net.run()
    restart(
        net,
        tmp_path,
        "a",
        prepare=lambda: restore_copy(tmp_path),
        config=ReplicaConfig(new_epoch=True),
    )
    write(net, "a", "config", "after-restore")  # before any peer could say it is behind
    bump(net, "a", "count", 10)
    relink(net, "a")
    assert_everywhere(net, config="after-restore", count=14)


def test_restored_older_copy_gets_back_what_it_had_received_after_the_copy(
    tmp_path: Path,
) -> None:
    """Found by the simulator (sim/scenarios/rollback-keeps-received-state.scenario)."""
    net = cluster_with_a_copy_of_a(tmp_path)
    for i in range(2, 6):  # a receives, persists and acknowledges these after the copy
        write(net, "b", "config", f"v{i}")
        bump(net, "c", "count", 1)
    net.run()
    assert all(not n.replica.log.entries for n in net.nodes.values())  # all collected

    restart(net, tmp_path, "a", prepare=lambda: restore_copy(tmp_path))
    assert net.nodes["a"].replica.get("count", PNCounter) is None  # the copy lacks them
    relink(net, "a")
    assert net.nodes["b"].replica.rewinds == net.nodes["c"].replica.rewinds == 1
    for peer in ("b", "c"):
        assert f"{peer}: peer lost acknowledged deltas: resending" in net.stats.events
    assert_everywhere(net, config="v5", count=4)


def test_a_write_made_with_no_peer_in_reach_is_sent_after_two_restarts(tmp_path: Path) -> None:
    """Found by the simulator (seed 6963, sim/scenarios/skipped-write-after-two-crashes):
    a logs a write for its peers and crashes before sending it; restarted, it tracks
    no peer (none had acknowledged anything), so its next write is counted but not
    logged (``DeltaLog.skip``), and it crashes again. The store kept the first entry
    and nothing of the skip, so the log, reopened, looked complete from that entry:
    the peers were sent the first write, told they had everything, and never got the
    second. The skip now drops the entries below it, in the store too, and the peers
    are caught up by digest."""
    net = cluster(tmp_path)
    bump(net, "a", "count", 3)  # its Deltas are queued, not delivered
    restart(net, tmp_path, "a")  # a crash: the queued messages are gone
    assert net.nodes["a"].replica.log.entries and not net.nodes["a"].replica.log.peers
    bump(net, "a", "count", 4)  # no peer in reach or tracked: skipped
    assert not net.nodes["a"].replica.log.entries  # the first entry went with the skip
    restart(net, tmp_path, "a")
    relink(net, "a")
    for name in ("a", "b", "c"):
        assert net.nodes[name].replica.get("count", PNCounter).value() == 7  # type: ignore[union-attr]
    assert len(set(net.digests().values())) == 1


def test_a_rewind_is_stored_so_a_restart_resends_what_the_peer_lost(tmp_path: Path) -> None:
    """Found by the simulator (seed 12408, sim/scenarios/rewind-survives-a-crash):
    b loses its store; a rewinds it to resend what it lost, but the first resent
    interval is lost on the way while a later one arrives, so b's position in a's log
    (its Hello's ``received``) jumps past the gap. a then crashes. Its store still held
    b's old ack, past the gap, and b's position said nothing was lost: the gap was
    never sent again. The rewind is now stored with the batch it makes."""
    one_entry_an_interval = ReplicaConfig(batch_keys=1)
    net = MemoryNetwork(random.Random(5))
    net.add("a", storage=LMDBStorage(tmp_path / "a"), config=one_entry_an_interval)
    net.add("b", storage=LMDBStorage(tmp_path / "b"))
    net.add("c", storage=LMDBStorage(tmp_path / "c"))
    net.link("a", "b")
    net.link("a", "c")
    net.run()
    net.partition("a", "c")  # c acknowledges nothing: a's log keeps every entry
    bump(net, "a", "count", 3)  # a's entry 1: b has it and acknowledges it
    net.run()
    restart(net, tmp_path, "b", prepare=lambda: shutil.rmtree(tmp_path / "b"))
    bump(net, "a", "other", 4)  # entry 2, another key, while b is away
    net.link("a", "b")  # b's Hello says it holds nothing of a's log: a rewinds it
    while net.pending:  # the resend of entry 1 is lost; that of entry 2 arrives
        net.pending = [m for m in net.pending if not _deltas_from(m, "a", 1)]
        net.step()
    b = net.nodes["b"].replica
    # The position no longer jumps past the gap (copy-taken-across-a-gap): b's Hello
    # below what it acknowledged rewinds a now whether or not the rewind was stored.
    assert b.received.get(net.nodes["a"].replica.actor, 1) == 1
    assert b.get("count", PNCounter) is None and b.get("other", PNCounter) is not None
    restart(net, tmp_path, "a", config=one_entry_an_interval)  # a crash
    relink(net, "a")
    assert net.nodes["b"].replica.get("count", PNCounter).value() == 3  # type: ignore[union-attr]
    assert len(set(net.digests(["a", "b"]).values())) == 1


def _deltas_from(message: tuple[str, str, bytes], src: str, start: int) -> bool:
    """Whether ``message`` is a Deltas from ``src`` whose interval starts at ``start``."""
    decoded = decode_message(message[2])
    return message[0] == src and isinstance(decoded, Deltas) and decoded.start == start


def deliver_all_but(net: MemoryNetwork, src: str, dst: str) -> None:
    """Deliver what is in flight, without ticks (so nothing is resent yet), losing
    every message from ``src`` to ``dst`` that was pending when called."""
    net.pending = [m for m in net.pending if m[:2] != (src, dst)]
    while net.step():
        pass


def lose_in_flight_write_then_restore_a(tmp_path: Path) -> MemoryNetwork:
    """a writes; c gets only a later write of a's, b gets both and leaves them out
    for c (c declared a); then a's store is restored from a copy older than both."""
    net = cluster_with_a_copy_of_a(tmp_path)
    assert net.nodes["c"].replica.links["a"].declared == frozenset({"b"})
    write(net, "a", "lost", "w")
    deliver_all_but(net, "a", "c")  # b has it; c does not
    bump(net, "a", "count", 1)
    deliver_all_but(net, "a", "x")  # delivered to both (there is no x)
    c = net.nodes["c"].replica
    assert c.get("lost", LWWRegister) is None and c.get("count", PNCounter) is not None
    b_progress = net.nodes["b"].replica.log.peers[c.actor]
    assert set(b_progress.skipped) == {net.nodes["a"].replica.actor}  # left out for c
    restart(net, tmp_path, "a", prepare=lambda: restore_copy(tmp_path))
    assert net.nodes["a"].replica.get("lost", LWWRegister) is None  # the copy lacks it
    return net


def assert_lost_write_everywhere(net: MemoryNetwork) -> None:
    for name in ("a", "b", "c"):
        register = net.nodes[name].replica.get("lost", LWWRegister)
        assert register is not None and register.value() == "w", name
    assert len(set(net.digests().values())) == 1


def test_a_write_a_restored_hub_had_in_flight_reaches_every_hub(tmp_path: Path) -> None:
    """Found by the simulator (seed 608 under rollback-hub,
    sim/scenarios/restored-hub-in-flight-write.scenario). a writes; its delta to c is
    lost, one after it arrives (so c's position in a's log is past the lost one), and
    b, which got both, leaves them out of what it sends c: c declared a, which resends
    what c has not acknowledged. a's store is then restored from a copy older than the
    writes: a's resend is gone with its log. a, linked to c first (as the simulator's
    timing had it), catches c up before it has the writes back; then it gets them
    from b, by catch-up, as b's, and leaves them out for c, which declared b too.
    Each counted on the other for good; now b, seeing a's store lost updates it had
    made, catches c up by digest (``DeltaLog.source_lost_updates``)."""
    net = lose_in_flight_write_then_restore_a(tmp_path)
    net.link("a", "c")  # a catches c up before it has the write back, as in seed 608
    net.run()
    net.link("a", "b")
    net.run()
    assert_lost_write_everywhere(net)


def test_the_catch_up_a_relay_owes_survives_its_restart(tmp_path: Path) -> None:
    """b sees a's store lost what it had and owes c a catch-up; b restarts before it
    is done. The catch-up is stored with b's batch (as an acknowledged point of 0),
    so b, reopened, catches c up; kept in memory alone, it was forgotten, and b's
    stored ack for c, past the entries it had left out, said c had them. (c's
    message that a is no longer its source is lost here: with positions that are
    prefixes, it would make b resend c the write at once, ``DeltaLog.declare``.)"""
    net = lose_in_flight_write_then_restore_a(tmp_path)
    net.pending = [m for m in net.pending if m[:2] != ("c", "b")]
    net.link("a", "b")
    b, c_actor = net.nodes["b"].replica, net.nodes["c"].replica.actor
    while not b.log.needs_catch_up(c_actor) and net.step():
        pass
    assert b.log.needs_catch_up(c_actor) and net.nodes["b"].storage.acks()[c_actor] == 0
    restart(net, tmp_path, "b")  # before the catch-up of c is done
    relink(net, "b")
    net.link("a", "c")
    net.run()
    assert_lost_write_everywhere(net)


def test_a_relay_restarted_midway_still_gets_a_restored_hubs_write_everywhere(
    tmp_path: Path,
) -> None:
    """As above, with c's message that a is gone delivered: c's position in a's log
    is a prefix, below the write it lacks, so b resends it to c
    (``DeltaLog.declare``) where a position past the write made b trust it and owe
    c a catch-up by digest; b restarting midway loses nothing either way."""
    net = lose_in_flight_write_then_restore_a(tmp_path)
    net.link("a", "c")
    net.run()
    net.link("a", "b")
    for _ in range(3):  # b midway through what a's Hello set going
        net.step()
    restart(net, tmp_path, "b")
    relink(net, "b")
    assert_lost_write_everywhere(net)


def hub_and_two_edges(tmp_path: Path, seed: int, edge: ReplicaConfig) -> MemoryNetwork:
    """A hub on LMDB ("hub"), with edges "e1" and "e2" (``edge``) linked to it."""
    net = MemoryNetwork(random.Random(seed))
    net.add("hub", storage=LMDBStorage(tmp_path / "hub"))
    for name in ("e1", "e2"):
        net.add(name, storage=LMDBStorage(tmp_path / name), config=edge)
        link_edge(net, name)
    return net


def link_edge(net: MemoryNetwork, edge: str) -> None:
    """Link ``edge`` to "hub", which knows it by its certificate and takes only its
    own updates (as over mutual TLS), and run until quiet."""
    net.nodes["hub"].replica.connect(edge, certified_node=edge, own_writes_only=True)
    net.flush("hub")
    net.nodes[edge].replica.connect("hub")
    net.flush(edge)
    net.run()


def test_an_edge_wiped_after_its_hub_was_restored_gets_its_removal_back(
    tmp_path: Path,
) -> None:
    """Found by the simulator (seed 3847 under rollback-hub,
    sim/scenarios/restored-hub-wiped-edge-gets-its-removals-back.scenario). e1 removes
    e2's element; before the hub has the removal, its store is restored from a copy
    taken before any write. e1 sends the restored hub the removal, which holds nothing
    for e1 (in the simulator the hub logged it and acknowledged the interval for e1
    itself; here, tracking e1 alone, it does not log it and moves e1 past it). e1 is
    then wiped before the hub has sent it anything. The hub rewound a peer only to
    what it had delivered to it since the restore (nothing), and caught one up only
    for lost updates of its own (a removal mints none): e1 never got its removal
    back, nor e2's add that it removed. An edge back under a new epoch is now rewound
    to its position in the hub's log, here below the log's start: a catch-up by
    digest."""
    edge = ReplicaConfig(relay=False)
    net = hub_and_two_edges(tmp_path, seed=3847, edge=edge)
    restart(
        net, tmp_path, "hub", prepare=lambda: shutil.copytree(tmp_path / "hub", tmp_path / "old")
    )
    for name in ("e1", "e2"):
        link_edge(net, name)
    e2 = net.nodes["e2"].replica
    e2.update("alerts", AWSet, lambda s: s.add(e2.actor, "w"))
    net.flush("e2")
    net.run()
    e1 = net.nodes["e1"].replica
    e1.update("alerts", AWSet, lambda s: s.remove("w"))
    net.flush("e1")  # sent, and lost with the restart
    restart(net, tmp_path, "hub", prepare=lambda: restore_copy(tmp_path, "hub"))
    link_edge(net, "e1")  # the removal reaches the restored hub
    assert seen_add_of(net, "hub", e2.actor)  # as a removal's context: no element
    restart(net, tmp_path, "e1", prepare=lambda: shutil.rmtree(tmp_path / "e1"), config=edge)
    link_edge(net, "e1")
    link_edge(net, "e2")
    for name in ("hub", "e1", "e2"):
        assert seen_add_of(net, name, e2.actor), name  # e1 did not, with the removal lost
        assert net.nodes[name].replica.get("alerts", AWSet) is None  # removed: absent
    assert len(set(net.digests().values())) == 1


def seen_add_of(net: MemoryNetwork, name: str, actor: str) -> bool:
    """Whether ``name`` has seen ``actor``'s one event (an add, or its removal)."""
    return net.nodes[name].replica.keyspace.actor_progress().get(actor) == 1


def test_an_edge_restored_after_its_hub_was_gets_back_what_the_new_hub_log_sent(
    tmp_path: Path,
) -> None:
    """The hub's store is restored from an older copy: its new epoch logs from the
    copy's end on, reusing sequence numbers its old log had given e2's k1..k6. A
    copy of e1's store, taken before that, holds the hub's old log up to its end,
    and the hub took that position as one in its new log (as it did one an edge
    carried over to the new epoch): restored from the copy, e1 was not sent again
    e2's later write, which the new log had delivered it below that position
    (sim/scenarios/restored-hub-and-edge-positions.scenario). A position in an
    earlier epoch's log now counts only below where the hub's log parted from it."""
    edge = ReplicaConfig(relay=False)
    net = hub_and_two_edges(tmp_path, seed=3, edge=edge)
    edge_write(net, "e2", "first", 0)
    restart(
        net, tmp_path, "hub", prepare=lambda: shutil.copytree(tmp_path / "hub", tmp_path / "old")
    )
    for name in ("e1", "e2"):
        link_edge(net, name)
    for i in range(1, 7):  # entries of the hub's old log, past the copy's end
        edge_write(net, "e2", f"k{i}", i)
    restart(
        net, tmp_path, "e1", config=edge,
        prepare=lambda: shutil.copytree(tmp_path / "e1", tmp_path / "e1-old"),
    )  # fmt: skip
    link_edge(net, "e1")
    restart(net, tmp_path, "hub", prepare=lambda: restore_copy(tmp_path, "hub"))
    for name in ("e1", "e2"):
        link_edge(net, name)
    edge_write(net, "e2", "later", 7)  # an entry of the new log, below e1's old position
    assert net.nodes["e1"].replica.get("later", LWWRegister) is not None

    def restore_e1() -> None:
        shutil.rmtree(tmp_path / "e1")
        shutil.copytree(tmp_path / "e1-old", tmp_path / "e1")

    restart(net, tmp_path, "e1", prepare=restore_e1, config=edge)
    link_edge(net, "e1")
    for name in ("hub", "e1", "e2"):
        assert net.nodes[name].replica.get("later", LWWRegister).value() == 7, name  # type: ignore[union-attr]
    assert len(set(net.digests().values())) == 1


def edge_write(net: MemoryNetwork, name: str, path: str, value: object) -> None:
    """``name`` sets ``path`` and the network runs until quiet."""
    write(net, name, path, value)
    net.run()


def test_a_copy_taken_while_an_interval_was_missing_gets_it_back(tmp_path: Path) -> None:
    """Found by the simulator (seed 795, sim/scenarios/copy-taken-across-a-gap).
    a's interval holding entry 1 is lost on its way to b, the one after it arrives,
    and b's store is copied then. b's position in a's log was the end of the furthest
    interval merged, past the gap: restored from the copy, b said it held entry 1,
    a had delivered nothing past that position, and b lacked entry 1 for good. Now
    b's position moves over an interval only once it reaches the interval's start,
    so the copy's position is below the gap and a rewinds b to it."""
    net = MemoryNetwork(random.Random(7))
    for name in ("a", "b"):
        net.add(name, storage=LMDBStorage(tmp_path / name))
    net.link("a", "b")
    net.run()
    bump(net, "a", "count", 3)  # entry 1, lost on its way to b
    net.pending = [m for m in net.pending if m[:2] != ("a", "b")]
    bump(net, "a", "other", 4)  # entry 2, its own interval: it arrives
    while net.step():  # no ticks: nothing is resent yet
        pass
    b = net.nodes["b"].replica
    assert b.get("count", PNCounter) is None
    assert b.get("other", PNCounter) is not None  # entry 2 merged
    assert b.received.get(net.nodes["a"].replica.actor, 1) == 1  # the position waits
    restart(net, tmp_path, "b", prepare=lambda: shutil.copytree(tmp_path / "b", tmp_path / "old"))
    relink(net, "b")  # a resends from the gap; b acknowledges both entries
    assert net.nodes["b"].replica.get("count", PNCounter).value() == 3  # type: ignore[union-attr]
    restart(net, tmp_path, "b", prepare=lambda: restore_copy(tmp_path, "b"))
    relink(net, "b")
    for name in ("a", "b"):
        assert net.nodes[name].replica.get("count", PNCounter).value() == 3, name  # type: ignore[union-attr]
    assert len(set(net.digests().values())) == 1


@pytest.mark.parametrize("peer_restarted_first", [False, True], ids=["same-epoch", "new-epoch"])
def test_a_restart_takes_no_peer_short_of_a_stretch_it_held_nothing_in_for_a_loss(
    tmp_path: Path, peer_restarted_first: bool
) -> None:
    """Seeds 464 and 351 of the default sweep. a logs b's write, which holds nothing
    for b (its own) and so is acknowledged by a itself: b's position in a's log stays
    where it was, below a's acked point. a crashes. Reopened, a took the stored acked
    point as delivered, so b's Hello said b had lost what it acknowledged: a rewound b
    and, as b's store would then have lost its log too, caught every peer up by
    digest (in those seeds the catch-ups carried a fast clock's writes and were
    refused for minutes). b's store lost nothing: it is the one that acknowledged,
    under the same epoch (or b crashed first, and a had heard its new epoch before
    crashing and found nothing lost then). d, cut off, keeps the entry in a's log,
    so a reopens with a log (an empty one would catch every peer up anyway)."""
    net = cluster(tmp_path)
    net.add("d", storage=LMDBStorage(tmp_path / "d"))
    net.link("a", "d")
    net.run()
    net.partition("a", "d")
    bump(net, "b", "count", 1)
    net.run()
    a, b = net.nodes["a"].replica, net.nodes["b"].replica
    assert a.log.entries and a.log.peers[b.actor].acked == a.log.next_seq  # a acked it
    assert b.received.get(a.actor, 1) < a.log.next_seq  # b's position did not move
    if peer_restarted_first:
        restart(net, tmp_path, "b")  # a crash: b comes back on its store, a new epoch
        relink(net, "b")
        assert net.nodes["b"].replica.actor != b.actor
    events = len(net.stats.events)
    restart(net, tmp_path, "a")  # a crash
    relink(net, "a")
    assert net.nodes["a"].replica.rewinds == 0
    assert net.stats.events[events:] == ["a: new epoch"]  # no rewind, no catch-up
    bump(net, "a", "count", 2)  # and the links still carry a's writes
    net.run()
    for name in ("a", "b", "c"):
        assert net.nodes[name].replica.get("count", PNCounter).value() == 3, name  # type: ignore[union-attr]
    assert len(set(net.digests(["a", "b", "c"]).values())) == 1
