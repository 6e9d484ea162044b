"""simplenn.sklearn.SimpleNNClassifier: scikit-learn's estimator checks, labels of any
kind, pipelines, cross-validation, grid search, the validation options, pickling, and
that ``import simplenn`` leaves scikit-learn alone."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip(
    "sklearn",
    reason="simplenn.sklearn needs scikit-learn: pip install scikit-learn (or '.[sklearn]')",
)

from sklearn.base import clone
from sklearn.datasets import load_digits, load_iris
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import simplenn
from simplenn.optim import SGD
from simplenn.sklearn import EXPECTED_FAILED_CHECKS, SimpleNNClassifier

pytestmark = pytest.mark.usefixtures("one_blas_thread")


@parametrize_with_checks(
    [SimpleNNClassifier()], expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_expected_failed_checks_are_few_and_explained():
    assert len(EXPECTED_FAILED_CHECKS) <= 5
    for name, reason in EXPECTED_FAILED_CHECKS.items():
        assert name.startswith("check_") and isinstance(reason, str) and reason.strip()


def test_defaults_and_params_round_trip():
    clf = SimpleNNClassifier()
    assert clf.get_params() == {
        "hidden": 100,
        "epochs": 50,
        "batch_size": 32,
        "solver": "sgd",
        "lr": None,
        "momentum": 0.9,
        "beta_1": 0.9,
        "beta_2": 0.999,
        "epsilon": 1e-8,
        "weight_decay": 1e-4,
        "lr_schedule": "cosine",
        "seed": 0,
        "backend": None,
        "dtype": "float32",
        "validation_fraction": None,
        "early_stopping": False,
        "n_iter_no_change": 10,
        "tol": 1e-4,
        "augment": "none",
        "warm_start": False,
        "verbose": False,
    }
    other = clone(clf).set_params(hidden=7, lr=0.3)
    assert (other.hidden, other.lr, clf.hidden) == (7, 0.3, 100)


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return StandardScaler().fit_transform(X), y


def test_string_labels(iris):
    X, y = iris
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    clf = SimpleNNClassifier(epochs=20).fit(X, names)
    assert list(clf.classes_) == ["setosa", "versicolor", "virginica"]
    assert clf.n_features_in_ == 4 and clf.n_iter_ == 20
    predicted = clf.predict(X)
    assert predicted.dtype == clf.classes_.dtype and set(predicted) <= set(clf.classes_)
    proba = clf.predict_proba(X)
    assert proba.shape == (150, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(axis=1)], predicted)
    assert clf.score(X, names) > 0.9


def test_labels_keep_their_values_and_columns_follow_classes(iris):
    """Non-contiguous integer labels, given unsorted: classes_ is sorted and column j of
    predict_proba belongs to classes_[j]; the labels index nothing internally."""
    X, y = iris
    labels = np.array([7, -3, 42])[y]
    clf = SimpleNNClassifier(epochs=20).fit(X, labels)
    np.testing.assert_array_equal(clf.classes_, [-3, 7, 42])
    proba = clf.predict_proba(X[y == 2])
    assert (proba.argmax(axis=1) == 2).mean() > 0.8
    assert set(clf.predict(X)) <= {-3, 7, 42}


def test_one_class_is_refused(iris):
    X, _ = iris
    with pytest.raises(ValueError, match="at least 2 classes.*1 class"):
        SimpleNNClassifier().fit(X, np.full(len(X), "only"))


def test_bad_parameters_are_refused_in_fit(iris):
    X, y = iris
    for params in (
        {"hidden": 0},
        {"epochs": 0},
        {"lr": -1.0},
        {"lr_schedule": "step"},
        {"validation_fraction": 1.5},
        {"early_stopping": 3},
        {"seed": -1},
        {"augment": "rotate"},
        {"n_iter_no_change": 0},
        {"tol": -1.0},
        {"warm_start": "yes"},
    ):
        clf = SimpleNNClassifier(**params)
        with pytest.raises(ValueError):
            clf.fit(X, y)


def test_pipeline_on_digits():
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, random_state=0, stratify=y
    )
    model = Pipeline([("scale", StandardScaler()), ("net", SimpleNNClassifier())])
    model.fit(X_train, y_train)
    assert model.score(X_test, y_test) > 0.93
    assert model.predict_proba(X_test).shape == (len(X_test), 10)


def test_cross_val_score(iris):
    X, y = load_iris(return_X_y=True)
    scores = cross_val_score(make_pipeline(StandardScaler(), SimpleNNClassifier()), X, y, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.85


def test_grid_search_on_mnist(mnist):
    train, test = mnist
    X, y = train.X[:2000], train.y[:2000]
    search = GridSearchCV(
        SimpleNNClassifier(epochs=3, batch_size=64), {"hidden": [32, 64], "lr": [0.05, 0.2]}, cv=2
    )
    search.fit(X, y)
    assert len(search.cv_results_["params"]) == 4
    assert search.best_params_["hidden"] in (32, 64) and search.best_params_["lr"] in (0.05, 0.2)
    assert search.best_score_ > 0.8
    assert search.best_estimator_.pixel_inputs_
    assert search.score(test.X[:2000], test.y[:2000]) > 0.8


def test_uint8_pixels_train_like_simplenn_fit(mnist):
    """On uint8 pixels the estimator is ``simplenn.fit`` on the same data, and predicting
    scales any dtype of the same pixels the same way."""
    train, _ = mnist
    X, y = train.X[:600], train.y[:600]
    clf = SimpleNNClassifier(hidden=32, epochs=2, batch_size=64, lr=0.1, seed=3).fit(X, y)
    net = simplenn.TwoLayerNet(784, 32, 10, seed=3)
    simplenn.fit(
        net,
        (X, y),
        epochs=2,
        batch_size=64,
        lr=0.1,
        optimizer=SGD(weight_decay=1e-4),
        seed=3,
        eval_train=False,
    )
    for name, value in net.parameters().items():
        np.testing.assert_array_equal(clf.net_.parameters()[name], value)
    assert clf.pixel_inputs_
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(clf.predict_proba(X.astype(np.float64)), proba, atol=1e-6)
    np.testing.assert_allclose(clf.predict_proba(X.astype(np.int64)), proba, atol=1e-6)


def test_augment_distorts_training_images_like_simplenn_fit(mnist):
    train, _ = mnist
    X, y = train.X[:300], train.y[:300]
    clf = SimpleNNClassifier(
        hidden=16, epochs=1, batch_size=64, lr=0.1, seed=2, augment="elastic"
    ).fit(X, y)
    net = simplenn.TwoLayerNet(784, 16, 10, seed=2)
    simplenn.fit(
        net,
        (X, y),
        epochs=1,
        batch_size=64,
        lr=0.1,
        optimizer=SGD(weight_decay=1e-4),
        seed=2,
        augment="elastic",
        eval_train=False,
    )
    plain = SimpleNNClassifier(hidden=16, epochs=1, batch_size=64, lr=0.1, seed=2).fit(X, y)
    for name, value in net.parameters().items():
        np.testing.assert_array_equal(clf.net_.parameters()[name], value)
    assert not np.array_equal(clf.net_.parameters()["W1"], plain.net_.parameters()["W1"])


def test_integer_features_are_numbers_not_pixels():
    """Integer features other than uint8 are used as they are: the same model as for
    their float copies."""
    rng = np.random.default_rng(0)
    X = rng.integers(-2, 3, size=(120, 4))
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
    as_ints = SimpleNNClassifier(epochs=5).fit(X, y)
    as_floats = SimpleNNClassifier(epochs=5).fit(X.astype(np.float64), y)
    assert not as_ints.pixel_inputs_
    np.testing.assert_array_equal(as_ints.predict_proba(X), as_floats.predict_proba(X))


def test_pickle_keeps_predictions_and_leaves_the_estimator_alone(iris):
    X, y = iris
    clf = SimpleNNClassifier(epochs=5).fit(X, y)
    state = clf.__getstate__()
    assert isinstance(state["net_"], dict) and isinstance(clf.net_, simplenn.TwoLayerNet)
    copy = pickle.loads(pickle.dumps(clf))
    assert isinstance(copy.net_, simplenn.TwoLayerNet)
    np.testing.assert_array_equal(copy.predict_proba(X), clf.predict_proba(X))


# -- validation_fraction and early_stopping ----------------------------------------------


def test_no_validation_by_default(iris):
    X, y = iris
    clf = SimpleNNClassifier(epochs=3).fit(X, y)
    assert all(e.val_loss is None and e.val_accuracy is None for e in clf.history_.epochs)


def test_validation_fraction_scores_every_epoch(iris):
    X, y = iris
    clf = SimpleNNClassifier(epochs=4, validation_fraction=0.2).fit(X, y)
    assert clf.n_iter_ == 4 and not clf.history_.stopped_early
    for e in clf.history_.epochs:
        assert e.val_loss is not None and 0 <= e.val_accuracy <= 1
    assert clf.history_.best_epoch in range(1, 5)


@pytest.fixture(scope="module")
def noise():
    """Labels that do not depend on the features: the validation loss soon rises."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((300, 8))
    return X, rng.integers(0, 2, 300)


@pytest.mark.parametrize("fraction", [None, 0.25])
def test_early_stopping_is_simplenn_fit_with_it(noise, fraction):
    """early_stopping (with validation_fraction, 0.1 when None) and tol=0 is
    ``simplenn.fit``'s with patience n_iter_no_change: the same epochs, the same stop
    and the best epoch's parameters."""
    X, y = noise
    clf = SimpleNNClassifier(
        hidden=64,
        epochs=60,
        lr=0.1,
        early_stopping=True,
        n_iter_no_change=3,
        tol=0.0,
        validation_fraction=fraction,
        seed=2,
    ).fit(X, y)
    history = clf.history_
    assert history.stopped_early and clf.n_iter_ < 60
    assert history.best_epoch == clf.n_iter_ - 3
    assert all(e.val_loss is not None for e in history.epochs)

    net = simplenn.TwoLayerNet(8, 64, 2, seed=2)
    expected = simplenn.fit(
        net,
        (X.astype(np.float32), y),
        epochs=60,
        batch_size=32,
        lr=0.1,
        optimizer=SGD(weight_decay=1e-4),
        seed=2,
        validation_fraction=0.1 if fraction is None else fraction,
        early_stopping=3,
        eval_train=False,
    )
    assert [e.val_loss for e in history.epochs] == [e.val_loss for e in expected.epochs]
    assert expected.best_epoch == history.best_epoch
    for name, value in net.parameters().items():
        np.testing.assert_array_equal(clf.net_.parameters()[name], value)


# -- import isolation --------------------------------------------------------------------


def test_import_simplenn_does_not_import_sklearn():
    code = (
        "import sys, simplenn\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'sklearn')\n"
        "assert not loaded, loaded\n"
        "assert 'simplenn.sklearn' not in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_without_sklearn_the_module_says_how_to_install_it():
    code = (
        "import sys\n"
        "sys.modules['sklearn'] = None\n"
        "try:\n"
        "    import simplenn.sklearn\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "pip install scikit-learn" in result.stdout


@pytest.mark.parametrize("solver", ["sgd", "adam", "adamw"])
def test_each_solver_trains_its_optimizer(iris, solver):
    X, y = iris
    clf = SimpleNNClassifier(hidden=16, epochs=1, solver=solver, backend="numpy").fit(X, y)
    assert clf.history_.config.optimizer.name == solver
    assert clf.history_.config.lr == (0.05 if solver == "sgd" else 0.003)
    clf = SimpleNNClassifier(
        hidden=16, epochs=30, solver=solver, lr=0.01 if solver != "sgd" else None, backend="numpy"
    ).fit(X, y)
    assert clf.score(X, y) > 0.9


def test_an_unknown_solver_is_refused(iris):
    with pytest.raises(ValueError, match="solver must be one of sgd, adam, adamw"):
        SimpleNNClassifier(solver="lbfgs").fit(*iris)
