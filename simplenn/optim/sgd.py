"""SGD with momentum, Nesterov's variant and L2 weight decay (PyTorch's convention)::

g = grad + weight_decay * param          (weights only)
v = momentum * v + g                     (0 where |v| < the smallest normal number)
g = g + momentum * v   if nesterov  else  v
param = param - lr * g
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.params import Params
from .base import Optimizer, OptState, smallest_normal

#: The default learning rate from batch ``LR_REFERENCE_BATCH`` up; see :meth:`SGD.default_lr`.
REFERENCE_LR = 0.2
LR_REFERENCE_BATCH = 128


@dataclass(frozen=True)
class SGD(Optimizer):
    """Minibatch SGD with momentum; ``momentum`` in [0, 1), ``weight_decay`` >= 0."""

    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0

    name = "sgd"
    slot_names = ("velocity",)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.momentum < 1:
            raise ValueError(f"sgd: momentum must be in [0, 1), not {self.momentum!r}")
        if self.nesterov and self.momentum == 0:
            raise ValueError("sgd: nesterov needs a momentum > 0")

    def default_lr(self, batch_size: int) -> float:
        """``0.2 * batch_size / 128`` up to batch 128, 0.2 above: each sample moves the
        parameters as much as at the tuned default (lr 0.2 at batch 128), so one epoch
        at batch 1 or 8 learns where lr 0.2 would end near chance."""
        return REFERENCE_LR * min(batch_size, LR_REFERENCE_BATCH) / LR_REFERENCE_BATCH

    def step_scalars(self, lr: float, step: int) -> tuple[float, ...]:
        """``(lr,)``."""
        return (lr,)

    def make_leaf(self, xp: Any, scalar: Callable[[float], Any], dtype: np.dtype, decay: bool):
        momentum, wd = scalar(self.momentum), scalar(self.weight_decay)
        tiny, nesterov = scalar(smallest_normal(dtype)), self.nesterov
        decay = decay and self.weight_decay != 0

        def sgd(p, g, slots, c):
            if decay:
                g = g + p * wd
            v = slots[0] * momentum + g
            v = xp.where(xp.abs(v) < tiny, v - v, v)  # no subnormal state
            if nesterov:
                g = g + v * momentum
            else:
                g = v
            return p - g * c[0], (v,)

        return sgd


def chunk_arguments(params: Params, state: OptState) -> tuple:
    """``(W1, b1, W2, b2, V1, v1, V2, v2)``: SGD's parameters and velocities as a
    backend's fused SGD chunk takes them, by position."""
    return (*params, *(slots[0] for slots in state.slots))


def from_chunk(arrays: Sequence, state: OptState, n_steps: int) -> tuple[Params, OptState]:
    """The parameters and state a fused SGD chunk returned as ``(W1, b1, W2, b2, V1, v1,
    V2, v2)``, after ``n_steps`` updates from ``state``."""
    return Params(*arrays[:4]), OptState(state.step + n_steps, Params(*((v,) for v in arrays[4:])))
