"""The conformance kit: checks that any backend, built-in or plugged in, computes the
network's numbers.

``check_backend(name)`` runs every check on backend ``name`` and raises
:class:`AssertionError` at the first failure; a pytest suite parametrises over
:data:`CHECKS` and :data:`DTYPES` and calls :func:`run_check` (a check that cannot
apply raises :class:`CheckSkipped` with the reason). The checks:

- ``ops``: each op against an independent float64 reference written in plain NumPy
  (:func:`reference_op`, never through ``Ops``), on arrays and on training batches;
- ``gradients``: the loss, the class probabilities and the four gradients of a
  :class:`~simplenn.TwoLayerNet` against the reference;
- ``finite_differences``: the backend's float64 gradients against central differences
  of its own loss;
- ``trajectory``: per-step losses and final parameters of :func:`simplenn.fit` against
  the numpy backend's, at batch sizes 1, 7 (a ragged last batch), 32 and 128;
- ``no_host_arrays``: no host NumPy array reaches an op of a backend whose arrays are
  not NumPy's, through training, inference and gradients;
- ``inputs_unchanged``: no op changes an argument that the contract says it only reads.

Tolerances are a function of the dtype, here and nowhere else: :func:`tolerance` for
one evaluation, :func:`trajectory_tolerance` for whole training runs. Both are
normwise: an element may differ by ``rtol * max|expected|`` of its tensor.
"""

from __future__ import annotations

from collections.abc import Callable
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


def assert_close(backend: str, tensor_name: str, actual: Any, expected: Any, dtype: Any,
                 rtol: float | None = None) -> None:
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
        raise AssertionError(f"backend {backend!r}, {tensor_name}: shape {a.shape} differs "
                             f"from the reference's {e.shape}")
    if not np.isfinite(a).all() or not np.isfinite(e).all():
        bad = np.argwhere(~(np.isfinite(a) & np.isfinite(e)))[0]
        raise AssertionError(f"backend {backend!r}, {tensor_name}: non-finite value at index "
                             f"{tuple(int(i) for i in bad)} (got {a[tuple(bad)]!r}, "
                             f"reference {e[tuple(bad)]!r})")
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
        f"{float(rel.max()):.3e}; allowed {rtol:g} x max|reference| = {rtol * scale:.3e}")


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


def _ref_sgd_update(param: Any, grad: Any, velocity: Any, lr: float, momentum: float,
                    weight_decay: float) -> tuple[np.ndarray, np.ndarray]:
    v = momentum * _f64(velocity) + _f64(grad) + weight_decay * _f64(param)
    v[np.abs(v) < np.finfo(np.asarray(velocity).dtype).smallest_normal] = 0
    return _f64(param) - lr * v, v


def _ref_elastic_fields(noise: Any, levels: Any, basis: Any) -> np.ndarray:
    z = _f64(levels)[np.asarray(noise)]
    B = _f64(basis)
    return np.einsum("ia,mcab,jb->mcij", B, z, B)


def _ref_warp(x: Any, matrices: Any, fields: Any) -> np.ndarray:
    """Bilinear resampling written pixel by pixel."""
    x = np.asarray(x)
    img = _f64(x) / 255 if x.dtype == np.uint8 else _f64(x)
    m, d = img.shape
    s = int(round(d ** 0.5))
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
    "pixels_to_float": lambda x: _f64(x) / 255,
    "cast_to_float": _f64,
    "take_pixels": lambda X, rows: _f64(np.asarray(X)[np.asarray(rows)]) / 255,
    "take_floats": lambda X, rows: _f64(np.asarray(X)[np.asarray(rows)]),
    "take_labels": lambda Y, rows: np.asarray(Y)[np.asarray(rows)],
    "matmul": lambda a, b: _f64(a) @ _f64(b),
    "matmul_tn": lambda a, b: _f64(a).T @ _f64(b),
    "matmul_nt": lambda a, b: _f64(a) @ _f64(b).T,
    "affine": lambda x, W, b: _f64(x) @ _f64(W) + _f64(b),
    "affine_relu": lambda x, W, b: np.maximum(_f64(x) @ _f64(W) + _f64(b), 0),
    "relu_backward": lambda dy, y: _f64(dy) * (_f64(y) > 0),
    "sum_rows": lambda a: _f64(a).sum(axis=0),
    "softmax": lambda z: _ref_softmax(_f64(z)),
    "softmax_cross_entropy": _ref_softmax_cross_entropy,
    "sgd_update": _ref_sgd_update,
    "sgd_update_outer": lambda param, x, d, velocity, lr, momentum, wd: _ref_sgd_update(
        param, _f64(x).T @ _f64(d), velocity, lr, momentum, wd),
    "elastic_fields": _ref_elastic_fields,
    "warp": _ref_warp,
    "argmax": lambda a: np.argmax(_f64(a), axis=1),
    "count_equal": lambda a, b: int((np.asarray(a) == np.asarray(b)).sum()),
    "all_finite": lambda a: bool(np.isfinite(_f64(a)).all()),
}


def reference_op(op: str, *args: Any) -> Any:
    """Op ``op`` of the interface computed in float64 NumPy from host arguments."""
    return _REFERENCE[op](*args)


def reference_loss_and_gradients(params: dict[str, Any], x: Any, y: Any
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


# --------------------------------------------------------------------------------------
# The op cases: host arguments, some of them training batches.
# --------------------------------------------------------------------------------------
class _Batch(np.ndarray):
    """Marks an op argument that is a training batch: the backend gets it as its
    ``take_floats`` returns it (e.g. Numba: a sparse or dense Batch)."""


#: Op -> the positions of the arguments it may change (and returns anew); every other
#: argument of every op is read-only.
UPDATED_ARGUMENTS = {"sgd_update": (0, 2), "sgd_update_outer": (0, 3)}


def _op_cases(dtype: str) -> list[tuple[str, tuple]]:
    """(op, host arguments) pairs covering sparse and dense inputs, arrays and batches."""
    rng = np.random.default_rng(5)
    f = lambda *shape: rng.standard_normal(shape).astype(dtype)  # noqa: E731
    batch = lambda a: np.ascontiguousarray(a).view(_Batch)  # noqa: E731
    sparse = f(4, 40) * (rng.random((4, 40)) < 0.2)
    sparse_rows = f(12, 40) * (rng.random((12, 40)) < 0.2)
    sparse_rows[:, :7] = 0  # columns no row touches
    pixels = rng.integers(0, 256, (9, 40)).astype(np.uint8)
    sparse_pixels = pixels * (rng.random((9, 40)) < 0.2)
    lr, momentum = 0.05, 0.9
    side = 6
    image_pixels = rng.integers(0, 256, (3, side * side)).astype(np.uint8)
    shifts = np.array([[[1, 0, 0.0], [0, 1, 0]],  # identity
                       [[1, 0, 1.0], [0, 1, -2]],  # whole-pixel shift
                       [[0.9, -0.3, 7.5], [0.2, 1.1, 0.25]]], dtype)  # partly outside
    noise = rng.integers(0, 256, (3, 2, 4, 4)).astype(np.uint8)
    basis = np.exp(-0.5 * (np.subtract.outer(np.arange(side), np.arange(4) * 1.5) / 1.5) ** 2)
    return [
        ("elastic_fields", (noise, np.linspace(-3, 3, 256).astype(dtype),
                            (basis / 4).astype(dtype))),
        ("warp", (image_pixels, shifts, None)),
        ("warp", (f(3, side * side), shifts, f(3, 2, side, side) * 1.5)),
        ("pixels_to_float", (rng.integers(0, 256, (4, 9)).astype(np.uint8),)),
        ("cast_to_float", (rng.standard_normal((4, 9)),)),
        ("take_pixels", (pixels, np.array([6, 0, 6, 2]))),
        ("take_pixels", (sparse_pixels, np.array([8, 1, 3, 1, 0, 5, 2, 7, 4, 6]))),
        ("take_floats", (rng.standard_normal((7, 9)), np.array([3, 1, 4]))),
        ("take_floats", (sparse_rows.astype(np.float64), np.array([11, 3, 7, 0, 3]))),
        ("take_labels", (rng.integers(0, 10, 9), np.array([8, 1, 1, 0]))),
        ("matmul", (f(3, 40), f(40, 8))),
        ("matmul", (batch(sparse), f(40, 8))),
        ("matmul", (batch(f(3, 40)), f(40, 8))),
        ("matmul", (batch(f(100, 40)), f(40, 8))),
        ("matmul_tn", (f(90, 40), f(90, 8))),
        ("matmul_tn", (batch(sparse_rows), f(12, 8))),
        ("matmul_tn", (batch(f(90, 40)), f(90, 8))),
        ("matmul_nt", (f(3, 8), f(40, 8))),
        ("affine", (batch(sparse), f(40, 8), f(8))),
        ("affine", (f(5, 8), f(8, 3), f(3))),
        ("affine_relu", (f(100, 40), f(40, 8), f(8))),
        ("affine_relu", (batch(sparse_rows), f(40, 8), f(8))),
        ("relu_backward", (f(6, 8), np.maximum(f(6, 8), 0))),  # a ReLU output: zeros
        ("sum_rows", (f(7, 8),)),
        ("softmax", (f(6, 10) * 3,)),
        ("softmax_cross_entropy", (f(6, 10) * 3, rng.integers(0, 10, 6))),
        ("softmax_cross_entropy", (
            np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, 1e4]], dtype),
            np.array([1, 0, 2]))),
        ("sgd_update", (f(30, 7), f(30, 7), f(30, 7), lr, momentum, 0.0)),
        ("sgd_update", (f(30, 7), f(30, 7), f(30, 7), lr, momentum, 0.01)),
        ("sgd_update", (f(7), f(7), f(7), lr, momentum, 0.0)),
        ("sgd_update_outer", (f(40, 8), batch(sparse_rows), f(12, 8), f(40, 8), lr, momentum,
                              0.01)),
        ("sgd_update_outer", (f(40, 8), batch(sparse), f(4, 8), f(40, 8), lr, momentum, 0.0)),
        ("sgd_update_outer", (f(40, 8), batch(f(90, 40)), f(90, 8), f(40, 8), lr, momentum,
                              0.0)),
        ("sgd_update_outer", (f(40, 8), f(5, 40), f(5, 8), f(40, 8), lr, momentum, 0.01)),
        ("argmax", (f(6, 10),)),
        ("count_equal", (rng.integers(0, 3, 20), rng.integers(0, 3, 20))),
        ("all_finite", (f(3, 4),)),
        ("all_finite", (np.array([[1.0, np.inf]], dtype),)),
    ]


def _to_backend(ops: Any, a: Any) -> Any:
    """A host argument as the backend takes it: arrays moved, batches taken, floats
    (hyperparameters) through ``ops.scalar``."""
    if isinstance(a, _Batch):
        x = np.asarray(a)
        return ops.take_floats(ops.asarray(x), ops.asarray(np.arange(x.shape[0]), dtype=np.int64))
    if a is None:
        return None
    if isinstance(a, np.ndarray):
        dtype = np.int64 if a.dtype.kind in "iu" and a.dtype != np.uint8 else a.dtype
        return ops.asarray(a.copy(), dtype=dtype)
    return ops.scalar(a)


def _outputs(ops: Any, out: Any) -> list[np.ndarray]:
    """An op's result(s) as host arrays (several come as a plain tuple)."""
    items = out if type(out) is tuple else (out,)
    return [np.array(ops.to_numpy(t)) if not isinstance(t, (bool, int)) else np.array(t)
            for t in items]


# --------------------------------------------------------------------------------------
# The checks.
# --------------------------------------------------------------------------------------
def _get(name: str, dtype: str) -> Any:
    from .backends import get_backend, probe_backend

    info = probe_backend(name)
    if not info.available:
        raise CheckSkipped(f"backend {name!r} unavailable: {info.reason}")
    return get_backend(name, dtype)


def check_ops(name: str, dtype: str) -> None:
    """Each op against the float64 reference, within :func:`tolerance` of ``dtype``."""
    ops = _get(name, dtype)
    for i, (op, args) in enumerate(_op_cases(dtype)):
        got = _outputs(ops, getattr(ops, op)(*[_to_backend(ops, a) for a in args]))
        want = reference_op(op, *[np.asarray(a) if isinstance(a, np.ndarray) else a
                                  for a in args])
        want = list(want) if isinstance(want, tuple) else [want]
        if len(got) != len(want):
            raise AssertionError(f"backend {name!r}, op {op} (case {i}): {len(got)} results, "
                                 f"the contract has {len(want)}")
        for k, (g, w) in enumerate(zip(got, want)):
            label = f"op {op} (case {i}) result {k}"
            w = np.asarray(w)
            if w.dtype.kind in "bi" or g.dtype.kind in "bi":
                if not np.array_equal(g, w):
                    raise AssertionError(f"backend {name!r}, {label}: got {g!r}, reference {w!r}")
                continue
            assert_close(name, label, g, w, dtype)
            if g.ndim and g.dtype != np.dtype(dtype):
                raise AssertionError(f"backend {name!r}, {label}: dtype {g.dtype}, not {dtype}")


def _net(name: str, dtype: str, n_inputs: int = 784, n_hidden: int = 64, n_classes: int = 10,
         seed: int = 3) -> Any:
    """A seeded net with nonzero biases, equal on every backend."""
    from .core.model import TwoLayerNet

    net = TwoLayerNet(n_inputs, n_hidden, n_classes, backend=_get(name, dtype), dtype=dtype,
                      seed=seed)
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
                params, np.asarray(X, dtype=np.float64) / (255 if kind == "pixels" else 1), y)
            where = f"batch {m} of {kind}"
            assert_close(name, f"loss ({where})", loss, ref_loss, dtype)
            assert_close(name, f"probabilities ({where})", net.predict_proba(X), ref_p, dtype)
            for k in ("W1", "b1", "W2", "b2"):
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
        assert_close(name, f"d{k} against central differences", grads[k], numeric, "float64",
                     rtol=1e-6)


def _trained(name: str, dtype: str, batch_size: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Two epochs of :func:`simplenn.fit` on 2000 MNIST images: (per-step losses,
    final parameters)."""
    from .core.model import TwoLayerNet
    from .core.training import fit

    class Recording(TwoLayerNet):
        @property
        def functions(self):
            functions = super().functions
            train_steps = functions.train_steps_pixels

            def recording(*args):
                out = train_steps(*args)
                step_losses.extend(np.asarray(self.ops.to_numpy(out[-1]), np.float64).tolist())
                return out

            return functions._replace(train_steps_pixels=recording)

    step_losses: list[float] = []
    net = Recording(784, 32, 10, backend=_get(name, dtype), dtype=dtype, seed=7)
    X, y = _mnist_subset()
    # lr 0.005: at batch 1 a larger one makes the run so chaotic that last-bit
    # differences grow past the tolerance.
    fit(net, (X, y), epochs=2, batch_size=batch_size, lr=0.005, weight_decay=1e-4, seed=8,
        eval_train=False, interruptible=False)
    return np.array(step_losses), net.parameters()


def check_trajectory(name: str, dtype: str) -> None:
    """Per-step losses and final parameters of two epochs of training equal the numpy
    backend's within :func:`trajectory_tolerance`, at each of :data:`TRAJECTORY_BATCHES`."""
    if name == "numpy":
        raise CheckSkipped("numpy is the backend trajectories are compared with")
    rtol = trajectory_tolerance(dtype)
    for batch_size in TRAJECTORY_BATCHES[dtype]:
        steps, params = _trained(name, dtype, batch_size)
        ref_steps, ref_params = _trained("numpy", dtype, batch_size)
        where = f"batch {batch_size}"
        if steps.shape != ref_steps.shape:
            raise AssertionError(f"backend {name!r}, {where}: {steps.shape[0]} step losses, "
                                 f"numpy has {ref_steps.shape[0]}")
        assert_close(name, f"per-step losses ({where})", steps, ref_steps, dtype, rtol=rtol)
        for k in ("W1", "b1", "W2", "b2"):
            assert_close(name, f"final {k} ({where})", params[k], ref_params[k], dtype, rtol=rtol)


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
        got = ops.to_numpy(augmenter.distort(ops.asarray(X, dtype=np.uint8),
                                             ops.asarray(rows, dtype=np.int64), epoch=2,
                                             begin=8, batch_size=4))
        d = draw_batches(kind, 11, 2, 8, 8 + rows.shape[0], 4, 28)
        fields = None if d.noise is None else _ref_elastic_fields(
            d.noise, elastic_levels(), elastic_basis(28))
        assert_close(name, f"{kind} distortion of 6 digits", got,
                     _ref_warp(X[rows], d.matrices, fields), dtype)
    if name == "numpy":
        return

    def trained(backend: str, batch_size: int) -> dict[str, np.ndarray]:
        net = TwoLayerNet(784, 16, 10, backend=_get(backend, dtype), dtype=dtype, seed=7)
        fit(net, (X, y), epochs=1, batch_size=batch_size, lr=0.01, augment="elastic", seed=8,
            interruptible=False)
        return net.parameters()

    for batch_size in (32, 64):  # a backend may train small and large batches apart
        params, ref_params = trained(name, batch_size), trained("numpy", batch_size)
        for k in ref_params:
            assert_close(name, f"final {k} (an epoch of elastic training, batch {batch_size})",
                         params[k], ref_params[k], dtype, rtol=trajectory_tolerance(dtype))


#: The ops a backend's functions may call, checked by ``no_host_arrays``.
OP_NAMES = tuple(sorted({op for op, _ in _op_cases("float64")} | {
    "asarray", "begin_steps", "loss_buffer", "set_loss", "to_numpy", "host_dtype"}))


def check_no_host_arrays(name: str, dtype: str) -> None:
    """Train, evaluate and differentiate through the public API with every op of the
    backend watched: none may be handed a host NumPy array (where the backend's arrays
    are not NumPy arrays; ``asarray`` exists to take them)."""
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
                    raise AssertionError(f"backend {name!r}: op {op} was handed a host NumPy "
                                         f"array as argument {i} (shape {a.shape}, {a.dtype})")
            return fn(*args, **kwargs)
        return call

    for op in OP_NAMES:
        if op not in ("asarray", "to_numpy"):
            setattr(watched, op, watch(op, getattr(watched, op)))
    X, y = _mnist_subset(300)
    net = TwoLayerNet(784, 16, 10, backend=watched, dtype=dtype, seed=1)
    fit(net, (X, y), (X[:50], y[:50]), epochs=1, batch_size=64, interruptible=False)
    fit(net, (X, y), epochs=1, batch_size=64, augment="elastic", interruptible=False)
    net.loss_and_gradients(X[:8] / np.float64(255), y[:8])
    net.predict_proba(X[:8])
    net.accuracy(X[:20], y[:20])


def check_subnormal_velocities(name: str, dtype: str) -> None:
    """The updates zero a velocity entry that falls below the dtype's smallest normal
    number (:meth:`~simplenn.backends.Ops.sgd_update`) and no other: steps of
    ``sgd_update`` and ``sgd_update_outer`` (an array, a dense and a sparse batch, with
    all-zero input columns) with zero gradients from velocities on both sides of it."""
    ops = _get(name, dtype)
    tiny = np.finfo(dtype).smallest_normal
    rng = np.random.default_rng(9)
    # momentum 0.5 takes |v| = 1.5, 1.9 tiny below it and 2.5, 3, 1e20 tiny above it
    v = (tiny * rng.choice([1.5, 1.9, 2.5, 3.0, 1e20], (40, 6))
         * rng.choice([-1.0, 1.0], (40, 6))).astype(dtype)
    param = rng.standard_normal((40, 6)).astype(dtype)
    x = rng.standard_normal((100, 40)).astype(dtype)
    x[:, ::3] = 0  # columns no row touches: their rows of the gradient are zero
    sparse = x[:4] * (rng.random((4, 40)) < 0.2)
    d = rng.standard_normal((100, 6)).astype(dtype) * 1e-3
    cases = [("sgd_update", (param, np.zeros_like(param), v, 0.05, 0.5, 0.0), 2),
             ("sgd_update_outer", (param, x, d, v, 0.05, 0.5, 0.0), 3),
             ("sgd_update_outer", (param, x.view(_Batch), d, v, 0.05, 0.5, 0.0), 3),
             ("sgd_update_outer", (param, sparse.view(_Batch), d[:4], v, 0.05, 0.5, 0.0), 3)]
    for i, (op, args, at) in enumerate(cases):
        got = _outputs(ops, getattr(ops, op)(*[_to_backend(ops, a) for a in args]))[1]
        want = reference_op(op, *args)[1]
        flushed = np.abs(want) < tiny
        wrong = np.flatnonzero(flushed.ravel() != (got.ravel() == 0))
        if wrong.size:
            k = int(wrong[0])
            raise AssertionError(
                f"backend {name!r}, op {op} (case {i}): velocity entry {k} is "
                f"{got.ravel()[k]!r} from {args[at].ravel()[k]!r}; the reference gives "
                f"{want.ravel()[k]!r} (0 below the smallest normal number {tiny!r})")
        assert_close(name, f"op {op} (case {i}) velocity", got, want, dtype)


def check_inputs_unchanged(name: str, dtype: str) -> None:
    """No op changes an argument it only reads (:data:`UPDATED_ARGUMENTS` may change)."""
    ops = _get(name, dtype)
    for i, (op, args) in enumerate(_op_cases(dtype)):
        given = [_to_backend(ops, a) for a in args]
        before = [np.array(ops.to_numpy(a)) if not isinstance(a, (int, float, np.generic))
                  and a is not None else a for a in given]
        getattr(ops, op)(*given)
        for k, (a, b) in enumerate(zip(given, before)):
            if k in UPDATED_ARGUMENTS.get(op, ()) or b is None or isinstance(
                    b, (int, float, np.generic)):
                continue
            after = np.array(ops.to_numpy(a))
            if not np.array_equal(after, b, equal_nan=True):
                raise AssertionError(f"backend {name!r}: op {op} (case {i}) changed its "
                                     f"argument {k}, which the contract says it only reads")


CHECKS: dict[str, Callable[[str, str], None]] = {
    "ops": check_ops,
    "gradients": check_gradients,
    "finite_differences": check_finite_differences,
    "trajectory": check_trajectory,
    "augmentation": check_augmentation,
    "subnormal_velocities": check_subnormal_velocities,
    "no_host_arrays": check_no_host_arrays,
    "inputs_unchanged": check_inputs_unchanged,
}


def run_check(name: str, check: str, dtype: str) -> None:
    """Run one check of :data:`CHECKS` on backend ``name`` in ``dtype``. Raises
    :class:`AssertionError` naming the backend, op or tensor and the error, or
    :class:`CheckSkipped` with the reason it does not apply."""
    CHECKS[check](name, dtype)


def check_backend(name: str, dtypes: tuple[str, ...] = DTYPES) -> list[str]:
    """Run every check on backend ``name``; raises at the first failure and returns
    the skipped checks, each with its reason."""
    skipped = []
    for dtype in dtypes:
        for check in CHECKS:
            try:
                run_check(name, check, dtype)
            except CheckSkipped as exc:
                skipped.append(f"{check} ({dtype}): {exc}")
    return skipped

