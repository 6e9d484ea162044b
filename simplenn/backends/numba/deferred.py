"""Deferred momentum steps of the first layer's weights.

A sparse batch touches only the rows of W1 of its nonzero input columns; the other
rows get gradient 0 (plus weight decay), a fixed linear map of their ``(w, v)``. Their
steps are deferred and applied ``k`` at once, in closed form, when a batch next touches
the row or at the chunk's last update. The bookkeeping enters a chunk of steps through
the interface's optional hook, ``begin_steps``, as a :class:`Deferred`; batches taken
from it are :class:`~.batches.DeferredBatch` es that :func:`sgd_update_outer` advances.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import types
from numba.extending import overload

from .batches import (
    _LIKE32, _LIKE64, DeferredBatch, DenseInputs, ThreadedBatch, ThreadedInputs, _is_dense,
    _take_batch, _take_dense,
)
from .compile import _kernel
from .kernels import _flush_subnormal, _gemm, _momentum_rule, _sgd_update_flat, matmul_tn


class Deferred(NamedTuple):
    """The training set ``X`` as a chunk of SGD steps of ``W1`` (velocity ``V1``) reads
    it (from :func:`begin_steps`): the batches taken from it carry the bookkeeping of
    the momentum steps of the rows of W1 that a batch's inputs do not touch.

    Such a row gets gradient 0 (plus weight decay), a fixed linear map of its
    ``(w, v)``; its steps are deferred and applied ``k`` at once, in closed form, when
    a batch next touches the row (:func:`take_pixels32` and friends) or at the chunk's
    last update. ``last[i]`` is the step row ``i`` is current at, ``clock[0]`` the
    number of steps taken, ``powers[k]`` the map of ``k`` steps (see :func:`lazy_rows`).
    """

    X: np.ndarray
    W1: np.ndarray
    V1: np.ndarray
    last: np.ndarray
    clock: np.ndarray
    powers: np.ndarray



@_kernel
def lazy_rows(param, n_steps, lr, momentum, weight_decay):
    """Bookkeeping for deferring the zero-gradient steps of the rows of (k, n) ``param``
    over the next ``n_steps`` SGD steps (see :class:`Deferred`).

    A step with gradient 0 maps a row's ``(w, v)`` linearly: ``v' = momentum v +
    weight_decay w``, ``w' = w - lr v'``, i.e. ``(w', v') = A (w, v)`` with ``A =
    [[1 - lr wd, -lr momentum], [wd, momentum]]``; ``powers[k]`` holds ``A^k`` (computed
    in float64, stored in the parameters' dtype, as ``a, b, c, d`` of ``[[a, b], [c,
    d]]``), so ``k`` owed steps cost one pass over the row. Returns ``(last, clock,
    powers)``: ``last[i]`` is the step row ``i`` is current at, ``clock[0]`` the number
    of steps taken.
    """
    k = param.shape[0]
    powers = np.empty((n_steps + 1, 4), np.float64)
    a00 = 1.0 - np.float64(lr) * np.float64(weight_decay)
    a01 = -np.float64(lr) * np.float64(momentum)
    a10, a11 = np.float64(weight_decay), np.float64(momentum)
    powers[0, 0], powers[0, 1], powers[0, 2], powers[0, 3] = 1.0, 0.0, 0.0, 1.0
    for s in range(1, n_steps + 1):
        a, b, c, d = powers[s - 1, 0], powers[s - 1, 1], powers[s - 1, 2], powers[s - 1, 3]
        powers[s, 0] = a00 * a + a01 * c
        powers[s, 1] = a00 * b + a01 * d
        powers[s, 2] = a10 * a + a11 * c
        powers[s, 3] = a10 * b + a11 * d
    rounded = np.empty((n_steps + 1, 4), param.dtype)
    for s in range(n_steps + 1):  # a loop, not rounded[:] = powers: a sixth the compile
        for j in range(4):
            rounded[s, j] = powers[s, j]
    return np.zeros(k, np.int64), np.zeros(1, np.int64), rounded


@_kernel(inline="always")
def _catch_up_row(param, velocity, i, owed, powers):
    """Apply ``owed`` zero-gradient steps to row ``i`` at once: ``(w, v) <- A^owed (w, v)``,
    a velocity below the smallest normal number becoming 0 as in :func:`_momentum_rule`."""
    a, b, c, d = powers[owed, 0], powers[owed, 1], powers[owed, 2], powers[owed, 3]
    for j in range(param.shape[1]):
        w, v = param[i, j], velocity[i, j]
        param[i, j] = a * w + b * v
        velocity[i, j] = _flush_subnormal(c * w + d * v)


@_kernel
def catch_up(param, velocity, lazy):
    """In place: bring every row of ``param`` and ``velocity`` up to date."""
    last, clock, powers = lazy
    now = clock[0]
    for i in range(param.shape[0]):
        if last[i] != now:
            _catch_up_row(param, velocity, i, now - last[i], powers)
            last[i] = now


def _begin(X, W1, V1, n_steps, lr, momentum, weight_decay):
    """:func:`begin_steps` (compiled code only: the overload below picks the version by
    the type of X)."""
    raise TypeError("_begin runs in compiled code only")


@overload(_begin, inline="always")
def _begin_overload(X, W1, V1, n_steps, lr, momentum, weight_decay):
    # large batches: nothing deferred
    if getattr(X, "instance_class", None) in (DenseInputs, ThreadedInputs):
        return lambda X, W1, V1, n_steps, lr, momentum, weight_decay: X

    def deferred(X, W1, V1, n_steps, lr, momentum, weight_decay):
        last, clock, powers = lazy_rows(W1, n_steps, lr, momentum, weight_decay)
        return Deferred(X, W1, V1, last, clock, powers)

    return deferred


@_kernel(inline="always")
def begin_steps(X, W1, V1, n_steps, lr, momentum, weight_decay):
    """X as the next ``n_steps`` SGD steps of W1 read it (see ``Ops.begin_steps``): a
    :class:`Deferred`, or a :class:`~.batches.DenseInputs` or
    :class:`~.batches.ThreadedInputs` as it is."""
    return _begin(X, W1, V1, n_steps, lr, momentum, weight_decay)


@_kernel(inline="always")
def _catch_up_batch(param, velocity, batch, last, clock, powers):
    """In place: bring up to date the rows of ``param`` that a forward pass of ``batch``
    reads: those of its touched columns when it is sparse, else all of them."""
    if _is_dense(batch):
        catch_up(param, velocity, (last, clock, powers))
        return
    now = clock[0]
    touched = batch.touched  # once: each read of a tuple's array updates its refcount
    for t in range(touched.shape[0]):
        i = touched[t]
        if last[i] != now:
            _catch_up_row(param, velocity, i, now - last[i], powers)
            last[i] = now


def _update_outer(param, x, d, velocity, lr, momentum, weight_decay):
    """:func:`sgd_update_outer` (compiled code only: the overload below picks the
    version by the type of x, so an array x compiles BLAS's path alone)."""
    raise TypeError("_update_outer runs in compiled code only")


@overload(_update_outer, inline="always")
def _update_outer_overload(param, x, d, velocity, lr, momentum, weight_decay):
    if isinstance(x, types.Array):
        def dense(param, x, d, velocity, lr, momentum, weight_decay):
            _sgd_update_flat(param.ravel(), _gemm(x, d, True, False).ravel(),
                             velocity.ravel(), lr, momentum, weight_decay)
            return param, velocity

        return dense
    if getattr(x, "instance_class", None) is DeferredBatch:
        return lambda param, x, d, velocity, lr, momentum, weight_decay: _update_outer_deferred(
            param, x, d, velocity, lr, momentum, weight_decay)

    def batch(param, x, d, velocity, lr, momentum, weight_decay):  # nothing deferred
        _sgd_update_flat(param.ravel(), matmul_tn(x, d).ravel(), velocity.ravel(), lr,
                         momentum, weight_decay)
        return param, velocity

    return batch


@_kernel(inline="always")
def sgd_update_outer(param, x, d, velocity, lr, momentum, weight_decay):
    """In place: :func:`sgd_update` of (k, n) ``param`` with the gradient ``xᵀ d``;
    returns ``(param, velocity)``.

    For a sparse :class:`Batch` x (m, k) that carries deferred steps the gradient is
    never formed: each touched row ``param[i]`` is updated with ``g = Σ_r x[r, i] d[r]``
    over the nonzeros of column i (rows in order), so ``param`` and ``velocity`` are
    walked once and no (k, n) array is allocated; the rows of columns with no nonzero
    are skipped and owe this step (see :class:`Deferred`); the chunk's last step
    applies every owed step. Otherwise ``xᵀ d`` is formed (BLAS when x is dense) and
    every row is updated.
    """
    return _update_outer(param, x, d, velocity, lr, momentum, weight_decay)


@_kernel(inline="always")
def _update_outer_deferred(param, x, d, velocity, lr, momentum, weight_decay):
    """:func:`sgd_update_outer` of a :class:`DeferredBatch` x."""
    batch, last, clock, powers = x.batch, x.last, x.clock, x.powers
    if _is_dense(batch):
        _sgd_update_flat(param.ravel(), _gemm(batch.dense, d, True, False).ravel(),
                         velocity.ravel(), lr, momentum, weight_decay)
        clock[0] += 1
        last[:] = clock[0]
        return param, velocity
    n = d.shape[1]
    touched, col_start, col_rows, col_values = (batch.touched, batch.col_start,
                                                batch.col_rows, batch.col_values)
    g = np.empty(n, d.dtype)
    now = clock[0] + 1
    # Plain 2-D indexing, no row views or calls: the j loops vectorise.
    for t in range(touched.shape[0]):
        i = touched[t]
        first, end = col_start[t], col_start[t + 1]
        r, a = col_rows[first], col_values[first]
        if end - first == 1:  # one nonzero input: g = a d[r], folded into the update
            if weight_decay:
                for j in range(n):
                    param[i, j], velocity[i, j] = _momentum_rule(
                        param[i, j], velocity[i, j], a * d[r, j] + param[i, j] * weight_decay,
                        lr, momentum)
            else:
                for j in range(n):
                    param[i, j], velocity[i, j] = _momentum_rule(
                        param[i, j], velocity[i, j], a * d[r, j], lr, momentum)
            last[i] = now
            continue
        for j in range(n):
            g[j] = a * d[r, j]
        k = first + 1
        while k + 4 <= end:  # four rows of d per pass over g
            r0, r1, r2, r3 = col_rows[k], col_rows[k + 1], col_rows[k + 2], col_rows[k + 3]
            a0, a1, a2, a3 = col_values[k], col_values[k + 1], col_values[k + 2], col_values[k + 3]
            for j in range(n):
                g[j] += (a0 * d[r0, j] + a1 * d[r1, j]) + (a2 * d[r2, j] + a3 * d[r3, j])
            k += 4
        while k < end:
            r, a = col_rows[k], col_values[k]
            for j in range(n):
                g[j] += a * d[r, j]
            k += 1
        if weight_decay:
            for j in range(n):
                param[i, j], velocity[i, j] = _momentum_rule(
                    param[i, j], velocity[i, j], g[j] + param[i, j] * weight_decay, lr,
                    momentum)
        else:
            for j in range(n):
                param[i, j], velocity[i, j] = _momentum_rule(
                    param[i, j], velocity[i, j], g[j], lr, momentum)
        last[i] = now
    clock[0] = now
    if now == powers.shape[0] - 1:  # the chunk's last step: nothing stays owed
        catch_up(param, velocity, (last, clock, powers))
    return param, velocity


def _take(X, rows, like):
    """Rows ``X[rows]`` as a :class:`Batch` (see :func:`_take_batch`); from a
    :class:`Deferred`, the rows of W1 the batch reads are first brought up to date and
    the result is a :class:`DeferredBatch`; from a :class:`DenseInputs`, an (m, d) array
    (compiled code only: the overload below picks the version by the type of X)."""
    raise TypeError("_take runs in compiled code only")


@overload(_take, inline="always")
def _take_overload(X, rows, like):
    if isinstance(X, types.Array):
        return lambda X, rows, like: _take_batch(X, rows, like)
    if getattr(X, "instance_class", None) is DenseInputs:
        return lambda X, rows, like: _take_dense(X.X, rows, like)
    if getattr(X, "instance_class", None) is ThreadedInputs:
        return lambda X, rows, like: ThreadedBatch(_take_dense(X.X, rows, like), X.threads)

    def take_deferred(X, rows, like):
        batch = _take_batch(X.X, rows, like)
        _catch_up_batch(X.W1, X.V1, batch, X.last, X.clock, X.powers)
        return DeferredBatch(batch, X.last, X.clock, X.powers)

    return take_deferred


@_kernel(inline="always")
def take_pixels32(X, rows):
    """Rows ``X[rows]`` of (n, d) uint8 pixels (an array, a :class:`Deferred` or a
    :class:`DenseInputs`) as a :class:`Batch` (a :class:`DeferredBatch` from a
    :class:`Deferred`, an array from a :class:`DenseInputs`) of float32 ``x / 255``."""
    return _take(X, rows, _LIKE32)


@_kernel(inline="always")
def take_pixels64(X, rows):
    """Rows ``X[rows]`` of (n, d) uint8 pixels as a :class:`Batch` of float64 ``x / 255``."""
    return _take(X, rows, _LIKE64)


@_kernel(inline="always")
def take_floats32(X, rows):
    """Rows ``X[rows]`` of (n, d) floats as a :class:`Batch` of float32."""
    return _take(X, rows, _LIKE32)


@_kernel(inline="always")
def take_floats64(X, rows):
    """Rows ``X[rows]`` of (n, d) floats as a :class:`Batch` of float64."""
    return _take(X, rows, _LIKE64)

