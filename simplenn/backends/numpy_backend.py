"""The NumPy backend: the reference every other backend is tested against.

The generic ops of :class:`~simplenn.backends.Ops` run on ``array_api_compat.numpy``;
the hot ones are overridden here with NumPy's own in-place forms (same numbers, fewer
temporaries); SGD updates in place on its fast path (:mod:`.numpy_fastpath`).
"""

from __future__ import annotations

from typing import Any

import array_api_compat.numpy as xp_numpy
import numpy as np

from .base import Array, Ops
from .images import ImageOps

#: Images per block of :meth:`NumpyOps.elastic_fields`, whose temporaries stay in cache.
FIELD_BLOCK = 256


class NumpyOps(Ops):
    """The interface's ops on NumPy arrays (BLAS for the products)."""

    name = "numpy"
    xp = xp_numpy
    image_ops = "simplenn.backends.numpy_backend:NumpyImageOps"
    fast_paths = ("simplenn.backends.numpy_fastpath:NUMPY_SGD",)

    # -- moving data -----------------------------------------------------------------
    def asarray(self, a: Any, dtype: Any = None) -> np.ndarray:
        """Host data -> a C-contiguous NumPy array of ``dtype`` (default ``self.dtype``);
        the argument itself when it already is one."""
        return np.ascontiguousarray(np.asarray(a, dtype=self.dtype if dtype is None else dtype))

    def to_numpy(self, a: Array) -> np.ndarray:
        return np.asarray(a)

    def host_dtype(self, a: Array) -> np.dtype:
        return np.asarray(a).dtype

    # -- hot ops, in place on their own temporaries ----------------------------------
    def take(self, a: Array, rows: Array) -> Array:
        return a[rows]

    def to_float(self, x: Array) -> Array:
        if x.dtype == np.uint8:
            return x.astype(self.dtype) / self.dtype.type(255)
        return x.astype(self.dtype)

    def relu_backward(self, dy: Array, y: Array) -> Array:
        return dy * (y > 0)

    def sum_rows(self, a: Array) -> Array:
        return a.sum(axis=0)

    def matmul_tn(self, a: Array, b: Array) -> Array:
        # For a single row, matmul takes a slow non-BLAS loop over the (k, 1) view aᵀ
        # (a loop outside BLAS); dot computes the same outer product.
        return np.dot(a.T, b) if a.shape[0] == 1 else a.T @ b

    def affine(self, x: Array, W: Array, b: Array) -> Array:
        out = self.matmul(x, W)
        out += b
        return out

    def affine_relu(self, x: Array, W: Array, b: Array) -> Array:
        out = self.affine(x, W, b)
        np.maximum(out, 0, out=out)
        return out

    def softmax_cross_entropy(self, logits: Array, labels: Array) -> tuple[Array, Array]:
        m = logits.shape[0]
        rows = np.arange(m)
        z = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(z)
        s = e.sum(axis=1)
        loss = (np.log(s) - z[rows, labels]).sum() / m
        e /= s[:, None]
        e[rows, labels] -= 1
        e /= m
        return loss, e


class NumpyImageOps(ImageOps):
    """The image ops with NumPy's matrix products in blocks for the elastic fields."""

    def elastic_fields(self, noise: Array, levels: Array, basis: Array) -> Array:
        """``B Z Bᵀ`` computed in the layout (s, m, 2, s), where each product is one matrix
        product per block of :data:`FIELD_BLOCK` images: ``Z Bᵀ`` as (k * 2n, k) @ (k, s),
        then ``B (Z Bᵀ)`` as (s, k) @ (k, 2n * s). Returns the (m, 2, s, s) view of that
        array."""
        m, k = noise.shape[0], noise.shape[2]
        s = basis.shape[0]
        out = np.empty((s, 2 * m * s), self.dtype)
        levels, basis = np.asarray(levels, self.dtype), np.asarray(basis, self.dtype)
        transposed = np.ascontiguousarray(basis.T)
        for b in range(0, m, FIELD_BLOCK):
            e = min(m, b + FIELD_BLOCK)
            # (k, 2n, k): z[a, 2i + c, j] = Z[b + i, c, a, j]
            z = levels[noise[b:e].transpose(2, 0, 1, 3)].reshape(k, 2 * (e - b), k)
            v = z.reshape(-1, k) @ transposed
            np.matmul(basis, v.reshape(k, -1), out=out[:, 2 * b * s : 2 * e * s])
        return out.reshape(s, m, 2, s).transpose(1, 2, 0, 3)
