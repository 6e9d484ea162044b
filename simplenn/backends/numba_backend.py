"""The Numba backend: the network's ops as ``@njit`` kernels, and the training loop compiled.

Every op the network math in :mod:`simplenn.core.network` uses is a module-level
``@njit`` dispatcher here, set as an attribute of :class:`NumbaOps`; the network's
``make_*`` factories close over those dispatchers and :meth:`NumbaOps.jit` compiles
the closures, so a whole chunk of SGD steps (``train_steps``) runs as machine code
built from the one definition of the math. Matrix products call NumPy's own BLAS
from compiled code (see :mod:`.numba_blas`) -- never under ``parallel=True``, which
makes OpenMP and OpenBLAS threads fight.

Sparse batches: MNIST pixels are ~81% zeros. A training batch of at most
``SPARSE_MAX_ROWS`` rows, at most half nonzero, is a :class:`Batch` holding only its
nonzeros, by row (CSR) and by column (CSC). The first-layer product ``x W1`` sums
rows of W1 over each row's nonzeros; the weight gradient ``xᵀ dl1`` is never formed:
each row of W1 whose input column has a nonzero is updated with its gradient summed
over that column's nonzeros (:func:`sgd_update_outer`); the rows of all-zero columns
are not visited at all: their momentum steps are deferred and applied in closed form
when the row is next read. That bookkeeping enters a chunk of steps through the
interface's one optional hook, ``begin_steps`` (see :class:`Deferred`). Larger or
denser batches are dense and their products are BLAS's. Ops that read x take an
array as a dense batch.

Compilation is cached on disk (``cache=True``) unless ``SIMPLENN_NUMBA_CACHE=0``.
Numba keys the cache of a closure on the pickled contents of its cells, which for
captured dispatchers include a random per-process UUID (numba issue #6264), so
closures would recompile in every process; :func:`_set_stable_uuid` gives every
dispatcher here a UUID derived from its code instead, which makes the compiled
closures cacheable and invalidates them when any kernel's source changes.
"""

from __future__ import annotations

import hashlib
import marshal
import os
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numba
import numpy as np
from numba import njit, types
from numba.extending import overload

from . import numba_blas
from .numpy_backend import NumpyOps

#: ``SIMPLENN_NUMBA_CACHE=0`` turns numba's on-disk compilation cache off.
CACHE_ENV_VAR = "SIMPLENN_NUMBA_CACHE"
CACHE = os.environ.get(CACHE_ENV_VAR, "1").strip() not in ("0", "false", "no", "off")

#: A training batch (``take_pixels``, ``take_floats``) is sparse -- its first-layer
#: products walk only its nonzeros, and the rows of W1 of its all-zero columns defer
#: their update -- when it has at most this many rows ... Side by side with the
#: dense path (float32 MNIST, scripts/ab_throughput.py), at 32 rows the sparse one was
#: 0.91x at hidden 128 and 1.14x at 512 (at 24: 1.05x and 1.36x), and across runs
#: the sparse path varied about 10% where two-thread BLAS at batch 32 varied 2x (see
#: the README); the batch is made before the width is known.
SPARSE_MAX_ROWS = 32
#: ... and at most this fraction of its entries is nonzero; otherwise it is dense
#: and the products are BLAS's.
SPARSE_MAX_DENSITY = 0.5

#: Which BLAS the kernels' matrix products reach, in words (see :mod:`.numba_blas`).
BLAS = numba_blas.register()

_SOURCE_HASH = hashlib.sha256(
    Path(__file__).read_bytes() + numba.__version__.encode()).hexdigest()


def _set_stable_uuid(dispatcher: Any, content: str) -> None:
    """Give ``dispatcher`` a UUID that is a hash of ``content`` (its code), so that
    closures capturing it hash the same in every process and can be cached.

    Uses numba's private ``_set_uuid``; without it (a future numba) nothing
    changes except that closures recompile in each process.
    """
    setter = getattr(dispatcher, "_set_uuid", None)
    if setter is not None:
        setter("simplenn-" + hashlib.sha256(content.encode()).hexdigest())


def _kernel(fn: Callable | None = None, *, inline: str = "never") -> Any:
    """``@njit`` a module-level function (cached unless disabled), with a stable UUID.

    Every njit function of this module needs one: closures pickle the kernels they
    capture by value, and with them the helpers those kernels call. ``inline="always"``
    is for helpers called in hot loops: a call that passes arrays updates their
    reference counts, an inlined body does not."""
    if fn is None:
        return lambda f: _kernel(f, inline=inline)
    dispatcher = njit(cache=CACHE, inline=inline)(fn)
    _set_stable_uuid(dispatcher, f"{_SOURCE_HASH}:{fn.__qualname__}")
    return dispatcher


# --------------------------------------------------------------------------------------
# Batches of inputs. The first layer's products read x through a Batch, which is a
# sparse x in both compressed forms, or a dense x as it is.
# --------------------------------------------------------------------------------------
class Batch(NamedTuple):
    """A batch of inputs x (m, d), as the kernels that read x take it.

    Sparse (``dense`` is an empty (0, d) array): row ``r``'s nonzeros are
    ``values[indptr[r]:indptr[r + 1]]`` in the columns ``indices[...]`` (CSR, columns
    ascending; ``indices`` may be longer than ``indptr[m]``);
    ``touched`` lists the columns holding a nonzero, ascending, and column
    ``touched[t]``'s nonzeros are ``col_values[col_start[t]:col_start[t + 1]]`` in the
    rows ``col_rows[...]`` (CSC over the touched columns, rows ascending). Dense:
    ``dense`` is x itself and the other arrays are not read (a batch of no rows counts
    as dense). Indices are int32 (positions int64), values in the float dtype of x.
    """

    n_rows: int
    dense: np.ndarray
    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    touched: np.ndarray
    col_start: np.ndarray
    col_rows: np.ndarray
    col_values: np.ndarray


class DeferredBatch(NamedTuple):
    """A :class:`Batch` taken from a :class:`Deferred`, with the chunk's deferred
    first-layer steps, which :func:`sgd_update_outer` advances."""

    batch: Batch
    last: np.ndarray
    clock: np.ndarray
    powers: np.ndarray


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


@_kernel(inline="always")
def _dense_batch(x):
    """x (m, d) as a dense :class:`Batch`."""
    no_ints, no_values = np.zeros(1, np.int64), np.zeros(0, x.dtype)
    return Batch(x.shape[0], x, no_ints, no_ints.astype(np.int32), no_values,
                 no_ints.astype(np.int32), no_ints, no_ints.astype(np.int32), no_values)


def _as_batch(x):
    """x as a :class:`Batch`: a Batch as it is, a :class:`DeferredBatch`'s batch, an
    array as a dense Batch (compiled code only: the overload below picks the version by
    the type of x)."""
    raise TypeError("_as_batch runs in compiled code only")


@overload(_as_batch, inline="always")
def _as_batch_overload(x):
    if isinstance(x, types.Array):
        return lambda x: _dense_batch(x)
    if getattr(x, "instance_class", None) is DeferredBatch:
        return lambda x: x.batch
    return lambda x: x


@_kernel
def batch_to_dense(batch):
    """The (m, d) array a :class:`Batch` or :class:`DeferredBatch` holds (a copy)."""
    x = _as_batch(batch)
    if _is_dense(x):
        return x.dense.copy()
    out = np.zeros((x.n_rows, x.dense.shape[1]), x.values.dtype)
    for r in range(x.n_rows):
        for k in range(x.indptr[r], x.indptr[r + 1]):
            out[r, x.indices[k]] = x.values[k]
    return out


@_kernel(inline="always")
def _is_dense(x):
    """Whether the Batch x holds x itself (else its nonzeros)."""
    return x.dense.shape[0] == x.n_rows


def _input_value(v, like):
    """One input entry as a float of the dtype of the array ``like``: a uint8 pixel
    ``v`` is ``v / 255`` (rounded as NumPy rounds ``x.astype(dtype) / 255``), any other
    number is ``v`` (compiled code only: the overload below picks the version by type)."""
    raise TypeError("_input_value runs in compiled code only")


@overload(_input_value, inline="always")
def _input_value_overload(v, like):
    if v == types.uint8:
        as_float = np.float32 if like.dtype == types.float32 else np.float64
        scale = as_float(255)
        return lambda v, like: as_float(v) / scale
    return lambda v, like: v


@_kernel
def _take_dense(X, rows, like):
    """Rows ``X[rows]`` of uint8 pixels or floats as (m, d) floats of the dtype of
    ``like`` (see :func:`_input_value`), in one pass."""
    m, d = rows.shape[0], X.shape[1]
    out = np.empty((m, d), like.dtype)
    for r in range(m):
        src = rows[r]
        for i in range(d):
            out[r, i] = _input_value(X[src, i], like)
    return out


@_kernel
def _take_batch(X, rows, like):
    """Rows ``X[rows]`` as a :class:`Batch` of floats of the dtype of ``like`` (see
    :func:`_input_value`): sparse when at most ``SPARSE_MAX_ROWS`` rows and
    ``SPARSE_MAX_DENSITY`` of the entries are nonzero, else dense."""
    m, d = rows.shape[0], X.shape[1]
    if m > SPARSE_MAX_ROWS:
        return _dense_batch(_take_dense(X, rows, like))
    indptr = np.empty(m + 1, np.int64)
    indices = np.empty(m * d, np.int32)
    raw = np.empty(m * d, X.dtype)
    nnz = 0
    indptr[0] = 0
    d8 = d - d % 8
    for r in range(m):
        src = rows[r]
        # A run of 8 zeros (MNIST's borders) is skipped after one test; inside a run
        # every entry is written and the count steps past the nonzero ones.
        for i0 in range(0, d8, 8):
            if ((X[src, i0] != 0) | (X[src, i0 + 1] != 0) | (X[src, i0 + 2] != 0)
                    | (X[src, i0 + 3] != 0) | (X[src, i0 + 4] != 0) | (X[src, i0 + 5] != 0)
                    | (X[src, i0 + 6] != 0) | (X[src, i0 + 7] != 0)):
                for i in range(i0, i0 + 8):
                    v = X[src, i]
                    indices[nnz] = i
                    raw[nnz] = v
                    nnz += v != 0
        for i in range(d8, d):
            v = X[src, i]
            indices[nnz] = i
            raw[nnz] = v
            nnz += v != 0
        indptr[r + 1] = nnz
    if nnz > SPARSE_MAX_DENSITY * m * d:
        return _dense_batch(_take_dense(X, rows, like))
    values = np.empty(nnz, like.dtype)
    for k in range(nnz):
        values[k] = _input_value(raw[k], like)
    return _sparse_batch(d, indptr, indices, values)


@_kernel(inline="always")
def _sparse_batch(d, indptr, indices, values):
    """The sparse :class:`Batch` of the CSR arrays of an (m, d) x: adds the touched
    columns and the CSC over them (a counting sort of the nonzeros by column)."""
    m = indptr.shape[0] - 1
    nnz = indptr[m]
    if m == 1:  # one row: its nonzeros are the touched columns, one entry each
        return Batch(m, np.empty((0, d), values.dtype), indptr, indices, values,
                     indices[:nnz].copy(), np.arange(nnz + 1), np.zeros(nnz, np.int32), values)
    position = np.zeros(d, np.int64)  # the count of each column, then where it fills
    for k in range(nnz):
        position[indices[k]] += 1
    n_touched = 0
    for i in range(d):
        n_touched += position[i] != 0
    touched = np.empty(n_touched, np.int32)
    col_start = np.empty(n_touched + 1, np.int64)
    t = 0
    filled = 0
    for i in range(d):
        count = position[i]
        if count != 0:
            touched[t] = i
            col_start[t] = filled
            position[i] = filled
            filled += count
            t += 1
    col_start[n_touched] = nnz
    col_rows = np.empty(nnz, np.int32)
    col_values = np.empty(nnz, values.dtype)
    for r in range(m):
        for k in range(indptr[r], indptr[r + 1]):
            i = indices[k]
            p = position[i]
            col_rows[p] = r
            col_values[p] = values[k]
            position[i] = p + 1
    return Batch(m, np.empty((0, d), values.dtype), indptr, indices, values, touched,
                 col_start, col_rows, col_values)


# --------------------------------------------------------------------------------------
# Kernels. Shapes and dtypes as in simplenn.backends.base.Ops; all arrays C-contiguous.
# --------------------------------------------------------------------------------------
@_kernel
def _same_dtype(value, like):
    """``value`` as a scalar of the dtype of array ``like`` (numba promotes int/float64).
    It allocates: call it once per kernel call, not in a loop."""
    out = np.empty(1, like.dtype)
    out[0] = value
    return out[0]


@_kernel
def _gemm(a, b, trans_a, trans_b):
    """``op(a) op(b)`` with BLAS (see :mod:`.numba_blas`), ``op`` transposing where
    asked; a and b are 2-D arrays of one float dtype, made C-contiguous if they are not."""
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    m, k = (a.shape[1], a.shape[0]) if trans_a else (a.shape[0], a.shape[1])
    n = b.shape[0] if trans_b else b.shape[1]
    if m == 0 or n == 0 or k == 0:
        return np.zeros((m, n), a.dtype)
    out = np.empty((m, n), a.dtype)
    ta = numba_blas.TRANS if trans_a else numba_blas.NO_TRANS
    tb = numba_blas.TRANS if trans_b else numba_blas.NO_TRANS
    # numba_blas.sgemm, not a module global of its own here: kernels pickle their
    # globals into closures' cache keys, and numba types pickle differently per process.
    if a.itemsize == 4:
        numba_blas.sgemm(numba_blas.ROW_MAJOR, ta, tb, m, n, k, np.float32(1),
                         a.ctypes.data, a.shape[1], b.ctypes.data, b.shape[1],
                         np.float32(0), out.ctypes.data, n)
    else:
        numba_blas.dgemm(numba_blas.ROW_MAJOR, ta, tb, m, n, k, 1.0, a.ctypes.data,
                         a.shape[1], b.ctypes.data, b.shape[1], 0.0, out.ctypes.data, n)
    return out


@_kernel(inline="always")
def _sparse_matmul(x, W):
    """``x W`` for a sparse Batch x (m, k) and W (k, n): each row of the product sums
    ``x[r, i] W[i]`` over the nonzeros of row r, four rows of W per pass over it."""
    m, n = x.n_rows, W.shape[1]
    indptr, indices, values = x.indptr, x.indices, x.values
    out = np.zeros((m, n), W.dtype)
    for r in range(m):
        k, end = indptr[r], indptr[r + 1]
        while k + 4 <= end:
            i0, i1, i2, i3 = indices[k], indices[k + 1], indices[k + 2], indices[k + 3]
            v0, v1, v2, v3 = values[k], values[k + 1], values[k + 2], values[k + 3]
            for j in range(n):
                out[r, j] += (v0 * W[i0, j] + v1 * W[i1, j]) + (v2 * W[i2, j] + v3 * W[i3, j])
            k += 4
        while k < end:
            i, v = indices[k], values[k]
            for j in range(n):
                out[r, j] += v * W[i, j]
            k += 1
    return out


@_kernel(inline="always")
def matmul(a, b):
    """``a @ b``: (m, k) x (k, n) -> (m, n); ``a`` an array or a :class:`Batch`, whose
    nonzeros alone are summed when it is sparse."""
    x = _as_batch(a)
    if _is_dense(x):
        return _gemm(x.dense, b, False, False)
    return _sparse_matmul(x, b)


@_kernel
def matmul_tn(a, b):
    """``aᵀ @ b``: (k, m) x (k, n) -> (m, n); ``a`` an array or a :class:`Batch`, whose
    nonzeros alone are summed (column by column, rows in order) when it is sparse."""
    x = _as_batch(a)
    if _is_dense(x):
        return _gemm(x.dense, b, True, False)
    n = b.shape[1]
    out = np.zeros((x.dense.shape[1], n), b.dtype)
    for t in range(x.touched.shape[0]):
        i = x.touched[t]
        for k in range(x.col_start[t], x.col_start[t + 1]):
            r, v = x.col_rows[k], x.col_values[k]
            for j in range(n):
                out[i, j] += v * b[r, j]
    return out


@_kernel
def matmul_nt(a, b):
    """``a @ bᵀ``: (m, k) x (n, k) -> (m, n)."""
    return _gemm(a, b, False, True)


@_kernel
def affine(x, W, b):
    """``x W + b``: (m, k), (k, n), (n,) -> (m, n)."""
    out = matmul(x, W)
    m, n = out.shape
    for r in range(m):
        for j in range(n):
            out[r, j] += b[j]
    return out


@_kernel(inline="always")
def affine_relu(x, W, b):
    """``relu(x W + b)`` -> (m, n), bias and ReLU fused into one pass."""
    out = matmul(x, W)
    m, n = out.shape
    for r in range(m):
        for j in range(n):
            v = out[r, j] + b[j]
            out[r, j] = v if v > 0 else 0
    return out


@_kernel
def relu_backward(dy, y):
    """``dy ⊙ [y > 0]`` (same shape as ``dy``)."""
    out = np.empty_like(dy)
    d, yy, o = dy.ravel(), y.ravel(), out.ravel()
    for i in range(o.size):
        o[i] = d[i] if yy[i] > 0 else 0
    return out


@_kernel
def sum_rows(a):
    """Column sums (m, n) -> (n,), adding the rows in order (as NumPy does)."""
    m, n = a.shape
    out = np.zeros(n, a.dtype)
    for r in range(m):
        for j in range(n):
            out[j] += a[r, j]
    return out


@_kernel
def softmax_cross_entropy(logits, labels):
    """``(loss, dlogits)`` of mean cross-entropy; see ``Ops.softmax_cross_entropy``."""
    m, c = logits.shape
    dlogits = np.empty_like(logits)
    m_float, zero = _same_dtype(m, logits), _same_dtype(0, logits)
    total = 0.0  # accumulated in float64, returned in the logits' dtype
    for r in range(m):
        z = logits[r]
        e = dlogits[r]
        zmax = z[0]
        for j in range(1, c):
            if z[j] > zmax:
                zmax = z[j]
        s = zero
        for j in range(c):
            e[j] = np.exp(z[j] - zmax)
            s += e[j]
        total += np.log(s) - (z[labels[r]] - zmax)
        for j in range(c):
            e[j] /= s
        e[labels[r]] -= 1
        for j in range(c):
            e[j] /= m_float
    return _same_dtype(total / m, logits), dlogits


@_kernel(inline="always")
def sgd_update(param, grad, velocity, lr, momentum, weight_decay):
    """In place: ``v = momentum v + (grad + weight_decay param)``; ``param -= lr v``.
    Returns ``(param, velocity)``."""
    _sgd_update_flat(param.ravel(), grad.ravel(), velocity.ravel(), lr, momentum,
                     weight_decay)
    return param, velocity


@_kernel(inline="always")
def _momentum_rule(w, v, g, lr, momentum, weight_decay):
    """SGD with momentum for one entry, the one place the rule is written:
    ``v' = momentum v + (g + weight_decay w)``, ``w' = w - lr v'`` (in NumPy's order of
    operations); returns ``(w', v')``."""
    v = v * momentum + (g + w * weight_decay)
    return w - v * lr, v


@_kernel
def _sgd_update_flat(p, g, v, lr, momentum, weight_decay):
    """:func:`sgd_update` of 1-D ``p`` with gradient ``g`` and velocity ``v``."""
    for i in range(p.size):
        p[i], v[i] = _momentum_rule(p[i], v[i], g[i], lr, momentum, weight_decay)


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
    rounded[:] = powers
    return np.zeros(k, np.int64), np.zeros(1, np.int64), rounded


@_kernel(inline="always")
def _catch_up_row(param, velocity, i, owed, powers):
    """Apply ``owed`` zero-gradient steps to row ``i`` at once: ``(w, v) <- A^owed (w, v)``."""
    a, b, c, d = powers[owed, 0], powers[owed, 1], powers[owed, 2], powers[owed, 3]
    for j in range(param.shape[1]):
        w, v = param[i, j], velocity[i, j]
        param[i, j] = a * w + b * v
        velocity[i, j] = c * w + d * v


@_kernel
def catch_up(param, velocity, lazy):
    """In place: bring every row of ``param`` and ``velocity`` up to date."""
    last, clock, powers = lazy
    now = clock[0]
    for i in range(param.shape[0]):
        if last[i] != now:
            _catch_up_row(param, velocity, i, now - last[i], powers)
            last[i] = now


@_kernel
def begin_steps(X, W1, V1, n_steps, lr, momentum, weight_decay):
    """X as the next ``n_steps`` SGD steps of W1 read it: a :class:`Deferred` (see
    ``Ops.begin_steps``)."""
    last, clock, powers = lazy_rows(W1, n_steps, lr, momentum, weight_decay)
    return Deferred(X, W1, V1, last, clock, powers)


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


def _deferral(x, like):
    """``(batch, last, clock, powers)`` of x: a :class:`DeferredBatch`'s fields, or x as
    a :class:`Batch` with no deferred steps (empty ``last`` and ``powers`` of the dtype
    of ``like``); compiled code only: the overload below picks the version by type."""
    raise TypeError("_deferral runs in compiled code only")


@overload(_deferral, inline="always")
def _deferral_overload(x, like):
    if getattr(x, "instance_class", None) is DeferredBatch:
        return lambda x, like: (x.batch, x.last, x.clock, x.powers)

    def not_deferred(x, like):
        return (_as_batch(x), np.zeros(0, np.int64), np.zeros(1, np.int64),
                np.zeros((0, 4), like.dtype))

    return not_deferred


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
    batch, last, clock, powers = _deferral(x, d)
    deferring = powers.shape[0] != 0
    if _is_dense(batch):
        _sgd_update_flat(param.ravel(), _gemm(batch.dense, d, True, False).ravel(),
                         velocity.ravel(), lr, momentum, weight_decay)
        if deferring:
            clock[0] += 1
            last[:] = clock[0]
        return param, velocity
    if not deferring:
        _sgd_update_flat(param.ravel(), matmul_tn(batch, d).ravel(), velocity.ravel(), lr,
                         momentum, weight_decay)
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
            for j in range(n):
                param[i, j], velocity[i, j] = _momentum_rule(
                    param[i, j], velocity[i, j], a * d[r, j], lr, momentum, weight_decay)
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
                param[i, j], velocity[i, j], g[j], lr, momentum, weight_decay)
        last[i] = now
    clock[0] = now
    if now == powers.shape[0] - 1:  # the chunk's last step: nothing stays owed
        catch_up(param, velocity, (last, clock, powers))
    return param, velocity


#: Arrays of the dtype the inputs become (only their dtype is read).
_LIKE32, _LIKE64 = np.zeros(0, np.float32), np.zeros(0, np.float64)


def _take(X, rows, like):
    """Rows ``X[rows]`` as a :class:`Batch` (see :func:`_take_batch`); from a
    :class:`Deferred`, the rows of W1 the batch reads are first brought up to date and
    the result is a :class:`DeferredBatch` (compiled code only: the overload below picks
    the version by the type of X)."""
    raise TypeError("_take runs in compiled code only")


@overload(_take, inline="always")
def _take_overload(X, rows, like):
    if isinstance(X, types.Array):
        return lambda X, rows, like: _take_batch(X, rows, like)

    def take_deferred(X, rows, like):
        batch = _take_batch(X.X, rows, like)
        _catch_up_batch(X.W1, X.V1, batch, X.last, X.clock, X.powers)
        return DeferredBatch(batch, X.last, X.clock, X.powers)

    return take_deferred


@_kernel
def take_pixels32(X, rows):
    """Rows ``X[rows]`` of (n, d) uint8 pixels (an array or a :class:`Deferred`) as a
    :class:`Batch` (a :class:`DeferredBatch` from a
    :class:`Deferred`) of float32 ``x / 255``."""
    return _take(X, rows, _LIKE32)


@_kernel
def take_pixels64(X, rows):
    """Rows ``X[rows]`` of (n, d) uint8 pixels as a :class:`Batch` of float64 ``x / 255``."""
    return _take(X, rows, _LIKE64)


@_kernel
def take_floats32(X, rows):
    """Rows ``X[rows]`` of (n, d) floats as a :class:`Batch` of float32."""
    return _take(X, rows, _LIKE32)


@_kernel
def take_floats64(X, rows):
    """Rows ``X[rows]`` of (n, d) floats as a :class:`Batch` of float64."""
    return _take(X, rows, _LIKE64)


@_kernel(inline="always")
def take_labels(Y, rows):
    """Labels ``Y[rows]``."""
    return Y[rows]


@_kernel
def loss_buffer(n):
    """(n,) float64 zeros for a chunk's losses."""
    return np.zeros(n, np.float64)


@_kernel(inline="always")
def set_loss(losses, step, loss):
    """In place: ``losses[step] = loss``; returns ``losses``."""
    losses[step] = loss
    return losses


@_kernel
def pixels_to_float32(x):
    """(m, d) uint8 -> (m, d) float32 ``x / 255``, one pass (5x faster than
    ``astype`` then divide in Numba, measured on 8192 MNIST rows)."""
    return _take_dense(x, np.arange(x.shape[0]), _LIKE32)


@_kernel
def pixels_to_float64(x):
    """(m, d) uint8 -> (m, d) float64 ``x / 255``, one pass."""
    return _take_dense(x, np.arange(x.shape[0]), _LIKE64)


@_kernel
def cast_to_float32(x):
    """(m, d) floats -> (m, d) float32, one pass."""
    return _take_dense(x, np.arange(x.shape[0]), _LIKE32)


@_kernel
def cast_to_float64(x):
    """(m, d) floats -> (m, d) float64, one pass."""
    return _take_dense(x, np.arange(x.shape[0]), _LIKE64)


_PIXELS_TO_FLOAT = {"float32": pixels_to_float32, "float64": pixels_to_float64}
_CAST_TO_FLOAT = {"float32": cast_to_float32, "float64": cast_to_float64}
_TAKE_PIXELS = {"float32": take_pixels32, "float64": take_pixels64}
_TAKE_FLOATS = {"float32": take_floats32, "float64": take_floats64}


class NumbaOps(NumpyOps):
    """The ops as ``@njit`` kernels on NumPy arrays, and the network math compiled.

    The kernels are instance attributes holding numba dispatchers (not methods), so
    the network's factories capture compiled functions that compiled closures can
    call. ``pixels_to_float``, ``cast_to_float``, ``take_pixels`` and ``take_floats``
    are the kernels for ``dtype``. Ops the network math does not call in compiled code
    (softmax, argmax, ...) are the NumPy backend's.
    """

    name = "numba"
    compiles_chunks = True
    needs_warmup = True

    def __init__(self, dtype: str | np.dtype = "float32") -> None:
        super().__init__(dtype)
        self.matmul = matmul
        self.matmul_tn = matmul_tn
        self.matmul_nt = matmul_nt
        self.affine = affine
        self.affine_relu = affine_relu
        self.relu_backward = relu_backward
        self.sum_rows = sum_rows
        self.softmax_cross_entropy = softmax_cross_entropy
        self.sgd_update = sgd_update
        self.sgd_update_outer = sgd_update_outer
        self.begin_steps = begin_steps
        self.take_labels = take_labels
        self.loss_buffer = loss_buffer
        self.set_loss = set_loss
        self.pixels_to_float = _PIXELS_TO_FLOAT[self.dtype.name]
        self.cast_to_float = _CAST_TO_FLOAT[self.dtype.name]
        self.take_pixels = _TAKE_PIXELS[self.dtype.name]
        self.take_floats = _TAKE_FLOATS[self.dtype.name]

    def to_numpy(self, a: Any) -> np.ndarray:
        """An array, or a :class:`Batch` as the (m, d) array it holds."""
        return batch_to_dense(a) if isinstance(a, (Batch, DeferredBatch)) else np.asarray(a)

    def scalar(self, value: float) -> Any:
        """A NumPy scalar of ``self.dtype``, so the kernels compute in that precision."""
        return self.dtype.type(value)

    def jit(self, fn: Callable) -> Any:
        """Compile ``fn`` (a closure over this backend's kernels) with ``@njit``,
        inlined where another compiled closure calls it (``train_steps`` runs
        ``sgd_step`` and ``backprop`` without calls: 1.03-1.12x faster at batch 1).

        Its cache UUID hashes its bytecode and what it captures, so a compiled
        closure is found in numba's cache by later processes.
        """
        dispatcher = njit(cache=CACHE, inline="always")(fn)
        cells = [c.cell_contents for c in (fn.__closure__ or ())]
        parts = [hashlib.sha256(marshal.dumps(fn.__code__)).hexdigest(), fn.__qualname__]
        for value in cells:
            uuid = getattr(value, "_uuid", None)
            if uuid is None and not isinstance(value, (int, float, str, bool, type(None))):
                return dispatcher  # something we can't hash stably: leave numba's UUID
            parts.append(str(uuid) if uuid is not None else repr(value))
        _set_stable_uuid(dispatcher, ":".join(parts))
        return dispatcher
