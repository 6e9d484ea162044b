"""Every private detail of another library that simplenn uses, each behind one probe.

This module is the fence: nothing else in simplenn reads a leading-underscore name of
another library or binds a symbol that a library does not document. Each probe answers
``None`` or ``False`` where the detail is missing (another version, another build), and
its caller then takes public API instead, with the same results.
``tests/test_probes.py`` forces each fallback and checks it, and fails, naming the
probe, where the libraries installed no longer have the detail, so that an upgrade
that removes one is noticed rather than silently slowing simplenn down.

- :func:`set_dispatcher_uuid` and :func:`dispatcher_uuid`: a Numba dispatcher's
  private ``_set_uuid`` and ``_uuid``. Numba keys the cache of a compiled closure on the
  pickled contents of its cells, which for captured dispatchers include a random
  per-process UUID (numba issue #6264); a UUID derived from the code instead makes
  the closures cacheable. Fallback: numba's own random UUIDs, so compiled closures
  are compiled again in each process.
- :func:`numpy_cblas_gemm`: the ILP64 ``cblas_?gemm`` of the BLAS NumPy links
  (``scipy_cblas_sgemm64_`` and the like in NumPy's wheels), found through NumPy's
  private extension module ``_multiarray_umath``, for the Numba backend's compiled
  kernels to call. Fallback: Numba's public ``np.dot``, which calls SciPy's BLAS.
"""

from __future__ import annotations

import ctypes
import logging
from typing import Any

#: Where NumPy's ILP64 ``cblas_?gemm`` goes by these names (NumPy's own OpenBLAS
#: wheels; a generic ILP64 build; Apple's Accelerate).
NUMPY_CBLAS_GEMM_NAMES = {
    "float32": ("scipy_cblas_sgemm64_", "cblas_sgemm64_", "cblas_sgemm$NEWLAPACK$ILP64"),
    "float64": ("scipy_cblas_dgemm64_", "cblas_dgemm64_", "cblas_dgemm$NEWLAPACK$ILP64"),
}


# -- numba: a dispatcher's UUID ---------------------------------------------------------


def set_dispatcher_uuid(dispatcher: Any, uuid: str) -> bool:
    """Give the numba ``dispatcher`` (an ``@njit`` function not yet pickled or hashed)
    the UUID ``uuid`` through numba's private ``Dispatcher._set_uuid``; returns whether
    it could (False where numba has no such method, or one that takes other
    arguments: the dispatcher keeps numba's random UUID)."""
    setter = getattr(dispatcher, "_set_uuid", None)
    if setter is None:
        return False
    try:
        setter(uuid)
    except TypeError:
        return False
    return True


def dispatcher_uuid(value: Any) -> str | None:
    """The UUID by which numba pickles ``value`` into a closure's cache key (a
    dispatcher's private ``_uuid``), or None where ``value`` has none (not a
    dispatcher, or a numba without the attribute)."""
    uuid = getattr(value, "_uuid", None)
    return uuid if isinstance(uuid, str) else None


# -- NumPy: the cblas gemm of its BLAS ----------------------------------------------------


def _numpy_extension() -> ctypes.CDLL | None:
    """NumPy's extension module as a shared library (whose symbol lookup includes the
    BLAS it links), or None."""
    try:
        from numpy._core import _multiarray_umath as extension
    except ImportError:  # NumPy < 2
        try:
            from numpy.core import _multiarray_umath as extension
        except ImportError:
            return None
    try:
        return ctypes.CDLL(extension.__file__)
    except (OSError, AttributeError):
        return None


def numpy_cblas_gemm() -> dict[str, tuple[int, str]] | None:
    """``{"float32": (address, name), "float64": (address, name)}``: where NumPy's ILP64
    ``cblas_sgemm`` and ``cblas_dgemm`` are in memory and the symbol names found
    (:data:`NUMPY_CBLAS_GEMM_NAMES`), or None where either is missing (another BLAS,
    an LP64 build, or a NumPy that hides them)."""
    library = _numpy_extension()
    if library is None:
        return None
    found = {}
    for dtype, names in NUMPY_CBLAS_GEMM_NAMES.items():
        for name in names:
            function = getattr(library, name, None)
            if function is not None:
                found[dtype] = ctypes.cast(function, ctypes.c_void_p).value, name
                break
        else:
            return None
    return found


#: The logger of JAX's private module that notes absent TPU and GPU platforms.
_JAX_PLATFORM_LOGGER = "jax._src.xla_bridge"


def silence_jax_platform_notes() -> None:
    """Keep JAX's notes about absent platforms (TPU, GPU) off the terminal when the jax
    backend is probed. They come from the logger of a private module,
    :data:`_JAX_PLATFORM_LOGGER`; should JAX rename it, the notes show and nothing else
    changes."""
    logging.getLogger(_JAX_PLATFORM_LOGGER).setLevel(logging.ERROR)


def bind_symbol(name: str, address: int) -> None:
    """Make the external symbol ``name``, which compiled Numba kernels call, resolve to
    the function at ``address`` (``llvmlite.binding.add_symbol``, public API). Here
    because what it binds is found here: NumPy's bundled cblas functions
    (:func:`numpy_cblas_gemm`), or a compiled fallback."""
    import llvmlite.binding

    llvmlite.binding.add_symbol(name, address)
