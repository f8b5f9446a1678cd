"""The write-ahead journal of LMDBStorage: records, replay after a crash, torn tails,
stale records, corruption, format upgrade. The crash is real: a child process
commits and dies without closing (``os._exit``), as a SIGKILL would leave it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import lmdb
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync._storage import MemoryStorage, Storage, StorageError, StoreMeta, WriteBatch
from sync.adapters.journal import JOURNAL_FILE, decode_batch, encode_batch, encoded_size
from sync.adapters.lmdb_storage import LMDBStorage, MiB

KEYS = st.binary(min_size=1, max_size=40)
SEQS = st.integers(min_value=0, max_value=(1 << 64) - 1)
PEERS = st.dictionaries(st.text(min_size=1, max_size=8), SEQS, max_size=3)
BATCHES = st.builds(
    WriteBatch,
    meta=st.none() | st.builds(StoreMeta, st.text(max_size=8), st.integers(0, 1 << 40)),
    entries=st.dictionaries(KEYS, st.none() | st.binary(max_size=64), max_size=8),
    context=st.none() | st.binary(max_size=32),
    log_append=st.lists(st.tuples(SEQS, st.binary(max_size=16)), max_size=4),
    log_drop_below=st.none() | SEQS,
    acks=PEERS,
    received=PEERS,
)


@given(BATCHES)
def test_a_batch_reads_back_from_its_record(batch: WriteBatch) -> None:
    payload = encode_batch(batch)
    assert decode_batch(payload, Path("store")) == batch
    assert encoded_size(batch) == len(payload)  # what the store decides by, unencoded


def batches(count: int, keys: int = 50) -> list[WriteBatch]:
    """A history touching every field: overwrites, deletes, log appends and drops."""
    out = [WriteBatch(meta=StoreMeta("n", 1))]
    for i in range(1, count + 1):
        batch = WriteBatch(
            entries={b"k%03d" % (i % keys): b"v%d" % i, b"k%03d" % ((i * 7) % keys): None},
            context=b"ctx%d" % i,
            log_append=[(i, b"d%d" % i)],
            acks={"peer": i // 2},
            received={"peer": i // 3},
        )
        if i % 10 == 0:
            batch.log_drop_below = i - 5
        out.append(batch)
    return out


def contents(store: Storage) -> tuple[object, ...]:
    return (
        store.meta(),
        list(store.entries()),
        store.context(),
        list(store.log()),
        store.acks(),
        store.received(),
    )


def expected(history: list[WriteBatch]) -> tuple[object, ...]:
    memory = MemoryStorage()
    for batch in history:
        memory.commit(batch)
    return contents(memory)


CRASH_AFTER = """
import os, sys
sys.path.insert(0, sys.argv[3])
from test_journal import batches
from sync.adapters.lmdb_storage import LMDBStorage
store = LMDBStorage(sys.argv[1], journal_bytes=int(sys.argv[4]))
for batch in batches(int(sys.argv[2])):
    store.commit(batch)
print(store.write_backs, flush=True)
os._exit(0)  # no close: what the journal holds was never written back
"""


def commit_then_die(store_dir: Path, count: int, journal_bytes: int = MiB) -> int:
    """Commit ``batches(count)`` in a child that exits without closing; its write-backs."""
    args = [str(store_dir), str(count), str(Path(__file__).parent), str(journal_bytes)]
    child = subprocess.run(
        [sys.executable, "-c", CRASH_AFTER, *args], capture_output=True, text=True, check=False
    )
    assert child.returncode == 0, child.stderr
    return int(child.stdout)


def test_a_crash_loses_no_commit_the_journal_holds(tmp_path: Path) -> None:
    assert commit_then_die(tmp_path, 40) == 0  # all 41 commits only in the journal
    with LMDBStorage(tmp_path) as store:
        assert store.journal_replayed == 41
        assert contents(store) == expected(batches(40))
    with LMDBStorage(tmp_path) as store:  # written back at open: nothing left to replay
        assert store.journal_replayed == 0
        assert contents(store) == expected(batches(40))


def test_records_left_from_before_a_write_back_are_not_replayed(tmp_path: Path) -> None:
    # A small journal writes back often; the records after the last write-back sit
    # at its start, over older ones, and only they may be replayed.
    write_backs = commit_then_die(tmp_path, 300, journal_bytes=4096)
    assert write_backs > 5
    with LMDBStorage(tmp_path, journal_bytes=4096) as store:
        assert 0 < store.journal_replayed < 301
        assert contents(store) == expected(batches(300))


def test_a_torn_record_at_the_tail_is_ignored(tmp_path: Path) -> None:
    commit_then_die(tmp_path, 10)
    journal = tmp_path / JOURNAL_FILE
    data = bytearray(journal.read_bytes())
    end = record_ends(bytes(data))[-1]
    data[end - 3 : end] = b"\xff\xff\xff"  # the last record half written: checksum fails
    journal.write_bytes(bytes(data))
    with LMDBStorage(tmp_path) as store:
        assert store.journal_replayed == 10
        assert contents(store) == expected(batches(9))


def record_ends(data: bytes) -> list[int]:
    ends, offset = [], 0
    while data[offset : offset + 4] == b"ESJ1":
        offset += 20 + int.from_bytes(data[offset + 4 : offset + 8], "big")
        ends.append(offset)
    return ends


def test_a_record_that_passes_its_checksum_but_cannot_be_read_is_refused(
    tmp_path: Path,
) -> None:
    commit_then_die(tmp_path, 3)
    journal = tmp_path / JOURNAL_FILE
    data = journal.read_bytes()
    first = record_ends(data)[0]
    # A second record whose payload is garbage, with a correct checksum.
    seq = int.from_bytes(data[first + 8 : first + 16], "big")
    payload = b"\x09garbage"
    crc = zlib.crc32(payload, zlib.crc32(seq.to_bytes(8, "big")))
    record = b"ESJ1" + len(payload).to_bytes(4, "big") + data[first + 8 : first + 16]
    record += crc.to_bytes(4, "big") + payload
    journal.write_bytes(data[:first] + record + data[first + len(record) :])
    with pytest.raises(StorageError, match=rf"journal record {seq} passes its checksum"):
        LMDBStorage(tmp_path)
    assert journal.read_bytes()[: first + len(record)] == data[:first] + record
    journal.write_bytes(data)  # repaired (say, from a backup): nothing was lost
    with LMDBStorage(tmp_path) as store:
        assert contents(store) == expected(batches(3))


def test_an_older_data_file_replays_no_journal_it_does_not_continue(tmp_path: Path) -> None:
    older = tmp_path / "older"
    with LMDBStorage(tmp_path / "store", journal_bytes=4096) as store:
        for batch in batches(20):
            store.commit(batch)
    shutil.copytree(tmp_path / "store", older)  # closed: everything written back
    write_backs = commit_then_die(tmp_path / "store", 300, journal_bytes=4096)
    assert write_backs > 5
    shutil.copy(older / "data.mdb", tmp_path / "store" / "data.mdb")  # data rolled back
    with LMDBStorage(tmp_path / "store", journal_bytes=4096) as store:
        assert store.journal_replayed == 0
        assert contents(store) == expected(batches(20))


def test_a_format_1_store_is_upgraded_at_open(tmp_path: Path) -> None:
    env = lmdb.open(str(tmp_path), max_dbs=5)
    meta = env.open_db(b"meta")
    entries = env.open_db(b"entries")
    old = {"clean_shutdown": True, "epoch": 4, "format_version": 1, "node_id": "n"}
    with env.begin(write=True) as txn:
        txn.put(b"meta", json.dumps(old).encode(), db=meta)
        txn.put(b"k", b"v", db=entries)
    env.close()
    with LMDBStorage(tmp_path) as store:
        assert store.meta() == StoreMeta("n", 4, clean_shutdown=True, format_version=2)
        assert list(store.entries()) == [(b"k", b"v")]


def test_a_failed_journal_write_commits_nothing_and_the_next_commit_reuses_its_place(
    tmp_path: Path,
) -> None:
    history = batches(6)
    with LMDBStorage(tmp_path) as store:
        for batch in history[:3]:
            store.commit(batch)
        journal = store._journal
        assert journal is not None
        real_fd = journal._fd
        journal._fd = os.open(os.devnull, os.O_RDONLY)  # writes fail with EBADF
        offset = journal.offset
        with pytest.raises(StorageError, match=r"cannot write journal .* not committed"):
            store.commit(history[3])
        assert journal.offset == offset
        os.close(journal._fd)
        journal._fd = real_fd
        for batch in history[4:]:
            store.commit(batch)
        assert contents(store) == expected(history[:3] + history[4:])


FULL_DISK = """
import resource, signal, sys
from sync._storage import StorageError, WriteBatch
from sync.adapters.lmdb_storage import LMDBStorage
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
with LMDBStorage(sys.argv[1]) as store:
    store.commit(WriteBatch(entries={b"seed": b"1"}))
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, hard))  # the journal cannot grow
    i = 0
    try:
        while True:
            i += 1
            store.commit(WriteBatch(entries={b"k%05d" % i: b"x" * 500}))
    except StorageError as exc:
        print("refused:", exc, flush=True)
    rows = list(store.entries())
    print(len(rows), rows[-2][0].decode(), flush=True)  # reads go on
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space freed
    store.commit(WriteBatch(entries={b"after": b"2"}))
    print(i, flush=True)
"""


def test_a_full_disk_refuses_the_commit_and_loses_nothing(tmp_path: Path) -> None:
    # A file-size limit stands in for a full disk: the journal's write fails as on ENOSPC.
    child = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    refused, read, last = child.stdout.splitlines()
    assert refused.startswith(f"refused: cannot write journal {tmp_path / JOURNAL_FILE}")
    failed_at = int(last)
    assert read == f"{failed_at} k{failed_at - 1:05d}"  # seed and every commit before
    with LMDBStorage(tmp_path) as store:
        keys = [key for key, _ in store.entries()]
    assert keys == [b"after"] + [b"k%05d" % i for i in range(1, failed_at)] + [b"seed"]


def test_reads_see_every_commit_before_and_after_write_backs(tmp_path: Path) -> None:
    # A small journal writes back every few dozen commits, so reads merge the
    # journalled overlay with LMDB in every proportion along the way.
    memory = MemoryStorage()
    with LMDBStorage(tmp_path, journal_bytes=4096) as store:
        for batch in batches(120, keys=20):
            store.commit(batch)
            memory.commit(batch)
            assert contents(store) == contents(memory)
            assert store.entries_snapshot(b"k01") == memory.entries_snapshot(b"k01")
        assert store.write_backs >= 3


def test_an_abandoned_store_replays_its_journal_at_the_next_open(tmp_path: Path) -> None:
    with LMDBStorage(tmp_path) as store:
        for batch in batches(5):
            store.commit(batch)
        store.abandon()  # the simulator's crash: nothing written back
    with LMDBStorage(tmp_path) as store:
        assert store.journal_replayed == 6
        assert contents(store) == expected(batches(5))


def test_a_big_batch_commits_straight_to_lmdb_after_the_waiting_ones(tmp_path: Path) -> None:
    small = [WriteBatch(entries={b"k": b"%d" % i}) for i in (1, 3)]
    big = WriteBatch(entries={b"k": b"2", **{b"fill%03d" % i: b"x" * 100 for i in range(20)}})
    history = [small[0], big, small[1]]
    with LMDBStorage(tmp_path, journal_bytes=4096) as store:  # big: over 512 bytes
        for batch in history:
            store.commit(batch)
        assert store.write_backs == 1  # the first small one, before the big one
        assert store._journal is not None and store._journal.records == 1
        store.abandon()
    with LMDBStorage(tmp_path, journal_bytes=4096) as store:
        assert store.journal_replayed == 1
        assert contents(store) == expected(history)


def commit_until_second_file(store: LMDBStorage, history: list[WriteBatch]) -> int:
    """Commit ``history`` until a write-back has begun and a few records went to the
    other journal file (while the test holds the write-back back); how many."""
    for done, batch in enumerate(history, 1):
        store.commit(batch)
        journal = store._journal
        assert journal is not None
        if store._flushing is not None and journal.records == 5:
            return done
    raise AssertionError("no write-back began")


def test_commits_and_reads_go_on_while_a_write_back_is_under_way(tmp_path: Path) -> None:
    history = batches(300)
    with LMDBStorage(tmp_path, journal_bytes=4096) as store:
        with store._lmdb_writing:  # the write-back waits for LMDB's write lock
            done = commit_until_second_file(store, history)
            assert store.write_backs == 0  # every commit so far returned all the same
            assert contents(store) == expected(history[:done])  # both overlays merged
            assert store.usage().journal_bytes > 4096 - 200  # both files count
        for batch in history[done:]:
            store.commit(batch)
        assert store.write_backs >= 5
        assert contents(store) == expected(history)
    with LMDBStorage(tmp_path, journal_bytes=4096) as store:
        assert contents(store) == expected(history)


CRASH_IN_WRITE_BACK = """
import os, sys
sys.path.insert(0, sys.argv[2])
from test_journal import batches, commit_until_second_file
from sync.adapters.lmdb_storage import LMDBStorage
store = LMDBStorage(sys.argv[1], journal_bytes=4096)
store._lmdb_writing.acquire()  # the write-back never gets to commit
print(commit_until_second_file(store, batches(300)), flush=True)
os._exit(0)
"""


def test_a_crash_during_a_write_back_replays_both_journal_files(tmp_path: Path) -> None:
    child = subprocess.run(
        [sys.executable, "-c", CRASH_IN_WRITE_BACK, str(tmp_path), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    done = int(child.stdout)
    with LMDBStorage(tmp_path, journal_bytes=4096) as store:
        assert store.journal_replayed == done  # the first batch is a record too
        assert contents(store) == expected(batches(300)[:done])


def test_a_failed_write_back_is_done_again_by_the_commit_that_needs_its_file(
    tmp_path: Path,
) -> None:
    history = batches(300)
    with LMDBStorage(tmp_path, journal_bytes=4096) as store:
        real = store._commit_to_lmdb_locked
        failing = True

        def flaky(batch: WriteBatch, applied: int | None) -> None:
            if failing:
                raise StorageError("disk on fire")
            real(batch, applied)

        store._commit_to_lmdb_locked = flaky  # type: ignore[method-assign]
        committed = 0
        with pytest.raises(StorageError, match="disk on fire"):
            for batch in history:
                store.commit(batch)
                committed += 1
        assert committed > 20  # the next journal file took commits meanwhile
        assert contents(store) == expected(history[:committed])  # reads go on
        failing = False
        for batch in history[committed + 1 :]:
            store.commit(batch)
        survivors = history[:committed] + history[committed + 1 :]
        assert contents(store) == expected(survivors)
    with LMDBStorage(tmp_path, journal_bytes=4096) as store:
        assert contents(store) == expected(survivors)
