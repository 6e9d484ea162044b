"""What a run's labels say before it trains: warnings for data that trains to nonsense."""

from __future__ import annotations

from typing import Any

import numpy as np

from .inputs import warn_from_caller


class LabelWarning(UserWarning):
    """Labels that cannot train a useful classifier: a training set of one class, or
    test labels the training set never shows."""


def warn_about_labels(y_train: np.ndarray, y_test: np.ndarray | None) -> None:
    """One :class:`LabelWarning` for a training set whose labels ``y_train`` (n,) are all
    one class, else one for test labels ``y_test`` (m,) (None: no test set) that never
    appear in training. Both are NumPy integer arrays of checked labels."""
    trained = np.unique(np.asarray(y_train))
    if trained.size == 1:
        only = int(trained[0])
        warn_from_caller(
            f"the training set holds a single class (label {only}): the network "
            f"can only learn to answer {only} for every image",
            LabelWarning,
        )
    elif y_test is not None and np.asarray(y_test).size:
        unseen = np.setdiff1d(np.unique(np.asarray(y_test)), trained)
        if unseen.size:
            warn_from_caller(
                f"the test set holds labels the training set never shows "
                f"({_listed(unseen)}): the network cannot learn to answer them",
                LabelWarning,
            )


def _listed(labels: Any) -> str:
    return ", ".join(str(int(v)) for v in labels)
