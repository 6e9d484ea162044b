"""cuBLAS called directly: ``cublas{S,D}gemm_v2`` through ``ctypes`` on CuPy's cuBLAS
handle and current stream, bound to the very ``libcublas`` CuPy loaded (its path read
from ``/proc/self/maps``). CuPy's own cuBLAS wrappers refuse to run while a stream is
being captured into a CUDA graph; these calls don't, so the products of captured
training chunks go through them (see :mod:`.graphs`). :func:`gemm_arguments` maps each
row-major product onto column-major cuBLAS without transposed copies.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os

import cupy

from ..base import Array

logger = logging.getLogger("simplenn")

_CUBLAS_OP_N, _CUBLAS_OP_T, _CUBLAS_POINTER_MODE_HOST = 0, 1, 0


def _loaded_library_path(prefix: str) -> str | None:
    """Path of the already loaded shared library whose file name starts with ``prefix``
    (Linux: read from ``/proc/self/maps``), so ctypes binds to the very copy CuPy uses."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                path = line.rstrip("\n").split(maxsplit=5)[-1]
                if os.path.basename(path).startswith(prefix):
                    return path
    except OSError:
        pass
    return None


def gemm_arguments(trans_a: bool, trans_b: bool, m: int, n: int, k: int) -> tuple[int, ...]:
    """cuBLAS (column-major) arguments for the row-major product ``C = op(a) op(b)``.

    ``op(a)`` is (m, k) and ``op(b)`` (k, n); ``a`` is stored C-contiguous as (m, k), or
    as (k, m) when ``trans_a``; ``b`` as (k, n), or (n, k) when ``trans_b``. A row-major
    (r, c) array is the column-major (c, r) matrix of its transpose, so row-major C is
    column-major ``Cᵀ = op(b)ᵀ op(a)ᵀ``: the GEMM's first operand is ``b``, its second
    ``a``. Returns ``(transa, transb, M, N, K, lda, ldb, ldc)`` of ``cublas?gemm`` with
    ``A = b``, ``B = a``, ``C = out`` (0 = CUBLAS_OP_N, 1 = CUBLAS_OP_T).
    """
    op = {False: _CUBLAS_OP_N, True: _CUBLAS_OP_T}
    return (op[trans_b], op[trans_a], n, m, k, k if trans_b else n, m if trans_a else k, n)


class _CublasGemm:
    """Row-major ``op(a) op(b)`` through ``cublas{S,D}gemm_v2`` on CuPy's cuBLAS handle and
    the current CuPy stream, into a new C-contiguous array; legal under stream capture."""

    def __init__(self, path: str) -> None:
        lib = ctypes.CDLL(path)
        vp, i = ctypes.c_void_p, ctypes.c_int
        self._set_stream = lib.cublasSetStream_v2
        self._set_stream.argtypes, self._set_stream.restype = [vp, vp], i
        self._set_pointer_mode = lib.cublasSetPointerMode_v2
        self._set_pointer_mode.argtypes, self._set_pointer_mode.restype = [vp, i], i
        self._gemm = {}
        for dtype, name, ctype in (
            ("float32", "cublasSgemm_v2", ctypes.c_float),
            ("float64", "cublasDgemm_v2", ctypes.c_double),
        ):
            fn = getattr(lib, name)
            fn.argtypes = [
                vp,
                i,
                i,
                i,
                i,
                i,
                ctypes.POINTER(ctype),
                vp,
                i,
                vp,
                i,
                ctypes.POINTER(ctype),
                vp,
                i,
            ]
            fn.restype = i
            self._gemm[dtype] = (fn, ctype(1.0), ctype(0.0))

    def __call__(
        self, trans_a: bool, trans_b: bool, a: Array, b: Array, m: int, n: int, k: int
    ) -> Array:
        """(m, n) = op(a) op(b) with op(a) (m, k), op(b) (k, n); a, b C-contiguous,
        ``trans_a`` meaning ``a`` is stored (k, m), ``trans_b`` that ``b`` is (n, k)."""
        out = cupy.empty((m, n), dtype=a.dtype)
        if m == 0 or n == 0:
            return out
        if k == 0:
            out.fill(0)
            return out
        fn, one, zero = self._gemm[a.dtype.name]
        op_1, op_2, rows, cols, inner, ld_1, ld_2, ld_out = gemm_arguments(
            trans_a, trans_b, m, n, k
        )
        handle = cupy.cuda.device.get_cublas_handle()
        self._check(self._set_stream(handle, cupy.cuda.get_current_stream().ptr))
        self._check(self._set_pointer_mode(handle, _CUBLAS_POINTER_MODE_HOST))
        self._check(
            fn(
                handle,
                op_1,
                op_2,
                rows,
                cols,
                inner,
                ctypes.byref(one),
                b.data.ptr,
                ld_1,
                a.data.ptr,
                ld_2,
                ctypes.byref(zero),
                out.data.ptr,
                ld_out,
            )
        )
        return out

    @staticmethod
    def _check(status: int) -> None:
        if status != 0:
            raise RuntimeError(f"cuBLAS GEMM failed with cublasStatus_t {status}")


@functools.cache
def _direct_gemm() -> _CublasGemm | None:
    """The direct cuBLAS GEMM, or None (logged once) when it can't be set up here."""
    try:
        cupy.cuda.device.get_cublas_handle()  # loads CuPy's libcublas and makes the handle
        path = _loaded_library_path("libcublas.so")
        if path is None:
            raise OSError("CuPy's libcublas is not among the loaded libraries")
        return _CublasGemm(path)
    except (OSError, AttributeError) as exc:
        logger.info(
            "cupy backend: calling cuBLAS directly is not possible (%s); products "
            "use cupy.matmul and CUDA graphs are off",
            exc,
        )
        return None
