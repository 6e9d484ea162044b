"""The Numba backend's image ops: the elastic fields and the warp as compiled loops
(:mod:`.warp`), and an augmented run on one pool of threads."""

from __future__ import annotations

import math
from contextlib import AbstractContextManager
from typing import Any

import numba
import numpy as np

from ..images import ImageOps
from .blas import one_pool_active, products_on_numba_threads
from .warp import elastic_fields_into, warp_into


class NumbaImageOps(ImageOps):
    """:class:`~simplenn.backends.images.ImageOps` by the compiled loops of :mod:`.warp`."""

    def training(self) -> AbstractContextManager:
        """BLAS on one thread and the steps' first-layer products over numba's threads
        (:func:`.blas.products_on_numba_threads`), so that training and the parallel
        warp and fields share one pool of threads."""
        return products_on_numba_threads()

    def warp(self, x: Any, matrices: Any, fields: Any) -> np.ndarray:
        """:meth:`ImageOps.warp` by the compiled loop of :mod:`.warp`."""
        m, d = x.shape
        s = math.isqrt(d)
        # (s, m, 2, s): the layout elastic_fields returns a view of (no copy for those)
        rows = (
            np.zeros((s, 0, 2, s), self.dtype)
            if fields is None
            else np.ascontiguousarray(np.transpose(fields, (2, 0, 1, 3)), self.dtype)
        )
        scale = self.dtype.type(1 / 255 if x.dtype == np.uint8 else 1)
        grid = np.arange(s, dtype=self.dtype) - self.dtype.type((s - 1) / 2)
        return warp_into(
            x,
            scale,
            np.ascontiguousarray(matrices, self.dtype),
            rows,
            grid,
            np.empty((m, d), self.dtype),
        )

    def elastic_fields(self, noise: Any, levels: Any, basis: Any) -> np.ndarray:
        """:meth:`ImageOps.elastic_fields` by the compiled loop of :mod:`.warp`, in NumPy's
        layout (a view of an (s, m, 2, s) array), over numba's threads while BLAS runs on
        one (:meth:`training`)."""
        m, s = noise.shape[0], basis.shape[0]
        basis = np.ascontiguousarray(basis, self.dtype)
        parts = numba.get_num_threads() if one_pool_active() else 1
        out = elastic_fields_into(
            np.ascontiguousarray(noise, np.uint8),
            np.ascontiguousarray(levels, self.dtype),
            basis,
            np.ascontiguousarray(basis.T),
            parts,
            np.empty((s, 2 * m * s), self.dtype),
        )
        return out.reshape(s, m, 2, s).transpose(1, 2, 0, 3)
