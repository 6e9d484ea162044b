"""The ``f64acc`` ops: simplenn's NumPy ops, with the matrix products and the column
sums of float32 arrays accumulated in float64 and rounded once to float32."""

from __future__ import annotations

import numpy as np

from simplenn.backends.numpy_backend import NumpyOps

_F32 = np.dtype("float32")
_F64 = np.float64


class F64AccOps(NumpyOps):
    """The NumPy ops with float64 accumulation for float32 parameters.

    With ``dtype="float32"``, :meth:`matmul`, :meth:`matmul_tn`, :meth:`matmul_nt` and
    :meth:`sum_rows` convert their float32 NumPy arguments to float64, compute there
    and return the result rounded once to float32. With ``dtype="float64"`` they are
    NumpyOps' own. Every other op is NumpyOps' as inherited.
    """

    name = "f64acc"

    def matmul(self, a, b):
        """``a @ b`` for (m, k) x (k, n) float32 -> (m, n) float32, accumulated in
        float64; NumpyOps' for float64."""
        if self.dtype != _F32:
            return super().matmul(a, b)
        return (np.asarray(a, dtype=_F64) @ np.asarray(b, dtype=_F64)).astype(_F32)

    def matmul_tn(self, a, b):
        """``aᵀ @ b`` for (k, m) x (k, n) float32 -> (m, n) float32, accumulated in
        float64; NumpyOps' for float64."""
        if self.dtype != _F32:
            return super().matmul_tn(a, b)
        return (np.asarray(a, dtype=_F64).T @ np.asarray(b, dtype=_F64)).astype(_F32)

    def matmul_nt(self, a, b):
        """``a @ bᵀ`` for (m, k) x (n, k) float32 -> (m, n) float32, accumulated in
        float64; NumpyOps' for float64."""
        if self.dtype != _F32:
            return super().matmul_nt(a, b)
        return (np.asarray(a, dtype=_F64) @ np.asarray(b, dtype=_F64).T).astype(_F32)

    def sum_rows(self, a):
        """Column sums of (m, n) float32 -> (n,) float32, accumulated in float64;
        NumpyOps' for float64."""
        if self.dtype != _F32:
            return super().sum_rows(a)
        return np.sum(a, axis=0, dtype=_F64).astype(_F32)
