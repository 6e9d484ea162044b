"""The first layer of a sparse batch as a dense product over its often-nonzero columns
plus a sparse one over the rest, for batches of any size: the kernels behind
:class:`~.batches.RowsBatch`.

MNIST's pixels are ~81% zeros, but not evenly: a digit's middle is often inked, its
border almost never. So the columns of x (the rows of W1) are split by how often they
are nonzero: the "hot" ones, a few hundred, are multiplied densely with BLAS; the rest
hold few nonzeros, which are summed one by one. With W1's rows permuted so the hot ones
come first (``x̂`` the hot columns, ``x̌`` the others)::

    forward    x W1        = x̂ W1[:H] + Σ_((i,v) in x̌_r) v W1[i]      (row r)
    gradient   (xᵀ dl1)[:H] = x̂ᵀ dl1
               (xᵀ dl1)[i]  = Σ_r Σ_((i,v) in x̌_r) v dl1_r           (i >= H)

The dense products run as BLAS calls split over numba's threads
(:func:`~.kernels._threaded_gemm`, BLAS on one thread meanwhile:
:func:`.blas.products_on_numba_threads`), the sparse sums per sample (fused with the
bias and the ReLU) and per range of W1's rows (fused with the momentum step) on the same
threads. The first layer costs about ``H · h`` multiply-adds per sample at BLAS's
speed, plus ``h`` per remaining nonzero.
"""

from __future__ import annotations

import numpy as np
from numba import prange, types
from numba.extending import overload

from .batches import RowsBatch
from .compile import _kernel
from .kernels import _affine_relu, _momentum_rule, _sgd_update_flat, _threaded_gemm

#: Samples whose nonzeros set the split of W1's rows between threads (see :func:`_ranges`).
RANGE_SAMPLES = 64


def _as_float(v, scaled):
    """An input entry as a float of the dtype of ``scaled``: a uint8 pixel ``v`` is
    ``scaled[v]`` (``v / 255``, a table lookup instead of a division), a float is
    itself (compiled code only: the overload below picks the version by type)."""
    raise TypeError("_as_float runs in compiled code only")


@overload(_as_float, inline="always")
def _as_float_overload(v, scaled):
    if v == types.uint8:
        return lambda v, scaled: scaled[v]
    as_float = np.float32 if scaled.dtype == types.float32 else np.float64
    return lambda v, scaled: as_float(v)


@_kernel(inline="always")
def _split_row(X, src, columns, n_hot, scaled, hot, idx, val):
    """Row ``src`` of X split as :class:`~.batches.RowsBatch` holds it: its hot columns
    ``columns[:n_hot]`` to ``hot`` (zeros included), the nonzeros among its other
    columns ``columns[n_hot:]`` to ``idx`` (their positions in ``columns``) and
    ``val``, in floats of the dtype of ``val`` (a uint8 pixel ``v`` as ``scaled[v]``);
    returns how many of those."""
    for q in range(n_hot):
        hot[q] = _as_float(X[src, columns[q]], scaled)
    count = 0
    for q in range(n_hot, columns.shape[0]):
        v = X[src, columns[q]]
        idx[count] = q
        val[count] = _as_float(v, scaled)
        count += v != 0
    return count


@_kernel(inline="always")
def _split_words(words, src, position, n_hot, scaled, hot, idx, val):
    """:func:`_split_row` of uint8 pixels read 8 at a time, as the uint64 ``words`` (n,
    d / 8) of the same memory: an all-zero word is skipped after one test; each pixel
    ``i`` of another word goes to ``hot[position[i]]`` or, past ``n_hot``, to the
    others (whose ``position`` rises with ``i``, so they stay ascending), written
    whether 0 or not and counted only if not: no branch on the pixel's value."""
    hot[:] = 0
    count = 0
    for w0 in range(words.shape[1]):
        word = words[src, w0]
        if word == 0:
            continue
        for b in range(8):
            v = (word >> np.uint64(8 * b)) & np.uint64(255)
            p = position[w0 * 8 + b]
            if p < n_hot:
                hot[p] = scaled[v]
            else:
                idx[count] = p
                val[count] = scaled[v]
                count += v != 0
    return count


@_kernel(parallel=True)
def take_rows(inputs, rows):
    """The rows ``X[rows]`` of a :class:`~.batches.SparseInputs` (uint8 pixels or
    floats) as a :class:`~.batches.RowsBatch`, in its scratch arrays."""
    m = rows.shape[0]
    for r in prange(m):
        _take_row(inputs, rows, np.int64(r))  # one compiled version, whatever prange's type
    n_hot, threads = inputs.n_hot, inputs.threads
    hot, idx, val, counts = inputs.hot, inputs.idx, inputs.val, inputs.counts
    return RowsBatch(hot[:m], idx[:m], val[:m], counts[:m], inputs.X.shape[1], n_hot, threads)


@_kernel
def _take_row(inputs, rows, r):
    """Row ``r`` of :func:`take_rows` (a loop body compiled apart: faster to compile)."""
    X, columns, n_hot, scaled = inputs.X, inputs.columns, inputs.n_hot, inputs.scaled
    hot, idx, val = inputs.hot[r], inputs.idx[r], inputs.val[r]
    if inputs.words.shape[0] > 0:
        count = _split_words(inputs.words, rows[r], inputs.position, n_hot, scaled, hot, idx, val)
    else:
        count = _split_row(X, rows[r], columns, n_hot, scaled, hot, idx, val)
    inputs.counts[r] = count


@_kernel(parallel=True)
def _add_sparse_bias_relu(out, x, W, b):
    """In place: ``out[r] = relu(out[r] + Σ v W[i] + b)`` over the sparse nonzeros
    ``(i, v)`` of each row r of the :class:`~.batches.RowsBatch` x."""
    for r in prange(out.shape[0]):
        _finish_row(out, x, W, b, np.int64(r))


@_kernel(contract=True)
def _finish_row(out, x, W, b, r):
    """Row ``r`` of :func:`_add_sparse_bias_relu`, eight rows of W per pass (a loop
    body compiled apart: faster to compile)."""
    n = W.shape[1]
    ix, vx, end = x.idx[r], x.val[r], x.counts[r]
    acc = out[r].copy()
    k = 0
    while k + 8 <= end:
        i0, i1, i2, i3 = ix[k], ix[k + 1], ix[k + 2], ix[k + 3]
        i4, i5, i6, i7 = ix[k + 4], ix[k + 5], ix[k + 6], ix[k + 7]
        v0, v1, v2, v3 = vx[k], vx[k + 1], vx[k + 2], vx[k + 3]
        v4, v5, v6, v7 = vx[k + 4], vx[k + 5], vx[k + 6], vx[k + 7]
        for j in range(n):
            acc[j] += ((v0 * W[i0, j] + v1 * W[i1, j]) + (v2 * W[i2, j] + v3 * W[i3, j])) + (
                (v4 * W[i4, j] + v5 * W[i5, j]) + (v6 * W[i6, j] + v7 * W[i7, j])
            )
        k += 8
    while k < end:
        i0, v0 = ix[k], vx[k]
        for j in range(n):
            acc[j] += v0 * W[i0, j]
        k += 1
    for j in range(n):
        v = acc[j] + b[j]
        out[r, j] = v if v > 0 else 0


@_kernel
def rows_affine_relu(x, W, b):
    """``relu(x W + b)`` for a :class:`~.batches.RowsBatch` x (m, d), W (d, n) with its
    rows in x's column order and b (n,): BLAS over the hot columns, then the other
    nonzeros, the bias and the ReLU in one parallel pass."""
    m, n, h = x.counts.shape[0], W.shape[1], x.n_hot
    if h > 0:
        out = _threaded_gemm(x.hot, W[:h], False, False, x.threads)
    else:
        out = np.zeros((m, n), W.dtype)
    _add_sparse_bias_relu(out, x, W, b)
    return out


@_kernel(inline="always")
def _first_at_least(ix, end, lo):
    """The first position ``k < end`` with ``ix[k] >= lo`` in ascending ``ix``, else end."""
    a, b = 0, end
    while a < b:
        mid = (a + b) // 2
        if ix[mid] < lo:
            a = mid + 1
        else:
            b = mid
    return a


@_kernel
def _ranges(x, parts):
    """``parts`` ranges of W1's rows ``n_hot:d``, as ``parts + 1`` boundaries, holding
    about equal numbers of the sparse nonzeros of the first :data:`RANGE_SAMPLES`
    samples of x."""
    d, first = x.n_cols, x.n_hot
    per_row = np.zeros(d, np.int64)
    total = 0
    for r in range(min(RANGE_SAMPLES, x.counts.shape[0])):
        for k in range(x.counts[r]):
            per_row[x.idx[r, k]] += 1
        total += x.counts[r]
    bounds = np.full(parts + 1, d, np.int64)
    bounds[0] = first
    t, seen = 1, 0
    for i in range(first, d):
        seen += per_row[i]
        while t < parts and seen * parts >= total * t:
            bounds[t] = i + 1
            t += 1
    return bounds


@_kernel(parallel=True)
def _update_sparse_rows(param, x, d, velocity, lr, momentum, weight_decay):
    """In place: SGD with momentum of the rows ``n_hot:`` of ``param`` with the gradient
    ``xᵀ d`` there, in ``x.threads`` ranges of rows on numba's threads (see
    :func:`_update_range`)."""
    parts = x.threads
    bounds = _ranges(x, parts)
    for t in prange(parts):
        i = np.int64(t)  # int64 whatever prange's index type
        _update_range(param, x, d, velocity, lr, momentum, weight_decay, bounds[i], bounds[i + 1])


@_kernel(contract=True)
def _update_range(param, x, d, velocity, lr, momentum, weight_decay, lo, hi):
    """Rows ``lo:hi`` of :func:`_update_sparse_rows`: row i's gradient sums ``v d[r]``
    over the samples r with a sparse nonzero v in column i, in sample order, then its
    momentum step (a loop body compiled apart: faster to compile)."""
    m, n = d.shape
    grad = np.zeros((hi - lo, n), param.dtype)
    for r in range(m):
        ix, vx, dr = x.idx[r], x.val[r], d[r]
        end = x.counts[r]
        k = _first_at_least(ix, end, lo)
        while k < end and ix[k] < hi:
            g, v = grad[ix[k] - lo], vx[k]
            for j in range(n):
                g[j] += v * dr[j]
            k += 1
    for i in range(lo, hi):
        g = grad[i - lo]
        if weight_decay:
            for j in range(n):
                param[i, j], velocity[i, j] = _momentum_rule(
                    param[i, j], velocity[i, j], g[j] + param[i, j] * weight_decay, lr, momentum
                )
        else:
            for j in range(n):
                param[i, j], velocity[i, j] = _momentum_rule(
                    param[i, j], velocity[i, j], g[j], lr, momentum
                )


@_kernel
def rows_update_outer(param, x, d, velocity, lr, momentum, weight_decay):
    """In place: SGD with momentum of (k, n) ``param`` with the gradient ``xᵀ d`` for a
    :class:`~.batches.RowsBatch` x (m, k) and d (m, n), param's rows in x's column
    order: BLAS for the hot rows, the sparse sums for the others. Returns
    ``(param, velocity)``."""
    h = x.n_hot
    if h > 0:
        _sgd_update_flat(
            param[:h].ravel(),
            _threaded_gemm(x.hot, d, True, False, x.threads).ravel(),
            velocity[:h].ravel(),
            lr,
            momentum,
            weight_decay,
        )
    _update_sparse_rows(param, x, d, velocity, lr, momentum, weight_decay)
    return param, velocity


@overload(_affine_relu, inline="always")
def _affine_relu_of_rows(x, W, b):
    """:func:`~.kernels.affine_relu` of a :class:`~.batches.RowsBatch`:
    :func:`rows_affine_relu`."""
    if getattr(x, "instance_class", None) is RowsBatch:
        return lambda x, W, b: rows_affine_relu(x, W, b)
    return None
