"""DeltaLog on its own: intervals, acks, retransmission, collection and the size bound."""

from __future__ import annotations

import random
from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from sync import GCounter, Keyspace
from sync._propagation import DeltaLog, Interval, LogEntry, probe_sent_at, probe_stamp

PEERS = ("p1", "p2", "p3")


def delta(path: str = "k") -> Keyspace:
    ks = Keyspace()
    return ks.apply(path, GCounter, lambda c: c.increment("a@1", 1))


def size(path: str) -> int:
    return len(delta(path).encode())


SIZE = size("k0")  # the size of the delta at any two-letter path


def add(log: DeltaLog, path: str = "k", origin: str | None = None) -> LogEntry:
    d = delta(path)
    return log.append(d, origin, len(d.encode()))


def everything(path: str) -> bool:
    return True


def paths(interval: Interval) -> list[str]:
    return sorted(path for path, _ in interval.delta.entries)


def log_with(n: int, *peers: str) -> DeltaLog:
    """A log holding entries 1..n under paths k0..k{n-1}, tracking ``peers`` from 1."""
    log = DeltaLog()
    for i in range(n):
        add(log, f"k{i}")
    for peer in peers:
        log.track(peer, 1)
    return log


def send(log: DeltaLog, peer: str, budget: int = SIZE, now: int = 0) -> Interval:
    interval = log.next_interval(peer, budget, everything, now)
    assert interval is not None
    return interval


# ---- the log --------------------------------------------------------------------------


def test_sequence_numbers_grow_from_next_seq() -> None:
    log = DeltaLog(next_seq=5)
    assert log.first_seq() == 5 and len(log) == 0
    assert [add(log, p).seq for p in ("k0", "k1", "k2")] == [5, 6, 7]
    assert log.next_seq == 8 and log.first_seq() == 5 and len(log) == 3
    assert log.bytes == 3 * SIZE


# ---- intervals ------------------------------------------------------------------------


def test_interval_joins_entries_up_to_the_byte_budget() -> None:
    log = log_with(5, "p1")
    first = send(log, "p1", budget=2 * SIZE)
    assert (first.start, first.end, paths(first)) == (1, 3, ["k0", "k1"])
    second = send(log, "p1", budget=3 * SIZE + SIZE // 2)
    assert (second.start, second.end, paths(second)) == (3, 6, ["k2", "k3", "k4"])
    assert log.peers["p1"].sent == 6
    assert log.next_interval("p1", 10 * SIZE, everything, 0) is None


def test_interval_holds_one_entry_even_when_it_alone_exceeds_the_budget() -> None:
    log = log_with(3, "p1")
    for budget in (0, 1, SIZE - 1):
        log.reset_sent("p1")
        interval = send(log, "p1", budget=budget)
        assert (interval.start, interval.end, paths(interval)) == (1, 2, ["k0"])


def multi_key_entry(log: DeltaLog, *paths: str) -> LogEntry:
    ks = Keyspace()
    for path in paths:
        ks.apply(path, GCounter, lambda c: c.increment("a@1", 1))
    return log.append(ks, None, len(ks.encode()))


def test_interval_stops_at_the_key_budget_too_and_holds_one_entry_whatever_its_keys() -> None:
    log = DeltaLog()
    for first in range(0, 12, 3):  # entries 1..4, of three keys each
        multi_key_entry(log, *(f"k{i:02}" for i in range(first, first + 3)))
    log.track("p1", 1)
    roomy = 100 * SIZE  # the byte budget never binds here

    def interval(max_keys: int | None) -> tuple[int, int, int]:
        got = log.next_interval("p1", roomy, everything, 0, max_keys=max_keys)
        assert got is not None
        return got.start, got.end, len(got.delta.entries)

    assert interval(7) == (1, 3, 6)  # a third entry would make 9 keys
    assert interval(6) == (3, 5, 6)
    log.reset_sent("p1")
    assert interval(2) == (1, 2, 3), "the first entry goes, whatever its keys"
    log.reset_sent("p1")
    assert interval(None) == (1, 5, 12), "no key budget: bytes alone"


def test_entries_from_the_peer_are_not_sent_back_but_their_range_is_covered() -> None:
    log = DeltaLog()
    add(log, "x")
    add(log, "y", origin="p1")
    add(log, "z")
    log.track("p1", 1)
    log.track("p2", 1)
    to_p1 = send(log, "p1", budget=10 * SIZE)
    assert (to_p1.start, to_p1.end, paths(to_p1)) == (1, 4, ["x", "z"])
    to_p2 = send(log, "p2", budget=10 * SIZE)
    assert paths(to_p2) == ["x", "y", "z"]


def test_entries_from_a_peer_go_back_to_none_of_its_epochs() -> None:
    """Its new epoch has them if its store survived; if not, it gets them back from
    where they came, as theirs (sync/_propagation.py, "Epochs")."""
    log = DeltaLog()
    add(log, "x")
    add(log, "y", origin="p1@1")
    log.track("p1@2", 1)
    assert paths(send(log, "p1@2", budget=10 * SIZE)) == ["x"]


def test_a_peer_that_does_not_relay_gets_its_earlier_epochs_entries_back() -> None:
    """An edge relays nothing, so what it gets back it holds as no one's to leave out;
    wiped, it needs its own removals back with the adds they removed (seed 20783)."""
    log = DeltaLog()
    add(log, "x")
    add(log, "y", origin="e1@1")
    add(log, "z", origin="e1@2")
    log.track("e1@2", 1).relays = False
    assert paths(send(log, "e1@2", budget=10 * SIZE)) == ["x", "y"]


def test_admit_filter_drops_keys_and_an_interval_may_come_out_bottom() -> None:
    log = DeltaLog()
    add(log, "local/raw")
    add(log, "shared")
    add(log, "local/other")
    log.track("p1", 1)

    def admit(path: str) -> bool:
        return not path.startswith("local/")

    mixed = log.next_interval("p1", size("local/raw") + size("shared"), admit, 0)
    assert mixed is not None and (mixed.start, mixed.end) == (1, 3)
    assert paths(mixed) == ["shared"]
    filtered_out = log.next_interval("p1", 10 * SIZE, admit, 0)
    assert filtered_out is not None and (filtered_out.start, filtered_out.end) == (3, 4)
    assert filtered_out.delta.is_bottom()
    assert log.peers["p1"].sent == 4


# ---- declared sources -------------------------------------------------------------------


def relayed_log() -> DeltaLog:
    """Entries 1..4: local, from h2 (its log's end 7), from e1 (end 3), from h2 (end 9)."""
    log = DeltaLog()
    add(log, "mine")
    log.append(delta("h2a"), "h2@1", SIZE, origin_end=7)
    log.append(delta("e1a"), "e1@5", SIZE, origin_end=3)
    log.append(delta("h2b"), "h2@1", SIZE, origin_end=9)
    log.track("h3@1", 1)
    for actor in ("h2@1", "e1@5"):
        log.heard_from(actor)  # their current epochs
    return log


def test_entries_from_a_declared_source_are_left_out_but_their_range_is_covered() -> None:
    log = relayed_log()
    assert not log.declare("h3@1", frozenset({"h2"}), {})
    interval = send(log, "h3@1", budget=10 * SIZE)
    assert (interval.start, interval.end, paths(interval)) == (1, 5, ["e1a", "mine"])
    assert log.peers["h3@1"].skipped == {"h2@1": (2, 9)}  # first left out, furthest end
    assert log.acknowledge("h3@1", 1, 5) and log.collect() == 5  # nothing held back


def test_a_source_declared_gone_resends_what_the_peer_may_lack_from_it() -> None:
    log = relayed_log()
    log.declare("h3@1", frozenset({"h2", "e1"}), {})
    assert paths(send(log, "h3@1", budget=10 * SIZE)) == ["mine"]
    log.acknowledge("h3@1", 1, 5)
    # e1 is gone, but the peer's store holds e1's log up to 3: nothing to resend.
    assert not log.declare("h3@1", frozenset({"h2"}), {"e1@5": 3})
    assert log.peers["h3@1"].acked == 5
    # h2 is gone and the peer holds its log only up to 8 (entry 4 ended at 9): rewind
    # to the first entry left out from h2, and send both of h2's again.
    assert log.declare("h3@1", frozenset(), {"h2@1": 8})
    assert log.peers["h3@1"].acked == 2 and log.peers["h3@1"].skipped == {}
    assert paths(send(log, "h3@1", budget=10 * SIZE)) == ["e1a", "h2a", "h2b"]


def test_a_late_ack_of_an_interval_sent_before_a_rewind_does_not_ack_the_resend() -> None:
    """Simulator seed 3909 under rollback-hub. Both intervals claim to start at 1
    (nothing was in flight); the first left h2's entries out, the second holds them.
    Under one label, the first one's ack, late, took the peer to have them all, and a
    hub's write never reached it. Sent after a rewind, an interval is labeled from
    where it was gathered, and an ack of one no longer in flight is not taken."""
    log = relayed_log()
    log.declare("h3@1", frozenset({"h2"}), {})
    assert log.acknowledge("h3@1", 1, send(log, "h3@1", budget=10 * SIZE).end)
    add(log, "later")
    before = send(log, "h3@1", budget=10 * SIZE)
    assert (before.start, before.end, paths(before)) == (1, 6, ["later"])
    assert log.declare("h3@1", frozenset(), {"h2@1": 8})  # h2 gone: rewound to 2
    after = send(log, "h3@1", budget=10 * SIZE)
    assert paths(after) == ["e1a", "h2a", "h2b", "later"] and after.end == before.end
    assert after.start == 2  # where it was gathered from, not 1
    assert not log.acknowledge("h3@1", before.start, before.end)  # the late ack
    assert log.peers["h3@1"].acked == 2
    assert log.acknowledge("h3@1", after.start, after.end)
    assert log.peers["h3@1"].acked == 6
    add(log, "next")
    nxt = send(log, "h3@1")
    assert (nxt.start, nxt.end) == (1, 7)  # past the rewind: claimed from 1 again


def test_a_source_gone_from_where_nobody_knows_resends_from_its_first_entry() -> None:
    log = DeltaLog()
    log.append(delta("pushed"), "h2@1", SIZE)  # a catch-up push: no end in h2's log
    log.append(delta("later"), "h2@1", SIZE, origin_end=4)
    log.track("h3@1", 1)
    log.heard_from("h2@1")
    log.declare("h3@1", frozenset({"h2"}), {})
    interval = send(log, "h3@1", budget=10 * SIZE)
    assert interval.delta.is_bottom()
    log.acknowledge("h3@1", interval.start, interval.end)
    assert log.peers["h3@1"].skipped == {"h2@1": (1, None)}
    assert log.declare("h3@1", frozenset(), {"h2@1": 100})  # unknown: resend all of it
    assert paths(send(log, "h3@1", budget=10 * SIZE)) == ["later", "pushed"]


def test_only_a_sources_current_epoch_is_left_out() -> None:
    """A new epoch resends what its store kept; one whose store lost it cannot."""
    log = relayed_log()
    log.heard_from("h2@2")  # h2 restarted
    log.declare("h3@1", frozenset({"h2"}), {})
    assert paths(send(log, "h3@1", budget=10 * SIZE)) == ["e1a", "h2a", "h2b", "mine"]


def test_a_catch_up_forgets_what_was_left_out() -> None:
    log = relayed_log()
    log.declare("h3@1", frozenset({"h2"}), {})
    send(log, "h3@1", budget=10 * SIZE)
    log.caught_up_from("h3@1", 5)  # the whole state went: nothing is owed
    assert not log.declare("h3@1", frozenset(), {})


def test_a_source_that_lost_its_store_leaves_nothing_of_its_old_epochs_out() -> None:
    """Simulator seeds 608 and 1966 under rollback-hub: what h2 was to resend, we send."""
    log = relayed_log()
    log.track("h4@1", 5)  # a peer that had nothing left out
    log.declare("h3@1", frozenset({"h2"}), {})
    log.acknowledge("h3@1", 1, send(log, "h3@1", budget=10 * SIZE).end)
    log.append(delta("h2c"), "h2@1", SIZE, origin_end=11)  # not yet sent to h3
    log.heard_from("h2@2")  # its new epoch's Hello
    assert log.source_lost_updates("h2") == ["h3@1"]
    assert log.needs_catch_up("h3@1") and not log.needs_catch_up("h4@1")
    log.caught_up_from("h3@1", 5)  # the catch-up began before h2c
    log.append(delta("h2new"), "h2@2", SIZE, origin_end=2)  # its new epoch sends this
    assert paths(send(log, "h3@1", budget=10 * SIZE)) == ["h2c"]


def test_a_source_dropped_on_the_peers_position_is_caught_up_if_it_loses_its_store() -> None:
    """The position is the end of the furthest interval the peer got from h2: one
    below it may have been lost, for h2 to resend, which a store restored or wiped
    forgets."""
    log = relayed_log()
    log.declare("h3@1", frozenset({"h2"}), {})
    log.acknowledge("h3@1", 1, send(log, "h3@1", budget=10 * SIZE).end)
    assert not log.declare("h3@1", frozenset(), {"h2@1": 9})  # past what was left out
    assert not log.needs_catch_up("h3@1")
    assert log.source_lost_updates("h2") == ["h3@1"]
    assert log.needs_catch_up("h3@1")


# ---- acks -----------------------------------------------------------------------------


def test_acked_advances_only_over_a_contiguous_prefix_of_acked_intervals() -> None:
    log = log_with(3, "p1")
    first, second = send(log, "p1"), send(log, "p1")
    assert (first.start, first.end, second.start, second.end) == (1, 2, 2, 3)
    assert log.acknowledge("p1", second.start, second.end) is False
    assert log.peers["p1"].acked == 1
    assert log.acknowledge("p1", first.start, first.end) is True
    progress = log.peers["p1"]
    assert progress.acked == 3 and progress.sent == 3
    assert not progress.inflight and not progress.done


def test_duplicate_and_old_acks_are_harmless() -> None:
    log = log_with(3, "p1")
    first, second = send(log, "p1"), send(log, "p1")
    assert log.acknowledge("p1", first.start, first.end) is True
    assert log.acknowledge("p1", first.start, first.end) is False
    assert log.acknowledge("p1", second.start, second.end) is True
    assert log.acknowledge("p1", second.start, second.end) is False
    assert log.acknowledge("p1", first.start, first.end) is False
    assert log.acknowledge("stranger", 1, 3) is False
    progress = log.peers["p1"]
    assert (progress.acked, progress.sent) == (3, 3)
    assert not progress.inflight and not progress.done
    assert "stranger" not in log.peers


def test_ack_of_an_interval_beyond_the_log_is_ignored() -> None:
    log = log_with(2, "p1")
    log.acknowledge("p1", 1, log.next_seq + 10)
    progress = log.peers["p1"]
    assert progress.acked <= progress.sent <= log.next_seq
    add(log, "k9")
    assert log.next_interval("p1", SIZE, everything, 0) is not None


def test_retransmit_due_rewinds_only_peers_with_an_overdue_interval() -> None:
    log = log_with(4, "p1", "p2", "p3")
    send(log, "p1", now=0)
    send(log, "p2", now=50)
    send(log, "p3", now=0)
    log.acknowledge("p3", 1, 2)
    assert log.retransmit_due(now=100, timeout=100) == ["p1"]
    p1, p2, p3 = (log.peers[p] for p in PEERS)
    assert (p1.acked, p1.sent) == (1, 1) and not p1.inflight
    assert (p2.acked, p2.sent) == (1, 2) and list(p2.inflight) == [(1, 2)]
    assert (p3.acked, p3.sent) == (2, 2)
    assert log.retransmit_due(now=149, timeout=100) == []
    assert log.retransmit_due(now=150, timeout=100) == ["p2"]


def test_an_ack_of_new_data_restarts_the_timer_of_what_is_still_in_flight() -> None:
    # A busy peer works through a full window: each ack moves its acked point, and
    # what it has not reached yet times out a timeout after the last move, not after
    # its send (RFC 6298, 5.3).
    log = log_with(3, "p1")
    for _ in range(3):
        send(log, "p1", now=0)
    assert log.acknowledge("p1", 1, 2, now=80)
    assert log.retransmit_due(now=150, timeout=100) == []
    assert log.acknowledge("p1", 2, 3, now=170)
    assert log.retransmit_due(now=269, timeout=100) == []
    assert log.retransmit_due(now=270, timeout=100) == ["p1"]


def test_an_ack_past_a_lost_interval_does_not_restart_its_timer() -> None:
    log = log_with(3, "p1")
    for _ in range(3):
        send(log, "p1", now=0)
    assert log.acknowledge("p1", 2, 3, now=80) is False  # out of order: acked stays at 1
    assert log.retransmit_due(now=100, timeout=100) == ["p1"]


def test_a_retransmitted_interval_is_sent_again_from_acked() -> None:
    log = log_with(2, "p1")
    before = send(log, "p1", budget=10 * SIZE, now=0)
    log.retransmit_due(now=1_000, timeout=100)
    again = send(log, "p1", budget=10 * SIZE, now=1_000)
    assert (again.start, again.end, paths(again)) == (before.start, before.end, paths(before))


def test_reset_sent_rewinds_to_acked_and_clears_inflight() -> None:
    log = log_with(4, "p1")
    first = send(log, "p1")
    log.acknowledge("p1", first.start, first.end)
    send(log, "p1")
    send(log, "p1")
    assert log.peers["p1"].sent == 4
    log.reset_sent("p1")
    progress = log.peers["p1"]
    assert (progress.acked, progress.sent) == (2, 2) and not progress.inflight
    resent = send(log, "p1")
    assert (resent.first, resent.start) == (2, 1)  # from the acked point; told from 1


# ---- collection -----------------------------------------------------------------------


def ack_up_to(log: DeltaLog, peer: str, end: int) -> None:
    interval = log.next_interval(peer, (end - log.peers[peer].sent) * SIZE, everything, 0)
    assert interval is not None and interval.end == end
    log.acknowledge(peer, interval.start, interval.end)


def test_collect_drops_exactly_the_entries_below_the_minimum_acked() -> None:
    log = log_with(5, "p1", "p2")
    ack_up_to(log, "p1", 4)
    ack_up_to(log, "p2", 3)
    assert log.collect() == 3
    assert sorted(log.entries) == [3, 4, 5]
    assert log.bytes == 3 * SIZE


def test_collect_drops_nothing_while_a_peer_lags() -> None:
    log = log_with(5, "p1", "p2")
    ack_up_to(log, "p1", 6)
    assert log.collect() == 1
    assert sorted(log.entries) == [1, 2, 3, 4, 5]


def test_collect_with_no_tracked_peer_drops_everything() -> None:
    log = log_with(3)
    assert log.collect() == 4 and len(log) == 0 and log.bytes == 0


def test_a_skip_drops_the_entries_below_it_and_says_so() -> None:
    """A skipped change is in no entry: a peer that needs what is below it needs the
    change too, which only a catch-up by digest gives, so those entries are of no use."""
    log = log_with(3)
    assert log.skip() is True
    assert len(log) == 0 and log.bytes == 0 and log.next_seq == 5 and log.complete_from == 5
    assert log.skip() is False and log.next_seq == 6  # nothing left to drop
    add(log)
    assert log.first_seq() == log.complete_from == 6  # complete again from the new entry
    log.track("p", 1)
    assert log.needs_catch_up("p")


def test_rename_onto_a_tracked_epoch_keeps_the_lower_ack() -> None:
    """A store may hold an ack row for two epochs of one peer; a rewind lowered only
    the newer one. Whichever is renamed onto the other, the lower ack stands."""
    for older_acked, newer_acked, expected in ((4, 2, 2), (2, 4, 2)):
        log = log_with(5)
        log.track("p@old", older_acked)
        log.track("p@new", newer_acked)
        log.rename("p@old", "p@new")
        assert list(log.peers) == ["p@new"] and log.peers["p@new"].acked == expected


def test_forget_lets_collection_proceed() -> None:
    log = log_with(5, "p1", "p2")
    ack_up_to(log, "p1", 6)
    log.forget("p2")
    log.forget("never-tracked")
    assert log.collect() == 6 and len(log) == 0
    assert not log.needs_catch_up("p2")  # untracked: nothing to wait for


def test_entry_bound_drops_the_oldest_and_a_peer_behind_needs_catch_up() -> None:
    log = DeltaLog(max_entries=2)
    for i in range(4):
        add(log, f"k{i}")
    log.track("p1", 1)
    log.track("p2", 4)  # has everything below 4: not hurt by the bound
    assert log.over_bounds()
    assert log.collect() == 3
    assert sorted(log.entries) == [3, 4] and not log.over_bounds()
    assert log.needs_catch_up("p1") and not log.needs_catch_up("p2")
    assert log.next_interval("p1", 10 * SIZE, everything, 0) is None
    assert send(log, "p2").first == 4


def test_byte_bound_drops_the_oldest_and_a_peer_behind_needs_catch_up() -> None:
    log = DeltaLog(max_bytes=2 * SIZE + 1)
    for i in range(5):
        add(log, f"k{i}")
    log.track("p1", 3)
    assert log.collect() == 4
    assert sorted(log.entries) == [4, 5] and log.bytes == 2 * SIZE
    assert log.needs_catch_up("p1")


# ---- property: random schedules keep the invariants -----------------------------------


@dataclass(frozen=True)
class Sent:
    peer: str
    start: int
    end: int


def admit_shared(path: str) -> bool:
    return not path.startswith("local/")


origins = st.sampled_from([None, *PEERS])
ops = st.one_of(
    st.tuples(
        st.just("append"),
        origins,
        st.sampled_from(["a", "b", "local/c"]),
    ),
    st.tuples(st.just("send"), st.sampled_from(PEERS), st.integers(0, 5 * SIZE)),
    st.tuples(st.just("ack"), st.integers(0, 10_000), st.booleans()),
    st.tuples(st.just("retransmit"), st.integers(0, 300), st.integers(1, 300)),
    st.tuples(st.just("collect")),
)


@dataclass
class Model:
    appended: set[int]
    acked: dict[str, int]  # each peer's acked point after the previous step
    covered: dict[str, set[int]]  # seqs inside an interval the peer acknowledged

    def acknowledge(self, log: DeltaLog, iv: Sent) -> None:
        log.acknowledge(iv.peer, iv.start, iv.end)
        self.covered[iv.peer].update(range(iv.start, iv.end))


def check_invariants(log: DeltaLog, model: Model) -> None:
    for peer, progress in log.peers.items():
        assert progress.acked <= progress.sent <= log.next_seq, (peer, log)
        assert progress.acked >= model.acked[peer], "acked went backwards"
        assert set(range(1, progress.acked)) <= model.covered[peer], "acked past a gap"
        model.acked[peer] = progress.acked
    appended = model.appended
    floor = min(p.acked for p in log.peers.values())
    assert {s for s in appended if s >= floor} <= set(log.entries)
    assert set(log.entries) <= appended


@given(st.lists(ops, max_size=60), st.randoms(use_true_random=False))
def test_random_schedules_keep_progress_consistent_and_drain_the_log(
    steps: list[tuple[object, ...]], rng: random.Random
) -> None:
    log = DeltaLog(max_entries=10**9, max_bytes=10**12)
    for peer in PEERS:
        log.track(peer, 1)
    model = Model(set(), dict.fromkeys(PEERS, 1), {peer: set() for peer in PEERS})
    produced: list[Sent] = []
    now = 0
    for step in steps:
        now += 10
        match step:
            case ("append", origin, path):
                assert origin is None or isinstance(origin, str)
                assert isinstance(path, str)
                entry = add(log, path, origin)
                model.appended.add(entry.seq)
            case ("send", str(peer), int(budget)):
                interval = log.next_interval(peer, budget, admit_shared, now)
                if interval is not None:
                    assert interval.start < interval.end
                    produced.append(Sent(peer, interval.start, interval.end))
            case ("ack", int(which), bool(twice)) if produced:
                iv = produced[which % len(produced)]
                for _ in range(2 if twice else 1):
                    model.acknowledge(log, iv)
            case ("retransmit", int(later), int(timeout)):
                log.retransmit_due(now + later, timeout)
            case ("collect",):
                before = set(log.entries)
                unacked = {s for s in before if any(s not in c for c in model.covered.values())}
                log.collect()
                assert unacked <= set(log.entries), "collected an entry a peer has not acked"
                floor = min(p.acked for p in log.peers.values())
                assert before - set(log.entries) == {s for s in before if s < floor}
        check_invariants(log, model)

    # Deliver everything: ack every interval ever produced (reordered), then send and
    # ack until every peer is up to date. The log must then drain completely.
    shuffled = list(produced)
    rng.shuffle(shuffled)
    for iv in shuffled:
        model.acknowledge(log, iv)
        check_invariants(log, model)
    for peer in PEERS:
        while (interval := log.next_interval(peer, 3 * SIZE, admit_shared, now)) is not None:
            model.acknowledge(log, Sent(peer, interval.start, interval.end))
            check_invariants(log, model)
        assert log.peers[peer].acked == log.next_seq
    log.collect()
    assert len(log) == 0 and log.bytes == 0


def test_a_clock_stepped_back_makes_what_is_in_flight_due_at_once() -> None:
    from sync._propagation import overdue

    assert not overdue(now=1_500, sent_at=1_000, timeout=2_000)
    assert overdue(now=3_000, sent_at=1_000, timeout=2_000)
    assert overdue(now=400, sent_at=1_000, timeout=2_000)  # the wall clock went back


# ---- stalls: backoff and resending on hearing from the peer ---------------------------------


def test_each_timeout_with_nothing_heard_doubles_the_next_up_to_the_longest() -> None:
    log = log_with(1, "p1")
    send(log, "p1", now=0)
    due_at = []
    for now in range(0, 2_000, 50):
        if log.retransmit_due(now, timeout=100, longest=400):
            due_at.append(now)
            send(log, "p1", now=now)  # the resend is in flight from now
    assert due_at[:5] == [100, 300, 700, 1_100, 1_500]  # waits of 100, 200, 400, 400, 400
    assert log.peers["p1"].timeouts == len(due_at)


def test_without_a_longest_timeout_there_is_no_backoff() -> None:
    log = log_with(1, "p1")
    send(log, "p1", now=0)
    assert log.retransmit_due(100, timeout=100) == ["p1"]
    send(log, "p1", now=100)
    assert log.retransmit_due(200, timeout=100) == ["p1"]


def test_ending_the_backoff_makes_the_next_timeout_the_first_again() -> None:
    log = log_with(1, "p1")
    for now in (0, 100, 300):  # sent, then resent at two timeouts: 100, then 200 later
        assert now == 0 or log.retransmit_due(now, timeout=100, longest=1_000) == ["p1"]
        send(log, "p1", now=now)
    assert log.peers["p1"].timeouts == 2
    log.end_backoff("p1")  # an ack came
    assert log.peers["p1"].timeouts == 0
    assert log.retransmit_due(399, timeout=100, longest=1_000) == []  # 100 again, not 400
    assert log.retransmit_due(400, timeout=100, longest=1_000) == ["p1"]
    log.end_backoff("stranger")  # untracked: nothing to do


def test_resend_stale_acts_as_the_fixed_timer_would_without_counting_a_timeout() -> None:
    log = log_with(3, "p1", "p2", "p3")
    first, second = send(log, "p1", now=0), send(log, "p1", now=80)
    send(log, "p2", now=50)
    log.acknowledge("p1", first.start, first.end)  # the oldest left is 20 old at 100
    assert log.resend_stale("p1", now=100, timeout=100) is False
    assert log.resend_stale("p1", now=180, timeout=100) is True
    assert log.resend_stale("p2", now=100, timeout=100) is False  # only 50 old
    assert log.resend_stale("p3", now=100, timeout=100) is False  # nothing in flight
    assert log.resend_stale("stranger", now=100, timeout=100) is False
    p1 = log.peers["p1"]
    assert (p1.acked, p1.sent) == (2, 2) and not p1.inflight and p1.timeouts == 0
    assert send(log, "p1", now=180).first == second.first  # the acked one is not resent


def test_a_probe_answer_resends_only_if_something_was_sent_before_the_probe() -> None:
    log = log_with(3, "p1", "p2")
    first = send(log, "p1", now=0)
    send(log, "p1", now=100)
    send(log, "p2", now=100)
    assert log.resend_sent_by("p2", probe_sent_at=100) is False  # sent with the probe
    assert log.resend_sent_by("p1", probe_sent_at=50) is True
    p1 = log.peers["p1"]
    assert (p1.acked, p1.sent) == (1, 1) and not p1.inflight
    assert send(log, "p1", now=150).start == first.start
    assert log.resend_sent_by("stranger", probe_sent_at=50) is False


def test_a_probe_answer_is_placed_from_its_stamp_and_never_after_the_last_probe() -> None:
    last = 1_700_000_123_456
    for sent in (last, last - 250, last - 16_383):
        assert probe_sent_at(probe_stamp(sent), last) == sent  # within 16 s: exact
    older = last - 16_384 - 250  # older than the stamp tells apart: placed later
    assert older < probe_sent_at(probe_stamp(older), last) <= last
    assert all(last - 16_384 < probe_sent_at(stamp, last) <= last for stamp in (0, 9_999, 16_383))


# ---- data in probes ----------------------------------------------------------------------


def test_a_probe_carries_the_oldest_unacked_interval_again_without_a_resend() -> None:
    log = log_with(3, "p1")
    first, second = send(log, "p1", now=0), send(log, "p1", now=10)
    before = log.peers["p1"]
    held = (dict(before.inflight), before.sent, before.acked, before.timeouts)
    carried = log.probe_interval("p1", budget=SIZE, admit=everything)
    assert carried is not None
    assert (carried.start, carried.end, paths(carried)) == (first.start, first.end, ["k0"])
    assert carried.payload() == first.payload()
    p1 = log.peers["p1"]
    assert (p1.inflight, p1.sent, p1.acked, p1.timeouts) == held  # its timer runs on
    log.acknowledge("p1", first.start, first.end)  # the probe's copy got through
    again = log.probe_interval("p1", budget=SIZE, admit=everything)
    assert again is not None and (again.start, again.end) == (second.start, second.end)


def test_a_probe_carries_nothing_over_its_budget_or_for_a_peer_owed_nothing() -> None:
    log = log_with(3, "p1", "p2")
    send(log, "p1", budget=2 * SIZE, now=0)  # one interval of two entries
    assert log.probe_interval("p1", budget=2 * SIZE - 1, admit=everything) is None
    both = log.probe_interval("p1", budget=2 * SIZE, admit=everything)
    assert both is not None and paths(both) == ["k0", "k1"]
    assert log.probe_interval("p2", budget=10 * SIZE, admit=everything) is None  # none sent
    assert log.probe_interval("stranger", budget=10 * SIZE, admit=everything) is None


def test_a_probe_carries_nothing_for_a_peer_whose_interval_filters_out() -> None:
    log = log_with(1, "p1")
    send(log, "p1", now=0)
    assert log.probe_interval("p1", budget=SIZE, admit=lambda path: False) is None
