"""Small worlds for simulator tests: full scale only runs in the benchmark."""

from __future__ import annotations

import os

# One BLAS thread: the matrices here are small and the machine's cores are shared.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import pytest  # noqa: E402

from services.simulator.world import World  # noqa: E402
from tests.simulator.helpers import SMALL  # noqa: E402


@pytest.fixture(scope="session")
def small_world() -> World:
    """A 4,000-user, 1,500-movie world (built once; tests must not mutate it)."""
    return World.build(SMALL)
