"""Validation sets and early stopping: the seeded stratified split, the per-epoch
validation statistics, the test set evaluated once at the end, stopping and restoring
the best epoch, bitwise resume, and the CLI's --val-split and --early-stop."""

from __future__ import annotations

import json
import math
import signal

import numpy as np
import pytest

import simplenn
from simplenn.backends.numpy_backend import NumpyOps
from simplenn.cli.train import main
from simplenn.core.training import TrainingInterrupted, stratified_split
from simplenn.errors import ModelFileError
from simplenn.io import checkpoints
from simplenn.io.checkpoints import checkpoint_path, load_checkpoint, save_checkpoint
from simplenn.io.models import read_model_archive, read_model_file, write_model_file

pytestmark = pytest.mark.usefixtures("one_blas_thread")

#: On 600 training images this run's validation loss improves, worsens, improves again
#: and then worsens for two epochs, so early stopping ends it long before epoch 12.
STOPPING = dict(
    epochs=12,
    batch_size=20,
    lr=0.2,
    lr_schedule="constant",
    validation_fraction=0.25,
    early_stopping=2,
    seed=3,
)
TIMING = ("seconds", "samples_per_second", "eval_seconds")


@pytest.fixture(scope="module")
def small():
    train, test = simplenn.load_mnist()
    return (train.X[:600], train.y[:600]), (test.X[:200], test.y[:200])


def _net(ops=None) -> simplenn.TwoLayerNet:
    return simplenn.TwoLayerNet(784, 16, 10, backend=ops or "numpy", seed=1)


def _without_timing(history: simplenn.History) -> dict:
    d = history.to_dict()
    for e in d["epochs"]:
        for k in TIMING:
            del e[k]
    return d


@pytest.fixture(scope="module")
def stopped(small):
    """The early-stopping run unbroken: (net, history, the state after every epoch)."""
    net, states = _net(), []
    history = simplenn.fit(net, *small, **STOPPING, on_checkpoint=states.append)
    return net, history, states


# -- the split ------------------------------------------------------------------------
def test_stratified_split_is_seeded_disjoint_and_stratified(mnist):
    y = mnist[0].y[:5000]
    train, val = stratified_split(y, 0.2, seed=4)
    assert val.shape == (1000,) and train.shape == (4000,)
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(5000))
    assert (np.diff(train) > 0).all() and (np.diff(val) > 0).all()
    per_class, held = np.bincount(y), np.bincount(y[val], minlength=10)
    assert (np.abs(held - 0.2 * per_class) < 1).all()
    again, other = stratified_split(y, 0.2, seed=4)[1], stratified_split(y, 0.2, seed=5)[1]
    assert np.array_equal(again, val) and not np.array_equal(other, val)


def test_stratified_split_holds_out_the_rounded_up_share_and_leaves_one_to_train():
    y = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 2])
    assert stratified_split(y, 0.25, seed=0)[1].shape == (3,)
    train, val = stratified_split(np.array([0, 1]), 0.99, seed=0)
    assert train.shape == val.shape == (1,)
    with pytest.raises(ValueError, match="at least 2 training samples"):
        stratified_split(np.array([3]), 0.5, seed=0)


# -- statistics -----------------------------------------------------------------------
def test_validation_fraction_records_val_stats_and_tests_once_at_the_end(small):
    (X, y), test = small
    net, states = _net(), []
    history = simplenn.fit(
        net,
        (X, y),
        test,
        epochs=3,
        batch_size=50,
        lr=0.1,
        validation_fraction=0.2,
        seed=2,
        on_checkpoint=states.append,
    )
    rows = states[-1].validation_indices
    assert states[-1].n_train == 480 and states[-1].n_validation == rows.shape[0] == 120
    assert np.array_equal(rows, stratified_split(y, 0.2, seed=2)[1])
    for e in history.epochs:
        assert 0 < e.val_loss < 3 and 0 <= e.val_accuracy <= 1
        assert e.test_accuracy is None and e.test_loss is None
    last = history.epochs[-1]
    loss, _ = net.loss_and_gradients(X[rows], y[rows])
    assert last.val_loss == pytest.approx(loss, rel=1e-5)
    assert last.val_accuracy == net.accuracy(X[rows], y[rows])
    assert history.best_epoch == 1 + int(np.argmin([e.val_loss for e in history.epochs]))
    assert not history.stopped_early
    assert history.test_accuracy == history.final_test_accuracy == net.accuracy(*test)
    assert history.test_loss == pytest.approx(net.loss_and_gradients(*test)[0], rel=1e-5)
    d = json.loads(json.dumps(history.to_dict()))
    assert d["best_epoch"] == history.best_epoch and d["stopped_early"] is False
    assert d["final_test_loss"] == history.test_loss
    assert d["config"]["validation_fraction"] == 0.2 and d["config"]["early_stopping"] is None
    assert {"val_loss", "val_accuracy", "test_loss"} <= set(d["epochs"][0])


def test_an_explicit_validation_set_trains_like_the_same_rows_held_out(small):
    (X, y), test = small
    keep, held = stratified_split(y, 0.25, seed=3)
    a, b = _net(), _net()
    ha = simplenn.fit(a, (X, y), test, epochs=2, batch_size=20, validation_fraction=0.25, seed=3)
    hb = simplenn.fit(
        b, (X[keep], y[keep]), test, epochs=2, batch_size=20, validation=(X[held], y[held]), seed=3
    )
    for k, v in a.parameters().items():
        np.testing.assert_array_equal(b.parameters()[k], v, err_msg=k)
    assert _without_timing(ha)["epochs"] == _without_timing(hb)["epochs"]


def test_without_validation_every_epoch_tests_as_before(small):
    net = _net()
    history = simplenn.fit(net, *small, epochs=2, batch_size=50)
    for e in history.epochs:
        assert e.val_loss is None and e.val_accuracy is None
        assert 0 < e.test_loss < 3 and 0 <= e.test_accuracy <= 1
    assert history.best_epoch is None and history.test_accuracy is None
    last = history.epochs[-1]
    assert history.final_test_accuracy == last.test_accuracy == net.accuracy(*small[1])
    assert history.final_test_loss == history.epochs[-1].test_loss


# -- early stopping -------------------------------------------------------------------
def test_early_stopping_stops_and_restores_the_best_epoch(small, stopped):
    net, history, states = stopped
    losses = [e.val_loss for e in history.epochs]
    best = history.best_epoch
    assert best == 1 + int(np.argmin(losses)) and best > 1
    assert history.stopped_early and len(history.epochs) == best + STOPPING["early_stopping"]
    assert all(loss >= losses[best - 1] for loss in losses[best:])
    for k, v in states[best - 1].parameters.items():
        np.testing.assert_array_equal(net.parameters()[k], v, err_msg=k)
    assert not np.array_equal(states[-1].parameters["W1"], net.parameters()["W1"])
    assert history.final_test_accuracy == net.accuracy(*small[1])
    last = states[-1]
    assert last.finished and last.patience_ran_out and "stopped early" in last.describe()
    assert (last.best_epoch, last.best_val_loss) == (best, losses[best - 1])
    assert last.epochs_without_improvement == STOPPING["early_stopping"]


def test_early_stopping_restores_the_best_epoch_when_every_epoch_ran(small):
    net, states = _net(), []
    history = simplenn.fit(
        net, *small, **{**STOPPING, "early_stopping": 20}, on_checkpoint=states.append
    )
    assert len(history.epochs) == 12 and not history.stopped_early
    for k, v in states[history.best_epoch - 1].parameters.items():
        np.testing.assert_array_equal(net.parameters()[k], v, err_msg=k)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"validation_fraction": 0.2, "validation": "train"}, "not both"),
        ({"early_stopping": 3}, "early_stopping needs a validation set"),
        ({"validation_fraction": 0.0}, r"validation_fraction must be a number in \(0, 1\)"),
        ({"validation_fraction": 1.0}, "validation_fraction must be"),
        ({"validation_fraction": math.nan}, "validation_fraction must be"),
        ({"validation_fraction": True}, "validation_fraction must be"),
        ({"validation_fraction": "0.2"}, "validation_fraction must be"),
        ({"validation_fraction": 0.2, "early_stopping": 0}, "early_stopping must be a positive"),
        ({"validation_fraction": 0.2, "early_stopping": 2.5}, "early_stopping must be a positive"),
        ({"validation_fraction": 0.2, "early_stopping": True}, "early_stopping must be a positive"),
        ({"validation": "empty"}, "the validation set is empty"),
    ],
)
def test_bad_validation_settings_are_refused_in_one_line(small, kwargs, match):
    replace = {"train": small[0], "empty": (small[0][0][:0], small[0][1][:0])}
    kwargs = {
        k: replace.get(v, v) if isinstance(v, str) and k == "validation" else v
        for k, v in kwargs.items()
    }
    with pytest.raises(ValueError, match=match) as info:
        simplenn.fit(_net(), small[0], epochs=1, **kwargs)
    assert "\n" not in str(info.value)


# -- resume ---------------------------------------------------------------------------
class _Stop(Exception):
    pass


def _stopping_after(epoch: int, path):
    """An on_checkpoint that saves each state to ``path`` and stops the run after ``epoch``."""

    def checkpoint(state):
        save_checkpoint(path, state)
        if state.epochs_done == epoch:
            raise _Stop

    return checkpoint


def _assert_same_run(net, history, ref_net, ref_history) -> None:
    for k, v in ref_net.parameters().items():
        np.testing.assert_array_equal(net.parameters()[k], v, err_msg=k)
    assert _without_timing(history) == _without_timing(ref_history)
    assert (history.test_loss, history.test_accuracy) == (
        ref_history.test_loss,
        ref_history.test_accuracy,
    )


@pytest.mark.parametrize("epoch", [1, 2, 3, 4, 5])
def test_resume_after_an_epoch_equals_the_unbroken_run_bitwise(small, stopped, tmp_path, epoch):
    ref_net, ref_history, ref_states = stopped
    path = tmp_path / "c.npz"
    with pytest.raises(_Stop):
        simplenn.fit(_net(), *small, **STOPPING, on_checkpoint=_stopping_after(epoch, path))
    state = load_checkpoint(path).state
    ref = ref_states[epoch - 1]
    assert (state.best_epoch, state.best_val_loss, state.epochs_without_improvement) == (
        ref.best_epoch,
        ref.best_val_loss,
        ref.epochs_without_improvement,
    )
    assert np.array_equal(state.validation_indices, ref.validation_indices)
    for k, v in ref.best_parameters.items():
        np.testing.assert_array_equal(state.best_parameters[k], v, err_msg=k)
    net, states = _net(), []
    history = simplenn.fit(net, *small, **STOPPING, resume=state, on_checkpoint=states.append)
    _assert_same_run(net, history, ref_net, ref_history)
    assert len(states) == len(ref_states) - epoch


def test_resume_mid_epoch_equals_the_unbroken_run_bitwise(small, stopped, tmp_path):
    class InterruptingOps(NumpyOps):
        calls = 0

        def to_float(self, x):
            type(self).calls += 1
            if type(self).calls == 40:  # in epoch 2 (23 steps and 2 evaluations per epoch)
                signal.raise_signal(signal.SIGINT)
            return super().to_float(x)

    path = tmp_path / "c.npz"
    with pytest.raises(TrainingInterrupted) as info:
        simplenn.fit(
            _net(InterruptingOps("float32")),
            *small,
            **STOPPING,
            on_checkpoint=lambda s: save_checkpoint(path, s),
        )
    state = load_checkpoint(path).state
    assert state.epochs_done == 1 and state.position > 0 and state.best_epoch == 1
    assert info.value.state.position == state.position
    net = _net()
    history = simplenn.fit(net, *small, **STOPPING, resume=state)
    _assert_same_run(net, history, *stopped[:2])


def test_resume_refuses_another_validation_setting(small, stopped):
    state = stopped[2][0]
    with pytest.raises(ValueError, match=r"early_stopping=3 \(state: 2\)"):
        simplenn.fit(_net(), *small, **{**STOPPING, "early_stopping": 3}, resume=state)
    (X, y), test = small
    keep, held = stratified_split(y, 0.25, seed=3)
    with pytest.raises(ValueError, match="settings differ"):
        simplenn.fit(
            _net(),
            (X[keep], y[keep]),
            test,
            **{**STOPPING, "validation_fraction": None},
            validation=(X[held], y[held]),
            resume=state,
        )


def test_resuming_a_run_that_stopped_early_only_restores_and_tests(small, stopped):
    ref_net, ref_history, ref_states = stopped
    net = _net()
    history = simplenn.fit(net, *small, **STOPPING, resume=ref_states[-1])
    _assert_same_run(net, history, ref_net, ref_history)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda info, extra: info.update(best_epoch=9), "inconsistent validation bookkeeping"),
        (
            lambda info, extra: info.update(best_val_loss=None),
            "inconsistent validation bookkeeping",
        ),
        (lambda info, extra: extra.pop("validation_indices"), "validation_indices must be present"),
        (lambda info, extra: extra.pop("best_W2"), "best_W2 is missing"),
    ],
)
def test_a_checkpoint_with_damaged_validation_state_is_refused(stopped, tmp_path, change, match):
    params, meta, extra = read_model_archive(save_checkpoint(tmp_path / "c.npz", stopped[2][2]))
    change(meta["checkpoint"], extra)
    path = write_model_file(
        tmp_path / "bad.npz",
        params,
        backend="numpy",
        metadata={"checkpoint": meta["checkpoint"]},
        extra_arrays=extra,
    )
    with pytest.raises(ModelFileError, match=match):
        load_checkpoint(path)


# -- the command line -------------------------------------------------------------------
@pytest.fixture(scope="module")
def data_dir(mnist_subset_dir):
    """A small MNIST-format directory: 600 train and 200 test images."""
    return mnist_subset_dir(600, 200)


def _cli(data_dir, *args) -> list[str]:
    return [
        "--backend",
        "numpy",
        "--data-dir",
        str(data_dir),
        "--hidden",
        "16",
        "--seed",
        "3",
        "--batch-size",
        "20",
        "--lr",
        "0.2",
        "--lr-schedule",
        "constant",
        "--epochs",
        "12",
        *map(str, args),
    ]


def test_cli_val_split_and_early_stop(data_dir, tmp_path, capsys):
    metrics = tmp_path / "m.json"
    assert (
        main(_cli(data_dir, "--val-split", 0.25, "--early-stop", 2, "--metrics-out", metrics)) == 0
    )
    out = capsys.readouterr().out.strip().splitlines()
    epochs = [line for line in out if line.startswith("epoch ")]
    record = json.loads(metrics.read_text())
    assert len(epochs) == len(record["epochs"]) < 12
    assert all(" val " in line and " test " not in line for line in epochs)
    assert any(line.startswith("stopped early after epoch") for line in out)
    assert out[-1].startswith("test accuracy: ")
    assert record["stopped_early"] is True and record["best_epoch"] >= 1
    assert record["config"]["validation_fraction"] == 0.25
    assert record["config"]["early_stopping"] == 2
    assert all(e["val_loss"] > 0 and e["test_accuracy"] is None for e in record["epochs"])
    accuracy = float(out[-1].split()[-1].rstrip("%")) / 100
    assert record["final_test_accuracy"] == pytest.approx(accuracy, abs=5e-5)


@pytest.mark.parametrize(
    "args, phrase",
    [
        (["--val-split", "0"], "--val-split"),
        (["--val-split", "1"], "--val-split"),
        (["--val-split", "half"], "--val-split"),
        (["--val-split", "nan"], "--val-split"),
        (["--early-stop", "0"], "--early-stop"),
        (["--early-stop", "1.5"], "--early-stop"),
        (["--early-stop", "3"], "needs --val-split"),
    ],
)
def test_cli_bad_validation_flags_exit_2_with_one_line(args, phrase, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and phrase in err[0]


def test_cli_help_documents_the_validation_flags(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "--val-split F" in out and "--early-stop N" in out


def test_cli_resume_with_validation_equals_the_unbroken_run(
    data_dir, tmp_path, monkeypatch, capsys
):
    flags = ("--val-split", 0.25, "--early-stop", 2, "--quiet")
    ck = tmp_path / "ck"
    save = checkpoints.save_checkpoint

    def save_then_interrupt(path, state, **kwargs):
        save(path, state, **kwargs)
        if state.epochs_done == 2:
            signal.raise_signal(signal.SIGINT)  # the run stops after this checkpoint

    monkeypatch.setattr(checkpoints, "save_checkpoint", save_then_interrupt)
    assert main(_cli(data_dir, *flags, "--checkpoint-dir", ck)) == 130
    monkeypatch.undo()
    assert load_checkpoint(checkpoint_path(ck)).state.epochs_done == 2
    capsys.readouterr()
    assert (
        main(
            [
                "--checkpoint-dir",
                str(ck),
                "--resume",
                "--backend",
                "numpy",
                "--quiet",
                "--early-stop",
                "2",
                "--save",
                str(tmp_path / "resumed.npz"),
                "--metrics-out",
                str(tmp_path / "resumed.json"),
            ]
        )
        == 0
    )
    resumed_out = capsys.readouterr().out
    assert (
        main(
            _cli(
                data_dir,
                *flags,
                "--save",
                tmp_path / "unbroken.npz",
                "--metrics-out",
                tmp_path / "unbroken.json",
            )
        )
        == 0
    )
    assert capsys.readouterr().out == resumed_out
    a, _ = read_model_file(tmp_path / "resumed.npz")
    b, _ = read_model_file(tmp_path / "unbroken.npz")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    ra, rb = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("resumed", "unbroken"))
    for record in (ra, rb):
        del record["command"], record["finished_utc"]  # which invocation, and when
        for e in record["epochs"]:
            for k in TIMING:
                del e[k]
    assert ra == rb and ra["stopped_early"]


def test_cli_resume_refuses_another_early_stop(data_dir, tmp_path, capsys):
    ck = tmp_path / "ck"
    assert (
        main(_cli(data_dir, "--epochs", 1, "--val-split", 0.25, "--quiet", "--checkpoint-dir", ck))
        == 0
    )
    capsys.readouterr()
    assert main(["--checkpoint-dir", str(ck), "--resume", "--early-stop", "2", "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--early-stop 2 (checkpoint: None)" in err[0]
