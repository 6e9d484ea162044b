"""Callbacks that act: StopTraining ends a run cleanly (the History, the checkpoint, the
best epoch's parameters kept), CSVLogger writes a row per epoch, StopOnPlateau and
CallbackList, and ``python -m simplenn.train --log-csv``."""

from __future__ import annotations

import csv
import dataclasses
import math
from types import SimpleNamespace

import numpy as np
import pytest

import simplenn
from simplenn import CallbackList, CSVLogger, EpochStats, StopOnPlateau, StopTraining

pytestmark = pytest.mark.usefixtures("one_blas_thread")


@pytest.fixture(scope="module")
def noise():
    """Labels that do not depend on the features: the validation loss soon rises."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((300, 8)).astype(np.float32)
    return X, rng.integers(0, 2, 300)


def _net():
    return simplenn.TwoLayerNet(8, 32, 2, seed=0)


SETTINGS = {"epochs": 12, "batch_size": 32, "lr": 0.1, "interruptible": False}


@pytest.mark.parametrize("stop", [StopTraining, StopTraining("enough")])
def test_stop_training_ends_the_run_after_that_epoch(noise, stop):
    seen = []

    def callback(stats):
        seen.append(stats.epoch)
        return stop if stats.epoch == 3 else None

    history = simplenn.fit(_net(), noise, noise, on_epoch_end=callback, **SETTINGS)
    assert seen == [1, 2, 3] and [e.epoch for e in history.epochs] == [1, 2, 3]
    assert history.stopped_by_callback and not history.stopped_early
    assert history.to_dict()["stopped_by_callback"] is True
    assert history.final_test_accuracy is not None


@pytest.mark.parametrize("value", [None, True, 0, "stop", StopOnPlateau])
def test_other_return_values_only_watch(noise, value):
    history = simplenn.fit(
        _net(),
        noise,
        epochs=3,
        batch_size=32,
        interruptible=False,
        on_epoch_end=lambda stats: value,
    )
    assert len(history.epochs) == 3 and not history.stopped_by_callback


def test_a_stop_keeps_the_best_epoch_and_the_checkpoint_and_the_test_set(noise):
    """With early_stopping the network keeps its best epoch's parameters, on_checkpoint
    gets the last epoch, and the test set is evaluated once at the end."""
    states = {}

    def checkpoint(state):
        states[state.epochs_done] = state.parameters

    def stop_at_6(stats):
        return StopTraining if stats.epoch == 6 else None

    net = _net()
    history = simplenn.fit(
        net,
        noise,
        noise,
        validation_fraction=0.2,
        early_stopping=50,
        on_epoch_end=stop_at_6,
        on_checkpoint=checkpoint,
        **SETTINGS,
    )
    assert len(history.epochs) == 6 and history.stopped_by_callback
    assert sorted(states) == [1, 2, 3, 4, 5, 6]
    best = history.best_epoch
    assert best < 6, "the noise labels should make a later epoch worse"
    for name, value in states[best].items():
        np.testing.assert_array_equal(net.parameters()[name], value)
    assert history.test_accuracy is not None


def test_csv_logger_writes_a_header_and_a_row_per_epoch_as_it_ends(noise, tmp_path):
    path = tmp_path / "log.csv"
    logger = CSVLogger(path)
    assert path.read_text().splitlines() == [
        ",".join(f.name for f in dataclasses.fields(EpochStats))
    ]
    rows_seen = []

    def count_rows(stats):
        rows_seen.append(len(path.read_text().splitlines()) - 1)

    history = simplenn.fit(
        _net(),
        noise,
        noise,
        epochs=3,
        batch_size=32,
        eval_train=True,
        interruptible=False,
        on_epoch_end=CallbackList(logger, count_rows),
    )
    assert rows_seen == [1, 2, 3]
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3
    for row, stats in zip(rows, history.epochs):
        for name, value in dataclasses.asdict(stats).items():
            if value is None:
                assert row[name] == ""
            else:
                assert float(row[name]) == value


def test_csv_logger_appends_without_a_second_header(noise, tmp_path):
    path = tmp_path / "log.csv"
    fit = {"epochs": 2, "batch_size": 32, "interruptible": False}
    simplenn.fit(_net(), noise, on_epoch_end=CSVLogger(path), **fit)
    simplenn.fit(_net(), noise, on_epoch_end=CSVLogger(path, append=True), **fit)
    lines = path.read_text().splitlines()
    assert len(lines) == 5 and lines[0].startswith("epoch,") and "epoch" not in "".join(lines[1:])
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="columns a, b"):
        CSVLogger(path, append=True)


def test_csv_logger_fails_before_training_where_it_cannot_write(tmp_path):
    with pytest.raises(OSError):
        CSVLogger(tmp_path / "missing" / "log.csv")


def _stats(**values):
    fields = {f.name: None for f in dataclasses.fields(EpochStats)}
    return SimpleNamespace(**{**fields, **values})


def test_stop_on_plateau_counts_epochs_without_an_improvement_beyond_tol():
    watch = StopOnPlateau("train_loss", patience=2, tol=0.1)
    results = [watch(_stats(train_loss=v)) for v in (1.0, 0.5, 0.45, 0.42, 0.3)]
    # 0.45 and 0.42 beat 0.5 by less than tol: the second of them stops the run
    assert [requests is not None for requests in results] == [False, False, False, True, False]
    assert watch.best == 0.3 and watch.epochs_without_improvement == 0

    accuracy = StopOnPlateau("val_accuracy", patience=1)
    assert accuracy(_stats(val_accuracy=0.5)) is None
    assert accuracy(_stats(val_accuracy=0.6)) is None
    assert isinstance(accuracy(_stats(val_accuracy=0.6)), StopTraining)


def test_stop_on_plateau_refuses_what_it_cannot_watch(noise):
    for bad in ({"metric": "lr"}, {"patience": 0}, {"tol": -1.0}, {"tol": math.nan}):
        with pytest.raises(ValueError):
            StopOnPlateau(**bad)
    with pytest.raises(ValueError, match="val_loss.*does not measure"):
        simplenn.fit(
            _net(), noise, epochs=1, interruptible=False, on_epoch_end=StopOnPlateau("val_loss")
        )


def test_callback_list_calls_every_callback_and_returns_the_first_stop():
    calls = []
    first, second = StopTraining("a"), StopTraining("b")
    callbacks = CallbackList(
        lambda s: calls.append(1), None, lambda s: first, lambda s: calls.append(2) or second
    )
    assert callbacks(_stats()) is first and calls == [1, 2]
    assert CallbackList(lambda s: None)(_stats()) is None
    with pytest.raises(TypeError, match="callable"):
        CallbackList(3)


def test_train_log_csv(tmp_path, capsys):
    from simplenn.cli.train import main

    data = _tiny_data(tmp_path)
    path = tmp_path / "log.csv"
    assert (
        main(
            [
                "--backend",
                "numpy",
                "--data-dir",
                str(data),
                "--epochs",
                "2",
                "--hidden",
                "16",
                "--quiet",
                "--log-csv",
                str(path),
            ]
        )
        == 0
    )
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert all(row["test_accuracy"] for row in rows)


def test_train_log_csv_in_a_missing_directory_is_a_usage_error(tmp_path, capsys):
    from simplenn.cli.train import main

    with pytest.raises(SystemExit) as info:
        main(["--log-csv", str(tmp_path / "missing" / "log.csv")])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "--log-csv" in err and "\n" not in err


def _tiny_data(tmp_path):
    from simplenn.data.idx import write_idx

    rng = np.random.default_rng(0)
    d = tmp_path / "data"
    d.mkdir()
    for split, n in (("train", 200), ("t10k", 50)):
        write_idx(
            d / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 8, 8)).astype(np.uint8)
        )
        write_idx(d / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, n).astype(np.uint8))
    return d
