"""The conformance kit: checks that any backend, built-in or plugged in, computes the
network's numbers.

``check_backend(name)`` runs every check on backend ``name`` and raises
:class:`AssertionError` at the first failure; a pytest suite parametrises over
:data:`CHECKS` and :data:`DTYPES` and calls :func:`run_check` (a check that cannot
apply raises :class:`CheckSkipped` with the reason). The checks:

- ``ops``: each op against an independent float64 reference written in plain NumPy
  (:func:`reference_op`, never through ``Ops``);
- ``images``: the image ops (:mod:`simplenn.backends.images`) against the reference;
- ``gradients``: the loss, the class probabilities and the four gradients of a
  :class:`~simplenn.TwoLayerNet` against the reference;
- ``finite_differences``: the backend's float64 gradients against central differences
  of its own loss;
- ``optimizers``: steps of every optimizer of :mod:`simplenn.optim` against a float64
  reference, state entries below the smallest normal number flushed to zero;
- ``schedule``: a chunk of training steps at a distinct learning rate per step against
  the reference, on each path the backend trains with;
- ``trajectory``: per-step losses and final parameters of :func:`simplenn.fit` against
  the numpy backend's, at batch sizes 1, 7 (a ragged last batch), 32 and 128;
- ``fast_paths``: each fast path's trajectory against the generic path's on the same
  backend, at batch sizes 1, 7, 128 and 2048, on pixels and floats;
- ``augmentation``: distortions and an epoch of elastic training against numpy's;
- ``no_host_arrays``: no host NumPy array reaches an op of a backend whose arrays are
  not NumPy's, through training, inference and gradients;
- ``inputs_unchanged``: every op runs on read-only inputs (non-writeable NumPy arrays
  where the backend computes on them) and leaves every argument as it was.

Tolerances are a function of the dtype, here and nowhere else: :func:`tolerance` for
one evaluation, :func:`trajectory_tolerance` for whole training runs. Both are
normwise: an element may differ by ``rtol * max|expected|`` of its tensor.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DTYPES = ("float64", "float32")

_TOLERANCE = {np.dtype("float64"): 1e-12, np.dtype("float32"): 1e-5}
_TRAJECTORY_TOLERANCE = {np.dtype("float64"): 1e-9, np.dtype("float32"): 1e-4}
#: Batch sizes of the trajectory check: 7 leaves a ragged last batch. Batches 1 and 7
#: in float32 are left out: a last-bit difference flips ReLU units there and
#: float32 runs part ways.
TRAJECTORY_BATCHES = {"float64": (1, 7, 32, 128), "float32": (32, 128)}


class CheckSkipped(Exception):
    """A check that does not apply to this backend or dtype; the message says why."""


def tolerance(dtype: Any) -> float:
    """Relative (normwise) tolerance of one evaluation in ``dtype``: 1e-12 for
    float64, 1e-5 for float32."""
    return _TOLERANCE[np.dtype(dtype)]


def trajectory_tolerance(dtype: Any) -> float:
    """Relative (normwise) tolerance of per-step losses and final parameters after
    training in ``dtype``: 1e-9 for float64, 1e-4 for float32."""
    return _TRAJECTORY_TOLERANCE[np.dtype(dtype)]


def assert_close(
    backend: str,
    tensor_name: str,
    actual: Any,
    expected: Any,
    dtype: Any,
    rtol: float | None = None,
) -> None:
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
        raise AssertionError(
            f"backend {backend!r}, {tensor_name}: shape {a.shape} differs "
            f"from the reference's {e.shape}"
        )
    if not np.isfinite(a).all() or not np.isfinite(e).all():
        bad = np.argwhere(~(np.isfinite(a) & np.isfinite(e)))[0]
        raise AssertionError(
            f"backend {backend!r}, {tensor_name}: non-finite value at index "
            f"{tuple(int(i) for i in bad)} (got {a[tuple(bad)]!r}, "
            f"reference {e[tuple(bad)]!r})"
        )
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
        f"(got {a[where]!r}, reference {e[where]!r}); max relative error "
        f"{float(rel.max()):.3e}; allowed {rtol:g} x max|reference| = {rtol * scale:.3e}"
    )


# --------------------------------------------------------------------------------------
# The independent reference: float64 NumPy, written out, not through Ops.
# --------------------------------------------------------------------------------------
def _f64(a: Any) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def _ref_softmax_cross_entropy(logits: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    z = _f64(logits)
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    m = z.shape[0]
    onehot = np.eye(z.shape[1])[np.asarray(labels)]
    return np.float64(-(log_p * onehot).sum() / m), (np.exp(log_p) - onehot) / m


def _ref_softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def reference_update(
    name: str,
    hyper: dict[str, Any],
    param: Any,
    grad: Any,
    slots: tuple,
    lr: float,
    step: int,
    decay: bool,
    tiny: float,
) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """One update of optimizer ``name`` (``sgd``, ``adam``, ``adamw``) with ``hyper`` of
    one parameter, in float64 NumPy, written from the optimizers' equations: update
    number ``step`` (1, 2, ...) at ``lr``; weight decay when ``decay``; state entries
    below ``tiny`` set to 0."""
    p, g = _f64(param), _f64(grad)
    wd = hyper.get("weight_decay", 0.0) if decay else 0.0
    flush = lambda a: np.where(np.abs(a) < tiny, 0.0, a)  # noqa: E731
    if name == "sgd":
        g = g + wd * p
        v = flush(hyper["momentum"] * _f64(slots[0]) + g)
        step_dir = g + hyper["momentum"] * v if hyper["nesterov"] else v
        return p - lr * step_dir, (v,)
    b1, b2, eps = hyper["beta1"], hyper["beta2"], hyper["eps"]
    if name == "adamw":
        p = p * (1 - lr * wd)
    else:
        g = g + wd * p
    m = flush(b1 * _f64(slots[0]) + (1 - b1) * g)
    v = flush(b2 * _f64(slots[1]) + (1 - b2) * g * g)
    denom = np.sqrt(v) / np.sqrt(1 - b2**step) + eps
    return p - lr / (1 - b1**step) * m / denom, (m, v)


def _ref_elastic_fields(noise: Any, levels: Any, basis: Any) -> np.ndarray:
    z = _f64(levels)[np.asarray(noise)]
    B = _f64(basis)
    return np.einsum("ia,mcab,jb->mcij", B, z, B)


def _ref_warp(x: Any, matrices: Any, fields: Any) -> np.ndarray:
    """Bilinear resampling written pixel by pixel."""
    x = np.asarray(x)
    img = _f64(x) / 255 if x.dtype == np.uint8 else _f64(x)
    m, d = img.shape
    s = int(round(d**0.5))
    h = (s - 1) / 2
    A = _f64(matrices)
    out = np.zeros((m, d))
    for i in range(m):
        for r in range(s):
            for c in range(s):
                sr = A[i, 0, 0] * (r - h) + A[i, 0, 1] * (c - h) + A[i, 0, 2] + h
                sc = A[i, 1, 0] * (r - h) + A[i, 1, 1] * (c - h) + A[i, 1, 2] + h
                if fields is not None:
                    sr += float(fields[i, 0, r, c])
                    sc += float(fields[i, 1, r, c])
                r0, c0 = int(np.floor(sr)), int(np.floor(sc))
                total = 0.0
                for rr, wr in ((r0, 1 - (sr - r0)), (r0 + 1, sr - r0)):
                    for cc, wc in ((c0, 1 - (sc - c0)), (c0 + 1, sc - c0)):
                        if 0 <= rr < s and 0 <= cc < s:
                            total += wr * wc * img[i, rr * s + cc]
                out[i, r * s + c] = total
    return out


_REFERENCE: dict[str, Callable[..., Any]] = {
    "to_float": lambda x: _f64(x) / (255 if np.asarray(x).dtype == np.uint8 else 1),
    "take": lambda a, rows: np.asarray(a)[np.asarray(rows)],
    "matmul": lambda a, b: _f64(a) @ _f64(b),
    "matmul_tn": lambda a, b: _f64(a).T @ _f64(b),
    "matmul_nt": lambda a, b: _f64(a) @ _f64(b).T,
    "affine": lambda x, W, b: _f64(x) @ _f64(W) + _f64(b),
    "affine_relu": lambda x, W, b: np.maximum(_f64(x) @ _f64(W) + _f64(b), 0),
    "relu_backward": lambda dy, y: _f64(dy) * (_f64(y) > 0),
    "sum_rows": lambda a: _f64(a).sum(axis=0),
    "softmax": lambda z: _ref_softmax(_f64(z)),
    "softmax_cross_entropy": _ref_softmax_cross_entropy,
    "elastic_fields": _ref_elastic_fields,
    "warp": _ref_warp,
    "argmax": lambda a: np.argmax(_f64(a), axis=1),
    "count_equal": lambda a, b: int((np.asarray(a) == np.asarray(b)).sum()),
    "all_finite": lambda a: bool(np.isfinite(_f64(a)).all()),
}


def reference_op(op: str, *args: Any) -> Any:
    """Op ``op`` of the interface (or of the image ops) computed in float64 NumPy from
    host arguments."""
    return _REFERENCE[op](*args)


def reference_loss_and_gradients(
    params: dict[str, Any], x: Any, y: Any
) -> tuple[float, dict[str, np.ndarray], np.ndarray]:
    """``(loss, gradients, probabilities)`` of the two-layer network, float64 NumPy:
    x (m, d) floats, y (m,) int labels, params ``W1`` (d, h), ``b1``, ``W2`` (h, c), ``b2``."""
    W1, b1, W2, b2 = (_f64(params[k]) for k in ("W1", "b1", "W2", "b2"))
    x = _f64(x)
    l1 = x @ W1 + b1
    y1 = np.maximum(l1, 0)
    loss, dl2 = _ref_softmax_cross_entropy(y1 @ W2 + b2, y)
    dl1 = (dl2 @ W2.T) * (l1 > 0)
    grads = {"W1": x.T @ dl1, "b1": dl1.sum(0), "W2": y1.T @ dl2, "b2": dl2.sum(0)}
    return float(loss), grads, _ref_softmax(y1 @ W2 + b2)


def reference_training(
    params: dict[str, Any], X: Any, Y: Any, order: Any, batch_size: int, lrs: Any, momentum: float
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``(losses, params)`` after SGD with ``momentum`` over the rows ``X[order]`` (uint8
    pixels or floats), step ``s`` at ``lrs[s]``, float64 NumPy."""
    X = np.asarray(X)
    x_all = _f64(X) / (255 if X.dtype == np.uint8 else 1)
    p = {k: _f64(v) for k, v in params.items()}
    v = {k: np.zeros_like(a) for k, a in p.items()}
    losses, n = [], len(order)
    for s in range((n + batch_size - 1) // batch_size):
        rows = np.asarray(order)[s * batch_size : (s + 1) * batch_size]
        loss, grads, _ = reference_loss_and_gradients(p, x_all[rows], np.asarray(Y)[rows])
        losses.append(loss)
        for k in p:
            p[k], (v[k],) = reference_update(
                "sgd",
                {"momentum": momentum, "nesterov": False},
                p[k],
                grads[k],
                (v[k],),
                lrs[s],
                s + 1,
                False,
                0.0,
            )
    return np.array(losses), p


# --------------------------------------------------------------------------------------
# The op cases: host arguments.
# --------------------------------------------------------------------------------------
def _op_cases(dtype: str) -> list[tuple[str, tuple]]:
    """(op, host arguments) pairs of every op of the interface but ``jit`` and the ones
    that move data, on sparse and dense inputs."""
    rng = np.random.default_rng(5)
    f = lambda *shape: rng.standard_normal(shape).astype(dtype)  # noqa: E731
    sparse = f(4, 40) * (rng.random((4, 40)) < 0.2)
    pixels = rng.integers(0, 256, (9, 40)).astype(np.uint8)
    return [
        ("to_float", (rng.integers(0, 256, (4, 9)).astype(np.uint8),)),
        ("to_float", (rng.standard_normal((4, 9)),)),
        ("take", (pixels, np.array([6, 0, 6, 2]))),
        ("take", (rng.standard_normal((7, 9)).astype(dtype), np.array([3, 1, 4]))),
        ("take", (rng.integers(0, 10, 9), np.array([8, 1, 1, 0]))),
        ("matmul", (f(3, 40), f(40, 8))),
        ("matmul", (sparse, f(40, 8))),
        ("matmul", (f(100, 40), f(40, 8))),
        ("matmul_tn", (f(90, 40), f(90, 8))),
        ("matmul_tn", (f(1, 40), f(1, 8))),
        ("matmul_nt", (f(3, 8), f(40, 8))),
        ("affine", (sparse, f(40, 8), f(8))),
        ("affine", (f(5, 8), f(8, 3), f(3))),
        ("affine_relu", (f(100, 40), f(40, 8), f(8))),
        ("relu_backward", (f(6, 8), np.maximum(f(6, 8), 0))),  # a ReLU output: zeros
        ("sum_rows", (f(7, 8),)),
        ("softmax", (f(6, 10) * 3,)),
        ("softmax_cross_entropy", (f(6, 10) * 3, rng.integers(0, 10, 6))),
        (
            "softmax_cross_entropy",
            (
                np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, 1e4]], dtype),
                np.array([1, 0, 2]),
            ),
        ),
        ("argmax", (f(6, 10),)),
        ("count_equal", (rng.integers(0, 3, 20), rng.integers(0, 3, 20))),
        ("all_finite", (f(3, 4),)),
        ("all_finite", (np.array([[1.0, np.inf]], dtype),)),
    ]


def _image_cases(dtype: str) -> list[tuple[str, tuple]]:
    """(image op, host arguments) pairs."""
    rng = np.random.default_rng(6)
    side = 6
    image_pixels = rng.integers(0, 256, (3, side * side)).astype(np.uint8)
    shifts = np.array(
        [
            [[1, 0, 0.0], [0, 1, 0]],  # identity
            [[1, 0, 1.0], [0, 1, -2]],  # whole-pixel shift
            [[0.9, -0.3, 7.5], [0.2, 1.1, 0.25]],
        ],
        dtype,
    )  # partly outside
    noise = rng.integers(0, 256, (3, 2, 4, 4)).astype(np.uint8)
    basis = np.exp(-0.5 * (np.subtract.outer(np.arange(side), np.arange(4) * 1.5) / 1.5) ** 2)
    return [
        (
            "elastic_fields",
            (noise, np.linspace(-3, 3, 256).astype(dtype), (basis / 4).astype(dtype)),
        ),
        ("warp", (image_pixels, shifts, None)),
        (
            "warp",
            (
                rng.standard_normal((3, side * side)).astype(dtype),
                shifts,
                rng.standard_normal((3, 2, side, side)).astype(dtype) * 1.5,
            ),
        ),
    ]


def _to_backend(ops: Any, a: Any, read_only: bool = False) -> Any:
    """A host argument as the backend takes it: arrays moved (non-writeable, with
    ``read_only``, where the backend's arrays are NumPy's), floats through
    ``ops.scalar``."""
    if a is None:
        return None
    if isinstance(a, np.ndarray):
        dtype = np.int64 if a.dtype.kind in "iu" and a.dtype != np.uint8 else a.dtype
        out = ops.asarray(a.copy(), dtype=dtype)
        if read_only and isinstance(out, np.ndarray):
            out.flags.writeable = False
        return out
    return ops.scalar(a)


def _outputs(ops: Any, out: Any) -> list[np.ndarray]:
    """An op's result(s) as host arrays (several come as a plain tuple)."""
    items = out if type(out) is tuple else (out,)
    return [
        np.array(ops.to_numpy(t)) if not isinstance(t, (bool, int)) else np.array(t) for t in items
    ]


# --------------------------------------------------------------------------------------
# The checks.
# --------------------------------------------------------------------------------------
def _get(name: str, dtype: str) -> Any:
    from .backends import get_backend, probe_backend

    info = probe_backend(name)
    if not info.available:
        raise CheckSkipped(f"backend {name!r} unavailable: {info.reason}")
    return get_backend(name, dtype)


def _check_cases(name: str, dtype: str, target: Any, cases: list[tuple[str, tuple]]) -> None:
    """Each case's op of ``target`` (the ops or the image ops) against the reference."""
    ops = _get(name, dtype)
    for i, (op, args) in enumerate(cases):
        got = _outputs(ops, getattr(target, op)(*[_to_backend(ops, a) for a in args]))
        want = reference_op(op, *[np.asarray(a) if isinstance(a, np.ndarray) else a for a in args])
        want = list(want) if isinstance(want, tuple) else [want]
        if len(got) != len(want):
            raise AssertionError(
                f"backend {name!r}, op {op} (case {i}): {len(got)} results, "
                f"the contract has {len(want)}"
            )
        for k, (g, w) in enumerate(zip(got, want)):
            label = f"op {op} (case {i}) result {k}"
            w = np.asarray(w)
            if w.dtype.kind in "biu" or g.dtype.kind in "biu":
                if not np.array_equal(g, w) or (w.dtype == np.uint8) != (g.dtype == np.uint8):
                    raise AssertionError(f"backend {name!r}, {label}: got {g!r}, reference {w!r}")
                continue
            assert_close(name, label, g, w, dtype)
            if g.ndim and g.dtype != np.dtype(dtype):
                raise AssertionError(f"backend {name!r}, {label}: dtype {g.dtype}, not {dtype}")


def check_ops(name: str, dtype: str) -> None:
    """Each op against the float64 reference, within :func:`tolerance` of ``dtype``."""
    ops = _get(name, dtype)
    _check_cases(name, dtype, ops, _op_cases(dtype))


def check_images(name: str, dtype: str) -> None:
    """Each image op (elastic fields, warp) against the float64 reference."""
    from .backends.images import image_ops

    ops = _get(name, dtype)
    _check_cases(name, dtype, image_ops(ops), _image_cases(dtype))


def _net(
    name: str,
    dtype: str,
    n_inputs: int = 784,
    n_hidden: int = 64,
    n_classes: int = 10,
    seed: int = 3,
) -> Any:
    """A seeded net with nonzero biases, equal on every backend."""
    from .core.model import TwoLayerNet

    net = TwoLayerNet(
        n_inputs, n_hidden, n_classes, backend=_get(name, dtype), dtype=dtype, seed=seed
    )
    params = net.parameters()
    rng = np.random.default_rng(seed + 1)
    params["b1"] = rng.normal(0, 0.1, n_hidden)
    params["b2"] = rng.normal(0, 0.1, n_classes)
    net.set_parameters(params)
    return net


def _mnist_subset(n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    from .data.datasets import load_mnist

    train, _ = load_mnist()
    return train.X[:n], train.y[:n]


def check_gradients(name: str, dtype: str) -> None:
    """Loss, probabilities and the four gradients of batches of 1, 16 and 200 MNIST
    images (uint8 pixels and floats) against the float64 reference."""
    X_all, y_all = _mnist_subset(200)
    net = _net(name, dtype)
    for m in (1, 16, 200):
        for kind in ("pixels", "floats"):
            X = X_all[:m] if kind == "pixels" else X_all[:m] / np.float64(255)
            y = y_all[:m]
            loss, grads = net.loss_and_gradients(X, y)
            params = {k: v.astype(np.float64) for k, v in net.parameters().items()}
            ref_loss, ref_grads, ref_p = reference_loss_and_gradients(
                params, np.asarray(X, dtype=np.float64) / (255 if kind == "pixels" else 1), y
            )
            where = f"batch {m} of {kind}"
            assert_close(name, f"loss ({where})", loss, ref_loss, dtype)
            assert_close(name, f"probabilities ({where})", net.predict_proba(X), ref_p, dtype)
            for k in ref_grads:
                assert_close(name, f"d{k} ({where})", grads[k], ref_grads[k], dtype)


def check_finite_differences(name: str, dtype: str) -> None:
    """float64 gradients against central differences of the backend's own loss."""
    if dtype != "float64":
        raise CheckSkipped("finite differences need float64 (float32 round-off swamps them)")
    net = _net(name, "float64", n_inputs=20, n_hidden=6, n_classes=4, seed=11)
    rng = np.random.default_rng(12)
    X, y = rng.standard_normal((9, 20)), rng.integers(0, 4, 9)
    _, grads = net.loss_and_gradients(X, y)
    params = net.parameters()
    eps = 1e-6
    for k, value in params.items():
        numeric = np.zeros_like(value)
        for idx in np.ndindex(value.shape):
            for sign in (1, -1):
                shifted = {**params, k: value.copy()}
                shifted[k][idx] += sign * eps
                net.set_parameters(shifted)
                numeric[idx] += sign * net.loss_and_gradients(X, y)[0] / (2 * eps)
        net.set_parameters(params)
        assert_close(
            name, f"d{k} against central differences", grads[k], numeric, "float64", rtol=1e-6
        )


#: The optimizers (and hyperparameters) the ``optimizers`` check runs.
OPTIMIZER_CASES = (
    ("sgd", {}),
    ("sgd", {"nesterov": True, "weight_decay": 0.01}),
    ("adam", {}),
    ("adam", {"weight_decay": 0.01}),
    ("adamw", {}),
)


def check_optimizers(name: str, dtype: str) -> None:
    """Three updates of each optimizer of :data:`OPTIMIZER_CASES` through the generic
    path's compiled update (:func:`simplenn.optim.make_update` through ``ops.jit``)
    against :func:`reference_update`, from state values on both sides of the dtype's
    smallest normal number: entries below it become exactly 0, no others."""
    from .core.params import DECAYED, Params
    from .optim import get_optimizer, make_update

    ops = _get(name, dtype)
    tiny = float(np.finfo(dtype).smallest_normal)
    rng = np.random.default_rng(9)
    shapes = ((30, 6), (6,), (6, 4), (4,))
    for opt_name, hyper in OPTIMIZER_CASES:
        opt = get_optimizer(opt_name, **hyper)
        leaves = [ops.jit(opt.make_leaf(ops.xp, ops.scalar, ops.dtype, d)) for d in (True, False)]
        update = ops.jit(make_update(*leaves))
        params = [rng.standard_normal(s).astype(dtype) for s in shapes]
        slots = [
            tuple(
                (
                    tiny * rng.choice([1.5, 1.9, 2.5, 3.0, 1e20], s) * rng.choice([-1.0, 1.0], s)
                ).astype(dtype)
                if slot != "v"
                else (tiny * rng.choice([0.5, 1e20], s)).astype(dtype)
                for slot in opt.slot_names
            )
            for s in shapes
        ]
        ref_p = [p.astype(np.float64) for p in params]
        ref_s = [tuple(a.astype(np.float64) for a in t) for t in slots]
        p_ops = Params(*(ops.asarray(p) for p in params))
        s_ops = Params(*(tuple(ops.asarray(a) for a in t) for t in slots))
        for step, lr in enumerate((0.05, 0.02, 0.01), start=1):
            grads = [(rng.standard_normal(s) * (rng.random(s) < 0.5)).astype(dtype) for s in shapes]
            c = tuple(ops.scalar(v) for v in opt.step_scalars(lr, step))
            p_ops, s_ops = update(p_ops, Params(*(ops.asarray(g) for g in grads)), s_ops, c)
            for i in range(4):
                ref_p[i], ref_s[i] = reference_update(
                    opt.name,
                    opt.hyperparameters(),
                    ref_p[i],
                    grads[i],
                    ref_s[i],
                    lr,
                    step,
                    DECAYED[i],
                    tiny,
                )
            where = f"{opt.describe()}, update {step}"
            for i, k in enumerate(Params._fields):
                assert_close(name, f"{k} ({where})", ops.to_numpy(p_ops[i]), ref_p[i], dtype)
                for slot, got, want in zip(opt.slot_names, s_ops[i], ref_s[i]):
                    got = np.asarray(ops.to_numpy(got))
                    wrong = np.flatnonzero((want == 0).ravel() != (got == 0).ravel())
                    if wrong.size:
                        j = int(wrong[0])
                        raise AssertionError(
                            f"backend {name!r}, {k}.{slot} ({where}): entry {j} is "
                            f"{got.ravel()[j]!r}, the reference {want.ravel()[j]!r} (0 below "
                            f"the smallest normal number {tiny!r})"
                        )
                    assert_close(name, f"{k}.{slot} ({where})", got, want, dtype)


def _generic(ops: Any) -> Any:
    """A backend like ``ops`` (same class, dtype and settings) without fast paths."""
    plain = type(ops).__new__(type(ops))
    plain.__dict__.update(ops.__dict__)
    plain.fast_paths = ()
    return plain


def check_schedule(name: str, dtype: str) -> None:
    """A chunk of SGD steps with momentum, each step at its own learning rate, through
    :meth:`~simplenn.TwoLayerNet.train_steps` on every path the backend trains with (its
    fast paths and the generic path), against :func:`reference_training` in float64:
    each step applies its own learning rate."""
    if dtype != "float64":
        raise CheckSkipped("checked in float64, where one step's learning rate shows")
    from .core.model import TwoLayerNet
    from .optim import SGD

    ops = _get(name, dtype)
    X, y = _mnist_subset(60)
    optimizer = SGD(momentum=0.5)
    for backend in (ops, _generic(ops)):
        for batch_size in (1, 7, 48):
            net = TwoLayerNet(784, 16, 10, backend=backend, dtype=dtype, seed=2)
            start = net.parameters()
            order = np.random.default_rng(3).permutation(60)
            n_steps = -(-60 // batch_size)
            lrs = 0.05 * (1 + np.cos(np.linspace(0, 3, n_steps))) * (np.arange(n_steps) % 3 != 1)
            state, losses = net.train_steps(
                backend.asarray(X, dtype=np.uint8),
                backend.asarray(y, dtype=np.int64),
                backend.asarray(order, dtype=np.int64),
                optimizer.init(net.params, backend.xp.zeros_like),
                optimizer=optimizer,
                batch_size=batch_size,
                lrs=lrs,
            )
            ref_losses, ref_params = reference_training(start, X, y, order, batch_size, lrs, 0.5)
            path = net.training_path(optimizer, backend.asarray(X, dtype=np.uint8), batch_size)
            where = f"{path.name} path, batch {batch_size}"
            assert_close(
                name,
                f"per-step losses ({where})",
                ops.to_numpy(losses),
                ref_losses,
                dtype,
                rtol=trajectory_tolerance(dtype),
            )
            for k, value in net.parameters().items():
                assert_close(
                    name,
                    f"{k} after the chunk ({where})",
                    value,
                    ref_params[k],
                    dtype,
                    rtol=trajectory_tolerance(dtype),
                )


def _trained(
    ops: Any,
    dtype: str,
    batch_size: int,
    kind: str = "pixels",
    n: int = 2000,
    epochs: int = 2,
    optimizer: Any = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``epochs`` epochs of :func:`simplenn.fit` on ``n`` MNIST images (``kind``: uint8
    ``pixels``, ``floats`` x / 255, or ``dense`` floats, ``0.05 + 0.9 x / 255``, with no
    zero) with ``optimizer`` (default SGD): (per-step losses, final parameters)."""
    from .core.model import TwoLayerNet
    from .core.training import fit
    from .optim import SGD

    class Recording(TwoLayerNet):
        def train_steps(self, *args: Any, **kwargs: Any) -> Any:
            state, losses = super().train_steps(*args, **kwargs)
            step_losses.extend(np.asarray(self.ops.to_numpy(losses), np.float64).tolist())
            return state, losses

    step_losses: list[float] = []
    net = Recording(784, 32, 10, backend=ops, dtype=dtype, seed=7)
    X, y = _mnist_subset(n)
    if kind == "floats":
        X = X / np.float64(255)
    elif kind == "dense":
        X = 0.05 + 0.9 * (X / np.float64(255))
    # lr 0.005: at batch 1 a larger one makes the run so chaotic that last-bit
    # differences grow past the tolerance.
    fit(
        net,
        (X, y),
        epochs=epochs,
        batch_size=batch_size,
        lr=0.005,
        optimizer=optimizer or SGD(weight_decay=1e-4 if batch_size > 1 else 0.0),
        seed=8,
        interruptible=False,
    )
    return np.array(step_losses), net.parameters()


def _compare_runs(name: str, dtype: str, where: str, run: tuple, ref: tuple) -> None:
    steps, params = run
    ref_steps, ref_params = ref
    rtol = trajectory_tolerance(dtype)
    if steps.shape != ref_steps.shape:
        raise AssertionError(
            f"backend {name!r}, {where}: {steps.shape[0]} step losses, the "
            f"reference run has {ref_steps.shape[0]}"
        )
    assert_close(name, f"per-step losses ({where})", steps, ref_steps, dtype, rtol=rtol)
    for k in ref_params:
        assert_close(name, f"final {k} ({where})", params[k], ref_params[k], dtype, rtol=rtol)


def check_trajectory(name: str, dtype: str) -> None:
    """Per-step losses and final parameters of two epochs of training equal the numpy
    backend's within :func:`trajectory_tolerance`, at each of :data:`TRAJECTORY_BATCHES`."""
    if name == "numpy":
        raise CheckSkipped("numpy is the backend trajectories are compared with")
    for batch_size in TRAJECTORY_BATCHES[dtype]:
        _compare_runs(
            name,
            dtype,
            f"batch {batch_size}",
            _trained(_get(name, dtype), dtype, batch_size),
            _trained(_get("numpy", dtype), dtype, batch_size),
        )


#: Batch sizes of the ``fast_paths`` check, per dtype (see :data:`TRAJECTORY_BATCHES`).
FAST_PATH_BATCHES = {"float64": (1, 7, 128, 2048), "float32": (128, 2048)}


def check_fast_paths(name: str, dtype: str) -> None:
    """Each fast path's run equals the generic path's on the same backend within
    :func:`trajectory_tolerance`: per-step losses and final parameters of SGD on pixels,
    floats and dense floats (no zero: a sparse layout must step aside), and of each
    other optimizer a fast path covers (Nesterov's SGD, Adam, AdamW) on pixels, at each
    of :data:`FAST_PATH_BATCHES`."""
    from .core.network import training_path
    from .optim import SGD, Adam, AdamW

    ops = _get(name, dtype)
    if not ops.fast_paths:
        raise CheckSkipped(f"backend {name!r} has no fast path")
    runs = [(kind, None) for kind in ("pixels", "floats", "dense")]
    runs += [("pixels", opt) for opt in (SGD(nesterov=True), Adam(), AdamW())]
    for batch_size in FAST_PATH_BATCHES[dtype]:
        for kind, optimizer in runs:
            stored = "pixels" if kind == "pixels" else "floats"
            if training_path(ops, optimizer or SGD(), stored, batch_size).name == "generic":
                continue
            n, epochs = (4096, 1) if batch_size == 2048 else (600, 1)
            what = "sgd" if optimizer is None else optimizer.describe()
            _compare_runs(
                name,
                dtype,
                f"fast path against the generic path, {what}, batch {batch_size}, {kind}",
                _trained(ops, dtype, batch_size, kind, n, epochs, optimizer),
                _trained(_generic(ops), dtype, batch_size, kind, n, epochs, optimizer),
            )


def check_augmentation(name: str, dtype: str) -> None:
    """The affine and elastic distortions of MNIST digits drawn with a seed, across two
    training batches, against the float64 reference warp of the same draws; then an
    epoch of elastic training at batch 32 and at batch 64 against the numpy backend's,
    within :func:`trajectory_tolerance`. The same seed distorts the same images on every
    backend."""
    from .core.augment import Augmenter, draw_batches, elastic_basis, elastic_levels
    from .core.model import TwoLayerNet
    from .core.training import fit

    ops = _get(name, dtype)
    X, y = _mnist_subset(512)
    rows = np.array([5, 17, 101, 250, 3, 77])
    for kind in ("affine", "elastic"):
        augmenter = Augmenter(ops, kind, seed=11, n_inputs=784)
        got = ops.to_numpy(
            augmenter.distort(
                ops.asarray(X, dtype=np.uint8),
                ops.asarray(rows, dtype=np.int64),
                epoch=2,
                begin=8,
                batch_size=4,
            )
        )
        d = draw_batches(kind, 11, 2, 8, 8 + rows.shape[0], 4, 28)
        fields = (
            None
            if d.noise is None
            else _ref_elastic_fields(d.noise, elastic_levels(), elastic_basis(28))
        )
        assert_close(
            name,
            f"{kind} distortion of 6 digits",
            got,
            _ref_warp(X[rows], d.matrices, fields),
            dtype,
        )
    if name == "numpy":
        return

    def trained(backend: str, batch_size: int) -> dict[str, np.ndarray]:
        net = TwoLayerNet(784, 16, 10, backend=_get(backend, dtype), dtype=dtype, seed=7)
        fit(
            net,
            (X, y),
            epochs=1,
            batch_size=batch_size,
            lr=0.01,
            augment="elastic",
            seed=8,
            interruptible=False,
        )
        return net.parameters()

    for batch_size in (32, 64):  # a backend may train small and large batches apart
        params, ref_params = trained(name, batch_size), trained("numpy", batch_size)
        for k in ref_params:
            assert_close(
                name,
                f"final {k} (an epoch of elastic training, batch {batch_size})",
                params[k],
                ref_params[k],
                dtype,
                rtol=trajectory_tolerance(dtype),
            )


def check_no_host_arrays(name: str, dtype: str) -> None:
    """Train, evaluate and differentiate through the public API with every op of the
    backend watched: none may be handed a host NumPy array (where the backend's arrays
    are not NumPy arrays; ``asarray`` exists to take them)."""
    from .backends.base import OP_NAMES
    from .core.model import TwoLayerNet
    from .core.training import fit

    ops = _get(name, dtype)
    if isinstance(ops.asarray([0.0]), np.ndarray):
        raise CheckSkipped(f"backend {name!r} computes on host NumPy arrays")
    watched = type(f"Watched{type(ops).__name__}", (type(ops),), {})(dtype)  # own function cache
    watched.name = name

    def watch(op: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            for i, a in enumerate(args):
                if isinstance(a, np.ndarray):
                    raise AssertionError(
                        f"backend {name!r}: op {op} was handed a host NumPy "
                        f"array as argument {i} (shape {a.shape}, {a.dtype})"
                    )
            return fn(*args, **kwargs)

        return call

    for op in OP_NAMES:
        if op not in ("asarray", "to_numpy", "jit", "scalar"):
            setattr(watched, op, watch(op, getattr(watched, op)))
    X, y = _mnist_subset(300)
    net = TwoLayerNet(784, 16, 10, backend=watched, dtype=dtype, seed=1)
    fit(net, (X, y), (X[:50], y[:50]), epochs=1, batch_size=64, interruptible=False)
    fit(net, (X, y), epochs=1, batch_size=64, augment="elastic", interruptible=False)
    net.loss_and_gradients(X[:8] / np.float64(255), y[:8])
    net.predict_proba(X[:8])
    net.accuracy(X[:20], y[:20])


def check_inputs_unchanged(name: str, dtype: str) -> None:
    """Every op, and every image op, runs on read-only inputs (non-writeable NumPy arrays
    where the backend's arrays are NumPy's) and leaves each argument as it was."""
    from .backends.images import image_ops

    ops = _get(name, dtype)
    images = image_ops(ops)
    cases = [(ops, op, args) for op, args in _op_cases(dtype)] + [
        (images, op, args) for op, args in _image_cases(dtype)
    ]
    for i, (target, op, args) in enumerate(cases):
        given = [_to_backend(ops, a, read_only=True) for a in args]
        before = [
            np.array(ops.to_numpy(a))
            if not isinstance(a, (int, float, np.generic)) and a is not None
            else a
            for a in given
        ]
        try:
            getattr(target, op)(*given)
        except ValueError as exc:
            if "read-only" in str(exc):
                raise AssertionError(
                    f"backend {name!r}: op {op} (case {i}) writes to an "
                    f"argument it must only read ({exc})"
                ) from None
            raise
        for k, (a, b) in enumerate(zip(given, before)):
            if b is None or isinstance(b, (int, float, np.generic)):
                continue
            after = np.array(ops.to_numpy(a))
            if not np.array_equal(after, b, equal_nan=True):
                raise AssertionError(
                    f"backend {name!r}: op {op} (case {i}) changed its "
                    f"argument {k}, which the contract says it only reads"
                )


CHECKS: dict[str, Callable[[str, str], None]] = {
    "ops": check_ops,
    "images": check_images,
    "gradients": check_gradients,
    "finite_differences": check_finite_differences,
    "optimizers": check_optimizers,
    "schedule": check_schedule,
    "trajectory": check_trajectory,
    "fast_paths": check_fast_paths,
    "augmentation": check_augmentation,
    "no_host_arrays": check_no_host_arrays,
    "inputs_unchanged": check_inputs_unchanged,
}


def run_check(name: str, check: str, dtype: str) -> None:
    """Run one check of :data:`CHECKS` on backend ``name`` in ``dtype``. Raises
    :class:`AssertionError` naming the backend, op or tensor and the error, or
    :class:`CheckSkipped` with the reason it does not apply."""
    CHECKS[check](name, dtype)


def check_backend(
    name: str, dtypes: tuple[str, ...] = DTYPES, report: Callable[[CheckResult], None] | None = None
) -> list[str]:
    """Run every check on backend ``name``; raises :class:`AssertionError` at the first
    failure (an exception raised inside an op included, naming the op) and returns the
    skipped checks, each with its reason. ``report``, if given, is called with a
    :class:`CheckResult` as each check starts (``status="running"``) and as it ends."""
    skipped = []
    for result in run_checks(name, dtypes, report=report):
        if result.status == "failed":
            raise AssertionError(result.message) from result.error
        if result.status == "skipped":
            skipped.append(f"{result.check} ({result.dtype}): {result.message}")
    return skipped


# --------------------------------------------------------------------------------------
# Running the checks one by one, each reported as it starts and ends.
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CheckResult:
    """One check of :data:`CHECKS` on a backend in ``dtype``: ``status`` is
    ``"running"`` (it has started), ``"passed"``, ``"skipped"`` or ``"failed"``;
    ``message`` the reason of a skip or the failure; ``seconds`` the time it took;
    ``error`` the exception of a failure."""

    check: str
    dtype: str
    status: str
    seconds: float = 0.0
    message: str = ""
    error: BaseException | None = None


def run_checks(
    name: str,
    dtypes: tuple[str, ...] = DTYPES,
    checks: tuple[str, ...] | None = None,
    report: Callable[[CheckResult], None] | None = None,
) -> Iterator[CheckResult]:
    """Run ``checks`` (default: all of :data:`CHECKS`) on backend ``name`` in each of
    ``dtypes``, yielding the :class:`CheckResult` of each as it ends; a failure does
    not stop the others. An exception other than :class:`AssertionError` raised by a
    check (an op that raises, say) is a failure whose message names the op."""
    for dtype in dtypes:
        for check in CHECKS if checks is None else checks:
            if report is not None:
                report(CheckResult(check, dtype, "running"))
            start = time.perf_counter()
            try:
                run_check(name, check, dtype)
                status, message, error = "passed", "", None
            except CheckSkipped as exc:
                status, message, error = "skipped", str(exc), None
            except AssertionError as exc:
                status, message, error = "failed", str(exc), exc
            except Exception as exc:  # noqa: BLE001 -- any error of a plug-in is a failure
                status, message, error = "failed", _raised_in_op(name, check, dtype, exc), exc
            result = CheckResult(check, dtype, status, time.perf_counter() - start, message, error)
            if report is not None:
                report(result)
            yield result


def _raised_in_op(name: str, check: str, dtype: str, exc: Exception) -> str:
    """A one-line failure for ``exc``, raised while ``check`` ran: the innermost op of
    the backend on its way (a public method of its :class:`~simplenn.backends.Ops` or
    of its image ops), the exception and the line that raised it."""
    from .backends import Ops
    from .backends.images import ImageOps

    op = None
    frames = list(traceback.walk_tb(exc.__traceback__))
    for frame, _ in frames:
        owner = frame.f_locals.get("self")
        if isinstance(owner, (Ops, ImageOps)) and not frame.f_code.co_name.startswith("_"):
            op = frame.f_code.co_name
    where = f"op {op}" if op else f"check {check}"
    at = f" (at {Path(frames[-1][0].f_code.co_filename).name}:{frames[-1][1]})" if frames else ""
    message = f"backend {name!r}, {check} ({dtype}): {where} raised {type(exc).__name__}: {exc}{at}"
    if "__dlpack__" in str(exc):
        message += (
            "; a namespace whose arrays lack DLPack must override Ops.to_numpy "
            "(docs/writing-a-backend.md)"
        )
    return message


if __name__ == "__main__":  # python -m simplenn.testing BACKEND
    import sys

    from simplenn.cli.conformance import main

    sys.exit(main())
