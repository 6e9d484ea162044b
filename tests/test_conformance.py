"""The conformance kit of :mod:`simplenn.testing` over every registered backend and
dtype: each check passes, or skips with the reason it can't apply here."""

from __future__ import annotations

import pytest

from simplenn.testing import CHECKS, DTYPES, CheckSkipped, run_check

#: The checks that train networks or compile every update and training path anew, on
#: every backend: minutes in all, so -m "not slow" leaves them out.
SLOW_CHECKS = (
    "optimizers",
    "schedule",
    "trajectory",
    "fast_paths",
    "augmentation",
    "no_host_arrays",
)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "check", [pytest.param(c, marks=pytest.mark.slow) if c in SLOW_CHECKS else c for c in CHECKS]
)
def test_backend_conforms(backend_name, check, dtype):
    try:
        run_check(backend_name, check, dtype)
    except CheckSkipped as exc:
        pytest.skip(str(exc))
