"""The array-backend interface: every operation the two-layer network needs.

:class:`Ops` writes each operation once against ``self.xp``, a namespace of the
Python array API standard (2023.12): ``array_api_compat.numpy``, ``array_api_strict``,
``array_api_compat.cupy``, ... A backend subclasses it, sets ``xp`` and overrides an
operation only to make it faster, never to make it correct: the conformance kit in
:mod:`simplenn.testing` holds every override to the generic version's numbers.

The contract, for every op:

- arrays are 2-D ``(rows, cols)`` or 1-D, of the backend's float dtype (float32 or
  float64) unless stated; ``m`` is the batch size, ``d`` the number of inputs, ``h``
  the hidden width and ``c`` the number of classes;
- every op returns its results and leaves its arguments as they were, except the
  updates (:meth:`Ops.sgd_update`, :meth:`Ops.sgd_update_outer`), which return the new
  parameter and velocity: a backend whose arrays are mutable may write them into the
  arrays it was given and return those, so callers always use what is returned;
- hyperparameters (``lr``, ``momentum``, ``weight_decay``) come as :meth:`Ops.scalar`
  makes them.

What a caller needs to know about a backend is a class attribute, read one way
everywhere: :attr:`Ops.compiles_chunks`, :attr:`Ops.is_device`, :attr:`Ops.needs_warmup`.
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
from array_api_compat import device as device_of

Array = Any
"""A backend array: whatever the backend's ``xp.asarray`` returns."""


class Ops:
    """Array operations for the two-layer network, written once against ``self.xp``."""

    #: The registered name (set on each instance by :func:`simplenn.backends.get_backend`).
    name: str = "base"
    #: An array API standard namespace.
    xp: Any = None
    #: True when :meth:`jit_train_steps` runs a whole chunk of SGD steps per call
    #: (compiled code, or work queued on a device), so :func:`simplenn.fit` hands it
    #: chunks of about ``CHUNK_SAMPLES`` samples; otherwise one batch per call.
    compiles_chunks: bool = False
    #: True when arrays live off the host: :meth:`to_numpy` copies and
    #: :meth:`synchronize` waits for the device.
    is_device: bool = False
    #: True when the first call of the network's functions compiles them, so a
    #: warm-up (:func:`simplenn.core.model.warm_up`) is worth doing before any timing.
    needs_warmup: bool = False

    def __init__(self, dtype: str | np.dtype = "float32") -> None:
        dtype = np.dtype(dtype)
        if dtype not in (np.dtype("float32"), np.dtype("float64")):
            raise ValueError(f"dtype must be float32 or float64, not {dtype}")
        if self.xp is None:
            raise TypeError(f"{type(self).__name__} sets no array namespace (the class "
                            f"attribute xp)")
        self.dtype = dtype
        #: ``self.dtype`` as the namespace's dtype object.
        self.float_dtype = self.xp_dtype(dtype)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dtype={self.dtype.name!r})"

    def xp_dtype(self, dtype: Any) -> Any:
        """The namespace's dtype of the NumPy dtype ``dtype`` (e.g. ``xp.uint8``)."""
        return getattr(self.xp, np.dtype(dtype).name)

    # -- moving data -----------------------------------------------------------------
    def asarray(self, a: Any, dtype: Any = None) -> Array:
        """Host data (NumPy arrays, lists) or a backend array -> a backend array of
        ``dtype`` (a NumPy dtype; default ``self.dtype``)."""
        return self.xp.asarray(a, dtype=self.xp_dtype(self.dtype if dtype is None else dtype))

    def to_numpy(self, a: Array) -> np.ndarray:
        """A backend array (or training batch) -> a NumPy array on the host: a copy when
        the array lives on a device, possibly a read-only view otherwise."""
        return np.from_dlpack(a)

    def host_dtype(self, a: Array) -> np.dtype:
        """The NumPy dtype of a backend array's entries."""
        return self.to_numpy(a[0:0, ...]).dtype

    def scalar(self, value: float) -> Any:
        """A hyperparameter (``lr``, ``momentum``, ``weight_decay``) as this backend's
        ops take it: a Python float here."""
        return float(value)

    def synchronize(self, *arrays: Array) -> None:
        """Wait until queued device work, and the work producing ``arrays``, has
        finished; a no-op on the CPU."""

    def jit(self, fn: Any) -> Any:
        """Compile a function of the network math (identity where nothing compiles).

        The functions of :mod:`simplenn.core.network` are plain Python closed over this
        backend's ops; a compiling backend turns them into machine code, so the
        compiled training runs the one definition of the math.
        """
        return fn

    def jit_train_steps(self, fn: Any) -> Any:
        """Compile the chunk-of-steps loop ``train_steps`` (see
        :func:`simplenn.core.network.make_train_steps`); :meth:`jit` unless overridden
        (CuPy replays it as a CUDA graph)."""
        return self.jit(fn)

    # -- the optional hook of a chunk of steps ---------------------------------------
    def begin_steps(self, X: Array, W1: Array, V1: Array, n_steps: int, lr: Any,
                    momentum: Any, weight_decay: Any) -> Array:
        """The training set ``X`` as the next ``n_steps`` SGD steps of ``W1`` (velocity
        ``V1``) read it through :meth:`take_pixels` / :meth:`take_floats`; ``X`` itself
        here.

        A backend may return another form of ``X`` that carries its own bookkeeping
        into those steps' batches; Numba's carries deferred momentum steps of the rows
        of ``W1`` that a batch's inputs do not touch. Whatever it does, the parameters
        that the last of the ``n_steps`` updates returns are exact.
        """
        return X

    def loss_buffer(self, n: int) -> Array:
        """(n,) float64 zeros: the array a chunk of ``n`` SGD steps writes its losses to."""
        return self.xp.zeros(n, dtype=self.xp.float64)

    def set_loss(self, losses: Array, step: int, loss: Array) -> Array:
        """``losses`` with entry ``step`` set to the 0-d ``loss`` (in place, and returned,
        where arrays are mutable)."""
        losses[step] = loss
        return losses

    # -- inputs ----------------------------------------------------------------------
    def pixels_to_float(self, x: Array) -> Array:
        """(m, d) uint8 pixels -> (m, d) floats in [0, 1]: ``x / 255`` in ``self.dtype``."""
        return self.xp.astype(x, self.float_dtype) / 255

    def cast_to_float(self, x: Array) -> Array:
        """(m, d) floats of any precision -> (m, d) in ``self.dtype``, values unchanged."""
        return self.xp.astype(x, self.float_dtype)

    def take_pixels(self, X: Array, rows: Array) -> Array:
        """Rows ``X[rows]`` of (n, d) uint8 pixels as a training batch x of (m, d)
        floats, ``pixels_to_float(X[rows])`` for (m,) int64 ``rows``.

        Here x is that array. A backend may return another form of the same numbers
        (Numba: the nonzeros of a sparse batch); the ops that read x -- ``matmul``,
        ``matmul_tn``, ``affine``, ``affine_relu``, ``sgd_update_outer`` -- take it, and
        :meth:`to_numpy` turns it into the array."""
        return self.pixels_to_float(self.xp.take(X, rows, axis=0))

    def take_floats(self, X: Array, rows: Array) -> Array:
        """Rows ``X[rows]`` of (n, d) floats as a training batch in ``self.dtype``,
        ``cast_to_float(X[rows])`` (a backend's form, as for :meth:`take_pixels`)."""
        return self.cast_to_float(self.xp.take(X, rows, axis=0))

    def take_labels(self, Y: Array, rows: Array) -> Array:
        """Labels ``Y[rows]`` (m,) of (n,) int64 ``Y`` for (m,) int64 ``rows``."""
        return self.xp.take(Y, rows, axis=0)

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
        return self.matmul(x, W) + b

    def affine_relu(self, x: Array, W: Array, b: Array) -> Array:
        """``relu(x W + b)`` -> (m, n); ``relu(l) > 0`` exactly where ``l > 0``."""
        out = self.affine(x, W, b)
        return self.xp.maximum(out, self.xp.zeros((), dtype=out.dtype, device=device_of(out)))

    def relu_backward(self, dy: Array, y: Array) -> Array:
        """``dy ⊙ [y > 0]`` for the ReLU output ``y`` (same shape as ``dy``)."""
        return dy * self.xp.astype(y > 0, dy.dtype)

    def sum_rows(self, a: Array) -> Array:
        """Column sums of (m, n) -> (n,): the bias gradients."""
        return self.xp.sum(a, axis=0)

    # -- the loss --------------------------------------------------------------------
    def softmax(self, logits: Array) -> Array:
        """Row-wise softmax of (m, c) logits, shifted by the row max (no overflow)."""
        xp = self.xp
        e = xp.exp(logits - xp.max(logits, axis=1, keepdims=True))
        return e / xp.sum(e, axis=1, keepdims=True)

    def softmax_cross_entropy(self, logits: Array, labels: Array) -> tuple[Array, Array]:
        """Mean cross-entropy of (m, c) logits against (m,) int labels, and its gradient.

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

    # -- the update ------------------------------------------------------------------
    def sgd_update(
        self, param: Array, grad: Array, velocity: Array, lr: Any, momentum: Any,
        weight_decay: Any,
    ) -> tuple[Array, Array]:
        """SGD with momentum and L2 weight decay (PyTorch's convention); returns the new
        ``(param, velocity)``::

            g = grad + weight_decay * param
            velocity = momentum * velocity + g
            velocity = 0 where |velocity| < smallest normal number of the dtype
            param = param - lr * velocity

        The velocity of a weight whose gradient stays zero (the first layer's weights
        of a pixel that is dark in every image of the batch) decays geometrically and
        would spend steps among the subnormal numbers, where x86 arithmetic is about a
        hundred times slower; flushed to zero it moves ``param`` just as much (``lr``
        times a subnormal number is below half an ulp of any weight above 1e-30 for
        lr up to 1).
        """
        xp = self.xp
        velocity = velocity * momentum + (grad + param * weight_decay)
        velocity = xp.where(xp.abs(velocity) < xp.finfo(velocity.dtype).smallest_normal,
                            xp.zeros_like(velocity), velocity)
        return param - velocity * lr, velocity

    def sgd_update_outer(
        self, param: Array, x: Array, d: Array, velocity: Array, lr: Any, momentum: Any,
        weight_decay: Any,
    ) -> tuple[Array, Array]:
        """:meth:`sgd_update` of (k, n) ``param`` with the gradient ``xᵀ d`` of a training
        batch x (m, k) and d (m, n): the first layer's update, whose gradient a backend
        may fold into the update instead of forming it."""
        return self.sgd_update(param, self.matmul_tn(x, d), velocity, lr, momentum,
                               weight_decay)

    # -- augmentation ----------------------------------------------------------------
    def augmented_training(self) -> AbstractContextManager:
        """A context :func:`simplenn.fit` runs an augmented run in, whose chunks,
        distortions and evaluations take turns: a backend may arrange its threads for
        that there. The default does nothing."""
        return nullcontext()

    def elastic_fields(self, noise: Array, levels: Array, basis: Array) -> Array:
        """Displacement fields ``B Z Bᵀ`` (m, 2, s, s) in ``self.dtype`` from uint8 noise
        (m, 2, k, k), ``Z = levels[noise]`` with ``levels`` (256,), and the (s, k)
        ``basis`` B (see :func:`simplenn.core.augment.elastic_basis`)."""
        xp = self.xp
        z = xp.reshape(xp.take(levels, xp.reshape(xp.astype(noise, xp.int64), (-1,))),
                       noise.shape)
        return xp.matmul(xp.matmul(basis, z), xp.matrix_transpose(basis))

    def warp(self, x: Array, matrices: Array, fields: Array | None) -> Array:
        """Images x (m, s * s), uint8 pixels (read as ``x / 255``) or floats, resampled
        bilinearly (zeros outside) -> (m, s * s) in ``self.dtype``: output pixel (r, c)
        of image i reads the input at ``A_i (r - h, c - h) + t_i + (h, h)`` plus
        ``fields[i, :, r, c]`` when given, with ``h = (s - 1) / 2``, ``[A_i | t_i]`` =
        ``matrices[i]`` (m, 2, 3) and ``fields`` (m, 2, s, s) or None."""
        xp = self.xp
        m, d = x.shape
        s = math.isqrt(d)
        f, dev = self.float_dtype, device_of(x)
        img = xp.astype(x, f) / 255 if x.dtype == xp.uint8 else xp.astype(x, f)
        grid = xp.arange(s, dtype=f, device=dev) - (s - 1) / 2
        u = xp.reshape(xp.broadcast_to(grid[:, None], (s, s)), (1, d))  # r - h
        v = xp.reshape(xp.broadcast_to(grid[None, :], (s, s)), (1, d))  # c - h
        A = xp.astype(matrices, f)
        src_r = A[:, 0, 0:1] * u + A[:, 0, 1:2] * v + (A[:, 0, 2:3] + (s - 1) / 2)
        src_c = A[:, 1, 0:1] * u + A[:, 1, 1:2] * v + (A[:, 1, 2:3] + (s - 1) / 2)
        if fields is not None:
            src_r = src_r + xp.reshape(fields[:, 0, ...], (m, d))
            src_c = src_c + xp.reshape(fields[:, 1, ...], (m, d))
        r0, c0 = xp.floor(src_r), xp.floor(src_c)
        fr, fc = src_r - r0, src_c - c0
        # corners more than one pixel outside read zeros: clip before the integer cast
        r0 = xp.astype(xp.clip(r0, -2, s), xp.int64)
        c0 = xp.astype(xp.clip(c0, -2, s), xp.int64)
        flat = xp.reshape(img, (m * d,))
        first = xp.arange(m, dtype=xp.int64, device=dev)[:, None] * d
        out = xp.zeros((m, d), dtype=f, device=dev)
        for dr, wr in ((0, 1 - fr), (1, fr)):
            for dc, wc in ((0, 1 - fc), (1, fc)):
                r, c = r0 + dr, c0 + dc
                inside = (r >= 0) & (r < s) & (c >= 0) & (c < s)
                at = first + xp.clip(r, 0, s - 1) * s + xp.clip(c, 0, s - 1)
                value = xp.reshape(xp.take(flat, xp.reshape(at, (m * d,))), (m, d))
                out = out + xp.where(inside, wr * wc * value, xp.zeros((), dtype=f, device=dev))
        return out

    # -- evaluation ------------------------------------------------------------------
    def argmax(self, a: Array) -> Array:
        """Index of the largest entry of each row of (m, n) -> (m,) ints."""
        return self.xp.argmax(a, axis=1)

    def count_equal(self, a: Array, b: Array) -> int:
        """Number of positions where two int vectors agree, as a Python int."""
        return int(self.xp.sum(self.xp.astype(a == b, self.xp.int64)))

    def all_finite(self, a: Array) -> bool:
        """Whether every entry of a backend array is finite, as a Python bool."""
        return bool(self.xp.all(self.xp.isfinite(a)))
