"""The model: :class:`TwoLayerNet`, its parameters on a backend (a
:class:`~simplenn.core.params.Params`), and the one way to run a chunk of training
steps (:meth:`TwoLayerNet.train_steps`)."""

from __future__ import annotations

import math
import os
import sys
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..backends import Ops, get_backend
from ..backends.base import Array
from ..optim import Optimizer, OptState
from .network import (
    DEFAULT_HIDDEN, NetworkFunctions, input_kind, network_functions, training_path,
)
from .params import Params, as_dict, from_mapping, map_params, parameter_shapes


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
#: Compared with an input's dtype on every training call (faster than ``np.uint8``).
_UINT8 = np.dtype(np.uint8)

#: The smallest maximum of whole-number float inputs that warns as unscaled pixels:
#: 8-bit images reach it, small counts of tabular data stay below it.
_PIXEL_MAX_AT_LEAST = 16
#: How many elements the unscaled-pixel check rounds at a time (bounds its scratch memory).
_CHUNK_ELEMENTS = 1 << 20


class UnscaledPixelsWarning(UserWarning):
    """Float inputs that look like 8-bit pixels not divided by 255: every value a whole
    number in 0..255, the largest at least 16 (small counts are left alone). The network
    expects features of order one (uint8 pixels are scaled by 1/255 for you) and trains
    to chance on such inputs.
    Silence it, for data that only look like this, with
    ``warnings.simplefilter("ignore", UnscaledPixelsWarning)``."""


def _check_size(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")
    return int(value)


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer (0, 1, 2, ...), not {seed!r}")
    return int(seed)


def _looks_like_unscaled_pixels(X: Any, xp: Any) -> bool:
    """Whether the finite float array X (n, d), of the namespace ``xp``, holds only whole
    numbers in 0..255 with the largest at least :data:`_PIXEL_MAX_AT_LEAST`. Inputs already scaled are settled by
    one pass (the maximum); only those in range are also checked for whole numbers."""
    if (X.shape[0] == 0 or not _PIXEL_MAX_AT_LEAST <= float(xp.max(X)) <= 255
            or float(xp.min(X)) < 0):
        return False
    n, rows = X.shape[0], max(1, _CHUNK_ELEMENTS // X.shape[1])
    for start in range(0, n, rows):
        chunk = X[start:min(n, start + rows), ...]
        if not bool(xp.all(xp.round(chunk) == chunk)):
            return False
    return True


def _warn_from_caller(message: str, category: type[Warning]) -> None:
    """``warnings.warn``, attributed to the innermost caller outside the simplenn package
    (so that the warning points at the user's ``fit`` or ``predict`` line)."""
    frame, level = sys._getframe(1), 2
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


class TwoLayerNet:
    """A 784 → hidden → 10 ReLU network with a softmax cross-entropy loss.

    Parameters: ``W1`` (n_inputs, n_hidden), ``b1`` (n_hidden,), ``W2``
    (n_hidden, n_classes), ``b2`` (n_classes,), stored on the chosen backend in
    ``dtype``. Weights start He-scaled, ``N(0, 2 / fan_in)``, drawn in float64 on the
    host from ``numpy.random.default_rng(seed)`` and then cast, so every backend
    starts from the same numbers; biases start at zero.

    ``backend`` is a registered backend's name (``numpy``, ``numba``, ``cupy``,
    ``strict``, a plug-in's) or ``auto``; ``None`` means ``$SIMPLENN_BACKEND``, else
    ``numpy``; or an :class:`Ops` instance. ``seed`` is a non-negative integer.

    Inputs ``X`` are (n, n_inputs) uint8 pixels (scaled by 1/255 on the backend) or
    finite floats, as host (NumPy) or backend arrays, or anything ``numpy.asarray``
    takes. Also accepted: images (n, *image_shape) with n_inputs values each (flattened
    row-major) and integer arrays of any dtype whose values all lie in 0..255 (taken as
    uint8 pixels). Float inputs that look like unscaled pixels warn with
    :class:`UnscaledPixelsWarning`.
    """

    def __init__(
        self,
        n_inputs: int = 784,
        n_hidden: int = DEFAULT_HIDDEN,
        n_classes: int = 10,
        *,
        backend: str | Ops | None = None,
        dtype: str = "float32",
        seed: int = 0,
    ) -> None:
        self.n_inputs = _check_size("n_inputs", n_inputs)
        self.n_hidden = _check_size("n_hidden", n_hidden)
        self.n_classes = _check_size("n_classes", n_classes)
        if self.n_classes < 2:
            raise ValueError(f"n_classes must be at least 2, not {n_classes}")
        if isinstance(backend, Ops):
            if backend.dtype != np.dtype(dtype):
                raise ValueError(f"backend {backend!r} has dtype {backend.dtype}, not {dtype}")
            self.ops = backend
        else:
            self.ops = get_backend(backend, dtype=dtype)
        self.seed = _check_seed(seed)
        rng = np.random.default_rng(self.seed)
        d, h, c = self.n_inputs, self.n_hidden, self.n_classes
        self.set_parameters(Params(
            W1=rng.standard_normal((d, h)) * math.sqrt(2.0 / d),
            b1=np.zeros(h),
            W2=rng.standard_normal((h, c)) * math.sqrt(2.0 / h),
            b2=np.zeros(c),
        )._asdict())

    def __repr__(self) -> str:
        return (f"TwoLayerNet({self.n_inputs}, {self.n_hidden}, {self.n_classes}, "
                f"backend={self.ops.name!r}, dtype={self.dtype.name!r})")

    @property
    def dtype(self) -> np.dtype:
        return self.ops.dtype

    @property
    def backend(self) -> str:
        return self.ops.name

    @property
    def functions(self) -> NetworkFunctions:
        """The network math bound to (and, where it compiles, compiled for) the backend."""
        fns = self.__dict__.get("_functions")
        if fns is None:
            fns = self._functions = network_functions(self.ops)
        return fns

    # -- parameters ------------------------------------------------------------------
    #: The parameters on the backend, in :attr:`dtype`.
    params: Params

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of each parameter, by name."""
        return as_dict(parameter_shapes(self.n_inputs, self.n_hidden, self.n_classes))

    def parameters(self) -> dict[str, np.ndarray]:
        """NumPy copies of ``W1`` (n_inputs, n_hidden), ``b1`` (n_hidden,), ``W2``
        (n_hidden, n_classes) and ``b2`` (n_classes,) in the network's dtype, by name."""
        return as_dict(map_params(lambda v: np.array(self.ops.to_numpy(v), copy=True),
                                  self.params))

    def set_parameters(self, params: Mapping[str, Any]) -> None:
        """Replace all four parameters from a mapping by name (host or backend arrays);
        shapes must match, values must be finite."""
        given = from_mapping(params)
        shapes = parameter_shapes(self.n_inputs, self.n_hidden, self.n_classes)
        new = []
        for name, value, shape in zip(Params._fields, given, shapes):
            host = np.asarray(self.ops.to_numpy(value) if not isinstance(value, np.ndarray)
                              else value)
            if host.shape != shape:
                raise ValueError(f"parameter {name} must have shape {shape}, not {host.shape}")
            if host.dtype.kind not in "fiu":
                raise ValueError(f"parameter {name} must be numeric, not {host.dtype}")
            if not np.isfinite(host).all():
                raise ValueError(f"parameter {name} holds NaN or infinite values")
            new.append(self.ops.asarray(host))
        self.params = Params(*new)

    # -- inputs ----------------------------------------------------------------------
    def _check_inputs(self, X: Any) -> np.ndarray | Array:
        """X as the network takes it: (n, n_inputs) uint8 pixels or finite floats, a host
        array or the backend's (host arrays are checked on the host, backend arrays by the
        backend). Images (n, *image_shape) are flattened to (n, n_inputs); integer pixels
        of another dtype become uint8; float inputs that look like unscaled pixels warn."""
        if not hasattr(X, "shape") or not hasattr(X, "dtype"):
            X = np.asarray(X)
        host = isinstance(X, np.ndarray)
        xp = np if host else self.ops.xp
        X = self._flatten_images(X, xp)
        dtype = self._input_dtype(X)
        if dtype == np.uint8:
            return X
        if dtype.kind in "iu":
            return self._integer_pixels(X, xp, dtype)
        if dtype.kind != "f":
            raise ValueError(f"X must be uint8 pixels (scaled by 1/255), integer pixels in "
                             f"0..255 or floats, not {dtype}")
        if not (np.isfinite(X).all() if host else self.ops.all_finite(X)):
            raise ValueError("X holds NaN or infinite values")
        if _looks_like_unscaled_pixels(X, xp):
            _warn_from_caller(
                f"X looks like unscaled pixels: floats that are all whole numbers in 0..255 "
                f"(largest {float(xp.max(X)):g}), on which the network trains to chance; "
                f"scale them to [0, 1] (X / 255 for 8-bit pixels) or pass uint8 pixels, "
                f"which are scaled for you",
                UnscaledPixelsWarning)
        return X

    def _flatten_images(self, X: Any, xp: Any) -> Any:
        """X (n, n_inputs) as given; images (n, *image_shape) with n_inputs values each
        reshaped to (n, n_inputs); any other shape refused."""
        d, shape = self.n_inputs, tuple(X.shape)
        if len(shape) >= 3 and math.prod(shape[1:]) == d:
            return xp.reshape(X, (shape[0], d))
        if len(shape) != 2 or shape[1] != d:
            hint = ("; for one sample, pass X.reshape(1, -1)"
                    if len(shape) in (1, 2) and math.prod(shape) == d else "")
            raise ValueError(f"X must have shape (n, {d}), one sample per row, or (n, "
                             f"*image_shape) with {d} values per image, not {shape}{hint}")
        return X

    def _integer_pixels(self, X: Any, xp: Any, dtype: np.dtype) -> Any:
        """Integer X (n, n_inputs) of a dtype other than uint8 -> uint8 pixels, when every
        value lies in 0..255."""
        if X.shape[0]:
            low, high = int(xp.min(X)), int(xp.max(X))
            if low < 0 or high > 255:
                raise ValueError(f"integer X must be pixels in 0..255, but holds {dtype} values "
                                 f"from {low} to {high}; pass other data as floats")
        return X.astype(np.uint8) if isinstance(X, np.ndarray) else xp.astype(X, xp.uint8)

    def _input_dtype(self, X: Any) -> np.dtype:
        """The NumPy dtype of a host or backend array."""
        return X.dtype if isinstance(X, np.ndarray) else self.ops.host_dtype(X)

    def _check_labels(self, y: Any, n: int) -> Array:
        y_host = np.asarray(self.ops.to_numpy(y) if not isinstance(y, np.ndarray) else y)
        if y_host.ndim != 1 or y_host.shape[0] != n:
            raise ValueError(f"y must have shape ({n},) to match X, not {y_host.shape}")
        if y_host.dtype.kind not in "iu":
            raise ValueError(f"y must hold integer class labels, not {y_host.dtype}")
        if n and (y_host.min() < 0 or y_host.max() >= self.n_classes):
            bad = int(np.flatnonzero((y_host < 0) | (y_host >= self.n_classes))[0])
            raise ValueError(f"label y[{bad}] = {y_host[bad]} is outside 0..{self.n_classes - 1}")
        return self.ops.asarray(y_host, dtype=np.int64)

    def _to_float(self, X: Any) -> Array:
        """Checked (m, d) input -> backend floats; uint8 pixels are scaled by 1/255."""
        dtype = self._input_dtype(X)
        return self.ops.to_float(self.ops.asarray(X, dtype=dtype))

    # -- computing -------------------------------------------------------------------
    def training_path(self, optimizer: Optimizer, X: Array, batch_size: int) -> str:
        """The name of the path :meth:`train_steps` takes for ``optimizer`` on the stored
        inputs ``X`` at ``batch_size``: ``generic`` or one of the backend's fast paths."""
        return training_path(self.ops, optimizer, input_kind(self._input_dtype(X)),
                             batch_size).name

    def train_steps(self, X: Array, Y: Array, order: Array, state: OptState, *,
                    optimizer: Optimizer, batch_size: int, lrs: np.ndarray,
                    ) -> tuple[OptState, Array]:
        """Run ``ceil(len(order) / batch_size)`` steps of ``optimizer`` over the rows
        ``X[order]`` in order (the last batch may be smaller), step ``s`` at learning
        rate ``lrs[s]``, updating :attr:`params`; the one way every caller (``fit``, the
        benchmarks, the warm-up) runs a chunk of training steps.

        ``X`` (n, n_inputs) uint8 pixels or floats of :attr:`dtype`, ``Y`` (n,) int64
        labels and ``order`` (k,) int64 row indices are arrays of the backend; ``state``
        is the optimizer's (:meth:`Optimizer.init`); ``lrs`` a NumPy float64 array with
        one learning rate per step. Returns the new state and each step's loss, a
        float64 array of the backend. The backend's fast path runs the chunk where one
        covers it (:func:`simplenn.core.network.training_path`).
        """
        path = training_path(self.ops, optimizer, input_kind(self._input_dtype(X)),
                             batch_size)
        self.params, state, losses = path.train_steps(self.params, state, X, Y, order,
                                                      batch_size, lrs)
        return state, losses

    def loss_and_gradients(self, X: Any, y: Any) -> tuple[float, dict[str, np.ndarray]]:
        """Mean cross-entropy on (X, y) and its gradients with respect to every parameter.

        X (m, n_inputs) uint8 or float, y (m,) ints in [0, n_classes). Returns
        ``(loss, {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2})`` as a float and NumPy
        arrays in the network's dtype.
        """
        X = self._check_inputs(X)
        if X.shape[0] == 0:
            raise ValueError("X is empty: the loss of zero samples is undefined")
        y = self._check_labels(y, X.shape[0])
        loss, grads = self.functions.loss_and_gradients(self.params, self._to_float(X), y)
        return float(loss), as_dict(map_params(self.ops.to_numpy, grads))

    def logits(self, X: Any, *, batch_size: int = 8192) -> Array:
        """Backend array of logits (n, n_classes), computed ``batch_size`` rows at a time."""
        return self._logits(self._check_inputs(X), batch_size)

    def _logits(self, X: Any, batch_size: int = 8192) -> Array:
        """:meth:`logits` of an already checked X."""
        p, forward = self.params, self.functions.forward
        n = X.shape[0]
        chunks = [forward(p, self._to_float(X[i:min(n, i + batch_size), ...]))
                  for i in range(0, n, batch_size)]
        if not chunks:
            return self.ops.xp.zeros((0, self.n_classes), dtype=self.ops.float_dtype)
        return chunks[0] if len(chunks) == 1 else self.ops.xp.concat(chunks)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (n, n_classes), NumPy, rows summing to 1."""
        return self.ops.to_numpy(self.ops.softmax(self.logits(X)))

    def predict(self, X: Any) -> np.ndarray:
        """Predicted labels (n,) as NumPy int64."""
        return self.ops.to_numpy(self.ops.argmax(self.logits(X))).astype(np.int64)

    def accuracy(self, X: Any, y: Any) -> float:
        """Fraction of rows of X whose predicted label equals y (computed on the backend)."""
        X = self._check_inputs(X)
        if X.shape[0] == 0:
            raise ValueError("X is empty: accuracy of zero samples is undefined")
        return self._accuracy(X, self._check_labels(y, X.shape[0]))

    def _accuracy(self, X: Any, y: Array) -> float:
        """:meth:`accuracy` of an already checked, non-empty X and backend labels y."""
        return self.ops.count_equal(self.ops.argmax(self._logits(X)), y) / X.shape[0]
