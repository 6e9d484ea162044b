"""TwoLayerNet on the NumPy reference backend: the math, the API, bad input."""

from __future__ import annotations

import numpy as np
import pytest

import simplenn
from simplenn import TwoLayerNet
from simplenn.backends import get_backend


def _tiny_problem(seed: int = 1, m: int = 5, d: int = 6, h: int = 4, c: int = 3):
    rng = np.random.default_rng(seed)
    net = TwoLayerNet(d, h, c, backend="numpy", dtype="float64", seed=seed)
    params = net.parameters()
    params["b1"] = rng.normal(0, 0.1, h)  # non-zero biases exercise db1/db2 too
    params["b2"] = rng.normal(0, 0.1, c)
    net.set_parameters(params)
    return net, rng.normal(size=(m, d)), rng.integers(0, c, size=m)


def test_gradients_match_central_finite_differences_tensor_by_tensor():
    net, X, y = _tiny_problem()
    loss, grads = net.loss_and_gradients(X, y)
    assert np.isfinite(loss)
    params = net.parameters()
    eps = 1e-6
    failures = []
    for name, value in params.items():
        numeric = np.zeros_like(value)
        for idx in np.ndindex(value.shape):
            for sign in (+1, -1):
                shifted = {k: v.copy() for k, v in params.items()}
                shifted[name][idx] += sign * eps
                net.set_parameters(shifted)
                numeric[idx] += sign * net.loss_and_gradients(X, y)[0] / (2 * eps)
        net.set_parameters(params)
        rel = np.abs(grads[name] - numeric).max() / max(np.abs(numeric).max(), 1e-12)
        if not rel < 1e-6:
            failures.append(
                f"{name}: max relative error {rel:.3e} (analytic vs finite differences)"
            )
    assert not failures, "; ".join(failures)


def test_softmax_cross_entropy_is_finite_for_huge_logits():
    ops = get_backend("numpy", dtype="float32")
    logits = ops.asarray([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, 1e4]])
    labels = np.array([1, 0, 2])
    loss, grad = ops.softmax_cross_entropy(logits, labels)
    assert np.isfinite(loss) and np.isfinite(grad).all()
    assert float(loss) == pytest.approx((2e4 + np.log(3) + np.log(3)) / 3, rel=1e-6)
    p = ops.softmax(logits)
    assert np.isfinite(p).all() and np.allclose(p.sum(axis=1), 1)
    # dl2 = (p - onehot(y)) / m: each row sums to zero
    assert np.allclose(grad.sum(axis=1), 0, atol=1e-7)


def test_initialisation_is_seeded_he_scaled_and_equal_across_dtypes():
    a = TwoLayerNet(784, 64, 10, seed=3, dtype="float64").parameters()
    b = TwoLayerNet(784, 64, 10, seed=3, dtype="float32").parameters()
    c = TwoLayerNet(784, 64, 10, seed=4, dtype="float64").parameters()
    assert a["W1"].dtype == np.float64 and b["W1"].dtype == np.float32
    for k in a:
        np.testing.assert_array_equal(a[k].astype(np.float32), b[k])
    assert not np.array_equal(a["W1"], c["W1"])
    assert a["W1"].std() == pytest.approx(np.sqrt(2 / 784), rel=0.02)
    assert a["W2"].std() == pytest.approx(np.sqrt(2 / 64), rel=0.1)
    assert not a["b1"].any() and not a["b2"].any()


def test_parameters_are_copies_and_set_parameters_validates():
    net = TwoLayerNet(6, 4, 3)
    p = net.parameters()
    p["W1"][:] = 7
    assert not (net.parameters()["W1"] == 7).all()
    with pytest.raises(ValueError, match="shape"):
        net.set_parameters({**p, "W1": np.zeros((4, 6))})
    with pytest.raises(ValueError, match="missing"):
        net.set_parameters({"W1": p["W1"]})
    with pytest.raises(ValueError, match="NaN"):
        net.set_parameters({**p, "b2": np.array([0, np.nan, 0])})


def test_uint8_inputs_are_scaled_by_1_over_255():
    net = TwoLayerNet(6, 4, 3, dtype="float64")
    X = np.random.default_rng(0).integers(0, 256, size=(5, 6), dtype=np.uint8)
    np.testing.assert_allclose(net.predict_proba(X), net.predict_proba(X / 255.0), rtol=1e-12)


def test_predict_and_probabilities_agree():
    net, X, y = _tiny_problem()
    p = net.predict_proba(X)
    assert p.shape == (5, 3) and np.allclose(p.sum(axis=1), 1)
    np.testing.assert_array_equal(net.predict(X), p.argmax(axis=1))
    assert net.predict(X).dtype == np.int64
    assert net.accuracy(X, y) == pytest.approx(np.mean(p.argmax(axis=1) == y))


@pytest.mark.parametrize(
    "X, y, match",
    [
        (np.zeros((3, 5)), [0, 1, 2], r"shape \(n, 6\)"),
        (np.zeros(6), [0], r"shape \(n, 6\)"),
        (np.zeros((3, 6), dtype=bool), [0, 1, 2], "uint8 pixels"),
        (np.full((3, 6), np.nan), [0, 1, 2], "NaN"),
        (np.zeros((3, 6)), [0, 1], r"shape \(3,\)"),
        (np.zeros((3, 6)), [0.0, 1.0, 2.0], "integer"),
        (np.zeros((3, 6)), [0, 3, 1], r"y\[1\] = 3 is outside 0..2"),
        (np.zeros((3, 6)), [0, -1, 1], "outside"),
        (np.zeros((0, 6)), [], "empty"),
    ],
)
def test_bad_inputs_raise_clear_errors(X, y, match):
    net = TwoLayerNet(6, 4, 3)
    with pytest.raises(ValueError, match=match):
        net.loss_and_gradients(X, np.asarray(y))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_hidden": 0},
        {"n_inputs": -1},
        {"n_classes": 1},
        {"n_hidden": 2.5},
        {"dtype": "int32"},
    ],
)
def test_bad_sizes_and_dtypes_are_refused(kwargs):
    with pytest.raises(ValueError):
        TwoLayerNet(**{"n_inputs": 6, "n_hidden": 4, "n_classes": 3, **kwargs})


def test_loss_of_a_fresh_net_is_near_log_of_the_class_count(mnist):
    train, _ = mnist
    net = simplenn.TwoLayerNet(784, 64, seed=0)
    loss, grads = net.loss_and_gradients(train.X[:512], train.y[:512])
    assert 1.5 < loss < 4.0
    assert set(grads) == {"W1", "b1", "W2", "b2"}
    assert all(g.dtype == np.float32 for g in grads.values())


def test_host_float_inputs_are_checked_on_the_host_for_a_device_backend(require_backend):
    """A backend whose arrays refuse host NumPy arrays (strict, like CuPy) takes float
    inputs from the host: the finiteness check runs where the array lives."""
    require_backend("strict")
    net = TwoLayerNet(8, 4, 3, backend="strict", seed=0)
    X = np.random.default_rng(0).random((5, 8))
    assert net.predict(X).shape == (5,)
    X[2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        net.predict(X)
    with pytest.raises(ValueError, match="NaN or infinite"):
        net.predict(net.ops.asarray(X))
