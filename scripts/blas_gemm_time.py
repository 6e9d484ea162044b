"""Time one ``cblas_sgemm`` call -- the first layer's weight gradient ``xᵀ dl1`` -- in
NumPy's OpenBLAS and in SciPy's, through ctypes with identical arguments, each in a
process of its own (two OpenBLAS thread pools in one process slow each other down)::

    python scripts/blas_gemm_time.py            # batch 2048, hidden 128
    python scripts/blas_gemm_time.py 512 512    # batch 512, hidden 512

This is why the Numba kernels call NumPy's BLAS rather than Numba's ``np.dot`` (which
calls SciPy's); see ``simplenn/backends/numba/blas.py``. Linux wheels of NumPy >= 2
and SciPy only (it looks for their bundled ``libscipy_openblas`` builds).
"""

from __future__ import annotations

import ctypes
import glob
import os
import statistics
import subprocess
import sys
import time

import numpy as np

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112


def library(which: str) -> tuple[str, str, type]:
    """(path, symbol, integer type) of NumPy's ILP64 or SciPy's LP64 OpenBLAS."""
    import numpy
    import scipy

    if which == "numpy":
        folder, pattern = os.path.dirname(numpy.__file__) + ".libs", "libscipy_openblas64_*"
        return glob.glob(os.path.join(folder, pattern))[0], "scipy_cblas_sgemm64_", ctypes.c_int64
    folder, pattern = os.path.dirname(scipy.__file__) + ".libs", "libscipy_openblas-*"
    return glob.glob(os.path.join(folder, pattern))[0], "scipy_cblas_sgemm", ctypes.c_int


def time_one(which: str, m: int, h: int) -> None:
    path, symbol, integer = library(which)
    sgemm = getattr(ctypes.CDLL(path), symbol)
    ptr = ctypes.c_void_p
    sgemm.argtypes = (
        [ctypes.c_int] * 3
        + [integer] * 3
        + [ctypes.c_float, ptr, integer, ptr, integer, ctypes.c_float, ptr, integer]
    )
    rng = np.random.default_rng(0)
    x = (rng.random((m, 784)) * (rng.random((m, 784)) < 0.19)).astype(np.float32)
    d = rng.standard_normal((m, h)).astype(np.float32)
    out = np.empty((784, h), np.float32)

    def call() -> None:  # out = xᵀ d, row-major
        sgemm(
            ROW_MAJOR,
            TRANS,
            NO_TRANS,
            784,
            h,
            m,
            1.0,
            x.ctypes.data,
            784,
            d.ctypes.data,
            h,
            0.0,
            out.ctypes.data,
            h,
        )

    call()
    assert np.allclose(out, x.T @ d, rtol=1e-4, atol=1e-3)
    times = []
    for _ in range(40):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    print(
        f"{which:5s} {os.path.basename(path)}: xᵀ dl1 ({m}x784)ᵀ({m}x{h}) best "
        f"{min(times) * 1e3:.2f} ms, median {statistics.median(times) * 1e3:.2f} ms"
    )


if __name__ == "__main__":
    m, h = (int(a) for a in (sys.argv[1:3] if len(sys.argv) >= 3 else (2048, 128)))
    if len(sys.argv) == 4:
        time_one(sys.argv[3], m, h)
    else:
        for which in ("numpy", "scipy"):
            subprocess.run([sys.executable, __file__, str(m), str(h), which], check=True)
