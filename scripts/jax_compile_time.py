"""What the JAX backend's training chunks cost to compile: for each batch size, a fresh
process runs one epoch's two chunk shapes (a full chunk of ``chunk_samples(batch)``
rows, then the epoch's shorter last chunk) twice each on MNIST pixels, SGD momentum 0.9,
and prints each call's seconds; a shape's first call compiles, its second only runs, so
their difference is its compile time. ``--paths`` picks the ``jax-loop`` fast path, the
generic path (one ``jax.jit``-ed step per batch) or both.

    JAX_PLATFORMS=cpu python scripts/jax_compile_time.py --hidden 128 --batch-sizes 1,32,128,2048
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import numpy as np

PATHS = ("jax-loop", "generic")


def measure(path: str, hidden: int, batch_size: int, dtype: str) -> list[tuple]:
    """``(shape, rows, steps, first s, second s)`` for the full and the last chunk."""
    import simplenn
    from simplenn.core.network import make_train_steps, network_functions, training_path
    from simplenn.core.training import chunk_samples
    from simplenn.optim import SGD

    train, _ = simplenn.load_mnist()
    net = simplenn.TwoLayerNet(784, hidden, 10, backend="jax", dtype=dtype, seed=0)
    ops, optimizer = net.ops, SGD(momentum=0.9)
    if path == "generic":
        train_steps = make_train_steps(ops, optimizer, network_functions(ops).loss_and_gradients)
    else:
        found = training_path(ops, optimizer, "pixels", batch_size)
        if found.name != path:
            raise SystemExit(f"the run trains on the {found.name} path, not {path}")
        train_steps = found.train_steps
    X = ops.asarray(train.X, dtype=np.uint8)
    Y = ops.asarray(train.y, dtype=np.int64)
    n, chunk = train.X.shape[0], chunk_samples(batch_size)
    order = np.random.default_rng(0).permutation(n)
    params, state = net.params, optimizer.init(net.params, ops.xp.zeros_like)
    rows_last = n % chunk or chunk
    rows = []
    for shape, k in (("full chunk", chunk), ("last chunk", rows_last)):
        times = []
        for begin in (0, chunk):  # two calls of the shape, on different rows
            part = ops.asarray(order[begin : begin + k], dtype=np.int64)
            steps = -(-k // batch_size)
            lrs = np.full(steps, 0.01)
            ops.synchronize(*params)
            start = time.perf_counter()
            params, state, losses = train_steps(params, state, X, Y, part, batch_size, lrs)
            ops.synchronize(*params, losses)
            times.append(time.perf_counter() - start)
        rows.append((shape, k, steps, *times))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--batch-sizes", default="1,32,128,2048")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--paths", default=",".join(PATHS), help="jax-loop, generic or both")
    parser.add_argument("--one", nargs=2, metavar=("PATH", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        for row in measure(args.one[0], args.hidden, int(args.one[1]), args.dtype):
            print("\t".join(map(str, row)))
        return
    paths = args.paths.split(",")
    for path in paths:
        if path not in PATHS:
            parser.error(f"unknown path {path!r}; the paths are {', '.join(PATHS)}")
    print(f"hidden {args.hidden}, {args.dtype}, MNIST pixels, SGD momentum 0.9")
    print(
        f"{'path':<9} {'batch':>5}  {'shape':<10} {'rows':>5} {'steps':>5}"
        f" {'first s':>8} {'second s':>8} {'compile s':>9}"
    )
    for batch_size in map(int, args.batch_sizes.split(",")):
        for path in paths:
            command = [sys.executable, __file__, "--hidden", str(args.hidden)]
            command += ["--dtype", args.dtype, "--one", path, str(batch_size)]
            out = subprocess.run(command, capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(f"{path}, batch {batch_size} failed:\n{out.stderr}")
            for line in out.stdout.strip().splitlines():
                shape, rows, steps, first, second = line.split("\t")
                first_s, second_s = float(first), float(second)
                print(
                    f"{path:<9} {batch_size:>5}  {shape:<10} {rows:>5} {steps:>5}"
                    f" {first_s:>8.3f} {second_s:>8.3f} {first_s - second_s:>9.3f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
