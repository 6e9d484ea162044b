"""Inference: predicted labels of the 10,000 MNIST test images, batch_size at a time."""

from __future__ import annotations

import pytest

from simplenn.bench.contenders import make_contender
from simplenn.bench.workloads import BATCH_SIZES, HIDDEN_SIZES, inference_flops_per_sample


@pytest.mark.parametrize("hidden", HIDDEN_SIZES)
@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_inference(measure, benchmark, mnist, contender_name, hidden, batch_size, smoke):
    train, test = mnist
    contender = make_contender(contender_name, hidden, train.X, train.y, test.X)
    # The smoke run classifies the first 1,000 images; the real run all 10,000.
    n = min(len(test), 1000) if smoke else len(test)
    contender.infer(batch_size, min(n, 2 * batch_size))  # warm-up
    rate = measure(lambda: contender.infer(batch_size, n), n)
    benchmark.extra_info.update(
        hidden=hidden,
        batch_size=batch_size,
        gflops_per_s=rate * inference_flops_per_sample(hidden) / 1e9,
    )
