"""SimpleNNClassifier on par with MLPClassifier: partial_fit, warm_start, loss_curve_,
validation_scores_, best_loss_, n_iter_, n_iter_no_change and tol, verbose."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip(
    "sklearn",
    reason="simplenn.sklearn needs scikit-learn: pip install scikit-learn (or '.[sklearn]')",
)

from sklearn.datasets import load_iris
from sklearn.preprocessing import StandardScaler

from simplenn.sklearn import SimpleNNClassifier

pytestmark = pytest.mark.usefixtures("one_blas_thread")


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return StandardScaler().fit_transform(X), y


@pytest.fixture(scope="module")
def noise():
    """Labels that do not depend on the features: the validation loss soon rises."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((300, 8))
    return X, rng.integers(0, 2, 300)


# -- partial_fit ---------------------------------------------------------------------------


def test_partial_fit_needs_classes_on_the_first_call(iris):
    X, y = iris
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        SimpleNNClassifier().partial_fit(X, y)


def test_partial_fit_trains_one_epoch_a_call_and_learns(iris):
    X, y = iris
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    rng = np.random.default_rng(0)
    clf = SimpleNNClassifier(hidden=16)
    for call in range(30):
        rows = rng.choice(len(X), 50, replace=False)
        clf.partial_fit(X[rows], names[rows], classes=np.unique(names) if call == 0 else None)
        assert clf.n_iter_ == call + 1 and len(clf.loss_curve_) == call + 1
    assert list(clf.classes_) == ["setosa", "versicolor", "virginica"]
    assert clf.score(X, names) > 0.85
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]
    assert clf.history_.config.lr_schedule == "constant"


def test_partial_fit_takes_a_subset_of_the_classes_and_refuses_others(iris):
    X, y = iris
    clf = SimpleNNClassifier(hidden=8).partial_fit(X[y == 0], y[y == 0], classes=[0, 1, 2])
    assert list(clf.classes_) == [0, 1, 2] and clf.predict_proba(X).shape == (150, 3)
    with pytest.raises(ValueError, match=r"labels not in classes \[0, 1, 2\]: \[7\]"):
        clf.partial_fit(X[:3], [0, 1, 7])
    with pytest.raises(ValueError, match="differs from the classes of the first call"):
        clf.partial_fit(X, y, classes=[0, 1])
    with pytest.raises(ValueError, match="features"):
        clf.partial_fit(X[:, :3], y)


def test_partial_fit_continues_a_fitted_estimator(iris):
    X, y = iris
    clf = SimpleNNClassifier(hidden=8, epochs=4).fit(X, y)
    before = clf.net_.parameters()["W1"]
    clf.partial_fit(X, y)
    assert clf.n_iter_ == 5 and len(clf.loss_curve_) == 5
    assert not np.array_equal(clf.net_.parameters()["W1"], before)


# -- warm_start ----------------------------------------------------------------------------


def test_warm_start_trains_the_fitted_network_further(iris):
    X, y = iris
    clf = SimpleNNClassifier(hidden=8, epochs=4, warm_start=True).fit(X, y)
    first = clf.net_.parameters()["W1"]
    first_curve = list(clf.loss_curve_)
    clf.fit(X, y)
    assert clf.n_iter_ == 8 and clf.loss_curve_[:4] == first_curve
    assert clf.loss_curve_[4] < first_curve[0]  # it went on from the trained network
    assert not np.array_equal(clf.net_.parameters()["W1"], first)

    cold = SimpleNNClassifier(hidden=8, epochs=4).fit(X, y)
    cold.fit(X, y)
    assert cold.n_iter_ == 4 and len(cold.loss_curve_) == 4
    np.testing.assert_array_equal(cold.net_.parameters()["W1"], first)


def test_warm_start_refuses_other_classes_or_another_network(iris):
    X, y = iris
    clf = SimpleNNClassifier(hidden=8, epochs=2, warm_start=True).fit(X, y)
    with pytest.raises(ValueError, match="classes of the first fit"):
        clf.fit(X[y < 2], y[y < 2])
    with pytest.raises(ValueError, match="hidden=8"):
        clf.set_params(hidden=9).fit(X, y)


# -- the curves ----------------------------------------------------------------------------


def test_loss_curve_and_best_loss_without_validation(iris):
    X, y = iris
    clf = SimpleNNClassifier(hidden=8, epochs=6).fit(X, y)
    assert clf.loss_curve_ == [e.train_loss for e in clf.history_.epochs]
    assert clf.best_loss_ == min(clf.loss_curve_) and clf.loss_ == clf.loss_curve_[-1]
    assert clf.validation_scores_ is None


def test_validation_scores_are_the_validation_accuracies(iris):
    X, y = iris
    clf = SimpleNNClassifier(hidden=8, epochs=5, validation_fraction=0.2).fit(X, y)
    assert clf.validation_scores_ == [e.val_accuracy for e in clf.history_.epochs]
    assert len(clf.validation_scores_) == 5
    stopping = SimpleNNClassifier(hidden=8, epochs=5, early_stopping=True).fit(X, y)
    assert stopping.best_loss_ is None and len(stopping.validation_scores_) == 5


# -- n_iter_no_change and tol --------------------------------------------------------------


@pytest.mark.parametrize("early_stopping", [False, True])
def test_a_large_tol_stops_after_n_iter_no_change_epochs(noise, early_stopping):
    """No epoch improves the watched loss by more than tol=10: the run stops once
    n_iter_no_change epochs after the first have not."""
    X, y = noise
    clf = SimpleNNClassifier(
        hidden=8, epochs=30, n_iter_no_change=4, tol=10.0, early_stopping=early_stopping
    ).fit(X, y)
    assert clf.n_iter_ == 5 and clf.history_.stopped_by_callback


def test_training_loss_plateau_stops_early_like_mlpclassifier(noise):
    """tol=0 on the training loss: training ends once it has not fallen for
    n_iter_no_change epochs, with the epochs before that in loss_curve_."""
    X, y = noise
    clf = SimpleNNClassifier(
        hidden=4, epochs=200, lr=0.5, lr_schedule="constant", n_iter_no_change=2, tol=0.0
    ).fit(X, y)
    curve = clf.loss_curve_
    assert clf.n_iter_ < 200 and clf.history_.stopped_by_callback
    assert min(curve[-2:]) >= min(curve[:-2])


def test_early_stopping_with_tol_keeps_the_best_epoch(noise):
    X, y = noise
    clf = SimpleNNClassifier(
        hidden=64, epochs=60, lr=0.1, early_stopping=True, n_iter_no_change=3, tol=0.01, seed=2
    ).fit(X, y)
    history = clf.history_
    losses = [e.val_loss for e in history.epochs]
    assert clf.n_iter_ < 60 and history.best_epoch == 1 + int(np.argmin(losses))


# -- verbose -------------------------------------------------------------------------------


def test_verbose_prints_every_epoch_and_why_it_stopped(noise, capsys):
    X, y = noise
    SimpleNNClassifier(hidden=8, epochs=3).fit(X, y)
    assert capsys.readouterr().out == ""
    clf = SimpleNNClassifier(hidden=8, epochs=30, n_iter_no_change=2, tol=10.0, verbose=True).fit(
        X, y
    )
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in lines[:-1]] == [
        f"Epoch {i}" for i in range(1, clf.n_iter_ + 1)
    ]
    assert "loss = " in lines[0]
    assert lines[-1] == (
        "Training loss did not improve more than tol=10 for 2 consecutive epochs. Stopping."
    )
