"""Minibatch SGD with momentum: :func:`fit` trains a :class:`TwoLayerNet`.

The dataset stays as stored (uint8 pixels, on the backend once) and each batch is
converted on the fly, so memory stays near the size of the raw data. Each epoch is a
fresh permutation drawn from ``numpy.random.default_rng(seed)``, so equal seeds give
equal runs on every backend. An epoch runs in chunks of about ``CHUNK_SAMPLES``
samples through the backend's ``train_steps`` (compiled code on Numba); between chunks
the progress bar moves and the losses are checked. The learning rate is set once per
chunk from the fraction of the run done.

A run can stop and go on: :func:`fit` hands a :class:`TrainingState` (parameters,
velocities, RNG state, position, history) to ``on_checkpoint`` at every epoch end, and
``fit(..., resume=state)`` continues it so that the result is bitwise the run that
never stopped. Ctrl-C (SIGINT) during :func:`fit` finishes the current step -- on an
interpreted backend one minibatch, on a compiled one the current chunk -- hands the
state to ``on_checkpoint`` and raises :class:`TrainingInterrupted`.
"""

from __future__ import annotations

import copy
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, NoReturn

import numpy as np

from ..errors import TrainingDivergedError
from .model import TwoLayerNet
from .network import PARAMETER_NAMES

#: Samples per call into the backend's compiled ``train_steps`` (a whole number of batches).
CHUNK_SAMPLES = 4096
LR_SCHEDULES = ("constant", "cosine", "linear")


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run; the defaults are those of ``python -m simplenn.train``."""

    epochs: int = 6
    batch_size: int = 128
    lr: float = 0.2
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


@dataclass
class TrainingState:
    """Everything :func:`fit` needs to continue a run exactly where it stopped.

    ``epochs_done`` whole epochs are finished and the next epoch has trained on its
    first ``position`` samples (0 at an epoch end; otherwise a multiple of the batch
    size). ``rng_state`` is the ``bit_generator.state`` of the shuffling generator at
    the start of that next epoch, before its permutation is drawn. ``parameters`` and
    ``velocities`` are NumPy arrays ``W1`` (d, h), ``b1`` (h,), ``W2`` (h, c), ``b2``
    (c,) in the network's dtype; ``epoch_losses`` (float64, one per step done in the
    next epoch) and ``epoch_seconds`` make its statistics equal to an unbroken epoch's.
    """

    config: TrainConfig
    backend: str
    n_train: int
    epochs_done: int
    position: int
    rng_state: dict[str, Any]
    parameters: dict[str, np.ndarray]
    velocities: dict[str, np.ndarray]
    epoch_losses: np.ndarray
    epoch_seconds: float
    history: list[EpochStats]

    @property
    def finished(self) -> bool:
        """Whether every epoch of the run is done."""
        return self.epochs_done >= self.config.epochs

    def describe(self) -> str:
        """Where the run stands, e.g. ``epoch 3/12 done`` or ``epoch 4/12, step 10 of 938``."""
        e, total = self.epochs_done, self.config.epochs
        if self.position == 0:
            return f"epoch {e}/{total} done"
        steps = (self.n_train + self.config.batch_size - 1) // self.config.batch_size
        return (f"{e}/{total} epochs done, epoch {e + 1} stopped after step "
                f"{self.position // self.config.batch_size} of {steps}")


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped :func:`fit` between steps; ``state`` continues the run
    (``fit(..., resume=exc.state)``) and ``saved`` says whether ``on_checkpoint`` got it."""

    def __init__(self, state: TrainingState, saved: bool) -> None:
        super().__init__(f"training interrupted ({state.describe()})")
        self.state = state
        self.saved = saved


class _StopFlag:
    """Set by the SIGINT handler that :func:`_sigint_stops` installs."""

    def __init__(self) -> None:
        self.is_set = False


@contextmanager
def _sigint_stops(enabled: bool) -> Iterator[_StopFlag]:
    """While active, the first SIGINT only sets the flag (a message says so); a second
    one raises KeyboardInterrupt at once. Only in the main thread (signals are
    delivered there); elsewhere, or when not ``enabled``, SIGINT is left alone."""
    flag = _StopFlag()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag.is_set:
            raise KeyboardInterrupt
        flag.is_set = True
        print("\ninterrupt: stopping after the current step (Ctrl-C again to stop at once, "
              "without saving)", file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def _as_xy(data: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A DataSplit or an ``(X, y)`` pair -> (X, y)."""
    if hasattr(data, "X") and hasattr(data, "y"):
        return data.X, data.y
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return data[0], data[1]
    raise TypeError(f"{name} must be a DataSplit or an (X, y) pair, not {type(data).__name__}")


def _check_resume(state: TrainingState, config: TrainConfig, net: TwoLayerNet, n: int) -> None:
    if state.config != config:
        diffs = [f"{k}={v!r} (state: {getattr(state.config, k)!r})"
                 for k, v in asdict(config).items() if getattr(state.config, k) != v]
        raise ValueError(f"cannot resume: the settings differ from the interrupted run's: "
                         f"{', '.join(diffs)}")
    if state.n_train != n:
        raise ValueError(f"cannot resume: the run trained on {state.n_train} samples, "
                         f"this training set has {n}")
    steps = (state.position + config.batch_size - 1) // config.batch_size
    if (not 0 <= state.epochs_done <= config.epochs or not 0 <= state.position < n
            or state.position % config.batch_size or state.epoch_losses.shape != (steps,)
            or len(state.history) != state.epochs_done
            or (state.position and state.epochs_done == config.epochs)):
        raise ValueError(f"cannot resume: inconsistent training state ({state.describe()}, "
                         f"{len(state.history)} epochs of history, "
                         f"{state.epoch_losses.shape[0]} losses)")
    shapes = net.parameter_shapes()
    for group in (state.parameters, state.velocities):
        for k in PARAMETER_NAMES:
            if k not in group or np.shape(group[k]) != shapes[k]:
                raise ValueError(f"cannot resume: the state's {k} does not fit {net!r}")


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


class _Run:
    """The state of one :func:`fit` call: the data on the backend, the momentum
    velocities, the shuffling generator, the current epoch's step losses (on the host)
    and the history so far; its methods are the steps of the run."""

    def __init__(self, net: TwoLayerNet, config: TrainConfig, train: Any, test: Any,
                 resume: TrainingState | None,
                 on_checkpoint: Callable[[TrainingState], None] | None) -> None:
        self.net, self.config, self.ops = net, config, net.ops
        self.on_checkpoint = on_checkpoint
        X_host, y_host = _as_xy(train, "train")
        X_host = net._check_inputs(X_host)
        self.n = X_host.shape[0]
        if self.n == 0:
            raise ValueError("the training set is empty")
        self.Y = net._check_labels(y_host, self.n)
        self.X = self.ops.asarray(
            X_host, dtype=np.uint8 if net._input_dtype(X_host) == np.uint8 else net.dtype)
        self.test_xy = self._test_data(test)

        self.rng = np.random.default_rng(config.seed)
        self.steps_per_epoch = (self.n + config.batch_size - 1) // config.batch_size
        self.chunk = max(1, CHUNK_SAMPLES // config.batch_size) * config.batch_size
        # Interpreted backends run one step per call, so Ctrl-C stops after one minibatch;
        # the learning rate is still set per chunk, so every backend computes the same run.
        self.call_samples = self.chunk if self.ops.compiles_chunks else config.batch_size
        self.losses = np.zeros(self.steps_per_epoch, dtype=np.float64)
        self.history = History(config=config, backend=self.ops.name)
        self.first_epoch, self.resume_position, self.resume_seconds = 1, 0, 0.0
        if resume is not None:
            self._restore(resume)
        else:
            self.velocities = [self.ops.xp.zeros_like(net.params[k]) for k in PARAMETER_NAMES]

    def _test_data(self, test: Any) -> tuple[Any, Any] | None:
        """The test set moved to the backend once, like the training set (None if absent)."""
        if test is None:
            return None
        X_test, y_test = _as_xy(test, "test")
        X_test = self.net._check_inputs(X_test)
        return (self.ops.asarray(X_test, dtype=self.net._input_dtype(X_test)),
                self.net._check_labels(y_test, X_test.shape[0]))

    def _restore(self, state: TrainingState) -> None:
        """Continue from ``state``: its parameters, velocities, generator, history and
        the losses of the part of the next epoch it already trained."""
        _check_resume(state, self.config, self.net, self.n)
        self.net.set_parameters(state.parameters)
        self.velocities = [self.ops.asarray(np.asarray(state.velocities[k], dtype=self.net.dtype))
                           for k in PARAMETER_NAMES]
        self.rng.bit_generator.state = copy.deepcopy(state.rng_state)
        self.history.epochs.extend(copy.deepcopy(state.history))
        self.first_epoch, self.resume_position = state.epochs_done + 1, state.position
        self.resume_seconds = state.epoch_seconds
        if self.resume_position:
            self.losses[:state.epoch_losses.shape[0]] = state.epoch_losses

    # -- the schedule --------------------------------------------------------------------

    def epoch_lr(self, epoch: int) -> float:
        """The learning rate reported for ``epoch``: the schedule at its start."""
        return self.config.lr_at((epoch - 1) / self.config.epochs)

    def chunk_lr(self, epoch: int, chunk_begin: int) -> float:
        """The learning rate of the chunk of ``epoch`` that starts at sample
        ``chunk_begin``: the schedule at the fraction of all samples trained before it."""
        n, epochs = self.n, self.config.epochs
        return self.config.lr_at(((epoch - 1) * n + chunk_begin) / (epochs * n))

    # -- the chunk loop ------------------------------------------------------------------

    def begin_epoch(self, number: int, progress: bool) -> _Epoch:
        """Draw the epoch's permutation, snapshot the parameters, open the progress bar
        and start the clock (a resumed epoch starts where the state stopped)."""
        rng_state = copy.deepcopy(self.rng.bit_generator.state)
        order = self.ops.asarray(self.rng.permutation(self.n), dtype=np.int64)
        resumed = number == self.first_epoch
        start_position = self.resume_position if resumed else 0
        snapshot = self.net.parameters()
        bar = _progress_bar(progress, self.n, f"epoch {number}/{self.config.epochs}",
                            start_position)
        self.ops.synchronize()
        return _Epoch(number=number, rng_state=rng_state, order=order,
                      start_position=start_position, snapshot=snapshot, bar=bar,
                      seconds_before=self.resume_seconds if resumed else 0.0,
                      start=time.perf_counter())

    def train_epoch(self, ep: _Epoch, stop: _StopFlag) -> float:
        """Run the epoch's chunks from its start position, checking the losses and moving
        the progress bar after each; returns the seconds the epoch trained. Raises
        TrainingDivergedError or, when ``stop`` is set before the end, TrainingInterrupted."""
        position = ep.start_position
        for chunk_begin in range(position - position % self.chunk, self.n, self.chunk):
            checked_from = position
            position = self.train_chunk(ep, chunk_begin, position, stop)
            chunk_losses = self.finite_losses(ep, checked_from, position)
            if ep.bar and position > checked_from:
                ep.bar.update(position - checked_from)
                ep.bar.set_postfix(loss=f"{float(chunk_losses.mean()):.4f}", refresh=False)
            if stop.is_set and position < self.n:
                self.interrupt(ep, position)
        self.ops.synchronize(*self.net.params.values(), *self.velocities)
        seconds = ep.seconds()
        ep.close_bar()
        return seconds

    def train_chunk(self, ep: _Epoch, chunk_begin: int, position: int, stop: _StopFlag) -> int:
        """Train from sample ``position`` to the end of the chunk that starts at
        ``chunk_begin`` (``call_samples`` per ``train_steps`` call) unless ``stop`` is set,
        storing the step losses; returns the position reached."""
        c = self.config
        chunk_end = min(self.n, chunk_begin + self.chunk)
        lr = self.chunk_lr(ep.number, chunk_begin)
        while position < chunk_end and not stop.is_set:
            end = min(chunk_end, position + self.call_samples)
            self.velocities, step_losses = self.net.train_steps(
                self.X, self.Y, ep.order[position:end], self.velocities,
                batch_size=c.batch_size, lr=lr, momentum=c.momentum,
                weight_decay=c.weight_decay)
            first = position // c.batch_size
            self.losses[first:first + step_losses.shape[0]] = self.ops.to_numpy(step_losses)
            position = end
        return position

    # -- the divergence check ------------------------------------------------------------

    def finite_losses(self, ep: _Epoch, begin: int, end: int) -> np.ndarray:
        """The losses of the steps that trained samples ``begin`` to ``end``. If one is
        NaN or infinite, restore the parameters of the epoch's start and raise
        TrainingDivergedError naming the epoch and step."""
        bs = self.config.batch_size
        first_step = begin // bs
        losses = self.losses[first_step:(end + bs - 1) // bs]
        if np.isfinite(losses).all():
            return losses
        bad = int(np.flatnonzero(~np.isfinite(losses))[0])
        self.net.set_parameters(ep.snapshot)
        ep.close_bar()
        lr = self.config.lr
        where = "epoch" if ep.start_position == 0 else "resumed part of the epoch"
        raise TrainingDivergedError(
            f"training diverged at epoch {ep.number}, step {first_step + bad + 1} of "
            f"{self.steps_per_epoch}: the loss is {losses[bad]}; try a smaller learning rate "
            f"(lr is {lr:g}; e.g. --lr {lr / 10:g}). The network was "
            f"restored to its parameters at the start of the {where} {ep.number}.")

    # -- interrupt and checkpoint --------------------------------------------------------

    def state(self, epochs_done: int, position: int, rng_state: dict[str, Any],
              seconds: float) -> TrainingState:
        """A copy of the run's state after ``epochs_done`` epochs and ``position`` samples
        of the next, whose permutation is drawn from ``rng_state``."""
        bs = self.config.batch_size
        return TrainingState(
            config=self.config, backend=self.ops.name, n_train=self.n,
            epochs_done=epochs_done, position=position, rng_state=copy.deepcopy(rng_state),
            parameters=self.net.parameters(),
            velocities={k: np.array(self.ops.to_numpy(v), copy=True)
                        for k, v in zip(PARAMETER_NAMES, self.velocities)},
            epoch_losses=self.losses[:(position + bs - 1) // bs].copy(),
            epoch_seconds=seconds, history=copy.deepcopy(self.history.epochs))

    def interrupt(self, ep: _Epoch, position: int) -> NoReturn:
        """Stop inside the epoch at ``position``: hand the state to ``on_checkpoint`` and
        raise TrainingInterrupted."""
        self.ops.synchronize(*self.net.params.values(), *self.velocities)
        ep.close_bar()
        state = self.state(ep.number - 1, position, ep.rng_state, ep.seconds())
        if self.on_checkpoint is not None:
            self.on_checkpoint(state)
        raise TrainingInterrupted(state, saved=self.on_checkpoint is not None)

    def end_epoch(self, epoch: int, stop: _StopFlag) -> None:
        """After ``epoch``: hand the state to ``on_checkpoint``, then raise
        TrainingInterrupted if ``stop`` is set and epochs remain."""
        if self.on_checkpoint is None and not (stop.is_set and epoch < self.config.epochs):
            return
        state = self.state(epoch, 0, self.rng.bit_generator.state, 0.0)
        if self.on_checkpoint is not None:
            self.on_checkpoint(state)
        if stop.is_set and epoch < self.config.epochs:
            raise TrainingInterrupted(state, saved=self.on_checkpoint is not None)

    # -- evaluation ----------------------------------------------------------------------

    def evaluate(self, ep: _Epoch, seconds: float, eval_train: bool) -> EpochStats:
        """The epoch's statistics: mean step loss, train (if ``eval_train``) and test
        accuracy, and the speed of the part trained in this call."""
        eval_start = time.perf_counter()
        train_accuracy = self.net.accuracy(self.X, self.Y) if eval_train else None
        test_accuracy = self.net.accuracy(*self.test_xy) if self.test_xy is not None else None
        trained = self.n - ep.start_position
        return EpochStats(
            epoch=ep.number, lr=self.epoch_lr(ep.number), train_loss=float(self.losses.mean()),
            train_accuracy=train_accuracy, test_accuracy=test_accuracy, seconds=seconds,
            samples_per_second=trained / (seconds - ep.seconds_before)
            if seconds > ep.seconds_before else math.inf,
            eval_seconds=time.perf_counter() - eval_start)


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
    on_checkpoint: Callable[[TrainingState], None] | None = None,
    resume: TrainingState | None = None,
    interruptible: bool = True,
) -> History:
    """Train ``net`` in place by minibatch SGD with momentum and return its :class:`History`.

    ``train`` and ``test`` are :class:`~simplenn.data.datasets.DataSplit` objects or
    ``(X, y)`` pairs: X (n, n_inputs) uint8 pixels (scaled by 1/255 per batch) or
    floats, y (n,) integer labels. ``lr_schedule`` is ``constant``, ``cosine`` or
    ``linear``, evaluated on the fraction of steps done (updated every chunk of
    about ``CHUNK_SAMPLES`` samples). Weight decay applies to W1 and W2.

    ``on_checkpoint(state)`` is called after every epoch (after ``on_epoch_end``) and
    when Ctrl-C stops the run, with a :class:`TrainingState` that ``resume=`` continues
    (same settings and training set, else ``ValueError``): the net's parameters are
    replaced by the state's and the returned history holds the earlier epochs too.
    With ``interruptible`` (and in the main thread), the first SIGINT finishes the
    current step -- one minibatch on interpreted backends, the current chunk of
    compiled code on Numba -- then raises :class:`TrainingInterrupted`.

    Raises :class:`TrainingDivergedError` naming the epoch and step when the loss
    becomes NaN or infinite; the network is then restored to its parameters at the
    start of that epoch (or of the resumed part of it) and ``on_checkpoint`` is not
    called, so the last good checkpoint stays.
    """
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum,
                         weight_decay=weight_decay, lr_schedule=lr_schedule, seed=seed)
    run = _Run(net, config, train, test, resume, on_checkpoint)
    # A diverging run overflows before its loss turns non-finite; it is reported by
    # _Run.finite_losses, with the epoch and step, instead of as NumPy warnings.
    with _sigint_stops(interruptible) as stop, np.errstate(over="ignore", invalid="ignore"):
        for epoch in range(run.first_epoch, epochs + 1):
            ep = run.begin_epoch(epoch, progress)
            seconds = run.train_epoch(ep, stop)
            stats = run.evaluate(ep, seconds, eval_train)
            run.history.epochs.append(stats)
            if on_epoch_end is not None:
                on_epoch_end(stats)
            run.end_epoch(epoch, stop)
    return run.history


def _progress_bar(enabled: bool, total: int, desc: str, initial: int = 0):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", unit_scale=True, leave=False,
                dynamic_ncols=True, initial=initial)
