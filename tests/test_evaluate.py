"""``python -m simplenn.evaluate``, the report it prints and the PNGs of --plot."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import simplenn
from simplenn import _optional
from simplenn.cli.evaluate import Evaluation, evaluate, format_report
from simplenn.errors import SimplennError

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_blas_thread")


class FixedNet:
    """Stands in for a model: returns given probabilities."""

    n_classes = 3

    def __init__(self, probabilities):
        self.probabilities = np.asarray(probabilities, dtype=np.float64)

    def predict_proba(self, X):
        return self.probabilities


def test_metrics_by_hand():
    # true:      0  0  1  1  1  2
    # predicted: 0  1  1  1  0  1   (class 2 never predicted)
    probs = np.eye(3)[[0, 1, 1, 1, 0, 1]] * 0.8 + 0.2 / 3
    ev = evaluate(FixedNet(probs), np.zeros((6, 1)), np.array([0, 0, 1, 1, 1, 2]))
    np.testing.assert_array_equal(ev.confusion, [[1, 1, 0], [1, 2, 0], [0, 1, 0]])
    assert ev.accuracy == pytest.approx(3 / 6)
    np.testing.assert_allclose(ev.precision[:2], [1 / 2, 2 / 4])
    assert np.isnan(ev.precision[2])
    np.testing.assert_allclose(ev.recall, [1 / 2, 2 / 3, 0])
    report = format_report(ev)
    assert "test accuracy: 50.00% (3/6)" in report
    assert re.search(r"^\s+2\s+-\s+0\.0%\s+1$", report, re.M)


def test_most_confident_errors_are_sorted():
    probs = np.array([[0.9, 0.1, 0], [0.2, 0.8, 0], [0.4, 0.6, 0], [0.1, 0.9, 0]])
    ev = Evaluation(
        probs, probs.argmax(1), np.array([0, 0, 0, 1]), np.zeros((3, 3), dtype=np.int64)
    )
    assert list(ev.most_confident_errors(5)) == [1, 2]
    assert list(ev.most_confident_errors(1)) == [1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mnist_subset_dir):
    """A small model and a small MNIST-format test directory (the model sees 500 of
    the bundled test images, so the command's numbers can be checked)."""
    train, test = simplenn.load_mnist()
    net = simplenn.TwoLayerNet(784, 32, 10, backend="numpy", seed=0)
    simplenn.fit(
        net, (train.X[:10000], train.y[:10000]), epochs=1, eval_train=False, interruptible=False
    )
    model = simplenn.save_model(net, tmp_path_factory.mktemp("eval") / "model.npz")
    return net, model, mnist_subset_dir(100, 500), (test.X[:500], test.y[:500])


def _run(module: str, *args) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_report_matches_the_model(trained):
    net, model, data, (X, y) = trained
    r = _run("simplenn.evaluate", model, "--data-dir", data, "--backend", "numpy")
    assert r.returncode == 0, r.stderr
    correct = int((net.predict(X) == y).sum())
    assert f"test accuracy: {100 * correct / 500:.2f}% ({correct}/500)" in r.stdout
    lines = r.stdout.splitlines()
    start = lines.index("confusion matrix (rows: true label, columns: predicted label)") + 2
    matrix = np.array([[int(v) for v in line.split()[1:]] for line in lines[start : start + 10]])
    expected = np.zeros((10, 10), dtype=int)
    np.add.at(expected, (y, net.predict(X)), 1)
    np.testing.assert_array_equal(matrix, expected)


def test_cli_needs_only_the_test_files(trained, tmp_path):
    net, model, data, (X, y) = trained
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (tmp_path / name).write_bytes((data / name).read_bytes())
    r = _run("simplenn.evaluate", model, "--data-dir", tmp_path, "--backend", "numpy")
    assert r.returncode == 0, r.stderr
    correct = int((net.predict(X) == y).sum())
    assert f"test accuracy: {100 * correct / 500:.2f}% ({correct}/500)" in r.stdout


def _is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000


def test_cli_plots(trained, tmp_path):
    pytest.importorskip("matplotlib", reason="--plot needs matplotlib: pip install matplotlib")
    _, model, data, _ = trained
    r = _run("simplenn.evaluate", model, "--data-dir", data, "--plot", tmp_path / "new" / "dir")
    assert r.returncode == 0, r.stderr
    assert _is_png(tmp_path / "new" / "dir" / "confusion_matrix.png")
    assert _is_png(tmp_path / "new" / "dir" / "confident_errors.png")


def test_train_plot_writes_training_curves(trained, tmp_path):
    pytest.importorskip("matplotlib", reason="--plot needs matplotlib: pip install matplotlib")
    _, _, data, _ = trained
    r = _run(
        "simplenn.train",
        "--backend",
        "numpy",
        "--data-dir",
        data,
        "--hidden",
        "8",
        "--epochs",
        "2",
        "--quiet",
        "--plot",
        tmp_path / "plots",
    )
    assert r.returncode == 0, r.stderr
    assert _is_png(tmp_path / "plots" / "training_curves.png")


def test_cli_errors_are_one_line(trained, tmp_path):
    _, model, data, _ = trained
    missing = _run("simplenn.evaluate", tmp_path / "absent.npz")
    assert missing.returncode == 1
    assert missing.stderr.strip() == (
        f"python -m simplenn.evaluate: error: model file {tmp_path / 'absent.npz'} does not exist"
    )
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    r = _run("simplenn.evaluate", model, "--data-dir", data, "--plot", not_a_dir)
    if "matplotlib" in r.stderr:
        pytest.skip("matplotlib is not installed")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    assert "--plot" in r.stderr and str(not_a_dir) in r.stderr


def test_missing_matplotlib_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    from simplenn.cli.plots import require_matplotlib

    with pytest.raises(SimplennError, match=r"--plot needs matplotlib.*pip install matplotlib"):
        require_matplotlib()
    with pytest.raises(_optional.MissingDependencyError):
        _optional.require("matplotlib", "--plot")
