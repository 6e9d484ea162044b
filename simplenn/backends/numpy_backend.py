"""The NumPy backend: the reference every other backend is tested against.

The generic ops of :class:`~simplenn.backends.Ops` run on ``array_api_compat.numpy``;
the hot ones are overridden here with NumPy's own in-place forms (same numbers, fewer
temporaries).
"""

from __future__ import annotations

from typing import Any

import array_api_compat.numpy as xp_numpy
import numpy as np

from .base import Array, Ops


class NumpyOps(Ops):
    """The interface's ops on NumPy arrays (BLAS for the products)."""

    name = "numpy"
    xp = xp_numpy

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
    def pixels_to_float(self, x: Array) -> Array:
        return x.astype(self.dtype) / self.dtype.type(255)

    def take_pixels(self, X: Array, rows: Array) -> Array:
        return self.pixels_to_float(X[rows])

    def take_floats(self, X: Array, rows: Array) -> Array:
        return X[rows].astype(self.dtype)

    def take_labels(self, Y: Array, rows: Array) -> Array:
        return Y[rows]

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

    def elastic_fields(self, noise: Array, kernel: Array, alpha: Any) -> Array:
        """``alpha * G U G`` as products of (256 * 2 * s, s) by (s, s) matrices, in blocks
        of 256 images whose temporaries stay in cache."""
        m, _, s, _ = noise.shape
        out = np.empty(noise.shape, self.dtype)
        scaled = kernel * alpha
        for b in range(0, m, 256):
            u = noise[b:b + 256].astype(self.dtype)
            n = u.shape[0]
            u *= self.dtype.type(1 / 127.5)
            u -= 1
            v = (u.reshape(-1, s) @ scaled).reshape(n, 2, s, s)  # α U G
            v = np.ascontiguousarray(v.transpose(0, 1, 3, 2)).reshape(-1, s) @ kernel
            out[b:b + n] = v.reshape(n, 2, s, s).transpose(0, 1, 3, 2)  # ((α U G)ᵀ G)ᵀ
        return out

    def sgd_update(self, param: Array, grad: Array, velocity: Array, lr: Any, momentum: Any,
                   weight_decay: Any) -> tuple[Array, Array]:
        """In place on ``param`` and ``velocity``, which it returns."""
        g = grad + param * weight_decay if weight_decay else grad
        velocity *= momentum
        velocity += g
        param -= velocity * lr
        return param, velocity
