"""Side-by-side runs of ``python -m simplenn.train`` from several source trees.

Each ``LABEL=TREE`` names a checkout of this repository (``git worktree add /tmp/before
REV``, or ``.``). In every round each tree runs the same command once, as a fresh
process started in that tree (so ``python -m`` imports that tree's ``simplenn``), in
turns whose order alternates between rounds; Numba's disk cache is warmed by an untimed
run of each tree first. The script prints, per run, the wall seconds, the training
seconds of each epoch (from ``--metrics-out``) and the test accuracy, then per tree the
best and median wall and training seconds. Example::

    python benchmarks/tools/ab_train.py before=/tmp/before after=. --rounds 3 -- --epochs 6
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_once(tree: Path, args: list[str], cache: Path) -> dict:
    """One ``python -m simplenn.train ARGS --quiet --metrics-out F`` in ``tree``."""
    with tempfile.TemporaryDirectory() as tmp:
        metrics = Path(tmp) / "metrics.json"
        env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
        start = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "simplenn.train",
                *args,
                "--quiet",
                "--metrics-out",
                str(metrics),
            ],
            cwd=tree,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        wall = time.perf_counter() - start
        report = json.loads(metrics.read_text())
    epochs = [e["seconds"] for e in report["epochs"]]
    return {
        "wall": wall,
        "epochs": epochs,
        "training": sum(epochs),
        "accuracy": report["final_test_accuracy"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs="+", metavar="LABEL=TREE")
    parser.add_argument("--rounds", type=int, default=3)
    argv = sys.argv[1:] if argv is None else argv
    cut = argv.index("--") if "--" in argv else len(argv)
    ns = parser.parse_args(argv[:cut])  # after --: the arguments of python -m simplenn.train
    train_args = argv[cut + 1 :]
    trees = [(label, Path(path).resolve()) for label, path in (t.split("=", 1) for t in ns.trees)]
    caches = {label: Path(tempfile.mkdtemp(prefix=f"ab-train-{label}-")) for label, _ in trees}
    print(f"python -m simplenn.train {' '.join(train_args)}; {ns.rounds} round(s)", flush=True)
    for label, tree in trees:
        run_once(tree, train_args, caches[label])  # compiles into this tree's cache
    runs: dict[str, list[dict]] = {label: [] for label, _ in trees}
    for r in range(ns.rounds):
        for label, tree in trees if r % 2 == 0 else trees[::-1]:
            out = run_once(tree, train_args, caches[label])
            runs[label].append(out)
            print(
                f"round {r + 1} {label:>8}: wall {out['wall']:.2f} s, training "
                f"{out['training']:.2f} s, epochs "
                f"{' '.join(f'{s:.3f}' for s in out['epochs'])}, test "
                f"{100 * out['accuracy']:.2f}%",
                flush=True,
            )
    print()
    print(
        f"{'tree':>8} {'best wall':>10} {'median wall':>12} {'best training':>14} "
        f"{'median training':>16}"
    )
    for label, _ in trees:
        walls = [o["wall"] for o in runs[label]]
        training = [o["training"] for o in runs[label]]
        print(
            f"{label:>8} {min(walls):>10.2f} {statistics.median(walls):>12.2f} "
            f"{min(training):>14.2f} {statistics.median(training):>16.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
