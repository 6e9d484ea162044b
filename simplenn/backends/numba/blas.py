"""The BLAS ``gemm`` that compiled Numba kernels call: NumPy's own, where it can be found.

Numba's ``np.dot`` calls SciPy's BLAS, which is a second OpenBLAS build (SciPy's
wheels bundle their own) and not always as fast as NumPy's: measured here for
``xᵀ dl1`` (2048 x 784 by 2048 x 128, float32, two threads, the same ``cblas_sgemm``
call through ctypes) NumPy's OpenBLAS 0.3.31 took 3.7 ms, SciPy's 0.3.30 5.4 ms. So
the kernels call ``simplenn_sgemm`` / ``simplenn_dgemm`` instead, external symbols with
the signature of ILP64 ``cblas_?gemm`` that :func:`register` binds, before anything is
compiled or loaded from the cache, to:

- NumPy's ``cblas_?gemm`` (found through NumPy's extension module, which links it), so
  both CPU backends multiply with one library -- the same numbers, one thread pool; or
- where NumPy's BLAS has no ILP64 ``cblas_?gemm`` to find (or with
  ``SIMPLENN_NUMBA_BLAS=scipy``), a compiled shim of the same signature around
  Numba's ``np.dot``, which needs SciPy (not installed with the ``numba`` extra:
  Numba imports ``scipy.linalg`` when it can, which costs every process ~0.08 s).

Because the symbol names never change, compiled kernels stay cacheable either way.

NumPy's OpenBLAS keeps its own threads, which spin for a while after each product.
Numba's parallel loops (the augmentation's) running beside them share the cores with
those spinning threads and take two to three times as long, and then hold the cores
from OpenBLAS in turn. :func:`products_on_numba_threads` removes the second pool for a
while: OpenBLAS runs on one thread, and the kernels split their large products over
numba's threads, so everything parallel runs on one pool.
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import llvmlite.binding
import numpy as np
from numba import carray, cfunc, types

from ...errors import BackendUnavailableError

#: ``SIMPLENN_NUMBA_BLAS=scipy`` makes compiled kernels use Numba's own ``np.dot``
#: (SciPy's BLAS) instead of NumPy's.
BLAS_ENV_VAR = "SIMPLENN_NUMBA_BLAS"
#: The external symbol compiled kernels call, per dtype.
SYMBOLS = {"float32": "simplenn_sgemm", "float64": "simplenn_dgemm"}
#: cblas constants (row-major storage; no transpose; transpose).
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112
#: Where NumPy's ILP64 ``cblas_?gemm`` goes by these names (NumPy's own OpenBLAS
#: wheels; a generic ILP64 build; Apple's Accelerate).
_NUMPY_CANDIDATES = {
    "float32": ("scipy_cblas_sgemm64_", "cblas_sgemm64_", "cblas_sgemm$NEWLAPACK$ILP64"),
    "float64": ("scipy_cblas_dgemm64_", "cblas_dgemm64_", "cblas_dgemm$NEWLAPACK$ILP64"),
}
#: Where NumPy's OpenBLAS has its thread count getter and setter.
_THREAD_FUNCTIONS = (("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
                     ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
                     ("openblas_get_num_threads", "openblas_set_num_threads"))


def gemm_signature(dtype: str) -> types.Signature:
    """``cblas_?gemm(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c,
    ldc)`` with 64-bit sizes; pointers are passed as integers (``arr.ctypes.data``)."""
    t = types.float32 if dtype == "float32" else types.float64
    i32, i64, ptr = types.int32, types.int64, types.uintp
    return types.void(i32, i32, i32, i64, i64, i64, t, ptr, i64, ptr, i64, t, ptr, i64)


#: Whether :func:`register` bound the kernels' products to NumPy's BLAS (whose thread
#: count :func:`products_on_numba_threads` sets).
_numpy_bound = False
#: The functions compiled kernels call: ``sgemm(...)``, ``dgemm(...)`` as in
#: :func:`gemm_signature`, bound by :func:`register`.
sgemm = types.ExternalFunction(SYMBOLS["float32"], gemm_signature("float32"))
dgemm = types.ExternalFunction(SYMBOLS["float64"], gemm_signature("float64"))


def _numpy_library() -> ctypes.CDLL | None:
    """NumPy's extension module as a library, whose symbol lookup includes the BLAS it
    links, or None."""
    try:
        from numpy._core import _multiarray_umath as extension
    except ImportError:  # NumPy < 2
        from numpy.core import _multiarray_umath as extension
    try:
        return ctypes.CDLL(extension.__file__)
    except OSError:
        return None


def _numpy_gemm_addresses() -> dict[str, tuple[int, str]] | None:
    """Address and name of NumPy's ILP64 ``cblas_?gemm`` per dtype, or None."""
    library = _numpy_library()
    if library is None:
        return None
    found = {}
    for dtype, names in _NUMPY_CANDIDATES.items():
        for name in names:
            function = getattr(library, name, None)
            if function is not None:
                found[dtype] = ctypes.cast(function, ctypes.c_void_p).value, name
                break
        else:
            return None
    return found


def _numba_dot_gemm(dtype: str):
    """A compiled ``cblas_?gemm`` of tightly packed row-major matrices (``lda`` etc.
    equal to the row lengths, as every caller here passes) around ``np.dot``."""
    t = types.float32 if dtype == "float32" else types.float64
    pointer = types.CPointer(t)
    i32, i64 = types.int32, types.int64
    signature = types.void(i32, i32, i32, i64, i64, i64, t, pointer, i64, pointer, i64, t,
                           pointer, i64)

    @cfunc(signature, cache=True)
    def gemm(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        A = carray(a, (m, k)) if trans_a == NO_TRANS else np.ascontiguousarray(
            carray(a, (k, m)).T)
        B = carray(b, (k, n)) if trans_b == NO_TRANS else np.ascontiguousarray(
            carray(b, (n, k)).T)
        C = carray(c, (m, n))
        product = np.dot(A, B)
        for i in range(m):
            for j in range(n):
                C[i, j] = alpha * product[i, j] + (beta * C[i, j] if beta != 0 else 0)

    return gemm


def register() -> str:
    """Bind :data:`SYMBOLS` (once per process, before kernels compile or load) and
    return which BLAS they reach, in words."""
    forced = os.environ.get(BLAS_ENV_VAR, "").strip().lower()
    if forced not in ("", "numpy", "scipy"):
        raise BackendUnavailableError(
            f"backend 'numba' unavailable: {BLAS_ENV_VAR}={forced!r} is not understood; "
            f"set it to 'numpy' (the default) or 'scipy', or unset it")
    global _numpy_bound
    found = None if forced == "scipy" else _numpy_gemm_addresses()
    if found is not None:
        for dtype, symbol in SYMBOLS.items():
            llvmlite.binding.add_symbol(symbol, found[dtype][0])
        _numpy_bound = True
        return f"NumPy's BLAS ({found['float32'][1]}, {found['float64'][1]})"
    try:
        import scipy  # noqa: F401  (Numba's np.dot calls SciPy's BLAS)
    except ImportError:
        why = (f"{BLAS_ENV_VAR}=scipy asks for Numba's np.dot, which" if forced else
               "NumPy's BLAS has no ILP64 cblas_?gemm to call here, and the fallback, "
               "Numba's np.dot,")
        raise BackendUnavailableError(
            f"backend 'numba' unavailable: {why} needs SciPy, which is not installed; "
            f"install it with pip install scipy"
            + (f", or unset {BLAS_ENV_VAR}" if forced else "")) from None
    for dtype, symbol in SYMBOLS.items():
        llvmlite.binding.add_symbol(symbol, _numba_dot_gemm(dtype).address)
    return "Numba's np.dot (SciPy's BLAS)"


@functools.lru_cache(maxsize=1)
def _openblas_threads() -> tuple[Any, Any] | None:
    """NumPy's OpenBLAS ``get_num_threads`` and ``set_num_threads``, or None (another
    BLAS, or one that hides them)."""
    library = _numpy_library()
    for get_name, set_name in _THREAD_FUNCTIONS if library is not None else ():
        getter, setter = getattr(library, get_name, None), getattr(library, set_name, None)
        if getter is not None and setter is not None:
            getter.restype, getter.argtypes = ctypes.c_int, []
            setter.restype, setter.argtypes = None, [ctypes.c_int]
            return getter, setter
    return None


_POOL_LOCK = threading.Lock()
_pool_users = 0
_saved_threads = 0


def one_pool_active() -> bool:
    """Whether :func:`products_on_numba_threads` is in effect (in any thread of the
    process: BLAS's thread count is the process's)."""
    return _pool_users > 0


@contextmanager
def products_on_numba_threads() -> Iterator[bool]:
    """While inside: NumPy's OpenBLAS runs on one thread, and the training steps and the
    elastic fields split their large products over numba's threads (see the module's
    docstring); yields whether it could: not where the kernels call another BLAS
    than NumPy's (the SciPy fallback), or NumPy's is not an OpenBLAS whose thread count
    can be set. Nests, and restores the thread count on leaving."""
    global _pool_users, _saved_threads
    functions = _openblas_threads() if _numpy_bound else None
    if functions is None:
        yield False
        return
    getter, setter = functions
    with _POOL_LOCK:
        if _pool_users == 0:
            _saved_threads = getter()
            setter(1)
        _pool_users += 1
    try:
        yield True
    finally:
        with _POOL_LOCK:
            _pool_users -= 1
            if _pool_users == 0:
                setter(_saved_threads)
