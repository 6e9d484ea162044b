"""Where the Numba fast path's per-sample nonzero layer stops paying: one chunk of SGD
steps on the nonzeros (``simplenn.backends.numba.rows``) against the same chunk dense
(BLAS), on MNIST pixels with random extra nonzero pixels added up to each density.

    python scripts/rows_density.py

Prints, per width, batch size and density, the best of 5 chunk times of both layouts and
their ratio; ``ROWS_MAX_DENSITY`` in ``simplenn/backends/numba/fastpath.py`` sits below
the lowest density where dense wins.
"""

from __future__ import annotations

import platform
import time

import numba
import numpy as np

from simplenn import load_mnist
from simplenn.backends import get_backend
from simplenn.backends.numba import fastpath
from simplenn.core.network import training_path
from simplenn.core.params import Params
from simplenn.optim import SGD

DENSITIES = (0.2, 0.3, 0.5, 0.7, 1.0)
WIDTHS = (128, 512)
BATCHES = (64, 128, 512, 2048)
CHUNK = 4096


def with_density(X: np.ndarray, density: float, rng: np.random.Generator) -> np.ndarray:
    """X with random zero pixels set to random values 1..255 until ``density`` of all
    pixels are nonzero (X itself where it is already that dense)."""
    X = X.copy()
    extra = density * X.size - np.count_nonzero(X)
    if extra > 0:
        zeros = np.flatnonzero(X == 0)
        pick = rng.choice(zeros, int(extra), replace=False)
        X.flat[pick] = rng.integers(1, 256, pick.size, dtype=np.uint8)
    return X


def chunk_seconds(train_steps, X, Y, order, batch_size, hidden, repeat=5) -> float:
    best = float("inf")
    rng = np.random.default_rng(1)
    params = Params(
        (rng.standard_normal((X.shape[1], hidden)) * 0.05).astype(np.float32),
        np.zeros(hidden, np.float32),
        (rng.standard_normal((hidden, 10)) * 0.05).astype(np.float32),
        np.zeros(10, np.float32),
    )
    lrs = np.full(-(-order.shape[0] // batch_size), 0.01)
    for _ in range(repeat + 1):
        state = SGD().init(params, np.zeros_like)
        copy = Params(*(p.copy() for p in params))
        start = time.perf_counter()
        train_steps(copy, state, X, Y, order, batch_size, lrs)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    train, _ = load_mnist()
    ops = get_backend("numba")
    steps = training_path(ops, SGD(), "pixels", 128).train_steps
    Y = np.asarray(train.y, np.int64)
    rng = np.random.default_rng(0)
    order = rng.permutation(train.X.shape[0])[:CHUNK].astype(np.int64)
    print(f"{platform.processor() or platform.machine()}, numba threads {numba.get_num_threads()}")
    print("hidden batch density  rows_ms  dense_ms  dense/rows")
    limit = fastpath.ROWS_MAX_DENSITY
    for density in DENSITIES:
        X = with_density(np.ascontiguousarray(train.X), density, rng)
        real = np.count_nonzero(X) / X.size
        for hidden in WIDTHS:
            for bs in BATCHES:
                fastpath.ROWS_MAX_DENSITY = 1.0
                rows = chunk_seconds(steps, X, Y, order, bs, hidden)
                fastpath.ROWS_MAX_DENSITY = -1.0
                dense = chunk_seconds(steps, X, Y, order, bs, hidden)
                print(
                    f"{hidden:6d} {bs:5d} {real:7.2f} {rows * 1e3:8.2f} {dense * 1e3:9.2f}"
                    f" {dense / rows:10.2f}",
                    flush=True,
                )
    fastpath.ROWS_MAX_DENSITY = limit


if __name__ == "__main__":
    main()
