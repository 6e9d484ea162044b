"""Array backends: the :class:`Ops` interface, the registry and the selector.

``get_backend(name)`` returns an :class:`Ops` for any registered backend (numpy,
numba, cupy, strict, and those of installed plug-in packages) or ``auto``. Optional
libraries are probed once per process, and only when a backend is asked for or
listed: importing simplenn imports NumPy only.
"""

from __future__ import annotations

from . import builtin as _builtin  # noqa: F401  (registers numpy, numba, cupy, strict)
from . import registry
from .base import Array, Ops
from .registry import (
    ENTRY_POINT_GROUP,
    ENV_VAR,
    Availability,
    BackendInfo,
    available_backends,
    backend_names,
    check_name,
    default_backend_name,
    get_backend,
    probe_backend,
    register,
    resolve_backend_name,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "ENV_VAR",
    "Array",
    "Availability",
    "BackendInfo",
    "Ops",
    "available_backends",
    "backend_names",
    "check_name",
    "default_backend_name",
    "get_backend",
    "probe_backend",
    "register",
    "registry",
    "resolve_backend_name",
]
