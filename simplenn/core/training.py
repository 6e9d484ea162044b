"""Minibatch training: :func:`fit` trains a :class:`TwoLayerNet` with an optimizer of
:mod:`simplenn.optim` (SGD with momentum by default).

The dataset stays as stored (uint8 pixels, on the backend once) and each batch is
converted on the fly, so memory stays near the size of the raw data. Each epoch is a
fresh permutation drawn from ``numpy.random.default_rng(seed)``, so equal seeds give
equal runs on every backend. An epoch runs in chunks of about ``CHUNK_SAMPLES``
samples through the model's ``train_steps`` (a backend's fast path where one covers the
run, else the generic compiled math); between chunks the progress bar moves and the
losses are checked. The learning rate follows the schedule step by step
(:mod:`simplenn.core.schedule`).

A run can stop and go on: :func:`fit` hands a :class:`TrainingState` (parameters,
optimizer state, RNG state, position, history) to ``on_checkpoint`` at every epoch end, and
``fit(..., resume=state)`` continues it so that the result is bitwise the run that
never stopped. Ctrl-C (SIGINT) during :func:`fit` finishes the current step -- on an
interpreted backend one minibatch, on a compiled one the current chunk -- hands the
state to ``on_checkpoint`` and raises :class:`TrainingInterrupted`; so does SIGTERM.
A loss that turns NaN or infinite, or explodes while finite, raises
:class:`~simplenn.errors.TrainingDivergedError` naming the epoch and step.

With a validation set (``validation=(X, y)``, or ``validation_fraction`` of the training
set held out by :func:`stratified_split`) every epoch records the validation loss and
accuracy, and the test set is evaluated once, on the final parameters. With
``early_stopping=PATIENCE`` the run stops when the validation loss has not improved for
PATIENCE epochs and the network ends with the parameters of its best epoch.
"""

from __future__ import annotations

import copy
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any, NoReturn

import numpy as np

from ..backends import Ops
from ..errors import TrainingDivergedError
from ..optim import SGD, Optimizer, OptState, get_optimizer
from .augment import Augmenter, check_augmentation
from .labels import warn_about_labels
from .model import TwoLayerNet
from .params import PARAMETER_NAMES, Params
from .schedule import LR_SCHEDULES, Schedule

#: Samples per call into the backend's compiled ``train_steps`` (a whole number of batches).
CHUNK_SAMPLES = 4096


def chunk_samples(batch_size: int) -> int:
    """Samples per chunk of steps: about :data:`CHUNK_SAMPLES`, a whole number of batches
    (at least one)."""
    return max(1, CHUNK_SAMPLES // batch_size) * batch_size


#: A run has diverged when a chunk's mean loss exceeds this many times its starting loss.
DIVERGENCE_FACTOR = 10
#: The signals that stop :func:`fit` after the current step.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def default_lr(batch_size: int, optimizer: Optimizer | None = None) -> float:
    """The learning rate used when none is given: ``optimizer``'s default (SGD's unless
    given: ``0.2 * batch_size / 128`` for batch sizes up to 128, 0.2 above)."""
    return (SGD() if optimizer is None else optimizer).default_lr(batch_size)


def smaller_lr(lr: float, batch_size: int, optimizer: Optimizer | None = None) -> float:
    """The learning rate to suggest after ``lr`` diverged: a tenth of it rounded to one
    significant digit, but never more than ``default_lr(batch_size, optimizer)``."""
    return min(float(f"{lr / 10:.0e}"), default_lr(batch_size, optimizer))


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run; the defaults are those of ``python -m simplenn.train``.

    ``optimizer`` is an :class:`~simplenn.optim.Optimizer` (a name is turned into one
    with its defaults). ``lr`` left at None becomes the optimizer's default for
    ``batch_size`` (SGD: 0.2 at batch 128), so a config always holds a number.
    ``warmup_steps`` ramps the learning rate up linearly over the run's first steps.
    """

    epochs: int = 6
    batch_size: int = 128
    lr: float | None = None
    optimizer: Optimizer = SGD()
    lr_schedule: str = "cosine"
    warmup_steps: int = 0
    seed: int = 0
    validation_fraction: float | None = None
    early_stopping: int | None = None
    augment: str = "none"

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        object.__setattr__(self, "optimizer", get_optimizer(self.optimizer))
        if self.lr is None:
            object.__setattr__(self, "lr", self.optimizer.default_lr(self.batch_size))
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, not {self.lr!r}")
        warmup = self.warmup_steps
        if isinstance(warmup, bool) or not isinstance(warmup, (int, np.integer)) or warmup < 0:
            raise ValueError(f"warmup_steps must be an integer >= 0, not {warmup!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(
                f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, not {self.lr_schedule!r}"
            )
        fraction = self.validation_fraction
        if fraction is not None and (
            isinstance(fraction, bool)
            or not isinstance(fraction, (int, float))
            or not 0 < fraction < 1
        ):
            raise ValueError(f"validation_fraction must be a number in (0, 1), not {fraction!r}")
        check_augmentation(self.augment)
        patience = self.early_stopping
        if patience is not None and (
            isinstance(patience, bool)
            or not isinstance(patience, (int, np.integer))
            or patience < 1
        ):
            raise ValueError(
                f"early_stopping must be a positive integer (epochs of patience), not {patience!r}"
            )

    def schedule(self, steps_per_epoch: int) -> Schedule:
        """The run's learning-rate schedule, for epochs of ``steps_per_epoch`` steps."""
        return Schedule(self.lr, self.lr_schedule, self.epochs * steps_per_epoch, self.warmup_steps)

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON-ready values; the optimizer as ``{"name": ..., **its
        hyperparameters}``."""
        d = asdict(self)
        d["optimizer"] = {"name": self.optimizer.name, **self.optimizer.hyperparameters()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """The inverse of :meth:`to_dict`."""
        d = dict(d)
        spec = dict(d.pop("optimizer"))
        return cls(optimizer=get_optimizer(spec.pop("name"), **spec), **d)


@dataclass
class EpochStats:
    """What one epoch did. ``seconds`` covers the training steps only (device synced).

    ``train_loss`` is the mean loss of the epoch's steps; ``val_loss`` and ``val_accuracy``
    are set when the run has a validation set, ``test_loss`` and ``test_accuracy`` when
    the epoch evaluated the test set (every epoch of a run without a validation set).
    Losses are mean cross-entropies.
    """

    epoch: int
    lr: float
    train_loss: float
    train_accuracy: float | None
    test_accuracy: float | None
    seconds: float
    samples_per_second: float
    eval_seconds: float
    val_loss: float | None = None
    val_accuracy: float | None = None
    test_loss: float | None = None


@dataclass
class History:
    """Per-epoch statistics of a :func:`fit` run, in order.

    With a validation set, ``best_epoch`` is the epoch of the lowest validation loss,
    ``stopped_early`` says whether early stopping ended the run before its last epoch,
    and ``test_loss`` and ``test_accuracy`` are the test set's, evaluated once at the
    end on the final parameters (the best epoch's with early stopping). Without one
    they stay None and each epoch holds its test results. ``stopped_by_callback`` says
    whether an ``on_epoch_end`` callback ended the run (:class:`StopTraining`).
    """

    config: TrainConfig
    backend: str
    epochs: list[EpochStats] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False
    test_loss: float | None = None
    test_accuracy: float | None = None
    stopped_by_callback: bool = False
    #: How the chunks trained: ``generic``, or the name of the backend's fast path.
    training_path: str | None = None

    @property
    def final_test_accuracy(self) -> float | None:
        """The test accuracy of the network as the run left it (None without a test set)."""
        if self.test_accuracy is not None:
            return self.test_accuracy
        return self.epochs[-1].test_accuracy if self.epochs else None

    @property
    def final_test_loss(self) -> float | None:
        """The test loss of the network as the run left it (None without a test set)."""
        if self.test_loss is not None:
            return self.test_loss
        return self.epochs[-1].test_loss if self.epochs else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "backend": self.backend,
            "training_path": self.training_path,
            "epochs": [asdict(e) for e in self.epochs],
            "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early,
            "stopped_by_callback": self.stopped_by_callback,
            "final_test_loss": self.final_test_loss,
            "final_test_accuracy": self.final_test_accuracy,
        }


@dataclass
class TrainingState:
    """Everything :func:`fit` needs to continue a run exactly where it stopped.

    ``epochs_done`` whole epochs are finished and the next epoch has trained on its
    first ``position`` samples (0 at an epoch end; otherwise a multiple of the batch
    size). ``rng_state`` is the ``bit_generator.state`` of the shuffling generator at
    the start of that next epoch, before its permutation is drawn. ``parameters`` are
    NumPy arrays ``W1`` (d, h), ``b1`` (h,), ``W2`` (h, c), ``b2`` (c,) in the network's
    dtype, by name; ``optimizer_state`` the optimizer's state arrays by
    ``PARAMETER.SLOT`` (``W1.velocity``, ``b2.m``, ...), each shaped like its parameter,
    and ``optimizer_steps`` the updates it has done; ``epoch_losses`` (float64, one per step done in the
    next epoch) and ``epoch_seconds`` make its statistics equal to an unbroken epoch's.

    With a validation set: ``n_validation`` is its size and ``validation_indices`` (int64,
    increasing) the rows of the given training set held out as validation set when
    ``config.validation_fraction`` is set; ``best_val_loss`` and ``best_epoch`` are the
    lowest validation loss so far and its epoch, ``best_parameters`` that epoch's
    parameters (kept with early stopping only) and ``epochs_without_improvement`` the
    epochs since.
    """

    config: TrainConfig
    backend: str
    n_train: int
    epochs_done: int
    position: int
    rng_state: dict[str, Any]
    parameters: dict[str, np.ndarray]
    optimizer_state: dict[str, np.ndarray]
    optimizer_steps: int
    epoch_losses: np.ndarray
    epoch_seconds: float
    history: list[EpochStats]
    n_validation: int = 0
    validation_indices: np.ndarray | None = None
    best_val_loss: float | None = None
    best_epoch: int | None = None
    best_parameters: dict[str, np.ndarray] | None = None
    epochs_without_improvement: int = 0

    @property
    def patience_ran_out(self) -> bool:
        """Whether early stopping has ended the run."""
        patience = self.config.early_stopping
        return patience is not None and self.epochs_without_improvement >= patience

    @property
    def finished(self) -> bool:
        """Whether the run is over: every epoch done, or stopped early."""
        return self.epochs_done >= self.config.epochs or self.patience_ran_out

    def describe(self) -> str:
        """Where the run stands, e.g. ``epoch 3/12 done`` or ``epoch 4/12, step 10 of 938``."""
        e, total = self.epochs_done, self.config.epochs
        if self.patience_ran_out and e < total:
            return f"stopped early after epoch {e}/{total}, best epoch {self.best_epoch}"
        if self.position == 0:
            return f"epoch {e}/{total} done"
        steps = (self.n_train + self.config.batch_size - 1) // self.config.batch_size
        return (
            f"{e}/{total} epochs done, epoch {e + 1} stopped after step "
            f"{self.position // self.config.batch_size} of {steps}"
        )


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM stopped :func:`fit` between steps; ``state`` continues
    the run (``fit(..., resume=exc.state)``), ``saved`` says whether ``on_checkpoint`` got
    it and ``signal_number`` is the signal's."""

    def __init__(
        self, state: TrainingState, saved: bool, signal_number: int = signal.SIGINT
    ) -> None:
        name = signal.Signals(signal_number).name
        super().__init__(f"training interrupted by {name} ({state.describe()})")
        self.state = state
        self.saved = saved
        self.signal_number = int(signal_number)


class _StopFlag:
    """Set by the handler that :func:`_signals_stop` installs to the first stop signal."""

    def __init__(self) -> None:
        self.signal_number: int | None = None

    @property
    def is_set(self) -> bool:
        return self.signal_number is not None


_STOP_NOTES = {
    signal.SIGINT: "interrupt: stopping after the current step (Ctrl-C again to stop at "
    "once, without saving)",
    signal.SIGTERM: "SIGTERM: stopping after the current step (SIGTERM again to stop at "
    "once, without saving)",
}


@contextmanager
def _signals_stop(enabled: bool) -> Iterator[_StopFlag]:
    """While active, the first SIGINT or SIGTERM only sets the flag (a message on stderr
    says so); a second one goes to the handler that was there before, at once: SIGINT
    raises KeyboardInterrupt, SIGTERM ends the process (by default). Only in the main
    thread (signals are delivered there); elsewhere, or when not ``enabled``, the signals
    are left alone, and so is one the process ignores."""
    flag = _StopFlag()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous: dict[int, Any] = {}

    def handler(signum, frame):
        if flag.is_set:
            _pass_on(signum, previous[signum])
            return
        flag.signal_number = signum
        print("\n" + _STOP_NOTES[signum], file=sys.stderr, flush=True)

    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            previous[signum] = signal.signal(signum, handler)
    try:
        yield flag
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _pass_on(signum: int, previous: Any) -> None:
    """Deliver ``signum`` again, to ``previous`` (a handler from ``signal.signal``; None,
    one not installed from Python, counts as the default action)."""
    signal.signal(signum, signal.SIG_DFL if previous is None else previous)
    signal.raise_signal(signum)


def _as_xy(data: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A DataSplit or an ``(X, y)`` pair -> (X, y)."""
    if hasattr(data, "X") and hasattr(data, "y"):
        return data.X, data.y
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return data[0], data[1]
    raise TypeError(f"{name} must be a DataSplit or an (X, y) pair, not {type(data).__name__}")


#: Mixed with the seed so that the validation split and the shuffling draw unrelated numbers.
_SPLIT_STREAM = 0x5B117


def stratified_split(y: Any, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows ``(train, validation)`` (int64, increasing) of a seeded split of the
    labels ``y`` that holds out ``ceil(fraction * n)`` rows (at least one is left to
    train on), every class in proportion to its share of ``y``.

    The per-class counts are the largest-remainder rounding of those shares; the rows
    of each class are drawn by ``numpy.random.default_rng([seed, ...])``, so equal
    seeds give equal splits.
    """
    y = np.asarray(y)
    n = y.shape[0]
    if not 0 < fraction < 1:
        raise ValueError(f"validation_fraction must be a number in (0, 1), not {fraction!r}")
    if n < 2:
        raise ValueError(f"validation_fraction needs at least 2 training samples, not {n}")
    n_val = min(math.ceil(fraction * n), n - 1)
    classes, counts = np.unique(y, return_counts=True)
    shares = counts * (n_val / n)
    quota = np.floor(shares).astype(np.int64)
    quota[np.argsort(quota - shares, kind="stable")[: n_val - int(quota.sum())]] += 1
    rng = np.random.default_rng([seed, _SPLIT_STREAM])
    held = np.concatenate(
        [rng.permutation(np.flatnonzero(y == c))[:q] for c, q in zip(classes, quota)]
    )
    keep = np.ones(n, dtype=bool)
    keep[held] = False
    return np.flatnonzero(keep).astype(np.int64), np.sort(held).astype(np.int64)


def _check_resume_settings(state: TrainingState, config: TrainConfig) -> None:
    """The state must come from a run with the same settings."""
    if state.config != config:
        diffs = [
            f"{k}={v!r} (state: {getattr(state.config, k)!r})"
            for k, v in asdict(config).items()
            if getattr(state.config, k) != v
        ]
        raise ValueError(
            f"cannot resume: the settings differ from the interrupted run's: {', '.join(diffs)}"
        )


def _resumed_validation_rows(state: TrainingState, n_given: int) -> np.ndarray:
    """The rows the resumed run held out as validation set, checked against a training
    set of ``n_given`` samples."""
    rows = state.validation_indices
    if rows is None or rows.ndim != 1 or rows.dtype.kind not in "iu" or rows.shape[0] == 0:
        raise ValueError("cannot resume: the state has no validation split")
    if rows[0] < 0 or rows[-1] >= n_given or (np.diff(rows) <= 0).any():
        raise ValueError(
            f"cannot resume: the state's validation rows do not fit a training "
            f"set of {n_given} samples"
        )
    return rows.astype(np.int64)


def _check_resume(
    state: TrainingState, config: TrainConfig, net: TwoLayerNet, n: int, n_validation: int
) -> None:
    """The state must fit this run's network, data and settings, and be consistent."""
    _check_resume_settings(state, config)
    if state.n_train != n:
        raise ValueError(
            f"cannot resume: the run trained on {state.n_train} samples, this training set has {n}"
        )
    if state.n_validation != n_validation:
        raise ValueError(
            f"cannot resume: the run's validation set had {state.n_validation} "
            f"samples, this run's has {n_validation}"
        )
    steps = (state.position + config.batch_size - 1) // config.batch_size
    if (
        not 0 <= state.epochs_done <= config.epochs
        or not 0 <= state.position < n
        or state.position % config.batch_size
        or state.epoch_losses.shape != (steps,)
        or len(state.history) != state.epochs_done
        or (state.position and state.finished)
        or not _consistent_best(state)
    ):
        raise ValueError(
            f"cannot resume: inconsistent training state ({state.describe()}, "
            f"{len(state.history)} epochs of history, "
            f"{state.epoch_losses.shape[0]} losses)"
        )
    shapes = net.parameter_shapes()
    groups = [state.parameters]
    if state.best_parameters is not None:
        groups.append(state.best_parameters)
    for group in groups:
        for k in PARAMETER_NAMES:
            if k not in group or np.shape(group[k]) != shapes[k]:
                raise ValueError(f"cannot resume: the state's {k} does not fit {net!r}")
    for name in slot_names(config.optimizer):
        k = name.split(".")[0]
        if name not in state.optimizer_state or np.shape(state.optimizer_state[name]) != shapes[k]:
            raise ValueError(
                f"cannot resume: the state's optimizer array {name} does not fit {net!r}"
            )


def slot_names(optimizer: Optimizer) -> list[str]:
    """The names of ``optimizer``'s state arrays: ``PARAMETER.SLOT`` for every parameter
    and slot (``W1.velocity``, ...)."""
    return [f"{k}.{slot}" for k in PARAMETER_NAMES for slot in optimizer.slot_names]


def state_to_host(ops: Any, optimizer: Optimizer, state: OptState) -> dict[str, np.ndarray]:
    """An optimizer state on the backend -> NumPy copies by :func:`slot_names`."""
    arrays = [np.array(ops.to_numpy(a), copy=True) for slots in state.slots for a in slots]
    return dict(zip(slot_names(optimizer), arrays))


def state_from_host(
    ops: Any, optimizer: Optimizer, arrays: dict[str, np.ndarray], steps: int, dtype: np.dtype
) -> OptState:
    """NumPy state arrays by :func:`slot_names` -> the optimizer state on the backend."""
    slots = Params(
        *(
            tuple(
                ops.asarray(np.asarray(arrays[f"{k}.{slot}"], dtype=dtype))
                for slot in optimizer.slot_names
            )
            for k in PARAMETER_NAMES
        )
    )
    return OptState(int(steps), slots)


def _consistent_best(state: TrainingState) -> bool:
    """Whether the best-epoch bookkeeping fits the epochs done and the settings."""
    if state.best_epoch is None:
        stale = state.epochs_done if state.n_validation else 0
        return (
            state.best_val_loss is None
            and state.best_parameters is None
            and state.epochs_without_improvement == stale
        )
    kept = state.best_parameters is not None
    return (
        state.n_validation > 0
        and 1 <= state.best_epoch <= state.epochs_done
        and state.best_val_loss is not None
        and state.epochs_without_improvement == state.epochs_done - state.best_epoch
        and kept == (state.config.early_stopping is not None)
    )


def _mean_loss_and_accuracy(net: TwoLayerNet, X: Any, y: np.ndarray) -> tuple[float, float]:
    """Mean cross-entropy (in float64, on the host) and accuracy of ``net`` on the
    checked backend array ``X`` and the host labels ``y``, from one pass of logits."""
    logits = np.asarray(net.ops.to_numpy(net._logits(X)), dtype=np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1))
    loss = float(np.mean(log_norm - shifted[np.arange(y.shape[0]), y]))
    return loss, int(np.count_nonzero(logits.argmax(axis=1) == y)) / y.shape[0]


@dataclass
class _Epoch:
    """One epoch in progress: its number, the generator state from before its permutation
    was drawn, that permutation (``order``), the first sample it trains on (after 0 when
    resumed), the parameters at that start, its progress bar and its clock
    (``seconds_before`` were spent on it before a resume)."""

    number: int
    rng_state: dict[str, Any]
    order: Any
    start_position: int
    snapshot: dict[str, np.ndarray]
    bar: Any
    seconds_before: float
    start: float

    def seconds(self) -> float:
        """Seconds spent training this epoch so far, with those before a resume."""
        return self.seconds_before + time.perf_counter() - self.start

    def close_bar(self) -> None:
        """Close the progress bar, if there is one."""
        if self.bar:
            self.bar.close()


@dataclass
class _BestEpoch:
    """The validation bookkeeping: the lowest validation loss so far, its epoch, the
    parameters of that epoch (kept only when early stopping will restore them) and the
    epochs since; ``patience`` is the early-stopping patience or None."""

    patience: int | None
    loss: float | None = None
    epoch: int | None = None
    parameters: dict[str, np.ndarray] | None = None
    epochs_without_improvement: int = 0

    def update(self, epoch: int, val_loss: float, net: TwoLayerNet) -> None:
        """Count ``epoch``: a new best when its finite ``val_loss`` beats the best so far."""
        if math.isfinite(val_loss) and (self.loss is None or val_loss < self.loss):
            self.loss, self.epoch, self.epochs_without_improvement = val_loss, epoch, 0
            if self.patience is not None:
                self.parameters = net.parameters()
        else:
            self.epochs_without_improvement += 1

    @property
    def patience_ran_out(self) -> bool:
        """Whether early stopping ends the run now."""
        return self.patience is not None and self.epochs_without_improvement >= self.patience


class _Run:
    """The state of one :func:`fit` call: the data on the backend, the optimizer and its
    state, the shuffling generator, the current epoch's step losses (on the host),
    the validation bookkeeping and the history so far; its methods are the steps of
    the run."""

    def __init__(
        self,
        net: TwoLayerNet,
        config: TrainConfig,
        train: Any,
        test: Any,
        validation: Any,
        resume: TrainingState | None,
        on_checkpoint: Callable[[TrainingState], None] | None,
    ) -> None:
        self.net, self.config, self.ops = net, config, net.ops
        self.on_checkpoint = on_checkpoint
        if resume is not None:
            _check_resume_settings(resume, config)
        X_host, y_host = _as_xy(train, "train")
        X_host = net._check_inputs(X_host)
        if X_host.shape[0] == 0:
            raise ValueError("the training set is empty")
        y_host = np.asarray(self.ops.to_numpy(net._check_labels(y_host, X_host.shape[0])))
        self.validation_rows = None
        if config.validation_fraction is not None:
            X_host, y_host, validation = self._hold_out(X_host, y_host, resume)
        self.n = X_host.shape[0]
        self.Y = self.ops.asarray(y_host, dtype=np.int64)
        self.X = self.ops.asarray(
            X_host, dtype=np.uint8 if net._input_dtype(X_host) == np.uint8 else net.dtype
        )
        self.test_xy = self._eval_data(test, "test")
        warn_about_labels(y_host, None if self.test_xy is None else self.test_xy[1])
        self.val_xy = self._eval_data(validation, "validation")
        if config.early_stopping is not None and self.val_xy is None:
            raise ValueError(
                "early_stopping needs a validation set: pass validation=(X, y) "
                "or validation_fraction"
            )

        self.rng = np.random.default_rng(config.seed)
        self.steps_per_epoch = (self.n + config.batch_size - 1) // config.batch_size
        self.schedule = config.schedule(self.steps_per_epoch)
        self.optimizer = config.optimizer
        self.chunk = chunk_samples(config.batch_size)
        self.path = net.training_path(self.optimizer, self.X, config.batch_size)
        # A fused chunk, or work queued on a device, runs a chunk per call; otherwise one
        # step per call, so Ctrl-C stops after one minibatch.
        whole = self.path.fused or self.ops.is_device
        self.call_samples = self.chunk if whole else config.batch_size
        self.augmenter = (
            None
            if config.augment == "none"
            else Augmenter(self.ops, config.augment, config.seed, net.n_inputs)
        )
        self.losses = np.zeros(self.steps_per_epoch, dtype=np.float64)
        self.loss_limit: float | None = None
        self.history = History(config=config, backend=self.ops.name, training_path=self.path.name)
        self.best = _BestEpoch(config.early_stopping)
        self.first_epoch, self.resume_position, self.resume_seconds = 1, 0, 0.0
        if resume is not None:
            self._restore(resume)
        else:
            self.opt_state = self.optimizer.init(net.params, self.ops.xp.zeros_like)

    @property
    def n_validation(self) -> int:
        """The size of the validation set (0 without one)."""
        return 0 if self.val_xy is None else self.val_xy[1].shape[0]

    def _hold_out(
        self,
        X: Any,
        y: np.ndarray,
        resume: TrainingState | None,
    ) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """Split ``validation_fraction`` of the training set off as validation set (the
        rows the resumed run held out, when resuming): ``(X, y, (X_val, y_val))``."""
        if resume is not None:
            self.validation_rows = _resumed_validation_rows(resume, y.shape[0])
        else:
            self.validation_rows = stratified_split(
                y, self.config.validation_fraction, self.config.seed
            )[1]
        X = X if isinstance(X, np.ndarray) else np.asarray(self.ops.to_numpy(X))
        keep = np.ones(y.shape[0], dtype=bool)
        keep[self.validation_rows] = False
        held = self.validation_rows
        parts = X[keep], y[keep], X[held], y[held]
        # read-only where the source is (a dataset's splits are): compiled code is
        # specialised on it, and the warm-up compiled for the run's inputs' flags
        for part, source in zip(parts, (X, y, X, y)):
            part.flags.writeable = source.flags.writeable
        return parts[0], parts[1], (parts[2], parts[3])

    def _eval_data(self, data: Any, name: str) -> tuple[Any, np.ndarray] | None:
        """An evaluation set (test or validation) as X moved to the backend once, like
        the training set, and y on the host (None if absent)."""
        if data is None:
            return None
        X, y = _as_xy(data, name)
        X = self.net._check_inputs(X)
        if X.shape[0] == 0:
            raise ValueError(f"the {name} set is empty")
        y = np.asarray(self.ops.to_numpy(self.net._check_labels(y, X.shape[0])))
        return self.ops.asarray(X, dtype=self.net._input_dtype(X)), y

    def _restore(self, state: TrainingState) -> None:
        """Continue from ``state``: its parameters, optimizer state, generator, history,
        validation bookkeeping and the losses of the part of the next epoch it already
        trained."""
        _check_resume(state, self.config, self.net, self.n, self.n_validation)
        self.net.set_parameters(state.parameters)
        self.opt_state = state_from_host(
            self.ops, self.optimizer, state.optimizer_state, state.optimizer_steps, self.net.dtype
        )
        self.rng.bit_generator.state = copy.deepcopy(state.rng_state)
        self.history.epochs.extend(copy.deepcopy(state.history))
        self.best = _BestEpoch(
            self.config.early_stopping,
            loss=state.best_val_loss,
            epoch=state.best_epoch,
            parameters=copy.deepcopy(state.best_parameters),
            epochs_without_improvement=state.epochs_without_improvement,
        )
        self.first_epoch, self.resume_position = state.epochs_done + 1, state.position
        self.resume_seconds = state.epoch_seconds
        if self.resume_position:
            self.losses[: state.epoch_losses.shape[0]] = state.epoch_losses

    # -- the schedule --------------------------------------------------------------------

    def epoch_lr(self, epoch: int) -> float:
        """The learning rate reported for ``epoch``: that of its first step."""
        return self.schedule.lr_at((epoch - 1) * self.steps_per_epoch)

    def remaining_epochs(self) -> Iterator[int]:
        """The numbers of the epochs still to train, until the last or early stopping."""
        epoch = self.first_epoch
        while epoch <= self.config.epochs and not self.best.patience_ran_out:
            yield epoch
            epoch += 1

    # -- the chunk loop ------------------------------------------------------------------

    def begin_epoch(self, number: int, progress: bool) -> _Epoch:
        """Draw the epoch's permutation, snapshot the parameters, open the progress bar
        and start the clock (a resumed epoch starts where the state stopped)."""
        rng_state = copy.deepcopy(self.rng.bit_generator.state)
        order = self.ops.asarray(self.rng.permutation(self.n), dtype=np.int64)
        resumed = number == self.first_epoch
        start_position = self.resume_position if resumed else 0
        snapshot = self.net.parameters()
        bar = _progress_bar(
            progress, self.n, f"epoch {number}/{self.config.epochs}", start_position
        )
        self.ops.synchronize()
        return _Epoch(
            number=number,
            rng_state=rng_state,
            order=order,
            start_position=start_position,
            snapshot=snapshot,
            bar=bar,
            seconds_before=self.resume_seconds if resumed else 0.0,
            start=time.perf_counter(),
        )

    def train_epoch(self, ep: _Epoch, stop: _StopFlag) -> float:
        """Run the epoch's chunks from its start position, checking the losses and moving
        the progress bar after each; returns the seconds the epoch trained. Raises
        TrainingDivergedError or, when ``stop`` is set before the end, TrainingInterrupted."""
        position = ep.start_position
        for chunk_begin in range(position - position % self.chunk, self.n, self.chunk):
            checked_from = position
            position = self.train_chunk(ep, chunk_begin, position, stop)
            chunk_losses = self.checked_losses(ep, checked_from, position)
            if ep.bar and position > checked_from:
                ep.bar.update(position - checked_from)
                ep.bar.set_postfix(loss=f"{float(chunk_losses.mean()):.4f}", refresh=False)
            if stop.is_set and position < self.n:
                self.interrupt(ep, position, stop)
        self.ops.synchronize(*self.net.params)
        seconds = ep.seconds()
        ep.close_bar()
        return seconds

    def train_chunk(self, ep: _Epoch, chunk_begin: int, position: int, stop: _StopFlag) -> int:
        """Train from sample ``position`` to the end of the chunk that starts at
        ``chunk_begin`` (``call_samples`` per ``train_steps`` call) unless ``stop`` is set,
        storing the step losses; returns the position reached."""
        bs, call_samples = self.config.batch_size, self.call_samples
        train_steps, to_numpy, losses = self.net.train_steps, self.ops.to_numpy, self.losses
        chunk_end = min(self.n, chunk_begin + self.chunk)
        chunk_first = chunk_begin // bs  # the chunk's steps' learning rates, once
        chunk_lrs = self.schedule.lrs(
            (ep.number - 1) * self.steps_per_epoch + chunk_first,
            (chunk_end - chunk_begin + bs - 1) // bs,
        )
        while position < chunk_end and not stop.is_set:
            end = min(chunk_end, position + call_samples)
            X, Y, order = self.X, self.Y, ep.order[position:end]
            if self.augmenter is not None:  # train on the distorted rows, in order
                X, Y, order = self.augmenter.rows(X, Y, ep.order, ep.number, position, end, bs)
            first = position // bs
            lrs = chunk_lrs[first - chunk_first : (end + bs - 1) // bs - chunk_first]
            self.opt_state, step_losses = train_steps(
                X, Y, order, self.opt_state, optimizer=self.optimizer, batch_size=bs, lrs=lrs
            )
            losses[first : first + step_losses.shape[0]] = to_numpy(step_losses)
            position = end
        return position

    # -- the divergence check ------------------------------------------------------------

    def checked_losses(self, ep: _Epoch, begin: int, end: int) -> np.ndarray:
        """The losses of the steps that trained samples ``begin`` to ``end``, checked for
        divergence: a loss that is NaN or infinite, or an explosion (see
        :meth:`exploded_from`), restores the parameters of the epoch's start and raises
        TrainingDivergedError naming the epoch and step."""
        bs = self.config.batch_size
        first_step = begin // bs
        losses = self.losses[first_step : (end + bs - 1) // bs]
        if losses.shape[0] == 0:
            return losses
        if not np.isfinite(losses).all():
            bad = int(np.flatnonzero(~np.isfinite(losses))[0])
            self.diverged(ep, first_step + bad, f"the loss is {losses[bad]}")
        if self.loss_limit is None:
            self.loss_limit = DIVERGENCE_FACTOR * max(
                float(losses[0]), math.log(self.net.n_classes)
            )
        start = self.exploded_from(losses)
        if start is not None:
            self.diverged(
                ep,
                first_step + start,
                f"the loss rose to {losses[start]:.3g} and stayed above "
                f"{self.loss_limit:.3g} ({DIVERGENCE_FACTOR} times the starting "
                f"loss), up to {losses[start:].max():.3g}",
            )
        return losses

    def exploded_from(self, losses: np.ndarray) -> int | None:
        """Where in a chunk's finite ``losses`` the loss exploded, or None: the chunk has
        exploded when its mean and its last loss are above ``loss_limit``, and then it
        did so from the first step of its last run of losses above the limit.

        The limit is ``DIVERGENCE_FACTOR`` times the starting loss: the larger of the
        first step's loss and ``log(n_classes)``, that of an untrained network guessing
        uniformly. A run that learns goes below ``log(n_classes)`` and one that fails to
        learn stays near it; only parameters blowing up lift a chunk's mean loss ten
        times above it and keep it there to the chunk's end (a spike the run recovers
        from within the chunk does not count)."""
        limit = self.loss_limit
        if not (losses.mean() > limit and losses[-1] > limit):
            return None
        below = np.flatnonzero(losses <= limit)
        return int(below[-1]) + 1 if below.shape[0] else 0

    def diverged(self, ep: _Epoch, step: int, what: str) -> NoReturn:
        """Restore the parameters of the epoch's start and raise TrainingDivergedError
        for step ``step`` (0-based) of the epoch, with ``what`` happened and a smaller
        learning rate to try."""
        self.net.set_parameters(ep.snapshot)
        ep.close_bar()
        c = self.config
        suggestion = smaller_lr(c.lr, c.batch_size, c.optimizer)
        default = (
            f", the default for batch size {c.batch_size}"
            if suggestion == default_lr(c.batch_size, c.optimizer)
            else ""
        )
        if ep.start_position == 0:
            restored = f"the start of epoch {ep.number}"
        else:
            restored = (
                f"where epoch {ep.number} resumed (after step {ep.start_position // c.batch_size})"
            )
        raise TrainingDivergedError(
            f"training diverged at epoch {ep.number}, step {step + 1} of "
            f"{self.steps_per_epoch}: {what}; try a smaller learning rate (lr is "
            f"{c.lr:g}), e.g. --lr {suggestion:g}{default}. The network was restored to "
            f"its parameters at {restored}."
        )

    # -- interrupt and checkpoint --------------------------------------------------------

    def state(
        self, epochs_done: int, position: int, rng_state: dict[str, Any], seconds: float
    ) -> TrainingState:
        """A copy of the run's state after ``epochs_done`` epochs and ``position`` samples
        of the next, whose permutation is drawn from ``rng_state``."""
        bs = self.config.batch_size
        best = self.best
        return TrainingState(
            config=self.config,
            backend=self.ops.name,
            n_train=self.n,
            epochs_done=epochs_done,
            position=position,
            rng_state=copy.deepcopy(rng_state),
            parameters=self.net.parameters(),
            optimizer_state=state_to_host(self.ops, self.optimizer, self.opt_state),
            optimizer_steps=int(self.opt_state.step),
            epoch_losses=self.losses[: (position + bs - 1) // bs].copy(),
            epoch_seconds=seconds,
            history=copy.deepcopy(self.history.epochs),
            n_validation=self.n_validation,
            validation_indices=None
            if self.validation_rows is None
            else self.validation_rows.copy(),
            best_val_loss=best.loss,
            best_epoch=best.epoch,
            best_parameters=copy.deepcopy(best.parameters),
            epochs_without_improvement=best.epochs_without_improvement,
        )

    def interrupt(self, ep: _Epoch, position: int, stop: _StopFlag) -> NoReturn:
        """Stop inside the epoch at ``position``: hand the state to ``on_checkpoint`` and
        raise TrainingInterrupted for the signal in ``stop``."""
        self.ops.synchronize(*self.net.params)
        ep.close_bar()
        state = self.state(ep.number - 1, position, ep.rng_state, ep.seconds())
        if self.on_checkpoint is not None:
            self.on_checkpoint(state)
        raise TrainingInterrupted(
            state, saved=self.on_checkpoint is not None, signal_number=stop.signal_number
        )

    def end_epoch(self, epoch: int, stop: _StopFlag) -> None:
        """After ``epoch``: hand the state to ``on_checkpoint``, then raise
        TrainingInterrupted if ``stop`` is set and the run is not over."""
        more = epoch < self.config.epochs and not self.best.patience_ran_out
        if self.on_checkpoint is None and not (stop.is_set and more):
            return
        state = self.state(epoch, 0, self.rng.bit_generator.state, 0.0)
        if self.on_checkpoint is not None:
            self.on_checkpoint(state)
        if stop.is_set and more:
            raise TrainingInterrupted(
                state, saved=self.on_checkpoint is not None, signal_number=stop.signal_number
            )

    # -- evaluation ----------------------------------------------------------------------

    def evaluate(self, ep: _Epoch, seconds: float, eval_train: bool) -> EpochStats:
        """The epoch's statistics: mean step loss, train accuracy (if ``eval_train``),
        validation loss and accuracy (with a validation set) or else test loss and
        accuracy, and the speed of the part trained in this call."""
        eval_start = time.perf_counter()
        train_accuracy = self.net._accuracy(self.X, self.Y) if eval_train else None
        val_loss = val_accuracy = test_loss = test_accuracy = None
        if self.val_xy is not None:
            val_loss, val_accuracy = _mean_loss_and_accuracy(self.net, *self.val_xy)
        elif self.test_xy is not None:
            test_loss, test_accuracy = _mean_loss_and_accuracy(self.net, *self.test_xy)
        trained = self.n - ep.start_position
        return EpochStats(
            epoch=ep.number,
            lr=self.epoch_lr(ep.number),
            train_loss=float(self.losses.mean()),
            train_accuracy=train_accuracy,
            test_accuracy=test_accuracy,
            seconds=seconds,
            samples_per_second=trained / (seconds - ep.seconds_before)
            if seconds > ep.seconds_before
            else math.inf,
            eval_seconds=time.perf_counter() - eval_start,
            val_loss=val_loss,
            val_accuracy=val_accuracy,
            test_loss=test_loss,
        )

    def record(self, stats: EpochStats) -> None:
        """Add the epoch to the history and, with a validation set, to the bookkeeping
        of the best epoch."""
        self.history.epochs.append(stats)
        if stats.val_loss is not None:
            self.best.update(stats.epoch, stats.val_loss, self.net)
            self.history.best_epoch = self.best.epoch

    def finish(self) -> History:
        """End the run: with early stopping restore the best epoch's parameters; with a
        validation set evaluate the test set once, on the final parameters."""
        history = self.history
        history.best_epoch = self.best.epoch
        history.stopped_early = (
            self.best.patience_ran_out and len(history.epochs) < self.config.epochs
        )
        if self.best.parameters is not None:
            self.net.set_parameters(self.best.parameters)
        if self.val_xy is not None and self.test_xy is not None:
            history.test_loss, history.test_accuracy = _mean_loss_and_accuracy(
                self.net, *self.test_xy
            )
        return history


def fit(
    net: TwoLayerNet,
    train: Any,
    test: Any = None,
    *,
    epochs: int = TrainConfig.epochs,
    batch_size: int = TrainConfig.batch_size,
    lr: float | None = None,
    optimizer: str | Optimizer = "sgd",
    warmup_steps: int = TrainConfig.warmup_steps,
    lr_schedule: str = TrainConfig.lr_schedule,
    seed: int = TrainConfig.seed,
    validation: Any = None,
    validation_fraction: float | None = None,
    early_stopping: int | None = None,
    augment: str = TrainConfig.augment,
    eval_train: bool = False,
    progress: bool = False,
    on_epoch_end: Callable[[EpochStats], Any] | None = None,
    on_checkpoint: Callable[[TrainingState], None] | None = None,
    resume: TrainingState | None = None,
    interruptible: bool = True,
) -> History:
    """Train ``net`` in place and return its :class:`History`.

    ``train`` and ``test`` are :class:`~simplenn.data.datasets.DataSplit` objects or
    ``(X, y)`` pairs: X (n, n_inputs) uint8 pixels (scaled by 1/255 per batch) or
    floats, y (n,) integer labels. ``optimizer`` is a name of
    :data:`simplenn.optim.OPTIMIZERS` (``sgd``, ``adam``, ``adamw``; with its default
    hyperparameters) or an :class:`~simplenn.optim.Optimizer` such as
    ``SGD(momentum=0.9, weight_decay=1e-4)``; its weight decay applies to W1 and W2.
    ``lr`` is the peak learning rate; None means the optimizer's default for
    ``batch_size`` (SGD: ``0.2 * batch_size / 128`` up to batch 128, 0.2 above; Adam:
    0.003). ``lr_schedule`` is ``constant``, ``cosine`` or ``linear``, applied step by
    step after ``warmup_steps`` steps of linear warm-up (:mod:`simplenn.core.schedule`);
    ``history.training_path`` says whether the backend's fast path or the generic
    compiled math ran the steps. ``eval_train`` also measures the
    training accuracy after every epoch (a pass over the training set; off by default,
    ``train_accuracy`` is then None).

    A validation set is either ``validation`` (a DataSplit or ``(X, y)``) or
    ``validation_fraction`` in (0, 1): that share of the training set, held out by
    :func:`stratified_split` with ``seed`` (those rows are not trained on); not both.
    With one, every epoch records ``val_loss`` and ``val_accuracy``, ``history.best_epoch``
    is the epoch of the lowest validation loss, and ``test`` is evaluated once, at the
    end, into ``history.test_loss`` and ``history.test_accuracy``; without one, every
    epoch evaluates ``test``. ``early_stopping=PATIENCE`` (needs a validation set) stops
    when the validation loss has not improved for PATIENCE epochs and leaves ``net``
    with the parameters of the best epoch (also when every epoch ran);
    ``history.stopped_early`` says whether epochs were skipped.

    ``on_epoch_end(stats)`` is called with every epoch's :class:`EpochStats`; returning
    :class:`~simplenn.core.callbacks.StopTraining` ends the run cleanly after that epoch
    (see :mod:`simplenn.core.callbacks`).
    ``on_checkpoint(state)`` is called after every epoch (after ``on_epoch_end``) and
    when Ctrl-C stops the run, with a :class:`TrainingState` that ``resume=`` continues
    (same settings and data, else ``ValueError``): the net's parameters are replaced by
    the state's and the returned history holds the earlier epochs too. A state carries
    the validation split and the best-epoch bookkeeping, so the resumed run is bitwise
    the unbroken one. With ``interruptible`` (and in the main thread), the first SIGINT
    or SIGTERM finishes the current step -- one minibatch on the generic path of a
    host backend, the current chunk of a fast path or a device -- then raises :class:`TrainingInterrupted`
    (its ``signal_number`` says which); a second one acts at once, as without ``fit``.

    ``augment`` distorts every training batch before its step: ``none`` (the default),
    ``affine`` or ``elastic`` (see :mod:`simplenn.core.augment`; square images only).
    The distortions are drawn from ``seed``, epoch and batch, so equal seeds train on
    equal images on every backend and a resumed run stays the unbroken one; the test
    and validation sets are never distorted.

    Raises :class:`TrainingDivergedError` naming the epoch and step, and suggesting a
    smaller learning rate, when the loss becomes NaN or infinite, or explodes while
    still finite: the mean loss of a chunk and its last step's loss exceed
    ``DIVERGENCE_FACTOR`` (10) times the starting loss (the larger of the first step's
    and ``log(n_classes)``). The network is then restored to its parameters at the
    start of that epoch (or of the resumed part of it) and ``on_checkpoint`` is not
    called, so the last good checkpoint stays.
    """
    config = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        optimizer=optimizer,
        lr_schedule=lr_schedule,
        warmup_steps=warmup_steps,
        seed=seed,
        validation_fraction=validation_fraction,
        early_stopping=early_stopping,
        augment=augment,
    )
    if validation is not None and validation_fraction is not None:
        raise ValueError("pass either validation or validation_fraction, not both")
    run = _Run(net, config, train, test, validation, resume, on_checkpoint)
    # A diverging run overflows before its loss turns non-finite; it is reported by
    # _Run.checked_losses, with the epoch and step, instead of as NumPy warnings.
    # A run's chunks, distortions and evaluations take turns in the training path's
    # context and, augmented, the image ops'.
    distortions = nullcontext() if run.augmenter is None else run.augmenter.images.training()
    with (
        _signals_stop(interruptible) as stop,
        np.errstate(over="ignore", invalid="ignore"),
        run.path.training(),
        distortions,
    ):
        for epoch in run.remaining_epochs():
            ep = run.begin_epoch(epoch, progress)
            seconds = run.train_epoch(ep, stop)
            stats = run.evaluate(ep, seconds, eval_train)
            run.record(stats)
            # StopTraining (simplenn.core.callbacks) is returned to stop
            stop_asked = (
                on_epoch_end is not None
                and getattr(on_epoch_end(stats), "stops_training", False) is True
            )
            run.end_epoch(epoch, stop)
            if stop_asked:
                run.history.stopped_by_callback = True
                break
    return run.finish()


def warm_up(
    ops: Ops,
    example: Any = None,
    *,
    optimizer: Optimizer | None = None,
    batch_size: int | None = None,
    augment: str = "none",
    gradients: bool = True,
) -> None:
    """Compile (or load from the cache) what a run on ``ops`` uses, so that later
    timings measure running, not compiling: a tiny network trains an epoch through
    :func:`~simplenn.core.training.fit` on ``example`` (an (n, d) array like the run's
    training inputs, whose dtype and flags decide what compiles; default 8 rows of
    uint8 pixels of 784), with ``optimizer`` (default SGD) and ``augment``, at
    ``batch_size`` (None: at 1 and at 128, which a backend may train apart), then
    predicts, and with ``gradients`` runs :meth:`TwoLayerNet.loss_and_gradients` (which
    ``fit`` does not call). Worth calling when ``ops.needs_warmup``; cheap otherwise."""
    X = np.zeros((8, 784), np.uint8) if example is None else example
    labels = np.arange(X.shape[0]) % 3
    labels.flags.writeable = X.flags.writeable  # as a dataset's labels are, with its images
    net = TwoLayerNet(X.shape[1], 4, 3, backend=ops, dtype=ops.dtype.name)
    for size in (1, 128) if batch_size is None else (batch_size,):
        fit(
            net,
            (X, labels),
            epochs=1,
            batch_size=size,
            optimizer=optimizer or "sgd",
            augment=augment,
            interruptible=False,
        )
    if gradients:
        net.loss_and_gradients(X, labels)
    net.predict(X)


def _progress_bar(enabled: bool, total: int, desc: str, initial: int = 0):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit="img",
        unit_scale=True,
        leave=False,
        dynamic_ncols=True,
        initial=initial,
    )
