"""The array-backend interface: the array operations the two-layer network needs.

:class:`Ops` writes each operation once against ``self.xp``, a namespace of the
Python array API standard (2023.12): ``array_api_compat.numpy``, ``array_api_strict``,
``array_api_compat.cupy``, ... A backend subclasses it, sets ``xp`` and overrides an
operation only to make it faster, never to make it correct: the conformance kit in
:mod:`simplenn.testing` holds every override to an independent reference.

The contract, for every op:

- arrays are 2-D ``(rows, cols)`` or 1-D, of the backend's float dtype (float32 or
  float64) unless stated; ``m`` is the batch size, ``d`` the number of inputs, ``h``
  the hidden width and ``c`` the number of classes;
- every op is pure: it returns new arrays (or a number) and never changes an argument;
  the kit runs each op on read-only inputs and compares them afterwards.

The ops, by group (:data:`OP_NAMES`):

- moving data: :meth:`~Ops.asarray`, :meth:`~Ops.to_numpy`, :meth:`~Ops.host_dtype`,
  :meth:`~Ops.synchronize`, :meth:`~Ops.scalar`;
- linear algebra: :meth:`~Ops.matmul`, :meth:`~Ops.matmul_tn`, :meth:`~Ops.matmul_nt`,
  :meth:`~Ops.affine`, :meth:`~Ops.affine_relu`;
- activations and the loss: :meth:`~Ops.relu_backward`, :meth:`~Ops.softmax`,
  :meth:`~Ops.softmax_cross_entropy`, :meth:`~Ops.sum_rows`;
- gathering: :meth:`~Ops.take` (rows or labels by index), :meth:`~Ops.to_float`;
- reductions: :meth:`~Ops.argmax`, :meth:`~Ops.count_equal`, :meth:`~Ops.all_finite`;
- compiling: :meth:`~Ops.jit`.

Nothing in the interface names a parameter, an optimizer or an augmentation.
Optimizers (:mod:`simplenn.optim`) are written against ``xp``; image distortion has
its own small interface (:mod:`simplenn.backends.images`); a backend's fused training
chunks are fast paths (:mod:`simplenn.backends.fastpath`) declared in
:attr:`Ops.fast_paths`. What a caller needs to know about a backend is a class
attribute: :attr:`Ops.is_device`, :attr:`Ops.needs_warmup`, :attr:`Ops.fast_paths`,
:attr:`Ops.image_ops`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from array_api_compat import device as device_of

Array = Any
"""A backend array: whatever the backend's ``xp.asarray`` returns."""

#: The public methods of :class:`Ops`, the whole interface.
OP_NAMES = (
    "asarray",
    "to_numpy",
    "host_dtype",
    "synchronize",
    "scalar",
    "matmul",
    "matmul_tn",
    "matmul_nt",
    "affine",
    "affine_relu",
    "relu_backward",
    "softmax",
    "softmax_cross_entropy",
    "sum_rows",
    "take",
    "to_float",
    "argmax",
    "count_equal",
    "all_finite",
    "jit",
)


class Ops:
    """Array operations for the two-layer network, written once against ``self.xp``."""

    #: The registered name (set on each instance by :func:`simplenn.backends.get_backend`).
    name: str = "base"
    #: An array API standard namespace.
    xp: Any = None
    #: True when arrays live off the host: :meth:`to_numpy` copies and
    #: :meth:`synchronize` waits for the device.
    is_device: bool = False
    #: True when the first call of the network's functions compiles them, so a
    #: warm-up (:func:`simplenn.core.training.warm_up`) is worth doing before any timing.
    needs_warmup: bool = False
    #: The fused training chunks this backend offers
    #: (:class:`~simplenn.backends.fastpath.FastPath`, or ``"module:attribute"`` names of
    #: them); ``fit`` uses one where it covers the run, the generic compiled math elsewhere.
    fast_paths: tuple = ()
    #: The image-distortion ops of this backend: a subclass of
    #: :class:`~simplenn.backends.images.ImageOps`, or its ``"module:class"`` name
    #: (imported when a run augments); the generic ones on ``xp`` unless overridden.
    image_ops: Any = "simplenn.backends.images:ImageOps"

    def __init__(self, dtype: str | np.dtype = "float32") -> None:
        dtype = np.dtype(dtype)
        if dtype not in (np.dtype("float32"), np.dtype("float64")):
            raise ValueError(f"dtype must be float32 or float64, not {dtype}")
        if self.xp is None:
            raise TypeError(
                f"{type(self).__name__} sets no array namespace (the class attribute xp)"
            )
        self.dtype = dtype
        #: ``self.dtype`` as the namespace's dtype object.
        self.float_dtype = _xp_dtype(self.xp, dtype)

    def __repr__(self) -> str:
        """The class and every setting that tells two instances apart (the network's
        compiled functions are cached per repr: a backend whose instances differ in a
        setting, such as a device, shows it here)."""
        return f"{type(self).__name__}(dtype={self.dtype.name!r})"

    # -- moving data -----------------------------------------------------------------
    def asarray(self, a: Any, dtype: Any = None) -> Array:
        """Host data (NumPy arrays, lists) or a backend array -> a backend array of
        ``dtype`` (a NumPy dtype; default ``self.dtype``). May return ``a`` itself
        when it already is one of that dtype."""
        return self.xp.asarray(a, dtype=_xp_dtype(self.xp, self.dtype if dtype is None else dtype))

    def to_numpy(self, a: Array) -> np.ndarray:
        """A backend array -> a NumPy array on the host: a copy when the array lives on a
        device, possibly a read-only view otherwise. Through DLPack here: a namespace
        whose arrays have no ``__dlpack__`` overrides it."""
        return np.from_dlpack(a)

    def host_dtype(self, a: Array) -> np.dtype:
        """The NumPy dtype of a backend array's entries."""
        return self.to_numpy(a[0:0, ...]).dtype

    def synchronize(self, *arrays: Array) -> None:
        """Wait until queued device work, and the work producing ``arrays``, has
        finished; a no-op on the CPU."""

    def scalar(self, value: float) -> Any:
        """A hyperparameter or per-step number (``lr``, ``momentum``) as this backend's
        compiled code takes it: a Python float here."""
        return float(value)

    # -- linear algebra --------------------------------------------------------------
    def matmul(self, a: Array, b: Array) -> Array:
        """``a @ b`` for (m, k) x (k, n) -> (m, n)."""
        return a @ b

    def matmul_tn(self, a: Array, b: Array) -> Array:
        """``aᵀ @ b`` for (k, m) x (k, n) -> (m, n): the weight gradients."""
        return self.xp.matrix_transpose(a) @ b

    def matmul_nt(self, a: Array, b: Array) -> Array:
        """``a @ bᵀ`` for (m, k) x (n, k) -> (m, n): gradients flowing back to inputs."""
        return a @ self.xp.matrix_transpose(b)

    def affine(self, x: Array, W: Array, b: Array) -> Array:
        """``x W + b`` for x (m, k), W (k, n), b (n,) -> (m, n)."""
        return self.matmul(x, W) + b

    def affine_relu(self, x: Array, W: Array, b: Array) -> Array:
        """``relu(x W + b)`` -> (m, n); ``relu(l) > 0`` exactly where ``l > 0``."""
        out = self.affine(x, W, b)
        return self.xp.maximum(out, self.xp.zeros((), dtype=out.dtype, device=device_of(out)))

    # -- activations and the loss ----------------------------------------------------
    def relu_backward(self, dy: Array, y: Array) -> Array:
        """``dy ⊙ [y > 0]`` for the ReLU output ``y`` (same shape as ``dy``)."""
        return dy * self.xp.astype(y > 0, dy.dtype)

    def softmax(self, logits: Array) -> Array:
        """Row-wise softmax of (m, c) logits, shifted by the row max (no overflow)."""
        xp = self.xp
        e = xp.exp(logits - xp.max(logits, axis=1, keepdims=True))
        return e / xp.sum(e, axis=1, keepdims=True)

    def softmax_cross_entropy(self, logits: Array, labels: Array) -> tuple[Array, Array]:
        """Mean cross-entropy of (m, c) logits against (m,) int64 labels, and its gradient.

        Returns ``(loss, dlogits)``: ``loss`` a 0-d backend scalar
        ``-mean(log p[i, y_i])`` and ``dlogits = (p - onehot(y)) / m`` (m, c), with
        ``p = softmax(logits)``. Computed through ``log p = z - log Σ exp z`` on the
        max-shifted logits ``z``, so logits of ±1e4 give finite numbers.
        """
        xp = self.xp
        m, c = logits.shape
        z = logits - xp.max(logits, axis=1, keepdims=True)
        e = xp.exp(z)
        s = xp.sum(e, axis=1)
        classes = xp.arange(c, dtype=labels.dtype, device=device_of(labels))
        onehot = xp.astype(labels[:, None] == classes[None, :], logits.dtype)
        loss = xp.sum(xp.log(s) - xp.sum(z * onehot, axis=1)) / m  # z_y: one nonzero term
        return loss, (e / s[:, None] - onehot) / m

    def sum_rows(self, a: Array) -> Array:
        """Column sums of (m, n) -> (n,): the bias gradients."""
        return self.xp.sum(a, axis=0)

    # -- gathering -------------------------------------------------------------------
    def take(self, a: Array, rows: Array) -> Array:
        """Rows ``a[rows]`` of (n, ...) ``a`` for (m,) int64 ``rows`` -> (m, ...), of
        ``a``'s dtype: a training batch of stored inputs, or its labels."""
        return self.xp.take(a, rows, axis=0)

    def to_float(self, x: Array) -> Array:
        """(m, d) inputs as stored -> (m, d) floats in ``self.dtype``: uint8 pixels
        become ``x / 255`` (``x`` cast, then divided), floats are cast, values unchanged."""
        out = self.xp.astype(x, self.float_dtype)
        return out / 255 if x.dtype == self.xp.uint8 else out

    # -- reductions ------------------------------------------------------------------
    def argmax(self, a: Array) -> Array:
        """Index of the largest entry of each row of (m, n) -> (m,) ints."""
        return self.xp.argmax(a, axis=1)

    def count_equal(self, a: Array, b: Array) -> int:
        """Number of positions where two int vectors agree, as a Python int."""
        return int(self.xp.sum(self.xp.astype(a == b, self.xp.int64)))

    def all_finite(self, a: Array) -> bool:
        """Whether every entry of a backend array is finite, as a Python bool."""
        return bool(self.xp.all(self.xp.isfinite(a)))

    # -- compiling -------------------------------------------------------------------
    def jit(self, fn: Any) -> Any:
        """Compile a function of the network math (identity where nothing compiles).

        The functions of :mod:`simplenn.core.network` are plain Python closed over this
        backend's ops (and an optimizer's rule over ``xp``); a compiling backend turns
        them into machine code, so compiled training runs the one definition of the math.
        """
        return fn


def _xp_dtype(xp: Any, dtype: Any) -> Any:
    """The namespace's dtype of the NumPy dtype ``dtype`` (e.g. ``xp.uint8``)."""
    return getattr(xp, np.dtype(dtype).name)
