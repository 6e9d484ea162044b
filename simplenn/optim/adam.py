"""Adam (Kingma and Ba) and AdamW (Loshchilov and Hutter), as PyTorch writes them::

    g = grad + weight_decay * param                     (Adam; weights only)
    param = param * (1 - lr * weight_decay)             (AdamW; weights only)
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g²                    (m, v: 0 below the smallest normal)
    param = param - lr / (1 - beta1ᵗ) * m / (sqrt(v) / sqrt(1 - beta2ᵗ) + eps)

at update number t = 1, 2, ...
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .base import Optimizer, smallest_normal

#: The default learning rate (any batch size).
DEFAULT_LR = 3e-3


@dataclass(frozen=True)
class Adam(Optimizer):
    """Adam with L2 weight decay added to the gradient; ``beta1`` and ``beta2`` in
    [0, 1), ``eps`` > 0, ``weight_decay`` >= 0."""

    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0

    name = "adam"
    slot_names = ("m", "v")
    #: Weight decay as ``param * (1 - lr * wd)`` before the step (AdamW), not in ``g``.
    decoupled = False

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("beta1", "beta2"):
            if not 0 <= getattr(self, key) < 1:
                raise ValueError(
                    f"{self.name}: {key} must be in [0, 1), not {getattr(self, key)!r}"
                )
        if self.eps <= 0:
            raise ValueError(f"{self.name}: eps must be > 0, not {self.eps!r}")

    def default_lr(self, batch_size: int) -> float:
        """:data:`DEFAULT_LR` at every batch size."""
        return DEFAULT_LR

    def step_scalars(self, lr: float, step: int) -> tuple[float, ...]:
        """``(lr / (1 - beta1ᵗ), sqrt(1 - beta2ᵗ), 1 - lr * weight_decay)``."""
        return (
            lr / (1 - self.beta1**step),
            math.sqrt(1 - self.beta2**step),
            1 - lr * self.weight_decay,
        )

    def make_leaf(self, xp: Any, scalar: Callable[[float], Any], dtype: np.dtype, decay: bool):
        beta1, beta2 = scalar(self.beta1), scalar(self.beta2)
        rest1, rest2 = scalar(1 - self.beta1), scalar(1 - self.beta2)
        eps, wd, tiny = scalar(self.eps), scalar(self.weight_decay), scalar(smallest_normal(dtype))
        coupled = decay and not self.decoupled and self.weight_decay != 0
        decoupled = decay and self.decoupled and self.weight_decay != 0

        def adam(p, g, slots, c):
            if coupled:
                g = g + p * wd
            if decoupled:
                p = p * c[2]
            m = slots[0] * beta1 + g * rest1
            v = slots[1] * beta2 + (g * g) * rest2
            m = xp.where(xp.abs(m) < tiny, m - m, m)  # no subnormal state
            v = xp.where(v < tiny, v - v, v)
            return p - (m / (xp.sqrt(v) / c[1] + eps)) * c[0], (m, v)

        return adam


@dataclass(frozen=True)
class AdamW(Adam):
    """Adam with decoupled weight decay (default 0.01, as PyTorch's)."""

    weight_decay: float = 0.01

    name = "adamw"
    decoupled = True
