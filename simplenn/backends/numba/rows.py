"""The first layer on each sample's nonzero inputs, for batches of any size, on numba's
threads: the kernels behind :class:`~.batches.RowsBatch` (MNIST's pixels are mostly 0).

For a batch x (m, d) the first layer's two products read only the nonzeros ``(i, v)``
of each row ``x_r``::

    take       x_r = [(i, v) : x[r, i] = v ≠ 0]              per sample, in parallel
    forward    (x W1)_r = Σ_(i,v) v W1[i]                    per sample, in parallel
    update     (xᵀ dl1)[i] = Σ_r Σ_((i,v) in x_r) v dl1_r    per range of W1's rows,
               then SGD with momentum on those rows             in parallel

The forward pass costs ``nnz · h`` multiply-adds per sample instead of ``d · h``, and so
does the weight gradient. Sums over samples run in sample order and each output row is
summed by one thread, so the results are the same for any number of threads. The rest
of the step (the second layer, the loss) is :func:`simplenn.core.network.make_backprop`
over the backend's kernels, its products BLAS's on one thread
(:func:`.blas.products_on_numba_threads`) between these parallel loops.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .batches import RowsBatch, _input_value
from .compile import _kernel
from .kernels import _momentum_rule

#: Samples whose nonzeros set the split of W1's rows between threads (see :func:`_ranges`).
RANGE_SAMPLES = 64


@_kernel(inline="always")
def _nonzeros(X, src, idx, val, like):
    """Write the nonzero entries of row ``src`` of X, columns ascending, to ``idx`` (int32)
    and ``val`` (floats of the dtype of ``like``, see :func:`~.batches._input_value`);
    returns how many. A run of 8 zeros is skipped after one test."""
    d = X.shape[1]
    d8 = d - d % 8
    count = 0
    for i0 in range(0, d8, 8):
        if (
            (X[src, i0] != 0)
            | (X[src, i0 + 1] != 0)
            | (X[src, i0 + 2] != 0)
            | (X[src, i0 + 3] != 0)
            | (X[src, i0 + 4] != 0)
            | (X[src, i0 + 5] != 0)
            | (X[src, i0 + 6] != 0)
            | (X[src, i0 + 7] != 0)
        ):
            for i in range(i0, i0 + 8):
                v = X[src, i]
                idx[count] = i
                val[count] = _input_value(v, like)
                count += v != 0
    for i in range(d8, d):
        v = X[src, i]
        idx[count] = i
        val[count] = _input_value(v, like)
        count += v != 0
    return count


@_kernel(parallel=True)
def take_rows(inputs, rows):
    """The rows ``X[rows]`` of a :class:`~.batches.SparseInputs` (uint8 pixels or
    floats) as a :class:`~.batches.RowsBatch` of the float dtype of its scratch: each
    row's nonzeros written to ``idx[r]``, ``val[r]`` and their number to ``counts[r]``."""
    X, idx, val, counts = inputs.X, inputs.idx, inputs.val, inputs.counts
    m = rows.shape[0]
    for r in prange(m):
        counts[r] = _nonzeros(X, rows[r], idx[r], val[r], val)
    return RowsBatch(idx[:m], val[:m], counts[:m], X.shape[1], inputs.threads)


@_kernel(parallel=True, contract=True)
def rows_matmul(x, W):
    """``x W`` for a :class:`~.batches.RowsBatch` x (m, d) and W (d, n): each row of the
    product sums ``v W[i]`` over its nonzeros, eight rows of W per pass."""
    m, n = x.counts.shape[0], W.shape[1]
    out = np.empty((m, n), W.dtype)
    for r in prange(m):
        ix, vx, end = x.idx[r], x.val[r], x.counts[r]
        acc = np.zeros(n, W.dtype)
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
        out[r] = acc
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
    """``parts`` ranges of W1's rows, as ``parts + 1`` boundaries, holding about equal
    numbers of the nonzeros of the first :data:`RANGE_SAMPLES` samples of x."""
    d = x.n_cols
    per_column = np.zeros(d, np.int64)
    total = 0
    for r in range(min(RANGE_SAMPLES, x.counts.shape[0])):
        for k in range(x.counts[r]):
            per_column[x.idx[r, k]] += 1
        total += x.counts[r]
    bounds = np.full(parts + 1, d, np.int64)
    bounds[0] = 0
    t, seen = 1, 0
    for i in range(d):
        seen += per_column[i]
        while t < parts and seen * parts >= total * t:
            bounds[t] = i + 1
            t += 1
    return bounds


@_kernel(parallel=True, contract=True)
def rows_update_outer(param, x, d, velocity, lr, momentum, weight_decay):
    """In place: SGD with momentum of (k, n) ``param`` with the gradient ``xᵀ d`` for a
    :class:`~.batches.RowsBatch` x (m, k) and d (m, n), split into ``x.threads`` ranges
    of rows on numba's threads; row i's gradient sums ``v d[r]`` over the samples r that
    hold a nonzero v in column i, in sample order. Returns ``(param, velocity)``."""
    m, n = d.shape
    parts = x.threads
    bounds = _ranges(x, parts)
    for t in prange(parts):
        lo, hi = bounds[t], bounds[t + 1]
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
    return param, velocity
