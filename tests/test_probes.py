"""The fence around other libraries' private details (simplenn/_probes.py).

For each private detail: a test that fails, naming the probe, where the libraries
installed here no longer have it (so that an upgrade that removes one is noticed
rather than silently slowing simplenn down), and a test that forces the public
fallback and checks that training computes the same numbers. Thread control goes
through threadpoolctl's public API, with its own fallback. And no module of simplenn
outside the fence reaches a private name of another library.
"""

from __future__ import annotations

import ast
import ctypes
import os
import pickle
import subprocess
import sys
import textwrap
import uuid
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest

from simplenn import _probes
from simplenn.testing import assert_close, trajectory_tolerance

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def nb(require_backend):
    require_backend("numba")
    from simplenn.backends import numba as numba_backend

    return numba_backend


def _train(ops, threaded_pool=None) -> dict[str, np.ndarray]:
    """The parameters after an epoch of 600 MNIST digits at batch 100 (the dense path
    of BLAS products), from a fixed seed."""
    import simplenn

    train = simplenn.load_mnist()[0][:600]
    net = simplenn.TwoLayerNet(784, 32, 10, backend=ops, seed=3)
    with threaded_pool() if threaded_pool is not None else nullcontext():
        simplenn.fit(net, train, epochs=1, batch_size=100, lr=0.1, eval_train=False)
    return net.parameters()


# -- numba: a dispatcher's UUID ---------------------------------------------------------


def test_numba_dispatchers_take_the_uuid_that_pickles_them(nb):
    """Loud: compiled closures are cached by the UUIDs of the dispatchers they
    capture, which numba pickles them by; set_dispatcher_uuid sets that UUID through
    numba's private Dispatcher._set_uuid."""
    import numba

    dispatcher = numba.njit(lambda x: x + 1)
    wanted = f"simplenn-probe-test-{uuid.uuid4().hex}"
    fix = (
        f"numba {numba.__version__} changed a dispatcher's private _set_uuid/_uuid: "
        "update simplenn._probes.set_dispatcher_uuid and dispatcher_uuid, or compiled "
        "closures are compiled again in every process"
    )
    assert _probes.set_dispatcher_uuid(dispatcher, wanted), fix
    assert _probes.dispatcher_uuid(dispatcher) == wanted, fix
    assert wanted.encode() in pickle.dumps(dispatcher), fix
    assert dispatcher(1) == 2


def test_dispatcher_probes_answer_no_for_other_objects():
    assert _probes.set_dispatcher_uuid(object(), "x") is False
    assert _probes.dispatcher_uuid(object()) is None
    assert _probes.dispatcher_uuid(3) is None


def test_without_numbas_uuid_kernels_and_closures_compute_the_same(nb, monkeypatch):
    """The fallback where numba offers no _set_uuid: a kernel keeps numba's random
    UUID, compiled closures miss the cache (they compile in this process), and
    training gives the very same numbers."""
    from simplenn.backends.numba import compile as numba_compile
    from simplenn.core.network import training_path
    from simplenn.optim import SGD

    class Fresh(nb.NumbaOps):  # its own network functions, none compiled yet
        pass

    want = _train(Fresh("float32"))

    monkeypatch.setattr(_probes, "set_dispatcher_uuid", lambda dispatcher, uuid: False)

    @numba_compile._kernel
    def twice(x):
        return 2 * x

    assert twice(4) == 8
    assert not numba_compile._set_stable_uuid(twice, "content")

    class Unstable(nb.NumbaOps):
        pass

    ops = Unstable("float32")
    got = _train(ops)
    steps = training_path(ops, SGD(), "pixels", 100).train_steps.chunk
    assert sum(steps.stats.cache_hits.values()) == 0  # compiled here, not loaded
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


# -- NumPy: the cblas gemm of its BLAS ----------------------------------------------------


def _numpy_blas_name() -> str | None:
    """The BLAS NumPy was built with, as its build configuration names it."""
    try:
        config = np.show_config(mode="dicts")
    except TypeError:  # NumPy < 1.26
        return None
    return config.get("Build Dependencies", {}).get("blas", {}).get("name")


def test_numpys_wheel_exports_the_ilp64_cblas_gemm_the_kernels_call():
    """Loud: NumPy's own wheels link scipy-openblas, whose ILP64 cblas_?gemm the
    Numba backend's kernels call; numpy_cblas_gemm finds them, and they multiply."""
    blas = _numpy_blas_name()
    if blas != "scipy-openblas":
        pytest.skip(
            f"NumPy {np.__version__} is built with {blas or 'an unnamed BLAS'}, "
            "not the scipy-openblas of NumPy's wheels"
        )
    found = _probes.numpy_cblas_gemm()
    assert found is not None, (
        f"NumPy {np.__version__} no longer exports any of "
        f"{_probes.NUMPY_CBLAS_GEMM_NAMES} through its extension module: update "
        "simplenn._probes.numpy_cblas_gemm, or the numba backend multiplies with "
        "Numba's np.dot (SciPy's BLAS)"
    )
    rng = np.random.default_rng(0)
    for dtype, ctype in (("float32", ctypes.c_float), ("float64", ctypes.c_double)):
        address, name = found[dtype]
        a, b = rng.standard_normal((3, 4)).astype(dtype), rng.standard_normal((4, 2)).astype(dtype)
        c = np.zeros((3, 2), dtype)
        i32, i64, ptr = ctypes.c_int32, ctypes.c_int64, ctypes.c_void_p
        gemm = ctypes.CFUNCTYPE(
            None, i32, i32, i32, i64, i64, i64, ctype, ptr, i64, ptr, i64, ctype, ptr, i64
        )(address)
        gemm(101, 111, 111, 3, 2, 4, 1.0, a.ctypes.data, 4, b.ctypes.data, 2, 0.0, c.ctypes.data, 2)
        np.testing.assert_allclose(c, a @ b, rtol=1e-5, err_msg=name)


def test_without_numpys_cblas_the_kernels_multiply_with_numbas_dot(nb, tmp_path):
    """The fallback where numpy_cblas_gemm finds nothing: the kernels' products go
    through Numba's np.dot, and training gives the same numbers to the kit's
    trajectory tolerance (another BLAS build)."""
    pytest.importorskip("scipy", reason="the np.dot fallback calls SciPy's BLAS")
    out = tmp_path / "params.npz"
    code = textwrap.dedent(f"""
        import numpy as np
        from simplenn import _probes
        _probes.numpy_cblas_gemm = lambda: None  # as where NumPy's BLAS has none
        import sys; sys.path.insert(0, "tests")
        from test_probes import _train
        from simplenn.backends import numba as nb
        print(nb.BLAS)
        np.savez({str(out)!r}, **_train(nb.NumbaOps("float32")))
    """)
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
    )
    env.pop("SIMPLENN_BACKEND", None)
    env.pop("SIMPLENN_NUMBA_BLAS", None)
    run = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("Numba's np.dot (SciPy's BLAS)"), run.stdout
    want = _train(nb.NumbaOps("float32"))
    with np.load(out) as got:
        for name in want:
            assert_close(
                "numba",
                f"{name} (np.dot fallback)",
                got[name],
                want[name],
                "float32",
                rtol=trajectory_tolerance("float32"),
            )


# -- thread control: threadpoolctl ----------------------------------------------------------


def test_one_pool_builds_its_threadpoolctl_controller_once(nb, monkeypatch):
    """A controller inspects every library loaded in the process when it is built:
    products_on_numba_threads builds one, on first use, and keeps it."""
    import threadpoolctl

    built = []

    class Counted(threadpoolctl.ThreadpoolController):
        def __init__(self):
            built.append(1)
            super().__init__()

    monkeypatch.setattr(threadpoolctl, "ThreadpoolController", Counted)
    nb.blas._blas_controller.cache_clear()
    try:
        for _ in range(3):
            with nb.blas.products_on_numba_threads() as moved:
                if not moved:
                    pytest.skip(f"no BLAS thread count to set here: {nb.BLAS}")
        assert len(built) == 1
    finally:
        nb.blas._blas_controller.cache_clear()


def test_without_thread_control_the_pool_is_declined_and_training_is_unchanged(nb, monkeypatch):
    """The fallback where threadpoolctl is missing or finds no BLAS:
    products_on_numba_threads yields False and changes nothing, so training inside
    it computes the very numbers of training outside it."""
    ops = nb.NumbaOps("float32")
    want = _train(ops)
    monkeypatch.setattr(nb.blas, "_blas_controller", lambda: None)
    with nb.blas.products_on_numba_threads() as moved:
        assert moved is False and not nb.blas.one_pool_active()
    got = _train(ops, nb.blas.products_on_numba_threads)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_without_threadpoolctl_the_controller_is_none(nb, monkeypatch):
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)
    nb.blas._blas_controller.cache_clear()
    try:
        assert nb.blas._blas_controller() is None
    finally:
        nb.blas._blas_controller.cache_clear()


# -- the fence ----------------------------------------------------------------------------

#: Other libraries, as simplenn imports them.
_LIBRARIES = {
    "numpy",
    "numba",
    "llvmlite",
    "scipy",
    "torch",
    "jax",
    "jaxlib",
    "cupy",
    "cupy_backends",
    "sklearn",
    "onnx",
    "onnxruntime",
    "threadpoolctl",
    "array_api_compat",
    "array_api_strict",
    "matplotlib",
    "PIL",
    "tqdm",
}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _private_uses(path: Path) -> list[str]:
    """Where ``path`` reaches a private name of another library: an import from a
    private module or of a private name, an attribute with a leading underscore of a
    module imported from another library, or ``getattr`` of a private name."""
    tree = ast.parse(path.read_text(), str(path))
    aliases = set()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in _LIBRARIES:
                    aliases.add((alias.asname or alias.name).split(".")[0])
                    if any(_private(part) for part in alias.name.split(".")):
                        found.append(f"{path}:{node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] in _LIBRARIES:
                names = [a.name for a in node.names]
                aliases.update(a.asname or a.name for a in node.names)
                if any(map(_private, parts)) or any(map(_private, names)):
                    found.append(
                        f"{path}:{node.lineno}: from {node.module} import {', '.join(names)}"
                    )
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in aliases:
                found.append(f"{path}:{node.lineno}: {ast.unparse(node)}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr", "setattr")
            and len(node.args) > 1
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and _private(node.args[1].value)
        ):
            found.append(f"{path}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_module_outside_the_fence_reaches_a_private_name_of_another_library():
    fence = REPO / "simplenn" / "_probes.py"
    found = [
        use
        for path in sorted((REPO / "simplenn").rglob("*.py"))
        if path != fence
        for use in _private_uses(path)
    ]
    assert not found, (
        "private details of other libraries belong in simplenn/_probes.py, "
        "behind a probe with a public fallback:\n" + "\n".join(found)
    )


def test_the_fence_finds_what_it_looks_for(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        textwrap.dedent("""
        import numpy as np
        from numba.core import dispatcher
        from numpy._core import _multiarray_umath
        x = np.linalg._umath_linalg
        y = dispatcher.Dispatcher._set_uuid
        z = getattr(np, "_private", None)
        fine = np.linalg.norm, getattr(np, "__version__"), object()._whatever
    """)
    )
    assert [use.split(": ", 1)[1] for use in _private_uses(sample)] == [
        "from numpy._core import _multiarray_umath",
        "np.linalg._umath_linalg",
        "dispatcher.Dispatcher._set_uuid",
        "getattr(np, '_private', None)",
    ]
