"""The first layer of Numba's fast path against the dense arithmetic it replaces: the
forward product, the weight gradient (with its momentum update) and the whole SGD step,
each as dense-equivalent GFLOP/s beside this machine's float32 sgemm peak measured in
the same run. Above 100% of the peak, the path did less arithmetic than dense products
need (it multiplies only the often-nonzero columns densely and sums the other nonzeros).

    python scripts/first_layer_roofline.py

Batches of MNIST's training pixels in a random order, float32; each figure is the best
of ``REPEAT`` calls. Dense-equivalent FLOPs: ``2 m 784 h`` for the forward product and
for the weight gradient, ``m (4 784 h + 6 h 10)`` for a step (as ``simplenn.bench``
counts them; the batch's take is shown against the forward product's FLOPs too). What a
step spends beyond its take, forward product and weight gradient is the second layer,
the loss and the small updates. ``numpy`` rows time NumPy's own products of the same
shapes on BLAS's threads, for comparison.
"""

from __future__ import annotations

import time

import numba
import numpy as np

from simplenn import load_mnist
from simplenn.backends import get_backend
from simplenn.backends.numba import fastpath, rows
from simplenn.backends.numba.blas import products_on_numba_threads
from simplenn.bench.sysinfo import cpu_model, measure_sgemm_peak
from simplenn.core.network import training_path
from simplenn.optim import SGD

REPEAT = 20
WIDTHS = (128, 512)
BATCHES = (128, 512, 2048)
STEPS = 8


def best_seconds(fn, repeat: int = REPEAT) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    train, _ = load_mnist()
    X, Y = train.X, np.asarray(train.y, np.int64)
    d = X.shape[1]
    ops = get_backend("numba")
    chunk = training_path(ops, SGD(), "pixels", 128).train_steps.chunk
    peak = measure_sgemm_peak(repeat=10)["flops_per_s"]
    print(f"{cpu_model()}, numba threads {numba.get_num_threads()}")
    print(f"float32 sgemm peak (2048x2048, NumPy, best of 10): {peak / 1e9:.1f} GFLOP/s")
    print("hidden batch part              seconds  dense GFLOP/s  % of peak")
    rng = np.random.default_rng(0)
    momentum, lr = np.float32(0.9), np.float32(0.0)  # lr 0: every call sees the same W1
    for hidden in WIDTHS:
        W1 = (rng.standard_normal((d, hidden)) * 0.05).astype(np.float32)
        b1 = np.zeros(hidden, np.float32)
        W2 = (rng.standard_normal((hidden, 10)) * 0.05).astype(np.float32)
        b2 = np.zeros(10, np.float32)
        for m in BATCHES:
            order = rng.permutation(X.shape[0])[: m * STEPS].astype(np.int64)
            batch = order[:m]
            dl1 = rng.standard_normal((m, hidden)).astype(np.float32)
            dense_x = X[batch].astype(np.float32) / np.float32(255)
            layer = 2.0 * m * d * hidden
            step = m * (4.0 * d * hidden + 6.0 * hidden * 10)
            with products_on_numba_threads():
                columns = fastpath.hot_columns(X, order)
                inputs = fastpath.rows_inputs(
                    X, columns, m, np.dtype(np.float32), numba.get_num_threads()
                )
                W1p, V1p = W1[columns[0]], np.zeros_like(W1)

                def take():
                    rows.take_rows(inputs, batch)

                x = rows.take_rows(inputs, batch)

                def forward():
                    rows.rows_affine_relu(x, W1p, b1)

                def gradient():
                    rows.rows_update_outer(W1p, x, dl1, V1p, lr, momentum, np.float32(0))

                params = [W1p, b1, W2, b2] + [np.zeros_like(a) for a in (W1p, b1, W2, b2)]
                lrs = np.zeros(STEPS, np.float32)

                def steps():
                    chunk(*params, inputs, Y, order, m, lrs, momentum, np.float32(0))

                timed = {
                    "take the batch (split its columns)": (best_seconds(take), layer),
                    "forward (x W1, bias, relu)": (best_seconds(forward), layer),
                    "weight gradient and update": (best_seconds(gradient), layer),
                    "whole step": (best_seconds(steps, 5) / STEPS, step),
                }
            timed["numpy x W1"] = (best_seconds(lambda: dense_x @ W1), layer)
            timed["numpy xT dl1"] = (best_seconds(lambda: dense_x.T @ dl1), layer)
            for part, (seconds, flops) in timed.items():
                rate = flops / seconds
                print(
                    f"{hidden:6d} {m:5d} {part:32s} {seconds:9.6f} {rate / 1e9:14.1f}"
                    f" {100 * rate / peak:9.1f}%",
                    flush=True,
                )


if __name__ == "__main__":
    main()
