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

A program that embeds a replica keeps its own settings unless it calls
``tune_gc()`` (and runs ``collect_everything_hourly`` as a task, or collects on its
own schedule); it is process-wide, so it is the program's choice, not the library's.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import Any

THRESHOLDS = (50_000, 50, 100)  # allocations before a young collection; then per generation
FULL_COLLECTION_EVERY_S = 3600.0

log = logging.getLogger("edgesync.daemon")


def tune_gc() -> None:
    """Freeze what is loaded; collect young objects rarely; freeze their survivors."""
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
    if _freeze_survivors not in gc.callbacks:
        gc.callbacks.append(_freeze_survivors)


def _freeze_survivors(phase: str, info: dict[str, Any]) -> None:
    if phase == "stop" and info["generation"] == 0:
        gc.freeze()  # the young generation is empty now: this moves only its survivors


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
