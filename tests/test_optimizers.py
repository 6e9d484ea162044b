"""The optimizers as objects: each against ``torch.optim`` on the same gradients, a
checkpoint of each resumed bitwise, the schedule applied step by step, the bad settings
refused, and backends with different settings kept apart."""

from __future__ import annotations

import numpy as np
import pytest

import simplenn
from simplenn.backends.numpy_backend import NumpyOps
from simplenn.core.params import Params
from simplenn.core.schedule import Schedule
from simplenn.core.training import TrainConfig
from simplenn.io.checkpoints import load_checkpoint, save_checkpoint
from simplenn.optim import OPTIMIZERS, SGD, Adam, AdamW, get_optimizer

OPTIMIZERS_TO_CHECK = [
    SGD(),
    SGD(momentum=0.5, nesterov=True, weight_decay=0.01),
    Adam(),
    Adam(beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.01),
    AdamW(weight_decay=0.05),
]


def _torch_optimizer(torch, opt, weights, biases, lr):
    """``torch.optim``'s twin of ``opt``, weight decay on the weights only."""
    groups = [{"params": weights}, {"params": biases, "weight_decay": 0.0}]
    if opt.name == "sgd":
        return torch.optim.SGD(
            groups,
            lr=lr,
            momentum=opt.momentum,
            nesterov=opt.nesterov,
            weight_decay=opt.weight_decay,
        )
    cls = torch.optim.AdamW if opt.name == "adamw" else torch.optim.Adam
    return cls(
        groups, lr=lr, betas=(opt.beta1, opt.beta2), eps=opt.eps, weight_decay=opt.weight_decay
    )


@pytest.mark.parametrize("opt", OPTIMIZERS_TO_CHECK, ids=lambda o: o.describe())
def test_each_optimizer_matches_torch_optim_on_the_same_gradients(opt):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    shapes = Params((20, 6), (6,), (6, 3), (3,))
    start = Params(*(rng.standard_normal(s) for s in shapes))
    params, state = start, opt.init(start)
    tensors = [torch.tensor(p, requires_grad=True) for p in start]
    lrs = [0.1, 0.05, 0.02, 0.08, 0.01]
    torch_opt = _torch_optimizer(
        torch, opt, [tensors[0], tensors[2]], [tensors[1], tensors[3]], lrs[0]
    )
    for lr in lrs:
        grads = Params(*(rng.standard_normal(s) for s in shapes))
        params, state = opt.update(grads, state, params, lr)
        for group in torch_opt.param_groups:
            group["lr"] = lr
        for t, g in zip(tensors, grads):
            t.grad = torch.tensor(g)
        torch_opt.step()
    assert state.step == len(lrs)
    for name, ours, theirs in zip(Params._fields, params, tensors):
        np.testing.assert_allclose(
            ours, theirs.detach().numpy(), rtol=1e-12, atol=1e-14, err_msg=name
        )


def test_update_returns_new_arrays_and_leaves_its_arguments():
    params = Params(np.ones((3, 2)), np.ones(2), np.ones((2, 2)), np.ones(2))
    for opt in OPTIMIZERS_TO_CHECK:
        state = opt.init(params)
        frozen = [a for a in (*params, *(s for slots in state.slots for s in slots))]
        for a in frozen:
            a.flags.writeable = False
        grads = Params(*(np.full_like(p, 0.5) for p in params))
        new, new_state = opt.update(grads, state, params, 0.1)
        assert all(n is not p for n, p in zip(new, params))
        assert new_state.step == 1 and state.step == 0


@pytest.fixture(scope="module")
def small():
    train, test = simplenn.load_mnist()
    return (train.X[:1000], train.y[:1000]), (test.X[:200], test.y[:200])


@pytest.mark.parametrize("backend", ["numpy", pytest.param("numba", marks=pytest.mark.slow)])
@pytest.mark.parametrize("opt", OPTIMIZERS_TO_CHECK, ids=lambda o: o.describe())
def test_a_checkpoint_resumes_bitwise_with_every_optimizer(small, tmp_path, backend, opt):
    if backend == "numba":
        pytest.importorskip("numba")
    settings = dict(epochs=3, batch_size=50, optimizer=opt, seed=4, interruptible=False)
    unbroken = simplenn.TwoLayerNet(784, 16, backend=backend, seed=1)
    states = []
    simplenn.fit(unbroken, *small, **settings, on_checkpoint=states.append)
    path = save_checkpoint(tmp_path / "c.npz", states[0])
    state = load_checkpoint(path).state
    assert state.config.optimizer == opt
    assert state.optimizer_steps == 1000 // 50
    assert sorted(state.optimizer_state) == sorted(
        f"{k}.{slot}" for k in Params._fields for slot in opt.slot_names
    )
    resumed = simplenn.TwoLayerNet(784, 16, backend=backend, seed=1)
    simplenn.fit(resumed, *small, **settings, resume=state)
    for k, v in unbroken.parameters().items():
        np.testing.assert_array_equal(resumed.parameters()[k], v, err_msg=k)


def test_fit_hands_every_step_the_schedules_learning_rate(small):
    seen = []

    class Recording(simplenn.TwoLayerNet):
        def train_steps(self, X, Y, order, state, *, optimizer, batch_size, lrs):
            seen.extend(lrs.tolist())
            return super().train_steps(
                X, Y, order, state, optimizer=optimizer, batch_size=batch_size, lrs=lrs
            )

    net = Recording(784, 8, backend="numpy")
    simplenn.fit(
        net, small[0], epochs=2, batch_size=64, lr=0.1, warmup_steps=5, interruptible=False
    )
    steps = 2 * -(-1000 // 64)
    assert seen == [Schedule(0.1, "cosine", steps, 5).lr_at(t) for t in range(steps)]
    assert seen[:5] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1])
    assert len(set(seen[5:])) == steps - 5  # a new rate at every step, not once per chunk


def test_the_schedule_after_warmup():
    s = Schedule(1.0, "linear", total=10, warmup=2)
    assert [s.lr_at(t) for t in range(4)] == [0.5, 1.0, 1.0, 0.875]
    assert Schedule(1.0, "cosine", 4).lrs(0, 4).tolist() == pytest.approx(
        [1.0, 0.8535533905932737, 0.5, 0.14644660940672627]
    )


@pytest.mark.parametrize(
    "name, hyper, match",
    [
        ("rmsprop", {}, "unknown optimizer 'rmsprop'"),
        ("sgd", {"beta1": 0.9}, "has no hyperparameter 'beta1'"),
        ("sgd", {"momentum": 1.0}, r"momentum must be in \[0, 1\)"),
        ("sgd", {"momentum": 0.0, "nesterov": True}, "nesterov needs a momentum"),
        ("adam", {"beta1": -0.1}, r"beta1 must be in \[0, 1\)"),
        ("adam", {"beta2": 1.0}, r"beta2 must be in \[0, 1\)"),
        ("adamw", {"eps": 0.0}, "eps must be > 0"),
        ("adam", {"weight_decay": -1e-3}, "weight_decay must be >= 0"),
        ("adam", {"eps": float("nan")}, "eps must be a finite number"),
    ],
)
def test_bad_optimizers_are_refused(name, hyper, match):
    with pytest.raises(ValueError, match=match):
        get_optimizer(name, **hyper)


def test_a_config_round_trips_its_optimizer():
    config = TrainConfig(optimizer=AdamW(beta2=0.99))
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert TrainConfig(optimizer="adam").lr == Adam().default_lr(128)
    assert set(OPTIMIZERS) == {"sgd", "adam", "adamw"}


def test_two_backends_with_different_settings_each_use_their_own(small):
    """The compiled functions are cached per backend class, dtype and settings (the
    repr): a second instance with another setting must not reuse the first's."""

    class Scaled(NumpyOps):
        def __init__(self, dtype="float32", scale=1.0):
            super().__init__(dtype)
            self.scale = scale

        def __repr__(self):
            return f"Scaled(dtype={self.dtype.name!r}, scale={self.scale})"

        def affine(self, x, W, b):
            return super().affine(x, W, b) * self.dtype.type(self.scale)

    X = small[1][0][:5]
    one = simplenn.TwoLayerNet(784, 8, backend=Scaled(scale=1.0), seed=0)
    two = simplenn.TwoLayerNet(784, 8, backend=Scaled(scale=2.0), seed=0)
    logits_one = np.asarray(one.logits(X))
    logits_two = np.asarray(two.logits(X))
    np.testing.assert_allclose(logits_two, 4 * logits_one, rtol=1e-5)  # scaled twice


@pytest.mark.slow
def test_adam_reaches_98_percent_with_its_defaults(capsys):
    from simplenn.cli import train as train_cli

    assert train_cli.main(["--optimizer", "adam", "--quiet", "--backend", "numba"]) == 0
    accuracy = float(capsys.readouterr().out.strip().rsplit(" ", 1)[-1].rstrip("%"))
    assert accuracy >= 98.0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--optimizer", "rmsprop"], "unknown optimizer 'rmsprop'; choose from sgd, adam, adamw"),
        (["--optimizer", "adam", "--beta1", "-0.1"], "argument --beta1: expected a number in"),
        (["--optimizer", "adam", "--beta2", "1"], "argument --beta2: expected a number in"),
        (["--optimizer", "adam", "--momentum", "0.5"], "--momentum: does not apply to"),
        (["--nesterov", "--momentum", "0"], "nesterov needs a momentum > 0"),
        (["--warmup-steps", "-3"], "argument --warmup-steps: expected an integer >= 0"),
    ],
)
def test_bad_optimizer_flags_are_one_line_and_exit_2(capsys, args, message):
    from simplenn.cli import train as train_cli

    with pytest.raises(SystemExit) as exit_info:
        train_cli.main(args)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and message in err and len(err.splitlines()) == 1, err


def test_debug_names_the_training_path(capsys, tmp_path):
    from simplenn.cli import train as train_cli

    X = simplenn.load_mnist()[0]
    from simplenn.data.idx import write_idx

    for split, n in (("train", 256), ("t10k", 64)):
        write_idx(tmp_path / f"{split}-images-idx3-ubyte", X.X[:n].reshape(n, 28, 28))
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte", X.y[:n].astype(np.uint8))
    common = ["--data-dir", str(tmp_path), "--epochs", "1", "--hidden", "8", "--quiet"]
    assert train_cli.main([*common, "--backend", "numpy", "--debug"]) == 0
    assert "training path: numpy-sgd (sgd" in capsys.readouterr().err
    assert train_cli.main([*common, "--backend", "numpy", "--debug", "--optimizer", "adam"]) == 0
    assert "training path: generic (adam" in capsys.readouterr().err
