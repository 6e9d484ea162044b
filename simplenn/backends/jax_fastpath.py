"""The JAX backend's fast path: a chunk of training steps as one ``lax.fori_loop``.

The generic path calls a ``jax.jit``-ed step once per batch from Python; this path
compiles the loop itself, so a chunk runs as one call. The loop's body is the generic
path's step (:func:`simplenn.core.network.make_train_step` over the network's
``loss_and_gradients`` and the optimizer's rule through
:func:`simplenn.optim.make_update`), so the math and every optimizer's update stay
written once; only the loop moves into XLA. Each batch is gathered on the device from
the order array (``lax.dynamic_slice`` of ``order``, then the step's ``take`` and
``to_float``), and each step's numbers (the learning rate, Adam's bias corrections) are
computed on the host by :meth:`~simplenn.optim.Optimizer.step_scalars` and handed in
as one array.

Covers every optimizer, pixels and floats, every batch size. The loop runs the chunk's
full batches and is always compiled for :func:`~simplenn.core.training.chunk_samples`
worth of them: the step count is a traced number, and an order of another length is
cut and padded on the host. So a run compiles the loop once per batch size and shape of
the inputs it is handed (an augmented run hands each chunk its distorted rows: a full
chunk's and the last one's); a last batch smaller than ``batch_size`` runs after it as
one compiled step of its own shape.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..core.network import make_train_step, network_functions
from ..optim import OptState, make_update
from .fastpath import FastPath


def make_chunk_loop(step: Callable[..., tuple], traces: list) -> Callable[..., tuple]:
    """``loop(params, slots, X, Y, order, cs, n_steps, batch_size) -> (params, slots,
    losses)``: ``n_steps`` (a traced integer) runs of ``step`` (see
    :func:`~simplenn.core.network.make_train_step`), step ``s`` on the rows
    ``order[s * batch_size : (s + 1) * batch_size]`` with the numbers ``cs[s]``.

    ``order`` (>= n_steps * batch_size,) int64 and ``cs`` (k, m) of the float dtype,
    k >= n_steps; ``losses`` (k,) float64, its first ``n_steps`` entries the steps'
    losses. Appends ``("loop", order.shape, X.shape, batch_size)`` to ``traces`` each
    time JAX traces it (once per compiled shape)."""

    def loop(params, slots, X, Y, order, cs, n_steps, batch_size):
        traces.append(("loop", order.shape, X.shape, batch_size))

        def body(s, carry):
            params, slots, losses = carry
            rows = lax.dynamic_slice_in_dim(order, s * batch_size, batch_size)
            c = tuple(cs[s, j] for j in range(cs.shape[1]))
            params, slots, loss = step(params, slots, X, Y, rows, c)
            return params, slots, losses.at[s].set(loss)

        losses = jnp.zeros(cs.shape[0], jnp.float64)
        return lax.fori_loop(0, n_steps, body, (params, slots, losses))

    return loop


class JaxLoop(FastPath):
    """A chunk of steps as one compiled ``lax.fori_loop`` (see the module's docstring)."""

    name = "jax-loop"

    def covers(self, ops: Any, optimizer: Any, input_kind: str, batch_size: int) -> bool:
        return True

    def train_steps(self, ops: Any, optimizer: Any, input_kind: str) -> Callable[..., tuple]:
        from ..core.training import chunk_samples

        scalar, step_scalars, dtype = ops.scalar, optimizer.step_scalars, ops.dtype
        decayed, plain = (
            ops.jit(optimizer.make_leaf(ops.xp, scalar, dtype, decay)) for decay in (True, False)
        )
        step = make_train_step(
            ops, network_functions(ops).loss_and_gradients, ops.jit(make_update(decayed, plain))
        )
        traces: list = []

        def last_step(params, slots, X, Y, rows, c):
            traces.append(("step", rows.shape, X.shape))
            return step(params, slots, X, Y, rows, c)

        loop = jax.jit(make_chunk_loop(step, traces), static_argnames="batch_size")
        last = jax.jit(last_step)

        def train_steps(params, state, X, Y, order, batch_size, lrs):
            """See :data:`~simplenn.backends.fastpath.TrainSteps`."""
            n = order.shape[0]
            n_full, rest = divmod(n, batch_size)
            n_steps = n_full + (rest > 0)
            if n_steps == 0:
                return params, state, ops.asarray(np.zeros(0), dtype=np.float64)
            cs = np.array(
                [step_scalars(float(lr), state.step + s + 1) for s, lr in enumerate(lrs[:n_steps])],
                dtype=np.float64,
            )
            capacity = chunk_samples(batch_size) // batch_size
            slots = state.slots
            if n == capacity * batch_size:  # a whole chunk: the order as it is
                params, slots, losses = loop(
                    params, slots, X, Y, order, cs.astype(dtype), capacity, batch_size=batch_size
                )
                return params, OptState(state.step + n_steps, slots), losses
            # Other lengths are cut and padded to the compiled shape on the host, where
            # that compiles nothing; the loop stops at each piece's count of steps.
            order_host, losses = ops.to_numpy(order), np.zeros(n_steps)
            for begin in range(0, n_full, capacity):
                count = min(capacity, n_full - begin)
                rows = np.zeros(capacity * batch_size, np.int64)
                rows[: count * batch_size] = order_host[begin * batch_size :][: count * batch_size]
                numbers = np.zeros((capacity, cs.shape[1]), dtype)
                numbers[:count] = cs[begin : begin + count]
                params, slots, piece = loop(
                    params,
                    slots,
                    X,
                    Y,
                    ops.asarray(rows, dtype=np.int64),
                    numbers,
                    count,
                    batch_size=batch_size,
                )
                losses[begin : begin + count] = ops.to_numpy(piece)[:count]
            if rest:
                rows = ops.asarray(order_host[n_full * batch_size :], dtype=np.int64)
                c = tuple(scalar(v) for v in cs[n_full])
                params, slots, loss = last(params, slots, X, Y, rows, c)
                losses[n_full] = ops.to_numpy(loss)
            return params, OptState(state.step + n_steps, slots), ops.asarray(losses, np.float64)

        train_steps.traces = traces  # what JAX traced (compiled), for inspection
        return train_steps


JAX_LOOP = JaxLoop()
