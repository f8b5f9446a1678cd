"""How a daemon's C allocator keeps the memory it frees (glibc; elsewhere nothing changes).

A daemon relaying large values allocates and frees big buffers all the time: each
received frame is joined into one bytes object (about 256 KiB), each value is cut
out of it and encoded again for the store, and LMDB copies every value into pages
it mallocs for the commit and frees after it. glibc hands such memory back to the
kernel eagerly: a chunk above its mmap threshold (128 KiB at first) is unmapped
when freed, and the top of a heap is trimmed once more than the trim threshold
(at most twice the mmap threshold, so 0.5 MiB for 256 KiB frames) lies free
there. The next frame then faults every page in afresh, and the kernel zeroes
each one first. On the shared 2-core host a fresh page cost about 3 us (a page of
memory the process already holds: 0.07 us), so a hub receiving 16 KiB values took
13-14 page faults a value, about 40 us of its CPU, most of them on memory it had
just freed; and the faults are taken holding the GIL, so the commit thread waits
for them too.

``tune_malloc()`` raises both thresholds for the whole process: buffers below
``MMAP_THRESHOLD_BYTES`` (twice the largest message; 512 KiB on a 32-bit build,
glibc's ceiling there) come from the heap, and up
to ``TRIM_THRESHOLD_BYTES`` of freed memory stays at the top of each heap for the
next allocation instead of going back to the kernel. The price is resident memory:
a daemon keeps up to that much freed memory per heap (one heap per thread that
allocates, a handful in a daemon) after a burst, where glibc would have returned
it. Measured in ``bench/gossip_bench.py``'s large workload (the thresholds set
through glibc's environment variables, alternating runs): the hub's page faults
went from 46,000-53,000 to 34,000-35,000 over 3,600 values, the rest being the
state and digest encodings the hub keeps; see docs/architecture.md.

Like ``tune_gc()``, this is process-wide, so a program that embeds a replica keeps
its own allocator settings unless it calls this.
"""

from __future__ import annotations

import ctypes
import logging
import sys

from sync._messages import DEFAULT_MAX_MESSAGE

log = logging.getLogger("edgesync.daemon")

# mallopt parameters, from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 2 * DEFAULT_MAX_MESSAGE  # a message and its copy come from the heap
TRIM_THRESHOLD_BYTES = 64 * 1024 * 1024  # freed memory a heap keeps at its top
# The most glibc takes for the mmap threshold (DEFAULT_MMAP_THRESHOLD_MAX): 32 MiB on a
# 64-bit build, 512 KiB on a 32-bit one (a Raspberry Pi OS edge, say).
_MMAP_THRESHOLD_MAX = (
    4 * 1024 * 1024 * ctypes.sizeof(ctypes.c_long) if ctypes.sizeof(ctypes.c_void_p) == 8
    else 512 * 1024
)  # fmt: skip


def tune_malloc() -> bool:
    """Set glibc's mmap and trim thresholds (see the module docstring); whether the
    process runs on glibc and took them. Elsewhere (musl, macOS, Windows) a no-op."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)  # the C library this interpreter runs on
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - glibc's own symbol: musl has a stub mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    wanted = {
        "mmap threshold": (M_MMAP_THRESHOLD, min(MMAP_THRESHOLD_BYTES, _MMAP_THRESHOLD_MAX)),
        "trim threshold": (M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES),
    }
    refused = [name for name, (param, value) in wanted.items() if not mallopt(param, value)]
    if refused:
        log.warning("glibc refused the %s", " and the ".join(refused))
    return not refused
