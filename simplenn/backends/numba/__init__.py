"""The Numba backend: the network's ops as ``@njit`` kernels, and training compiled.

Every op is a module-level ``@njit`` dispatcher set as an attribute of
:class:`NumbaOps`; the network's ``make_*`` factories close over those dispatchers
and :meth:`NumbaOps.jit` compiles the closures, so a training step runs as machine
code built from the one definition of the math. The modules:

- :mod:`.kernels`: the ops; matrix products call NumPy's own BLAS from compiled code
  (:mod:`.blas`);
- :mod:`.fastpath`: the fast path, whole chunks of SGD steps as one compiled loop on
  sparse batches (:mod:`.batches`) with deferred updates (:mod:`.deferred`);
- :mod:`.images`, :mod:`.warp`: the augmentation's elastic fields and bilinear warp;
- :mod:`.compile`: the on-disk cache and the stable UUIDs that let compiled closures
  be cached.
"""

from __future__ import annotations

import hashlib
import marshal
import types
from typing import Any, Callable

import numpy as np
from numba import njit

from ... import _probes
from ..numpy_backend import NumpyOps
from .batches import _LIKE32, _LIKE64, _convert
from .compile import CACHE, CACHE_ENV_VAR, _kernel, _set_stable_uuid
from .kernels import (
    BLAS,
    affine,
    affine_relu,
    matmul,
    matmul_nt,
    matmul_tn,
    relu_backward,
    softmax_cross_entropy,
    sum_rows,
)

__all__ = ["BLAS", "CACHE", "CACHE_ENV_VAR", "NumbaOps"]


@_kernel(inline="always")
def take(a, rows):
    """Rows ``a[rows]`` of a 1-D or 2-D array."""
    return a[rows]


@_kernel(inline="always")
def to_float32(x):
    """(m, d) uint8 pixels (``x / 255``) or floats -> float32, in one pass."""
    return _convert(x, _LIKE32)


@_kernel(inline="always")
def to_float64(x):
    """(m, d) uint8 pixels (``x / 255``) or floats -> float64, in one pass."""
    return _convert(x, _LIKE64)


_TO_FLOAT = {"float32": to_float32, "float64": to_float64}


class NumbaOps(NumpyOps):
    """The ops as ``@njit`` kernels on NumPy arrays, and the network math compiled.

    The kernels are instance attributes holding numba dispatchers (not methods), so
    the network's factories capture compiled functions that compiled closures can
    call; ``to_float`` is the kernel for ``dtype``. Ops the network math does not call
    in compiled code (softmax, argmax, ...) are the NumPy backend's. SGD runs on the
    fast path of :mod:`.fastpath`.
    """

    name = "numba"
    needs_warmup = True
    fast_paths = ("simplenn.backends.numba.fastpath:SPARSE_SGD",)
    image_ops = "simplenn.backends.numba.images:NumbaImageOps"

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
        self.take = take
        self.to_float = _TO_FLOAT[self.dtype.name]

    def scalar(self, value: float) -> Any:
        """A NumPy scalar of ``self.dtype``, so the kernels compute in that precision."""
        return self.dtype.type(value)

    def jit(self, fn: Callable) -> Any:
        """Compile ``fn`` (a closure over this backend's kernels) with ``@njit``,
        inlined where another compiled closure calls it (no call overhead between a
        training step's pieces).

        Its cache UUID hashes its bytecode and what it captures, so a compiled
        closure is found in numba's cache by later processes.
        """
        dispatcher = njit(cache=CACHE, inline="always", nogil=True, error_model="numpy")(fn)
        cells = [c.cell_contents for c in (fn.__closure__ or ())]
        parts = [hashlib.sha256(marshal.dumps(fn.__code__)).hexdigest(), fn.__qualname__]
        for value in cells:
            uuid = _probes.dispatcher_uuid(value)
            if uuid is not None:
                parts.append(str(uuid))
            elif isinstance(value, types.ModuleType):
                parts.append(value.__name__)
            elif isinstance(value, (int, float, str, bool, type(None), np.generic)):
                parts.append(repr(value))
            else:
                return dispatcher  # something we can't hash stably: leave numba's UUID
        _set_stable_uuid(dispatcher, ":".join(parts))
        return dispatcher
