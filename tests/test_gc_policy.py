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
