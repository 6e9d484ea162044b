"""The BLAS ``gemm`` that compiled Numba kernels call: NumPy's own, where it can be found.

Numba's ``np.dot`` calls SciPy's BLAS, which is a second OpenBLAS build (SciPy's
wheels bundle their own), with a thread pool of its own, and not always as fast as
NumPy's (docs/numba.md#blas-from-compiled-code). So the kernels call
``simplenn_sgemm`` / ``simplenn_dgemm`` instead, external symbols with the signature of
ILP64 ``cblas_?gemm`` that :func:`register` binds, before anything is compiled or
loaded from the cache, to:

- NumPy's ``cblas_?gemm`` (found by :func:`simplenn._probes.numpy_cblas_gemm`, the
  one place that reaches into NumPy's build), so both CPU backends multiply with one
  library -- the same numbers, one thread pool; or
- where NumPy's BLAS has no ILP64 ``cblas_?gemm`` to find (or with
  ``SIMPLENN_NUMBA_BLAS=scipy``), a compiled shim of the same signature around
  Numba's public ``np.dot``, which needs SciPy (not installed with the ``numba`` extra:
  Numba imports ``scipy.linalg`` when it can, which lengthens every process's start).

Because the symbol names never change, compiled kernels stay cacheable either way.

NumPy's OpenBLAS keeps its own threads, which spin for a while after each product.
Numba's parallel loops (the augmentation's) running beside them share the cores with
those spinning threads and run slower, and then hold the cores from OpenBLAS in turn.
:func:`products_on_numba_threads` removes the second pool for a while: BLAS runs on
one thread (set through threadpoolctl), and the kernels split their large products
over numba's threads, so everything parallel runs on one pool.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from numba import carray, cfunc, types

from ... import _probes
from ...errors import BackendUnavailableError

#: ``SIMPLENN_NUMBA_BLAS=scipy`` makes compiled kernels use Numba's own ``np.dot``
#: (SciPy's BLAS) instead of NumPy's.
BLAS_ENV_VAR = "SIMPLENN_NUMBA_BLAS"
#: The external symbol compiled kernels call, per dtype.
SYMBOLS = {"float32": "simplenn_sgemm", "float64": "simplenn_dgemm"}
#: cblas constants (row-major storage; no transpose; transpose).
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112


def gemm_signature(dtype: str) -> types.Signature:
    """``cblas_?gemm(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c,
    ldc)`` with 64-bit sizes; pointers are passed as integers (``arr.ctypes.data``)."""
    t = types.float32 if dtype == "float32" else types.float64
    i32, i64, ptr = types.int32, types.int64, types.uintp
    return types.void(i32, i32, i32, i64, i64, i64, t, ptr, i64, ptr, i64, t, ptr, i64)


#: Whether :func:`register` bound the kernels' products to NumPy's BLAS (whose thread
#: count :func:`products_on_numba_threads` sets, with every other BLAS's).
_numpy_bound = False
#: The functions compiled kernels call: ``sgemm(...)``, ``dgemm(...)`` as in
#: :func:`gemm_signature`, bound by :func:`register`.
sgemm = types.ExternalFunction(SYMBOLS["float32"], gemm_signature("float32"))
dgemm = types.ExternalFunction(SYMBOLS["float64"], gemm_signature("float64"))


def _numba_dot_gemm(dtype: str):
    """A compiled ``cblas_?gemm`` of tightly packed row-major matrices (``lda`` etc.
    equal to the row lengths, as every caller here passes) around ``np.dot``."""
    t = types.float32 if dtype == "float32" else types.float64
    pointer = types.CPointer(t)
    i32, i64 = types.int32, types.int64
    signature = types.void(
        i32, i32, i32, i64, i64, i64, t, pointer, i64, pointer, i64, t, pointer, i64
    )

    @cfunc(signature, cache=True)
    def gemm(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        A = carray(a, (m, k)) if trans_a == NO_TRANS else np.ascontiguousarray(carray(a, (k, m)).T)
        B = carray(b, (k, n)) if trans_b == NO_TRANS else np.ascontiguousarray(carray(b, (n, k)).T)
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
            f"set it to 'numpy' (the default) or 'scipy', or unset it"
        )
    global _numpy_bound
    found = None if forced == "scipy" else _probes.numpy_cblas_gemm()
    if found is not None:
        for dtype, symbol in SYMBOLS.items():
            _probes.bind_symbol(symbol, found[dtype][0])
        _numpy_bound = True
        return f"NumPy's BLAS ({found['float32'][1]}, {found['float64'][1]})"
    try:
        import scipy  # noqa: F401  (Numba's np.dot calls SciPy's BLAS)
    except ImportError:
        why = (
            f"{BLAS_ENV_VAR}=scipy asks for Numba's np.dot, which"
            if forced
            else "NumPy's BLAS has no ILP64 cblas_?gemm to call here, and the fallback, "
            "Numba's np.dot,"
        )
        raise BackendUnavailableError(
            f"backend 'numba' unavailable: {why} needs SciPy, which is not installed; "
            f"install it with pip install scipy" + (f", or unset {BLAS_ENV_VAR}" if forced else "")
        ) from None
    for dtype, symbol in SYMBOLS.items():
        _probes.bind_symbol(symbol, _numba_dot_gemm(dtype).address)
    return "Numba's np.dot (SciPy's BLAS)"


@functools.lru_cache(maxsize=1)
def _blas_controller() -> Any | None:
    """threadpoolctl's controller of the BLAS libraries loaded in the process, or None
    where threadpoolctl is not installed or finds none. Built once, on first use: a
    controller inspects every library loaded in the process when it is built, and
    NumPy's BLAS, the one that matters here, is loaded by then."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    controller = ThreadpoolController().select(user_api="blas")
    return controller if controller.info() else None


_POOL_LOCK = threading.Lock()
_pool_users = 0
#: The threadpoolctl limiter that holds BLAS on one thread while the pool is in use.
_limiter: Any = None


def one_pool_active() -> bool:
    """Whether :func:`products_on_numba_threads` is in effect (in any thread of the
    process: BLAS's thread count is the process's)."""
    return _pool_users > 0


@contextmanager
def products_on_numba_threads() -> Iterator[bool]:
    """While inside: BLAS runs on one thread, and the training steps and the elastic
    fields split their work over numba's threads (see the module's docstring); yields
    whether it could: not where the kernels call another BLAS than NumPy's (the SciPy
    fallback), or threadpoolctl is missing or finds no BLAS whose threads it can set.

    Every BLAS that threadpoolctl controls in the process runs on one thread meanwhile.
    Nests, and restores the thread counts on leaving the outermost."""
    global _pool_users, _limiter
    controller = _blas_controller() if _numpy_bound else None
    if controller is None:
        yield False
        return
    with _POOL_LOCK:
        if _pool_users == 0:
            _limiter = controller.limit(limits=1)
        _pool_users += 1
    try:
        yield True
    finally:
        with _POOL_LOCK:
            _pool_users -= 1
            if _pool_users == 0:
                _limiter.restore_original_limits()
                _limiter = None
