"""Why an augmented epoch on Numba runs on one pool of threads: the parallel warp beside
OpenBLAS's threads, and training with its products on numba's threads.

Times, in one process, on the Numba backend (float32, MNIST-sized random images):

1. the warp of ``--images`` images with elastic fields, a parallel loop of numba's,
   right after another warp, right after a training-sized BLAS product (OpenBLAS's
   threads are still spinning), and compiled for one thread; median of ``--repeat``;
2. a training epoch of 784-``--hidden``-10 at batch 128 (the second epoch of ``fit``)
   on OpenBLAS's threads and inside ``blas.products_on_numba_threads()``, in turns,
   best of ``--repeat`` turns.

Example::

    python benchmarks/tools/thread_pools.py --repeat 5
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import nullcontext

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--hidden", type=int, default=800)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--samples",
        type=int,
        default=60000,
        help="train on the first N training images (default all 60,000)",
    )
    ns = parser.parse_args(argv)

    import numba

    from simplenn.backends import get_backend
    from simplenn.backends.images import image_ops
    from simplenn.backends.numba import blas, images, warp
    from simplenn.bench.augment import epoch_seconds
    from simplenn.bench.sysinfo import cpu_model
    from simplenn.core import augment
    from simplenn.data.datasets import load_mnist

    distortions = image_ops(get_backend("numba", "float32"))
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (ns.images, 784), dtype=np.uint8)
    d = augment.draw_batches("elastic", 0, 1, 0, ns.images, 128, 28)
    fields = distortions.elastic_fields(
        d.noise, augment.elastic_levels(), augment.elastic_basis(28)
    )
    a = rng.random((128, 784), dtype=np.float32)
    b = rng.random((784, ns.hidden), dtype=np.float32)
    parallel = warp.warp_into
    serial = numba.njit(warp.warp_into.py_func, parallel=False, nogil=True)

    def warp_ms(kernel, before) -> float:
        images.warp_into = kernel  # what NumbaImageOps.warp calls
        try:
            distortions.warp(X, d.matrices, fields)  # compiles
            times = []
            for _ in range(ns.repeat * 6):
                before()
                start = time.perf_counter()
                distortions.warp(X, d.matrices, fields)
                times.append(time.perf_counter() - start)
            return 1e3 * statistics.median(times)
        finally:
            images.warp_into = parallel

    print(
        f"{cpu_model()}; numba {numba.__version__}, {numba.get_num_threads()} threads, "
        f"threading layer {numba.threading_layer()}"
    )
    print(f"warp of {ns.images} images with elastic fields, median of {ns.repeat * 6}:")
    print(f"  parallel, after a warp:               {warp_ms(parallel, lambda: None):6.2f} ms")
    print(
        f"  parallel, after a 128x784x{ns.hidden} product:"
        f"{warp_ms(parallel, lambda: a @ b):6.2f} ms"
    )
    print(f"  one thread, after the product:        {warp_ms(serial, lambda: a @ b):6.2f} ms")

    train = load_mnist()[0][: ns.samples]

    def epoch(context) -> float:
        with context():
            return epoch_seconds("numba", "none", ns.hidden, 128, train)

    epoch(blas.products_on_numba_threads)  # compiles
    turns = {"OpenBLAS's threads": [], "one pool (products on numba's threads)": []}
    for _ in range(ns.repeat):
        turns["OpenBLAS's threads"].append(epoch(nullcontext))
        turns["one pool (products on numba's threads)"].append(
            epoch(blas.products_on_numba_threads)
        )
    print(f"training epoch, 784-{ns.hidden}-10, batch 128, best of {ns.repeat} turns:")
    for name, times in turns.items():
        print(f"  {name:<40} {min(times):.3f} s (median {statistics.median(times):.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
