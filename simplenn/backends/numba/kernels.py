"""The ops as ``@njit`` kernels. Shapes and dtypes as in
:class:`simplenn.backends.base.Ops`; all arrays C-contiguous. Matrix products call
NumPy's own BLAS from compiled code (see :mod:`.blas`); ops that read x take a
:class:`~.batches.Batch`, or an array as a dense batch."""

from __future__ import annotations

import numpy as np
from numba import prange, types
from numba.extending import overload

from . import blas as numba_blas
from .batches import RowsBatch, ThreadedBatch, _as_batch, _is_dense
from .compile import _kernel

#: Which BLAS the kernels' matrix products reach, in words (see :mod:`.blas`).
BLAS = numba_blas.register()


def _same_dtype(value, like):
    """``value`` as a scalar of the dtype of array ``like`` (numba promotes int/float64)
    (compiled code only: the overload below picks the cast by the dtype of ``like``)."""
    raise TypeError("_same_dtype runs in compiled code only")


@overload(_same_dtype, inline="always")
def _same_dtype_overload(value, like):
    as_float = np.float32 if like.dtype == types.float32 else np.float64
    return lambda value, like: as_float(value)


@_kernel(inline="always")
def _gemm(a, b, trans_a, trans_b):
    """``op(a) op(b)`` with BLAS (see :mod:`.blas`), ``op`` transposing where
    asked; a and b are 2-D arrays of one float dtype, made C-contiguous if they are not.
    The flags reach :func:`_blas_gemm` as plain bools, not the literals callers write,
    so one compiled version serves every call."""
    return _blas_gemm(a, b, np.bool_(trans_a), np.bool_(trans_b))


@_kernel(inline="always")
def _gemm_at(itemsize, ta, tb, m, n, k, a_at, lda, b_at, ldb, out_at, ldc):
    """``out = op(a) op(b)``, row-major matrices at raw addresses (``?_at``, with
    leading dimensions ``ld?``): BLAS's sgemm for 4-byte floats, else dgemm."""
    # numba_blas.sgemm, not a module global of its own here: kernels pickle their
    # globals into closures' cache keys, and numba types pickle differently per process.
    if itemsize == 4:
        numba_blas.sgemm(
            numba_blas.ROW_MAJOR,
            ta,
            tb,
            m,
            n,
            k,
            np.float32(1),
            a_at,
            lda,
            b_at,
            ldb,
            np.float32(0),
            out_at,
            ldc,
        )
    else:
        numba_blas.dgemm(
            numba_blas.ROW_MAJOR, ta, tb, m, n, k, 1.0, a_at, lda, b_at, ldb, 0.0, out_at, ldc
        )


@_kernel(inline="always")
def _product_shape(a, b, trans_a, trans_b):
    """``(m, n, k, ta, tb)`` of the product ``op(a) op(b)`` (m, k) x (k, n), with the
    cblas flags of the two ``op``s."""
    m, k = (a.shape[1], a.shape[0]) if trans_a else (a.shape[0], a.shape[1])
    n = b.shape[0] if trans_b else b.shape[1]
    ta = numba_blas.TRANS if trans_a else numba_blas.NO_TRANS
    tb = numba_blas.TRANS if trans_b else numba_blas.NO_TRANS
    return m, n, k, ta, tb


@_kernel
def _blas_gemm(a, b, trans_a, trans_b):
    """:func:`_gemm`."""
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    m, n, k, ta, tb = _product_shape(a, b, trans_a, trans_b)
    if m == 0 or n == 0 or k == 0:
        return np.zeros((m, n), a.dtype)
    out = np.empty((m, n), a.dtype)
    _gemm_at(
        a.itemsize,
        ta,
        tb,
        m,
        n,
        k,
        a.ctypes.data,
        a.shape[1],
        b.ctypes.data,
        b.shape[1],
        out.ctypes.data,
        n,
    )
    return out


@_kernel(inline="always")
def _threaded_gemm(a, b, trans_a, trans_b, threads):
    """:func:`_blas_gemm` with the product cut into ``threads`` parts (boundaries at
    multiples of 16), each part one BLAS call on one of numba's threads: for BLAS on
    one thread (:func:`.blas.products_on_numba_threads`). The parts are columns of the
    product where it is at least as wide as tall and ``a`` is not transposed, else
    rows: ``xᵀ dl1`` cut by the columns of x trains faster than by those of dl1. The
    flags reach :func:`_gemm_parts` as plain bools: one compiled version for all."""
    return _gemm_parts(
        np.ascontiguousarray(a),
        np.ascontiguousarray(b),
        np.bool_(trans_a),
        np.bool_(trans_b),
        threads,
    )


@_kernel(parallel=True)
def _gemm_parts(a, b, trans_a, trans_b, threads):
    """:func:`_threaded_gemm` of C-contiguous a and b; each part is one call of
    :func:`_gemm_part`, compiled apart (a loop body of its own compiles faster)."""
    m, n, k, ta, tb = _product_shape(a, b, trans_a, trans_b)
    if m == 0 or n == 0 or k == 0:
        return np.zeros((m, n), a.dtype)
    out = np.empty((m, n), a.dtype)
    by_columns = n >= m and not trans_a
    length = n if by_columns else m
    parts = max(1, min(threads, length // 16))
    step = (length + parts - 1) // parts
    step = (step + 15) // 16 * 16
    for t in prange(parts):
        lo = min(length, np.int64(t) * step)  # int64 whatever prange's index type
        _gemm_part(a, b, out, trans_a, trans_b, by_columns, lo, min(length, lo + step) - lo)
    return out


@_kernel
def _gemm_part(a, b, out, trans_a, trans_b, by_columns, lo, width):
    """Part ``lo:lo + width`` of ``out = op(a) op(b)``: its columns where
    ``by_columns``, else its rows; one BLAS call."""
    if width <= 0:
        return
    m, n, k, ta, tb = _product_shape(a, b, trans_a, trans_b)
    lda, ldb, size = a.shape[1], b.shape[1], a.itemsize
    if by_columns:  # the part's columns of op(b) and out
        _gemm_at(
            size,
            ta,
            tb,
            m,
            width,
            k,
            a.ctypes.data,
            lda,
            b.ctypes.data + size * lo * (ldb if trans_b else 1),
            ldb,
            out.ctypes.data + size * lo,
            n,
        )
    else:  # the part's rows of op(a) and out
        _gemm_at(
            size,
            ta,
            tb,
            width,
            n,
            k,
            a.ctypes.data + size * lo * (1 if trans_a else lda),
            lda,
            b.ctypes.data,
            ldb,
            out.ctypes.data + size * lo * n,
            n,
        )


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


def _matmul(a, b):
    """:func:`matmul` (compiled code only: the overload below picks the version by the
    type of ``a``, so a product of arrays compiles BLAS's path alone)."""
    raise TypeError("_matmul runs in compiled code only")


@overload(_matmul, inline="always")
def _matmul_overload(a, b):
    if isinstance(a, types.Array):
        return lambda a, b: _gemm(a, b, False, False)
    if getattr(a, "instance_class", None) is ThreadedBatch:
        return lambda a, b: _threaded_gemm(a.dense, b, False, False, a.threads)

    def batch_matmul(a, b):
        x = _as_batch(a)
        if _is_dense(x):
            return _gemm(x.dense, b, False, False)
        return _sparse_matmul(x, b)

    return batch_matmul


@_kernel(inline="always")
def matmul(a, b):
    """``a @ b``: (m, k) x (k, n) -> (m, n); ``a`` an array or a :class:`Batch`, whose
    nonzeros alone are summed when it is sparse."""
    return _matmul(a, b)


@_kernel(inline="always")
def _sparse_matmul_tn(x, b):
    """``xᵀ @ b`` for a sparse Batch x (k, m) and b (k, n): column by column of x, its
    nonzeros' rows in order."""
    n = b.shape[1]
    out = np.zeros((x.dense.shape[1], n), b.dtype)
    for t in range(x.touched.shape[0]):
        i = x.touched[t]
        for k in range(x.col_start[t], x.col_start[t + 1]):
            r, v = x.col_rows[k], x.col_values[k]
            for j in range(n):
                out[i, j] += v * b[r, j]
    return out


def _matmul_tn(a, b):
    """:func:`matmul_tn` (compiled code only: the version is picked by the type of ``a``)."""
    raise TypeError("_matmul_tn runs in compiled code only")


@overload(_matmul_tn, inline="always")
def _matmul_tn_overload(a, b):
    if isinstance(a, types.Array):
        return lambda a, b: _gemm(a, b, True, False)
    if getattr(a, "instance_class", None) is ThreadedBatch:
        return lambda a, b: _threaded_gemm(a.dense, b, True, False, a.threads)

    def batch_matmul_tn(a, b):
        x = _as_batch(a)
        if _is_dense(x):
            return _gemm(x.dense, b, True, False)
        return _sparse_matmul_tn(x, b)

    return batch_matmul_tn


@_kernel
def matmul_tn(a, b):
    """``aᵀ @ b``: (k, m) x (k, n) -> (m, n); ``a`` an array or a :class:`Batch`, whose
    nonzeros alone are summed (column by column, rows in order) when it is sparse."""
    return _matmul_tn(a, b)


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


def _affine_relu(x, W, b):
    """:func:`affine_relu` (compiled code only: the overload below picks the version by
    the type of x)."""
    raise TypeError("_affine_relu runs in compiled code only")


@overload(_affine_relu, inline="always")
def _affine_relu_overload(x, W, b):
    if getattr(x, "instance_class", None) is RowsBatch:
        return None  # :mod:`.rows` overloads it for that type

    def plain(x, W, b):
        out = matmul(x, W)
        m, n = out.shape
        for r in range(m):
            for j in range(n):
                v = out[r, j] + b[j]
                out[r, j] = v if v > 0 else 0
        return out

    return plain


@_kernel(inline="always")
def affine_relu(x, W, b):
    """``relu(x W + b)`` -> (m, n), bias and ReLU fused into one pass."""
    return _affine_relu(x, W, b)


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
    _sgd_update_flat(
        param.ravel(),
        grad.ravel(),
        velocity.ravel(),
        lr,
        momentum,
        _same_dtype(weight_decay, param),
    )  # one compiled version for 0.0 and wd
    return param, velocity


@_kernel(inline="always")
def _momentum_rule(w, v, g, lr, momentum):
    """SGD with momentum for one entry, the one place the rule is written:
    ``v' = momentum v + g``, zero where ``|v'|`` is below the dtype's smallest normal
    number, and ``w' = w - lr v'``; returns ``(w', v')``. Weight decay is
    part of ``g``: callers pass ``g + weight_decay w`` (NumPy's order of operations)
    only when ``weight_decay`` is nonzero, so that the loops without it do no extra
    work per entry (it shows at small batches, where these loops are the hot ones)."""
    v = _flush_subnormal(v * momentum + g)
    return w - v * lr, v


@_kernel(inline="always")
def _flush_subnormal(v):
    """Scalar ``v``, or 0 where ``|v|`` is below the smallest normal number of its dtype:
    see :mod:`simplenn.optim.base`."""
    tiny = _smallest_normal(v)
    return tiny - tiny if abs(v) < tiny else v  # +0, and a NaN stays NaN


def _smallest_normal(like):
    """The smallest positive normal number of the dtype of scalar ``like`` (compiled
    code only: the overload below picks it by the type)."""
    raise TypeError("_smallest_normal runs in compiled code only")


@overload(_smallest_normal, inline="always")
def _smallest_normal_overload(like):
    as_float = np.float32 if like == types.float32 else np.float64
    tiny = as_float(np.finfo(as_float).smallest_normal)
    return lambda like: tiny


@_kernel
def _sgd_update_flat(p, g, v, lr, momentum, weight_decay):
    """:func:`sgd_update` of 1-D ``p`` with gradient ``g`` and velocity ``v``."""
    if weight_decay:
        for i in range(p.size):
            p[i], v[i] = _momentum_rule(p[i], v[i], g[i] + p[i] * weight_decay, lr, momentum)
    else:
        for i in range(p.size):
            p[i], v[i] = _momentum_rule(p[i], v[i], g[i], lr, momentum)
