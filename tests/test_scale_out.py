"""docs/scale-out.md: a hyperparameter search of SimpleNNClassifier on a Dask cluster
(a LocalCluster of two worker processes here) through joblib's dask backend, with the
workers' Numba cache directory set, gives the search that runs in this process."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="scikit-learn is not installed (the test extra has it)")
distributed = pytest.importorskip(
    "distributed",
    reason="dask[distributed] is not installed (the test extra has it: "
    "pip install '.[test]' from the checkout)",
)

import joblib
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV

from simplenn.sklearn import SimpleNNClassifier

GRID = {"hidden": [8, 16], "lr": [0.05, 0.1]}


def _search() -> GridSearchCV:
    X, y = load_digits(return_X_y=True)
    estimator = SimpleNNClassifier(epochs=2, batch_size=64, backend="numpy")
    return GridSearchCV(estimator, GRID, cv=2, n_jobs=-1), X[:400] / 16, y[:400]


def test_grid_search_on_a_local_dask_cluster(tmp_path):
    cache = tmp_path / "numba-cache"
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            env={"NUMBA_CACHE_DIR": str(cache)},
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        environments = client.run(lambda: __import__("os").environ.get("NUMBA_CACHE_DIR"))
        addresses = set(client.scheduler_info()["workers"])
        with distributed.get_task_stream(client) as tasks, joblib.parallel_backend("dask"):
            search, X, y = _search()
            search.fit(X, y)
    assert len(environments) == 2 and set(environments.values()) == {str(cache)}
    assert len(addresses) == 2
    assert len(tasks.data) >= len(GRID["hidden"]) * len(GRID["lr"]) * 2  # 4 settings x 2 folds
    assert {t["worker"] for t in tasks.data} <= addresses

    here, X, y = _search()
    here.set_params(n_jobs=1).fit(X, y)
    np.testing.assert_array_equal(
        search.cv_results_["mean_test_score"], here.cv_results_["mean_test_score"]
    )
    assert search.best_params_ == here.best_params_
    np.testing.assert_array_equal(search.predict(X), here.predict(X))
