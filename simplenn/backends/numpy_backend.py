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

#: Images per block of :meth:`NumpyOps.elastic_fields`, whose temporaries stay in cache.
FIELD_BLOCK = 256


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

    def loss_buffer(self, n: int) -> Array:
        return np.zeros(n)

    def relu_backward(self, dy: Array, y: Array) -> Array:
        return dy * (y > 0)

    def sum_rows(self, a: Array) -> Array:
        return a.sum(axis=0)

    def matmul_tn(self, a: Array, b: Array) -> Array:
        # For a single row, matmul takes a slow non-BLAS loop over the (k, 1) view aᵀ
        # (7x slower at 784 x 128); dot computes the same outer product.
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
            np.matmul(basis, v.reshape(k, -1), out=out[:, 2 * b * s:2 * e * s])
        return out.reshape(s, m, 2, s).transpose(1, 2, 0, 3)

    def sgd_update(self, param: Array, grad: Array, velocity: Array, lr: Any, momentum: Any,
                   weight_decay: Any) -> tuple[Array, Array]:
        """In place on ``param`` and ``velocity``, which it returns."""
        g = grad + param * weight_decay if weight_decay else grad
        velocity *= momentum
        velocity += g
        np.copyto(velocity, 0, where=np.abs(velocity) < np.finfo(velocity.dtype).smallest_normal)
        param -= velocity * lr
        return param, velocity
