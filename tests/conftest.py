"""Hypothesis profiles: `ci` (the default) and `thorough` (HYPOTHESIS_PROFILE=thorough);
the `fleet` fixture of daemons on loopback."""

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

# CI is derandomized: a given commit always runs the same examples, so a failure
# reproduces and a pass is not luck. `thorough` explores with fresh randomness.
settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile(
    "thorough",
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Any]:
    """Daemons as real processes on loopback (``test_daemons.Fleet``), killed after."""
    from test_daemons import Fleet

    f = Fleet(tmp_path)
    yield f
    for name in list(f.procs):
        f.procs[name].kill()
        f.procs.pop(name).wait()
