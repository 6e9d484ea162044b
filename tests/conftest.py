"""Shared fixtures: one parametrised fixture over every registered backend.

A backend that can't run here (library missing, no CUDA device) becomes a skip that
carries the registry's reason, never a failure. So does a backend named in the
environment variable ``SIMPLENN_SKIP_BACKENDS`` (comma-separated), which leaves a slow
plug-in out of the test run: ``SIMPLENN_SKIP_BACKENDS=mine python -m pytest``.
"""

from __future__ import annotations

import os

import pytest

from simplenn.backends import backend_names, probe_backend

SKIP_BACKENDS_VARIABLE = "SIMPLENN_SKIP_BACKENDS"


def skipped_backends() -> set[str]:
    """The backend names in ``$SIMPLENN_SKIP_BACKENDS`` (case-insensitive)."""
    value = os.environ.get(SKIP_BACKENDS_VARIABLE, "")
    return {name.strip().lower() for name in value.split(",") if name.strip()}


def skip_unless_available(name: str) -> None:
    if name.lower() in skipped_backends():
        pytest.skip(f"backend {name!r} left out by {SKIP_BACKENDS_VARIABLE}")
    info = probe_backend(name)
    if not info.available:
        pytest.skip(f"backend {name!r} unavailable: {info.reason}")


@pytest.fixture(params=backend_names())
def backend_name(request) -> str:
    """Each registered backend name in turn (plug-ins included); skipped with the
    reason where it can't run."""
    skip_unless_available(request.param)
    return request.param


@pytest.fixture
def require_backend():
    """``require_backend(name)`` skips the test, with the reason, where ``name`` can't run."""
    return skip_unless_available


@pytest.fixture(scope="module")
def one_blas_thread():
    """Small matrices on a busy 2-core machine: extra BLAS threads only spin (70x slower
    measured under load), so tests that train many small models use one."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


@pytest.fixture
def mnist():
    """The bundled MNIST as (train, test) DataSplits (loaded once per process)."""
    import simplenn

    return simplenn.load_mnist()


@pytest.fixture(scope="session")
def mnist_subset_dir(tmp_path_factory):
    """``mnist_subset_dir(n_train, n_test)``: a directory with the four MNIST-format files
    of the first ``n_train`` training and ``n_test`` test images of the bundled MNIST,
    written once per size and shared (read it, don't change it)."""
    import numpy as np

    import simplenn
    from simplenn.data.idx import write_idx

    made = {}

    def make(n_train: int, n_test: int):
        if (n_train, n_test) not in made:
            d = tmp_path_factory.mktemp(f"mnist-{n_train}-{n_test}")
            for prefix, split, n in zip(
                ("train", "t10k"), simplenn.load_mnist(), (n_train, n_test)
            ):
                write_idx(d / f"{prefix}-images-idx3-ubyte", split.X[:n].reshape(n, 28, 28))
                write_idx(d / f"{prefix}-labels-idx1-ubyte", split.y[:n].astype(np.uint8))
            made[n_train, n_test] = d
        return made[n_train, n_test]

    return make
