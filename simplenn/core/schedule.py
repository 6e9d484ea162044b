"""The learning-rate schedule, applied per step.

A run of ``total`` steps at peak learning rate ``lr`` gives step ``t`` (0, 1, ...)::

    warm-up, t < w:    lr * (t + 1) / w
    then, p = (t - w) / (total - w):
        constant       lr
        cosine         lr * (1 + cos(π p)) / 2
        linear         lr * (1 - p)

Every backend applies it step by step, compiled chunks included: a chunk of steps is
handed the array of its steps' learning rates (:meth:`Schedule.lrs`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

LR_SCHEDULES = ("constant", "cosine", "linear")


class Schedule(NamedTuple):
    """``kind`` (one of :data:`LR_SCHEDULES`) at peak ``lr`` over ``total`` steps, after
    ``warmup`` steps of linear warm-up."""

    lr: float
    kind: str
    total: int
    warmup: int = 0

    def lr_at(self, step: int) -> float:
        """The learning rate of step ``step`` (0-based) of the run."""
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        progress = (step - self.warmup) / max(1, self.total - self.warmup)
        if self.kind == "cosine":
            return self.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
        if self.kind == "linear":
            return self.lr * (1.0 - progress)
        return self.lr

    def lrs(self, first: int, n: int) -> np.ndarray:
        """(n,) float64: the learning rates of steps ``first`` to ``first + n - 1``."""
        return np.array([self.lr_at(t) for t in range(first, first + n)], dtype=np.float64)
