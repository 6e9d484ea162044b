"""Batches of inputs. The first layer's products read x through a :class:`Batch`: a
sparse x in both compressed forms, or a dense x as it is. MNIST pixels are ~81% zeros,
so a small batch holds only its nonzeros."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import types
from numba.extending import overload

from .compile import _kernel

#: A fast-path training batch (``take_pixels32`` and friends) is sparse -- its first-layer
#: products walk only its nonzeros, and the rows of W1 of its all-zero columns defer
#: their update -- when it has at most this many rows ... Around 32 rows of float32
#: MNIST the sparse path and BLAS's dense one train about equally fast at hidden 128
#: and 512; the batch is made before the width is known, so one threshold serves
#: every width.
SPARSE_MAX_ROWS = 32
#: ... and at most this fraction of its entries is nonzero; otherwise it is dense
#: and the products are BLAS's.
SPARSE_MAX_DENSITY = 0.5

#: Arrays of the dtype the inputs become (only their dtype is read).
_LIKE32, _LIKE64 = np.zeros(0, np.float32), np.zeros(0, np.float64)
#: Read-only, as compiled code types these globals, so that a call from Python
#: (``NumbaOps.to_float``) and one from compiled code share the compiled version.
_LIKE32.flags.writeable = _LIKE64.flags.writeable = False


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


class DenseInputs(NamedTuple):
    """The training set ``X`` as a chunk of steps with batches of more than
    ``SPARSE_MAX_ROWS`` rows reads it: every batch taken from it is a plain (m, d)
    array, so the compiled chunk holds BLAS's path alone, with no sparse forms and no
    deferred steps (which also makes it a quarter as long to compile)."""

    X: np.ndarray


class ThreadedInputs(NamedTuple):
    """The training set ``X`` as :class:`DenseInputs` holds it, for a chunk run with
    BLAS on one thread (:func:`.blas.products_on_numba_threads`): every batch taken
    from it is a :class:`ThreadedBatch` of ``threads``."""

    X: np.ndarray
    threads: int


class SparseInputs(NamedTuple):
    """The training set ``X`` as a chunk of steps reads it when its batches are
    :class:`RowsBatch` es (:mod:`.rows`). The chunk's W1 has its rows permuted so that
    the columns of X that are often nonzero ("hot") come first: row ``q`` of W1 is
    column ``columns[q]`` of X, and the first ``n_hot`` are the hot ones; ``position``
    (d,) inverts ``columns``. A uint8 pixel ``v`` is the float ``scaled[v]`` (``v /
    255`` as NumPy rounds it); ``words`` is X's memory as uint64 (n, d / 8) where X holds
    pixels in rows of whole words, else empty. Scratch for a batch of up to b rows:
    ``hot`` (b, n_hot) floats, ``idx`` (b, d - n_hot) int32, ``val`` (b, d - n_hot)
    floats, ``counts`` (b,) int64. The products run in ``threads`` parts."""

    X: np.ndarray
    columns: np.ndarray
    n_hot: int
    scaled: np.ndarray
    words: np.ndarray
    position: np.ndarray
    hot: np.ndarray
    idx: np.ndarray
    val: np.ndarray
    counts: np.ndarray
    threads: int


class RowsBatch(NamedTuple):
    """A batch x (m, d) in two parts, its columns numbered as W1's permuted rows (see
    :class:`SparseInputs`): ``hot`` (m, n_hot), the hot columns dense; and each row's
    other nonzeros, row r's ``val[r, :counts[r]]`` in the columns ``idx[r, :counts[r]]``
    (ascending, all ``>= n_hot``). ``n_cols`` is d; products run in ``threads`` parts."""

    hot: np.ndarray
    idx: np.ndarray
    val: np.ndarray
    counts: np.ndarray
    n_cols: int
    n_hot: int
    threads: int


class ThreadedBatch(NamedTuple):
    """A dense batch x (m, d) whose first-layer products are cut into ``threads`` parts
    run on numba's threads, each part one BLAS call."""

    dense: np.ndarray
    threads: int


class DeferredBatch(NamedTuple):
    """A :class:`Batch` taken from a :class:`Deferred`, with the chunk's deferred
    first-layer steps, which :func:`sgd_update_outer` advances."""

    batch: Batch
    last: np.ndarray
    clock: np.ndarray
    sums: np.ndarray
    decay: np.ndarray
    enabled: bool


@_kernel(inline="always")
def _dense_batch(x):
    """x (m, d) as a dense :class:`Batch`."""
    no_ints, no_values = np.zeros(1, np.int64), np.zeros(0, x.dtype)
    return Batch(
        x.shape[0],
        x,
        no_ints,
        no_ints.astype(np.int32),
        no_values,
        no_ints.astype(np.int32),
        no_ints,
        no_ints.astype(np.int32),
        no_values,
    )


def _as_batch(x):
    """x as a :class:`Batch`: a Batch as it is, a :class:`DeferredBatch`'s batch, an
    array or a :class:`ThreadedBatch` as a dense Batch (compiled code only: the
    overload below picks the version by the type of x)."""
    raise TypeError("_as_batch runs in compiled code only")


@overload(_as_batch, inline="always")
def _as_batch_overload(x):
    if isinstance(x, types.Array):
        return lambda x: _dense_batch(x)
    if getattr(x, "instance_class", None) is DeferredBatch:
        return lambda x: x.batch
    if getattr(x, "instance_class", None) is ThreadedBatch:
        return lambda x: _dense_batch(x.dense)
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
def _convert(x, like):
    """(m, d) uint8 pixels or floats -> (m, d) floats of the dtype of ``like`` (see
    :func:`_input_value`), in one pass."""
    m, d = x.shape
    out = np.empty((m, d), like.dtype)
    for r in range(m):
        for i in range(d):
            out[r, i] = _input_value(x[r, i], like)
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
        return Batch(
            m,
            np.empty((0, d), values.dtype),
            indptr,
            indices,
            values,
            indices[:nnz].copy(),
            np.arange(nnz + 1),
            np.zeros(nnz, np.int32),
            values,
        )
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
    return Batch(
        m,
        np.empty((0, d), values.dtype),
        indptr,
        indices,
        values,
        touched,
        col_start,
        col_rows,
        col_values,
    )
