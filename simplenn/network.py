"""The two-layer network: its math, written once, and the :class:`TwoLayerNet` model.

The math is the classic one, for a batch ``x`` (m, d) with integer labels ``y`` (m,)::

    l1  = x W1 + b1          W1 (d, h), b1 (h,)     -> l1, y1 (m, h)
    y1  = relu(l1)
    l2  = y1 W2 + b2         W2 (h, c), b2 (c,)     -> l2, p (m, c)
    p   = softmax(l2)
    L   = -mean_i log p[i, y_i]
    dl2 = (p - onehot(y)) / m
    dW2 = y1ᵀ dl2            db2 = Σ_rows dl2
    dl1 = dl2 W2ᵀ ⊙ [l1 > 0]
    dW1 = xᵀ dl1             db1 = Σ_rows dl1

Each piece is a ``make_*`` factory that closes over a backend's :class:`Ops` and
returns a plain function of arrays. Interpreted backends call these functions as they
are; a compiling backend (Numba) passes the very same functions through
:meth:`Ops.jit`, so the compiled training epoch runs this code, not a copy of it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np

from .backends import Ops, get_backend
from .backends.base import Array

PARAMETER_NAMES = ("W1", "b1", "W2", "b2")
#: Hidden width of the default network (and of `python -m simplenn.train`).
DEFAULT_HIDDEN = 256


# --------------------------------------------------------------------------------------
# The math, once.
# --------------------------------------------------------------------------------------
def make_forward(ops: Ops) -> Callable[..., Array]:
    """``forward(W1, b1, W2, b2, x) -> l2``: the logits (m, c) of inputs x (m, d)."""
    affine_relu, affine = ops.affine_relu, ops.affine

    def forward(W1, b1, W2, b2, x):
        y1 = affine_relu(x, W1, b1)  # y1 = relu(x W1 + b1)
        return affine(y1, W2, b2)  # l2 = y1 W2 + b2

    return forward


def make_backprop(ops: Ops) -> Callable[..., tuple]:
    """``backprop(W1, b1, W2, b2, x, y) -> (L, dl1, db1, dW2, db2)``: the loss and the
    backward pass down to the first layer's pre-activation gradient ``dl1`` (m, h).

    ``dW1 = xᵀ dl1`` is left to the caller: :func:`make_loss_and_gradients` forms it,
    :func:`make_sgd_step` hands ``x`` and ``dl1`` to the update, which never needs it
    as a (d, h) array.
    """
    affine_relu, affine = ops.affine_relu, ops.affine
    softmax_cross_entropy = ops.softmax_cross_entropy
    matmul_tn, matmul_nt = ops.matmul_tn, ops.matmul_nt
    relu_backward, sum_rows = ops.relu_backward, ops.sum_rows

    def backprop(W1, b1, W2, b2, x, y):
        y1 = affine_relu(x, W1, b1)  # y1 = relu(x W1 + b1)
        l2 = affine(y1, W2, b2)  # l2 = y1 W2 + b2
        loss, dl2 = softmax_cross_entropy(l2, y)  # dl2 = (softmax(l2) - onehot(y)) / m
        dW2 = matmul_tn(y1, dl2)  # dW2 = y1ᵀ dl2
        db2 = sum_rows(dl2)
        dl1 = relu_backward(matmul_nt(dl2, W2), y1)  # dl1 = dl2 W2ᵀ ⊙ [l1 > 0]
        db1 = sum_rows(dl1)
        return loss, dl1, db1, dW2, db2

    return backprop


def make_loss_and_gradients(ops: Ops, backprop: Callable[..., tuple]) -> Callable[..., tuple]:
    """``loss_and_gradients(W1, b1, W2, b2, x, y) -> (L, dW1, db1, dW2, db2)``."""
    matmul_tn = ops.matmul_tn

    def loss_and_gradients(W1, b1, W2, b2, x, y):
        loss, dl1, db1, dW2, db2 = backprop(W1, b1, W2, b2, x, y)
        dW1 = matmul_tn(x, dl1)  # dW1 = xᵀ dl1
        return loss, dW1, db1, dW2, db2

    return loss_and_gradients


def make_sgd_step(ops: Ops, backprop: Callable[..., tuple]) -> Callable[..., tuple]:
    """``sgd_step(W1, b1, W2, b2, V1, v1, V2, v2, x, y, lr, momentum, wd)
    -> (L, W1, b1, W2, b2, V1, v1, V2, v2)``.

    One minibatch step of SGD with momentum: the loss before the step, and the new
    parameters and velocities ``V1, v1, V2, v2``; weight decay ``wd`` applies to W1 and
    W2 only.
    """
    sgd_update, sgd_update_outer = ops.sgd_update, ops.sgd_update_outer

    def sgd_step(W1, b1, W2, b2, V1, v1, V2, v2, x, y, lr, momentum, wd):
        loss, dl1, db1, dW2, db2 = backprop(W1, b1, W2, b2, x, y)
        W1, V1 = sgd_update_outer(W1, x, dl1, V1, lr, momentum, wd)  # with dW1 = xᵀ dl1
        b1, v1 = sgd_update(b1, db1, v1, lr, momentum, 0.0)
        W2, V2 = sgd_update(W2, dW2, V2, lr, momentum, wd)
        b2, v2 = sgd_update(b2, db2, v2, lr, momentum, 0.0)
        return loss, W1, b1, W2, b2, V1, v1, V2, v2

    return sgd_step


def make_train_steps(
    ops: Ops, sgd_step: Callable[..., tuple], take_rows: Callable[[Array, Array], Array]
) -> Callable[..., tuple]:
    """``train_steps(W1, .., v2, X, Y, order, batch_size, lr, momentum, wd)
    -> (W1, b1, W2, b2, V1, v1, V2, v2, losses)``.

    Runs ``ceil(len(order) / batch_size)`` SGD steps over the rows ``X[order]`` in
    order (the last batch may be smaller) and returns the new parameters and
    velocities, and each step's loss as a float64 array. ``X`` is the whole training
    set as stored (uint8 pixels, or floats); ``take_rows(X, rows)`` gathers and
    converts one batch of it to floats; ``Y`` holds int64 labels.
    """
    begin_steps, take_labels = ops.begin_steps, ops.take_labels
    loss_buffer, set_loss = ops.loss_buffer, ops.set_loss

    def train_steps(W1, b1, W2, b2, V1, v1, V2, v2, X, Y, order, batch_size, lr,
                    momentum, wd):
        n = order.shape[0]
        n_steps = (n + batch_size - 1) // batch_size
        inputs = begin_steps(X, W1, V1, n_steps, lr, momentum, wd)  # the optional hook
        losses = loss_buffer(n_steps)
        for s in range(n_steps):
            rows = order[s * batch_size:min(n, (s + 1) * batch_size)]
            loss, W1, b1, W2, b2, V1, v1, V2, v2 = sgd_step(
                W1, b1, W2, b2, V1, v1, V2, v2, take_rows(inputs, rows), take_labels(Y, rows),
                lr, momentum, wd)
            losses = set_loss(losses, s, loss)
        return W1, b1, W2, b2, V1, v1, V2, v2, losses

    return train_steps


class NetworkFunctions(NamedTuple):
    """The network math bound to one backend (and compiled, where it compiles)."""

    forward: Callable[..., Array]
    loss_and_gradients: Callable[..., tuple]
    sgd_step: Callable[..., tuple]
    train_steps_pixels: Callable[..., tuple]
    train_steps_floats: Callable[..., tuple]


_FUNCTION_CACHE: dict[tuple[type, str], NetworkFunctions] = {}


def network_functions(ops: Ops) -> NetworkFunctions:
    """The math of this module bound to ``ops`` through ``ops.jit``, built once per
    backend class and dtype (so a compiling backend compiles once per process)."""
    key = (type(ops), ops.dtype.name)
    if key not in _FUNCTION_CACHE:
        jit = ops.jit
        forward = jit(make_forward(ops))
        backprop = jit(make_backprop(ops))
        loss_and_gradients = jit(make_loss_and_gradients(ops, backprop))
        sgd_step = jit(make_sgd_step(ops, backprop))
        _FUNCTION_CACHE[key] = NetworkFunctions(
            forward=forward,
            loss_and_gradients=loss_and_gradients,
            sgd_step=sgd_step,
            train_steps_pixels=ops.jit_train_steps(
                make_train_steps(ops, sgd_step, ops.take_pixels)),
            train_steps_floats=ops.jit_train_steps(
                make_train_steps(ops, sgd_step, ops.take_floats)),
        )
    return _FUNCTION_CACHE[key]


# --------------------------------------------------------------------------------------
# The model.
# --------------------------------------------------------------------------------------
def _check_size(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")
    return int(value)


class TwoLayerNet:
    """A 784 → hidden → 10 ReLU network with a softmax cross-entropy loss.

    Parameters: ``W1`` (n_inputs, n_hidden), ``b1`` (n_hidden,), ``W2``
    (n_hidden, n_classes), ``b2`` (n_classes,), stored on the chosen backend in
    ``dtype``. Weights start He-scaled, ``N(0, 2 / fan_in)``, drawn in float64 on the
    host from ``numpy.random.default_rng(seed)`` and then cast, so every backend
    starts from the same numbers; biases start at zero.

    ``backend`` is a registered backend's name (``numpy``, ``numba``, ``cupy``,
    ``strict``, a plug-in's) or ``auto``; ``None`` means ``$SIMPLENN_BACKEND``, else
    ``numpy``; or an :class:`Ops` instance.
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
        self.seed = seed
        rng = np.random.default_rng(seed)
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
        return network_functions(self.ops)

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

    # -- inputs ----------------------------------------------------------------------
    def _check_inputs(self, X: Any) -> np.ndarray | Array:
        """X as given (a host array or the backend's), checked: (n, n_inputs) uint8 or
        finite floats. Host arrays are checked on the host, backend arrays by the backend."""
        if not hasattr(X, "shape") or not hasattr(X, "dtype"):
            X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_inputs:
            raise ValueError(f"X must have shape (n, {self.n_inputs}), not {tuple(X.shape)}")
        dtype = self._input_dtype(X)
        if dtype != np.uint8 and dtype.kind != "f":
            raise ValueError(f"X must be uint8 pixels (scaled by 1/255) or floats, not {dtype}")
        if dtype != np.uint8 and not (np.isfinite(X).all() if isinstance(X, np.ndarray)
                                      else self.ops.all_finite(X)):
            raise ValueError("X holds NaN or infinite values")
        return X

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
        X = self.ops.asarray(X, dtype=dtype)
        return self.ops.pixels_to_float(X) if dtype == np.uint8 else self.ops.cast_to_float(X)

    # -- computing -------------------------------------------------------------------
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
        X = self._check_inputs(X)
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
        y = self._check_labels(y, X.shape[0])
        return self.ops.count_equal(self.ops.argmax(self.logits(X)), y) / X.shape[0]
