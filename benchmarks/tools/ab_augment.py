"""Side-by-side distortion work of source trees, in one process.

Each ``LABEL=TREE`` names a checkout of this repository (a ``git worktree`` of another
revision, or ``.``), its package copied and imported as ``simplenn_LABEL``. For
each augmentation kind, the trees take turns distorting every training row once, in
the chunks ``fit`` uses, through their own ``Augmenter.distort`` on their Numba backend
in the context ``fit`` trains an augmented run in (the image ops' ``training()``; older
trees: the backend's ``augmented_training()``), drawing, elastic fields and warp, as
``bench --suite augment``'s "distortion work", for ``--rounds`` rounds after a warm-up
round, alternating who goes first. The script
prints each tree's best and median seconds, as ratios to the first tree, and whether
its distorted images equal the first tree's bit for bit. Example::

    git worktree add /tmp/before REV
    python benchmarks/tools/ab_augment.py before=/tmp/before after=. --rounds 7
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import numpy as np

os.environ.setdefault("SIMPLENN_NUMBA_CACHE", "0")


def import_tree(label: str, tree: Path, copies: Path):
    """``tree``'s simplenn package, copied under ``copies`` and imported as
    ``simplenn_<label>``."""
    if not label.isidentifier():
        raise SystemExit(f"label {label!r} must be a Python identifier")
    package = copies / label / f"simplenn_{label}"
    shutil.copytree(
        tree / "simplenn", package, ignore=shutil.ignore_patterns("__pycache__", "_data")
    )
    sys.path.insert(0, str(package.parent))
    return importlib.import_module(package.name)


def training_context(augmenter, ops) -> AbstractContextManager:
    """The context the tree's ``fit`` runs an augmented epoch in: its image ops'
    ``training()``, or, in trees from before the image ops, the backend's
    ``augmented_training()``."""
    images = getattr(augmenter, "images", None)
    if images is not None:
        return images.training()
    if hasattr(ops, "augmented_training"):
        return ops.augmented_training()
    return nullcontext()


def distort_epoch(augment, ops, kind: str, X, order, batch_size: int, chunk: int):
    """Seconds to distort every row of ``X`` once with a fresh ``augment.Augmenter``
    (in the order ``order``, ``chunk`` rows per call) in the tree's training context,
    and the distorted rows."""
    augmenter = augment.Augmenter(ops, kind, 0, X.shape[1])
    outs = []
    with training_context(augmenter, ops):
        start = time.perf_counter()
        for begin in range(0, order.shape[0], chunk):
            outs.append(augmenter.distort(X, order[begin : begin + chunk], 1, begin, batch_size))
        ops.synchronize(outs[-1])
        return time.perf_counter() - start, outs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="+", metavar="LABEL=TREE")
    parser.add_argument("--kinds", nargs="+", default=["affine", "elastic"])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--samples",
        type=int,
        default=60000,
        help="distort the first N training images (default all 60,000)",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as copies:
        trees = []
        for spec in args.variants:
            label, _, tree = spec.partition("=")
            package = import_tree(label, Path(tree), Path(copies))
            # the tree's own class: its registry's factories import the installed simplenn
            ops = importlib.import_module(f"{package.__name__}.backends.numba").NumbaOps("float32")
            augment = importlib.import_module(f"{package.__name__}.core.augment")
            chunk = importlib.import_module(f"{package.__name__}.core.training").chunk_samples(
                args.batch_size
            )
            trees.append((label, ops, augment, chunk))
        import simplenn

        train = simplenn.load_mnist()[0][: args.samples]
        X = np.ascontiguousarray(train.X)  # uint8 pixels, what every Numba backend takes
        order = np.random.default_rng(0).permutation(len(train)).astype(np.int64)
        print(
            f"backend numba, float32, batch {args.batch_size}, {len(train)} rows a turn, "
            f"{args.rounds} rounds; seconds best / median (ratio of the first tree's "
            f"to each: above 1 is faster)"
        )
        for kind in args.kinds:
            seconds = {label: [] for label, *_ in trees}
            first_out = {}
            for r in range(args.rounds + 1):  # round 0 warms up (compiles)
                for label, ops, augment, chunk in trees if r % 2 == 0 else trees[::-1]:
                    elapsed, outs = distort_epoch(
                        augment, ops, kind, X, order, args.batch_size, chunk
                    )
                    if r:
                        seconds[label].append(elapsed)
                    if r == 0:
                        first_out[label] = [np.asarray(ops.to_numpy(o)) for o in outs]
            reference = first_out[trees[0][0]]
            best0 = median0 = None
            cells = []
            for label, *_ in trees:
                best, median = min(seconds[label]), statistics.median(seconds[label])
                best0, median0 = best0 or best, median0 or median
                same = all(np.array_equal(a, b) for a, b in zip(first_out[label], reference))
                cells.append(
                    f"{label} {best:.3f} / {median:.3f} s ({best0 / best:.2f}x / "
                    f"{median0 / median:.2f}x, {'bitwise equal' if same else 'DIFFERENT'})"
                )
            print(f"{kind:8s} " + "  |  ".join(cells), flush=True)


if __name__ == "__main__":
    main()
