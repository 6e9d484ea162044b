"""The backend registry: names, factories, probes, install hints and ``auto`` priorities.

A backend is one :func:`register` call. simplenn registers its own backends that way
(:mod:`simplenn.backends.builtin`) and so does an installed package, through an entry
point in the group ``simplenn.backends`` whose object is a function of no arguments
that calls :func:`register` for the entry point's name. Nothing heavy is imported
here: a factory given as ``"module:attribute"`` is imported when the backend is first
built, a probe runs when the backend is first listed or asked for, and entry points
are loaded only when a name simplenn does not know yet is asked for, or when every
backend is listed (``available_backends``, ``auto``, the tests, the benchmarks).
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import BackendUnavailableError, UnknownBackendError

if TYPE_CHECKING:
    from .base import Ops

logger = logging.getLogger("simplenn")

ENTRY_POINT_GROUP = "simplenn.backends"
ENV_VAR = "SIMPLENN_BACKEND"


@dataclass(frozen=True)
class Availability:
    """What a probe returns: whether the backend can run here and, if not, why."""

    available: bool
    reason: str | None = None
    version: str | None = None
    device: str | None = None


@dataclass(frozen=True)
class BackendInfo:
    """A registered backend as ``--list-backends`` shows it: ``reason`` says why it
    can't run here when ``available`` is false."""

    name: str
    available: bool
    reason: str | None = None
    version: str | None = None
    device: str | None = None
    priority: int = 0

    def describe(self) -> str:
        """One human-readable line."""
        if self.available:
            detail = ", ".join(
                x for x in (self.version and f"version {self.version}", self.device) if x
            )
            return f"{self.name:<6} available" + (f" ({detail})" if detail else "")
        return f"{self.name:<6} unavailable: {self.reason}"


@dataclass(frozen=True)
class BackendSpec:
    """One registration; see :func:`register`."""

    name: str
    factory: Callable[[np.dtype], Ops] | str
    probe: Callable[[], Availability] | None
    install_hint: str | None
    priority: int
    origin: str


_REGISTRY: dict[str, BackendSpec] = {}
_LOCK = threading.RLock()
_entry_points_loaded = False
_entry_point_errors: dict[str, str] = {}


def _normalise(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise UnknownBackendError(f"a backend name must be a non-empty string, not {name!r}")
    return name.strip().lower()


def register(
    name: str,
    factory: Callable[[np.dtype], Ops] | str,
    *,
    probe: Callable[[], Availability] | None = None,
    install_hint: str | None = None,
    priority: int = 0,
    replace: bool = False,
) -> None:
    """Make backend ``name`` known to simplenn.

    - ``factory(dtype)`` returns the backend's :class:`~simplenn.backends.Ops` for a
      NumPy float dtype (float32 or float64); ``"module:attribute"`` names it without
      importing it (the class or function is imported when the backend is first built).
    - ``probe()`` returns an :class:`Availability`; it runs once per process, when the
      backend is first listed or asked for, and may import the backend's library. By
      default the backend is available when the factory's module imports.
    - ``install_hint``: the command that installs what the backend needs, appended to
      the reason of a failed import (e.g. ``"pip install numba"``).
    - ``priority``: ``auto`` picks the available backend of the highest priority
      (numpy 0, numba 10, cupy 20); a negative one is never picked by ``auto``.

    Names are case-insensitive. Registering a name twice raises ``ValueError`` unless
    ``replace``.
    """
    key = _normalise(name)
    if key == "auto":
        raise ValueError("'auto' is reserved: it picks the best available backend")
    if not (callable(factory) or (isinstance(factory, str) and ":" in factory)):
        raise TypeError(
            f"factory of backend {key!r} must be callable or 'module:attribute', not {factory!r}"
        )
    if probe is not None and not callable(probe):
        raise TypeError(f"probe of backend {key!r} must be callable, not {probe!r}")
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(f"priority of backend {key!r} must be an int, not {priority!r}")
    with _LOCK:
        if key in _REGISTRY and not replace:
            raise ValueError(
                f"backend {key!r} is already registered (by "
                f"{_REGISTRY[key].origin}); pass replace=True to replace it"
            )
        _REGISTRY[key] = BackendSpec(
            key, factory, probe, install_hint, priority, origin=_caller_origin()
        )
        probe_backend.cache_clear()


def _caller_origin() -> str:
    import inspect

    frame = inspect.currentframe()
    try:
        outer = frame.f_back.f_back if frame and frame.f_back else None
        return outer.f_globals.get("__name__", "?") if outer else "?"
    finally:
        del frame


def load_entry_points() -> None:
    """Register the backends of installed packages (group ``simplenn.backends``), once.

    Each entry point's object is called with no arguments and must register the
    backend of the entry point's name. One that fails to load, or registers nothing,
    is listed as unavailable with the error, so a broken plug-in never breaks simplenn.
    """
    global _entry_points_loaded
    with _LOCK:
        if _entry_points_loaded:
            return
        _entry_points_loaded = True
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            key = _normalise(ep.name)
            if key in _REGISTRY:
                continue  # an earlier registration wins (a built-in, or a replace=True)
            where = f"entry point {ep.name!r} = {ep.value!r}"
            try:
                ep.load()()
            except Exception as exc:  # a broken plug-in is reported, not raised
                _entry_point_errors[key] = f"{where} failed to load ({type(exc).__name__}: {exc})"
                continue
            if key not in _REGISTRY:
                _entry_point_errors[key] = f"{where} did not register a backend named {key!r}"
        probe_backend.cache_clear()


def _known(name: str) -> bool:
    return name in _REGISTRY or name in _entry_point_errors


def backend_names() -> tuple[str, ...]:
    """Every registered backend, entry points included: by ``auto`` priority, lowest
    first (numpy, numba, cupy), then those ``auto`` never picks."""
    load_entry_points()
    names = set(_REGISTRY) | set(_entry_point_errors)
    return tuple(sorted(names, key=lambda n: (_priority(n) < 0, abs(_priority(n)), n)))


def _priority(name: str) -> int:
    spec = _REGISTRY.get(name)
    return spec.priority if spec is not None else -1


def check_name(name: Any, *, allow_auto: bool = True) -> str:
    """``name`` normalised, or :class:`UnknownBackendError` listing the valid names."""
    key = _normalise(name) if isinstance(name, str) and name.strip() else name
    if key == "auto" and allow_auto:
        return key
    if isinstance(key, str) and not _known(key):
        load_entry_points()
    if not isinstance(key, str) or not _known(key):
        valid = backend_names() + (("auto",) if allow_auto else ())
        raise UnknownBackendError(f"unknown backend {name!r}; valid names are: {', '.join(valid)}")
    return key


@functools.cache
def probe_backend(name: str) -> BackendInfo:
    """Whether backend ``name`` can run here, probed once per process."""
    key = check_name(name, allow_auto=False)
    if key in _entry_point_errors:
        return BackendInfo(key, False, _entry_point_errors[key], priority=-1)
    spec = _REGISTRY[key]
    try:
        result = spec.probe() if spec.probe is not None else _import_probe(spec)
    except Exception as exc:  # a probe must not raise; if it does, that is the reason
        result = Availability(False, f"its probe failed: {type(exc).__name__}: {exc}")
    if not isinstance(result, Availability):
        result = Availability(False, f"its probe returned {result!r}, not an Availability")
    reason = result.reason
    if not result.available and not reason:
        reason = "its probe gave no reason"
    return BackendInfo(key, result.available, reason, result.version, result.device, spec.priority)


def _import_probe(spec: BackendSpec) -> Availability:
    """Available when the factory's module imports."""
    if callable(spec.factory):
        return Availability(True)
    module = spec.factory.split(":", 1)[0]
    try:
        importlib.import_module(module)
    except ImportError as exc:
        return Availability(False, missing_library_reason(module, exc, spec.install_hint))
    return Availability(True)


def missing_library_reason(library: str, exc: BaseException, install_hint: str | None) -> str:
    """The reason of a backend whose library failed to import, with the install hint."""
    fix = f"; install it with {install_hint}" if install_hint else ""
    return f"{library} is not installed or failed to import ({exc}){fix}"


def available_backends() -> list[BackendInfo]:
    """Every registered backend, with whether it can run here and, if not, why."""
    return [probe_backend(name) for name in backend_names()]


def default_backend_name(fallback: str = "numpy") -> str:
    """``$SIMPLENN_BACKEND`` when set (and valid), else ``fallback``."""
    value = os.environ.get(ENV_VAR, "").strip()
    if not value:
        return fallback
    try:
        return check_name(value)
    except UnknownBackendError as exc:
        raise UnknownBackendError(f"${ENV_VAR}={value!r}: {exc}") from None


def resolve_backend_name(name: str | None = None) -> str:
    """The concrete backend ``name`` stands for: ``None`` → ``$SIMPLENN_BACKEND`` or
    ``numpy``; ``auto`` → the available backend of the highest non-negative priority
    (the choice, and why better ones were skipped, is logged at INFO)."""
    name = default_backend_name() if name is None else check_name(name)
    if name != "auto":
        return name
    skipped = []
    candidates = sorted(
        (n for n in backend_names() if _priority(n) >= 0), key=lambda n: (-_priority(n), n)
    )
    for candidate in candidates:
        info = probe_backend(candidate)
        if info.available:
            logger.info(
                "backend auto: chose %s%s", candidate, f" ({'; '.join(skipped)})" if skipped else ""
            )
            return candidate
        skipped.append(f"{candidate} skipped: {info.reason}")
    raise BackendUnavailableError("backend auto: no backend can run here: " + "; ".join(skipped))


def _factory(spec: BackendSpec) -> Callable[[np.dtype], Ops]:
    if callable(spec.factory):
        return spec.factory
    module, _, attribute = spec.factory.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attribute.split("."):
        obj = getattr(obj, part)
    return obj


def get_backend(name: str | None = None, dtype: str | np.dtype = "float32") -> Ops:
    """An :class:`~simplenn.backends.Ops` for backend ``name`` computing in ``dtype``.

    A backend named explicitly never falls back: when it can't run here this raises
    :class:`BackendUnavailableError` naming the cause and the fix.
    """
    from .base import Ops

    dtype = np.dtype(dtype)
    if dtype not in (np.dtype("float32"), np.dtype("float64")):
        raise ValueError(f"dtype must be float32 or float64, not {dtype}")
    name = resolve_backend_name(name)
    info = probe_backend(name)
    if not info.available:
        raise BackendUnavailableError(
            f"backend {name!r} unavailable: {info.reason}; use --backend auto instead "
            f"(backend='auto' in Python picks the best backend that runs here; "
            f"--list-backends shows them all)"
        )
    ops = _factory(_REGISTRY[name])(dtype)
    if not isinstance(ops, Ops):
        raise TypeError(
            f"the factory of backend {name!r} returned {type(ops).__name__}, not an Ops"
        )
    ops.name = name  # the registered name, whatever class the factory built
    return ops
