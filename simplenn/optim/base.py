"""What every optimizer is: an object with ``init(params)`` and ``update(grads, state,
params, lr)`` over named parameters (:class:`~simplenn.core.params.Params`).

An optimizer writes its rule once, for one parameter array, in :meth:`Optimizer.make_leaf`:
arithmetic operators and ``xp.sqrt``, ``xp.abs``, ``xp.where`` of an array API namespace,
so the same rule runs on every backend and inside compiled code (``jax.jit``, Numba).
:func:`make_update` applies the rule to each parameter by name; the model never knows
which optimizer runs. The state (:class:`OptState`) is the number of updates done and,
per parameter, a tuple of arrays named by :attr:`Optimizer.slot_names`.

Per-step numbers that depend only on the learning rate and the step count (Adam's bias
corrections) are computed on the host in float64 by :meth:`Optimizer.step_scalars` and
reach the rule as scalars of the backend's dtype.

Every rule sets to +0 the state entries whose magnitude falls below the dtype's
smallest normal number (``xp.where(xp.abs(v) < tiny, v - v, v)``; NaN stays NaN). The
state of a weight whose gradient stays zero (the first layer's weights of a pixel that
is dark in every image of a batch) decays geometrically and would otherwise spend steps
among the subnormal numbers, where x86 arithmetic takes a slow microcode assist;
``lr`` times a subnormal number moves no weight above 1e-30 for lr up to 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, NamedTuple

import numpy as np

from ..core.params import DECAYED, Params, map_params


class OptState(NamedTuple):
    """An optimizer's state: ``step``, the updates done so far, and ``slots``: per
    parameter, a tuple of arrays shaped like it, in the order of the optimizer's
    :attr:`~Optimizer.slot_names` (SGD: ``("velocity",)``; Adam: ``("m", "v")``)."""

    step: int
    slots: Params


@dataclass(frozen=True)
class Optimizer:
    """Base class: a frozen dataclass of hyperparameters, with the rule of one update.

    Subclasses set :attr:`name` and :attr:`slot_names` and implement
    :meth:`default_lr`, :meth:`step_scalars` and :meth:`make_leaf`.
    """

    #: The name ``--optimizer`` and ``fit(optimizer=...)`` know it by.
    name: ClassVar[str] = "base"
    #: The names of its per-parameter state arrays.
    slot_names: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or f.type in ("bool", bool):
                if not isinstance(value, bool):
                    raise ValueError(f"{self.name}: {f.name} must be true or false, not {value!r}")
                continue
            if not isinstance(value, (int, float, np.floating, np.integer)) or not math.isfinite(
                value
            ):
                raise ValueError(f"{self.name}: {f.name} must be a finite number, not {value!r}")
            object.__setattr__(self, f.name, float(value))
        if getattr(self, "weight_decay", 0.0) < 0:
            raise ValueError(f"{self.name}: weight_decay must be >= 0, not {self.weight_decay!r}")

    # -- what a subclass writes --------------------------------------------------------
    def default_lr(self, batch_size: int) -> float:
        """The learning rate a run uses when none is given."""
        raise NotImplementedError

    def step_scalars(self, lr: float, step: int) -> tuple[float, ...]:
        """The host-side numbers of update number ``step`` (1, 2, ...) at learning rate
        ``lr``, as Python floats: what :meth:`make_leaf`'s rule reads as ``c``."""
        raise NotImplementedError

    def make_leaf(
        self, xp: Any, scalar: Callable[[float], Any], dtype: np.dtype, decay: bool
    ) -> Callable[..., tuple[Any, tuple]]:
        """The rule for one parameter: ``leaf(p, g, slots, c) -> (p, slots)``.

        ``p`` and ``g`` are the parameter and its gradient, ``slots`` the tuple of its
        state arrays and ``c`` the tuple :meth:`step_scalars` gave (as ``scalar`` made
        them); weight decay applies when ``decay``. Written with operators and ``xp``'s
        ``sqrt``, ``abs`` and ``where`` only; returns new arrays and never changes its
        arguments. ``scalar`` turns a hyperparameter into the backend's scalar of ``dtype``.
        """
        raise NotImplementedError

    # -- the same for every optimizer --------------------------------------------------
    def hyperparameters(self) -> dict[str, Any]:
        """The hyperparameters by name (what a checkpoint stores beside :attr:`name`)."""
        return asdict(self)

    def describe(self) -> str:
        """E.g. ``sgd (momentum 0.9, nesterov false, weight_decay 0)``."""
        items = ", ".join(
            f"{k} {str(v).lower() if isinstance(v, bool) else f'{v:g}'}"
            for k, v in self.hyperparameters().items()
        )
        return f"{self.name} ({items})"

    def init(self, params: Params, zeros_like: Callable[[Any], Any] | None = None) -> OptState:
        """The state before the first update: zero slots shaped like ``params``
        (``zeros_like`` of the parameters' namespace unless given)."""
        if zeros_like is None:
            zeros_like = _namespace(params).zeros_like
        return OptState(
            0, map_params(lambda p: tuple(zeros_like(p) for _ in self.slot_names), params)
        )

    def update(
        self, grads: Params, state: OptState, params: Params, lr: float
    ) -> tuple[Params, OptState]:
        """One update of ``params`` with gradients ``grads`` at learning rate ``lr``:
        returns the new parameters and state (new arrays; nothing is changed in place)."""
        xp = _namespace(params)
        dtype = np.dtype(str(params.W1.dtype).removeprefix("torch."))
        update = make_update(
            self.make_leaf(xp, float, dtype, True), self.make_leaf(xp, float, dtype, False)
        )
        new_params, slots = update(
            params, grads, state.slots, self.step_scalars(lr, state.step + 1)
        )
        return new_params, OptState(state.step + 1, slots)


def make_update(
    decayed: Callable[..., tuple], plain: Callable[..., tuple]
) -> Callable[..., tuple[Params, Params]]:
    """``update(params, grads, slots, c) -> (params, slots)``: an optimizer's rule
    (see :meth:`Optimizer.make_leaf`) applied to each parameter, ``decayed`` (with weight
    decay) to those of :data:`~simplenn.core.params.DECAYED` and ``plain`` to the others.
    Plain code over a NamedTuple, so a backend's ``jit`` compiles it with the rest of a
    training step."""
    W1_leaf, b1_leaf, W2_leaf, b2_leaf = (decayed if d else plain for d in DECAYED)

    def update(params, grads, slots, c):
        W1, s1 = W1_leaf(params.W1, grads.W1, slots.W1, c)
        b1, s2 = b1_leaf(params.b1, grads.b1, slots.b1, c)
        W2, s3 = W2_leaf(params.W2, grads.W2, slots.W2, c)
        b2, s4 = b2_leaf(params.b2, grads.b2, slots.b2, c)
        return Params(W1, b1, W2, b2), Params(s1, s2, s3, s4)

    return update


def smallest_normal(dtype: np.dtype) -> float:
    """The smallest positive normal number of ``dtype``."""
    return float(np.finfo(dtype).smallest_normal)


def _namespace(params: Params) -> Any:
    from array_api_compat import array_namespace

    return array_namespace(*params)
