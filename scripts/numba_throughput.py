"""Training throughput of the numba backend next to numpy, per batch size.

Times ``simplenn.fit(net, (X, y), epochs=1, batch_size=B, eval_train=False)`` after a
warmup (compilation excluded) on the first ``--samples`` MNIST training images and
prints samples/s, the best of ``--repeats`` epochs. Run it under
``flock /tmp/simplenn-timing.lock`` on a shared machine::

    flock /tmp/simplenn-timing.lock python scripts/numba_throughput.py --batch-sizes 1 8 32 128 512
"""

from __future__ import annotations

import argparse
import time

import simplenn


def throughput(backend: str, dtype: str, batch_size: int, X, y, repeats: int, hidden: int) -> float:
    """Best samples/s over ``repeats`` one-epoch fits (after one untimed warmup epoch)."""
    net = simplenn.TwoLayerNet(n_hidden=hidden, backend=backend, dtype=dtype, seed=0)
    if hasattr(net.ops, "warmup"):
        net.ops.warmup()
    fit_kwargs = dict(epochs=1, batch_size=batch_size, eval_train=False, lr=0.01)
    simplenn.fit(net, (X[:4096], y[:4096]), **fit_kwargs)
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        simplenn.fit(net, (X, y), **fit_kwargs)
        best = max(best, X.shape[0] / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32, 128, 512])
    parser.add_argument("--backends", nargs="+", default=["numpy", "numba"])
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    train, _ = simplenn.load_mnist()
    X, y = train.X[:args.samples], train.y[:args.samples]
    print(f"{args.dtype}, hidden {args.hidden}, {X.shape[0]} samples, samples/s (best of {args.repeats})")
    print("batch " + "".join(f"{b:>12}" for b in args.backends))
    for batch_size in args.batch_sizes:
        rates = [throughput(b, args.dtype, batch_size, X, y, args.repeats, args.hidden)
                 for b in args.backends]
        print(f"{batch_size:>5} " + "".join(f"{r:>12,.0f}" for r in rates), flush=True)


if __name__ == "__main__":
    main()
