"""The timed workloads shared by ``python -m simplenn.bench`` and the suites in ``benchmarks/``.

A *contender* trains the 784 → hidden → 10 network of :class:`~simplenn.TwoLayerNet`:
a simplenn backend (``numpy``, ``numba``, ``cupy``) or a peer library a user might
pick instead (``torch-cpu``, ``torch-cuda``, see :mod:`simplenn.bench.peers`). Every
contender offers the same operations, each of which returns only after the device has
finished (so wrapping a call in a timer measures the work, not the queueing):

- :meth:`Contender.train_epoch`: one pass of minibatch SGD with momentum over the
  first ``n`` training images, uint8 pixels converted to float32 one batch at a time,
  in the order ``numpy.random.default_rng(seed).permutation(n)``;
- :meth:`Contender.train_step`: one SGD step on the first ``batch_size`` images;
- :meth:`Contender.infer`: the predicted labels of the test images.

FLOPs. Per training sample, the dense products of one SGD step on a 784-h-10 network
(``d`` = 784 inputs, ``c`` = 10 classes, 2 FLOPs per multiply-add) are::

    forward   x W1 (2dh) + y1 W2 (2hc)
    backward  dW2 = y1ᵀ dl2 (2hc) + dl2 W2ᵀ (2hc) + dW1 = xᵀ dl1 (2dh)
    total     4dh + 6hc

(no gradient flows back to the pixels, so the usual ``6(dh + hc)`` overcounts by
``2dh``). Element-wise work (bias, ReLU, softmax, the update) is left out: it is
O(h) per sample or O(dh) per step, not a matrix product. Inference counts ``2dh + 2hc``.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..core.model import TwoLayerNet
from ..core.network import DEFAULT_HIDDEN
from ..core.training import TrainConfig, fit
from ..optim import SGD

N_INPUTS, N_CLASSES = 784, 10
#: The grid the benchmarks cover by default: batch sizes and hidden widths.
BATCH_SIZES = (1, 8, 32, 128, 512, 2048)
HIDDEN_SIZES = (128, 512)
#: Learning rate of the throughput runs: small enough that batch size 1 never diverges
#: (the speed of a step does not depend on it). The loss check uses the defaults.
THROUGHPUT_LR = 0.01
MOMENTUM = SGD.momentum


def training_flops_per_sample(
    hidden: int, n_inputs: int = N_INPUTS, n_classes: int = N_CLASSES
) -> int:
    """Dense-product FLOPs of one SGD step per sample: ``4·d·h + 6·h·c`` (module docstring)."""
    return 4 * n_inputs * hidden + 6 * hidden * n_classes


def inference_flops_per_sample(
    hidden: int, n_inputs: int = N_INPUTS, n_classes: int = N_CLASSES
) -> int:
    """Dense-product FLOPs of the forward pass per sample: ``2·d·h + 2·h·c``."""
    return 2 * n_inputs * hidden + 2 * hidden * n_classes


class Contender(abc.ABC):
    """One way of training the network, holding its parameters and the data on its device.

    ``train_X`` (n, 784) uint8 and ``train_y`` (n,) int64 are the training images and
    labels, ``test_X`` (m, 784) uint8 the images to classify; they are copied to the
    device once, here, outside any timed region. The parameters start from
    ``TwoLayerNet(784, hidden, 10, seed=seed)``'s numbers on every contender.
    """

    name: str
    is_peer: bool = False

    def __init__(
        self,
        hidden: int,
        train_X: np.ndarray,
        train_y: np.ndarray,
        test_X: np.ndarray,
        seed: int = 0,
    ) -> None:
        self.hidden = hidden
        self.n_train = int(train_X.shape[0])
        self.n_test = int(test_X.shape[0])
        self.seed = seed

    @abc.abstractmethod
    def synchronize(self) -> None:
        """Wait for queued device work (a no-op on the CPU)."""

    @abc.abstractmethod
    def train_epoch(
        self,
        batch_size: int,
        n_samples: int | None = None,
        *,
        lr: float = THROUGHPUT_LR,
        momentum: float = MOMENTUM,
    ) -> float:
        """One epoch over the first ``n_samples`` training images (all by default);
        returns the mean of the per-step losses, as a float."""

    @abc.abstractmethod
    def train_step(
        self, batch_size: int, *, lr: float = THROUGHPUT_LR, momentum: float = MOMENTUM
    ) -> None:
        """One SGD step on the first ``batch_size`` training images."""

    @abc.abstractmethod
    def infer(self, batch_size: int, n_samples: int | None = None) -> None:
        """Predicted labels of the first ``n_samples`` test images (all by default),
        ``batch_size`` at a time; the labels stay on the device."""

    def _check_n(self, n: int | None, total: int) -> int:
        if n is None:
            return total
        if not 1 <= n <= total:
            raise ValueError(f"{self.name}: n_samples must be in 1..{total}, not {n}")
        return int(n)


class SimplennContender(Contender):
    """A simplenn backend, trained through :func:`simplenn.fit` as a user would."""

    def __init__(
        self,
        backend: str,
        hidden: int,
        train_X: np.ndarray,
        train_y: np.ndarray,
        test_X: np.ndarray,
        seed: int = 0,
    ) -> None:
        super().__init__(hidden, train_X, train_y, test_X, seed)
        self.name = backend
        self.net = TwoLayerNet(N_INPUTS, hidden, N_CLASSES, backend=backend, seed=seed)
        ops = self.ops = self.net.ops
        self.X = ops.asarray(train_X, dtype=np.uint8)
        self.Y = ops.asarray(train_y, dtype=np.int64)
        self.test_X = ops.asarray(test_X, dtype=np.uint8)
        self._state = SGD().init(self.net.params, ops.xp.zeros_like)
        self._order = ops.asarray(np.arange(self.n_train), dtype=np.int64)
        self.synchronize()

    def synchronize(self) -> None:
        self.ops.synchronize()

    def train_epoch(
        self,
        batch_size: int,
        n_samples: int | None = None,
        *,
        lr: float = THROUGHPUT_LR,
        momentum: float = MOMENTUM,
    ) -> float:
        n = self._check_n(n_samples, self.n_train)
        history = fit(
            self.net,
            (self.X[:n, ...], self.Y[:n]),
            epochs=1,
            batch_size=batch_size,
            lr=lr,
            optimizer=SGD(momentum=momentum),
            lr_schedule="constant",
            seed=self.seed,
            eval_train=False,
        )
        return history.epochs[0].train_loss

    def train_step(
        self, batch_size: int, *, lr: float = THROUGHPUT_LR, momentum: float = MOMENTUM
    ) -> None:
        optimizer = SGD(momentum=momentum)
        self._state, _ = self.net.train_steps(
            self.X,
            self.Y,
            self._order[: min(batch_size, self.n_train)],
            self._state,
            optimizer=optimizer,
            batch_size=batch_size,
            lrs=np.full(1, lr),
        )
        self.ops.synchronize(*self.net.params)

    def infer(self, batch_size: int, n_samples: int | None = None) -> None:
        n = self._check_n(n_samples, self.n_test)
        labels = self.ops.argmax(self.net.logits(self.test_X[:n, ...], batch_size=batch_size))
        self.ops.synchronize(labels)


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, Any]:
    """``(seconds, result)`` of one call; the workloads above synchronize before returning."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


class _TargetReached(Exception):
    pass


def time_to_accuracy(
    backend: str,
    train: Any,
    test: Any,
    *,
    target: float,
    hidden: int | None = None,
    config: TrainConfig = TrainConfig(),
) -> dict[str, Any]:
    """Train from scratch with ``config`` (the defaults of ``python -m simplenn.train``)
    until the test accuracy reaches ``target``, checked after every epoch.

    ``train`` and ``test`` are DataSplits or ``(X, y)`` pairs. The timed region
    covers what a user waits for: moving the data to the device, the epochs and the
    per-epoch test evaluation (not building the network nor compiling). Returns
    ``seconds``, ``epochs`` run, the last ``test_accuracy``, ``reached`` and the
    ``samples`` trained on.
    """
    hidden = DEFAULT_HIDDEN if hidden is None else hidden
    net = TwoLayerNet(N_INPUTS, hidden, N_CLASSES, backend=backend, seed=config.seed)
    last: list[float] = []

    def check(stats: Any) -> None:
        last.append(stats.test_accuracy)
        if stats.test_accuracy >= target:
            raise _TargetReached

    net.ops.synchronize()
    start = time.perf_counter()
    try:
        fit(
            net,
            train,
            test,
            epochs=config.epochs,
            batch_size=config.batch_size,
            lr=config.lr,
            optimizer=config.optimizer,
            warmup_steps=config.warmup_steps,
            lr_schedule=config.lr_schedule,
            seed=config.seed,
            eval_train=False,
            on_epoch_end=check,
        )
        reached = False
    except _TargetReached:
        reached = True
    net.ops.synchronize()
    seconds = time.perf_counter() - start
    n = len(train[0]) if isinstance(train, (tuple, list)) else len(train)
    return {
        "seconds": seconds,
        "epochs": len(last),
        "test_accuracy": last[-1],
        "reached": reached,
        "target": target,
        "samples": n * len(last),
        "hidden": hidden,
        "batch_size": config.batch_size,
    }
