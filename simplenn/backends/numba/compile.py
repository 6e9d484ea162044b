"""How the Numba backend compiles: every kernel is ``@njit`` with numba's on-disk cache
(unless ``SIMPLENN_NUMBA_CACHE=0``) and a stable UUID, releasing the GIL, with NumPy's
error model (a float division by zero gives inf or nan, as in NumPy, and the loops
carry no exception paths: less code to compile).

Numba keys the cache of a closure on the pickled contents of its cells, which for
captured dispatchers include a random per-process UUID (numba issue #6264), so
closures would recompile in every process; :func:`_set_stable_uuid` gives every
dispatcher here a UUID derived from the backend's source instead, which makes the
compiled closures cacheable and invalidates them when any kernel's source changes.
That takes a private detail of numba, reached through :mod:`simplenn._probes` only.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
from numba import njit

from ... import _probes

#: ``SIMPLENN_NUMBA_CACHE=0`` turns numba's on-disk compilation cache off.
CACHE_ENV_VAR = "SIMPLENN_NUMBA_CACHE"


def _cache_probe() -> None:
    """Nothing: decorating it with ``cache=True`` asks numba where it would cache."""


def _cache_usable() -> bool:
    """Whether numba finds a writable place for this package's cache (next to the
    source, else a user-wide cache directory); decorating compiles nothing."""
    try:
        njit(cache=True)(_cache_probe)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return False
    return True


CACHE = os.environ.get(CACHE_ENV_VAR, "1").strip() not in ("0", "false", "no", "off")
if CACHE and not _cache_usable():
    CACHE = False
    warnings.warn(
        "numba finds no writable place to cache compiled code, so every process "
        "compiles again: set NUMBA_CACHE_DIR to a writable directory "
        f"(or {CACHE_ENV_VAR}=0 to silence this)",
        RuntimeWarning,
        stacklevel=2,
    )

#: A hash of every source file of this backend and of numba's version.
_SOURCE_HASH = hashlib.sha256(
    b"".join(p.read_bytes() for p in sorted(Path(__file__).parent.glob("*.py")))
    + numba.__version__.encode()
).hexdigest()


def _set_stable_uuid(dispatcher: Any, content: str) -> bool:
    """Give ``dispatcher`` a UUID that is a hash of ``content`` (its code), so that
    closures capturing it hash the same in every process and can be cached; returns
    whether it could.

    Where numba offers no way (:func:`simplenn._probes.set_dispatcher_uuid`), nothing
    changes except that closures are compiled again in each process.
    """
    uuid = "simplenn-" + hashlib.sha256(content.encode()).hexdigest()
    return _probes.set_dispatcher_uuid(dispatcher, uuid)


def _kernel(
    fn: Callable | None = None,
    *,
    inline: str = "never",
    parallel: bool = False,
    contract: bool = False,
) -> Any:
    """``@njit`` a module-level function (cached unless disabled, releasing the GIL,
    NumPy's error model), with a stable UUID.

    Every njit function of this backend needs one: closures pickle the kernels they
    capture by value, and with them the helpers those kernels call. ``inline="always"``
    is for helpers called in hot loops (a call that passes arrays updates their
    reference counts, an inlined body does not) and for small kernels that compiled
    closures call once per chunk (an inlined body is not compiled on its own, and every
    function compiled on its own adds to a first run's compile time). ``parallel`` is
    for kernels that run between training calls and call BLAS, if at all, only while it
    runs on one thread (:func:`.blas.products_on_numba_threads`): its threads and
    numba's compete. ``contract`` lets a multiply and an add become one fused
    multiply-add (one rounding instead of two; no other reordering)."""
    if fn is None:
        return lambda f: _kernel(f, inline=inline, parallel=parallel, contract=contract)
    dispatcher = njit(
        cache=CACHE,
        inline=inline,
        nogil=True,
        parallel=parallel,
        error_model="numpy",
        fastmath={"contract"} if contract else False,
    )(fn)
    _set_stable_uuid(dispatcher, f"{_SOURCE_HASH}:{fn.__module__}.{fn.__qualname__}")
    return dispatcher
