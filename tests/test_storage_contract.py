"""The Storage contract, run against MemoryStorage and LMDBStorage; then LMDB-only behaviour.

The LMDB-only tests that need a real crash (SIGKILL of a child process holding a
reader slot or committing in a loop) or a real I/O failure run a child Python.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sync._storage import (
    STORE_FORMAT,
    IncompatibleStoreError,
    MemoryStorage,
    Storage,
    StorageError,
    StoreFullError,
    StoreMeta,
    StoreUsage,
    WriteBatch,
)
from sync.adapters import lmdb_storage
from sync.adapters.lmdb_storage import LMDBStorage, MiB

META = StoreMeta(node_id="node-a", epoch=3, clean_shutdown=True)


@pytest.fixture(params=["memory", "lmdb", "lmdb-unjournalled"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    if request.param == "memory":
        store: Storage = MemoryStorage()
    else:
        journal_bytes = 0 if request.param == "lmdb-unjournalled" else MiB
        store = LMDBStorage(tmp_path / "store", journal_bytes=journal_bytes)
    with store:
        yield store


def snapshot(store: Storage) -> tuple[object, ...]:
    """Everything a store holds, for comparing before and after."""
    return store.meta(), list(store.entries()), store.context(), list(store.log()), store.acks()


# -- the contract: both implementations --------------------------------------------


def test_a_fresh_store_holds_nothing(storage: Storage) -> None:
    assert storage.meta() is None
    assert snapshot(storage) == (None, [], None, [], {})


def test_every_field_reads_back(storage: Storage) -> None:
    storage.commit(
        WriteBatch(
            meta=META,
            entries={b"k1": b"v1", b"k2": b"\x00\xff"},
            context=b"ctx",
            log_append=[(1, b"d1"), (2, b"d2")],
            acks={"peer-b": 2, "peer-é": 1},
        )
    )
    assert storage.meta() == META
    assert list(storage.entries()) == [(b"k1", b"v1"), (b"k2", b"\x00\xff")]
    assert storage.context() == b"ctx"
    assert list(storage.log()) == [(1, b"d1"), (2, b"d2")]
    assert storage.acks() == {"peer-b": 2, "peer-é": 1}


def test_later_commits_overwrite_and_leave_other_fields_alone(storage: Storage) -> None:
    storage.commit(WriteBatch(meta=META, entries={b"k": b"1"}, context=b"c1", acks={"p": 1}))
    storage.commit(WriteBatch(meta=META.with_clean_shutdown(False), acks={"p": 5}))
    storage.commit(WriteBatch(entries={b"k": b"2"}, context=b"c2"))
    assert storage.meta() == META.with_clean_shutdown(False)
    assert list(storage.entries()) == [(b"k", b"2")]
    assert storage.context() == b"c2"
    assert storage.acks() == {"p": 5}


def test_a_none_value_deletes_the_entry(storage: Storage) -> None:
    storage.commit(WriteBatch(entries={b"a": b"1", b"b": b"2"}))
    storage.commit(WriteBatch(entries={b"a": None, b"never-there": None}))
    assert list(storage.entries()) == [(b"b", b"2")]


def test_log_is_in_numeric_order_and_drops_below_a_seq(storage: Storage) -> None:
    seqs = [256, 1, 255, 2**40, 2, 65536]
    storage.commit(WriteBatch(log_append=[(s, b"d%d" % s) for s in seqs]))
    assert [s for s, _ in storage.log()] == sorted(seqs)
    storage.commit(WriteBatch(log_drop_below=256))
    assert list(storage.log()) == [(256, b"d256"), (65536, b"d65536"), (2**40, b"d%d" % 2**40)]
    storage.commit(WriteBatch(log_drop_below=0))
    assert len(list(storage.log())) == 3
    storage.commit(WriteBatch(log_drop_below=2**41))
    assert list(storage.log()) == []


def test_a_batch_appends_before_it_drops(storage: Storage) -> None:
    storage.commit(WriteBatch(log_append=[(1, b"a"), (2, b"b"), (3, b"c")], log_drop_below=3))
    assert list(storage.log()) == [(3, b"c")]


PREFIX_KEYS = [b"b", b"a0", b"a/b", b"a", b"a/", b"a/b/c", b"\xff", b"a/\xff", b"0"]


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        (b"", [b"0", b"a", b"a/", b"a/b", b"a/b/c", b"a/\xff", b"a0", b"b", b"\xff"]),
        (b"a", [b"a", b"a/", b"a/b", b"a/b/c", b"a/\xff", b"a0"]),
        (b"a/", [b"a/", b"a/b", b"a/b/c", b"a/\xff"]),
        (b"a/b", [b"a/b", b"a/b/c"]),
        (b"a0", [b"a0"]),
        (b"b", [b"b"]),
        (b"\xff", [b"\xff"]),
        (b"a/c", []),
        (b"c", []),
        (b"\xff\xff", []),
    ],
)
def test_prefix_scans_return_exactly_the_prefix_in_key_order(
    storage: Storage, prefix: bytes, expected: list[bytes]
) -> None:
    storage.commit(WriteBatch(entries={k: b"v" + k for k in PREFIX_KEYS}))
    assert list(storage.entries(prefix)) == [(k, b"v" + k) for k in expected]


def test_an_empty_batch_changes_nothing(storage: Storage) -> None:
    storage.commit(WriteBatch())
    assert snapshot(storage) == (None, [], None, [], {})
    storage.commit(WriteBatch(meta=META, entries={b"k": b"v"}, log_append=[(1, b"d")]))
    before = snapshot(storage)
    storage.commit(WriteBatch())
    assert snapshot(storage) == before


def test_usage_grows_with_what_is_stored(storage: Storage) -> None:
    empty = storage.usage()
    storage.commit(WriteBatch(entries=fill(64, 4096), log_append=[(1, b"d" * 4096)]))
    used = storage.usage()
    assert used.used_bytes >= empty.used_bytes + 65 * 4096
    assert used.max_bytes is None or used.used_bytes <= used.max_bytes


def test_absorb_folds_a_later_batch_into_one_commit(storage: Storage) -> None:
    first = WriteBatch(
        meta=META,
        entries={b"k1": b"1", b"k2": b"2"},
        context=b"c1",
        log_append=[(1, b"d1"), (2, b"d2")],
        log_drop_below=2,
        acks={"p": 1, "q": 1},
    )
    later = WriteBatch(
        meta=META.with_clean_shutdown(False),
        entries={b"k1": None, b"k3": b"3"},
        log_append=[(3, b"d3")],
        log_drop_below=1,  # lower than first's: the max wins
        acks={"p": 3},
    )
    first.absorb(later)
    assert first.meta == META.with_clean_shutdown(False)
    assert first.entries == {b"k1": None, b"k2": b"2", b"k3": b"3"}
    assert first.context == b"c1"  # later had none: the earlier one stays
    assert first.log_append == [(1, b"d1"), (2, b"d2"), (3, b"d3")]
    assert first.log_drop_below == 2
    assert first.acks == {"p": 3, "q": 1}
    first.absorb(WriteBatch(context=b"c2", log_drop_below=3))
    assert (first.context, first.log_drop_below) == (b"c2", 3)
    assert WriteBatch().is_empty()
    assert not first.is_empty()

    storage.commit(first)
    assert snapshot(storage) == (
        META.with_clean_shutdown(False),
        [(b"k2", b"2"), (b"k3", b"3")],
        b"c2",
        [(3, b"d3")],
        {"p": 3, "q": 1},
    )


# -- LMDB only ---------------------------------------------------------------------


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"


def fill(count: int, size: int, tag: bytes = b"big") -> dict[bytes, bytes | None]:
    return {b"%s/%05d" % (tag, i): bytes([i % 251]) * size for i in range(count)}


def test_data_survives_close_and_reopen(store_dir: Path) -> None:
    batch = WriteBatch(
        meta=META,
        entries={b"k": b"v", b"gone": b"x"},
        context=b"ctx",
        log_append=[(7, b"d7"), (300, b"d300")],
        acks={"peer-é": 300},
    )
    with LMDBStorage(store_dir) as store:
        store.commit(batch)
        store.commit(WriteBatch(entries={b"gone": None}))
        expected = snapshot(store)
    with LMDBStorage(store_dir) as store:
        assert snapshot(store) == expected
        assert store.stale_readers_cleared == 0
    assert expected[1] == [(b"k", b"v")]


def test_close_is_idempotent_and_a_closed_store_refuses_use(store_dir: Path) -> None:
    store = LMDBStorage(store_dir)
    assert "map_size=" in repr(store)
    store.close()
    store.close()
    assert "closed" in repr(store)
    with pytest.raises(StorageError, match="closed"):
        store.meta()
    with pytest.raises(StorageError, match="closed"):
        store.commit(WriteBatch(entries={b"k": b"v"}))


def test_scans_resume_correctly_across_chunks(
    store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lmdb_storage, "SCAN_CHUNK", 3)
    keys = [b"p/%02d" % i for i in range(10)] + [b"a", b"q"]
    with LMDBStorage(store_dir) as store:
        store.commit(
            WriteBatch(entries={k: k for k in keys}, log_append=[(i, b"") for i in range(1, 8)])
        )
        assert [k for k, _ in store.entries(b"p/")] == sorted(keys)[1:11]
        assert [k for k, _ in store.entries()] == sorted(keys)
        assert [s for s, _ in store.log()] == list(range(1, 8))


def test_keys_lmdb_cannot_hold_are_refused_and_nothing_is_applied(store_dir: Path) -> None:
    with LMDBStorage(store_dir) as store:
        for bad in (b"", b"k" * 512):
            with pytest.raises(StorageError, match=r"keys must be 1\.\.511 bytes"):
                store.commit(WriteBatch(entries={b"ok": b"1", bad: b"v"}))
        with pytest.raises(StorageError, match="outside"):
            store.commit(WriteBatch(entries={b"ok": b"1"}, log_append=[(-1, b"d")]))
        assert list(store.entries()) == []


def test_the_map_grows_for_a_commit_bigger_than_it(store_dir: Path) -> None:
    big = fill(80, 64 * 1024)  # 5 MiB
    with LMDBStorage(store_dir, initial_map_size=MiB) as store:
        store.commit(WriteBatch(entries=big, log_append=[(1, b"d" * MiB)]))
        assert store.map_size() > 5 * MiB
        assert dict(store.entries()) == big
        assert list(store.log()) == [(1, b"d" * MiB)]
    with LMDBStorage(store_dir, initial_map_size=MiB) as store:
        assert dict(store.entries(b"big/")) == big


@pytest.mark.parametrize("journal_bytes", [0, MiB])
def test_at_the_ceiling_a_commit_is_refused_whole_and_the_store_goes_on(
    store_dir: Path, journal_bytes: int
) -> None:
    with LMDBStorage(
        store_dir, initial_map_size=MiB, max_map_size=4 * MiB, journal_bytes=journal_bytes
    ) as store:
        store.commit(WriteBatch(meta=META, log_append=[(i, b"L" * 8192) for i in range(1, 257)]))
        before = snapshot(store)  # ~2 MiB of log

        too_big = WriteBatch(entries=fill(40, 64 * 1024), context=b"ctx", acks={"p": 9})
        too_big.log_append.append((999, b"new"))
        with pytest.raises(StoreFullError, match=r"4194304 bytes.*--max-store-size"):
            store.commit(too_big)
        assert store.map_size() == 4 * MiB
        assert snapshot(store) == before  # nothing of that batch, and reads still work

        store.commit(WriteBatch(entries={b"small": b"1"}))
        assert list(store.entries()) == [(b"small", b"1")]

        # Trimming the log frees its pages, which the next commit may take (LMDB reuses
        # pages a commit freed from the commit after next; the store makes one more at
        # the ceiling, and journalled, the trim reaches LMDB only at the write-back).
        store.commit(WriteBatch(log_drop_below=257))
        store.commit(too_big)
        assert store.acks() == {"p": 9}


def test_usage_reports_the_ceiling_and_what_the_journal_holds(store_dir: Path) -> None:
    with LMDBStorage(store_dir, max_map_size=64 * MiB, journal_bytes=MiB) as store:
        store.commit(WriteBatch(entries={b"k": b"v" * 100}))
        usage = store.usage()
        assert usage.max_bytes == 64 * MiB and usage.write_backs == 0
        assert 100 < usage.journal_bytes < 4096  # journalled, not yet in LMDB
        for i in range(200):  # past 1 MiB of journal: one write-back at least
            store.commit(WriteBatch(entries={b"k%d" % i: b"v" * 8000}))
        usage = store.usage()
        assert usage.write_backs >= 1 and usage.journal_bytes < MiB
        assert usage == StoreUsage(usage.used_bytes, 64 * MiB, usage.journal_bytes, 1)


def test_a_second_opener_is_told_the_store_is_in_use(store_dir: Path) -> None:
    with LMDBStorage(store_dir) as store:
        store.commit(WriteBatch(entries={b"k": b"v"}))
        with pytest.raises(StorageError, match=rf"in use by another process \(pid {os.getpid()}\)"):
            LMDBStorage(store_dir)
        probe = (
            "import sys; from sync.adapters.lmdb_storage import LMDBStorage as S; S(sys.argv[1])"
        )
        child = subprocess.run(
            [sys.executable, "-c", probe, str(store_dir)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert child.returncode != 0
        assert (
            f"StorageError: store {store_dir} is in use by another process (pid {os.getpid()})"
            in (child.stderr)
        )
        assert list(store.entries()) == [(b"k", b"v")]
    with LMDBStorage(store_dir) as store:  # released on close
        assert list(store.entries()) == [(b"k", b"v")]


def test_a_store_of_another_format_is_refused_naming_both_versions(store_dir: Path) -> None:
    with LMDBStorage(store_dir) as store:
        store.commit(WriteBatch(meta=StoreMeta("node-a", epoch=1, format_version=99)))
    message = (
        f"store at {store_dir} was written in store format 99; "
        f"this build reads format {STORE_FORMAT} (and upgrades format 1)"
    )
    with pytest.raises(IncompatibleStoreError) as refused:
        LMDBStorage(store_dir)
    assert str(refused.value) == message
    with pytest.raises(IncompatibleStoreError):  # the refused open released its lock
        LMDBStorage(store_dir)


def test_a_garbage_data_file_is_refused_with_a_storage_error(store_dir: Path) -> None:
    store_dir.mkdir()
    (store_dir / "data.mdb").write_bytes(b"not an lmdb file " * 1000)
    with pytest.raises(
        StorageError, match=rf"cannot open store at {store_dir}: .*not an LMDB file"
    ):
        LMDBStorage(store_dir)


def test_a_path_that_is_a_file_is_refused_with_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError, match="cannot create store directory"):
        LMDBStorage(tmp_path / "file")


def run_child(script: str, *args: object) -> subprocess.Popen[str]:
    argv = [sys.executable, "-c", script, *map(str, args)]
    return subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


HOLD_THE_ENV = """
import sys, lmdb
env = lmdb.open(sys.argv[1], max_dbs=4)
txn = env.begin() if sys.argv[2] == "reader" else None
print("ready", flush=True)
sys.stdin.read()
"""


def test_a_dead_processs_reader_slot_is_cleared_at_open(store_dir: Path) -> None:
    # LMDB resets its reader table when the first process opens the environment, so a
    # slot only goes stale while another process keeps the environment open: a keeper
    # does, a second child takes a read slot and dies by SIGKILL, then we open.
    with LMDBStorage(store_dir) as store:
        store.commit(WriteBatch(entries={b"k": b"v"}))
    with run_child(HOLD_THE_ENV, store_dir, "keeper") as keeper:
        assert keeper.stdout is not None
        assert keeper.stdout.readline() == "ready\n", keeper.communicate()[1]
        with run_child(HOLD_THE_ENV, store_dir, "reader") as reader:
            assert reader.stdout is not None
            assert reader.stdout.readline() == "ready\n", reader.communicate()[1]
            reader.kill()
            reader.communicate()
        with LMDBStorage(store_dir) as store:
            assert store.stale_readers_cleared >= 1
            assert list(store.entries()) == [(b"k", b"v")]
        keeper.communicate(input="", timeout=30)  # EOF on stdin: the keeper exits
    assert keeper.returncode == 0


COMMIT_FOREVER = """
import sys
from sync._storage import WriteBatch
from sync.adapters.lmdb_storage import LMDBStorage
store = LMDBStorage(sys.argv[1])
seq = 0
while True:
    seq += 1
    store.commit(WriteBatch(entries={b"k%d" % seq: b"v"}, log_append=[(seq, b"d%d" % seq)]))
    print(seq, flush=True)
"""


def test_a_returned_commit_survives_kill_9(store_dir: Path) -> None:
    with run_child(COMMIT_FOREVER, store_dir) as child:
        assert child.stdout is not None
        seen = [child.stdout.readline() for _ in range(20)]
        child.kill()
        # Read the rest through the same file object: communicate() reads the raw pipe
        # and would skip lines already sitting in the text wrapper's buffer.
        rest = child.stdout.read()
        errors = child.stderr.read() if child.stderr else ""
        child.wait()
    printed = [
        int(line) for line in [*seen, *rest.splitlines(keepends=True)] if line.endswith("\n")
    ]
    assert printed[:20] == list(range(1, 21)), errors
    with LMDBStorage(store_dir) as store:
        logged = [seq for seq, _ in store.log()]
        assert logged[: len(printed)] == printed  # every acknowledged commit, in order
        assert logged == list(range(1, len(logged) + 1))  # and no torn or partial batch
        assert len(list(store.entries(b"k"))) == len(logged)


FAIL_ON_IO = """
import resource, signal, sys
from sync._storage import StorageError, WriteBatch
from sync.adapters.lmdb_storage import LMDBStorage
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
with LMDBStorage(sys.argv[1]) as store:
    store.commit(WriteBatch(entries={b"seed": b"1"}))
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))
    big = {b"big%d" % i: b"x" * 65536 for i in range(64)}
    try:
        store.commit(WriteBatch(entries=big, log_append=[(1, b"d")]))
    except StorageError as exc:
        print("refused:", exc, flush=True)
    store.commit(WriteBatch(entries={b"small": b"2"}))
"""


def test_an_io_failure_in_commit_is_a_storage_error_and_applies_nothing(store_dir: Path) -> None:
    # A file-size limit stands in for a full disk: LMDB's write fails the same way.
    with run_child(FAIL_ON_IO, store_dir) as child:
        out, errors = child.communicate(timeout=60)
    assert child.returncode == 0, errors
    assert out.startswith(f"refused: commit to store at {store_dir} failed, nothing was applied:")
    assert out.count("\n") == 1
    with LMDBStorage(store_dir) as store:
        assert list(store.entries()) == [(b"seed", b"1"), (b"small", b"2")]
        assert list(store.log()) == []


def test_a_snapshot_sees_whole_commits_while_another_thread_commits(storage: Storage) -> None:
    """What a status digest relies on: read from another thread, one commit at a time."""
    keys = [f"k/{i:05}".encode() for i in range(20_000)]  # a commit longer than a GIL switch
    prefix_rows = [(b"j/0", b"x")]
    storage.commit(WriteBatch(entries=dict(prefix_rows)))
    stop = threading.Event()

    def writer() -> None:
        for version in range(1, 60):
            storage.commit(WriteBatch(entries=dict.fromkeys(keys, b"%d" % version)))
        stop.set()

    thread = threading.Thread(target=writer)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # threads take turns often: a torn read would show
    try:
        thread.start()
        seen = read_snapshots_until(stop, storage, len(keys))
    finally:
        sys.setswitchinterval(switch)
        thread.join()
    assert storage.entries_snapshot(b"k/") == list(storage.entries(b"k/"))
    assert storage.entries_snapshot(b"j/") == prefix_rows
    assert b"59" in seen


def read_snapshots_until(stop: threading.Event, storage: Storage, count: int) -> set[bytes]:
    """Snapshot the k/ rows until ``stop`` (and once more); the values seen."""
    seen: set[bytes] = set()
    done = False
    while not done:
        done = stop.is_set()  # one more read after the last commit
        rows = storage.entries_snapshot(b"k/")
        values = {v for _, v in rows}
        assert len(values) <= 1, f"a snapshot mixed commits: {sorted(values)[:4]}"
        assert rows == sorted(rows) and len(rows) in (0, count)
        seen |= values
    return seen
