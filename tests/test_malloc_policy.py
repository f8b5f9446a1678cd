"""The daemons' allocator policy (sync/adapters/malloc_policy.py), in a child process
so that this test process keeps glibc's defaults."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent(
    """
    import resource, sys
    from sync.adapters.malloc_policy import tune_malloc

    if sys.argv[1] == "tuned":
        assert tune_malloc(), "glibc took the thresholds"
    SIZE, COUNT, BURSTS = 2 << 20, 4, 10  # a burst of frames, joined and freed

    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

    def burst():
        held = [b"\\x01" * SIZE for _ in range(COUNT)]  # writes every page
        del held

    burst()  # the first burst takes its pages from the kernel either way
    before = faults()
    for _ in range(BURSTS):
        burst()
    print(faults() - before)
    """
)
BURST_PAGES = 4 * (2 << 20) // 4096
BURSTS = 10
# glibc's defaults, whatever the environment running the tests asked for
GLIBC_DEFAULTS = {
    k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"
}


def faults_over_bursts(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, mode], check=False, capture_output=True, text=True,
        timeout=60, env=GLIBC_DEFAULTS,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


@pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt"
)
def test_freed_buffers_are_reused_without_faulting_their_pages_in_again() -> None:
    # glibc's defaults hand a burst's memory back to the kernel once it is freed, so
    # each burst faults its pages in afresh; tuned, the heap keeps them for the next.
    assert faults_over_bursts("plain") >= BURSTS * BURST_PAGES // 2
    assert faults_over_bursts("tuned") < BURST_PAGES // 4


def test_it_says_whether_the_thresholds_were_taken() -> None:
    """True on glibc; elsewhere False, and nothing is changed."""
    expected = sys.platform == "linux" and platform.libc_ver()[0] == "glibc"
    done = subprocess.run(
        [sys.executable, "-c", "from sync.adapters.malloc_policy import tune_malloc as t; "
         "print(t())"],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(expected)
