"""Models load anywhere: a model file or a pickled estimator records the backend it was
trained on as information; loading picks a backend (``backend="auto"`` by default) and
falls back, with one line saying so, where the training backend can't run."""

from __future__ import annotations

import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest

import simplenn
from simplenn import BackendFallbackWarning
from simplenn.io.models import write_model_file

#: Run first in a subprocess: importing numba fails there, as where it is not installed.
NO_NUMBA = "import sys\nsys.modules['numba'] = None\n"


def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [sys.executable, "-c", NO_NUMBA + code],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, **env},
    )


def _fallback_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "BackendFallbackWarning" in line]


def test_a_pickled_numba_estimator_loads_and_predicts_without_numba(require_backend, tmp_path):
    """Trained on numba, pickled, then loaded and used in a process where importing
    numba fails: it predicts the same labels, on the backend auto picks there, and says
    so in one line."""
    pytest.importorskip("sklearn", reason="simplenn.sklearn needs scikit-learn")
    require_backend("numba")
    from sklearn.datasets import load_iris

    from simplenn.sklearn import SimpleNNClassifier

    X, y = load_iris(return_X_y=True)
    X = ((X - X.mean(axis=0)) / X.std(axis=0)).astype(np.float32)
    clf = SimpleNNClassifier(hidden=8, epochs=3, backend="numba").fit(X, y)
    assert clf.net_.backend == "numba"
    path = tmp_path / "clf.pkl"
    path.write_bytes(pickle.dumps(clf))
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "expected.npy", clf.predict_proba(X))
    result = _run(
        "import pickle, numpy as np\n"
        f"clf = pickle.loads(open({str(path)!r}, 'rb').read())\n"
        "assert 'numba' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        f"X = np.load({str(tmp_path / 'X.npy')!r})\n"
        f"expected = np.load({str(tmp_path / 'expected.npy')!r})\n"
        "np.testing.assert_allclose(clf.predict_proba(X), expected, rtol=1e-5, atol=1e-6)\n"
        "assert (clf.predict(X) == clf.classes_[expected.argmax(axis=1)]).all()\n"
        "print(clf.net_.backend)\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() != "numba"
    lines = _fallback_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert "trained on backend 'numba'" in lines[0] and "loaded on" in lines[0]
    assert "set $SIMPLENN_BACKEND to choose" in lines[0]


def test_a_numba_model_file_loads_without_numba(require_backend, tmp_path):
    require_backend("numba")
    net = simplenn.TwoLayerNet(6, 4, 3, backend="numba", seed=1)
    path = simplenn.save_model(net, tmp_path / "model.npz")
    X = np.random.default_rng(0).random((5, 6)).astype(np.float32)
    np.save(tmp_path / "X.npy", X)
    expected = simplenn.TwoLayerNet(6, 4, 3, backend="numpy", seed=1).predict_proba(X)
    np.save(tmp_path / "expected.npy", expected)
    result = _run(
        "import numpy as np, simplenn\n"
        f"net = simplenn.load_model({str(path)!r})\n"
        f"X = np.load({str(tmp_path / 'X.npy')!r})\n"
        f"np.testing.assert_allclose(net.predict_proba(X), "
        f"np.load({str(tmp_path / 'expected.npy')!r}), rtol=1e-6)\n"
        "assert net.metadata['backend'] == 'numba'\n"
        "print(net.backend)\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() != "numba" and len(_fallback_lines(result.stderr)) == 1


def test_simplenn_backend_chooses_where_a_pickle_loads(tmp_path):
    pytest.importorskip("sklearn", reason="simplenn.sklearn needs scikit-learn")
    from simplenn.sklearn import SimpleNNClassifier

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((40, 3)), rng.integers(0, 2, 40)
    path = tmp_path / "clf.pkl"
    path.write_bytes(pickle.dumps(SimpleNNClassifier(hidden=4, epochs=1).fit(X, y)))
    result = _run(
        f"import pickle\nprint(pickle.loads(open({str(path)!r}, 'rb').read()).net_.backend)\n",
        SIMPLENN_BACKEND="strict",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "strict" and not _fallback_lines(result.stderr)


def _model_trained_on(backend: str, tmp_path) -> tuple:
    net = simplenn.TwoLayerNet(6, 4, 3, seed=1)
    path = write_model_file(tmp_path / "model.npz", net.parameters(), backend=backend)
    return net, path


def test_auto_loads_on_the_training_backend_where_it_runs(require_backend, tmp_path):
    require_backend("strict")
    _, path = _model_trained_on("strict", tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = simplenn.load_model(path)
    assert loaded.backend == "strict"
    assert simplenn.load_model(path, backend="numpy").backend == "numpy"


def test_auto_falls_back_with_one_line_naming_both_backends(tmp_path):
    net, path = _model_trained_on("gone", tmp_path)
    with pytest.warns(BackendFallbackWarning) as record:
        loaded = simplenn.load_model(path)
    message = str(record[0].message)
    assert "\n" not in message and "'gone'" in message and repr(loaded.backend) in message
    assert record[0].filename == __file__  # it points at the caller's line
    X = np.eye(6, dtype=np.float32)
    np.testing.assert_array_equal(loaded.predict_proba(X), net.predict_proba(X))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert simplenn.load_model(path, backend="numpy").backend == "numpy"
    with pytest.raises(simplenn.UnknownBackendError):
        simplenn.load_model(path, backend="gone")


def test_an_old_pickle_state_still_loads():
    """A state written before the training backend was stored as information."""
    pytest.importorskip("sklearn", reason="simplenn.sklearn needs scikit-learn")
    from simplenn.sklearn import SimpleNNClassifier

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((40, 3)), rng.integers(0, 2, 40)
    clf = SimpleNNClassifier(hidden=4, epochs=1).fit(X, y)
    state = clf.__getstate__()
    state["net_"]["backend"] = state["net_"].pop("trained_backend")
    copy = SimpleNNClassifier.__new__(SimpleNNClassifier)
    copy.__setstate__(state)
    np.testing.assert_array_equal(copy.predict(X), clf.predict(X))
