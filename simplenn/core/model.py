"""The model: :class:`TwoLayerNet`, its parameters on a backend, and the one way to run
a chunk of training steps (:meth:`TwoLayerNet.train_steps`)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ..backends import Ops, get_backend
from ..backends.base import Array
from . import inputs
from .inputs import UnscaledPixelsWarning  # noqa: F401  (re-exported)
from .network import DEFAULT_HIDDEN, PARAMETER_NAMES, NetworkFunctions, network_functions


#: Compared with an input's dtype on every training call (faster than ``np.uint8``).
_UINT8 = np.dtype(np.uint8)


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
        self.set_parameters({
            "W1": rng.standard_normal((d, h)) * math.sqrt(2.0 / d),
            "b1": np.zeros(h),
            "W2": rng.standard_normal((h, c)) * math.sqrt(2.0 / h),
            "b2": np.zeros(c),
        })

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
    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        d, h, c = self.n_inputs, self.n_hidden, self.n_classes
        return {"W1": (d, h), "b1": (h,), "W2": (h, c), "b2": (c,)}

    def parameters(self) -> dict[str, np.ndarray]:
        """NumPy copies of ``W1``, ``b1``, ``W2``, ``b2`` in the network's dtype."""
        return {k: np.array(self.ops.to_numpy(v), copy=True) for k, v in self.params.items()}

    def set_parameters(self, params: Mapping[str, Any]) -> None:
        """Replace all four parameters; shapes must match, values must be finite."""
        missing = [k for k in PARAMETER_NAMES if k not in params]
        extra = [k for k in params if k not in PARAMETER_NAMES]
        if missing or extra:
            raise ValueError(f"parameters must have exactly the keys {PARAMETER_NAMES}; "
                             f"missing {missing}, unexpected {extra}")
        new = {}
        for name, shape in self.parameter_shapes().items():
            host = np.asarray(self.ops.to_numpy(params[name]))
            if host.shape != shape:
                raise ValueError(f"parameter {name} must have shape {shape}, not {host.shape}")
            if host.dtype.kind not in "fiu":
                raise ValueError(f"parameter {name} must be numeric, not {host.dtype}")
            if not np.isfinite(host).all():
                raise ValueError(f"parameter {name} holds NaN or infinite values")
            new[name] = self.ops.asarray(host)
        self.params = new

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
    def train_steps(self, X: Array, Y: Array, order: Array, velocities: list[Array], *,
                    batch_size: int, lr: float, momentum: float, weight_decay: float,
                    ) -> tuple[list[Array], Array]:
        """Run ``ceil(len(order) / batch_size)`` SGD steps over the rows ``X[order]`` in
        order (the last batch may be smaller), updating :attr:`params`; the one way every
        caller (``fit``, the benchmarks, the warm-up) runs a chunk of training steps.

        ``X`` (n, n_inputs) uint8 pixels or floats of :attr:`dtype`, ``Y`` (n,) int64
        labels and ``order`` (k,) int64 row indices are arrays of the backend;
        ``velocities`` are the four momentum buffers, shaped like ``W1, b1, W2, b2``.
        Returns the new velocities and each step's loss, a float64 array of the backend.
        """
        fns = self.functions
        train_steps = fns.train_steps_pixels if self._input_dtype(X) == _UINT8 else \
            fns.train_steps_floats
        scalar = self.ops.scalar
        p = self.params
        W1, b1, W2, b2, V1, v1, V2, v2, losses = train_steps(
            p["W1"], p["b1"], p["W2"], p["b2"], *velocities, X, Y, order, batch_size,
            scalar(lr), scalar(momentum), scalar(weight_decay))
        self.params = {"W1": W1, "b1": b1, "W2": W2, "b2": b2}
        return [V1, v1, V2, v2], losses

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
        p = self.params
        loss, *grads = self.functions.loss_and_gradients(
            p["W1"], p["b1"], p["W2"], p["b2"], self._to_float(X), y)
        return float(loss), {k: self.ops.to_numpy(g) for k, g in zip(PARAMETER_NAMES, grads)}

    def logits(self, X: Any, *, batch_size: int = 8192) -> Array:
        """Backend array of logits (n, n_classes), computed ``batch_size`` rows at a time."""
        return self._logits(self._check_inputs(X), batch_size)

    def _logits(self, X: Any, batch_size: int = 8192) -> Array:
        """:meth:`logits` of an already checked X."""
        p, forward = self.params, self.functions.forward
        n = X.shape[0]
        chunks = [forward(p["W1"], p["b1"], p["W2"], p["b2"],
                          self._to_float(X[i:min(n, i + batch_size), ...]))
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


#: The kinds of input :func:`warm_up` compiles for: uint8 pixels (writable, or read-only
#: as the DataSplits of ``load_mnist`` and ``load_dataset`` hold them) and floats.
INPUT_KINDS = ("pixels", "read-only pixels", "floats")


def warm_up(ops: Ops, kinds: Iterable[str] = INPUT_KINDS, gradients: bool = True,
            batch_size: int | None = None) -> None:
    """Compile (or load from the cache) what training and inference run on ``ops``, for
    its dtype and the input ``kinds`` (names from :data:`INPUT_KINDS`, default all), and
    with ``gradients`` :meth:`TwoLayerNet.loss_and_gradients` (which ``fit`` does not
    call), so that later timings measure running, not compiling. Training is warmed up
    at ``batch_size``, or with None at 1 and at 128 (a backend may compile small and
    large batches apart: Numba does). Worth calling when ``ops.needs_warmup``; cheap
    otherwise."""
    kinds = tuple(kinds)
    unknown = [k for k in kinds if k not in INPUT_KINDS]
    if unknown:
        raise ValueError(f"unknown input kind {unknown[0]!r}; the kinds are "
                         f"{', '.join(map(repr, INPUT_KINDS))}")
    rng = np.random.default_rng(0)
    net = TwoLayerNet(6, 4, 3, backend=ops, dtype=ops.dtype.name)
    pixels = rng.integers(0, 256, (8, 6)).astype(np.uint8)
    labels = rng.integers(0, 3, 8).astype(np.int64)
    ro_pixels, ro_labels = pixels.copy(), labels.copy()
    ro_pixels.flags.writeable = ro_labels.flags.writeable = False
    examples = {"pixels": (pixels, labels), "read-only pixels": (ro_pixels, ro_labels),
                "floats": (pixels.astype(ops.dtype) / 255, labels)}
    order = ops.asarray(np.arange(8), dtype=np.int64)
    for kind in kinds:
        X, Y = examples[kind]
        velocities = [ops.xp.zeros_like(v) for v in net.params.values()]
        X_ops, Y_ops = ops.asarray(X, dtype=X.dtype), ops.asarray(Y, dtype=np.int64)
        for size in (1, 128) if batch_size is None else (batch_size,):
            net.train_steps(X_ops, Y_ops, order, velocities, batch_size=size, lr=0.0,
                            momentum=0.0, weight_decay=0.0)
        if gradients:
            net.loss_and_gradients(X, Y)
        net.predict(X)
