"""Numba training throughput against where the parameters and velocities start in
memory: for each byte offset from a page boundary, fresh processes train chunks of
SGD steps (float32 MNIST, lr 0.01, momentum 0.9) on parameter and velocity arrays
placed at that offset, calling the numba fast path's compiled chunk itself (which
updates in place, wherever the arrays are), and print the best samples/s of each
process.

    python scripts/param_alignment.py --hidden 512 --batch-size 8 --offsets 0,16,32,48,64 --processes 3
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import numpy as np


def measure(hidden: int, batch_size: int, offset: int, samples: int, rounds: int) -> float:
    """Best samples/s over ``rounds`` chunks of ``samples`` samples."""
    import simplenn
    from simplenn.backends.numba.batches import SPARSE_MAX_ROWS, DenseInputs
    from simplenn.backends.numba.fastpath import copy_at
    from simplenn.core.network import training_path
    from simplenn.core.training import warm_up
    from simplenn.data.datasets import example_inputs
    from simplenn.optim import SGD

    train, _ = simplenn.load_mnist()
    net = simplenn.TwoLayerNet(784, hidden, 10, backend="numba", seed=0)
    optimizer = SGD(momentum=0.9)
    warm_up(net.ops, example_inputs(), optimizer=optimizer, batch_size=batch_size)
    start = net.parameters()
    params = [copy_at(start[k], 4096, offset) for k in ("W1", "b1", "W2", "b2")]
    velocities = [copy_at(np.zeros_like(p), 4096, offset) for p in params]
    # the compiled chunk itself: no aligned copies
    chunk = training_path(net.ops, optimizer, "pixels", batch_size).train_steps.chunk
    X, Y, s = train.X, train.y.astype(np.int64), np.float32
    if batch_size > SPARSE_MAX_ROWS:  # as the fast path's train_steps hands it over
        X = DenseInputs(X)
    lrs = np.full(-(-samples // batch_size), 0.01, np.float32)
    rng = np.random.default_rng(0)
    best = 0.0
    for _ in range(rounds):
        order = rng.permutation(train.X.shape[0])[:samples].astype(np.int64)
        start = time.perf_counter()
        chunk(*params, *velocities, X, Y, order, batch_size, lrs, s(0.9), s(0.0))
        best = max(best, samples / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--offsets", default="0,16,32,48,64")
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--samples", type=int, default=16384)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(measure(args.hidden, args.batch_size, args.child, args.samples, args.rounds))
        return
    offsets = [int(o) for o in args.offsets.split(",")]
    print(
        f"numba float32, hidden {args.hidden}, batch {args.batch_size}: best samples/s of "
        f"{args.rounds} chunks of {args.samples} samples, one fresh process per cell, "
        f"offsets taking turns",
        flush=True,
    )
    speeds: dict[int, list[float]] = {o: [] for o in offsets}
    for _ in range(args.processes):
        for offset in offsets:
            done = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--hidden",
                    str(args.hidden),
                    "--batch-size",
                    str(args.batch_size),
                    "--samples",
                    str(args.samples),
                    "--rounds",
                    str(args.rounds),
                    "--child",
                    str(offset),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            speeds[offset].append(float(done.stdout.split()[-1]))
    for offset in offsets:
        cells = "  ".join(f"{v:8,.0f}" for v in speeds[offset])
        print(
            f"offset {offset:4d} (mod 64: {offset % 64:2d}): {cells}   median "
            f"{np.median(speeds[offset]):8,.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
