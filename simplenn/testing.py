"""Tolerances and comparisons for checking a backend against the NumPy reference.

The tolerance is a function of the dtype, defined here and nowhere else:
:func:`tolerance` for one evaluation (loss, probabilities, gradients) and
:func:`trajectory_tolerance` for whole training runs, where rounding differences
compound over thousands of steps. Both are *normwise*: an element may differ by
``rtol * max|expected|`` of its tensor, i.e. a few units in the last place of the
tensor's scale, which is what reordered BLAS sums produce (an elementwise relative
bound would fail on entries that are sums cancelling to nearly zero).
"""

from __future__ import annotations

from typing import Any

import numpy as np

_TOLERANCE = {np.dtype("float64"): 1e-12, np.dtype("float32"): 1e-5}
_TRAJECTORY_TOLERANCE = {np.dtype("float64"): 1e-9, np.dtype("float32"): 1e-4}


def tolerance(dtype: Any) -> float:
    """Relative (normwise) tolerance of one evaluation in ``dtype``: 1e-12 for
    float64, 1e-5 for float32."""
    return _TOLERANCE[np.dtype(dtype)]


def trajectory_tolerance(dtype: Any) -> float:
    """Relative (normwise) tolerance of per-step losses and final parameters after
    training in ``dtype``: 1e-9 for float64, 1e-4 for float32."""
    return _TRAJECTORY_TOLERANCE[np.dtype(dtype)]


def assert_close(backend: str, tensor_name: str, actual: Any, expected: Any, dtype: Any,
                 rtol: float | None = None) -> None:
    """Assert ``|actual - expected| <= rtol * max|expected|`` elementwise.

    ``actual`` and ``expected`` are array-likes of equal shape (host NumPy arrays or
    scalars); ``rtol`` defaults to :func:`tolerance` of ``dtype``. The failure
    message names the backend, the tensor, the max absolute and relative errors and
    the index of the largest absolute error.
    """
    rtol = tolerance(dtype) if rtol is None else rtol
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape:
        raise AssertionError(f"backend {backend!r}, {tensor_name}: shape {a.shape} differs "
                             f"from the NumPy reference's {e.shape}")
    if not np.isfinite(a).all() or not np.isfinite(e).all():
        bad = np.argwhere(~(np.isfinite(a) & np.isfinite(e)))[0]
        raise AssertionError(f"backend {backend!r}, {tensor_name}: non-finite value at index "
                             f"{tuple(int(i) for i in bad)} (got {a[tuple(bad)]!r}, "
                             f"NumPy {e[tuple(bad)]!r})")
    if a.size == 0:
        return
    err = np.abs(a - e)
    scale = float(np.abs(e).max())
    if float(err.max()) <= rtol * scale:
        return
    where = np.unravel_index(int(err.argmax()), err.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(e != 0, err / np.abs(e), np.where(err == 0, 0.0, np.inf))
    raise AssertionError(
        f"backend {backend!r}, {tensor_name} ({np.dtype(dtype).name}): max abs error "
        f"{float(err.max()):.3e} at index {tuple(int(i) for i in where)} "
        f"(got {a[where]!r}, NumPy {e[where]!r}); max relative error {float(rel.max()):.3e}; "
        f"allowed {rtol:g} x max|NumPy| = {rtol * scale:.3e}")
