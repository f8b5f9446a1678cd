"""The daemons' garbage-collector policy (sync/adapters/gc_policy.py), in a child process
so that this test process keeps CPython's defaults."""

from __future__ import annotations

import subprocess
import sys
import textwrap

CHILD = textwrap.dedent(
    """
    import gc
    from sync.adapters.gc_policy import THRESHOLDS, tune_gc

    class Node:
        def __init__(self):
            self.other = self

    tune_gc()
    assert gc.get_threshold() == THRESHOLDS
    frozen_at_start = gc.get_freeze_count()
    kept = [[i] for i in range(1000)]  # survivors: lists (always tracked) still referenced
    Node()  # a cycle that is garbage before the next young collection
    assert gc.collect(0) == 1, "a garbage cycle among young objects is still collected"
    survivors = gc.get_freeze_count() - frozen_at_start
    assert survivors >= len(kept), survivors  # moved out of every later walk
    assert gc.get_count()[0] == 0
    print("ok")
    """
)


def test_young_collections_still_find_cycles_and_their_survivors_are_frozen() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD], check=False, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


FRAME_CHILD = textwrap.dedent(
    """
    import gc, weakref
    from sync.adapters.gc_policy import LARGE_FRAME_BYTES, THRESHOLDS, applying_large_frame, tune_gc

    class Node:
        def __init__(self):
            self.other = self

    with applying_large_frame(LARGE_FRAME_BYTES):
        assert gc.isenabled(), "an embedding program's own GC settings are left alone"
    tune_gc()
    with applying_large_frame(LARGE_FRAME_BYTES - 1):
        assert gc.isenabled(), "small frames go the usual way"

    dead = weakref.ref(Node())  # a garbage cycle among young objects
    frozen = gc.get_freeze_count()
    with applying_large_frame(LARGE_FRAME_BYTES):
        assert dead() is None, "the young generation is collected before the frame"
        state = [[i] for i in range(2 * THRESHOLDS[0])]  # what a frame decodes
        assert gc.get_count()[0] > THRESHOLDS[0], "no collection walks it meanwhile"
    assert gc.isenabled() and gc.get_count()[0] == 0
    assert gc.get_freeze_count() - frozen >= len(state), "frozen once applied"

    try:
        with applying_large_frame(LARGE_FRAME_BYTES):
            at_start = gc.get_freeze_count()
            refused = [[i] for i in range(1000)]
            raise ValueError("a refused frame")
    except ValueError:
        pass
    assert gc.isenabled() and gc.get_count()[0] > len(refused) // 2, "what it made is young"
    assert gc.get_freeze_count() < at_start + len(refused), "nothing frozen after it"
    print("ok")
    """
)


def test_a_large_frame_applies_without_collections_and_is_frozen_after() -> None:
    done = subprocess.run(
        [sys.executable, "-c", FRAME_CHILD], check=False, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
