"""What the network takes as input, and how an array of any library gets there.

Inputs ``X`` are (n, n_inputs) uint8 pixels (scaled by 1/255 on the backend) or finite
floats; images (n, *image_shape) with n_inputs values each are flattened row-major and
integer arrays of any dtype whose values all lie in 0..255 are taken as uint8 pixels.
Labels ``y`` are (n,) integers in 0..n_classes-1.

Where an input comes from:

- a NumPy array, a nested list of numbers or anything ``numpy.asarray`` takes through
  ``__array__`` (a pandas DataFrame, ...) is checked on the host;
- an array of the backend's own library is checked on the backend, where it is;
- an array of another array-API library (PyTorch, JAX, CuPy, array-api-strict, ...) is
  moved to the backend through DLPack where the backend's namespace takes it
  (``xp.from_dlpack``), else to the host: through DLPack, else by copying it off its
  device.

Anything else (a dict, a string, None, ...) is a one-line ``TypeError`` naming its
type. Results (predictions, probabilities, gradients) are NumPy arrays whatever the
input's library, unless the caller opts in with ``like_input=True``
(:meth:`~simplenn.TwoLayerNet.predict`, :meth:`~simplenn.TwoLayerNet.predict_proba`):
then an input of another array-API library gets its results as that library's arrays,
on the input's device (:func:`like_input`).
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from typing import Any

import array_api_compat
import numpy as np

from ..backends import Ops
from ..backends.base import Array

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep

#: The smallest maximum of whole-number float inputs that warns as unscaled pixels:
#: 8-bit images reach it, small counts of tabular data stay below it.
_PIXEL_MAX_AT_LEAST = 16
#: How many elements the unscaled-pixel check rounds at a time (bounds its scratch memory).
_CHUNK_ELEMENTS = 1 << 20
#: What moving an array through DLPack or off its device raises when it can't be done.
_TRANSFER_ERRORS = (
    BufferError,
    TypeError,
    ValueError,
    RuntimeError,
    AttributeError,
    NotImplementedError,
)
#: The kinds of input the one-line TypeError lists.
_ARRAY_KINDS = (
    "an array (NumPy, PyTorch, JAX, CuPy or any array-API library) or a nested list of numbers"
)


class UnscaledPixelsWarning(UserWarning):
    """Float inputs that look like 8-bit pixels not divided by 255: every value a whole
    number in 0..255, the largest at least 16 (small counts are left alone). The network
    expects features of order one (uint8 pixels are scaled by 1/255 for you) and trains
    to chance on such inputs.
    Silence it, for data that only look like this, with
    ``warnings.simplefilter("ignore", UnscaledPixelsWarning)``."""


def warn_from_caller(message: str, category: type[Warning]) -> None:
    """``warnings.warn``, attributed to the innermost caller outside the simplenn package
    (so that the warning points at the user's ``fit`` or ``predict`` line)."""
    frame, level = sys._getframe(1), 2
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


# -- arrays of any library ---------------------------------------------------------------

_BACKEND_ARRAY_TYPES: dict[type, type] = {}


def _backend_array_type(ops: Ops) -> type:
    """The type of the backend's arrays (found once per backend class)."""
    kind = _BACKEND_ARRAY_TYPES.get(type(ops))
    if kind is None:
        kind = _BACKEND_ARRAY_TYPES[type(ops)] = type(ops.asarray(np.zeros(1)))
    return kind


def is_backend_array(X: Any, ops: Ops) -> bool:
    """Whether ``X`` is an array of the backend's own library (NumPy arrays are the
    NumPy and Numba backends')."""
    if isinstance(X, _backend_array_type(ops)):
        return True
    return array_api_compat.is_array_api_obj(X) and array_api_compat.array_namespace(X) is ops.xp


def _is_foreign_array(X: Any) -> bool:
    """Whether ``X`` is an array of some array-API library (or offers DLPack)."""
    return array_api_compat.is_array_api_obj(X) or hasattr(X, "__dlpack__")


def like_input(result: np.ndarray, X: Any) -> Any:
    """``result`` (a NumPy array) as an array of ``X``'s library on ``X``'s device, when
    ``X`` is an array of an array-API library other than NumPy; else ``result``."""
    if isinstance(X, np.ndarray) or not array_api_compat.is_array_api_obj(X):
        return result
    xp = array_api_compat.array_namespace(X)
    return xp.asarray(result, device=array_api_compat.device(X))


def _not_an_array(name: str, X: Any) -> TypeError:
    kind = type(X)
    named = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
    return TypeError(f"{name} must be {_ARRAY_KINDS}, not {named}")


def to_host(X: Any, name: str = "X") -> np.ndarray:
    """Any array (or nested list of numbers) as a NumPy array: itself when it is one,
    else through DLPack, else copied off its device (``array_api_compat.to_device``),
    else by ``numpy.asarray``. A result that DLPack left read-only is copied, so that a
    compiled backend meets the writable arrays it compiled for. ``TypeError`` naming
    the type for anything that is not an array."""
    if isinstance(X, np.ndarray):
        return X
    if _is_foreign_array(X):
        host = _foreign_to_host(X, name)
        return host if host.flags.writeable else host.copy()
    if isinstance(X, (list, tuple)) or hasattr(X, "__array__") or hasattr(X, "__array_interface__"):
        return np.asarray(X)
    raise _not_an_array(name, X)


def host_or_as_given(X: Any, name: str = "X") -> Any:
    """For scikit-learn's own checks: another library's array moved to the host
    (:func:`to_host`); NumPy arrays, lists, DataFrames, sparse matrices and other array
    likes as given (None too: scikit-learn says what it lacks); a ``TypeError`` naming
    the type for what is no array at all."""
    if X is None or isinstance(X, np.ndarray):
        return X
    if _is_foreign_array(X):
        return to_host(X, name)
    if isinstance(X, (str, bytes, dict, set, frozenset, int, float, complex)) or not (
        isinstance(X, (list, tuple))
        or hasattr(X, "shape")
        or hasattr(X, "__array__")
        or hasattr(X, "__array_interface__")
    ):
        raise _not_an_array(name, X)
    return X


def _foreign_to_host(X: Any, name: str) -> np.ndarray:
    try:
        return np.from_dlpack(X)
    except _TRANSFER_ERRORS:
        pass
    try:  # an array on a device: copied to the host by its own library
        return np.asarray(array_api_compat.to_device(X, "cpu"))
    except _TRANSFER_ERRORS:
        pass
    try:
        return np.asarray(X)
    except _TRANSFER_ERRORS as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TypeError(
            f"{name}: cannot read a {type(X).__name__} on the host ({reason})"
        ) from None


def to_backend_or_host(X: Any, ops: Ops, name: str = "X") -> np.ndarray | Array:
    """``X`` as a NumPy array or an array of the backend ``ops``: NumPy and backend
    arrays as they are; another library's array through DLPack into the backend
    (``ops.xp.from_dlpack``) where that works, else to the host (:func:`to_host`);
    lists and other host data through ``numpy.asarray``. ``TypeError`` naming the type
    for anything that is not an array."""
    if isinstance(X, np.ndarray) or is_backend_array(X, ops):
        return X
    if _is_foreign_array(X) and _backend_array_type(ops) is not np.ndarray:
        try:
            moved = ops.xp.from_dlpack(X)
        except _TRANSFER_ERRORS:  # another device, or a dtype the backend lacks
            moved = None
        if moved is not None and is_backend_array(moved, ops):
            return moved
    return to_host(X, name)


def labels_to_host(y: Any, ops: Ops, name: str = "y") -> np.ndarray:
    """Labels of any library (or a list) as a NumPy array."""
    if not isinstance(y, np.ndarray) and is_backend_array(y, ops):
        return np.asarray(ops.to_numpy(y))
    return to_host(y, name)


# -- the checks ---------------------------------------------------------------------------


def looks_like_unscaled_pixels(X: Any, xp: Any) -> bool:
    """Whether the finite float array X (n, d), of the namespace ``xp``, holds only whole
    numbers in 0..255 with the largest at least :data:`_PIXEL_MAX_AT_LEAST`. Inputs
    already scaled are settled by one pass (the maximum); only those in range are also
    checked for whole numbers."""
    if (
        X.shape[0] == 0
        or not _PIXEL_MAX_AT_LEAST <= float(xp.max(X)) <= 255
        or float(xp.min(X)) < 0
    ):
        return False
    n, rows = X.shape[0], max(1, _CHUNK_ELEMENTS // X.shape[1])
    for start in range(0, n, rows):
        chunk = X[start : min(n, start + rows), ...]
        if not bool(xp.all(xp.round(chunk) == chunk)):
            return False
    return True


def check_inputs(X: Any, ops: Ops, n_inputs: int) -> np.ndarray | Array:
    """X as a network of ``n_inputs`` inputs on ``ops`` takes it: (n, n_inputs) uint8
    pixels or finite floats, a NumPy array or the backend's (see the module docstring
    for where other arrays go; host arrays are checked on the host, backend arrays by
    the backend). Images (n, *image_shape) are flattened to (n, n_inputs); integer
    pixels of another dtype become uint8; float inputs that look like unscaled pixels
    warn with :class:`UnscaledPixelsWarning`."""
    X = to_backend_or_host(X, ops)
    host = isinstance(X, np.ndarray)
    xp = np if host else ops.xp
    X = flatten_images(X, xp, n_inputs)
    dtype = input_dtype(X, ops)
    if dtype == np.uint8:
        return X
    if dtype.kind in "iu":
        return integer_pixels(X, xp, dtype)
    if dtype.kind != "f":
        raise ValueError(
            f"X must be uint8 pixels (scaled by 1/255), integer pixels in "
            f"0..255 or floats, not {dtype}"
        )
    if not (np.isfinite(X).all() if host else ops.all_finite(X)):
        raise ValueError("X holds NaN or infinite values")
    if looks_like_unscaled_pixels(X, xp):
        warn_from_caller(
            f"X looks like unscaled pixels: floats that are all whole numbers in 0..255 "
            f"(largest {float(xp.max(X)):g}), on which the network trains to chance; "
            f"scale them to [0, 1] (X / 255 for 8-bit pixels) or pass uint8 pixels, "
            f"which are scaled for you",
            UnscaledPixelsWarning,
        )
    return X


def flatten_images(X: Any, xp: Any, n_inputs: int) -> Any:
    """X (n, n_inputs) as given; images (n, *image_shape) with n_inputs values each
    reshaped to (n, n_inputs); any other shape refused."""
    d, shape = n_inputs, tuple(X.shape)
    if len(shape) >= 3 and math.prod(shape[1:]) == d:
        return xp.reshape(X, (shape[0], d))
    if len(shape) != 2 or shape[1] != d:
        hint = (
            "; for one sample, pass X.reshape(1, -1)"
            if len(shape) in (1, 2) and math.prod(shape) == d
            else ""
        )
        raise ValueError(
            f"X must have shape (n, {d}), one sample per row, or (n, "
            f"*image_shape) with {d} values per image, not {shape}{hint}"
        )
    return X


def integer_pixels(X: Any, xp: Any, dtype: np.dtype) -> Any:
    """Integer X (n, n_inputs) of a dtype other than uint8 -> uint8 pixels, when every
    value lies in 0..255."""
    if X.shape[0]:
        low, high = int(xp.min(X)), int(xp.max(X))
        if low < 0 or high > 255:
            raise ValueError(
                f"integer X must be pixels in 0..255, but holds {dtype} values "
                f"from {low} to {high}; pass other data as floats"
            )
    return X.astype(np.uint8) if isinstance(X, np.ndarray) else xp.astype(X, xp.uint8)


def input_dtype(X: Any, ops: Ops) -> np.dtype:
    """The NumPy dtype of a host or backend array."""
    return X.dtype if isinstance(X, np.ndarray) else ops.host_dtype(X)


def check_labels(y: Any, ops: Ops, n: int, n_classes: int) -> Array:
    """Labels ``y`` of any library (or a list), (n,) integers in 0..n_classes-1, as an
    int64 array of the backend."""
    y_host = labels_to_host(y, ops)
    if y_host.ndim != 1 or y_host.shape[0] != n:
        raise ValueError(f"y must have shape ({n},) to match X, not {y_host.shape}")
    if y_host.dtype.kind not in "iu":
        raise ValueError(f"y must hold integer class labels, not {y_host.dtype}")
    if n and (y_host.min() < 0 or y_host.max() >= n_classes):
        bad = int(np.flatnonzero((y_host < 0) | (y_host >= n_classes))[0])
        raise ValueError(f"label y[{bad}] = {y_host[bad]} is outside 0..{n_classes - 1}")
    return ops.asarray(y_host, dtype=np.int64)


def to_float(X: Any, ops: Ops) -> Array:
    """Checked (m, d) input -> backend floats; uint8 pixels are scaled by 1/255."""
    return ops.to_float(ops.asarray(X, dtype=input_dtype(X, ops)))
