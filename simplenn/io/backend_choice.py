"""Which backend a saved model loads on.

A model file (and a pickled :class:`~simplenn.sklearn.SimpleNNClassifier`) stores four
arrays and, as information, the backend it was trained on; it loads on any backend.
:func:`loading_backend` picks one:

- ``"auto"``: the training backend when it can run here, else the best backend that
  does (``auto``'s pick), with a one-line :class:`BackendFallbackWarning` saying so;
- a backend's name: that backend (``BackendUnavailableError`` when it can't run here);
- ``None``: as for :class:`~simplenn.TwoLayerNet`, ``$SIMPLENN_BACKEND``, else ``numpy``.
"""

from __future__ import annotations

from typing import Any

from ..backends import probe_backend, resolve_backend_name
from ..core.inputs import warn_from_caller
from ..errors import UnknownBackendError


class BackendFallbackWarning(UserWarning):
    """A saved model's training backend can't run here, so it was loaded on another
    backend (the numbers are the same four arrays; only where they compute changes).
    Pass ``backend=`` when loading to choose the backend and silence it."""


def loading_backend(
    trained: Any,
    backend: str | None = "auto",
    *,
    what: str = "the model",
    choose: str = "pass backend=",
) -> str | None:
    """The backend to load ``what``, trained on the backend named ``trained`` (None or
    anything not a string when unknown), on, for the ``backend`` asked for (see the
    module docstring); ``choose`` says in the warning how to choose another. Returns a
    backend's name, or None for ``TwoLayerNet``'s default."""
    if backend != "auto":
        return backend
    if not isinstance(trained, str) or not trained:
        return resolve_backend_name("auto")
    try:
        info = probe_backend(trained)
    except UnknownBackendError:
        reason = f"no backend {trained!r} is registered here"
    else:
        if info.available:
            return info.name
        reason = info.reason
    fallback = resolve_backend_name("auto")
    warn_from_caller(
        f"{what} was trained on backend {trained!r}, which can't run here "
        f"({reason}); loaded on {fallback!r} instead ({choose} to choose)",
        BackendFallbackWarning,
    )
    return fallback
