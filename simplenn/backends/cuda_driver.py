"""Whether the NVIDIA driver can run CUDA here, asked of the driver itself, without CuPy.

The ``cupy`` backend's probe asks this before it imports CuPy, so that ``auto`` and
``--list-backends`` on a machine without an NVIDIA GPU neither import CuPy nor start its
CUDA runtime. :func:`cuda_driver_problem` loads the driver library (``libcuda.so.1`` on
Linux, WSL included; ``nvcuda.dll`` on Windows) with :mod:`ctypes` and calls the driver
API's documented ``cuInit`` and ``cuDeviceGetCount``, which CuPy's runtime calls too.

It refuses only on a definite answer: the library does not load, ``cuInit`` fails, or the
driver counts no device. In each case no CUDA library can run in this process, CuPy
included: CuPy loads the same ``libcuda.so.1`` (already loaded, then) and initialises it
the same way. Where the answer is not definite (a platform other than Linux, Windows or
macOS, a driver library without these functions) it refuses nothing, and CuPy's own probe
decides.
"""

from __future__ import annotations

import ctypes
import sys
from typing import Any

#: The NVIDIA driver library that every CUDA library loads, by ``sys.platform``.
DRIVER_LIBRARIES: dict[str, str] = {"linux": "libcuda.so.1", "win32": "nvcuda.dll"}

CUDA_SUCCESS = 0

#: What a ``CUresult`` from ``cuInit`` means here, and what to do about it (by its name in
#: the driver API's ``CUresult`` enum).
CUINIT_HINTS: dict[str, str] = {
    "CUDA_ERROR_NO_DEVICE": "no CUDA-capable GPU is visible (check nvidia-smi and "
    "CUDA_VISIBLE_DEVICES)",
    "CUDA_ERROR_STUB_LIBRARY": "the libcuda found is the CUDA toolkit's stub, not a driver "
    "(install the NVIDIA driver, or take the toolkit's stubs directory off the library path)",
    "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH": "the driver's library and kernel module differ in "
    "version (reboot, or reinstall the NVIDIA driver)",
    "CUDA_ERROR_INSUFFICIENT_DRIVER": "the NVIDIA driver is too old for this CUDA "
    "(update the driver)",
}
CUINIT_DEFAULT_HINT = "the NVIDIA driver failed to initialise (check nvidia-smi)"


def load_driver_library(name: str) -> Any:
    """The driver library ``name`` loaded with :mod:`ctypes`; ``OSError`` where it can't be."""
    return ctypes.CDLL(name)


def _error_name(lib: Any, code: int) -> str:
    """The ``CUresult`` ``code`` by its name (``cuGetErrorName``), else by its number."""
    text = ctypes.c_char_p()
    try:
        status = lib.cuGetErrorName(ctypes.c_int(code), ctypes.byref(text))
    except (AttributeError, ctypes.ArgumentError):
        status = -1
    if status == CUDA_SUCCESS and text.value:
        return text.value.decode(errors="replace")
    return f"CUresult {code}"


def cuda_driver_problem(platform: str | None = None) -> str | None:
    """Why CUDA can't run here, in one line naming the cause and the fix.

    ``platform`` is a ``sys.platform`` value (default: this one's). Returns ``None`` when
    the NVIDIA driver counts at least one device, or when this probe can't tell; a
    non-empty ``str`` (e.g. ``"no NVIDIA driver was found (libcuda.so.1: cannot open
    shared object file...): ..."``) when no CUDA device can run in this process.
    Imports nothing beyond :mod:`ctypes`.
    """
    platform = sys.platform if platform is None else platform
    if platform == "darwin":
        return "macOS has no CUDA driver: CuPy runs on Linux or Windows with an NVIDIA GPU"
    name = DRIVER_LIBRARIES.get(platform)
    if name is None:
        return None  # a platform this probe does not know: CuPy's probe decides
    try:
        lib = load_driver_library(name)
    except OSError as exc:
        detail = " ".join(str(exc).split()) or f"{name} not loadable"
        return (
            f"no NVIDIA driver was found ({detail}): install the NVIDIA driver, "
            f"on a machine with an NVIDIA GPU"
        )
    try:
        cu_init, cu_device_get_count = lib.cuInit, lib.cuDeviceGetCount
    except AttributeError:
        return None  # not the driver API this probe knows: CuPy's probe decides
    status = cu_init(ctypes.c_uint(0))
    if status != CUDA_SUCCESS:
        error = _error_name(lib, status)
        return f"the NVIDIA driver's cuInit failed with {error}: " + CUINIT_HINTS.get(
            error, CUINIT_DEFAULT_HINT
        )
    count = ctypes.c_int(0)
    status = cu_device_get_count(ctypes.byref(count))
    if status != CUDA_SUCCESS:
        error = _error_name(lib, status)
        return f"the NVIDIA driver's cuDeviceGetCount failed with {error}: " + CUINIT_DEFAULT_HINT
    if count.value < 1:
        return "the NVIDIA driver counts no device: " + CUINIT_HINTS["CUDA_ERROR_NO_DEVICE"]
    return None
