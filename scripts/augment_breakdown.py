"""Where an epoch of elastic distortion goes, beside the epoch it is added to.

Times, on one backend (numba by default), in one process: a plain training epoch of
784-``--hidden``-10 at ``--batch-size`` (the second epoch of ``fit``, as
``python -m simplenn.bench --suite augment`` takes it); then the parts of distorting
every training row once, chunk by chunk as ``fit`` cuts an epoch: drawing the noise
(:func:`simplenn.core.augment.draw_batches`), the fields (``elastic_fields`` of the
backend's image ops, :func:`simplenn.backends.images.image_ops`), taking the rows and
warping them, inside the image ops' ``training()`` context as ``fit`` runs them; then
the warp without fields (what ``affine`` warps). Each is the best of ``--repeat``
passes.
Example::

    python scripts/augment_breakdown.py --repeat 5
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def best_of(repeat: int, fn) -> float:
    """The least wall seconds of ``repeat`` calls of ``fn``."""
    from simplenn.bench.workloads import timed

    return min(timed(fn)[0] for _ in range(repeat))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backend",
        default="numba",
        help="a host backend (numba, numpy): device work is not waited for",
    )
    parser.add_argument("--hidden", type=int, default=800)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--samples",
        type=int,
        default=60000,
        help="the first N training images (default all 60,000)",
    )
    ns = parser.parse_args(argv)

    from simplenn.backends import get_backend
    from simplenn.backends.images import image_ops
    from simplenn.bench.augment import epoch_seconds
    from simplenn.bench.sysinfo import cpu_model
    from simplenn.core import augment
    from simplenn.core.training import chunk_samples
    from simplenn.data.datasets import load_mnist

    train = load_mnist()[0][: ns.samples]
    ops = get_backend(ns.backend)
    images = image_ops(ops)
    if ops.is_device:
        parser.error(
            f"--backend {ns.backend} computes on a device, whose work these timings "
            f"would not wait for; use a host backend such as numba or numpy"
        )
    n, side, bs = len(train), 28, ns.batch_size
    chunk = chunk_samples(bs)
    X = ops.asarray(train.X, dtype=np.uint8)
    order = np.random.default_rng(0).permutation(n)
    basis = ops.asarray(augment.elastic_basis(side), dtype=ops.dtype)
    levels = ops.asarray(augment.elastic_levels(), dtype=ops.dtype)
    starts = range(0, n, chunk)
    draws = [augment.draw_batches("elastic", 0, 1, b, min(n, b + chunk), bs, side) for b in starts]
    rows = [X[order[b : b + chunk]] for b in starts]

    print(
        f"{cpu_model()}; backend {ns.backend}, float32, batch {bs}, {n} images, "
        f"chunks of {chunk}; best of {ns.repeat}; seconds per epoch"
    )
    plain = min(epoch_seconds(ns.backend, "none", ns.hidden, bs, train) for _ in range(ns.repeat))
    print(f"plain training epoch, hidden {ns.hidden}: {plain:.3f}")

    def each(fn, *inputs):
        """A pass calling ``fn`` on each chunk's inputs, keeping no result (as fit frees
        a chunk's arrays before the next)."""

        def run():
            for args in zip(*inputs):
                fn(*args)

        return run

    with images.training():
        fields = [images.elastic_fields(d.noise, levels, basis) for d in draws]
        images.warp(rows[0], draws[0].matrices, fields[0])  # compiles, where it compiles
        parts = {
            "draw the noise": each(
                lambda b: augment.draw_batches("elastic", 0, 1, b, min(n, b + chunk), bs, side),
                starts,
            ),
            "elastic_fields": each(lambda d: images.elastic_fields(d.noise, levels, basis), draws),
            "take the rows": each(lambda b: X[order[b : b + chunk]], starts),
            "warp with the fields": each(
                lambda x, d, f: images.warp(x, d.matrices, f), rows, draws, fields
            ),
        }
        total = 0.0
        for name, fn in parts.items():
            seconds = best_of(ns.repeat, fn)
            total += seconds
            print(f"  {name:<32} {seconds:.3f}  ({100 * seconds / plain:.1f}% of the epoch)")
        print(f"  {'elastic distortion, the sum':<32} {total:.3f}  ({100 * total / plain:.1f}%)")
        affine = best_of(
            ns.repeat, each(lambda x, d: images.warp(x, d.matrices, None), rows, draws)
        )
    print(f"the warp without fields (affine's): {affine:.3f}  ({100 * affine / plain:.1f}%)")
    print(f"15% of the plain epoch: {0.15 * plain:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
