"""The registry and selector: names, availability reports, errors, lazy imports."""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest

import simplenn
from simplenn.backends import (
    available_backends,
    backend_names,
    get_backend,
    probe_backend,
    resolve_backend_name,
)
from simplenn.errors import BackendUnavailableError, UnknownBackendError


def test_import_simplenn_imports_neither_numba_nor_cupy():
    code = (
        "import sys, simplenn; simplenn.TwoLayerNet(8, 4, 3); "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('numba', 'cupy', 'llvmlite')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, f"import simplenn imported {result.stdout.strip()}"


def test_available_backends_reports_every_backend_with_a_reason_when_unavailable():
    infos = available_backends()
    assert [i.name for i in infos] == list(backend_names())
    assert [i.name for i in infos][:3] == ["numpy", "numba", "cupy"]
    for info in infos:
        assert info.available or info.reason, info
        assert info.name in info.describe()
    assert probe_backend("numpy").available


def test_unknown_backend_lists_the_valid_names():
    with pytest.raises(UnknownBackendError) as err:
        get_backend("tensorflow")
    for name in backend_names() + ("auto",):
        assert name in str(err.value)
    with pytest.raises(UnknownBackendError):
        simplenn.TwoLayerNet(8, 4, 3, backend="NumPyy")


def test_names_are_case_and_space_insensitive():
    assert get_backend(" NumPy ").name == "numpy"


def test_dtype_is_checked():
    with pytest.raises(ValueError, match="float32 or float64"):
        get_backend("numpy", dtype="float16")
    assert get_backend("numpy", dtype="float64").dtype == np.float64


def test_environment_variable_sets_the_default(monkeypatch):
    monkeypatch.setenv("SIMPLENN_BACKEND", "numpy")
    assert resolve_backend_name(None) == "numpy"
    monkeypatch.setenv("SIMPLENN_BACKEND", "nope")
    with pytest.raises(UnknownBackendError, match="SIMPLENN_BACKEND"):
        resolve_backend_name(None)
    monkeypatch.delenv("SIMPLENN_BACKEND")
    assert resolve_backend_name(None) == "numpy"


def test_auto_picks_the_best_available_backend_and_logs_it(caplog):
    with caplog.at_level(logging.INFO, logger="simplenn"):
        chosen = resolve_backend_name("auto")
    if probe_backend("cupy").available:
        expected = "cupy"
    elif probe_backend("numba").available:
        expected = "numba"
    else:
        expected = "numpy"
    assert chosen == expected
    assert f"chose {expected}" in caplog.text


def test_an_unavailable_backend_named_explicitly_raises_and_never_falls_back():
    for info in available_backends():
        if info.available:
            continue
        with pytest.raises(BackendUnavailableError) as err:
            get_backend(info.name)
        message = str(err.value)
        assert info.name in message and info.reason in message and "auto" in message
        break
    else:
        pytest.skip("every backend is available here: no unavailable one to name")


def test_missing_numba_names_what_to_install_in_a_subprocess():
    code = (
        "import sys; sys.modules['numba'] = None\n"
        "import simplenn\n"
        "try:\n    simplenn.get_backend('numba')\n"
        "except simplenn.BackendUnavailableError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install numba" in out.stdout, out.stdout + out.stderr
    assert "simplenn[" not in out.stdout  # that name on the package index is another project


def test_ops_is_at_most_twenty_pure_array_operations():
    from simplenn.backends.base import OP_NAMES, Ops

    public = {n for n in dir(Ops) if not n.startswith("_") and callable(getattr(Ops, n))}
    assert public == set(OP_NAMES) and len(OP_NAMES) <= 20
    forbidden = (
        "sgd",
        "update",
        "velocity",
        "momentum",
        "optim",
        "W1",
        "warp",
        "elastic",
        "augment",
        "steps",
    )
    assert not [n for n in OP_NAMES if any(word in n for word in forbidden)]
