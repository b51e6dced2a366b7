"""Shared hypothesis settings of the property and fuzz tests (readers, weight loaders, config, server).

    from hypothesis import given
    from fuzz_settings import DEEP, FAST, fuzz

    @FAST                      # in ``make test``: FAST_EXAMPLES examples
    @given(st.binary())
    def test_loader_never_crashes(data): ...

    @pytest.mark.slow          # ``pytest -m slow``: the deep variant of the same property
    @DEEP
    @given(st.binary())
    def test_loader_never_crashes_deep(data): ...

    @fuzz(20)                  # a slow target (a subprocess, a model): fewer examples

Every profile has no deadline (the machine's cores are shared: a slow example is not a failure) and
writes no example database; hypothesis's other caches go to a folder under the system's temporary folder,
not into the checkout. The default profile ``paddle-models`` (loaded by
``tests/conftest.py``) is derandomized: each run tries the same examples, so a failure in CI reproduces
locally. ``HYPOTHESIS_PROFILE=paddle-models-random`` draws fresh examples each run (a local fuzzing
session; hypothesis prints the failing example and a ``@reproduce_failure`` line to keep as a test).
"""
from __future__ import annotations

import os
import tempfile

from hypothesis import HealthCheck, settings
from hypothesis.configuration import set_hypothesis_home_dir

set_hypothesis_home_dir(os.path.join(tempfile.gettempdir(), "paddle-models-hypothesis"))

FAST_EXAMPLES = 50     # per target in the default suite
DEEP_EXAMPLES = 1000   # per target behind the slow marker

_COMMON = {"deadline": None, "database": None, "print_blob": True,
           "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.function_scoped_fixture]}
settings.register_profile("paddle-models", max_examples=FAST_EXAMPLES, derandomize=True, **_COMMON)
settings.register_profile("paddle-models-random", max_examples=FAST_EXAMPLES, derandomize=False, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "paddle-models"))


def fuzz(max_examples: int = FAST_EXAMPLES) -> settings:
    """The loaded profile with ``max_examples`` examples (a decorator, like ``settings``)."""
    return settings(max_examples=max_examples)


FAST = fuzz(FAST_EXAMPLES)
DEEP = fuzz(DEEP_EXAMPLES)
