"""Optimizers: objects of their own, ``init(params)`` and ``update(grads, state, params,
lr)`` over named parameters; the model never knows which one runs.

``get_optimizer("adam", beta2=0.99)`` builds one by name; ``fit(optimizer=...)``,
``--optimizer`` and the estimator's ``solver`` take a name or an instance.
"""

from __future__ import annotations

from typing import Any

from .adam import Adam, AdamW
from .base import Optimizer, OptState, make_update
from .sgd import SGD

#: The optimizers by name.
OPTIMIZERS: dict[str, type[Optimizer]] = {cls.name: cls for cls in (SGD, Adam, AdamW)}

__all__ = [
    "OPTIMIZERS",
    "Adam",
    "AdamW",
    "OptState",
    "Optimizer",
    "SGD",
    "get_optimizer",
    "make_update",
]


def get_optimizer(optimizer: str | Optimizer = "sgd", **hyperparameters: Any) -> Optimizer:
    """An :class:`Optimizer` from its name and hyperparameters (an instance is returned
    as it is, when no hyperparameters are given). ``ValueError`` for an unknown name, a
    hyperparameter the optimizer does not have, or one out of range."""
    if isinstance(optimizer, Optimizer):
        if hyperparameters:
            raise ValueError(
                "pass hyperparameters to the optimizer's constructor, not beside an instance"
            )
        return optimizer
    if not isinstance(optimizer, str) or optimizer.lower() not in OPTIMIZERS:
        raise ValueError(
            f"unknown optimizer {optimizer!r}; the optimizers are {', '.join(OPTIMIZERS)}"
        )
    cls = OPTIMIZERS[optimizer.lower()]
    known = {f for f in cls.__dataclass_fields__}
    unknown = sorted(set(hyperparameters) - known)
    if unknown:
        raise ValueError(
            f"optimizer {cls.name!r} has no hyperparameter {unknown[0]!r}; it has "
            f"{', '.join(sorted(known))}"
        )
    return cls(**hyperparameters)
