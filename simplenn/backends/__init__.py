"""Backend registry and selector.

``get_backend(name)`` returns an :class:`Ops` for ``numpy``, ``numba``, ``cupy`` or
``auto``. Optional libraries are probed here, once per process, and only when a
backend is asked for or listed: importing simplenn never imports numba or cupy.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import warnings
from dataclasses import dataclass

import numpy as np

from ..errors import BackendUnavailableError, UnknownBackendError
from .base import Array, Ops

__all__ = [
    "Array", "BACKEND_NAMES", "BackendInfo", "Ops", "available_backends", "default_backend_name",
    "get_backend", "probe_backend", "resolve_backend_name",
]

logger = logging.getLogger("simplenn")

#: Every backend simplenn knows, in the order ``auto`` prefers them (best last wins
#: only when available: cupy, then numba, then numpy).
BACKEND_NAMES = ("numpy", "numba", "cupy")
ENV_VAR = "SIMPLENN_BACKEND"

# name -> (module, Ops class, what to pip install when the library is missing)
_IMPLEMENTATIONS = {
    "numpy": ("simplenn.backends.numpy_backend", "NumpyOps", None),
    "numba": ("simplenn.backends.numba_backend", "NumbaOps", "pip install 'simplenn[numba]'"),
    "cupy": ("simplenn.backends.cupy_backend", "CupyOps",
             "pip install 'simplenn[cuda12]' (or 'simplenn[cuda13]' for CUDA 13 drivers)"),
}


@dataclass(frozen=True)
class BackendInfo:
    """Whether a backend can run here: ``reason`` says why not when it can't."""

    name: str
    available: bool
    reason: str | None = None
    version: str | None = None
    device: str | None = None

    def describe(self) -> str:
        """One human-readable line, as ``--list-backends`` prints it."""
        if self.available:
            detail = ", ".join(x for x in (self.version and f"version {self.version}", self.device) if x)
            return f"{self.name:<6} available" + (f" ({detail})" if detail else "")
        return f"{self.name:<6} unavailable: {self.reason}"


def _probe_numba() -> BackendInfo:
    try:
        import numba
    except ImportError as exc:  # missing, or broken against this NumPy
        return BackendInfo("numba", False, f"Numba is not installed or failed to import ({exc}); "
                           f"install it with {_IMPLEMENTATIONS['numba'][2]}")
    return BackendInfo("numba", True, version=numba.__version__, device="CPU, JIT-compiled")


# What a CUDA error met while probing means here, and what to do about it.
_CUDA_ERROR_HINTS = {
    "cudaErrorInsufficientDriver": "no NVIDIA driver is loaded (as on any machine without an "
                                   "NVIDIA GPU), or it is older than the CUDA runtime this CuPy "
                                   "was built for: install or update the driver, or pick the "
                                   "cupy-cudaXXx wheel that matches it",
    "cudaErrorNoDevice": "no CUDA-capable GPU is visible (check nvidia-smi and "
                         "CUDA_VISIBLE_DEVICES)",
    "cudaErrorInitializationError": "the CUDA driver failed to initialise (check nvidia-smi)",
}


def _cuda_error_reason(version: str, exc: Exception) -> str:
    """One line naming the CUDA error (e.g. cudaErrorInsufficientDriver) and its usual cause."""
    text = " ".join(str(exc).split())
    code = text.split(":", 1)[0] if text.startswith("cudaError") else type(exc).__name__
    detail = text.split(":", 1)[1].strip() if ":" in text and text.startswith("cudaError") else text
    hint = _CUDA_ERROR_HINTS.get(code, "the CUDA driver or device is not usable")
    return (f"CuPy {version} is installed but CUDA reports {code} ({detail}): {hint}")


def _probe_cupy() -> BackendInfo:
    fix = f"install it with {_IMPLEMENTATIONS['cupy'][2]}"
    try:
        with warnings.catch_warnings():  # keep CLI errors to one line; the reason says it all
            warnings.simplefilter("ignore")
            import cupy
    except ImportError as exc:
        return BackendInfo("cupy", False, f"CuPy is not installed or failed to import ({exc}); {fix}")
    except Exception as exc:  # CuPy raises assorted errors when its CUDA libraries are broken
        return BackendInfo("cupy", False, f"CuPy failed to import: {type(exc).__name__}: {exc}")
    version = getattr(cupy, "__version__", "?")
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # cupy.cuda.runtime.CUDARuntimeError and driver errors
        return BackendInfo("cupy", False, _cuda_error_reason(version, exc), version=version)
    if count < 1:
        return BackendInfo("cupy", False, f"CuPy {version} is installed but CUDA reports no "
                           f"device: {_CUDA_ERROR_HINTS['cudaErrorNoDevice']}", version=version)
    try:
        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    except Exception as exc:
        return BackendInfo("cupy", False, _cuda_error_reason(version, exc), version=version)
    return BackendInfo("cupy", True, version=version, device=f"GPU 0: {name}")


@functools.cache
def probe_backend(name: str) -> BackendInfo:
    """Whether backend ``name`` can run here, probed once per process."""
    name = _check_name(name, allow_auto=False)
    if name == "numpy":
        return BackendInfo("numpy", True, version=np.__version__, device="CPU")
    return _probe_numba() if name == "numba" else _probe_cupy()


def available_backends() -> list[BackendInfo]:
    """Every known backend, with whether it can run here and, if not, why."""
    return [probe_backend(name) for name in BACKEND_NAMES]


def _check_name(name: str, *, allow_auto: bool = True) -> str:
    valid = BACKEND_NAMES + (("auto",) if allow_auto else ())
    if not isinstance(name, str) or name.strip().lower() not in valid:
        raise UnknownBackendError(f"unknown backend {name!r}; valid names are: {', '.join(valid)}")
    return name.strip().lower()


def default_backend_name(fallback: str = "numpy") -> str:
    """``$SIMPLENN_BACKEND`` when set (and valid), else ``fallback``."""
    value = os.environ.get(ENV_VAR, "").strip()
    if not value:
        return fallback
    try:
        return _check_name(value)
    except UnknownBackendError as exc:
        raise UnknownBackendError(f"${ENV_VAR}={value!r}: {exc}") from None


def resolve_backend_name(name: str | None = None) -> str:
    """The concrete backend ``name`` stands for: ``None`` → ``$SIMPLENN_BACKEND`` or
    ``numpy``; ``auto`` → cupy when a CUDA device works, else numba when installed,
    else numpy (the choice is logged at INFO). Raises :class:`UnknownBackendError`."""
    name = default_backend_name() if name is None else _check_name(name)
    if name != "auto":
        return name
    skipped = []
    for candidate in ("cupy", "numba"):
        info = probe_backend(candidate)
        if info.available:
            logger.info("backend auto: chose %s%s", candidate,
                        f" ({'; '.join(skipped)})" if skipped else "")
            return candidate
        skipped.append(f"{candidate} skipped: {info.reason}")
    logger.info("backend auto: chose numpy (%s)", "; ".join(skipped))
    return "numpy"


def get_backend(name: str | None = None, dtype: str | np.dtype = "float32") -> Ops:
    """An :class:`Ops` instance for backend ``name`` computing in ``dtype``.

    A backend named explicitly never falls back: when it can't run here this raises
    :class:`BackendUnavailableError` naming the cause and the fix.
    """
    name = resolve_backend_name(name)
    info = probe_backend(name)
    if not info.available:
        instead = "--backend numba or --backend auto" if name == "cupy" else "--backend auto"
        raise BackendUnavailableError(
            f"backend {name!r} unavailable: {info.reason}; use {instead} instead "
            f"(backend='auto' in Python picks the best backend that runs here)")
    module_name, class_name, _ = _IMPLEMENTATIONS[name]
    ops_class = getattr(importlib.import_module(module_name), class_name)
    return ops_class(dtype)
