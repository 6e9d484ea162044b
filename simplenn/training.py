"""Minibatch SGD with momentum: :func:`fit` trains a :class:`TwoLayerNet`.

The dataset stays as stored (uint8 pixels, on the backend once) and each batch is
converted on the fly, so memory stays near the size of the raw data. Each epoch is a
fresh permutation drawn from ``numpy.random.default_rng(seed)``, so equal seeds give
equal runs on every backend. An epoch runs in chunks of about ``CHUNK_SAMPLES``
samples through the backend's ``train_steps`` (compiled code on Numba); between chunks
the progress bar moves and the losses are checked.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .errors import TrainingDivergedError
from .network import TwoLayerNet

#: Samples per call into the backend's compiled ``train_steps`` (a whole number of batches).
CHUNK_SAMPLES = 4096
LR_SCHEDULES = ("constant", "cosine", "linear")


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run; the defaults are those of ``python -m simplenn.train``."""

    epochs: int = 12
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_schedule: str = "cosine"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, not {self.lr!r}")
        if not (isinstance(self.momentum, (int, float)) and 0 <= self.momentum < 1):
            raise ValueError(f"momentum must be in [0, 1), not {self.momentum!r}")
        if not (isinstance(self.weight_decay, (int, float)) and math.isfinite(self.weight_decay)
                and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be a finite number >= 0, not {self.weight_decay!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, "
                             f"not {self.lr_schedule!r}")

    def lr_at(self, progress: float) -> float:
        """The learning rate after a fraction ``progress`` in [0, 1) of all steps."""
        if self.lr_schedule == "cosine":
            return self.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
        if self.lr_schedule == "linear":
            return self.lr * (1.0 - progress)
        return self.lr


@dataclass
class EpochStats:
    """What one epoch did. ``seconds`` covers the training steps only (device synced)."""

    epoch: int
    lr: float
    train_loss: float
    train_accuracy: float | None
    test_accuracy: float | None
    seconds: float
    samples_per_second: float
    eval_seconds: float


@dataclass
class History:
    """Per-epoch statistics of a :func:`fit` run, in order."""

    config: TrainConfig
    backend: str
    epochs: list[EpochStats] = field(default_factory=list)

    @property
    def final_test_accuracy(self) -> float | None:
        return self.epochs[-1].test_accuracy if self.epochs else None

    def to_dict(self) -> dict[str, Any]:
        return {"config": asdict(self.config), "backend": self.backend,
                "epochs": [asdict(e) for e in self.epochs],
                "final_test_accuracy": self.final_test_accuracy}


def _as_xy(data: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A DataSplit or an ``(X, y)`` pair -> (X, y)."""
    if hasattr(data, "X") and hasattr(data, "y"):
        return data.X, data.y
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return data[0], data[1]
    raise TypeError(f"{name} must be a DataSplit or an (X, y) pair, not {type(data).__name__}")


def fit(
    net: TwoLayerNet,
    train: Any,
    test: Any = None,
    *,
    epochs: int = TrainConfig.epochs,
    batch_size: int = TrainConfig.batch_size,
    lr: float = TrainConfig.lr,
    momentum: float = TrainConfig.momentum,
    weight_decay: float = TrainConfig.weight_decay,
    lr_schedule: str = TrainConfig.lr_schedule,
    seed: int = TrainConfig.seed,
    eval_train: bool = True,
    progress: bool = False,
    on_epoch_end: Callable[[EpochStats], None] | None = None,
) -> History:
    """Train ``net`` in place by minibatch SGD with momentum and return its :class:`History`.

    ``train`` and ``test`` are :class:`~simplenn.datasets.DataSplit` objects or
    ``(X, y)`` pairs: X (n, n_inputs) uint8 pixels (scaled by 1/255 per batch) or
    floats, y (n,) integer labels. ``lr_schedule`` is ``constant``, ``cosine`` or
    ``linear``, evaluated on the fraction of steps done (updated every chunk of
    about ``CHUNK_SAMPLES`` samples). Weight decay applies to W1 and W2.

    Raises :class:`TrainingDivergedError` naming the epoch and step when the loss
    becomes NaN or infinite; the network is then restored to its parameters at the
    start of that epoch.
    """
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum,
                         weight_decay=weight_decay, lr_schedule=lr_schedule, seed=seed)
    X_host, y_host = _as_xy(train, "train")
    X_host = net._check_inputs(X_host)
    n = X_host.shape[0]
    if n == 0:
        raise ValueError("the training set is empty")
    ops = net.ops
    Y = net._check_labels(y_host, n)
    if X_host.dtype == np.uint8:
        X, train_steps = ops.asarray(X_host, dtype=np.uint8), net.functions.train_steps_pixels
    else:
        X, train_steps = ops.asarray(X_host, dtype=net.dtype), net.functions.train_steps_floats
    test_xy = _as_xy(test, "test") if test is not None else None

    rng = np.random.default_rng(seed)
    scalar = net.dtype.type
    p = net.params
    velocities = [ops.xp.zeros_like(p[k]) for k in ("W1", "b1", "W2", "b2")]
    steps_per_epoch = (n + batch_size - 1) // batch_size
    chunk = max(1, CHUNK_SAMPLES // batch_size) * batch_size
    losses = ops.xp.zeros(steps_per_epoch, dtype=np.float64)
    history = History(config=config, backend=ops.name)

    for epoch in range(1, epochs + 1):
        order = ops.asarray(rng.permutation(n), dtype=np.int64)
        snapshot = net.parameters()
        bar = _progress_bar(progress, n, f"epoch {epoch}/{epochs}")
        ops.synchronize()
        start = time.perf_counter()
        lr_epoch = config.lr_at((epoch - 1) / epochs)
        for begin in range(0, n, chunk):
            end = min(n, begin + chunk)
            first_step = begin // batch_size
            lr_now = config.lr_at(((epoch - 1) * n + begin) / (epochs * n))
            train_steps(p["W1"], p["b1"], p["W2"], p["b2"], *velocities, X, Y,
                        order[begin:end], batch_size, scalar(lr_now), scalar(momentum),
                        scalar(weight_decay), losses[first_step:])
            chunk_losses = ops.to_numpy(losses[first_step:(end + batch_size - 1) // batch_size])
            if not np.isfinite(chunk_losses).all():
                bad = first_step + int(np.flatnonzero(~np.isfinite(chunk_losses))[0])
                net.set_parameters(snapshot)
                bar and bar.close()
                raise TrainingDivergedError(
                    f"training diverged at epoch {epoch}, step {bad + 1} of {steps_per_epoch}: "
                    f"the loss is {chunk_losses[bad - first_step]}; try a smaller learning rate "
                    f"(lr is {config.lr:g}; e.g. --lr {config.lr / 10:g}). The network was "
                    f"restored to its parameters at the start of epoch {epoch}.")
            if bar:
                bar.update(end - begin)
                bar.set_postfix(loss=f"{float(chunk_losses.mean()):.4f}", refresh=False)
        ops.synchronize()
        seconds = time.perf_counter() - start
        bar and bar.close()

        eval_start = time.perf_counter()
        train_accuracy = net.accuracy(X_host, y_host) if eval_train else None
        test_accuracy = net.accuracy(*test_xy) if test_xy is not None else None
        stats = EpochStats(
            epoch=epoch, lr=lr_epoch, train_loss=float(ops.to_numpy(losses).mean()),
            train_accuracy=train_accuracy, test_accuracy=test_accuracy, seconds=seconds,
            samples_per_second=n / seconds if seconds > 0 else math.inf,
            eval_seconds=time.perf_counter() - eval_start)
        history.epochs.append(stats)
        if on_epoch_end is not None:
            on_epoch_end(stats)
    return history


def _progress_bar(enabled: bool, total: int, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", unit_scale=True, leave=False,
                dynamic_ncols=True)
