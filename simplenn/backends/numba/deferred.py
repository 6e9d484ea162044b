"""Deferred momentum steps of the first layer's weights, for the SGD fast path.

A sparse batch touches only the rows of W1 of its nonzero input columns; without
weight decay the other rows get gradient 0, a linear map of their ``(w, v)`` that
depends on the step's learning rate only through a sum. Their steps are deferred and
applied ``k`` at once, in closed form, when a batch next touches the row or at the
chunk's last update. The bookkeeping enters a chunk of steps through
:func:`begin_steps` as a :class:`Deferred`; batches taken from it are
:class:`~.batches.DeferredBatch` es that :func:`sgd_update_outer` advances. With
weight decay nothing is deferred: every row is updated at every step.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import types
from numba.extending import overload

from .batches import (
    _LIKE32,
    _LIKE64,
    DeferredBatch,
    DenseInputs,
    RowsBatch,
    SparseInputs,
    ThreadedBatch,
    ThreadedInputs,
    _is_dense,
    _take_batch,
    _take_dense,
)
from .compile import _kernel
from .kernels import (
    _flush_subnormal,
    _gemm,
    _momentum_rule,
    _same_dtype,
    _sgd_update_flat,
    matmul_tn,
)
from .rows import rows_update_outer, take_rows


class Deferred(NamedTuple):
    """The training set ``X`` as a chunk of SGD steps of ``W1`` (velocity ``V1``) reads
    it (from :func:`begin_steps`): the batches taken from it carry the bookkeeping of
    the momentum steps of the rows of W1 that a batch's inputs do not touch.

    Such a row gets gradient 0; its steps are deferred and applied ``k`` at once, in
    closed form, when a batch next touches the row (:func:`take_pixels32` and friends)
    or at the chunk's last update. ``last[i]`` is the step row ``i`` is current at,
    ``clock[0]`` the number of steps taken, ``sums`` and ``decay`` the tables of
    :func:`lazy_rows`; ``enabled`` is false with weight decay, when nothing is deferred.
    """

    X: np.ndarray
    W1: np.ndarray
    V1: np.ndarray
    last: np.ndarray
    clock: np.ndarray
    sums: np.ndarray
    decay: np.ndarray
    enabled: bool


@_kernel
def lazy_rows(param, lrs, momentum):
    """Bookkeeping for deferring the zero-gradient steps of the rows of (k, n) ``param``
    over the next ``len(lrs)`` SGD steps, step ``t`` (1-based) at ``lrs[t - 1]``, without
    weight decay (see :class:`Deferred`).

    A step ``t`` with gradient 0 maps a row's ``(w, v)`` to ``v' = momentum v``,
    ``w' = w - lrs[t - 1] v'``; the ``k`` steps after step ``a`` map it to
    ``v' = momentum^k v``, ``w' = w - S v`` with ``S = Σ_{t=a+1..a+k} lrs[t - 1]
    momentum^(t - a) = sums[a] - momentum^k sums[a + k]``, where ``sums[s] =
    Σ_{t>s} lrs[t - 1] momentum^(t - s)`` (computed backwards, in float64; it stays
    below ``lr momentum / (1 - momentum)``, so the difference loses no more than a few
    float64 ulps). Returns ``(last, clock, sums, decay)``: ``last[i]`` the step row ``i``
    is current at, ``clock[0]`` the number of steps taken, ``decay[k] = momentum^k``.
    """
    n_steps = lrs.shape[0]
    m = np.float64(momentum)
    sums = np.zeros(n_steps + 1, np.float64)
    decay = np.ones(n_steps + 1, np.float64)
    for s in range(n_steps - 1, -1, -1):
        sums[s] = m * (np.float64(lrs[s]) + sums[s + 1])
    for k in range(1, n_steps + 1):
        decay[k] = decay[k - 1] * m
    return np.zeros(param.shape[0], np.int64), np.zeros(1, np.int64), sums, decay


@_kernel(inline="always")
def _catch_up_row(param, velocity, i, start, owed, sums, decay):
    """Apply the ``owed`` zero-gradient steps after step ``start`` to row ``i`` at once
    (see :func:`lazy_rows`), a velocity below the smallest normal number becoming 0 as
    in :func:`_momentum_rule`."""
    b = _same_dtype(-(sums[start] - decay[owed] * sums[start + owed]), param)
    d = _same_dtype(decay[owed], param)
    for j in range(param.shape[1]):
        w, v = param[i, j], velocity[i, j]
        param[i, j] = w + b * v
        velocity[i, j] = _flush_subnormal(d * v)


@_kernel
def catch_up(param, velocity, last, clock, sums, decay):
    """In place: bring every row of ``param`` and ``velocity`` up to date."""
    now = clock[0]
    for i in range(param.shape[0]):
        if last[i] != now:
            _catch_up_row(param, velocity, i, last[i], now - last[i], sums, decay)
            last[i] = now


def _begin(X, W1, V1, lrs, momentum, weight_decay):
    """:func:`begin_steps` (compiled code only: the overload below picks the version by
    the type of X)."""
    raise TypeError("_begin runs in compiled code only")


@overload(_begin, inline="always")
def _begin_overload(X, W1, V1, lrs, momentum, weight_decay):
    # large batches: nothing deferred
    if getattr(X, "instance_class", None) in (DenseInputs, ThreadedInputs, SparseInputs):
        return lambda X, W1, V1, lrs, momentum, weight_decay: X

    def deferred(X, W1, V1, lrs, momentum, weight_decay):
        last, clock, sums, decay = lazy_rows(W1, lrs, momentum)
        return Deferred(X, W1, V1, last, clock, sums, decay, weight_decay == 0)

    return deferred


@_kernel(inline="always")
def begin_steps(X, W1, V1, lrs, momentum, weight_decay):
    """X as the next ``len(lrs)`` SGD steps of W1 read it: a :class:`Deferred`, or a
    :class:`~.batches.DenseInputs` or :class:`~.batches.ThreadedInputs` as it is."""
    return _begin(X, W1, V1, lrs, momentum, weight_decay)


@_kernel(inline="always")
def _catch_up_batch(param, velocity, batch, last, clock, sums, decay):
    """In place: bring up to date the rows of ``param`` that a forward pass of ``batch``
    reads: those of its touched columns when it is sparse, else all of them."""
    if _is_dense(batch):
        catch_up(param, velocity, last, clock, sums, decay)
        return
    now = clock[0]
    touched = batch.touched  # once: each read of a tuple's array updates its refcount
    for t in range(touched.shape[0]):
        i = touched[t]
        if last[i] != now:
            _catch_up_row(param, velocity, i, last[i], now - last[i], sums, decay)
            last[i] = now


def _update_outer(param, x, d, velocity, lr, momentum, weight_decay):
    """:func:`sgd_update_outer` (compiled code only: the overload below picks the
    version by the type of x, so an array x compiles BLAS's path alone)."""
    raise TypeError("_update_outer runs in compiled code only")


@overload(_update_outer, inline="always")
def _update_outer_overload(param, x, d, velocity, lr, momentum, weight_decay):
    if isinstance(x, types.Array):

        def dense(param, x, d, velocity, lr, momentum, weight_decay):
            _sgd_update_flat(
                param.ravel(),
                _gemm(x, d, True, False).ravel(),
                velocity.ravel(),
                lr,
                momentum,
                weight_decay,
            )
            return param, velocity

        return dense
    if getattr(x, "instance_class", None) is DeferredBatch:
        return lambda param, x, d, velocity, lr, momentum, weight_decay: _update_outer_deferred(
            param, x, d, velocity, lr, momentum, weight_decay
        )
    if getattr(x, "instance_class", None) is RowsBatch:
        return lambda param, x, d, velocity, lr, momentum, weight_decay: rows_update_outer(
            param, x, d, velocity, lr, momentum, weight_decay
        )

    def batch(param, x, d, velocity, lr, momentum, weight_decay):  # nothing deferred
        _sgd_update_flat(
            param.ravel(), matmul_tn(x, d).ravel(), velocity.ravel(), lr, momentum, weight_decay
        )
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
    batch, last, clock, sums, decay = x.batch, x.last, x.clock, x.sums, x.decay
    if not x.enabled or _is_dense(batch):  # weight decay, or a dense batch: every row
        _sgd_update_flat(
            param.ravel(), matmul_tn(batch, d).ravel(), velocity.ravel(), lr, momentum, weight_decay
        )
        clock[0] += 1
        last[:] = clock[0]
        return param, velocity
    # deferring: no weight decay, every untouched row's gradient is 0
    n = d.shape[1]
    touched, col_start, col_rows, col_values = (
        batch.touched,
        batch.col_start,
        batch.col_rows,
        batch.col_values,
    )
    g = np.empty(n, d.dtype)
    now = clock[0] + 1
    # Plain 2-D indexing, no row views or calls: the j loops vectorise.
    for t in range(touched.shape[0]):
        i = touched[t]
        first, end = col_start[t], col_start[t + 1]
        r, a = col_rows[first], col_values[first]
        if end - first == 1:  # one nonzero input: g = a d[r], folded into the update
            for j in range(n):
                param[i, j], velocity[i, j] = _momentum_rule(
                    param[i, j], velocity[i, j], a * d[r, j], lr, momentum
                )
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
        for j in range(n):
            param[i, j], velocity[i, j] = _momentum_rule(
                param[i, j], velocity[i, j], g[j], lr, momentum
            )
        last[i] = now
    clock[0] = now
    if now == sums.shape[0] - 1:  # the chunk's last step: nothing stays owed
        catch_up(param, velocity, last, clock, sums, decay)
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
    if getattr(X, "instance_class", None) is SparseInputs:
        return lambda X, rows, like: take_rows(X, rows)

    def take_deferred(X, rows, like):
        batch = _take_batch(X.X, rows, like)
        _catch_up_batch(X.W1, X.V1, batch, X.last, X.clock, X.sums, X.decay)
        return DeferredBatch(batch, X.last, X.clock, X.sums, X.decay, X.enabled)

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
