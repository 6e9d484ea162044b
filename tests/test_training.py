"""fit(): determinism, learning, divergence, argument checks."""

from __future__ import annotations

import numpy as np
import pytest

import simplenn
from simplenn import TrainingDivergedError, TwoLayerNet, fit


@pytest.fixture
def subset(mnist):
    train, test = mnist
    return (train.X[:3000], train.y[:3000]), (test.X[:1000], test.y[:1000])


def test_same_seed_gives_the_same_run_and_another_seed_does_not(subset):
    train, test = subset
    runs = []
    for seed in (5, 5, 6):
        net = TwoLayerNet(784, 32, seed=seed)
        history = fit(net, train, test, epochs=2, batch_size=50, lr=0.1, seed=seed)
        runs.append((net.parameters(), [e.train_loss for e in history.epochs]))
    (p1, l1), (p2, l2), (p3, l3) = runs
    assert l1 == l2
    for k in p1:
        np.testing.assert_array_equal(p1[k], p2[k])
    assert l1 != l3


def test_training_learns_and_the_history_is_complete(subset):
    train, test = subset
    net = TwoLayerNet(784, 64, seed=0)
    history = fit(net, train, test, epochs=3, batch_size=32, lr=0.1, eval_train=True)
    assert [e.epoch for e in history.epochs] == [1, 2, 3]
    first, last = history.epochs[0], history.epochs[-1]
    assert last.train_loss < first.train_loss
    assert last.test_accuracy > 0.85 and history.final_test_accuracy == last.test_accuracy
    assert 0 <= last.train_accuracy <= 1 and last.samples_per_second > 0 and last.seconds > 0
    assert history.epochs[0].lr == 0.1 and last.lr < 0.1  # cosine decay
    d = history.to_dict()
    assert d["config"]["batch_size"] == 32 and len(d["epochs"]) == 3


def test_float_inputs_train_like_the_scaled_pixels(subset):
    (X, y), _ = subset
    a, b = TwoLayerNet(784, 16, dtype="float64"), TwoLayerNet(784, 16, dtype="float64")
    ha = fit(a, (X[:500], y[:500]), epochs=1, batch_size=64, eval_train=False)
    hb = fit(b, (X[:500] / 255.0, y[:500]), epochs=1, batch_size=64, eval_train=False)
    assert ha.epochs[0].train_loss == pytest.approx(hb.epochs[0].train_loss, rel=1e-12)
    np.testing.assert_allclose(a.parameters()["W1"], b.parameters()["W1"], rtol=1e-12)


def test_a_diverging_run_names_the_epoch_and_step_and_restores_the_network(subset):
    train, _ = subset
    net = TwoLayerNet(784, 32, seed=0)
    before = net.parameters()
    with pytest.raises(TrainingDivergedError) as err:
        fit(net, train, epochs=2, batch_size=32, lr=1e10)
    message = str(err.value)
    assert "epoch 1" in message and "step " in message and "smaller learning rate" in message
    after = net.parameters()
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"epochs": 0}, "epochs"),
        ({"batch_size": -3}, "batch_size"),
        ({"lr": 0.0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"optimizer": "rmsprop"}, "unknown optimizer"),
        ({"warmup_steps": -1}, "warmup_steps"),
        ({"lr_schedule": "exp"}, "lr_schedule"),
    ],
)
def test_bad_settings_are_refused(subset, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fit(TwoLayerNet(784, 8), subset[0], **kwargs)


def test_bad_data_is_refused():
    net = TwoLayerNet(784, 8)
    with pytest.raises(TypeError, match="DataSplit"):
        fit(net, np.zeros((4, 784)))
    with pytest.raises(ValueError, match="shape"):
        fit(net, (np.zeros((4, 100), dtype=np.uint8), np.zeros(4, dtype=int)))
    with pytest.raises(ValueError, match="outside"):
        fit(net, (np.zeros((4, 784), dtype=np.uint8), np.array([0, 1, 2, 10])))


def test_the_dataset_stays_uint8_and_is_not_copied(subset, monkeypatch):
    (X, y), _ = subset
    net = TwoLayerNet(784, 8)
    seen = []
    original = net.ops.asarray

    def spy(a, dtype=None):
        out = original(a, dtype)
        seen.append((getattr(a, "shape", None), out.dtype))
        return out

    monkeypatch.setattr(net.ops, "asarray", spy)
    fit(net, (X, y), epochs=1, batch_size=256, eval_train=False)
    big = [dt for shape, dt in seen if shape == X.shape]
    assert big == [np.uint8]


@pytest.mark.slow
def test_default_settings_reach_98_percent_on_mnist(mnist):
    """The headline claim: the defaults of `python -m simplenn.train` reach >= 98.0%."""
    train, test = mnist
    net = TwoLayerNet(784, simplenn.core.network.DEFAULT_HIDDEN, backend="auto")
    history = fit(net, train, test)
    assert history.final_test_accuracy >= 0.98
