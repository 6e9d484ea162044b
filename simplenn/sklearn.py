"""A scikit-learn classifier around :class:`~simplenn.TwoLayerNet` and :func:`~simplenn.fit`.

:class:`SimpleNNClassifier` follows scikit-learn's estimator conventions, so it works in
pipelines, grid searches and cross-validation::

    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from simplenn.sklearn import SimpleNNClassifier

    clf = make_pipeline(StandardScaler(), SimpleNNClassifier()).fit(X_train, y_train)
    clf.score(X_test, y_test)

This module imports scikit-learn (the ``sklearn`` extra); ``import simplenn`` does not
import it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as exc:
    from ._optional import MissingDependencyError

    raise MissingDependencyError(
        f"simplenn.sklearn needs scikit-learn, which is not installed ({exc}); install it "
        "with pip install scikit-learn (from a simplenn checkout: pip install '.[sklearn]')"
    ) from None

from .core.inputs import host_or_as_given
from .core.model import TwoLayerNet
from .core.training import fit as _fit

__all__ = ["EXPECTED_FAILED_CHECKS", "SimpleNNClassifier"]

#: The checks of ``sklearn.utils.estimator_checks.check_estimator`` that
#: :class:`SimpleNNClassifier` is known to fail, with the reason: pass it as
#: ``check_estimator(SimpleNNClassifier(), expected_failed_checks=EXPECTED_FAILED_CHECKS)``.
EXPECTED_FAILED_CHECKS: dict[str, str] = {}

#: The share of the training set held out for early stopping when ``validation_fraction``
#: is None.
DEFAULT_EARLY_STOPPING_FRACTION = 0.1


class SimpleNNClassifier(ClassifierMixin, BaseEstimator):
    """A two-layer ReLU network (n_features → ``hidden`` → n_classes) with a softmax
    cross-entropy loss, trained by minibatch SGD with momentum on any simplenn backend.

    The defaults suit small and medium tabular data sets (hundreds to tens of thousands
    of rows) whose features are standardized, e.g. by a ``StandardScaler`` in a
    pipeline; like any network, it trains poorly on features of very different or large
    scales (float features that are all whole numbers in 0..255 make simplenn warn with
    ``UnscaledPixelsWarning``). For MNIST-sized data, fewer epochs train as well in less
    time (``simplenn.fit`` trains MNIST with ``epochs=6, batch_size=128, lr=0.2``).

    Parameters
    ----------
    hidden : int, default=100
        Width of the hidden layer.
    epochs : int, default=50
        Passes over the training set. With ``early_stopping`` training may stop sooner.
    batch_size : int, default=32
        Rows per SGD step (the last step of an epoch may have fewer).
    lr : float, default=0.05
        Peak learning rate, scaled over the run by ``lr_schedule``.
    momentum : float, default=0.9
        Momentum of SGD, in [0, 1).
    weight_decay : float, default=1e-4
        L2 penalty on the weights ``W1`` and ``W2`` (not the biases).
    lr_schedule : {"cosine", "linear", "constant"}, default="cosine"
        How the learning rate goes from ``lr`` towards 0 over the run.
    seed : int, default=0
        Seeds the initial weights, the shuffling of every epoch and the validation
        split, so equal seeds give equal models on every backend.
    backend : str or None, default=None
        A simplenn backend name (``"numpy"``, ``"numba"``, ``"torch"``, ``"jax"``,
        ``"cupy"``, ``"auto"``, ...); None means ``$SIMPLENN_BACKEND``, else ``"numpy"``.
    dtype : {"float32", "float64"}, default="float32"
        Floating-point type of the parameters and of the computation.
    validation_fraction : float in (0, 1) or None, default=None
        This fraction of the training rows (a split stratified by class, seeded by
        ``seed``) is held out of training and scored after every epoch: the
        ``val_loss`` and ``val_accuracy`` of the epochs in ``history_``. None holds out
        nothing, unless ``early_stopping`` is set: then 0.1.
    early_stopping : int or None, default=None
        Patience: stop when the validation loss has not improved for this many epochs,
        and keep the parameters of the epoch with the lowest validation loss
        (``history_.best_epoch``). None trains every epoch and keeps the last.
    augment : {"none", "affine", "elastic"}, default="none"
        Random distortions of the training images, drawn anew for every batch from
        ``seed`` (see ``simplenn.fit``); the features must be the pixels of square
        images (e.g. 784 = 28 x 28), in 0..255 as uint8 or in [0, 1] as floats.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels seen by ``fit``, sorted (``np.unique``); column ``j`` of
        :meth:`predict_proba` is the probability of ``classes_[j]``.
    n_features_in_ : int
        Number of features seen by ``fit``.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the features, when ``fit`` got a DataFrame with string column names.
    pixel_inputs_ : bool
        Whether ``fit`` got uint8 features. Those are read as pixel intensities and
        scaled by 1/255, as everywhere in simplenn; :meth:`predict` and
        :meth:`predict_proba` then scale their input the same way whatever its dtype.
        Features of any other dtype are used as they are.
    net_ : TwoLayerNet
        The trained network, predicting indices into ``classes_``.
    history_ : simplenn.History
        Statistics of the training run: ``history_.epochs`` holds one
        :class:`simplenn.EpochStats` per epoch (``train_loss``; with a validation set
        ``val_loss`` and ``val_accuracy``), ``history_.best_epoch`` the epoch of the
        lowest validation loss and ``history_.stopped_early`` whether early stopping
        ended the run.
    n_iter_ : int
        Number of epochs trained (fewer than ``epochs`` when early stopping ended the run).
    """

    def __init__(
        self,
        hidden: int = 100,
        *,
        epochs: int = 50,
        batch_size: int = 32,
        lr: float = 0.05,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        lr_schedule: str = "cosine",
        seed: int = 0,
        backend: str | None = None,
        dtype: str = "float32",
        validation_fraction: float | None = None,
        early_stopping: int | None = None,
        augment: str = "none",
    ) -> None:
        self.hidden = hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.lr_schedule = lr_schedule
        self.seed = seed
        self.backend = backend
        self.dtype = dtype
        self.validation_fraction = validation_fraction
        self.early_stopping = early_stopping
        self.augment = augment

    def fit(self, X: Any, y: Any) -> SimpleNNClassifier:
        """Train a new network on ``X`` and ``y``.

        ``X`` is array-like (n_samples, n_features) of numbers: uint8 pixels (scaled by
        1/255) or any other numeric dtype (cast to ``dtype``). ``y`` is array-like
        (n_samples,) of at least two distinct class labels of any kind (ints, strings,
        ...). Returns ``self``.

        Raises ValueError for invalid parameters or data (e.g. a single class), and
        :class:`simplenn.TrainingDivergedError` when the loss becomes NaN or infinite or explodes
        (a smaller ``lr`` helps); the estimator's fitted attributes are then left as
        they were, except ``n_features_in_``.
        """
        X, y = host_or_as_given(X), host_or_as_given(y, "y")
        X, y = validate_data(self, X, y, dtype="numeric")
        check_classification_targets(y)
        classes, y_index = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(
                f"{type(self).__name__} needs samples of at least 2 classes; the data "
                f"has 1 class: {classes[0]!r}")
        pixels = X.dtype == np.uint8
        net = TwoLayerNet(X.shape[1], self.hidden, len(classes), backend=self.backend,
                          dtype=self.dtype, seed=self.seed)
        validation_fraction = self.validation_fraction
        if validation_fraction is None and self.early_stopping is not None:
            validation_fraction = DEFAULT_EARLY_STOPPING_FRACTION
        history = _fit(
            net, (_network_inputs(X, net, pixels), y_index.astype(np.int64)),
            epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
            momentum=self.momentum, weight_decay=self.weight_decay,
            lr_schedule=self.lr_schedule, seed=self.seed,
            validation_fraction=validation_fraction, early_stopping=self.early_stopping,
            augment=self.augment, eval_train=False, progress=False, interruptible=False)
        self.classes_, self.pixel_inputs_ = classes, pixels
        self.net_, self.history_, self.n_iter_ = net, history, len(history.epochs)
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (n_samples, n_classes) in the network's dtype, columns in
        ``classes_`` order, rows summing to 1, for ``X`` array-like (n_samples,
        n_features_in_) of numbers."""
        check_is_fitted(self)
        X = validate_data(self, host_or_as_given(X), dtype="numeric", reset=False)
        return self.net_.predict_proba(_network_inputs(X, self.net_, self.pixel_inputs_))

    def predict(self, X: Any) -> np.ndarray:
        """Predicted labels (n_samples,) taken from ``classes_`` (so of its dtype), for
        ``X`` array-like (n_samples, n_features_in_) of numbers."""
        check_is_fitted(self)
        X = validate_data(self, host_or_as_given(X), dtype="numeric", reset=False)
        index = self.net_.predict(_network_inputs(X, self.net_, self.pixel_inputs_))
        return self.classes_[index]

    def __getstate__(self) -> dict[str, Any]:
        """The estimator's state with ``net_`` as plain data (its backend name, dtype,
        sizes, seed and NumPy parameters), since a backend's objects need not pickle."""
        state = dict(super().__getstate__())
        net = state.get("net_")
        if isinstance(net, TwoLayerNet):
            state["net_"] = {"backend": net.backend, "dtype": net.dtype.name,
                             "sizes": (net.n_inputs, net.n_hidden, net.n_classes),
                             "seed": net.seed, "parameters": net.parameters()}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`__getstate__` state, rebuilding ``net_`` on its backend."""
        net = state.get("net_")
        if isinstance(net, dict):
            state = dict(state)
            state["net_"] = rebuilt = TwoLayerNet(*net["sizes"], backend=net["backend"],
                                                  dtype=net["dtype"], seed=net["seed"])
            rebuilt.set_parameters(net["parameters"])
        super().__setstate__(state)


def _network_inputs(X: np.ndarray, net: TwoLayerNet, pixels: bool) -> np.ndarray:
    """Checked numeric X (n, d) -> what ``net`` takes. For an estimator fitted on uint8
    ``pixels``: uint8 X as it is (the net scales it by 1/255), any other dtype as floats
    of the net's dtype divided by 255; otherwise C-contiguous floats of the net's dtype."""
    if pixels and X.dtype == np.uint8:
        return np.ascontiguousarray(X)
    floats = np.ascontiguousarray(X, dtype=net.dtype)
    return floats / net.dtype.type(255) if pixels else floats
