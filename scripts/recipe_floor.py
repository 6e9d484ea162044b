"""The least time the default command could take on this machine, beside the time it
takes and the PyTorch script's, measured in one run.

Whole processes, each the best of ``--repeat`` and timed from outside as
``python -m simplenn.bench --suite recipe`` times them:

- the PyTorch script (``torch_recipe``);
- ``python -m simplenn.train`` with a warm compile cache (run once before, untimed);
- start-up: a process that imports numba and calls one function from numba's disk
  cache, which any run of numba-compiled code pays before its first step.

In this process, each the best of ``--repeat``, with the kernels that the numba
backend's SGD fast path (:mod:`simplenn.backends.numba.fastpath`) runs at batch 128,
dense batches taken from the training set (784-256-10, float32, the bundled MNIST):

- products: the first layer's matrix products alone, for 6 epochs (each batch's pixels
  as float32, ``x W1`` and ``xᵀ dl1``) and 6 evaluations (the 10,000 test images as
  float32 and ``x W1``);
- an epoch with every op of a step but the first layer's update, then with it (each
  step at its own learning rate, as the fast path's chunk reads them);
- the first layer's update alone, for 6 epochs of steps on one thread, its arrays in
  cache (``sgd_update`` of W1 and its velocity with a fixed gradient).

floor = start-up + products: no numba-backed run of the recipe on this BLAS can be
faster. The second layer, the softmax, the updates, data loading and the evaluations'
other work come on top of it.

    python scripts/recipe_floor.py --repeat 3 --json DIR/floor.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

#: A module whose one function numba compiles into its disk cache, then loads from it.
CACHED_CALL = """\
import numpy as np
from numba import njit


@njit(cache=True)
def total(x):
    return x.sum()


total(np.zeros(3, np.float32))
"""


def best_process_seconds(argv: list[str], env: dict[str, str], repeat: int, label: str) -> float:
    """The least wall seconds of ``repeat`` runs of ``argv``; exits on a failed run."""
    from simplenn.bench.recipe import _error, run_process

    seconds = []
    for _ in range(repeat):
        result = run_process(argv, env)
        if result.returncode != 0:
            sys.exit(f"recipe_floor.py: error: {label} failed: {_error(result)}")
        seconds.append(result.wall_seconds)
    return min(seconds)


def step_epochs(repeat: int) -> dict[str, float]:
    """Best seconds of 6 epochs of the recipe's products, of the 6 evaluations'
    products, of one epoch with every op of a step but the first layer's update, then
    with it, and of 6 epochs of the first layer's update alone."""
    from numba import njit

    from simplenn.backends.numba.batches import _LIKE32, _take_dense
    from simplenn.backends.numba.deferred import sgd_update_outer
    from simplenn.backends.numba.kernels import (
        affine,
        affine_relu,
        matmul,
        matmul_nt,
        matmul_tn,
        relu_backward,
        sgd_update,
        softmax_cross_entropy,
        sum_rows,
    )
    from simplenn.bench.recipe import BATCH_SIZE, EPOCHS, HIDDEN
    from simplenn.bench.workloads import timed
    from simplenn.data.datasets import load_mnist

    @njit(nogil=True)
    def epoch(X, Y, order, W1, b1, W2, b2, V1, v1, V2, v2, D, lrs, ops):
        """One epoch of batches, step ``s`` at ``lrs[s]``: products only (ops 0), every
        op but the first layer's update (1), every op (2)."""
        momentum, wd = np.float32(0.9), np.float32(0.0)
        n = order.shape[0]
        for s in range((n + BATCH_SIZE - 1) // BATCH_SIZE):
            rows = order[s * BATCH_SIZE : min(n, (s + 1) * BATCH_SIZE)]
            x = _take_dense(X, rows, _LIKE32)
            lr = lrs[s]
            if ops == 0:
                matmul(x, W1)
                matmul_tn(x, D[: rows.shape[0]])
                continue
            y1 = affine_relu(x, W1, b1)
            _loss, dl2 = softmax_cross_entropy(affine(y1, W2, b2), Y[rows])
            dW2, db2 = matmul_tn(y1, dl2), sum_rows(dl2)
            dl1 = relu_backward(matmul_nt(dl2, W2), y1)
            db1 = sum_rows(dl1)
            if ops == 1:
                matmul_tn(x, dl1)
            else:
                sgd_update_outer(W1, x, dl1, V1, lr, momentum, wd)
            sgd_update(b1, db1, v1, lr, momentum, wd)
            sgd_update(W2, dW2, V2, lr, momentum, wd)
            sgd_update(b2, db2, v2, lr, momentum, wd)

    @njit(nogil=True)
    def updates(W1, G, V1, steps):
        lr, momentum, wd = np.float32(0.01), np.float32(0.9), np.float32(0.0)
        for _ in range(steps):
            sgd_update(W1, G, V1, lr, momentum, wd)

    @njit(nogil=True)
    def evaluation(X, W1):
        return matmul(_take_dense(X, np.arange(X.shape[0]), _LIKE32), W1)

    train, test = load_mnist()
    X, Y = np.ascontiguousarray(train.X), np.asarray(train.y, np.int64)
    X_test = np.ascontiguousarray(test.X)
    rng = np.random.default_rng(0)
    params = [
        (rng.standard_normal(s) * 0.05).astype(np.float32)
        for s in [(784, HIDDEN), (HIDDEN,), (HIDDEN, 10), (10,)]
    ]
    velocities = [np.zeros_like(p) for p in params]
    D = rng.standard_normal((BATCH_SIZE, HIDDEN)).astype(np.float32)
    order = rng.permutation(len(X))
    lrs = np.full(-(-len(X) // BATCH_SIZE), 0.01, np.float32)
    for ops in (0, 1, 2):  # compile
        epoch(X, Y, order[: 2 * BATCH_SIZE], *params, *velocities, D, lrs, ops)
    evaluation(X_test[:8], params[0])
    G = (rng.standard_normal(params[0].shape) * 1e-3).astype(np.float32)
    W1, V1 = params[0].copy(), np.zeros_like(params[0])
    steps = EPOCHS * -(-len(X) // BATCH_SIZE)
    updates(W1, G, V1, 1)

    def best(fn) -> float:
        return min(timed(fn)[0] for _ in range(repeat))

    def products() -> None:
        for _ in range(EPOCHS):
            epoch(X, Y, order, *params, *velocities, D, lrs, 0)

    def evaluations() -> None:
        for _ in range(EPOCHS):
            evaluation(X_test, params[0])

    return {
        "products_epochs": best(products),
        "products_evaluations": best(evaluations),
        "epoch_without_first_update": best(
            lambda: epoch(X, Y, order, *params, *velocities, D, lrs, 1)
        ),
        "epoch": best(lambda: epoch(X, Y, order, *params, *velocities, D, lrs, 2)),
        "update_alone": best(lambda: updates(W1, G, V1, steps)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="best of N (default 3)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here")
    ns = parser.parse_args(argv)
    if ns.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {ns.repeat}")

    from simplenn.bench import sysinfo
    from simplenn.bench.recipe import (
        EPOCHS,
        TORCH,
        base_env,
        library_missing,
        peer_argv,
        run_process,
        simplenn_argv,
    )

    for module in ("numba", "torch"):
        if library_missing(module):
            parser.error(f"{module} is not installed; pip install {module}")
    env = base_env()
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    load_before = sysinfo.load_average()
    print(f"CPU: {sysinfo.cpu_model()}; BLAS: {sysinfo.describe_blas()}", flush=True)

    torch = best_process_seconds(peer_argv(TORCH), env, ns.repeat, "the PyTorch script")
    run_process(simplenn_argv(True), env)  # fills the compile cache
    warm = best_process_seconds(simplenn_argv(True), env, ns.repeat, "python -m simplenn.train")
    with tempfile.TemporaryDirectory(prefix="simplenn-floor-") as tmp:
        script = Path(tmp) / "cached_call.py"
        script.write_text(CACHED_CALL)
        child_env = {**env, "NUMBA_CACHE_DIR": str(Path(tmp) / "cache")}
        call = [sys.executable, str(script)]
        best_process_seconds(call, child_env, 1, "the cached-call script")  # fills the cache
        start_up = best_process_seconds(call, child_env, ns.repeat, "the cached-call script")
    parts = step_epochs(ns.repeat)

    floor = start_up + parts["products_epochs"] + parts["products_evaluations"]
    rest = (parts["epoch_without_first_update"] - parts["products_epochs"] / EPOCHS) * EPOCHS
    update = (parts["epoch"] - parts["epoch_without_first_update"]) * EPOCHS
    rows = [
        ("PyTorch script (torch_recipe), whole process", torch),
        ("a third of it", torch / 3),
        ("python -m simplenn.train, warm cache, whole process", warm),
        ("floor: start-up (import numba, one call from its cache)", start_up),
        (f"floor: first-layer products of {EPOCHS} epochs", parts["products_epochs"]),
        (f"floor: first-layer products of {EPOCHS} evaluations", parts["products_evaluations"]),
        ("floor", floor),
        (f"on top: the step's other ops, {EPOCHS} epochs", rest),
        (f"on top: the first layer's update, {EPOCHS} epochs", update),
        (
            f"the first layer's update alone, one thread, in cache, {EPOCHS} epochs",
            parts["update_alone"],
        ),
    ]
    width = max(len(label) for label, _ in rows)
    print(
        f"best of {ns.repeat}; load average (1 min) {load_before} before, "
        f"{sysinfo.load_average()} after"
    )
    for label, seconds in rows:
        print(f"{label:<{width}}  {seconds:6.2f} s")
    print(
        f"the default command takes {warm / torch:.2f}x the PyTorch script's time, its "
        f"floor {floor / torch:.2f}x; with the step's other ops and the update "
        f"{(floor + rest + update) / torch:.2f}x"
    )
    if ns.json is not None:
        from simplenn.io.atomic import atomic_write_bytes

        report = {
            "date": date,
            "command": "python scripts/recipe_floor.py "
            + " ".join(sys.argv[1:] if argv is None else argv),
            "cpu": sysinfo.cpu_model(),
            "blas": sysinfo.blas_libraries(),
            "openblas_env": sysinfo.openblas_env(),
            "versions": {k: v for k, v in sysinfo.library_versions().items() if v},
            "repeat": ns.repeat,
            "seconds": {label: round(s, 3) for label, s in rows},
        }
        atomic_write_bytes(ns.json, (json.dumps(report, indent=2) + "\n").encode())
        print(f"wrote {ns.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
