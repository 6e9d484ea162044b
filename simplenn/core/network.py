"""The two-layer network's math, written once against :class:`~simplenn.backends.Ops`.

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

from collections.abc import Callable
from typing import NamedTuple

from ..backends import Ops
from ..backends.base import Array

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


_FUNCTION_CACHE: dict[tuple[type, object], NetworkFunctions] = {}


def network_functions(ops: Ops) -> NetworkFunctions:
    """The math of this module bound to ``ops`` through ``ops.jit``, built once per
    backend class and dtype (so a compiling backend compiles once per process)."""
    key = (type(ops), ops.dtype)  # (np.dtype.name is slow, and this runs every call)
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
