"""Training throughput: one epoch (samples/s) and one step (latency), per backend,
batch size and hidden width, in float32."""

from __future__ import annotations

import pytest

from simplenn.bench.contenders import make_contender
from simplenn.bench.workloads import BATCH_SIZES, HIDDEN_SIZES, training_flops_per_sample
from simplenn.core.training import CHUNK_SAMPLES

#: Timed epochs per benchmark in the real run (each one is a full pass over MNIST).
EPOCH_ROUNDS = 3


@pytest.mark.parametrize("hidden", HIDDEN_SIZES)
@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_train_epoch(measure, benchmark, mnist, contender_name, hidden, batch_size, epoch_samples):
    train, test = mnist
    contender = make_contender(contender_name, hidden, train.X, train.y, test.X)
    # Warm-up: at least one of fit's chunks (compiles, starts BLAS threads, fills caches).
    contender.train_epoch(batch_size, min(epoch_samples, max(2 * batch_size, CHUNK_SAMPLES)))
    rate = measure(
        lambda: contender.train_epoch(batch_size, epoch_samples), epoch_samples, rounds=EPOCH_ROUNDS
    )
    benchmark.extra_info.update(
        hidden=hidden,
        batch_size=batch_size,
        gflops_per_s=rate * training_flops_per_sample(hidden) / 1e9,
    )


@pytest.mark.parametrize("hidden", HIDDEN_SIZES)
@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_train_step(measure, benchmark, mnist, contender_name, hidden, batch_size):
    train, test = mnist
    contender = make_contender(contender_name, hidden, train.X, train.y, test.X)
    contender.train_step(batch_size)  # warm-up
    contender.train_step(batch_size)
    measure(lambda: contender.train_step(batch_size), batch_size)
    benchmark.extra_info.update(hidden=hidden, batch_size=batch_size)
