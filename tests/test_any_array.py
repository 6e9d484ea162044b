"""Any array in: NumPy, PyTorch and JAX inputs on the numpy, numba, torch and jax
backends (uint8 pixels and floats) predict and train as their NumPy copies do, with
NumPy results; the estimator and ``evaluate`` take them too; what is not an array is
a one-line TypeError naming its type.

``pytest tests/test_any_array.py -v`` lists the input x backend matrix, one line a cell.
"""

from __future__ import annotations

import numpy as np
import pytest

import simplenn

pytestmark = pytest.mark.usefixtures("one_blas_thread")

LIBRARIES = ("numpy", "torch", "jax")
BACKENDS = ("numpy", "numba", "torch", "jax")


def _converter(library: str):
    """A function turning a NumPy array into the library's array (skips if missing)."""
    if library == "numpy":
        return np.array
    if library == "torch":
        torch = pytest.importorskip("torch", reason="PyTorch is not installed")
        return lambda a: torch.from_numpy(np.array(a))
    jnp = pytest.importorskip("jax.numpy", reason="JAX is not installed")
    return jnp.asarray


@pytest.fixture(scope="module")
def data():
    """64 training images as uint8 pixels, as float32 in [0, 1], and their labels."""
    train, _ = simplenn.load_mnist()
    X = np.array(train.X[:64])
    return {"uint8": X, "float32": X.astype(np.float32) / 255}, np.array(train.y[:64])


@pytest.mark.parametrize("kind", ["uint8", "float32"])
@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize(
    "backend",
    [pytest.param(b, marks=pytest.mark.slow) if b == "numba" else b for b in BACKENDS],
)  # numba's cells compile afresh
def test_matrix_predict_and_fit(require_backend, data, backend, library, kind):
    """One cell of the matrix: predict, predict_proba, accuracy, loss_and_gradients and
    a one-epoch fit (with a test set) on the library's arrays give what the NumPy
    arrays give, as NumPy results."""
    require_backend(backend)
    convert = _converter(library)
    inputs, y = data
    X = inputs[kind]

    reference = simplenn.TwoLayerNet(784, 8, backend=backend, seed=0)
    net = simplenn.TwoLayerNet(784, 8, backend=backend, seed=0)
    predicted = net.predict(convert(X))
    assert type(predicted) is np.ndarray and predicted.dtype == np.int64
    np.testing.assert_array_equal(predicted, reference.predict(X))
    proba = net.predict_proba(convert(X))
    assert type(proba) is np.ndarray
    np.testing.assert_array_equal(proba, reference.predict_proba(X))
    assert net.accuracy(convert(X), convert(y)) == reference.accuracy(X, y)
    loss, grads = net.loss_and_gradients(convert(X), convert(y))
    assert loss == reference.loss_and_gradients(X, y)[0]
    assert all(type(g) is np.ndarray for g in grads.values())

    settings = {"epochs": 1, "batch_size": 32, "eval_train": False, "interruptible": False}
    history = simplenn.fit(net, (convert(X), convert(y)), (convert(X), convert(y)), **settings)
    expected = simplenn.fit(reference, (X, y), (X, y), **settings)
    assert history.final_test_accuracy == expected.final_test_accuracy
    for name, value in reference.parameters().items():
        np.testing.assert_array_equal(net.parameters()[name], value)


@pytest.mark.parametrize("library", ["torch", "jax"])
def test_images_of_another_library_are_flattened(data, library):
    convert = _converter(library)
    X = data[0]["uint8"][:8]
    net = simplenn.TwoLayerNet(784, 8, seed=0)
    np.testing.assert_array_equal(net.predict(convert(X.reshape(8, 28, 28))), net.predict(X))


def test_a_jax_array_on_the_strict_backend(require_backend, data):
    require_backend("strict")
    convert = _converter("jax")
    X, y = data[0]["float32"][:16], data[1][:16]
    net = simplenn.TwoLayerNet(784, 8, backend="strict", seed=0)
    np.testing.assert_array_equal(net.predict(convert(X)), net.predict(X))
    assert net.accuracy(convert(X), convert(y)) == net.accuracy(X, y)


def test_a_torch_tensor_that_needs_gradients_is_a_one_line_error(data):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    X = torch.from_numpy(data[0]["float32"][:4]).requires_grad_()
    net = simplenn.TwoLayerNet(784, 8, seed=0)
    with pytest.raises(TypeError, match="Tensor.*detach") as info:
        net.predict(X)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "thing, named",
    [
        ({"a": 1}, "dict"),
        ("pixels", "str"),
        (None, "NoneType"),
        ({1, 2}, "set"),
        (3.5, "float"),
        (object(), "object"),
    ],
)
def test_what_is_not_an_array_is_a_one_line_type_error(data, thing, named):
    X, y = data[0]["uint8"][:4], data[1][:4]
    net = simplenn.TwoLayerNet(784, 8, seed=0)
    calls = {
        "predict": lambda: net.predict(thing),
        "predict_proba": lambda: net.predict_proba(thing),
        "accuracy": lambda: net.accuracy(thing, y),
        "accuracy y": lambda: net.accuracy(X, thing),
        "fit": lambda: simplenn.fit(net, (thing, y), epochs=1, interruptible=False),
        "fit y": lambda: simplenn.fit(net, (X, thing), epochs=1, interruptible=False),
    }
    for call in calls.values():
        with pytest.raises(TypeError, match=rf"^[Xy] must be an array .*, not {named}$") as info:
            call()
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("library", ["torch", "jax"])
def test_evaluate_takes_arrays_of_another_library(data, library):
    from simplenn.cli.evaluate import evaluate

    convert = _converter(library)
    X, y = data[0]["uint8"], data[1]
    net = simplenn.TwoLayerNet(784, 8, seed=0)
    expected = evaluate(net, X, y)
    got = evaluate(net, convert(X), convert(y))
    np.testing.assert_array_equal(got.confusion, expected.confusion)
    assert type(got.true) is np.ndarray


@pytest.mark.parametrize("library", ["torch", "jax"])
def test_the_estimator_takes_arrays_of_another_library(library):
    pytest.importorskip("sklearn", reason="simplenn.sklearn needs scikit-learn")
    from simplenn.sklearn import SimpleNNClassifier

    convert = _converter(library)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 5)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    expected = SimpleNNClassifier(hidden=8, epochs=3).fit(X, y)
    clf = SimpleNNClassifier(hidden=8, epochs=3).fit(convert(X), convert(y))
    predicted = clf.predict(convert(X))
    assert type(predicted) is np.ndarray
    np.testing.assert_array_equal(predicted, expected.predict(X))
    np.testing.assert_array_equal(clf.predict_proba(convert(X)), expected.predict_proba(X))
    assert clf.score(convert(X), convert(y)) == expected.score(X, y)
    with pytest.raises(TypeError, match=r"^X must be an array .*, not dict$"):
        clf.predict({"a": 1})


def test_import_simplenn_imports_no_array_library():
    """Taking any array costs nothing up front: no library but NumPy is imported."""
    import subprocess
    import sys

    code = (
        "import sys, simplenn\n"
        "heavy = [m for m in ('torch', 'jax', 'cupy', 'array_api_strict') "
        "if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("library", LIBRARIES)
def test_results_come_back_in_the_inputs_library_on_request(data, library):
    convert = _converter(library)
    X = convert(data[0]["float32"][:5])
    net = simplenn.TwoLayerNet(784, 8, backend="numpy")
    want_labels, want_p = (
        net.predict(np.asarray(data[0]["float32"][:5])),
        net.predict_proba(np.asarray(data[0]["float32"][:5])),
    )
    assert isinstance(net.predict(X), np.ndarray)  # NumPy unless asked
    labels, p = net.predict(X, like_input=True), net.predict_proba(X, like_input=True)
    assert type(labels) is type(convert(want_labels))
    assert type(p) is type(convert(want_p))
    np.testing.assert_array_equal(np.asarray(labels), want_labels)
    np.testing.assert_array_equal(np.asarray(p), want_p)
    lists = [list(map(float, row)) for row in data[0]["float32"][:2]]
    assert isinstance(net.predict(lists, like_input=True), np.ndarray)
