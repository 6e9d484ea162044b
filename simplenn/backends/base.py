"""The array-backend interface: every operation the two-layer network needs.

:class:`Ops` writes each operation once against an array namespace ``self.xp``
(NumPy here, CuPy on a GPU). A backend subclasses it, sets ``xp`` and overrides only
the operations it accelerates -- the network math in :mod:`simplenn.network` calls
these operations and nothing else, so it runs unchanged on every backend.

Conventions, for every op: arrays are 2-D ``(rows, cols)`` or 1-D, C-contiguous, of
the backend's float dtype (float32 or float64) unless stated; ``m`` is the batch size,
``d`` the number of inputs, ``h`` the hidden width and ``c`` the number of classes.
Ops that say "in place" mutate their first argument and return nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Array = Any
"""A backend array: ``numpy.ndarray`` on CPU backends, ``cupy.ndarray`` on the GPU."""


class Ops:
    """Array operations for the two-layer network, written once against ``self.xp``.

    Subclasses set :attr:`name` and :attr:`xp` and may override any op with a faster
    implementation that computes the same numbers (the parity tests hold them to it).
    """

    name: str = "base"
    xp: Any = np
    #: True when arrays live off the host and ``synchronize`` must wait for a device.
    is_device: bool = False

    def __init__(self, dtype: str | np.dtype = "float32") -> None:
        dtype = np.dtype(dtype)
        if dtype not in (np.dtype("float32"), np.dtype("float64")):
            raise ValueError(f"dtype must be float32 or float64, not {dtype}")
        self.dtype = dtype

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dtype={self.dtype.name!r})"

    # -- moving data -----------------------------------------------------------------
    def asarray(self, a: Any, dtype: Any = None) -> Array:
        """Host or backend data -> a C-contiguous backend array (default: ``self.dtype``)."""
        return self.xp.ascontiguousarray(self.xp.asarray(a, dtype=dtype or self.dtype))

    def to_numpy(self, a: Array) -> np.ndarray:
        """Backend array (or training batch) -> a NumPy array on the host (a copy when
        it lives on a device)."""
        return np.asarray(a)

    def synchronize(self) -> None:
        """Wait until queued device work has finished; a no-op on the CPU."""

    def warmup(self) -> None:
        """Compile whatever this backend compiles, before any timing; a no-op here."""

    def jit(self, fn: Any) -> Any:
        """Compile a function written against this backend's ops (identity if interpreted).

        The training epoch and step in :mod:`simplenn.network` are plain Python
        functions closed over ops; a compiling backend turns them into machine code.
        """
        return fn

    # -- inputs ----------------------------------------------------------------------
    def pixels_to_float(self, x: Array) -> Array:
        """(m, d) uint8 pixels -> (m, d) floats in [0, 1]: ``x / 255`` in ``self.dtype``."""
        return x.astype(self.dtype) / self.dtype.type(255)

    def cast_to_float(self, x: Array) -> Array:
        """(m, d) floats of any precision -> (m, d) in ``self.dtype``, values unchanged."""
        return x.astype(self.dtype)

    def take_pixels(self, X: Array, rows: Array) -> Array:
        """Rows ``X[rows]`` of (n, d) uint8 pixels as a training batch x of (m, d)
        floats, ``pixels_to_float(X[rows])`` for (m,) int64 ``rows``.

        Here x is that array. A backend may return another form of the same numbers
        (Numba: the nonzeros of a sparse batch); the ops that read x -- ``matmul``,
        ``matmul_tn``, ``affine``, ``affine_relu``, ``catch_up_rows``,
        ``sgd_update_outer`` -- take it, and :meth:`to_numpy` turns it into the array."""
        return self.pixels_to_float(X[rows])

    def take_floats(self, X: Array, rows: Array) -> Array:
        """Rows ``X[rows]`` of (n, d) floats as a training batch in ``self.dtype``,
        ``cast_to_float(X[rows])`` (a backend's form, as for :meth:`take_pixels`)."""
        return self.cast_to_float(X[rows])

    # -- the forward pass ------------------------------------------------------------
    def matmul(self, a: Array, b: Array) -> Array:
        """``a @ b`` for (m, k) x (k, n) -> (m, n)."""
        return a @ b

    def matmul_tn(self, a: Array, b: Array) -> Array:
        """``aᵀ @ b`` for (k, m) x (k, n) -> (m, n): the weight gradients."""
        return a.T @ b

    def matmul_nt(self, a: Array, b: Array) -> Array:
        """``a @ bᵀ`` for (m, k) x (n, k) -> (m, n): gradients flowing back to inputs."""
        return a @ b.T

    def affine(self, x: Array, W: Array, b: Array) -> Array:
        """``x W + b`` for x (m, k), W (k, n), b (n,) -> (m, n)."""
        out = self.matmul(x, W)
        out += b
        return out

    def affine_relu(self, x: Array, W: Array, b: Array) -> Array:
        """``relu(x W + b)`` -> (m, n); ``relu(l) > 0`` exactly where ``l > 0``."""
        out = self.affine(x, W, b)
        self.xp.maximum(out, 0, out=out)
        return out

    def relu_backward(self, dy: Array, y: Array) -> Array:
        """``dy ⊙ [y > 0]`` for the ReLU output ``y`` (same shape as ``dy``)."""
        return dy * (y > 0)

    def sum_rows(self, a: Array) -> Array:
        """Column sums of (m, n) -> (n,): the bias gradients."""
        return a.sum(axis=0)

    # -- the loss --------------------------------------------------------------------
    def softmax(self, logits: Array) -> Array:
        """Row-wise softmax of (m, c) logits, shifted by the row max (no overflow)."""
        xp = self.xp
        e = xp.exp(logits - logits.max(axis=1, keepdims=True))
        e /= e.sum(axis=1, keepdims=True)
        return e

    def softmax_cross_entropy(self, logits: Array, labels: Array) -> tuple[Array, Array]:
        """Mean cross-entropy of (m, c) logits against (m,) int labels, and its gradient.

        Returns ``(loss, dlogits)``: ``loss`` a 0-d backend scalar
        ``-mean(log p[i, y_i])`` and ``dlogits = (p - onehot(y)) / m`` (m, c), with
        ``p = softmax(logits)``. Computed through ``log p = z - log Σ exp z`` on the
        max-shifted logits ``z``, so logits of ±1e4 give finite numbers.
        """
        xp = self.xp
        m = logits.shape[0]
        rows = xp.arange(m)
        z = logits - logits.max(axis=1, keepdims=True)
        e = xp.exp(z)
        s = e.sum(axis=1)
        loss = (xp.log(s) - z[rows, labels]).sum() / m
        e /= s[:, None]
        e[rows, labels] -= 1
        e /= m
        return loss, e

    # -- the update ------------------------------------------------------------------
    def sgd_update(
        self, param: Array, grad: Array, velocity: Array, lr: float, momentum: float,
        weight_decay: float,
    ) -> None:
        """In place, SGD with momentum and L2 weight decay (PyTorch's convention)::

            g = grad + weight_decay * param
            velocity = momentum * velocity + g
            param -= lr * velocity
        """
        g = grad + param * weight_decay if weight_decay else grad
        velocity *= momentum
        velocity += g
        param -= velocity * lr

    def sgd_update_outer(
        self, param: Array, x: Array, d: Array, velocity: Array, lr: float,
        momentum: float, weight_decay: float, lazy: Any,
    ) -> None:
        """In place, :meth:`sgd_update` of (k, n) ``param`` with the gradient
        ``xᵀ d`` of x (m, k) and d (m, n) -- a first-layer weight update, whose
        gradient a backend may fold into the update instead of forming it.

        A row ``i`` whose inputs ``x[:, i]`` are all zero has gradient 0 (plus weight
        decay); a backend may defer its step, recording it in ``lazy`` (from
        :meth:`lazy_rows`), until :meth:`catch_up_rows` or :meth:`catch_up`. Here
        every row is updated at once and ``lazy`` is unused.
        """
        self.sgd_update(param, self.matmul_tn(x, d), velocity, lr, momentum, weight_decay)

    # -- deferred first-layer steps ----------------------------------------------------
    # MNIST inputs are mostly zeros, so at small batches most rows of W1 get a zero
    # gradient in a step, and their momentum step is the same linear map of (w, v) every
    # time. A backend may defer those steps and apply k of them at once, in closed form,
    # when the row is next read. These three ops are its bookkeeping; here, where every
    # row is updated at every step, they do nothing.
    def lazy_rows(self, param: Array, n_steps: int, lr: float, momentum: float,
                  weight_decay: float) -> Any:
        """State for deferring the zero-gradient steps of the rows of (k, n) ``param``
        over the next ``n_steps`` steps at this ``lr``, ``momentum`` and
        ``weight_decay`` (``None`` here: nothing is deferred)."""
        return None

    def catch_up_rows(self, param: Array, velocity: Array, x: Array, lazy: Any) -> None:
        """In place: apply the deferred steps of the rows of ``param`` (and
        ``velocity``) that a forward pass of x (m, k) reads."""

    def catch_up(self, param: Array, velocity: Array, lazy: Any) -> None:
        """In place: apply every deferred step of every row of ``param``."""

    # -- evaluation ------------------------------------------------------------------
    def argmax(self, a: Array) -> Array:
        """Index of the largest entry of each row of (m, n) -> (m,) ints."""
        return a.argmax(axis=1)

    def count_equal(self, a: Array, b: Array) -> int:
        """Number of positions where two int vectors agree, as a Python int."""
        return int((a == b).sum())
