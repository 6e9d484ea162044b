"""The open registry: register(), entry points, lazy loading, auto priorities, and
that a backend registered either way is available to the CLI like a built-in one."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import numpy as np
import pytest

import simplenn
from simplenn.backends import (
    ENTRY_POINT_GROUP,
    Availability,
    available_backends,
    backend_names,
    get_backend,
    probe_backend,
    register,
    registry,
    resolve_backend_name,
)
from simplenn.backends.numpy_backend import NumpyOps
from simplenn.errors import BackendUnavailableError, UnknownBackendError


@pytest.fixture
def fresh_registry(monkeypatch):
    """The registry as it is, restored after the test; entry points not yet loaded."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_entry_point_errors", {})
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    probe_backend.cache_clear()
    yield registry
    probe_backend.cache_clear()


def _fake_entry_points(monkeypatch, *points: tuple[str, str]) -> None:
    eps = [importlib.metadata.EntryPoint(name, value, ENTRY_POINT_GROUP) for name, value in points]
    monkeypatch.setattr(
        importlib.metadata, "entry_points", lambda group=None: [e for e in eps if e.group == group]
    )


class DoubleNumpyOps(NumpyOps):
    """A backend for the tests: NumPy's ops, under another name."""


def register_double():
    register("double", DoubleNumpyOps, probe=lambda: Availability(True, version="1"))


def test_one_register_call_makes_a_backend(fresh_registry):
    register("twin", DoubleNumpyOps, install_hint="pip install twin", priority=-5)
    assert "twin" in backend_names()
    ops = get_backend("TWIN", "float64")
    assert isinstance(ops, DoubleNumpyOps) and ops.name == "twin" and ops.dtype == np.float64
    net = simplenn.TwoLayerNet(8, 4, 3, backend="twin")
    assert net.backend == "twin"
    assert resolve_backend_name("auto") != "twin"  # negative priority: never auto


def test_auto_follows_priorities(fresh_registry):
    register("best", DoubleNumpyOps, priority=1000)
    assert resolve_backend_name("auto") == "best"
    register(
        "best",
        DoubleNumpyOps,
        probe=lambda: Availability(False, "no such device"),
        priority=1000,
        replace=True,
    )
    assert resolve_backend_name("auto") != "best"


def test_registering_twice_needs_replace(fresh_registry):
    with pytest.raises(ValueError, match="already registered"):
        register("numpy", DoubleNumpyOps)
    with pytest.raises(ValueError, match="reserved"):
        register("auto", DoubleNumpyOps)
    with pytest.raises(TypeError, match="module:attribute"):
        register("bad", "no_colon_here")


def test_a_failing_probe_or_missing_module_is_a_reason(fresh_registry):
    register("raises", DoubleNumpyOps, probe=lambda: 1 / 0)
    register("missing", "no_such_module_anywhere:Ops", install_hint="pip install nothing")
    assert "ZeroDivisionError" in probe_backend("raises").reason
    reason = probe_backend("missing").reason
    assert "no_such_module_anywhere" in reason and "pip install nothing" in reason
    with pytest.raises(BackendUnavailableError, match="pip install nothing"):
        get_backend("missing")


def test_entry_points_register_lazily_and_show_everywhere(fresh_registry, monkeypatch):
    _fake_entry_points(monkeypatch, ("double", f"{__name__}:register_double"))
    assert not registry._entry_points_loaded
    get_backend("numpy")  # a known name loads no entry point
    assert not registry._entry_points_loaded
    assert get_backend("double").name == "double"  # an unknown one does
    assert registry._entry_points_loaded
    info = probe_backend("double")
    assert info.available and info.version == "1"
    assert "double" in [i.name for i in available_backends()]


def test_a_broken_entry_point_is_listed_with_its_error(fresh_registry, monkeypatch):
    _fake_entry_points(
        monkeypatch, ("broken", "no_such_plugin_module:register"), ("silent", "builtins:print")
    )
    infos = {i.name: i for i in available_backends()}
    assert not infos["broken"].available and "No module named" in infos["broken"].reason
    assert not infos["silent"].available and "did not register" in infos["silent"].reason
    with pytest.raises(BackendUnavailableError, match="no_such_plugin_module"):
        get_backend("broken")
    with pytest.raises(UnknownBackendError, match="broken"):
        get_backend("nonexistent")


def test_importing_simplenn_loads_no_entry_point_and_no_optional_library():
    code = (
        "import sys, simplenn; simplenn.TwoLayerNet(8, 4, 3); "
        "from simplenn.backends import registry; "
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('numba', 'cupy', 'llvmlite', 'array_api_strict', 'torch', 'jax', "
        "'simplenn_f64acc')]; "
        "print(bad, registry._entry_points_loaded); "
        "sys.exit(1 if bad or registry._entry_points_loaded else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_cli_takes_any_registered_backend():
    listed = subprocess.run(
        [sys.executable, "-m", "simplenn.train", "--list-backends"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in backend_names():
        assert any(line.startswith(name) for line in listed.splitlines()), listed
    bad = subprocess.run(
        [sys.executable, "-m", "simplenn.train", "--backend", "nope"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "unknown backend 'nope'" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) <= 2  # usage line + the error


def test_capabilities_are_declared_attributes():
    for info in available_backends():
        if not info.available:
            continue
        ops = get_backend(info.name)
        for attribute in ("is_device", "needs_warmup"):
            assert isinstance(getattr(ops, attribute), bool), (info.name, attribute)
        assert isinstance(ops.fast_paths, tuple), info.name


def test_torch_and_jax_come_through_simplenns_own_entry_points():
    points = {e.name: e.value for e in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    assert points.get("torch") == "simplenn.backends.plugins:register_torch"
    assert points.get("jax") == "simplenn.backends.plugins:register_jax"
    assert {"torch", "jax"} <= set(backend_names())


@pytest.mark.parametrize(
    "library, name, hint",
    [("torch", "torch", "pip install torch"), ("jax", "jax", "pip install jax")],
)
def test_a_missing_array_library_is_one_line_with_a_hint_that_works(library, name, hint):
    code = (
        f"import sys; sys.modules[{library!r}] = None\n"
        "import simplenn\n"
        "try:\n"
        f"    simplenn.get_backend({name!r})\n"
        "except simplenn.BackendUnavailableError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert len(out.splitlines()) == 1, out
    assert hint in out and f"pip install '.[{name}]'" in out and "simplenn[" not in out, out


@pytest.mark.parametrize(
    "setting, reason",
    [("tpu", "is not understood; use cpu or cuda"), ("cuda", "sees no usable CUDA device")],
)
def test_the_torch_device_setting_is_checked(require_backend, setting, reason):
    require_backend("torch")
    import torch

    if setting == "cuda" and torch.cuda.is_available():
        pytest.skip("a CUDA device works here")
    code = "from simplenn.backends import probe_backend\nprint(probe_backend('torch').reason)\n"
    env = {**__import__("os").environ, "SIMPLENN_TORCH_DEVICE": setting}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout
    assert reason in out, out
