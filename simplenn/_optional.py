"""Optional libraries: import them when a feature needs them, or fail with the pip command."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import SimplennError

#: module -> (what it is called, the simplenn extra that installs it)
OPTIONAL = {
    "matplotlib": ("matplotlib", "plot"),
    "PIL": ("Pillow", "image"),
}


class MissingDependencyError(SimplennError, ImportError):
    """An optional library a feature needs is not installed; the message gives the pip command."""


def require(module: str, feature: str) -> ModuleType:
    """Import ``module`` (a key of :data:`OPTIONAL`) or raise :class:`MissingDependencyError`
    saying that ``feature`` needs it and how to install it."""
    name, extra = OPTIONAL[module]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{feature} needs {name}, which is not installed ({exc}); install it with "
            f"pip install {name} (from a simplenn checkout: pip install '.[{extra}]')"
        ) from None
