"""What a run does by default: no training-set accuracy unless asked, a learning rate
that follows the batch size, divergence caught before the loss turns NaN, SIGTERM
handled like Ctrl-C, metrics that reproduce the run, one line about auto's choice of
backend, plots of the validation curves, and a warm-up of the inputs the run uses."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

import simplenn
from simplenn.backends import probe_backend, resolve_backend_name
from simplenn.backends.numpy_backend import NumpyOps
from simplenn.cli import train as train_cli
from simplenn.core.training import (
    TrainConfig,
    TrainingInterrupted,
    _signals_stop,
    default_lr,
    smaller_lr,
)
from simplenn.data.datasets import load_dataset
from simplenn.data.idx import write_idx
from simplenn.errors import TrainingDivergedError
from simplenn.io.checkpoints import checkpoint_path, load_checkpoint
from simplenn.optim import SGD, Adam

ROOT = Path(__file__).resolve().parents[1]
PROG = "python -m simplenn.train"


@pytest.fixture
def data_dir(tmp_path):
    """A tiny MNIST-format dataset (8x8 images whose class is the bright row): 600
    training and 200 test images."""
    rng = np.random.default_rng(0)
    d = tmp_path / "data"
    d.mkdir()
    for split, n in (("train", 600), ("t10k", 200)):
        y = rng.integers(0, 8, n).astype(np.uint8)
        X = rng.integers(0, 40, size=(n, 8, 8)).astype(np.uint8)
        X[np.arange(n), y, :] = 250
        write_idx(d / f"{split}-images-idx3-ubyte", X)
        write_idx(d / f"{split}-labels-idx1-ubyte", y)
    return d


@pytest.fixture
def tiny(data_dir):
    """The tiny dataset as (train, test) DataSplits."""
    train, test, _ = load_dataset(data_dir)
    return train, test


def _net(ops="numpy", n_inputs=64):
    return simplenn.TwoLayerNet(n_inputs, 16, 10, backend=ops, seed=0)


def _env(**extra) -> dict:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }
    env.pop("SIMPLENN_BACKEND", None)
    return env


def run_cli(*args, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "simplenn.train", *map(str, args)],
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=300,
    )


def _quick(data_dir, *args) -> list[str]:
    return [
        "--backend",
        "numpy",
        "--data-dir",
        str(data_dir),
        "--hidden",
        "16",
        "--batch-size",
        "32",
        *map(str, args),
    ]


# -- training accuracy only on request -------------------------------------------------


def test_fit_measures_the_training_accuracy_only_when_asked(tiny):
    train, test = tiny
    plain = simplenn.fit(_net(), train, test, epochs=2, batch_size=32)
    assert [e.train_accuracy for e in plain.epochs] == [None, None]
    asked = simplenn.fit(_net(), train, test, epochs=2, batch_size=32, eval_train=True)
    assert all(0 <= e.train_accuracy <= 1 for e in asked.epochs)


def test_the_cli_measures_the_training_accuracy_only_with_eval_train(data_dir, tmp_path, capsys):
    metrics = tmp_path / "m.json"
    assert train_cli.main(_quick(data_dir, "--epochs", 1, "--metrics-out", metrics)) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("epoch "))
    assert " train " not in line and " test " in line
    assert json.loads(metrics.read_text())["epochs"][0]["train_accuracy"] is None

    assert (
        train_cli.main(_quick(data_dir, "--epochs", 1, "--eval-train", "--metrics-out", metrics))
        == 0
    )
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("epoch "))
    assert " train " in line
    assert 0 <= json.loads(metrics.read_text())["epochs"][0]["train_accuracy"] <= 1


def test_help_documents_eval_train_and_the_default_lr_rule(capsys):
    with pytest.raises(SystemExit):
        train_cli.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--eval-train" in text
    assert "0.2 * batch size / 128 up to batch 128, 0.2 above" in text


# -- the default learning rate follows the batch size ----------------------------------


@pytest.mark.parametrize(
    "batch_size, lr", [(1, 0.2 / 128), (8, 0.0125), (64, 0.1), (128, 0.2), (1000, 0.2)]
)
def test_the_default_lr_is_0_2_per_128_samples_up_to_batch_128(batch_size, lr):
    assert default_lr(batch_size) == pytest.approx(lr, rel=1e-15)
    assert TrainConfig(batch_size=batch_size).lr == pytest.approx(lr, rel=1e-15)
    assert TrainConfig(batch_size=batch_size, lr=0.05).lr == 0.05


def test_fit_resolves_the_default_lr_from_the_batch_size(tiny):
    history = simplenn.fit(_net(), tiny[0], epochs=1, batch_size=8, lr_schedule="constant")
    assert history.config.lr == 0.0125 and history.epochs[0].lr == 0.0125


def test_a_checkpoint_holds_the_default_lr_as_a_number(data_dir, tmp_path):
    ck = tmp_path / "ck"
    assert train_cli.main(_quick(data_dir, "--epochs", 1, "--quiet", "--checkpoint-dir", ck)) == 0
    assert load_checkpoint(checkpoint_path(ck)).state.config.lr == 0.05


def _backend_for_accuracy() -> str:
    return "numba" if probe_backend("numba").available else "numpy"


@pytest.mark.slow
@pytest.mark.parametrize("batch_size", [1, 8])
def test_one_epoch_at_a_small_batch_reaches_97_percent(batch_size):
    """At the default lr 0.2 one epoch at batch 8 ended at 53%, at batch 1 at 13%."""
    result = run_cli(
        "--backend", _backend_for_accuracy(), "--batch-size", batch_size, "--epochs", 1, "--quiet"
    )
    assert result.returncode == 0, result.stderr
    accuracy = float(result.stdout.split()[-1].rstrip("%"))
    assert accuracy >= 97.0


# -- divergence without a NaN -----------------------------------------------------------


def _loss_ops(factor: float, steps: range) -> NumpyOps:
    """NumPy ops whose loss is multiplied by ``factor`` in the ``steps`` (counted from 1)
    (a fresh class each time: compiled network functions are cached per Ops class)."""

    class LossOps(NumpyOps):
        step = 0

        def softmax_cross_entropy(self, logits, labels):
            type(self).step += 1
            loss, d = super().softmax_cross_entropy(logits, labels)
            return (loss * factor if type(self).step in steps else loss), d

    return LossOps("float32")


@pytest.mark.parametrize(
    "factor, what",
    [
        (np.nan, r"the loss is nan"),
        (
            1e6,
            r"the loss rose to [0-9.e+]+ and stayed above 2\d\.?\d* \(10 times the starting "
            r"loss\), up to [0-9.e+]+",
        ),
    ],
)
def test_a_diverging_run_names_epoch_and_step_restores_and_suggests_an_lr(tiny, factor, what):
    net = _net(_loss_ops(factor, range(7, 10**6)))
    before = net.parameters()
    with pytest.raises(TrainingDivergedError) as info:
        simplenn.fit(net, tiny[0], epochs=3, batch_size=32, lr=0.3)
    message = str(info.value)
    assert re.match("training diverged at epoch 1, step 7 of 19: " + what + ";", message), message
    assert "try a smaller learning rate (lr is 0.3), e.g. --lr 0.03." in message
    assert message.endswith("restored to its parameters at the start of epoch 1.")
    for k, v in net.parameters().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)


def test_a_finite_explosion_of_the_loss_is_caught_on_real_data(mnist):
    train, _ = mnist
    net = simplenn.TwoLayerNet(784, 32, backend="numpy", seed=0)
    with pytest.raises(
        TrainingDivergedError,
        match=r"epoch 1, step 2 of 47: the loss rose "
        r"to [0-9.e+]+ and stayed above",
    ):
        simplenn.fit(net, train[:6000], epochs=1, lr=1e6)


def test_a_spike_the_run_recovers_from_within_the_chunk_is_not_divergence(tiny):
    history = simplenn.fit(_net(_loss_ops(1e6, range(7, 12))), tiny[0], epochs=2, batch_size=32)
    assert history.epochs[0].train_loss > 1e5 and history.epochs[1].train_loss < 2


def test_healthy_runs_never_count_as_diverged(tiny):
    for lr in (0.01, 0.2, 1.0):
        simplenn.fit(_net(), tiny[0], epochs=3, batch_size=8, lr=lr)


@pytest.mark.parametrize(
    "lr, batch_size, suggestion",
    [
        (0.3, 128, 0.03),
        (1e6, 128, 0.2),
        (1e6, 8, 0.0125),
        (0.4, 32, 0.04),
        (0.02, 1, 0.0015625),
    ],
)
def test_the_suggested_lr_is_a_tenth_at_most_the_default(lr, batch_size, suggestion):
    assert smaller_lr(lr, batch_size) == pytest.approx(suggestion)


def test_the_cli_reports_an_exploding_loss_in_one_line(data_dir):
    result = run_cli(*_quick(data_dir, "--epochs", 2, "--lr", "1e6", "--quiet"))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{PROG}: error: training diverged at epoch 1, step ")
    assert "e.g. --lr 0.05, the default for batch size 32" in lines[0]
    assert "test accuracy" not in result.stdout


# -- SIGTERM ---------------------------------------------------------------------------


def _signalling_ops(signum: int, after_calls: int) -> NumpyOps:
    class SignallingOps(NumpyOps):
        calls = 0

        def to_float(self, x):
            type(self).calls += 1
            if type(self).calls == after_calls:
                signal.raise_signal(signum)
            return super().to_float(x)

    return SignallingOps("float32")


def test_sigterm_stops_fit_after_the_step_like_ctrl_c(tiny):
    def unhandled(signum, frame):
        raise AssertionError("fit did not handle SIGTERM")

    before = signal.signal(signal.SIGTERM, unhandled)
    states = []
    try:
        with pytest.raises(TrainingInterrupted) as info:
            simplenn.fit(
                _net(_signalling_ops(signal.SIGTERM, 5)),
                tiny[0],
                epochs=2,
                batch_size=32,
                on_checkpoint=states.append,
            )
        assert signal.getsignal(signal.SIGTERM) is unhandled
    finally:
        signal.signal(signal.SIGTERM, before)
    exc = info.value
    assert exc.signal_number == signal.SIGTERM and exc.saved and "SIGTERM" in str(exc)
    assert states[-1] is exc.state and exc.state.position == 5 * 32


def test_a_second_sigint_stops_at_once():
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt), _signals_stop(True) as flag:
        signal.raise_signal(signal.SIGINT)
        assert flag.signal_number == signal.SIGINT
        signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before


def _start_training(data_dir, *args) -> subprocess.Popen:
    """A CLI run of many epochs, returned once its first epoch is reported."""
    child = subprocess.Popen(
        [sys.executable, "-m", "simplenn.train", *_quick(data_dir, "--epochs", 100000, *args)],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in child.stdout:
        if line.startswith("epoch  1/"):
            break
    return child


def test_cli_sigterm_saves_a_checkpoint_says_how_to_resume_and_exits_143(data_dir, tmp_path):
    ck = tmp_path / "ck"
    child = _start_training(data_dir, "--checkpoint-dir", ck)
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 143, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"{PROG}: interrupted by SIGTERM (")
    assert f"saved checkpoint {ck / 'checkpoint.npz'}" in last
    assert f"resume with: {PROG} --checkpoint-dir {ck} --resume" in last
    assert load_checkpoint(checkpoint_path(ck)).state.epochs_done >= 1


def test_cli_sigterm_without_checkpoint_dir_says_nothing_was_saved(data_dir):
    child = _start_training(data_dir)
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 143
    assert "nothing was saved" in err.strip().splitlines()[-1]


# -- --seed -----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["-1", "1.5", "seven"])
def test_a_bad_seed_is_a_one_line_usage_error(value, capsys):
    with pytest.raises(SystemExit) as info:
        train_cli.main(["--seed", value])
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1
    assert "--seed" in err[0] and "integer >= 0" in err[0]


def test_any_seed_numpy_takes_is_accepted():
    assert train_cli.build_parser().parse_args(["--seed", str(2**64)]).seed == 2**64


# -- --metrics-out reproduces the run ---------------------------------------------------


def _sha256(split) -> str:
    return hashlib.sha256(split.X.tobytes() + split.y.tobytes()).hexdigest()


def test_the_metrics_file_says_how_to_reproduce_the_run(data_dir, tmp_path, tiny):
    metrics = tmp_path / "m.json"
    args = _quick(
        data_dir, "--epochs", 1, "--dtype", "float64", "--quiet", "--metrics-out", metrics
    )
    start = datetime.now(timezone.utc).replace(microsecond=0)
    assert train_cli.main(args) == 0
    record = json.loads(metrics.read_text())
    assert record["config"]["hidden"] == 16 and record["config"]["dtype"] == "float64"
    assert record["config"]["lr"] == 0.05 and record["config"]["batch_size"] == 32
    assert record["simplenn_version"] == simplenn.__version__
    assert record["command"] == shlex.join([*PROG.split(), *args])
    finished = datetime.fromisoformat(record["finished_utc"])
    assert finished.utcoffset() == timedelta(0)
    assert start <= finished <= datetime.now(timezone.utc)
    assert record["data"] == {
        "source": str(data_dir),
        "data_dir": str(data_dir.resolve()),
        "train_sha256": _sha256(tiny[0]),
        "test_sha256": _sha256(tiny[1]),
    }


# -- the line about auto's choice --------------------------------------------------------


def test_auto_says_in_one_short_line_which_backend_it_chose(data_dir):
    args = ["--data-dir", data_dir, "--hidden", "8", "--epochs", "1"]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    chosen = resolve_backend_name("auto")
    assert f"backend: {chosen} (auto; --list-backends shows the others)" in result.stderr
    assert "skipped" not in result.stderr and "install" not in result.stderr
    quiet = run_cli(*args, "--quiet")
    assert quiet.returncode == 0 and quiet.stderr == ""
    named = run_cli(*args, "--backend", "numpy")
    assert "backend:" not in named.stderr


# -- plots with a validation set ---------------------------------------------------------


def test_the_curves_of_a_run_with_a_validation_set(tiny):
    from simplenn.cli.plots import training_curves

    history = simplenn.fit(
        _net(), *tiny, epochs=3, batch_size=32, validation_fraction=0.2, early_stopping=2
    )
    losses, accuracies = training_curves(history)
    assert sorted(losses) == ["test (final)", "train", "validation"]
    assert sorted(accuracies) == ["test (final)", "validation"]
    assert [x for x, _ in accuracies["validation"]] == [1, 2, 3]
    assert accuracies["test (final)"] == [(history.best_epoch, 100 * history.test_accuracy)]
    assert losses["validation"][0] == (1, history.epochs[0].val_loss)


def test_the_curves_of_a_run_without_one(tiny):
    from simplenn.cli.plots import training_curves

    history = simplenn.fit(_net(), *tiny, epochs=2, batch_size=32, eval_train=True)
    losses, accuracies = training_curves(history)
    assert sorted(losses) == ["test", "train"] and sorted(accuracies) == ["test", "train"]


def test_plot_draws_the_validation_curves(data_dir, tmp_path):
    pytest.importorskip("matplotlib")
    Image = pytest.importorskip("PIL.Image")

    result = run_cli(
        *_quick(data_dir, "--epochs", 2, "--val-split", 0.2, "--quiet", "--plot", tmp_path)
    )
    assert result.returncode == 0, result.stderr
    with Image.open(tmp_path / "training_curves.png") as image:
        assert image.size == (1000, 400)


# -- the warm-up compiles the inputs the run uses ----------------------------------------


def test_the_cli_warms_up_on_inputs_like_its_data_with_its_settings(data_dir, tiny, monkeypatch):
    train, _ = tiny
    calls = []

    class NeedsWarmup(NumpyOps):
        needs_warmup = True

    def record(ops, example, **kw):
        calls.append((example.dtype, example.flags.writeable, example.shape[1], kw))

    monkeypatch.setattr(train_cli, "warm_up", record)
    monkeypatch.setattr(train_cli, "_choose_backend", lambda name: (NeedsWarmup("float32"), False))
    assert train_cli.main(_quick(data_dir, "--epochs", 1, "--quiet")) == 0
    dtype, writeable, width, kw = calls.pop()
    # the warm-up's inputs are of the kind load_dataset's splits hold
    assert (dtype, writeable, width) == (train.X.dtype, train.X.flags.writeable, 784)
    assert kw == {"optimizer": SGD(), "batch_size": 32, "augment": "none", "gradients": False}
    assert (
        train_cli.main(
            _quick(
                data_dir,
                "--epochs",
                1,
                "--quiet",
                "--augment",
                "affine",
                "--batch-size",
                50,
                "--optimizer",
                "adam",
            )
        )
        == 0
    )
    assert calls.pop()[3] == {
        "optimizer": Adam(),
        "batch_size": 50,
        "augment": "affine",
        "gradients": False,
    }
