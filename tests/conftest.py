"""Hypothesis settings profiles for the test suite.

- ``dev`` (default): a quick local loop.
- ``ci``: derandomized (the same examples every run), no deadline (timing never
  fails a test), the failing example's blob printed; loaded automatically when
  the ``CI`` environment variable is set (``.ci/run`` sets it).
- ``thorough``: many examples, for deliberate runs:
  ``python -m pytest --hypothesis-profile=thorough``.

Tests that need a number of examples other than the profile's scale it with
:func:`examples`, so the profile still decides.

Once every test module is imported, the objects alive then (torch's, sympy's,
Hypothesis' and ours: about 220,000) are moved out of the garbage collector's
reach (``gc.freeze``): they live as long as the process, and each full collection
of the long-lived generation would otherwise traverse them all (200-300 ms, about
once per 400 examples: a tenth of a property test's time).
"""

from __future__ import annotations

import gc
import os

import pytest
from hypothesis import HealthCheck, settings

_SLOW_DRAWS = [HealthCheck.too_slow, HealthCheck.data_too_large]

settings.register_profile("dev", max_examples=20, deadline=None, suppress_health_check=_SLOW_DRAWS)
settings.register_profile(
    "ci", max_examples=25, derandomize=True, deadline=None, print_blob=True, suppress_health_check=_SLOW_DRAWS
)
settings.register_profile("thorough", max_examples=300, deadline=None, suppress_health_check=_SLOW_DRAWS)
settings.load_profile(os.environ.get("CIRCUITPROOF_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Every test module imported: freeze what is alive, so that full collections skip it (module docstring)."""
    gc.freeze()


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a module of tiny-tensor tests (~100x faster than two on a shared, loaded CPU;
    restored after). A module asks for it with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    from circuitproof.properties.counterexamples import one_torch_thread as single_thread

    with single_thread():
        yield
