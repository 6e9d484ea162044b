"""The CuPy backend's fast path: chunks of SGD steps queued on the device, with the
update as one fused kernel, and replayed as CUDA graphs where ``$SIMPLENN_CUDA_GRAPHS``
turns them on (:class:`~.graphs.CudaGraphTrainSteps`).

Covers SGD with momentum (not Nesterov's), pixels and floats, every batch size. The
update runs in place on the parameters and velocities the chunk is given, which it
returns. The backward pass is :func:`simplenn.core.network.make_backprop` over the
backend's own ops.
"""

from __future__ import annotations

from typing import Any, Callable

import cupy
import numpy as np

from ...core.network import make_backprop
from ...core.params import Params
from ...optim import SGD
from ...optim.sgd import chunk_arguments, from_chunk
from ..fastpath import FastPath
from .graphs import CudaGraphTrainSteps


def make_sgd_chunk(ops: Any) -> Callable[..., tuple]:
    """``chunk(W1, b1, W2, b2, V1, v1, V2, v2, X, Y, order, batch_size, lrs, momentum,
    wd) -> (W1, b1, W2, b2, V1, v1, V2, v2, losses)``: the SGD steps over the rows
    ``X[order]``, step ``s`` at the device scalar ``lrs[s]``, in place."""
    from .ops import sgd_momentum_kernel

    backprop, take, to_float, matmul_tn = (
        make_backprop(ops),
        ops.take,
        ops.to_float,
        ops.matmul_tn,
    )
    tiny = ops.dtype.type(np.finfo(ops.dtype).smallest_normal)
    zero = ops.dtype.type(0)

    def update(param, grad, velocity, lr, momentum, wd):
        sgd_momentum_kernel()(grad, lr, momentum, wd, tiny, param, velocity)

    def chunk(W1, b1, W2, b2, V1, v1, V2, v2, X, Y, order, batch_size, lrs, momentum, wd):
        n = order.shape[0]
        n_steps = (n + batch_size - 1) // batch_size
        losses = cupy.zeros(n_steps, dtype=cupy.float64)
        for s in range(n_steps):
            rows = order[s * batch_size : min(n, (s + 1) * batch_size)]
            x = to_float(take(X, rows))
            loss, dl1, db1, dW2, db2 = backprop(Params(W1, b1, W2, b2), x, take(Y, rows))
            lr = lrs[s]
            update(W1, matmul_tn(x, dl1), V1, lr, momentum, wd)
            update(b1, db1, v1, lr, momentum, zero)
            update(W2, dW2, V2, lr, momentum, wd)
            update(b2, db2, v2, lr, momentum, zero)
            losses[s] = loss
        return W1, b1, W2, b2, V1, v1, V2, v2, losses

    return chunk


class CudaSGD(FastPath):
    """SGD with momentum as device chunks (see the module's docstring)."""

    name = "cupy-sgd"

    def covers(self, ops: Any, optimizer: Any, input_kind: str, batch_size: int) -> bool:
        return type(optimizer) is SGD and not optimizer.nesterov

    def train_steps(self, ops: Any, optimizer: Any, input_kind: str) -> Callable[..., tuple]:
        chunk = CudaGraphTrainSteps(make_sgd_chunk(ops))
        momentum, wd = ops.scalar(optimizer.momentum), ops.scalar(optimizer.weight_decay)

        def train_steps(params, state, X, Y, order, batch_size, lrs):
            *arrays, losses = chunk(
                *chunk_arguments(params, state),
                X,
                Y,
                order,
                batch_size,
                cupy.asarray(lrs, dtype=ops.dtype),
                momentum,
                wd,
            )
            return (*from_chunk(arrays, state, losses.shape[0]), losses)

        train_steps.chunk = chunk  # the CudaGraphTrainSteps, for its counters
        return train_steps


CUDA_SGD = CudaSGD()
