"""The Numba backend's own contract: kernels are dispatchers the compiled math can
call, zero-skipping picks its path by batch size and density and computes the
same numbers, compiled closures are found in the on-disk cache by a new process,
and a missing numba names the pip extra. (Agreement with NumPy: tests/test_parity.py.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import skip_unless_available

REPO = Path(__file__).resolve().parents[1]


def _run(code: str, env_extra: dict[str, str], extra_path: Path | None = None):
    env = dict(os.environ, **env_extra)
    env.pop("SIMPLENN_BACKEND", None)
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in (extra_path, REPO, env.get("PYTHONPATH"))
                                        if p)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=300)


def test_missing_numba_cli_names_the_pip_extra(tmp_path):
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['numba'] = None\n")
    out = _run("from simplenn.train import main; raise SystemExit(main(['--backend', 'numba']))",
               {}, extra_path=tmp_path)
    assert out.returncode != 0
    assert "pip install 'simplenn[numba]'" in out.stderr, out.stdout + out.stderr


@pytest.fixture
def nb():
    skip_unless_available("numba")
    from simplenn.backends import numba_backend

    return numba_backend


def test_every_op_the_network_uses_is_a_dispatcher(nb):
    from numba.core.registry import CPUDispatcher

    for dtype in ("float32", "float64"):
        ops = nb.NumbaOps(dtype)
        for op in ("affine", "affine_relu", "matmul", "matmul_tn", "matmul_nt",
                   "relu_backward", "sum_rows", "softmax_cross_entropy", "sgd_update",
                   "sgd_update_outer", "pixels_to_float", "cast_to_float", "take_pixels",
                   "take_floats"):
            assert isinstance(getattr(ops, op), CPUDispatcher), f"{dtype} {op}"
        assert ops.pixels_to_float(np.full((1, 2), 255, np.uint8)).dtype == np.dtype(dtype)


def test_zero_skipping_is_chosen_by_batch_size_and_density(nb):
    rng = np.random.default_rng(0)
    rows = nb.SPARSE_MAX_ROWS
    sparse_small = rng.random((rows, 50)) * (rng.random((rows, 50)) < 0.2)
    assert nb._use_sparse(sparse_small, rows)
    assert not nb._use_sparse(sparse_small, rows - 1)  # too many rows
    assert not nb._use_sparse(np.ones((4, 50)), rows)  # dense rows


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_zero_skipping_and_blas_paths_compute_the_same_products(nb, dtype):
    rng = np.random.default_rng(1)
    m = min(nb.SPARSE_MAX_ROWS, nb.SPARSE_MAX_ROWS_TN)
    x = (rng.random((m, 70)) * (rng.random((m, 70)) < 0.2)).astype(dtype)
    W, d = rng.standard_normal((70, 9)).astype(dtype), rng.standard_normal((m, 9)).astype(dtype)
    assert nb._use_sparse(x, m)
    # x W: a sum over the same nonzero terms in order, so equal to a plain loop to rounding
    np.testing.assert_allclose(nb.matmul(x, W), x.astype(np.float64) @ W, rtol=1e-5)
    np.testing.assert_allclose(nb.matmul_tn(x, d), x.T.astype(np.float64) @ d, rtol=1e-5)
    # with one sample per row, the zero-skipping xᵀ d has one product per entry: exact
    one = x[:1]
    assert np.array_equal(nb.matmul_tn(one, d[:1]), one.T @ d[:1])


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_folded_first_layer_update_equals_update_with_the_formed_gradient(nb, weight_decay):
    """sgd_update_outer's zero-skipping path (no xᵀ d formed) against sgd_update with
    the gradient formed; one sample per step makes each gradient entry a single
    product, so the two agree exactly."""
    rng = np.random.default_rng(2)
    x = (rng.random((1, 70)) * (rng.random((1, 70)) < 0.2)).astype(np.float64)
    d = rng.standard_normal((1, 9))
    assert nb._use_sparse(x, nb.SPARSE_MAX_ROWS_OUTER)
    W, V = rng.standard_normal((70, 9)), rng.standard_normal((70, 9))
    W2, V2 = W.copy(), V.copy()
    for _ in range(3):
        nb.sgd_update_outer(W, x, d, V, 0.05, 0.9, weight_decay)
        nb.sgd_update(W2, x.T @ d, V2, 0.05, 0.9, weight_decay)
    assert np.array_equal(W, W2) and np.array_equal(V, V2)


def test_cache_flag_follows_the_environment_variable(nb):
    out = _run("import simplenn.backends.numba_backend as nb; print(nb.CACHE)",
               {nb.CACHE_ENV_VAR: "0"})
    assert out.stdout.strip() == "False", out.stderr


def test_a_compiled_closure_is_loaded_from_the_cache_by_a_new_process(nb, tmp_path):
    """Closures capture dispatchers whose default UUID is random per process
    (numba issue #6264) and pickle the kernels by value with the helpers they call;
    every dispatcher here gets a stable UUID instead, so the second process
    finds the closure in the cache instead of compiling it again."""
    (tmp_path / "closure_mod.py").write_text(textwrap.dedent("""
        def make(ops):
            affine_relu = ops.affine_relu  # calls matmul, which calls helpers

            def total(x, W, b):
                return affine_relu(x, W, b).sum()

            return total
    """))
    code = textwrap.dedent("""
        import numpy as np, closure_mod
        from simplenn.backends.numba_backend import NumbaOps
        f = NumbaOps("float64").jit(closure_mod.make(NumbaOps("float64")))
        assert f(np.ones((3, 2)), np.ones((2, 2)), np.zeros(2)) == 12.0
        print(sum(f.stats.cache_hits.values()), sum(f.stats.cache_misses.values()))
    """)
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "cache"), nb.CACHE_ENV_VAR: "1"}
    first = _run(code, env, extra_path=tmp_path)
    second = _run(code, env, extra_path=tmp_path)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert first.stdout.split() == ["0", "1"], first.stdout  # compiled
    assert second.stdout.split() == ["1", "0"], second.stdout  # loaded


def test_warmup_compiles_training_on_read_only_datasets(nb):
    import simplenn

    ops = nb.NumbaOps("float32")
    ops.warmup()
    train_steps = simplenn.network.network_functions(ops).train_steps_pixels
    compiled = len(train_steps.signatures)
    X, y = np.zeros((10, 784), np.uint8), np.zeros(10, np.int64)
    X.flags.writeable = y.flags.writeable = False  # as in the DataSplits load_mnist returns
    net = simplenn.TwoLayerNet(backend=ops, dtype="float32")
    simplenn.fit(net, (X, y), epochs=1, batch_size=4, eval_train=False)
    assert len(train_steps.signatures) == compiled  # nothing new compiled after warmup
