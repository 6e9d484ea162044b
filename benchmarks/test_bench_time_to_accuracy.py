"""Time to a target test accuracy on the real MNIST with the default training settings
(those of ``python -m simplenn.train``: hidden 256, batch 64, lr 0.1 cosine, momentum 0.9)."""

from __future__ import annotations

from simplenn.bench.workloads import time_to_accuracy
from simplenn.core.training import TrainConfig

TARGET = 0.975
#: The smoke run: a subset and a target that one or two epochs on it reach.
SMOKE_TRAIN, SMOKE_TEST, SMOKE_TARGET = 2000, 1000, 0.80


def test_time_to_accuracy(benchmark, mnist, backend_name, smoke):
    train, test = mnist
    if smoke:
        train, test = (
            (train.X[:SMOKE_TRAIN], train.y[:SMOKE_TRAIN]),
            (test.X[:SMOKE_TEST], test.y[:SMOKE_TEST]),
        )
        target = SMOKE_TARGET
    else:
        train, test, target = (train.X, train.y), (test.X, test.y), TARGET
    # Warm-up outside the timed region: compile (Numba), load kernels (CuPy).
    time_to_accuracy(
        backend_name,
        (train[0][:256], train[1][:256]),
        (test[0][:256], test[1][:256]),
        target=2.0,
        config=TrainConfig(epochs=1),
    )
    results = []
    benchmark.pedantic(
        lambda: results.append(time_to_accuracy(backend_name, train, test, target=target)),
        rounds=1,
        iterations=1,
    )
    result = results[-1]
    benchmark.extra_info.update(result)
    benchmark.extra_info["samples_per_s"] = result["samples"] / result["seconds"]
    assert result["reached"], (
        f"{backend_name}: the default settings reached only {100 * result['test_accuracy']:.2f}% "
        f"test accuracy in {result['epochs']} epochs, short of the {100 * target:.1f}% target"
    )
