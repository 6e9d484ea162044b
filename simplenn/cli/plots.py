"""PNG figures: training curves, confusion matrix, the most confidently wrong digits.

Needs matplotlib (``pip install matplotlib``). Figures are drawn on matplotlib's
Agg canvas directly (no pyplot, no global state, no display needed) and written
atomically.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from .._optional import require
from ..core.training import History
from ..errors import SimplennError
from ..io.atomic import atomic_write_bytes

TRAINING_CURVES = "training_curves.png"
CONFUSION_MATRIX = "confusion_matrix.png"
CONFIDENT_ERRORS = "confident_errors.png"


def require_matplotlib() -> None:
    """Raise :class:`~simplenn._optional.MissingDependencyError` unless matplotlib imports."""
    require("matplotlib", "--plot")


def _figure(width: float, height: float) -> Any:
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str | os.PathLike) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    try:
        atomic_write_bytes(path, buffer.getvalue())
    except OSError as exc:
        raise SimplennError(f"cannot write the plot {path}: {exc.strerror or exc}") from None
    return Path(path)


#: The per-epoch curves: label -> the EpochStats field of each panel.
_LOSS_FIELDS = {"train": "train_loss", "validation": "val_loss", "test": "test_loss"}
_ACCURACY_FIELDS = {
    "train": "train_accuracy",
    "validation": "val_accuracy",
    "test": "test_accuracy",
}

Curves = dict[str, list[tuple[int, float]]]


def training_curves(history: History) -> tuple[Curves, Curves]:
    """What :func:`plot_training_curves` draws: ``(losses, accuracies)``, each a label ->
    the ``(epoch, value)`` points of the epochs that measured it (accuracies in %).

    Losses: ``train`` (the mean loss of the epoch's steps), ``validation`` and ``test``;
    accuracies: ``train`` (with ``eval_train``), ``validation`` and ``test``. A run with a
    validation set measures the test set once, at the end: ``test (final)``, one point at
    the epoch whose parameters the network kept. Curves without points are left out.
    """

    def points(name: str, scale: float = 1.0) -> list[tuple[int, float]]:
        return [
            (e.epoch, scale * getattr(e, name))
            for e in history.epochs
            if getattr(e, name) is not None
        ]

    losses = {label: points(name) for label, name in _LOSS_FIELDS.items()}
    accuracies = {label: points(name, 100.0) for label, name in _ACCURACY_FIELDS.items()}
    if history.test_accuracy is not None and history.epochs:
        kept = (
            history.best_epoch
            if history.config.early_stopping is not None
            else history.epochs[-1].epoch
        )
        accuracies["test (final)"] = [(kept, 100.0 * history.test_accuracy)]
        if history.test_loss is not None:
            losses["test (final)"] = [(kept, history.test_loss)]
    return ({k: v for k, v in losses.items() if v}, {k: v for k, v in accuracies.items() if v})


def training_curves_title(history: History, n_hidden: int | None = None) -> str:
    """The title of :func:`plot_training_curves`: the backend, the hidden width (when
    given), the batch size, the learning rate and its schedule, the optimizer, the
    augmentation and the seed."""
    c = history.config
    hidden = f"hidden {n_hidden}, " if n_hidden is not None else ""
    augment = "no augmentation" if c.augment == "none" else f"{c.augment} augmentation"
    return (
        f"{history.backend} backend, {hidden}batch {c.batch_size}, lr {c.lr:g} "
        f"({c.lr_schedule}), {c.optimizer.name}, {augment}, seed {c.seed}"
    )


def training_curves_figure(history: History, n_hidden: int | None = None) -> Any:
    """The matplotlib Figure of :func:`plot_training_curves`."""
    from matplotlib.ticker import MaxNLocator

    losses, accuracies = training_curves(history)
    fig = _figure(10, 4)
    loss_ax, acc_ax = fig.subplots(1, 2)
    for ax, curves in ((loss_ax, losses), (acc_ax, accuracies)):
        for label, points in curves.items():
            ax.plot(*zip(*points), marker="o", label=label)
        if curves:
            ax.legend()
        ax.grid(True, alpha=0.3)
        # epochs are whole numbers, also when the run has one or two of them
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    loss_ax.set(xlabel="epoch", ylabel="mean cross-entropy", title="loss")
    loss_ax.set_yscale("log")
    acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    fig.suptitle(training_curves_title(history, n_hidden))
    fig.tight_layout()
    return fig


def plot_training_curves(
    history: History, path: str | os.PathLike, n_hidden: int | None = None
) -> Path:
    """Losses (left, log scale) and accuracies (right) per epoch, as a PNG: those of
    :func:`training_curves`, so train, validation and test as the run measured them,
    under :func:`training_curves_title` (``n_hidden``: the network's hidden width)."""
    return _save(training_curves_figure(history, n_hidden), path)


def plot_confusion_matrix(confusion: np.ndarray, path: str | os.PathLike) -> Path:
    """A (c, c) int confusion matrix (rows: true label, columns: predicted) as a PNG;
    colours are row-normalised, cells show counts."""
    c = confusion.shape[0]
    fig = _figure(7, 6)
    ax = fig.subplots()
    totals = confusion.sum(axis=1, keepdims=True)
    rates = confusion / np.maximum(totals, 1)
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="fraction of the true class")
    for i in range(c):
        for j in range(c):
            ax.text(
                j,
                i,
                str(confusion[i, j]),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if rates[i, j] > 0.5 else "black",
            )
    ax.set(
        xticks=range(c),
        yticks=range(c),
        xlabel="predicted label",
        ylabel="true label",
        title="confusion matrix (test set)",
    )
    fig.tight_layout()
    return _save(fig, path)


def plot_confident_errors(
    images: np.ndarray,
    true: np.ndarray,
    predicted: np.ndarray,
    confidence: np.ndarray,
    path: str | os.PathLike,
    image_shape: tuple[int, int] = (28, 28),
    columns: int = 6,
) -> Path:
    """A grid of misclassified images (k, rows*cols) uint8, each titled with its true
    label, predicted label and the predicted probability, as a PNG."""
    k = images.shape[0]
    rows = max(1, -(-k // columns))
    fig = _figure(1.7 * columns, 1.9 * rows + 0.4)
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False).ravel())
    for i, ax in enumerate(axes):
        ax.set_axis_off()
        if i < k:
            ax.imshow(images[i].reshape(image_shape), cmap="gray_r", vmin=0, vmax=255)
            ax.set_title(
                f"true {true[i]}, pred {predicted[i]}\n{100 * confidence[i]:.1f}%", fontsize=9
            )
    fig.suptitle("most confidently wrong test digits" if k else "no misclassified test digits")
    fig.tight_layout()
    return _save(fig, path)


AUGMENTATION = "augmentation.png"


def plot_augmentation(
    images: np.ndarray, distorted: dict[str, list[np.ndarray]], path: str | os.PathLike
) -> Path:
    """A grid: ``images`` (k, s * s) uint8 in the first row, then one row per draw of
    each distortion (``distorted``: kind -> draws, each (k, s * s) floats in [0, 1]),
    as a PNG."""
    rows = [("original", images / 255.0)] + [
        (f"{kind} {j + 1}" if len(draws) > 1 else kind, draw)
        for kind, draws in distorted.items()
        for j, draw in enumerate(draws)
    ]
    k, d = images.shape
    side = int(round(d**0.5))
    fig = _figure(0.9 * k + 1.2, 0.95 * len(rows) + 0.5)
    axes = fig.subplots(len(rows), k, squeeze=False)
    for (label, batch), ax_row in zip(rows, axes):
        for i, ax in enumerate(ax_row):
            ax.imshow(np.asarray(batch[i]).reshape(side, side), cmap="gray_r", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        ax_row[0].set_ylabel(label, fontsize=9)
    fig.suptitle("training images and their random distortions")
    fig.tight_layout()
    return _save(fig, path)
