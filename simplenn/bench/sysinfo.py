"""What a benchmark report says about the machine: CPU, BLAS, GPU, versions, peak FLOP/s.

Everything here is read-only inspection except :func:`measure_sgemm_peak`, which times
a large float32 matrix product with NumPy to give the run a measured peak to compare
against. Optional libraries (threadpoolctl, numba, cupy, torch) are reported when
installed and never required.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import platform
import time
from typing import Any

import numpy as np

#: Environment variables that force OpenBLAS's kernel choice or cache-size guess; on
#: some machines they select a slower kernel than OpenBLAS would pick by itself.
OPENBLAS_ENV_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), with the number of logical CPUs."""
    name = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    name = name or platform.processor() or platform.machine() or "unknown CPU"
    return f"{name} ({os.cpu_count()} logical CPUs)"


def load_average() -> str:
    """The 1-minute load average as text (``"n/a"`` where the OS has none)."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except (AttributeError, OSError):
        return "n/a"


def blas_libraries() -> list[dict[str, Any]]:
    """The BLAS libraries loaded in this process, as threadpoolctl reports them.

    Each entry has ``internal_api`` (``openblas``, ``mkl``, ...), ``version``,
    ``num_threads``, ``architecture`` (OpenBLAS's kernel, e.g. ``Haswell``) and
    ``filepath``. Empty when threadpoolctl is not installed.
    """
    try:
        import threadpoolctl
    except ImportError:
        return []
    keys = ("internal_api", "version", "num_threads", "architecture", "threading_layer", "filepath")
    return [
        {k: info.get(k) for k in keys}
        for info in threadpoolctl.threadpool_info()
        if info.get("user_api") == "blas"
    ]


def numpy_blas_threads() -> int:
    """Threads NumPy's BLAS uses (threadpoolctl), else the number of logical CPUs."""
    for info in blas_libraries():
        path = str(info.get("filepath") or "")
        if "numpy" in path and info.get("num_threads"):
            return int(info["num_threads"])
    libs = blas_libraries()
    if libs and libs[0].get("num_threads"):
        return int(libs[0]["num_threads"])
    return os.cpu_count() or 1


def describe_blas(libs: list[dict[str, Any]] | None = None) -> str:
    """One line per BLAS library: ``openblas 0.3.31 (kernel Haswell, 2 threads) [file]``."""
    libs = blas_libraries() if libs is None else libs
    if not libs:
        return "unknown (install threadpoolctl to see which BLAS and how many threads)"
    lines = []
    for info in libs:
        kernel = f"kernel {info['architecture']}, " if info.get("architecture") else ""
        lines.append(
            f"{info['internal_api']} {info['version']} ({kernel}{info['num_threads']} "
            f"threads) [{os.path.basename(str(info['filepath']))}]"
        )
    return "; ".join(lines)


def openblas_env() -> dict[str, str]:
    """The OpenBLAS override variables that are set in this environment, name -> value."""
    return {k: os.environ[k] for k in OPENBLAS_ENV_VARS if k in os.environ}


def library_versions() -> dict[str, str | None]:
    """Versions of Python, simplenn and the libraries a run may use (None: not installed).

    Reads package metadata only, so it imports none of the optional libraries.
    """
    from .._version import __version__

    versions: dict[str, str | None] = {
        "python": platform.python_version(),
        "simplenn": __version__,
        "numpy": np.__version__,
    }
    for dist in (
        "numba",
        "cupy-cuda12x",
        "cupy-cuda13x",
        "torch",
        "jax",
        "jaxlib",
        "array-api-compat",
        "array-api-strict",
        "threadpoolctl",
    ):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def gpu_names() -> list[str]:
    """Names of the CUDA GPUs that CuPy or PyTorch can see (empty when none)."""
    from ..backends import available_backends

    names = sorted(
        {
            i.device
            for i in available_backends()
            if i.available and i.device and i.device.startswith("GPU")
        }
    )
    if not names and importlib.util.find_spec("torch") is not None:
        try:
            torch = importlib.import_module("torch")
            if torch.cuda.is_available():
                names = [
                    f"GPU {i}: {torch.cuda.get_device_name(i)}"
                    for i in range(torch.cuda.device_count())
                ]
        except Exception:  # a broken torch install: report no GPU rather than fail
            pass
    return names


def measure_sgemm_peak(n: int = 2048, repeat: int = 5) -> dict[str, float]:
    """This machine's measured float32 matrix-product peak, in FLOP/s.

    Times ``A @ B`` for two (n, n) float32 NumPy arrays ``repeat`` times (after one
    untimed warm-up) and counts ``2 n³`` floating-point operations per product; the
    best time gives ``flops_per_s``. Uses NumPy's BLAS with its current threads.
    """
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), dtype=np.float32)
    np.matmul(a, b, out=out)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return {"n": n, "repeat": repeat, "best_seconds": best, "flops_per_s": 2.0 * n**3 / best}
