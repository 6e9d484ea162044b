"""The model: :class:`TwoLayerNet`, its parameters on a backend (a
:class:`~simplenn.core.params.Params`), and the one way to run a chunk of training
steps (:meth:`TwoLayerNet.train_steps`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..backends import Ops, get_backend
from ..backends.base import Array
from ..optim import Optimizer, OptState
from . import inputs
from .inputs import UnscaledPixelsWarning  # noqa: F401  (re-exported)
from .network import (
    DEFAULT_HIDDEN,
    NetworkFunctions,
    TrainingPath,
    input_kind,
    network_functions,
    training_path,
)
from .params import Params, as_dict, from_mapping, map_params, parameter_shapes


def _check_size(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")
    return int(value)


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer (0, 1, 2, ...), not {seed!r}")
    return int(seed)


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
    finite floats, as arrays of any array-API library (NumPy, PyTorch, JAX, CuPy, ...;
    moved to the backend through DLPack where it takes them, else through the host)
    or anything ``numpy.asarray`` takes; anything else is a ``TypeError``. Also
    accepted: images (n, *image_shape) with n_inputs values each (flattened row-major)
    and integer arrays of any dtype whose values all lie in 0..255 (taken as uint8
    pixels). Float inputs that look like unscaled pixels warn with
    :class:`UnscaledPixelsWarning`. Results are NumPy arrays, whatever the input's
    library (see :mod:`simplenn.core.inputs`).
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
        self.set_parameters(
            Params(
                W1=rng.standard_normal((d, h)) * math.sqrt(2.0 / d),
                b1=np.zeros(h),
                W2=rng.standard_normal((h, c)) * math.sqrt(2.0 / h),
                b2=np.zeros(c),
            )._asdict()
        )

    def __repr__(self) -> str:
        return (
            f"TwoLayerNet({self.n_inputs}, {self.n_hidden}, {self.n_classes}, "
            f"backend={self.ops.name!r}, dtype={self.dtype.name!r})"
        )

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
        return as_dict(map_params(lambda v: np.array(self.ops.to_numpy(v), copy=True), self.params))

    def set_parameters(self, params: Mapping[str, Any]) -> None:
        """Replace all four parameters from a mapping by name (host or backend arrays);
        shapes must match, values must be finite."""
        given = from_mapping(params)
        shapes = parameter_shapes(self.n_inputs, self.n_hidden, self.n_classes)
        new = []
        for name, value, shape in zip(Params._fields, given, shapes):
            host = np.asarray(
                self.ops.to_numpy(value) if not isinstance(value, np.ndarray) else value
            )
            if host.shape != shape:
                raise ValueError(f"parameter {name} must have shape {shape}, not {host.shape}")
            if host.dtype.kind not in "fiu":
                raise ValueError(f"parameter {name} must be numeric, not {host.dtype}")
            if not np.isfinite(host).all():
                raise ValueError(f"parameter {name} holds NaN or infinite values")
            new.append(self.ops.asarray(host))
        self.params = Params(*new)

    # -- inputs (checked and moved by simplenn.core.inputs) ---------------------------
    def _check_inputs(self, X: Any) -> np.ndarray | Array:
        """X as the network takes it (:func:`~simplenn.core.inputs.check_inputs`)."""
        return inputs.check_inputs(X, self.ops, self.n_inputs)

    def _input_dtype(self, X: Any) -> np.dtype:
        """The NumPy dtype of a host or backend array."""
        return inputs.input_dtype(X, self.ops)

    def _check_labels(self, y: Any, n: int) -> Array:
        """(n,) labels of any library as backend int64 (:func:`~simplenn.core.inputs.check_labels`)."""
        return inputs.check_labels(y, self.ops, n, self.n_classes)

    def _to_float(self, X: Any) -> Array:
        """Checked (m, d) input -> backend floats; uint8 pixels are scaled by 1/255."""
        return inputs.to_float(X, self.ops)

    # -- computing -------------------------------------------------------------------
    def training_path(self, optimizer: Optimizer, X: Array, batch_size: int) -> TrainingPath:
        """The path :meth:`train_steps` takes for ``optimizer`` on the stored inputs ``X``
        at ``batch_size``: its ``name`` is ``generic`` or one of the backend's fast
        paths' (:func:`simplenn.core.network.training_path`)."""
        dtype = self._input_dtype(X)
        last = self.__dict__.get("_last_path")  # what the previous call of a run found
        if last is not None and last[0] is optimizer and last[1] == (dtype, batch_size):
            return last[2]
        paths = self.__dict__.setdefault("_paths", {})
        path = paths.get((optimizer, dtype, batch_size))
        if path is None:
            path = training_path(self.ops, optimizer, input_kind(dtype), batch_size)
            paths[optimizer, dtype, batch_size] = path
        self._last_path = (optimizer, (dtype, batch_size), path)
        return path

    def train_steps(
        self,
        X: Array,
        Y: Array,
        order: Array,
        state: OptState,
        *,
        optimizer: Optimizer,
        batch_size: int,
        lrs: np.ndarray,
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
        covers it (:meth:`training_path`); a fast path may update the parameters and
        state it is handed in place.
        """
        path = self.training_path(optimizer, X, batch_size)
        self.params, state, losses = path.train_steps(
            self.params, state, X, Y, order, batch_size, lrs
        )
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
        chunks = [
            forward(p, self._to_float(X[i : min(n, i + batch_size), ...]))
            for i in range(0, n, batch_size)
        ]
        if not chunks:
            return self.ops.xp.zeros((0, self.n_classes), dtype=self.ops.float_dtype)
        return chunks[0] if len(chunks) == 1 else self.ops.xp.concat(chunks)

    def predict_proba(self, X: Any, *, like_input: bool = False) -> np.ndarray | Any:
        """Class probabilities (n, n_classes) in the network's dtype, rows summing to 1:
        NumPy, or with ``like_input`` an array of X's library on X's device when X is
        another array-API library's (:func:`simplenn.core.inputs.like_input`)."""
        result = self.ops.to_numpy(self.ops.softmax(self.logits(X)))
        return inputs.like_input(result, X) if like_input else result

    def predict(self, X: Any, *, like_input: bool = False) -> np.ndarray | Any:
        """Predicted labels (n,) int64: NumPy, or with ``like_input`` an array of X's
        library on X's device when X is another array-API library's."""
        result = self.ops.to_numpy(self.ops.argmax(self.logits(X))).astype(np.int64)
        return inputs.like_input(result, X) if like_input else result

    def accuracy(self, X: Any, y: Any) -> float:
        """Fraction of rows of X whose predicted label equals y (computed on the backend)."""
        X = self._check_inputs(X)
        if X.shape[0] == 0:
            raise ValueError("X is empty: accuracy of zero samples is undefined")
        return self._accuracy(X, self._check_labels(y, X.shape[0]))

    def _accuracy(self, X: Any, y: Array) -> float:
        """:meth:`accuracy` of an already checked, non-empty X and backend labels y."""
        return self.ops.count_equal(self.ops.argmax(self._logits(X)), y) / X.shape[0]
