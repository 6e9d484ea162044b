"""The Numba backend's fast path: whole chunks of SGD steps as one compiled loop.

Covers SGD with momentum (not Nesterov's), any weight decay, pixels and floats, every
batch size. A batch of at most ``SPARSE_MAX_ROWS`` rows is taken as a sparse
:class:`~.batches.Batch` whose first-layer products walk only its nonzeros, and
without weight decay the first layer's update skips the rows of all-zero columns,
deferring their steps (:mod:`.deferred`). Larger batches of sparse inputs read the
training set as :class:`~.batches.SparseInputs`: each batch's often-nonzero columns
are multiplied with BLAS, its other nonzeros summed one by one (:mod:`.rows`), on
numba's threads with BLAS on one; dense inputs (:data:`ROWS_MAX_DENSITY`) are read as
:class:`~.batches.DenseInputs` and multiplied with BLAS. Updates run in place on the
parameters and velocities the chunk is given (copies, where those are not aligned to
:data:`ALIGNMENT` bytes), which it returns. The backward pass is
:func:`simplenn.core.network.make_backprop` over this backend's batch-aware kernels.
"""

from __future__ import annotations

import contextlib
import threading
from types import SimpleNamespace
from typing import Any, Callable

import numba
import numpy as np

from ...core.network import make_backprop
from ...core.params import Params
from ...optim import SGD
from ...optim.sgd import chunk_arguments, from_chunk
from ..fastpath import FastPath
from .batches import SPARSE_MAX_ROWS, DenseInputs, SparseInputs, ThreadedInputs
from .blas import one_pool_active, products_on_numba_threads
from .deferred import (
    begin_steps,
    sgd_update_outer,
    take_floats32,
    take_floats64,
    take_pixels32,
    take_pixels64,
)
from .kernels import (
    affine,
    affine_relu,
    matmul_nt,
    matmul_tn,
    relu_backward,
    sgd_update,
    softmax_cross_entropy,
    sum_rows,
)

_TAKE = {
    ("pixels", "float32"): take_pixels32,
    ("pixels", "float64"): take_pixels64,
    ("floats", "float32"): take_floats32,
    ("floats", "float64"): take_floats64,
}
#: The kernels the backward pass runs on: they take x as a sparse or dense batch.
_BATCH_KERNELS = SimpleNamespace(
    affine=affine,
    affine_relu=affine_relu,
    matmul_tn=matmul_tn,
    matmul_nt=matmul_nt,
    relu_backward=relu_backward,
    softmax_cross_entropy=softmax_cross_entropy,
    sum_rows=sum_rows,
)
#: Byte alignment of the parameters and velocities the compiled steps update: rows whose
#: vector loads straddle cache lines run the sparse path's row loops slower.
ALIGNMENT = 64


def make_sgd_chunk(take: Callable, backprop: Callable) -> Callable[..., tuple]:
    """``chunk(W1, b1, W2, b2, V1, v1, V2, v2, X, Y, order, batch_size, lrs, momentum,
    wd) -> (W1, b1, W2, b2, V1, v1, V2, v2, losses)``: the SGD steps over the rows
    ``X[order]``, step ``s`` at ``lrs[s]``, in place; ``take(inputs, rows)`` gathers a
    batch."""

    def chunk(W1, b1, W2, b2, V1, v1, V2, v2, X, Y, order, batch_size, lrs, momentum, wd):
        n = order.shape[0]
        n_steps = (n + batch_size - 1) // batch_size
        inputs = begin_steps(X, W1, V1, lrs[:n_steps], momentum, wd)
        losses = np.zeros(n_steps, np.float64)
        for s in range(n_steps):
            rows = order[s * batch_size : min(n, (s + 1) * batch_size)]
            x = take(inputs, rows)
            lr = lrs[s]
            loss, dl1, db1, dW2, db2 = backprop(Params(W1, b1, W2, b2), x, Y[rows])
            W1, V1 = sgd_update_outer(W1, x, dl1, V1, lr, momentum, wd)  # dW1 = xᵀ dl1
            b1, v1 = sgd_update(b1, db1, v1, lr, momentum, 0.0)
            W2, V2 = sgd_update(W2, dW2, V2, lr, momentum, wd)
            b2, v2 = sgd_update(b2, db2, v2, lr, momentum, 0.0)
            losses[s] = loss
        return W1, b1, W2, b2, V1, v1, V2, v2, losses

    return chunk


def copy_at(a: np.ndarray, boundary: int, offset: int = 0) -> np.ndarray:
    """A C-contiguous copy of ``a`` whose data starts ``offset`` bytes after a multiple
    of ``boundary`` bytes."""
    buffer = np.empty(a.nbytes + boundary + offset, np.uint8)
    start = -buffer.__array_interface__["data"][0] % boundary + offset
    out = buffer[start : start + a.nbytes].view(a.dtype).reshape(a.shape)
    np.copyto(out, a)
    return out


def aligned(a: np.ndarray) -> np.ndarray:
    """``a`` when its data starts at a multiple of :data:`ALIGNMENT` bytes, else a
    C-contiguous copy that does."""
    if a.size == 0 or a.__array_interface__["data"][0] % ALIGNMENT == 0:
        return a
    return copy_at(a, ALIGNMENT)


#: Batches of more than ``SPARSE_MAX_ROWS`` rows split their inputs' columns (:mod:`.rows`)
#: when at most this fraction of the inputs is nonzero, else multiply densely with BLAS
#: (measured: see docs/numba.md) ...
ROWS_MAX_DENSITY = 0.25
#: ... into those nonzero in at least this fraction of the rows, multiplied densely, and
#: the others, whose nonzeros are summed one by one.
HOT_DENSITY = 0.1
#: Rows of a chunk whose inputs' density decides both.
DENSITY_SAMPLE_ROWS = 256


def hot_columns(X: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, int] | None:
    """``(columns, n_hot)``: the columns of X, the ``n_hot`` hot ones first (see
    :mod:`.rows`), each group ascending, as measured on the first
    :data:`DENSITY_SAMPLE_ROWS` rows of ``X[order]``; None where those rows are denser
    than :data:`ROWS_MAX_DENSITY` (then every product is dense)."""
    sample = X[order[:DENSITY_SAMPLE_ROWS]]
    per_column = np.count_nonzero(sample, axis=0)
    if per_column.sum() > ROWS_MAX_DENSITY * sample.size:
        return None
    hot = per_column >= HOT_DENSITY * sample.shape[0]
    return np.concatenate([np.flatnonzero(hot), np.flatnonzero(~hot)]), int(hot.sum())


def rows_inputs(
    X: np.ndarray, columns: tuple[np.ndarray, int], rows: int, dtype: np.dtype, threads: int
) -> SparseInputs:
    """X as a chunk with W1's rows in the order of ``columns`` (from
    :func:`hot_columns`) reads it, with scratch for batches of up to ``rows`` rows."""
    d = X.shape[1]
    order, n_hot = columns
    position = np.empty(d, np.int64)
    position[order] = np.arange(d)
    words = (
        X.view(np.uint64)
        if X.dtype == np.uint8 and d % 8 == 0 and X.flags.c_contiguous
        else np.zeros((0, 0), np.uint64)
    )
    return SparseInputs(
        X,
        order,
        n_hot,
        np.arange(256).astype(dtype) / dtype.type(255),
        words,
        position,
        scratch("hot", (rows, n_hot), dtype),
        scratch("idx", (rows, d - n_hot), np.dtype(np.int32)),
        scratch("val", (rows, d - n_hot), dtype),
        scratch("counts", (rows,), np.dtype(np.int64)),
        threads,
    )


_SCRATCH = threading.local()


def scratch(name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialised array, the same one for the same name, shape and dtype on each
    call from one thread: chunks reuse their scratch instead of allocating it anew, as
    fresh pages cost a page fault each on first touch."""
    cache = _SCRATCH.__dict__
    found = cache.get(name)
    if found is None or found.shape != shape or found.dtype != dtype:
        found = cache[name] = np.empty(shape, dtype)
    return found


class SparseSGD(FastPath):
    """SGD with momentum as one compiled chunk (see the module's docstring)."""

    name = "numba-sgd"

    def covers(self, ops: Any, optimizer: Any, input_kind: str, batch_size: int) -> bool:
        return type(optimizer) is SGD and not optimizer.nesterov

    def training(self, ops: Any) -> contextlib.AbstractContextManager:
        """BLAS on one thread for the whole run (:func:`.blas.products_on_numba_threads`):
        the chunks split their products over numba's threads, and BLAS's own threads,
        woken by an evaluation's products between chunks, would spin beside them."""
        return products_on_numba_threads()

    def train_steps(self, ops: Any, optimizer: Any, input_kind: str) -> Callable[..., tuple]:
        chunk = ops.jit(
            make_sgd_chunk(
                _TAKE[input_kind, ops.dtype.name], ops.jit(make_backprop(_BATCH_KERNELS))
            )
        )
        momentum, wd = ops.scalar(optimizer.momentum), ops.scalar(optimizer.weight_decay)
        dtype = ops.dtype

        def train_steps(params, state, X, Y, order, batch_size, lrs):
            arrays = list(chunk_arguments(params, state))
            inputs, pool, hot = X, contextlib.nullcontext(True), None
            if batch_size > SPARSE_MAX_ROWS:
                hot = hot_columns(X, order)
                if hot is None:
                    pool = contextlib.nullcontext(one_pool_active())
                else:
                    pool = products_on_numba_threads()
            with pool as pooled:
                threads = numba.get_num_threads() if pooled else 1
                if hot is not None:
                    inputs = rows_inputs(X, hot, min(batch_size, order.shape[0]), dtype, threads)
                    arrays[0], arrays[4] = arrays[0][hot[0]], arrays[4][hot[0]]  # W1, V1
                elif batch_size > SPARSE_MAX_ROWS:
                    inputs = ThreadedInputs(X, threads) if pooled else DenseInputs(X)
                *arrays, losses = chunk(
                    *map(aligned, arrays),
                    inputs,
                    Y,
                    order,
                    batch_size,
                    lrs.astype(dtype),
                    momentum,
                    wd,
                )
            if hot is not None:  # W1's and V1's rows back in the inputs' column order
                position = inputs.position
                arrays[0], arrays[4] = arrays[0][position], arrays[4][position]
            return (*from_chunk(arrays, state, losses.shape[0]), losses)

        train_steps.chunk = chunk  # the compiled dispatcher, for inspection
        return train_steps


SPARSE_SGD = SparseSGD()
