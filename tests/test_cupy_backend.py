"""The CuPy backend: what holds without a GPU (the unavailable path, the cuBLAS argument
mapping, nothing built at import) and, marked ``gpu``, what only its fused kernels
promise (a loss that stays on the device, updates equal to NumPy's to the bit) and its
CUDA-graph path, on a real device.

GPU tests skip with the registry's reason where no CUDA device works (CI has none).
Agreement with the reference and with NumPy: the conformance kit, tests/test_conformance.py.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from simplenn.backends import probe_backend
from simplenn.testing import assert_close, trajectory_tolerance

REPO = Path(__file__).resolve().parents[1]
CLI_ERROR_PREFIX = "python -m simplenn.train: error: backend 'cupy' unavailable: "


def _cupy_importable() -> bool:
    try:
        import cupy  # noqa: F401
    except Exception:  # noqa: BLE001  (a broken CUDA install raises anything)
        return False
    return True


def _run(args: list[str], extra_path: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("SIMPLENN_BACKEND", None)
    env["PYTHONPATH"] = os.pathsep.join(
        str(p) for p in (extra_path, REPO, env.get("PYTHONPATH")) if p
    )
    return subprocess.run(
        [sys.executable, *args],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )


@pytest.fixture
def without_cupy(tmp_path: Path) -> Path:
    """A directory whose sitecustomize makes ``import cupy`` fail in a subprocess."""
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['cupy'] = None\n")
    return tmp_path


# --------------------------------------------------------------------------------------
# Without a GPU
# --------------------------------------------------------------------------------------
def test_missing_cupy_python_api(without_cupy: Path) -> None:
    script = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stdout, "
        "format='%(levelname)s %(message)s')\n"
        "import simplenn\n"
        "from simplenn.backends import get_backend, resolve_backend_name\n"
        "print('CHOSEN', resolve_backend_name('auto'))\n"
        "try:\n"
        "    get_backend('cupy')\n"
        "except simplenn.BackendUnavailableError as exc:\n"
        "    print('RAISED', exc)\n"
    )
    result = _run(["-c", script], without_cupy)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    chosen = [line for line in lines if line.startswith("CHOSEN ")]
    assert chosen in (["CHOSEN numba"], ["CHOSEN numpy"])
    # auto skips cupy quietly: an INFO line with the reason, no warning
    assert any(
        line.startswith("INFO backend auto: chose")
        and "cupy skipped: CuPy is not installed" in line
        for line in lines
    ), result.stdout
    assert not any(line.startswith(("WARNING", "ERROR")) for line in lines), result.stdout
    error = [line for line in lines if line.startswith("RAISED ")]
    assert len(error) == 1
    assert "CuPy is not installed" in error[0] and "pip install cupy-cuda12x" in error[0]
    assert "--backend auto" in error[0]


def test_missing_cupy_list_backends(without_cupy: Path) -> None:
    result = _run(["-m", "simplenn.train", "--list-backends"], without_cupy)
    assert result.returncode == 0, result.stderr
    cupy_lines = [line for line in result.stdout.splitlines() if line.startswith("cupy")]
    assert len(cupy_lines) == 1
    assert cupy_lines[0].startswith("cupy   unavailable: CuPy is not installed")
    assert "pip install cupy-cuda12x" in cupy_lines[0]
    assert result.stdout.splitlines()[0].startswith("numpy  available")


def test_missing_cupy_cli_exits_1_with_one_line(without_cupy: Path) -> None:
    result = _run(["-m", "simplenn.train", "--backend", "cupy", "--epochs", "1"], without_cupy)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(CLI_ERROR_PREFIX + "CuPy is not installed")
    assert "--backend auto" in lines[0]


def test_import_simplenn_never_imports_cupy() -> None:
    result = _run(
        [
            "-c",
            (
                "import sys, simplenn, simplenn.train, simplenn.core.training; "
                "print(sorted(m for m in sys.modules if m.split('.')[0] == 'cupy'))"
            ),
        ]
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_installed_without_device_is_reported_with_the_cause() -> None:
    if not _cupy_importable():
        pytest.skip("CuPy is not installed here (pip install cupy-cuda12x to run this test)")
    info = probe_backend("cupy")
    if info.available:
        pytest.skip(f"a CUDA device works here ({info.device})")
    # the driver probe's answer, or, past it, CUDA's error as CuPy reports it
    assert info.reason.startswith("CuPy is installed but ") or info.reason.startswith(
        f"CuPy {info.version} is installed but CUDA reports cudaError"
    ), info.reason
    result = _run(["-m", "simplenn.train", "--backend", "cupy"])
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        CLI_ERROR_PREFIX + info.reason + "; use --backend auto instead (backend='auto' in "
        "Python picks the best backend that runs here; --list-backends shows them all)"
    ]


def test_backend_module_builds_nothing_at_import() -> None:
    """Importing the backend and binding the network and its training paths to it touches
    no device and builds no kernel (on a machine without a GPU any device call would
    raise here): SGD takes the fast path, whose chunks run through the CUDA-graph
    wrapper; Adam the generic path."""
    if not _cupy_importable():
        pytest.skip("CuPy is not installed here")
    script = (
        "from simplenn.backends import cupy as cb\n"
        "from simplenn.backends.cupy import cublas\n"
        "from simplenn.core.network import network_functions, training_path\n"
        "from simplenn.optim import SGD, Adam\n"
        "assert cb.built_kernel_count() == 0\n"
        "for dtype in ('float32', 'float64'):\n"
        "    ops = cb.CupyOps(dtype)\n"
        "    network_functions(ops)\n"
        "    for kind in ('pixels', 'floats'):\n"
        "        path = training_path(ops, SGD(), kind, 128)\n"
        "        assert path.name == 'cupy-sgd', path.name\n"
        "        assert isinstance(path.train_steps.chunk, cb.CudaGraphTrainSteps)\n"
        "        assert training_path(ops, Adam(), kind, 128).name == 'generic'\n"
        "print('KERNELS', cb.built_kernel_count(), cublas._direct_gemm.cache_info().currsize)\n"
    )
    result = _run(["-c", script])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "KERNELS 0 0"


def _stubbed_cublas_module(monkeypatch) -> types.ModuleType:
    """A private copy of the backend's cuBLAS module, executed against a stand-in ``cupy``
    (so the pure-Python parts are testable where CuPy is not installed)."""
    monkeypatch.setitem(sys.modules, "cupy", types.ModuleType("cupy"))
    path = REPO / "simplenn" / "backends" / "cupy" / "cublas.py"
    spec = importlib.util.spec_from_file_location("simplenn.backends.cupy._cublas_stubbed", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _column_major_gemm(transa, transb, M, N, K, A, lda, B, ldb, ldc, out_size):
    """BLAS ``C = op(A) op(B)`` on flat column-major buffers, as cuBLAS reads and writes
    them; every leading dimension and extent is checked against the buffer it indexes."""

    def matrix(flat, trans, rows, cols, ld):
        stored_rows, stored_cols = (cols, rows) if trans else (rows, cols)
        assert ld >= max(1, stored_rows) and ld * (stored_cols - 1) + stored_rows <= flat.size
        stored = np.lib.stride_tricks.as_strided(
            flat, shape=(stored_rows, stored_cols), strides=(flat.itemsize, ld * flat.itemsize)
        )
        return stored.T if trans else stored

    C = matrix(A, transa, M, K, lda) @ matrix(B, transb, K, N, ldb)
    out = np.full(out_size, np.nan)
    assert ldc >= M and ldc * (N - 1) + M <= out_size
    for j in range(N):
        out[j * ldc : j * ldc + M] = C[:, j]
    return out


@pytest.mark.parametrize("m, n, k", [(5, 3, 4), (1, 7, 2), (6, 1, 9), (128, 10, 784)])
def test_gemm_arguments_compute_row_major_products(monkeypatch, m, n, k) -> None:
    """The cuBLAS arguments of the three products, replayed by a column-major GEMM on the
    very memory layout of the row-major arrays, give NumPy's products."""
    gemm_arguments = _stubbed_cublas_module(monkeypatch).gemm_arguments
    rng = np.random.default_rng(0)
    cases = {  # (trans_a, trans_b): (a stored, b stored, expected)
        (False, False): (rng.standard_normal((m, k)), rng.standard_normal((k, n))),
        (True, False): (rng.standard_normal((k, m)), rng.standard_normal((k, n))),
        (False, True): (rng.standard_normal((m, k)), rng.standard_normal((n, k))),
    }
    for (trans_a, trans_b), (a, b) in cases.items():
        expected = (a.T if trans_a else a) @ (b.T if trans_b else b)
        opa, opb, M, N, K, lda, ldb, ldc = gemm_arguments(trans_a, trans_b, m, n, k)
        flat = _column_major_gemm(
            opa == 1, opb == 1, M, N, K, b.ravel(), lda, a.ravel(), ldb, ldc, m * n
        )
        np.testing.assert_allclose(flat.reshape(m, n), expected, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------
# On a GPU
# --------------------------------------------------------------------------------------
@pytest.fixture
def gpu(require_backend):
    """(cupy, the backend's package simplenn.backends.cupy), skipping with the probe's
    reason without a device."""
    require_backend("cupy")
    import cupy

    from simplenn.backends import cupy as backend_package

    return cupy, backend_package


def _pair(dtype: str):
    from simplenn.backends import get_backend

    return get_backend("cupy", dtype=dtype), get_backend("numpy", dtype=dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fused_kernels_match_numpy(gpu, dtype) -> None:
    from simplenn.backends.cupy.ops import sgd_momentum_kernel
    from simplenn.optim import SGD

    cupy, _ = gpu
    ops, ref = _pair(dtype)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((37, 50)).astype(dtype)
    W = rng.standard_normal((50, 23)).astype(dtype)
    b = rng.standard_normal(23).astype(dtype)
    assert_close(
        "cupy",
        "affine_relu",
        ops.to_numpy(ops.affine_relu(ops.asarray(x), ops.asarray(W), ops.asarray(b))),
        ref.affine_relu(x, W, b),
        dtype,
    )

    dy, y = rng.standard_normal((37, 23)).astype(dtype), rng.standard_normal((37, 23)).astype(dtype)
    y[0, :5] = 0
    np.testing.assert_array_equal(
        ops.to_numpy(ops.relu_backward(ops.asarray(dy), ops.asarray(y))), ref.relu_backward(dy, y)
    )

    pixels = rng.integers(0, 256, (37, 784), dtype=np.uint8)
    np.testing.assert_array_equal(
        ops.to_numpy(ops.to_float(ops.asarray(pixels, dtype=np.uint8))), ref.to_float(pixels)
    )

    logits = (rng.standard_normal((300, 10)) * 3).astype(dtype)
    logits[0] = np.where(np.arange(10) % 2, 1e4, -1e4)
    logits[1] = -1e4
    logits[1, 7] = 1e4 - 1
    logits[2] = 1e4
    labels = rng.integers(0, 10, 300)
    labels[:3] = [0, 7, 3]
    loss, dlogits = ops.softmax_cross_entropy(ops.asarray(logits), ops.asarray(labels, np.int64))
    want_loss, want_d = ref.softmax_cross_entropy(logits, labels)
    assert isinstance(loss, cupy.ndarray) and loss.ndim == 0, "the loss must stay on the device"
    assert np.isfinite(ops.to_numpy(loss)) and np.isfinite(ops.to_numpy(dlogits)).all()
    assert_close("cupy", "loss", float(ops.to_numpy(loss)), float(want_loss), dtype)
    assert_close("cupy", "dlogits", ops.to_numpy(dlogits), want_d, dtype)

    # the fast path's fused update against SGD's rule on NumPy (the generic path's)
    s = np.dtype(dtype).type
    tiny = s(np.finfo(dtype).smallest_normal)
    for wd in (0.0, 1e-3):
        rule = SGD(momentum=0.9, weight_decay=wd).make_leaf(ref.xp, ref.scalar, ref.dtype, True)
        for device_lr in (False, True):
            param, grad = (rng.standard_normal((50, 23)).astype(dtype) for _ in range(2))
            velocity = rng.standard_normal((50, 23)).astype(dtype)
            # zero gradient and weight, a velocity that becomes subnormal: flushed to 0
            param[0, :4], grad[0, :4], velocity[0, :4] = 0, 0, tiny / 4
            p, v = ops.asarray(param), ops.asarray(velocity)
            # a step's learning rate as the chunk reads it: an entry of the device's lrs
            lr = cupy.full(3, s(0.05))[1] if device_lr else s(0.05)
            sgd_momentum_kernel()(ops.asarray(grad), lr, s(0.9), s(wd), tiny, p, v)
            want_p, (want_v,) = rule(param, grad, (velocity,), (s(0.05),))
            assert (want_v[0, :4] == 0).all()
            # rounded operation by operation like NumPy, so equal to the last bit
            np.testing.assert_array_equal(ops.to_numpy(p), want_p)
            np.testing.assert_array_equal(ops.to_numpy(v), want_v)

    a, c = ops.asarray(np.array([1, 2, 3, 4])), ops.asarray(np.array([1, 0, 3, 4]))
    count = ops.count_equal(a, c)
    assert type(count) is int and count == 3


def _sgd_with_decay():
    """The optimizer of the CUDA-graph test: momentum and weight decay, on the fast path."""
    from simplenn.optim import SGD

    return SGD(momentum=0.9, weight_decay=1e-4)


def _train(backend: str, data, dtype: str, batch_size: int, epochs: int, seed: int = 3):
    import simplenn

    net = simplenn.TwoLayerNet(784, 32, 10, backend=backend, dtype=dtype, seed=seed)
    history = simplenn.fit(
        net,
        data,
        epochs=epochs,
        batch_size=batch_size,
        lr=0.05,
        optimizer=_sgd_with_decay(),
        seed=seed,
        eval_train=False,
    )
    assert history.training_path == "cupy-sgd", history.training_path
    return [e.train_loss for e in history.epochs], net.parameters(), net


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cuda_graphs_give_the_eager_run(gpu, mnist, monkeypatch, dtype) -> None:
    """10,000 images at batch 128 are chunks of 4096, 4096 and 1808 samples: over three
    epochs both chunk shapes run eagerly, are captured, then replayed."""
    from simplenn.core.network import training_path

    _, cb = gpu
    train, _ = mnist
    data = (train.X[:10000], train.y[:10000])
    monkeypatch.setenv(cb.GRAPHS_ENV_VAR, "0")
    eager_losses, eager_params, net = _train("cupy", data, dtype, 128, epochs=3)
    wrapper = training_path(net.ops, _sgd_with_decay(), "pixels", 128).train_steps.chunk
    assert isinstance(wrapper, cb.CudaGraphTrainSteps)
    before = (wrapper.captures, wrapper.replays)
    monkeypatch.setenv(cb.GRAPHS_ENV_VAR, "1")
    graph_losses, graph_params, _ = _train("cupy", data, dtype, 128, epochs=3)
    assert wrapper.disabled_reason is None, wrapper.disabled_reason
    assert wrapper.captures - before[0] >= 2 and wrapper.replays - before[1] >= 5
    # Eager products go through cupy.matmul, captured ones through the direct cuBLAS call:
    # the same GEMM, but cuBLAS may pick another algorithm, so allow rounding differences.
    rtol = trajectory_tolerance(dtype)
    assert_close("cupy", "losses", graph_losses, eager_losses, dtype, rtol)
    for name, want in eager_params.items():
        assert_close("cupy", name, graph_params[name], want, dtype, rtol)
