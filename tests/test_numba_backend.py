"""The Numba backend's own contract: kernels are dispatchers the compiled math can
call, a training batch is sparse by row count and density and its two compressed
forms agree, the sparse paths compute the same numbers as BLAS, deferred
first-layer steps catch up in closed form, dense products are NumPy's BLAS (or the
SciPy fallback), compiled closures are found in the on-disk cache by a new process,
and a missing numba names the pip extra.
(Agreement with the reference and with NumPy: the conformance kit, tests/test_conformance.py.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest

from simplenn.testing import assert_close, trajectory_tolerance

REPO = Path(__file__).resolve().parents[1]


def _run(code: str, env_extra: dict[str, str], extra_path: Path | None = None):
    env = dict(os.environ, **env_extra)
    env.pop("SIMPLENN_BACKEND", None)
    env["PYTHONPATH"] = os.pathsep.join(
        str(p) for p in (extra_path, REPO, env.get("PYTHONPATH")) if p
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )


def test_missing_numba_cli_names_what_to_install(tmp_path):
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['numba'] = None\n")
    out = _run(
        "from simplenn.cli.train import main; raise SystemExit(main(['--backend', 'numba']))",
        {},
        extra_path=tmp_path,
    )
    assert out.returncode != 0
    assert "pip install numba" in out.stderr, out.stdout + out.stderr
    assert "pip install '.[numba]'" in out.stderr, out.stdout + out.stderr


@pytest.fixture
def nb(require_backend):
    require_backend("numba")
    import importlib

    # the package, with the modules the tests reach as its attributes (nb.deferred, ...)
    for module in ("batches", "blas", "deferred", "fastpath", "kernels", "warp"):
        importlib.import_module(f"simplenn.backends.numba.{module}")
    return importlib.import_module("simplenn.backends.numba")


def _sgd_path(ops, input_kind: str, batch_size: int, **hyper):
    """The ``train_steps`` of SGD (``hyper``) on ``ops`` as ``fit`` gets it."""
    from simplenn.core.network import training_path
    from simplenn.optim import SGD

    path = training_path(ops, SGD(**hyper), input_kind, batch_size)
    assert path.name == "numba-sgd", path.name
    return path.train_steps


def test_every_op_the_network_uses_is_a_dispatcher(nb):
    from numba.core.registry import CPUDispatcher

    for dtype in ("float32", "float64"):
        ops = nb.NumbaOps(dtype)
        for op in (
            "affine",
            "affine_relu",
            "matmul",
            "matmul_tn",
            "matmul_nt",
            "relu_backward",
            "sum_rows",
            "softmax_cross_entropy",
            "take",
            "to_float",
        ):
            assert isinstance(getattr(ops, op), CPUDispatcher), f"{dtype} {op}"
        pixels = ops.to_float(np.full((1, 2), 255, np.uint8))
        assert pixels.dtype == np.dtype(dtype) and (pixels == 1).all()
        assert isinstance(_sgd_path(ops, "pixels", 1).chunk, CPUDispatcher), dtype
    # what the fast path's chunk calls
    for kernel in (
        nb.kernels.sgd_update,
        nb.deferred.sgd_update_outer,
        nb.deferred.begin_steps,
        nb.deferred.take_pixels32,
        nb.deferred.take_pixels64,
        nb.deferred.take_floats32,
        nb.deferred.take_floats64,
    ):
        assert isinstance(kernel, CPUDispatcher), kernel


def _take_floats(nb, X, rows):
    """``take_floats32`` or ``take_floats64``, by the dtype of X."""
    return (nb.deferred.take_floats32 if X.dtype == np.float32 else nb.deferred.take_floats64)(
        X, rows
    )


def _batch(nb, x):
    """x (m, d) floats as the training batch the fast path's take_floats makes of it."""
    return _take_floats(nb, x, np.arange(x.shape[0], dtype=np.int64))


def test_a_batch_is_sparse_by_row_count_and_density(nb):
    rng = np.random.default_rng(0)
    rows = nb.batches.SPARSE_MAX_ROWS
    sparse = rng.random((rows + 1, 50)) * (rng.random((rows + 1, 50)) < 0.2)
    assert not nb.batches._is_dense(_batch(nb, sparse[:rows]))
    assert nb.batches._is_dense(_batch(nb, sparse))  # too many rows
    assert nb.batches._is_dense(_batch(nb, np.ones((4, 50))))  # too many nonzeros
    pixels = (rng.random((3, 50)) < 0.2).astype(np.uint8) * 255
    batch = nb.deferred.take_pixels32(pixels, np.array([2, 0], dtype=np.int64))
    assert not nb.batches._is_dense(batch)
    assert np.array_equal(nb.batches.batch_to_dense(batch), pixels[[2, 0]].astype(np.float32) / 255)


@pytest.mark.parametrize("m", [1, 2, 9])
def test_a_sparse_batch_holds_the_same_entries_by_row_and_by_column(nb, m):
    """The forward pass reads the CSR form, the update and the catch-up the touched
    columns and the CSC form: they must describe the same x (else a deferred row could
    be read before it is caught up)."""
    rng = np.random.default_rng(1)
    x = rng.random((m, 70)) * (rng.random((m, 70)) < 0.2)
    x[:, 5] = 0
    batch = _batch(nb, x)
    assert not nb.batches._is_dense(batch)
    by_column = np.zeros_like(x)
    for t, i in enumerate(batch.touched):
        span = slice(batch.col_start[t], batch.col_start[t + 1])
        assert np.all(np.diff(batch.col_rows[span]) > 0)  # rows ascending
        by_column[batch.col_rows[span], i] = batch.col_values[span]
    assert np.array_equal(by_column, x)
    assert np.array_equal(nb.batches.batch_to_dense(batch), x)
    assert np.array_equal(batch.touched, np.flatnonzero((x != 0).any(axis=0)))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sparse_and_blas_paths_compute_the_same_products(nb, dtype):
    rng = np.random.default_rng(1)
    m = nb.batches.SPARSE_MAX_ROWS
    x = (rng.random((m, 70)) * (rng.random((m, 70)) < 0.2)).astype(dtype)
    W, d = rng.standard_normal((70, 9)).astype(dtype), rng.standard_normal((m, 9)).astype(dtype)
    batch = _batch(nb, x)
    assert not nb.batches._is_dense(batch)
    k = nb.kernels
    # the same nonzero terms as BLAS sums, in another order: equal to rounding
    assert_close("numba", "sparse x W", k.matmul(batch, W), k.matmul(x, W), dtype)
    assert_close("numba", "sparse xᵀ d", k.matmul_tn(batch, d), k.matmul_tn(x, d), dtype)
    # with one sample, each entry of xᵀ d is a single product: exact
    one = x[:1]
    assert np.array_equal(k.matmul_tn(_batch(nb, one), d[:1]), one.T @ d[:1])


@pytest.mark.parametrize("momentum, weight_decay", [(0.0, 0.0), (0.9, 0.0), (0.9, 0.01)])
def test_folded_first_layer_update_equals_update_with_the_formed_gradient(
    nb, momentum, weight_decay
):
    """sgd_update_outer's sparse path in a chunk (no xᵀ d formed; without weight decay
    untouched rows deferred) against sgd_update with the gradient formed, each step at
    its own learning rate; one sample per step makes each gradient entry a single
    product. Momentum 0 makes a deferred step the identity, and with weight decay
    nothing is deferred (every row takes every step), so those agree exactly; deferred
    momentum steps are applied in closed form, equal to rounding."""
    rng = np.random.default_rng(2)
    W, V = rng.standard_normal((70, 9)), rng.standard_normal((70, 9))
    W2, V2 = W.copy(), V.copy()
    X = (rng.random((3, 70)) * (rng.random((3, 70)) < 0.2)).astype(np.float64)
    D = rng.standard_normal((3, 9))
    lrs = np.array([0.05, 0.03, 0.08])
    inputs = nb.deferred.begin_steps(X, W, V, lrs, momentum, weight_decay)
    assert inputs.enabled == (weight_decay == 0)
    for s in range(3):
        batch = nb.deferred.take_floats64(inputs, np.array([s]))
        assert not nb.batches._is_dense(batch.batch)
        W_out, V_out = nb.deferred.sgd_update_outer(
            W, batch, D[s : s + 1], V, lrs[s], momentum, weight_decay
        )
        assert W_out is W and V_out is V  # in place, as the contract allows
        if weight_decay:  # nothing owed after any step
            assert (inputs.last == s + 1).all()
        nb.kernels.sgd_update(W2, X[s : s + 1].T @ D[s : s + 1], V2, lrs[s], momentum, weight_decay)
    assert (inputs.last == 3).all()  # the chunk's last step applied every owed step
    if momentum and not weight_decay:  # deferred steps in closed form: equal to rounding
        np.testing.assert_allclose(W, W2, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(V, V2, rtol=1e-13, atol=1e-15)
    else:
        assert np.array_equal(W, W2) and np.array_equal(V, V2)


def test_deferred_steps_are_applied_in_closed_form(nb):
    """k owed zero-gradient steps of a row, each at its own learning rate, applied at
    once, equal k plain steps."""
    rng = np.random.default_rng(3)
    W, V = rng.standard_normal((5, 4)), rng.standard_normal((5, 4))
    W2, V2 = W.copy(), V.copy()
    lrs = rng.uniform(0.01, 0.2, 40)
    inputs = nb.deferred.begin_steps(np.zeros((40, 5)), W, V, lrs, 0.9, 0.0)
    assert inputs.enabled
    powers = 0.9 ** np.arange(41)
    np.testing.assert_allclose(inputs.decay, powers, rtol=1e-13)
    np.testing.assert_allclose(  # sums[s] = Σ_{t>s} lrs[t - 1] 0.9^(t - s)
        inputs.sums, [np.dot(lrs[s:], powers[1 : 41 - s]) for s in range(41)], rtol=1e-13
    )
    for s in range(40):  # all-zero batches: every row defers
        zero = nb.deferred.take_floats64(inputs, np.array([s]))
        assert not nb.batches._is_dense(zero.batch) and zero.batch.touched.shape == (0,)
        if s == 39:
            assert inputs.clock[0] == 39 and not inputs.last.any()
            assert not np.allclose(W, W2)  # not yet applied
        nb.deferred.sgd_update_outer(W, zero, np.ones((1, 4)), V, lrs[s], 0.9, 0.0)
        nb.kernels.sgd_update(W2, np.zeros_like(W2), V2, lrs[s], 0.9, 0.0)
    assert (inputs.last == 40).all()  # the last step caught every row up
    np.testing.assert_allclose(W, W2, rtol=1e-12)
    np.testing.assert_allclose(V, V2, rtol=1e-12)


def test_deferred_steps_zero_a_velocity_that_ends_below_the_smallest_normal(nb):
    """Owed steps applied at once leave 0 where one step at a time would have flushed
    the velocity (0.5^6 of 4 x the smallest normal number) and the same numbers
    elsewhere."""
    tiny = np.finfo(np.float64).smallest_normal
    W, V = np.ones((3, 2)), np.full((3, 2), 4 * tiny)
    V[2] = 1.0
    W2, V2 = W.copy(), V.copy()
    inputs = nb.deferred.begin_steps(np.zeros((6, 3)), W, V, np.full(6, 0.1), 0.5, 0.0)
    for s in range(6):  # all-zero batches: every row defers to the last step
        nb.deferred.sgd_update_outer(
            W, nb.deferred.take_floats64(inputs, np.array([s])), np.ones((1, 2)), V, 0.1, 0.5, 0.0
        )
        nb.kernels.sgd_update(W2, np.zeros_like(W2), V2, 0.1, 0.5, 0.0)
    assert (V2[:2] == 0).all() and (V[:2] == 0).all(), V
    np.testing.assert_allclose(V, V2, rtol=1e-12)
    np.testing.assert_allclose(W, W2, rtol=1e-12)


def test_cache_flag_follows_the_environment_variable(nb):
    out = _run("import simplenn.backends.numba as nb; print(nb.CACHE)", {nb.CACHE_ENV_VAR: "0"})
    assert out.stdout.strip() == "False", out.stderr


def test_a_compiled_closure_is_loaded_from_the_cache_by_a_new_process(nb, tmp_path):
    """Closures capture dispatchers whose default UUID is random per process
    (numba issue #6264) and pickle the kernels by value with the helpers they call;
    every dispatcher here gets a stable UUID instead, so the second process
    finds the closure in the cache instead of compiling it again."""
    (tmp_path / "closure_mod.py").write_text(
        textwrap.dedent("""
        def make(ops):
            affine_relu = ops.affine_relu  # calls matmul, which calls helpers

            def total(x, W, b):
                return affine_relu(x, W, b).sum()

            return total
    """)
    )
    code = textwrap.dedent("""
        import numpy as np, closure_mod
        from simplenn.backends.numba import NumbaOps
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


@pytest.mark.slow
def test_warmup_compiles_training_on_read_only_datasets(nb):
    """A warm-up on inputs like the splits' (read-only, as the CLI passes) compiles what
    fit then trains with on read-only images and labels."""
    import simplenn
    from simplenn.core.training import warm_up
    from simplenn.data.datasets import example_inputs

    ops = nb.NumbaOps("float32")
    warm_up(ops, example_inputs())
    chunk = _sgd_path(ops, "pixels", 4).chunk
    compiled = len(chunk.signatures)
    X, y = np.zeros((10, 784), np.uint8), np.zeros(10, np.int64)
    X.flags.writeable = y.flags.writeable = False  # as in the DataSplits load_mnist returns
    net = simplenn.TwoLayerNet(backend=ops, dtype="float32")
    simplenn.fit(net, (X, y), epochs=1, batch_size=4, eval_train=False)
    assert len(chunk.signatures) == compiled  # nothing new compiled after warmup


def _dense_products(dtype: str):
    """(name, Numba's product, NumPy's) for the three products, on BLAS-sized inputs."""
    from simplenn.backends import numba as nb

    rng = np.random.default_rng(5)
    a, b, c = (rng.standard_normal(s).astype(dtype) for s in ((300, 70), (70, 20), (300, 20)))
    return [
        ("matmul", nb.matmul(a, b), a @ b),
        ("matmul_tn", nb.matmul_tn(a, c), a.T @ c),
        ("matmul_nt", nb.matmul_nt(c, b), c @ b.T),
    ]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dense_products_are_numpys_to_the_bit(nb, dtype):
    """Compiled kernels call the BLAS NumPy calls, with the same arguments."""
    if not nb.BLAS.startswith("NumPy's"):
        pytest.skip(f"NumPy's BLAS has no ILP64 cblas gemm to call here; using {nb.BLAS}")
    for name, got, want in _dense_products(dtype):
        assert got.dtype == want.dtype and np.array_equal(got, want), name


@pytest.mark.slow
def test_scipy_blas_fallback_computes_the_same_products(nb, tmp_path):
    """SIMPLENN_NUMBA_BLAS=scipy binds the kernels' gemm to a shim around Numba's
    np.dot -- the path taken where NumPy's BLAS can't be found -- including for
    kernels compiled and cached by a process that used NumPy's BLAS."""
    code = textwrap.dedent("""
        import sys; sys.path.insert(0, "tests")
        from test_numba_backend import _dense_products
        from simplenn.backends import numba as nb
        print(nb.BLAS)
        for dtype in ("float32", "float64"):
            for name, got, want in _dense_products(dtype):
                err = float(abs(got.astype("float64") - want).max() / abs(want).max())
                print(name, dtype, got.dtype == want.dtype and err < 1e-5)
    """)
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "cache"), nb.CACHE_ENV_VAR: "1"}
    numpy_run = _run(code, env)
    scipy_run = _run(code, dict(env, SIMPLENN_NUMBA_BLAS="scipy"))
    for run in (numpy_run, scipy_run):
        assert run.returncode == 0, run.stderr
        lines = run.stdout.splitlines()
        assert len(lines) == 7 and all(line.endswith("True") for line in lines[1:]), run.stdout
    assert scipy_run.stdout.startswith("Numba's np.dot (SciPy's BLAS)"), scipy_run.stdout


def test_scipy_fallback_without_scipy_names_the_fix(nb, tmp_path):
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['scipy'] = None\n")
    out = _run(
        "from simplenn.backends import get_backend; get_backend('numba')",
        {"SIMPLENN_NUMBA_BLAS": "scipy"},
        extra_path=tmp_path,
    )
    assert out.returncode != 0
    assert (
        "SIMPLENN_NUMBA_BLAS=scipy asks for Numba's np.dot, which needs SciPy, which is "
        "not installed; install it with pip install scipy, or unset SIMPLENN_NUMBA_BLAS"
        in out.stderr
    ), out.stderr


def test_unknown_blas_setting_names_the_choices(nb):
    out = _run(
        "from simplenn.backends import get_backend; get_backend('numba')",
        {"SIMPLENN_NUMBA_BLAS": "mkl"},
    )
    assert out.returncode != 0
    assert "SIMPLENN_NUMBA_BLAS='mkl' is not understood" in out.stderr
    assert "BackendUnavailableError" in out.stderr


def test_warmup_without_gradients_leaves_loss_and_gradients_uncompiled(nb):
    import simplenn
    from simplenn.core.training import warm_up

    class Fresh(nb.NumbaOps):  # its own network functions, none compiled yet
        pass

    ops = Fresh("float32")
    warm_up(ops, np.zeros((8, 784), np.float32), gradients=False, batch_size=128)
    functions = simplenn.core.network.network_functions(ops)
    assert _sgd_path(ops, "floats", 128).chunk.signatures and functions.forward.signatures
    assert not functions.loss_and_gradients.signatures
    assert not _sgd_path(ops, "pixels", 128).chunk.signatures


@pytest.mark.slow
def test_large_batches_compile_one_layout_per_kind_of_inputs(nb):
    """A chunk of batches of more than SPARSE_MAX_ROWS rows reads sparse inputs (MNIST's
    pixels) as SparseInputs and dense ones, in fit's one pool of threads, as
    ThreadedInputs: each compiled version holds one layout and no deferred step; small
    batches get the version of X as stored."""
    import numba

    from simplenn.core.training import warm_up

    class Fresh(nb.NumbaOps):  # its own training paths, none compiled yet
        pass

    ops = Fresh("float32")
    large = nb.batches.SPARSE_MAX_ROWS + 1
    warm_up(ops, gradients=False, batch_size=large)
    chunk = _sgd_path(ops, "pixels", large).chunk
    (signature,) = chunk.signatures
    assert signature[8].instance_class is nb.batches.SparseInputs  # X, the training set
    warm_up(ops, np.full((8, 784), 200, np.uint8), gradients=False, batch_size=large)
    assert {s[8].instance_class for s in chunk.signatures} == {
        nb.batches.SparseInputs,
        nb.batches.ThreadedInputs,
    }
    warm_up(ops, gradients=False, batch_size=nb.batches.SPARSE_MAX_ROWS)
    assert chunk.signatures[-1][8] == numba.typeof(np.zeros((1, 1), np.uint8))  # may be sparse


def test_hot_columns_split_mnist_and_refuse_dense_inputs(nb):
    """MNIST's columns split into the often-nonzero ones, first and ascending, and the
    rest, ascending; inputs denser than ROWS_MAX_DENSITY get no split (dense products)."""
    import simplenn

    fastpath = nb.fastpath
    X = simplenn.load_mnist()[0].X
    order = np.arange(X.shape[0])
    columns, n_hot = fastpath.hot_columns(X, order)
    assert sorted(columns.tolist()) == list(range(784))
    assert 0 < n_hot < 784
    hot, cold = columns[:n_hot], columns[n_hot:]
    assert np.all(np.diff(hot) > 0) and np.all(np.diff(cold) > 0)
    rows = X[: fastpath.DENSITY_SAMPLE_ROWS]
    density = np.count_nonzero(rows, axis=0) / rows.shape[0]
    assert density[hot].min() >= fastpath.HOT_DENSITY > density[cold].max()
    assert fastpath.hot_columns(np.full((300, 784), 7, np.uint8), order[:300]) is None


@pytest.mark.parametrize(
    ("n_cols", "kind"), [(64, "pixels"), (50, "pixels"), (64, "floats"), (50, "floats")]
)
def test_rows_layout_trains_as_numpy_does(nb, n_cols, kind):
    """Batches split into hot columns (BLAS) and sparse others, on inputs whose rows are
    whole uint64 words of pixels (read 8 at a time) or not (read one by one), pixels or
    floats, a few rows all zero, against the numpy backend (float64)."""
    import simplenn

    rng = np.random.default_rng(5)
    often = rng.random(n_cols) < 0.4  # hot columns: nonzero in ~half the rows
    p = np.where(often, 0.5, 0.03)
    X = ((rng.random((300, n_cols)) < p) * rng.integers(1, 256, (300, n_cols))).astype(np.uint8)
    X[::37] = 0
    if kind == "floats":
        X = X / np.float64(255)
    y = rng.integers(0, 10, 300)
    order = np.arange(300)
    columns, n_hot = nb.fastpath.hot_columns(X, order)
    assert 0 < n_hot < n_cols
    nets = {
        name: simplenn.TwoLayerNet(n_cols, 16, 10, backend=name, dtype="float64", seed=1)
        for name in ("numba", "numpy")
    }
    for net in nets.values():
        simplenn.fit(net, (X, y), epochs=2, batch_size=64, lr=0.1)
    got, want = nets["numba"].parameters(), nets["numpy"].parameters()
    for k in ("W1", "b1", "W2", "b2"):
        assert_close("numba", k, got[k], want[k], "float64", rtol=1e-10)


def test_chunks_reuse_their_scratch(nb):
    """The rows layout's scratch is one array per name, shape and dtype in a thread."""
    scratch = nb.fastpath.scratch
    a = scratch("test", (3, 4), np.dtype(np.float32))
    assert scratch("test", (3, 4), np.dtype(np.float32)) is a
    assert scratch("test", (3, 5), np.dtype(np.float32)) is not a
    assert scratch("test", (3, 5), np.dtype(np.float64)).dtype == np.float64


@pytest.mark.parametrize("batch_size", [33, 40])
def test_dense_chunks_train_as_numpy_does(nb, batch_size):
    """Large batches, with a last batch of at most SPARSE_MAX_ROWS rows (dense here,
    sparse in a chunk of small batches), against the numpy backend."""
    import simplenn

    rng = np.random.default_rng(3)
    X = ((rng.random((50, 64)) < 0.2) * rng.integers(1, 256, (50, 64))).astype(np.uint8)
    y = rng.integers(0, 10, 50)
    nets = {
        name: simplenn.TwoLayerNet(64, 16, 10, backend=name, dtype="float64", seed=1)
        for name in ("numba", "numpy")
    }
    for net in nets.values():
        simplenn.fit(net, (X, y), epochs=2, batch_size=batch_size, lr=0.1)
    got, want = nets["numba"].parameters(), nets["numpy"].parameters()
    for k in ("W1", "b1", "W2", "b2"):
        assert_close("numba", k, got[k], want[k], "float64", rtol=1e-12)


def test_train_steps_update_parameters_in_aligned_arrays(nb):
    """Parameters and velocities off the 64-byte alignment are updated in aligned copies,
    which train_steps returns (aligned ones in place), with the same numbers."""
    import simplenn
    from simplenn.core.params import Params
    from simplenn.optim import OptState

    fp = nb.fastpath

    def misaligned(a):
        return fp.copy_at(a, fp.ALIGNMENT, 16)

    net = simplenn.TwoLayerNet(64, 16, 10, backend="numba", seed=2)
    rng = np.random.default_rng(4)
    X = rng.integers(0, 256, (40, 64)).astype(np.uint8)
    Y, order = rng.integers(0, 10, 40), np.arange(40)
    train_steps = _sgd_path(net.ops, "pixels", 8)
    start = net.parameters()
    results = []
    for place in (misaligned, fp.aligned):
        params = Params(*(place(start[k].copy()) for k in ("W1", "b1", "W2", "b2")))
        state = OptState(0, Params(*((place(np.zeros_like(p)),) for p in params)))
        new_params, new_state, _ = train_steps(params, state, X, Y, order, 8, np.full(5, 0.1))
        arrays = [*params, *(v for (v,) in state.slots)]
        updated = [*new_params, *(v for (v,) in new_state.slots)]
        assert new_state.step == 5
        for before, after in zip(arrays, updated):
            assert after.__array_interface__["data"][0] % fp.ALIGNMENT == 0
            assert (after is before) == (place is fp.aligned)
        results.append(updated)
    for name, a, b in zip(("W1", "b1", "W2", "b2", "V1", "v1", "V2", "v2"), *results):
        np.testing.assert_array_equal(a, b, err_msg=name)


# -- one pool of threads: BLAS on one thread, products over numba's ----------------------


@pytest.mark.parametrize("shape", [(128, 784, 800), (784, 128, 800), (40, 33, 17), (3, 5, 1000)])
@pytest.mark.parametrize("trans_a, trans_b", [(False, False), (True, False), (False, True)])
def test_products_cut_over_numba_threads_are_blas_products(nb, shape, trans_a, trans_b):
    """Each part of a threaded product is one BLAS call on its rows or columns: the
    parts, of multiples of 16 and a remainder, cover the product exactly."""
    m, k, n = shape
    rng = np.random.default_rng(0)
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    want = (a.T if trans_a else a) @ (b.T if trans_b else b)
    for threads in (1, 2, 3):
        got = nb.kernels._threaded_gemm(a, b, trans_a, trans_b, threads)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4 * np.abs(want).max())


def _blas_threads() -> int:
    """The thread count of NumPy's own BLAS (SciPy may load another)."""
    from threadpoolctl import threadpool_info

    info = threadpool_info()
    found = [i["num_threads"] for i in info if i["user_api"] == "blas" and "numpy" in i["filepath"]]
    assert len(found) == 1, info
    return found[0]


def test_products_on_numba_threads_put_blas_on_one_thread_and_restore_it(nb):
    from threadpoolctl import threadpool_limits

    with threadpool_limits(2):
        with nb.blas.products_on_numba_threads() as moved:
            if not moved:
                pytest.skip(f"NumPy's BLAS has no OpenBLAS thread count to set: {nb.BLAS}")
            assert _blas_threads() == 1 and nb.blas.one_pool_active()
            with nb.blas.products_on_numba_threads():
                assert _blas_threads() == 1
            assert _blas_threads() == 1 and nb.blas.one_pool_active()
        assert _blas_threads() == 2 and not nb.blas.one_pool_active()


@pytest.mark.slow
def test_training_on_one_pool_of_threads_computes_the_same_numbers(nb):
    """Batches of more than SPARSE_MAX_ROWS rows of dense inputs inside
    products_on_numba_threads read the training set as ThreadedInputs, whose products
    are cut over numba's threads;
    the parameters end as training with BLAS's threads leaves them, and the elastic
    fields, one single-threaded BLAS call per block there, are BLAS's threaded ones, to
    the kit's tolerances: BLAS may add in another order on other threads, and does so
    on some CPUs (docs/numba.md#which-results-are-bitwise)."""
    import simplenn
    from simplenn.backends.images import image_ops
    from simplenn.core.augment import draw_batches, elastic_basis, elastic_levels
    from simplenn.optim import SGD

    class Fresh(nb.NumbaOps):  # its own training paths, none compiled yet
        pass

    split = simplenn.load_mnist()[0][:2000]
    mnist = (0.05 + 0.9 * (split.X / np.float32(255)), split.y)  # dense: no zero
    nets = []
    for threaded in (False, True):
        ops = Fresh("float32")
        net = simplenn.TwoLayerNet(784, 64, 10, backend=ops, seed=1)
        order = np.random.default_rng(0).permutation(2000)
        with nb.blas.products_on_numba_threads() if threaded else nullcontext():
            state, _ = net.train_steps(  # fit would hold the one pool either way
                mnist[0],
                np.asarray(mnist[1], np.int64),
                order,
                SGD().init(net.params, np.zeros_like),
                optimizer=SGD(),
                batch_size=100,
                lrs=np.full(20, 0.1),
            )
        nets.append(net.parameters())
    inputs = {sig[8].instance_class for sig in _sgd_path(ops, "floats", 100).chunk.signatures}
    assert nb.batches.ThreadedInputs in inputs
    for k in ("W1", "b1", "W2", "b2"):
        assert_close(
            "numba",
            f"{k} trained on one pool",
            nets[1][k],
            nets[0][k],
            "float32",
            rtol=trajectory_tolerance("float32"),
        )
    d = draw_batches("elastic", 0, 1, 0, 300, 100, 28)
    images = image_ops(nb.NumbaOps("float32"))
    alone = images.elastic_fields(d.noise, elastic_levels(), elastic_basis(28))
    with nb.blas.products_on_numba_threads():
        threaded = images.elastic_fields(d.noise, elastic_levels(), elastic_basis(28))
    assert_close("numba", "elastic fields on one pool", threaded, alone, "float32")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_elastic_fields_on_one_pool_are_the_same_on_any_number_of_threads(nb, dtype):
    """With BLAS on one thread, as in an augmented fit, each block of images is one BLAS
    call whichever of numba's threads makes it, so the fields are the same to the bit
    however the blocks are shared (and the same as NumPy's, to the kit's tolerance)."""
    from simplenn.backends.images import image_ops
    from simplenn.backends.numpy_backend import NumpyOps
    from simplenn.core.augment import draw_batches, elastic_basis, elastic_levels

    d = draw_batches("elastic", 0, 1, 0, 300, 100, 28)  # 5 blocks, the last one short
    m, s = d.noise.shape[0], 28
    basis = np.ascontiguousarray(elastic_basis(28), dtype)
    levels = np.asarray(elastic_levels(), dtype)
    with nb.blas.products_on_numba_threads() as moved:
        if not moved:
            pytest.skip(f"no BLAS thread count to set here: {nb.BLAS}")
        fields = [
            nb.warp.elastic_fields_into(
                d.noise,
                levels,
                basis,
                np.ascontiguousarray(basis.T),
                parts,
                np.empty((s, 2 * m * s), dtype),
            )
            for parts in (1, 2, 3, 5)
        ]
    for parts, got in zip((2, 3, 5), fields[1:]):
        np.testing.assert_array_equal(got, fields[0], err_msg=f"{parts} parts")
    want = image_ops(NumpyOps(dtype)).elastic_fields(d.noise, levels, basis)
    assert_close(
        "numba", "elastic fields", fields[0].reshape(s, m, 2, s).transpose(1, 2, 0, 3), want, dtype
    )


def test_no_writable_cache_place_warns_and_trains_uncached(nb, tmp_path):
    """Where numba finds nowhere to write its cache, the backend says so once and every
    kernel compiles uncached instead of failing at import."""
    nowhere = {
        "NUMBA_CACHE_DIR": "/dev/null/not-a-directory",
        "NUMBA_CACHE_LOCATOR_CLASSES": "UserProvidedCacheLocator",
    }
    (tmp_path / "probe_module.py").write_text("def f():\n    return 0\n")
    probe = _run(
        "import numba, probe_module\nnumba.njit(cache=True)(probe_module.f)\n", nowhere, tmp_path
    )
    if probe.returncode == 0:
        pytest.skip("this numba finds a place for its cache despite NUMBA_CACHE_DIR")
    result = _run(
        "import numpy as np, simplenn\n"
        "from simplenn.backends.numba import compile\n"
        "net = simplenn.TwoLayerNet(784, 8, 10, backend='numba')\n"
        "X, y = np.zeros((40, 784), np.uint8), np.arange(40) % 10\n"
        "simplenn.fit(net, (X, y), epochs=1, batch_size=8)\n"
        "print('cache', compile.CACHE)\n",
        nowhere,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("cache False")
    assert result.stderr.count("no writable place to cache") == 1
