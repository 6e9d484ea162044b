"""The JAX backend's ``jax-loop`` fast path: ``fit`` selects it, a chunk whose last
batch is smaller, one longer than a compiled loop holds, per-step learning rates and
Adam's step count give the generic path's numbers, and an epoch compiles a bounded
number of shapes. (Its trajectory against the generic path over whole runs: the
conformance kit's ``fast_paths`` check, tests/test_conformance.py.)
"""

from __future__ import annotations

import numpy as np
import pytest

from simplenn.core.params import Params

D, H, C = 20, 8, 3


@pytest.fixture
def ops(require_backend):
    require_backend("jax")
    from simplenn.backends import get_backend

    return get_backend("jax", "float64")


def _data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = (rng.random((n, D)) * 255 * (rng.random((n, D)) < 0.4)).astype(np.uint8)
    return X, rng.integers(0, C, n)


def _chunk(ops, train_steps, optimizer, X, y, order, batch_size, lrs, steps_done=0):
    """``train_steps`` from the same start: (parameters, state step, losses), on NumPy."""
    from simplenn.core.model import TwoLayerNet

    net = TwoLayerNet(D, H, C, backend=ops, dtype="float64", seed=4)
    state = optimizer.init(net.params, ops.xp.zeros_like)
    state = state._replace(step=steps_done)
    params, state, losses = train_steps(
        net.params,
        state,
        ops.asarray(X, dtype=np.uint8),
        ops.asarray(y, dtype=np.int64),
        ops.asarray(order, dtype=np.int64),
        batch_size,
        lrs,
    )
    return [ops.to_numpy(p) for p in params], state.step, ops.to_numpy(losses)


def _both(ops, optimizer, n_rows, batch_size, steps_done=0):
    from simplenn.backends.jax_fastpath import JAX_LOOP
    from simplenn.core.network import make_train_steps, network_functions

    X, y = _data(300)
    order = np.random.default_rng(1).integers(0, 300, n_rows)
    n_steps = -(-n_rows // batch_size)
    lrs = 0.05 * (1 + np.sin(np.arange(n_steps)))
    generic = make_train_steps(ops, optimizer, network_functions(ops).loss_and_gradients)
    fast = JAX_LOOP.train_steps(ops, optimizer, "pixels")
    run = (X, y, order, batch_size, lrs, steps_done)
    return _chunk(ops, fast, optimizer, *run), _chunk(ops, generic, optimizer, *run), n_steps


def _assert_same(got, want, n_steps, steps_done=0):
    params, step, losses = got
    ref_params, ref_step, ref_losses = want
    assert losses.shape == (n_steps,) and ref_losses.shape == (n_steps,)
    assert step == ref_step == steps_done + n_steps
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-9)
    for name, p, ref in zip(Params._fields, params, ref_params):
        np.testing.assert_allclose(p, ref, rtol=1e-9, atol=1e-12, err_msg=name)


def test_fit_trains_on_the_jax_loop(ops):
    from simplenn.core.model import TwoLayerNet
    from simplenn.core.training import fit

    net = TwoLayerNet(D, H, C, backend=ops, dtype="float64", seed=0)
    history = fit(net, _data(100), epochs=1, batch_size=16, interruptible=False)
    assert history.training_path == "jax-loop"


@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_a_smaller_last_batch_matches_the_generic_path(ops, batch_size):
    from simplenn.optim import SGD

    n_rows = 5 * batch_size + max(1, batch_size // 2) if batch_size > 1 else 37
    got, want, n_steps = _both(ops, SGD(momentum=0.8, weight_decay=1e-3), n_rows, batch_size)
    _assert_same(got, want, n_steps)


def test_an_order_longer_than_one_compiled_loop(ops):
    """Batch 2048: a compiled loop holds two steps; 5 full batches and a remainder."""
    from simplenn.optim import SGD

    got, want, n_steps = _both(ops, SGD(nesterov=True), 5 * 2048 + 100, 2048)
    assert n_steps == 6
    _assert_same(got, want, n_steps)


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_adam_counts_steps_as_the_generic_path(ops, name):
    """Adam's bias corrections depend on the step number, here continuing from 5."""
    from simplenn.optim import get_optimizer

    got, want, n_steps = _both(ops, get_optimizer(name), 10 * 7 + 3, 7, steps_done=5)
    _assert_same(got, want, n_steps, steps_done=5)


def test_an_epoch_compiles_one_loop_and_one_last_step(ops):
    """5000 rows at batch 128: a full chunk of 32 steps, then a chunk of 7 full batches
    and 8 rows. The shorter chunk runs the same compiled loop; three epochs add nothing."""
    from simplenn.core.model import TwoLayerNet
    from simplenn.core.network import training_path
    from simplenn.core.training import fit
    from simplenn.optim import SGD

    optimizer = SGD(momentum=0.55)  # a path of its own, so its traces are this test's
    path = training_path(ops, optimizer, "pixels", 128)
    assert path.name == "jax-loop"
    net = TwoLayerNet(D, H, C, backend=ops, dtype="float64", seed=0)
    fit(net, _data(5000), epochs=3, batch_size=128, optimizer=optimizer, interruptible=False)
    kinds = sorted(trace[0] for trace in path.train_steps.traces)
    assert kinds == ["loop", "step"], path.train_steps.traces
