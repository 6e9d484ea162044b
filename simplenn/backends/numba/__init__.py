"""The Numba backend: the network's ops as ``@njit`` kernels, and the training loop compiled.

Every op the network math in :mod:`simplenn.core.network` uses is a module-level
``@njit`` dispatcher, set as an attribute of :class:`NumbaOps`; the network's
``make_*`` factories close over those dispatchers and :meth:`NumbaOps.jit` compiles
the closures, so a whole chunk of SGD steps (``train_steps``) runs as machine code
built from the one definition of the math. The modules:

- :mod:`.kernels`: the ops; matrix products call NumPy's own BLAS from compiled code
  (:mod:`.blas`) on its threads, except in an augmented run, where BLAS runs on one
  thread and the first-layer products are cut over numba's threads, so that one pool
  of threads serves training and the warp (:func:`.blas.products_on_numba_threads`);
- :mod:`.batches`: a small training batch, mostly zeros on MNIST, as a sparse
  :class:`Batch` (CSR and CSC), whose first-layer products walk only its nonzeros; a
  chunk of larger batches reads the training set as :class:`DenseInputs`, whose
  batches are plain arrays, and compiles without the sparse path;
- :mod:`.deferred`: the first-layer update of a sparse batch never forms ``xᵀ dl1``
  and skips the rows of all-zero columns, whose momentum steps are deferred and
  applied in closed form when the row is next read; the bookkeeping enters a chunk
  through the interface's optional hook ``begin_steps``;
- :mod:`.warp`: the augmentation's elastic fields and bilinear warp;
- :mod:`.compile`: the on-disk cache and the stable UUIDs that let compiled closures
  be cached.
"""
from __future__ import annotations

import hashlib
import marshal
import math
from contextlib import AbstractContextManager
from typing import Any, Callable

import numba
import numpy as np
from numba import njit

from ... import _probes
from ..numpy_backend import NumpyOps
from .batches import (
    _LIKE32, _LIKE64, SPARSE_MAX_ROWS, Batch, DeferredBatch, DenseInputs, ThreadedInputs,
    _take_dense, batch_to_dense,
)
from .blas import one_pool_active, products_on_numba_threads
from .compile import CACHE, CACHE_ENV_VAR, _set_stable_uuid
from .deferred import (
    Deferred, begin_steps, sgd_update_outer, take_floats32, take_floats64, take_pixels32,
    take_pixels64,
)
from .kernels import (
    BLAS, affine, affine_relu, loss_buffer, matmul, matmul_nt, matmul_tn, relu_backward,
    set_loss, sgd_update, softmax_cross_entropy, sum_rows, take_labels,
)
from .warp import elastic_fields_into, warp_into

__all__ = ["BLAS", "CACHE", "CACHE_ENV_VAR", "Batch", "Deferred", "DeferredBatch", "DenseInputs",
           "NumbaOps", "ThreadedInputs", "TrainSteps"]

_LIKE = {"float32": _LIKE32, "float64": _LIKE64}
_TAKE_PIXELS = {"float32": take_pixels32, "float64": take_pixels64}
_TAKE_FLOATS = {"float32": take_floats32, "float64": take_floats64}
#: Byte alignment of the parameters and velocities the compiled steps update: rows whose
#: 32-byte vector loads straddle cache lines run the sparse path's row loops slower.
ALIGNMENT = 64


class NumbaOps(NumpyOps):
    """The ops as ``@njit`` kernels on NumPy arrays, and the network math compiled.

    The kernels are instance attributes holding numba dispatchers (not methods), so
    the network's factories capture compiled functions that compiled closures can
    call; ``take_pixels`` and ``take_floats`` are the kernels for ``dtype``.
    ``pixels_to_float`` and ``cast_to_float``, which run from Python, call the kernel
    those take batches with. Ops the network math does not call in compiled code
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
        self.take_pixels = _TAKE_PIXELS[self.dtype.name]
        self.take_floats = _TAKE_FLOATS[self.dtype.name]

    def pixels_to_float(self, x: np.ndarray) -> np.ndarray:
        """(m, d) uint8 -> (m, d) ``x / 255`` in ``self.dtype``, in one compiled pass (5x
        faster than ``astype`` then divide), the kernel that takes training batches: on
        the training set's kind of array, evaluating compiles nothing of its own."""
        return _take_dense(x, np.arange(x.shape[0]), _LIKE[self.dtype.name])

    def cast_to_float(self, x: np.ndarray) -> np.ndarray:
        """(m, d) floats -> (m, d) in ``self.dtype``, in one compiled pass."""
        return _take_dense(x, np.arange(x.shape[0]), _LIKE[self.dtype.name])

    def warp(self, x: Any, matrices: Any, fields: Any) -> np.ndarray:
        """:meth:`Ops.warp` by the compiled loop of :mod:`.warp`."""
        m, d = x.shape
        s = math.isqrt(d)
        # (s, m, 2, s): the layout elastic_fields returns a view of (no copy for those)
        rows = (np.zeros((s, 0, 2, s), self.dtype) if fields is None else
                np.ascontiguousarray(np.transpose(fields, (2, 0, 1, 3)), self.dtype))
        scale = self.dtype.type(1 / 255 if x.dtype == np.uint8 else 1)
        grid = np.arange(s, dtype=self.dtype) - self.dtype.type((s - 1) / 2)
        return warp_into(x, scale, np.ascontiguousarray(matrices, self.dtype),
                         rows, grid,
                         np.empty((m, d), self.dtype))

    def elastic_fields(self, noise: Any, levels: Any, basis: Any) -> np.ndarray:
        """:meth:`Ops.elastic_fields` by the compiled loop of :mod:`.warp`, in NumPy's
        layout (a view of an (s, m, 2, s) array), over numba's threads while BLAS runs on
        one (:meth:`augmented_training`)."""
        m, s = noise.shape[0], basis.shape[0]
        basis = np.ascontiguousarray(basis, self.dtype)
        parts = numba.get_num_threads() if one_pool_active() else 1
        out = elastic_fields_into(np.ascontiguousarray(noise, np.uint8),
                                  np.ascontiguousarray(levels, self.dtype), basis,
                                  np.ascontiguousarray(basis.T), parts,
                                  np.empty((s, 2 * m * s), self.dtype))
        return out.reshape(s, m, 2, s).transpose(1, 2, 0, 3)

    def augmented_training(self) -> AbstractContextManager:
        """BLAS on one thread and the steps' first-layer products over numba's threads
        (:func:`.blas.products_on_numba_threads`), so that training and the parallel
        warp and fields share one pool of threads."""
        return products_on_numba_threads()

    def jit_train_steps(self, fn: Callable) -> "TrainSteps":
        """``train_steps`` compiled, as a :class:`TrainSteps`."""
        return TrainSteps(self.jit(fn))

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
        dispatcher = njit(cache=CACHE, inline="always", nogil=True, error_model="numpy")(fn)
        cells = [c.cell_contents for c in (fn.__closure__ or ())]
        parts = [hashlib.sha256(marshal.dumps(fn.__code__)).hexdigest(), fn.__qualname__]
        for value in cells:
            uuid = _probes.dispatcher_uuid(value)
            if uuid is None and not isinstance(value, (int, float, str, bool, type(None))):
                return dispatcher  # something we can't hash stably: leave numba's UUID
            parts.append(str(uuid) if uuid is not None else repr(value))
        _set_stable_uuid(dispatcher, ":".join(parts))
        return dispatcher


def copy_at(a: np.ndarray, boundary: int, offset: int = 0) -> np.ndarray:
    """A C-contiguous copy of ``a`` whose data starts ``offset`` bytes after a multiple
    of ``boundary`` bytes."""
    buffer = np.empty(a.nbytes + boundary + offset, np.uint8)
    start = -buffer.__array_interface__["data"][0] % boundary + offset
    out = buffer[start:start + a.nbytes].view(a.dtype).reshape(a.shape)
    np.copyto(out, a)
    return out


def aligned(a: np.ndarray) -> np.ndarray:
    """``a`` when its data starts at a multiple of :data:`ALIGNMENT` bytes, else a
    C-contiguous copy that does."""
    if a.size == 0 or a.__array_interface__["data"][0] % ALIGNMENT == 0:
        return a
    return copy_at(a, ALIGNMENT)


class TrainSteps:
    """A compiled ``train_steps`` (see :func:`simplenn.core.network.make_train_steps`)
    that hands it the training set ``X`` in the form the batch size calls for: as it is
    for batches of at most ``SPARSE_MAX_ROWS`` rows, which may be sparse, and as
    :class:`DenseInputs` for larger ones (:class:`ThreadedInputs` while BLAS runs on one
    thread, :func:`.blas.products_on_numba_threads`). Numba compiles one version per
    form, so a run of large batches compiles BLAS's path alone.

    Parameters and velocities not aligned to :data:`ALIGNMENT` bytes (NumPy aligns to
    16) are updated in aligned copies, which it returns: a caller that keeps what it
    returns, as ``fit`` does, copies once. The sparse path's row loops run faster on
    aligned rows (docs/numba.md#aligned-parameters)."""

    def __init__(self, dispatcher: Any) -> None:
        self.dispatcher = dispatcher

    @property
    def signatures(self) -> list:
        """The argument types compiled so far (as a dispatcher's ``signatures``)."""
        return self.dispatcher.signatures

    @property
    def py_func(self) -> Callable:
        """The Python function compiled."""
        return self.dispatcher.py_func

    def __call__(self, W1, b1, W2, b2, V1, v1, V2, v2, X, Y, order, batch_size, lr,
                 momentum, wd):
        if batch_size > SPARSE_MAX_ROWS:
            X = (ThreadedInputs(X, numba.get_num_threads()) if one_pool_active()
                 else DenseInputs(X))
        W1, b1, W2, b2, V1, v1, V2, v2 = map(aligned, (W1, b1, W2, b2, V1, v1, V2, v2))
        return self.dispatcher(W1, b1, W2, b2, V1, v1, V2, v2, X, Y, order, batch_size, lr,
                               momentum, wd)
