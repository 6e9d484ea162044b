"""The NumPy backend: the reference every other backend is tested against."""

from __future__ import annotations

import numpy as np

from .base import Ops


class NumpyOps(Ops):
    """The interface's ops as written, on NumPy arrays (BLAS for the products)."""

    name = "numpy"
    xp = np
