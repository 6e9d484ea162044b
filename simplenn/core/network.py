"""The two-layer network's math, written once against :class:`~simplenn.backends.Ops`.

The math is the classic one, for a batch ``x`` (m, d) with integer labels ``y`` (m,)::

    l1  = x W1 + b1          W1 (d, h), b1 (h,)     -> l1, y1 (m, h)
    y1  = relu(l1)
    l2  = y1 W2 + b2         W2 (h, c), b2 (c,)     -> l2, p (m, c)
    p   = softmax(l2)
    L   = -mean_i log p[i, y_i]
    dl2 = (p - onehot(y)) / m
    dW2 = y1ᵀ dl2            db2 = Σ_rows dl2
    dl1 = dl2 W2ᵀ ⊙ [l1 > 0]
    dW1 = xᵀ dl1             db1 = Σ_rows dl1

and a training step is ``params, state = optimizer.update(grads, state, params)``.

Each piece is a ``make_*`` factory that closes over a backend's :class:`Ops` (or any
object with the same ops) and returns a plain function of arrays and
:class:`~simplenn.core.params.Params`. Interpreted backends call these functions as
they are; a compiling backend (Numba, JAX) passes the very same functions through
:meth:`Ops.jit`, so compiled training runs this code, not a copy of it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, NamedTuple

import numpy as np

from ..backends import Ops
from ..backends.base import Array
from ..backends.fastpath import TrainSteps
from ..optim import Optimizer, OptState, make_update
from .params import Params

#: Hidden width of the default network (and of `python -m simplenn.train`).
DEFAULT_HIDDEN = 256


# --------------------------------------------------------------------------------------
# The math, once.
# --------------------------------------------------------------------------------------
def make_forward(ops: Any) -> Callable[[Params, Array], Array]:
    """``forward(params, x) -> l2``: the logits (m, c) of inputs x (m, d)."""
    affine_relu, affine = ops.affine_relu, ops.affine

    def forward(params, x):
        y1 = affine_relu(x, params.W1, params.b1)  # y1 = relu(x W1 + b1)
        return affine(y1, params.W2, params.b2)  # l2 = y1 W2 + b2

    return forward


def make_backprop(ops: Any) -> Callable[..., tuple]:
    """``backprop(params, x, y) -> (L, dl1, db1, dW2, db2)``: the loss and the backward
    pass down to the first layer's pre-activation gradient ``dl1`` (m, h).

    ``dW1 = xᵀ dl1`` is left to the caller: :func:`make_loss_and_gradients` forms it; a
    fast path may fold it into the first layer's update instead.
    """
    affine_relu, affine = ops.affine_relu, ops.affine
    softmax_cross_entropy = ops.softmax_cross_entropy
    matmul_tn, matmul_nt = ops.matmul_tn, ops.matmul_nt
    relu_backward, sum_rows = ops.relu_backward, ops.sum_rows

    def backprop(params, x, y):
        y1 = affine_relu(x, params.W1, params.b1)  # y1 = relu(x W1 + b1)
        l2 = affine(y1, params.W2, params.b2)  # l2 = y1 W2 + b2
        loss, dl2 = softmax_cross_entropy(l2, y)  # dl2 = (softmax(l2) - onehot(y)) / m
        dW2 = matmul_tn(y1, dl2)  # dW2 = y1ᵀ dl2
        db2 = sum_rows(dl2)
        dl1 = relu_backward(matmul_nt(dl2, params.W2), y1)  # dl1 = dl2 W2ᵀ ⊙ [l1 > 0]
        db1 = sum_rows(dl1)
        return loss, dl1, db1, dW2, db2

    return backprop


def make_loss_and_gradients(ops: Any, backprop: Callable[..., tuple]) -> Callable[..., tuple]:
    """``loss_and_gradients(params, x, y) -> (L, grads)``, ``grads`` a :class:`Params`."""
    matmul_tn = ops.matmul_tn

    def loss_and_gradients(params, x, y):
        loss, dl1, db1, dW2, db2 = backprop(params, x, y)
        return loss, Params(matmul_tn(x, dl1), db1, dW2, db2)  # dW1 = xᵀ dl1

    return loss_and_gradients


def make_train_step(
    ops: Ops, loss_and_gradients: Callable[..., tuple], update: Callable[..., tuple]
) -> Callable[..., tuple]:
    """``train_step(params, slots, X, Y, rows, c) -> (params, slots, L)``: one minibatch
    step on the rows ``rows`` of the stored inputs ``X`` (uint8 pixels or floats) and
    labels ``Y``; ``update`` is an optimizer's (:func:`simplenn.optim.make_update`),
    ``slots`` its state arrays and ``c`` its numbers for this step."""
    take, to_float = ops.take, ops.to_float

    def train_step(params, slots, X, Y, rows, c):
        loss, grads = loss_and_gradients(params, to_float(take(X, rows)), take(Y, rows))
        params, slots = update(params, grads, slots, c)
        return params, slots, loss

    return train_step


def make_train_steps(
    ops: Ops, optimizer: Optimizer, loss_and_gradients: Callable[..., tuple]
) -> TrainSteps:
    """The generic ``train_steps`` (see :data:`~simplenn.backends.fastpath.TrainSteps`):
    a loop over the chunk's batches calling the step compiled by ``ops.jit``, each at
    its own learning rate ``lrs[s]``."""
    scalar, step_scalars, xp = ops.scalar, optimizer.step_scalars, ops.xp
    decayed, plain = (
        ops.jit(optimizer.make_leaf(xp, scalar, ops.dtype, decay)) for decay in (True, False)
    )
    step = ops.jit(make_train_step(ops, loss_and_gradients, ops.jit(make_update(decayed, plain))))

    def train_steps(params, state, X, Y, order, batch_size, lrs):
        n = order.shape[0]
        n_steps = (n + batch_size - 1) // batch_size
        slots, losses = state.slots, []
        for s in range(n_steps):
            rows = order[s * batch_size : min(n, (s + 1) * batch_size)]
            c = tuple(scalar(v) for v in step_scalars(float(lrs[s]), state.step + s + 1))
            params, slots, loss = step(params, slots, X, Y, rows, c)
            losses.append(loss)
        return params, OptState(state.step + n_steps, slots), xp.stack(losses)

    return train_steps


# --------------------------------------------------------------------------------------
# The math bound to a backend, once per process.
# --------------------------------------------------------------------------------------
class NetworkFunctions(NamedTuple):
    """The network math bound to one backend (and compiled, where it compiles)."""

    forward: Callable[[Params, Array], Array]
    loss_and_gradients: Callable[..., tuple]


class TrainingPath(NamedTuple):
    """How a run's chunks train: ``name`` (``generic``, or a fast path's), its
    ``train_steps``, whether it runs a chunk as one call (``fused``; see
    :attr:`~simplenn.backends.fastpath.FastPath.fused`), and the context a whole run
    on it trains and evaluates in (``training()``; see
    :meth:`~simplenn.backends.fastpath.FastPath.training`)."""

    name: str
    train_steps: TrainSteps
    fused: bool = False
    training: Callable[[], AbstractContextManager] = nullcontext


_FUNCTIONS: dict[tuple, NetworkFunctions] = {}
_PATHS: dict[tuple, TrainingPath] = {}


def _key(ops: Ops) -> tuple:
    """What tells two backends apart: class, dtype and repr (which shows their settings,
    such as a device)."""
    return type(ops), ops.dtype, repr(ops)


def network_functions(ops: Ops) -> NetworkFunctions:
    """The math of this module bound to ``ops`` through ``ops.jit``, built once per
    backend class, dtype and settings (so a compiling backend compiles once per process)."""
    key = _key(ops)
    fns = _FUNCTIONS.get(key)
    if fns is None:
        backprop = ops.jit(make_backprop(ops))
        fns = _FUNCTIONS[key] = NetworkFunctions(
            forward=ops.jit(make_forward(ops)),
            loss_and_gradients=ops.jit(make_loss_and_gradients(ops, backprop)),
        )
    return fns


def training_path(ops: Ops, optimizer: Optimizer, input_kind: str, batch_size: int) -> TrainingPath:
    """The ``train_steps`` a run of ``optimizer`` on inputs of ``input_kind`` at
    ``batch_size`` uses on ``ops``: the first of the backend's fast paths that covers
    it, else the generic compiled math. Built once per backend, optimizer and path."""
    from ..backends.fastpath import select

    path = select(ops, optimizer, input_kind, batch_size)
    key = (*_key(ops), optimizer, input_kind, None if path is None else path.name)
    found = _PATHS.get(key)
    if found is None:
        if path is None:
            found = TrainingPath(
                "generic",
                make_train_steps(ops, optimizer, network_functions(ops).loss_and_gradients),
            )
        else:
            found = TrainingPath(
                path.name,
                path.train_steps(ops, optimizer, input_kind),
                path.fused,
                functools.partial(path.training, ops),
            )
        _PATHS[key] = found
    return found


def input_kind(dtype: np.dtype) -> str:
    """``pixels`` for stored uint8 inputs, else ``floats``."""
    return "pixels" if dtype == np.uint8 else "floats"
