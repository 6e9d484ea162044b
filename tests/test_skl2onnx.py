"""ONNX for the estimator and pipelines: skl2onnx converts a SimpleNNClassifier, alone
or after a StandardScaler, with nothing registered first; onnxruntime's labels and
probabilities are the estimator's; ``export_onnx`` writes such a model."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="simplenn.sklearn needs scikit-learn")
skl2onnx = pytest.importorskip(
    "skl2onnx", reason="skl2onnx is not installed: pip install skl2onnx (or '.[onnx]')"
)
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")

from sklearn.datasets import load_iris
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

import simplenn
from simplenn._optional import MissingDependencyError
from simplenn.sklearn import SimpleNNClassifier

pytestmark = pytest.mark.usefixtures("one_blas_thread")

NAMES = np.array(["setosa", "versicolor", "virginica"])


def _run(model, X):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    outputs = {o.name: i for i, o in enumerate(session.get_outputs())}
    results = session.run(None, {session.get_inputs()[0].name: X})
    return session, results[outputs["label"]], results[outputs["probabilities"]]


@pytest.mark.parametrize("labels", ["ints", "strings", "unsorted ints"])
def test_skl2onnx_converts_a_pipeline_with_classes_and_probabilities(labels):
    X, y = load_iris(return_X_y=True)
    y = {"ints": y, "strings": NAMES[y], "unsorted ints": np.array([7, -3, 42])[y]}[labels]
    pipeline = Pipeline(
        [("scale", StandardScaler()), ("net", SimpleNNClassifier(hidden=16, epochs=20))]
    ).fit(X, y)
    model = skl2onnx.to_onnx(pipeline, X[:1])
    _, label, probabilities = _run(model, X)
    np.testing.assert_array_equal(label, pipeline.predict(X))
    assert probabilities.dtype == np.float32 and probabilities.shape == (150, 3)
    np.testing.assert_allclose(probabilities, pipeline.predict_proba(X), atol=1e-5)


def test_skl2onnx_converts_an_estimator_fitted_on_pixels(mnist):
    """Fitted on uint8 pixels, the graph divides by 255 as predict_proba does."""
    train, _ = mnist
    X, y = train.X[:300], train.y[:300]
    clf = SimpleNNClassifier(hidden=16, epochs=2, batch_size=64).fit(X, y)
    features = X.astype(np.float32)
    _, label, probabilities = _run(skl2onnx.to_onnx(clf, features[:1]), features)
    np.testing.assert_array_equal(label, clf.predict(X))
    np.testing.assert_allclose(probabilities, clf.predict_proba(X), atol=1e-5)


def test_export_onnx_writes_a_pipeline_with_the_input_features(tmp_path):
    X, y = load_iris(return_X_y=True)
    pipeline = Pipeline(
        [("scale", StandardScaler()), ("net", SimpleNNClassifier(hidden=8, epochs=10))]
    ).fit(X, NAMES[y])
    path = simplenn.export_onnx(pipeline, tmp_path / "pipeline.onnx")
    import onnx

    session, label, probabilities = _run(onnx.load(path), X.astype(np.float32))
    inp = session.get_inputs()[0]
    assert (inp.name, inp.type, inp.shape) == ("features", "tensor(float)", [None, 4])
    np.testing.assert_array_equal(label, pipeline.predict(X))
    np.testing.assert_allclose(probabilities, pipeline.predict_proba(X), atol=1e-5)


def test_float_class_labels_are_refused_with_one_line():
    X, y = load_iris(return_X_y=True)
    clf = SimpleNNClassifier(hidden=4, epochs=1).fit(X, y.astype(np.float64))
    with pytest.raises(ValueError, match="integer or string class labels, not float64"):
        skl2onnx.to_onnx(clf, X[:1])


def test_an_unfitted_estimator_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not fitted"):
        simplenn.export_onnx(SimpleNNClassifier(), tmp_path / "x.onnx")


def test_without_skl2onnx_export_says_what_to_install(tmp_path, monkeypatch):
    X, y = load_iris(return_X_y=True)
    clf = SimpleNNClassifier(hidden=4, epochs=1).fit(X, y)
    monkeypatch.setitem(sys.modules, "skl2onnx", None)  # makes `import skl2onnx` fail
    with pytest.raises(MissingDependencyError, match="pip install skl2onnx") as info:
        simplenn.export_onnx(clf, tmp_path / "x.onnx")
    assert "\n" not in str(info.value) and not (tmp_path / "x.onnx").exists()


def test_the_estimator_does_not_import_skl2onnx():
    code = (
        "import sys\n"
        "from simplenn.sklearn import SimpleNNClassifier\n"
        "SimpleNNClassifier(epochs=1).fit([[0.0], [1.0]], [0, 1]).predict([[0.5]])\n"
        "assert 'skl2onnx' not in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
