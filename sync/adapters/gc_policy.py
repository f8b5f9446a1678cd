"""How a daemon runs CPython's cyclic garbage collector (embedders may opt in).

The replicated state is millions of small acyclic objects (contexts, dicts,
tuples) that live as long as the process. Reference counting frees them the
moment they die; the cyclic collector only finds cycles, and the state makes none
(collections on the receive path found 0 objects). Yet each young collection walks
every object that survived it, and each older one walks them all again: with
CPython's default thresholds, receiving a large delta interval spent half its time
in the collector.

So a daemon (1) freezes what the store loaded at start, (2) collects young objects
every 50,000 allocations rather than every 700, and (3) freezes what survives each
young collection, so a long-lived object is walked once, not once per generation.
Garbage cycles are still found among young objects; a cycle that dies after it was
frozen waits for the full collection that runs once an hour (logged with its
duration), which bounds what can pile up.

(4) A large received frame is applied with the collector held off, and what it
left young is frozen at once (``applying_large_frame``): its keys become
long-lived state, which a young collection would walk once only to freeze it.
Walking it was 4-6 us of a hub's CPU per received key (each key is some 10
tracked objects), a fifth of all it spent. The young generation is collected
just before, so cycles that died among young objects are still found; the state
makes none (collections of a decoded frame found 0 objects). A refused frame is
not frozen after: its exception and traceback form a cycle for a young collection
to find, and a peer sending garbage must not pile such cycles up until the hourly
collection.

A program that embeds a replica keeps its own settings unless it calls
``tune_gc()`` (and runs ``collect_everything_hourly`` as a task, or collects on its
own schedule); it is process-wide, so it is the program's choice, not the library's.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Iterator
from typing import Any

THRESHOLDS = (50_000, 50, 100)  # allocations before a young collection; then per generation
FULL_COLLECTION_EVERY_S = 3600.0
# A frame this large decodes into thousands of objects (a key is about 25 bytes on the
# wire): worth the young collection before it; smaller ones go the usual way.
LARGE_FRAME_BYTES = 64 * 1024

log = logging.getLogger("edgesync.daemon")


def tune_gc() -> None:
    """Freeze what is loaded; collect young objects rarely; freeze their survivors."""
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
    if _freeze_survivors not in gc.callbacks:
        gc.callbacks.append(_freeze_survivors)


@contextlib.contextmanager
def daemon_gc() -> Iterator[None]:
    """``tune_gc()`` for a block, then the collector as before it (its thresholds, and
    every frozen object thawed): for a benchmark or test that runs a daemon's path
    in its own process, among code that expects CPython's defaults."""
    before = gc.get_threshold()
    tune_gc()
    try:
        yield
    finally:
        if _freeze_survivors in gc.callbacks:
            gc.callbacks.remove(_freeze_survivors)
        gc.set_threshold(*before)
        gc.unfreeze()


def _freeze_survivors(phase: str, info: dict[str, Any]) -> None:
    if phase == "stop" and info["generation"] == 0:
        gc.freeze()  # the young generation is empty now: this moves only its survivors


@contextlib.contextmanager
def applying_large_frame(size: int) -> Iterator[None]:
    """Around applying a received frame of ``size`` bytes: under ``tune_gc()``, and for
    a large frame, collect the young generation first, hold collections off while it
    applies, and freeze what is young once it applied (not if it raised)."""
    tuned = _freeze_survivors in gc.callbacks  # tune_gc() was called
    if not (tuned and size >= LARGE_FRAME_BYTES and gc.isenabled()):
        yield
        return
    gc.collect(0)
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
    gc.freeze()  # reached only when the frame applied: a refused one raised past it


async def collect_everything_hourly(node: str) -> None:
    """Run until cancelled: the full collection that frozen cycles wait for."""
    while True:
        await asyncio.sleep(FULL_COLLECTION_EVERY_S)
        began = time.monotonic()
        gc.unfreeze()
        found = gc.collect()
        gc.freeze()
        took_ms = round((time.monotonic() - began) * 1000)
        log.info("full garbage collection",
                 extra={"node": node, "collected": found, "ms": took_ms})  # fmt: skip
