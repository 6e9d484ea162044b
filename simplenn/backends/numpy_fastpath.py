"""The NumPy backend's fast path: SGD with momentum updated in place.

The generic path's optimizer returns new arrays at every step; on NumPy, whose arrays
are mutable, this path writes each update into the parameters and velocities it is
handed, in NumPy's order of operations, so it computes the generic path's numbers bit
for bit with fewer temporaries. Covers SGD without Nesterov's variant, pixels and
floats, every batch size; a Python loop, so ``fit`` calls it one step at a time.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..core.network import make_backprop
from ..optim import SGD, OptState
from .fastpath import FastPath


class NumpySGD(FastPath):
    """SGD with momentum, in place (see the module's docstring)."""

    name = "numpy-sgd"
    fused = False

    def covers(self, ops: Any, optimizer: Any, input_kind: str, batch_size: int) -> bool:
        return type(optimizer) is SGD and not optimizer.nesterov

    def train_steps(self, ops: Any, optimizer: Any, input_kind: str) -> Callable[..., tuple]:
        backprop, take, to_float = make_backprop(ops), ops.take, ops.to_float
        matmul_tn, dtype = ops.matmul_tn, ops.dtype
        momentum, wd = dtype.type(optimizer.momentum), dtype.type(optimizer.weight_decay)
        tiny = np.finfo(dtype).smallest_normal

        def update(param, grad, velocity, lr, decay):
            """``v = momentum v + (grad + decay param)``, 0 below ``tiny``; ``param -= lr v``."""
            g = grad + param * decay if decay else grad
            velocity *= momentum
            velocity += g
            np.copyto(velocity, 0, where=np.abs(velocity) < tiny)
            param -= velocity * lr

        def step(params, velocities, x, y, lr):
            """One step in place; returns its loss. A function of its own, so that the
            batch's temporaries are freed before the next batch is taken."""
            (W1, b1, W2, b2), (V1, v1, V2, v2) = params, velocities
            loss, dl1, db1, dW2, db2 = backprop(params, x, y)
            update(W1, matmul_tn(x, dl1), V1, lr, wd)  # dW1 = xᵀ dl1
            update(b1, db1, v1, lr, 0)
            update(W2, dW2, V2, lr, wd)
            update(b2, db2, v2, lr, 0)
            return loss

        def train_steps(params, state, X, Y, order, batch_size, lrs):
            velocities = [slots[0] for slots in state.slots]
            n = order.shape[0]
            n_steps = (n + batch_size - 1) // batch_size
            losses = np.empty(n_steps)
            rates = lrs.astype(dtype)
            for s in range(n_steps):
                rows = order[s * batch_size : min(n, (s + 1) * batch_size)]
                losses[s] = step(
                    params, velocities, to_float(take(X, rows)), take(Y, rows), rates[s]
                )
            return params, OptState(state.step + n_steps, state.slots), losses

        return train_steps


NUMPY_SGD = NumpySGD()
