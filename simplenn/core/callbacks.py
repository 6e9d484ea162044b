"""Callbacks for ``simplenn.fit(..., on_epoch_end=callback)``: watch a run, log it, stop it.

A callback is any callable that takes the :class:`~simplenn.EpochStats` of each epoch
as it ends. It watches by returning None, and stops the run by returning
:class:`StopTraining` (the class or an instance, which may carry a reason)::

    def enough(stats):
        if stats.val_accuracy is not None and stats.val_accuracy >= 0.97:
            return StopTraining("reached 97%")

    history = simplenn.fit(net, train, validation_fraction=0.1, on_epoch_end=enough)
    history.stopped_by_callback  # True when enough() ended the run

A stop ends the run cleanly after that epoch: ``on_checkpoint`` still gets the epoch's
state, the test set is evaluated as at the end of any run, ``fit`` returns the
:class:`~simplenn.History` of every epoch run (``history.stopped_by_callback`` is set)
and, with ``early_stopping``, the network keeps the parameters of its best epoch, as
when the patience runs out.

Shipped callbacks: :class:`CSVLogger` (one CSV row per epoch), :class:`StopOnPlateau`
(stop when a metric stops improving) and :class:`CallbackList` (several as one).
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .training import EpochStats

__all__ = ["CSVLogger", "CallbackList", "StopOnPlateau", "StopTraining", "requests_stop"]


class StopTraining:
    """What an ``on_epoch_end`` callback returns to end the run after this epoch:
    ``StopTraining`` itself or ``StopTraining("why")``. (``fit`` stops on any value
    whose ``stops_training`` is True.)"""

    stops_training = True

    def __init__(self, reason: str = "") -> None:
        self.reason = str(reason)

    def __repr__(self) -> str:
        return f"StopTraining({self.reason!r})"


def requests_stop(result: Any) -> bool:
    """Whether a callback's return value asks the run to stop."""
    return getattr(result, "stops_training", False) is True


class CallbackList:
    """Several callbacks as one: every epoch each is called in order, and the run stops
    when any of them returns :class:`StopTraining` (the first such value is returned)."""

    def __init__(self, *callbacks: Callable[[Any], Any] | None) -> None:
        for callback in callbacks:
            if callback is not None and not callable(callback):
                raise TypeError(f"a callback must be callable, not {type(callback).__name__}")
        self.callbacks = [c for c in callbacks if c is not None]

    def __call__(self, stats: Any) -> Any:
        stop = None
        for callback in self.callbacks:
            result = callback(stats)
            if stop is None and requests_stop(result):
                stop = result
        return stop


class StopOnPlateau:
    """Stop when ``metric`` has not improved by more than ``tol`` for ``patience``
    epochs in a row.

    ``metric`` is a field of :class:`~simplenn.EpochStats` that the run measures:
    ``train_loss``, ``val_loss`` or ``test_loss`` (lower is better), or
    ``train_accuracy``, ``val_accuracy`` or ``test_accuracy`` (higher is better). An
    epoch improves when it beats the best value so far by more than ``tol`` (>= 0).
    ``best`` holds the best value so far and ``epochs_without_improvement`` the count.
    It only stops the run: to keep the best epoch's parameters, use ``fit``'s
    ``early_stopping`` beside it.
    """

    def __init__(self, metric: str = "train_loss", patience: int = 10, tol: float = 0.0) -> None:
        names = [
            f.name
            for f in dataclasses.fields(EpochStats)
            if f.name.endswith(("_loss", "_accuracy"))
        ]
        if metric not in names:
            raise ValueError(f"metric must be one of {', '.join(names)}, not {metric!r}")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience must be a positive integer, not {patience!r}")
        if (
            isinstance(tol, bool)
            or not isinstance(tol, (int, float))
            or not tol >= 0
            or not math.isfinite(tol)
        ):
            raise ValueError(f"tol must be a finite number >= 0, not {tol!r}")
        self.metric, self.patience, self.tol = metric, patience, float(tol)
        self.higher_is_better = metric.endswith("_accuracy")
        self.best: float | None = None
        self.epochs_without_improvement = 0

    def __call__(self, stats: Any) -> StopTraining | None:
        value = getattr(stats, self.metric)
        if value is None:
            raise ValueError(
                f"StopOnPlateau watches {self.metric}, which this run does not "
                f"measure (it needs a validation set, a test set or eval_train)"
            )
        sign = -1.0 if self.higher_is_better else 1.0
        if self.best is not None and not sign * value < sign * self.best - self.tol:
            self.epochs_without_improvement += 1
        else:
            self.epochs_without_improvement = 0
        if self.best is None or sign * value < sign * self.best:
            self.best = float(value)
        if self.epochs_without_improvement >= self.patience:
            return StopTraining(
                f"{self.metric} did not improve by more than {self.tol:g} "
                f"for {self.patience} epochs"
            )
        return None


class CSVLogger:
    """Log every epoch to the CSV file ``path``: a header row naming every field of
    :class:`~simplenn.EpochStats` (``epoch``, ``lr``, ``train_loss``, ...), written
    once, then one row per epoch; a statistic the run does not measure (None) is an
    empty cell. The file is opened, written and closed for each row, so it is complete
    after every epoch, even if the process is killed later.

    The file is created (or emptied) at once, so an unwritable path fails before any
    training, with ``OSError``. ``append=True`` adds to an existing file instead (a
    resumed run): its header must be this one, else ``ValueError``; an empty or new
    file gets the header.
    """

    def __init__(self, path: str | os.PathLike, *, append: bool = False) -> None:
        self.path = Path(path)
        self.columns = tuple(f.name for f in dataclasses.fields(EpochStats))
        existing = self.path.exists() and self.path.stat().st_size > 0
        if append and existing:
            with open(self.path, newline="", encoding="utf-8") as f:
                header = next(csv.reader(f), [])
            if tuple(header) != self.columns:
                raise ValueError(
                    f"{self.path} has the columns {', '.join(header)}, not "
                    f"those of EpochStats; log to a new file"
                )
            return
        with open(self.path, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerow(self.columns)

    def __call__(self, stats: Any) -> None:
        row = dataclasses.asdict(stats)
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            csv.writer(f).writerow(["" if row[c] is None else row[c] for c in self.columns])
