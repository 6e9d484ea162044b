"""simplenn's own backends, registered as any other package registers one.

Each is one :func:`~simplenn.backends.register` call: a factory named as
``"module:class"`` (imported only when the backend is built) and a probe that imports
the backend's library only when the backend is listed or asked for.
"""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np

from .registry import Availability, missing_library_reason, register

NUMBA_HINT = "pip install numba (from a simplenn checkout: pip install '.[numba]')"
CUPY_HINT = (
    "pip install cupy-cuda12x, or cupy-cuda13x for CUDA 13 drivers "
    "(from a simplenn checkout: pip install '.[cuda12]' or '.[cuda13]')"
)
STRICT_HINT = "pip install array-api-strict (from a simplenn checkout: pip install '.[strict]')"


def _probe_numpy() -> Availability:
    return Availability(True, version=np.__version__, device="CPU")


def _probe_numba() -> Availability:
    try:
        import numba
    except ImportError as exc:  # missing, or broken against this NumPy
        return Availability(False, missing_library_reason("Numba", exc, NUMBA_HINT))
    return Availability(True, version=numba.__version__, device="CPU, JIT-compiled")


# What a CUDA error met while probing means here, and what to do about it.
CUDA_ERROR_HINTS = {
    "cudaErrorInsufficientDriver": "no NVIDIA driver is loaded (as on any machine without an "
    "NVIDIA GPU), or it is older than the CUDA runtime this CuPy "
    "was built for: install or update the driver, or pick the "
    "cupy-cudaXXx wheel that matches it",
    "cudaErrorNoDevice": "no CUDA-capable GPU is visible (check nvidia-smi and "
    "CUDA_VISIBLE_DEVICES)",
    "cudaErrorInitializationError": "the CUDA driver failed to initialise (check nvidia-smi)",
}


def cuda_error_reason(version: str, exc: Exception) -> str:
    """One line naming the CUDA error (e.g. cudaErrorInsufficientDriver) and its usual cause."""
    text = " ".join(str(exc).split())
    code = text.split(":", 1)[0] if text.startswith("cudaError") else type(exc).__name__
    detail = text.split(":", 1)[1].strip() if ":" in text and text.startswith("cudaError") else text
    hint = CUDA_ERROR_HINTS.get(code, "the CUDA driver or device is not usable")
    return f"CuPy {version} is installed but CUDA reports {code} ({detail}): {hint}"


def _installed(module: str) -> bool:
    """Whether top-level ``module`` can be imported, found without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except ValueError:  # in sys.modules already, without a spec
        return True


def _probe_cupy() -> Availability:
    from .cuda_driver import cuda_driver_problem

    # Cheap answers first, so that a machine without an NVIDIA GPU never imports CuPy.
    if not _installed("cupy"):
        missing = ModuleNotFoundError("No module named 'cupy'")
        return Availability(False, missing_library_reason("CuPy", missing, CUPY_HINT))
    problem = cuda_driver_problem()
    if problem is not None:
        return Availability(False, f"CuPy is installed but {problem}")
    try:
        with warnings.catch_warnings():  # keep CLI errors to one line; the reason says it all
            warnings.simplefilter("ignore")
            import cupy
    except ImportError as exc:
        return Availability(False, missing_library_reason("CuPy", exc, CUPY_HINT))
    except Exception as exc:  # CuPy raises assorted errors when its CUDA libraries are broken
        return Availability(False, f"CuPy failed to import: {type(exc).__name__}: {exc}")
    version = getattr(cupy, "__version__", "?")
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # cupy.cuda.runtime.CUDARuntimeError and driver errors
        return Availability(False, cuda_error_reason(version, exc), version=version)
    if count < 1:
        return Availability(
            False,
            f"CuPy {version} is installed but CUDA reports no device: "
            f"{CUDA_ERROR_HINTS['cudaErrorNoDevice']}",
            version=version,
        )
    try:
        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    except Exception as exc:
        return Availability(False, cuda_error_reason(version, exc), version=version)
    return Availability(True, version=version, device=f"GPU 0: {name}")


def _probe_strict() -> Availability:
    try:
        import array_api_strict
    except ImportError as exc:
        return Availability(False, missing_library_reason("array-api-strict", exc, STRICT_HINT))
    return Availability(
        True,
        version=array_api_strict.__version__,
        device="CPU, the array API standard and nothing else",
    )


register("numpy", "simplenn.backends.numpy_backend:NumpyOps", probe=_probe_numpy, priority=0)
register(
    "numba",
    "simplenn.backends.numba:NumbaOps",
    probe=_probe_numba,
    install_hint=NUMBA_HINT,
    priority=10,
)
register(
    "cupy", "simplenn.backends.cupy:CupyOps", probe=_probe_cupy, install_hint=CUPY_HINT, priority=20
)
register(
    "strict",
    "simplenn.backends.strict_backend:StrictOps",
    probe=_probe_strict,
    install_hint=STRICT_HINT,
    priority=-1,
)
