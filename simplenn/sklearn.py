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

import os
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

from .backends import ENV_VAR
from .core.callbacks import CallbackList, StopOnPlateau
from .core.inputs import host_or_as_given
from .core.model import TwoLayerNet
from .core.training import fit as _fit
from .io.backend_choice import loading_backend
from .optim import OPTIMIZERS, SGD, Optimizer

__all__ = ["EXPECTED_FAILED_CHECKS", "SimpleNNClassifier"]

#: The learning rate of ``solver="sgd"`` when ``lr`` is None.
DEFAULT_SGD_LR = 0.05

#: The checks of ``sklearn.utils.estimator_checks.check_estimator`` that
#: :class:`SimpleNNClassifier` is known to fail, with the reason: pass it as
#: ``check_estimator(SimpleNNClassifier(), expected_failed_checks=EXPECTED_FAILED_CHECKS)``.
EXPECTED_FAILED_CHECKS: dict[str, str] = {}

#: The share of the training set held out for early stopping when ``validation_fraction``
#: is None.
DEFAULT_EARLY_STOPPING_FRACTION = 0.1


class SimpleNNClassifier(ClassifierMixin, BaseEstimator):
    """A two-layer ReLU network (n_features → ``hidden`` → n_classes) with a softmax
    cross-entropy loss, trained by minibatch SGD with momentum (or Adam, AdamW: ``solver``)
    on any simplenn backend.

    The defaults suit small and medium tabular data sets (hundreds to tens of thousands
    of rows) whose features are standardized, e.g. by a ``StandardScaler`` in a
    pipeline; like any network, it trains poorly on features of very different or large
    scales (float features that are all whole numbers in 0..255 make simplenn warn with
    ``UnscaledPixelsWarning``). For MNIST-sized data, fewer epochs train as well in less
    time (``simplenn.fit`` trains MNIST with ``epochs=6, batch_size=128, lr=0.2``).

    The parameters and attributes that ``sklearn.neural_network.MLPClassifier`` also has
    mean what they mean there (``epochs`` is its ``max_iter``, ``hidden`` its
    ``hidden_layer_sizes``, ``lr`` its ``learning_rate_init``), except that early
    stopping watches the validation loss, not the validation accuracy.

    Parameters
    ----------
    hidden : int, default=100
        Width of the hidden layer.
    epochs : int, default=50
        Most passes over the training set; training stops sooner when the loss stops
        improving (``n_iter_no_change``, ``tol``).
    batch_size : int, default=32
        Rows per SGD step (the last step of an epoch may have fewer).
    solver : {"sgd", "adam", "adamw"}, default="sgd"
        The optimizer (:mod:`simplenn.optim`).
    lr : float or None, default=None
        Peak learning rate, scaled over the run by ``lr_schedule``; None means 0.05 for
        ``sgd`` and 0.003 for ``adam`` and ``adamw``.
    momentum : float, default=0.9
        Momentum of SGD, in [0, 1) (``solver="sgd"``).
    beta_1, beta_2 : float, default=0.9, 0.999
        Decay rates of Adam's moment estimates, in [0, 1) (``adam``, ``adamw``).
    epsilon : float, default=1e-8
        Adam's term added to the denominator, > 0 (``adam``, ``adamw``).
    weight_decay : float, default=1e-4
        Penalty on the weights ``W1`` and ``W2`` (not the biases): L2 for ``sgd`` and
        ``adam``, decoupled for ``adamw``.
    lr_schedule : {"cosine", "linear", "constant"}, default="cosine"
        How the learning rate goes from ``lr`` towards 0 over the ``epochs`` of a
        :meth:`fit` (:meth:`partial_fit` trains at the constant ``lr``).
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
        ``seed``) is held out of training and scored after every epoch
        (``validation_scores_``, and ``val_loss`` and ``val_accuracy`` in ``history_``).
        None holds out nothing, unless ``early_stopping`` is set: then 0.1.
    early_stopping : bool, default=False
        Stop when the validation loss has not improved by more than ``tol`` for
        ``n_iter_no_change`` epochs in a row, and keep the parameters of the epoch with
        the lowest validation loss (``history_.best_epoch``).
    n_iter_no_change : int, default=10
        Epochs without an improvement by more than ``tol`` that end :meth:`fit`: of the
        validation loss with ``early_stopping``, else of the training loss.
    tol : float, default=1e-4
        How much the watched loss must fall to count as an improvement (>= 0).
    augment : {"none", "affine", "elastic"}, default="none"
        Random distortions of the training images, drawn anew for every batch from
        ``seed`` (see ``simplenn.fit``); the features must be the pixels of square
        images (e.g. 784 = 28 x 28), in 0..255 as uint8 or in [0, 1] as floats.
    warm_start : bool, default=False
        :meth:`fit` trains the fitted network further (same features and classes)
        instead of a new one; ``loss_curve_`` and ``n_iter_`` go on counting.
    verbose : bool, default=False
        Print each epoch's losses to stdout, and why training stopped early.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels seen by ``fit`` (or given to the first ``partial_fit``),
        sorted; column ``j`` of :meth:`predict_proba` is the probability of
        ``classes_[j]``.
    n_features_in_ : int
        Number of features seen by ``fit``.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the features, when ``fit`` got a DataFrame with string column names.
    pixel_inputs_ : bool
        Whether the first ``fit`` got uint8 features. Those are read as pixel
        intensities and scaled by 1/255, as everywhere in simplenn; :meth:`predict` and
        :meth:`predict_proba` then scale their input the same way whatever its dtype.
        Features of any other dtype are used as they are.
    net_ : TwoLayerNet
        The trained network, predicting indices into ``classes_``.
    history_ : simplenn.History
        Statistics of the last ``fit`` or ``partial_fit`` call: one
        :class:`simplenn.EpochStats` per epoch in ``history_.epochs``,
        ``history_.best_epoch`` (with a validation set) and ``history_.stopped_by_callback``
        (whether ``n_iter_no_change`` ended it).
    loss_curve_ : list of float
        The mean training loss of every epoch trained, across ``warm_start`` fits and
        ``partial_fit`` calls.
    validation_scores_ : list of float or None
        The validation accuracy of every epoch trained with a validation set; None
        without one.
    best_loss_ : float or None
        The lowest training loss in ``loss_curve_``; None with ``early_stopping``.
    loss_ : float
        The training loss of the last epoch.
    n_iter_ : int
        Number of epochs trained, across ``warm_start`` fits and ``partial_fit`` calls.
    """

    def __init__(
        self,
        hidden: int = 100,
        *,
        epochs: int = 50,
        batch_size: int = 32,
        solver: str = "sgd",
        lr: float | None = None,
        momentum: float = 0.9,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        weight_decay: float = 1e-4,
        lr_schedule: str = "cosine",
        seed: int = 0,
        backend: str | None = None,
        dtype: str = "float32",
        validation_fraction: float | None = None,
        early_stopping: bool = False,
        n_iter_no_change: int = 10,
        tol: float = 1e-4,
        augment: str = "none",
        warm_start: bool = False,
        verbose: bool = False,
    ) -> None:
        self.hidden = hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.solver = solver
        self.lr = lr
        self.momentum = momentum
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.weight_decay = weight_decay
        self.lr_schedule = lr_schedule
        self.seed = seed
        self.backend = backend
        self.dtype = dtype
        self.validation_fraction = validation_fraction
        self.early_stopping = early_stopping
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.augment = augment
        self.warm_start = warm_start
        self.verbose = verbose

    def fit(self, X: Any, y: Any) -> SimpleNNClassifier:
        """Train a network on ``X`` and ``y`` (a new one, or with ``warm_start`` the
        fitted one further) for up to ``epochs`` epochs.

        ``X`` is array-like (n_samples, n_features) of numbers, of any array library
        (moved to the host): uint8 pixels (scaled by 1/255) or any other numeric dtype
        (cast to ``dtype``). ``y`` is array-like (n_samples,) of at least two distinct
        class labels of any kind (ints, strings, ...); with ``warm_start``, those of
        the first fit. Returns ``self``.

        Raises ValueError for invalid parameters or data (e.g. a single class), and
        :class:`simplenn.TrainingDivergedError` when the loss becomes NaN or infinite or explodes
        (a smaller ``lr`` helps); the estimator's fitted attributes are then left as
        they were, except ``n_features_in_``.
        """
        self._check_stopping_parameters()
        warm = bool(self.warm_start) and hasattr(self, "net_")
        X, y = host_or_as_given(X), host_or_as_given(y, "y")
        X, y = validate_data(self, X, y, dtype="numeric", reset=not warm)
        check_classification_targets(y)
        classes, y_index = np.unique(y, return_inverse=True)
        if warm:
            if not np.array_equal(classes, self.classes_):
                raise ValueError(
                    f"warm_start trains the fitted network further, on the classes of the "
                    f"first fit, {self.classes_.tolist()}, but y has {classes.tolist()}; set "
                    f"warm_start=False to fit a new network"
                )
            if (self.net_.n_hidden, self.net_.dtype.name) != (self.hidden, self.dtype):
                raise ValueError(
                    f"warm_start trains the fitted network further, of hidden="
                    f"{self.net_.n_hidden} and dtype={self.net_.dtype.name!r}, not hidden="
                    f"{self.hidden!r} and dtype={self.dtype!r}; set warm_start=False to fit "
                    f"a new network"
                )
            net, pixels = self.net_, self.pixel_inputs_
        else:
            if len(classes) < 2:
                raise ValueError(
                    f"{type(self).__name__} needs samples of at least 2 classes; the data "
                    f"has 1 class: {classes[0]!r}"
                )
            pixels = X.dtype == np.uint8
            net = self._new_network(X.shape[1], len(classes))
        validation_fraction = self.validation_fraction
        if validation_fraction is None and self.early_stopping:
            validation_fraction = DEFAULT_EARLY_STOPPING_FRACTION
        watch = StopOnPlateau(
            "val_loss" if self.early_stopping else "train_loss",
            patience=self.n_iter_no_change,
            tol=self.tol,
        )
        history = self._train(
            net,
            _network_inputs(X, net, pixels),
            y_index,
            epochs=self.epochs,
            lr_schedule=self.lr_schedule,
            seed=self.seed,
            validation_fraction=validation_fraction,
            early_stopping=self.n_iter_no_change if self.early_stopping else None,
            watch=watch,
        )
        if not warm:
            self._forget_training()
        self.classes_, self.pixel_inputs_, self.net_ = classes, pixels, net
        self._record(history)
        return self

    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> SimpleNNClassifier:
        """Train one epoch on ``X`` and ``y`` at the constant learning rate ``lr``,
        starting from the fitted network (a new one on the first call).

        ``classes`` (every label that any call will see) is required on the first call
        and may be left out later; ``y`` holds labels from it. ``X`` is as for
        :meth:`fit`, with the features of the first call. No validation set is held out
        and nothing stops early; the momentum starts from zero in each call. Returns
        ``self``.
        """
        first = not hasattr(self, "classes_")
        X, y = host_or_as_given(X), host_or_as_given(y, "y")
        X, y = validate_data(self, X, y, dtype="numeric", reset=first)
        check_classification_targets(y)
        if classes is not None:
            classes = np.unique(host_or_as_given(classes, "classes"))
            if not first and not np.array_equal(classes, self.classes_):
                raise ValueError(
                    f"classes={classes.tolist()} differs from the classes of the "
                    f"first call, {self.classes_.tolist()}"
                )
        elif first:
            raise ValueError(
                "classes must be passed on the first call to partial_fit: "
                "every label any call will see, e.g. np.unique(y_all)"
            )
        else:
            classes = self.classes_
        if first and len(classes) < 2:
            raise ValueError(
                f"{type(self).__name__} needs at least 2 classes, not classes={classes.tolist()}"
            )
        unknown = np.setdiff1d(y, classes)
        if unknown.size:
            raise ValueError(
                f"y holds labels not in classes {classes.tolist()}: {unknown[:5].tolist()}"
            )
        y_index = np.searchsorted(classes, y)
        if first:
            pixels = X.dtype == np.uint8
            net = self._new_network(X.shape[1], len(classes))
        else:
            net, pixels = self.net_, self.pixel_inputs_
        history = self._train(
            net,
            _network_inputs(X, net, pixels),
            y_index,
            epochs=1,
            lr_schedule="constant",
            seed=self.seed + (0 if first else self.n_iter_),
            validation_fraction=None,
            early_stopping=None,
            watch=None,
        )
        if first:
            self._forget_training()
        self.classes_, self.pixel_inputs_, self.net_ = classes, pixels, net
        self._record(history)
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (n_samples, n_classes) in the network's dtype, columns in
        ``classes_`` order, rows summing to 1, for ``X`` array-like (n_samples,
        n_features_in_) of numbers, of any array library; a NumPy array."""
        check_is_fitted(self)
        X = validate_data(self, host_or_as_given(X), dtype="numeric", reset=False)
        return self.net_.predict_proba(_network_inputs(X, self.net_, self.pixel_inputs_))

    def predict(self, X: Any) -> np.ndarray:
        """Predicted labels (n_samples,) taken from ``classes_`` (so of its dtype), for
        ``X`` array-like (n_samples, n_features_in_) of numbers, of any array library;
        a NumPy array."""
        check_is_fitted(self)
        X = validate_data(self, host_or_as_given(X), dtype="numeric", reset=False)
        index = self.net_.predict(_network_inputs(X, self.net_, self.pixel_inputs_))
        return self.classes_[index]

    # -- training ------------------------------------------------------------------------

    def _check_stopping_parameters(self) -> None:
        for name in ("early_stopping", "warm_start"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                # scikit-learn reports a bad parameter as a ValueError
                raise ValueError(  # noqa: TRY004
                    f"{name} must be True or False, not {getattr(self, name)!r}"
                )
        n = self.n_iter_no_change
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n_iter_no_change must be a positive integer, not {n!r}")
        tol = self.tol
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 <= tol < np.inf:
            raise ValueError(f"tol must be a finite number >= 0, not {tol!r}")

    def _new_network(self, n_features: int, n_classes: int) -> TwoLayerNet:
        return TwoLayerNet(
            n_features,
            self.hidden,
            n_classes,
            backend=self.backend,
            dtype=self.dtype,
            seed=self.seed,
        )

    def _train(
        self,
        net: TwoLayerNet,
        X: np.ndarray,
        y_index: np.ndarray,
        *,
        epochs: int,
        lr_schedule: str,
        seed: int,
        validation_fraction: float | None,
        early_stopping: int | None,
        watch: StopOnPlateau | None,
    ) -> Any:
        """``simplenn.fit`` of ``net`` on the checked data, stopped by ``watch`` (None:
        never early), printing each epoch with ``verbose``."""
        done = getattr(self, "n_iter_", 0) if net is getattr(self, "net_", None) else 0
        return _fit(
            net,
            (X, y_index.astype(np.int64)),
            epochs=epochs,
            batch_size=self.batch_size,
            lr=self._lr(),
            optimizer=self._optimizer(),
            lr_schedule=lr_schedule,
            seed=seed,
            validation_fraction=validation_fraction,
            early_stopping=early_stopping,
            augment=self.augment,
            eval_train=False,
            progress=False,
            interruptible=False,
            on_epoch_end=CallbackList(watch, _Printer(done, watch) if self.verbose else None),
        )

    def _optimizer(self) -> Optimizer:
        """The optimizer ``solver`` and its hyperparameters name."""
        if self.solver not in OPTIMIZERS:
            raise ValueError(f"solver must be one of {', '.join(OPTIMIZERS)}, not {self.solver!r}")
        if self.solver == "sgd":
            return SGD(momentum=self.momentum, weight_decay=self.weight_decay)
        return OPTIMIZERS[self.solver](
            beta1=self.beta_1, beta2=self.beta_2, eps=self.epsilon, weight_decay=self.weight_decay
        )

    def _lr(self) -> float:
        """``lr``, or the solver's default for this estimator."""
        if self.lr is not None:
            return self.lr
        return (
            DEFAULT_SGD_LR
            if self.solver == "sgd"
            else self._optimizer().default_lr(self.batch_size)
        )

    def _forget_training(self) -> None:
        """Start the curves anew (a new network)."""
        self.loss_curve_, self.validation_scores_, self.n_iter_ = [], None, 0

    def _record(self, history: Any) -> None:
        """Add a training call's epochs to the curves."""
        epochs = history.epochs
        self.history_ = history
        self.loss_curve_ = [*self.loss_curve_, *(e.train_loss for e in epochs)]
        scores = [e.val_accuracy for e in epochs if e.val_accuracy is not None]
        if scores:
            self.validation_scores_ = [*(self.validation_scores_ or []), *scores]
        self.n_iter_ += len(epochs)
        self.loss_ = self.loss_curve_[-1]
        self.best_loss_ = None if self.early_stopping else min(self.loss_curve_)

    # -- ONNX: skl2onnx's converter protocol ---------------------------------------------

    def onnx_shape_calculator(self) -> Any:
        """The shape calculator skl2onnx uses for this estimator
        (:mod:`simplenn.io.skl2onnx_converter`): ``skl2onnx.to_onnx`` converts it, or a
        pipeline ending in it, with nothing registered first."""
        from .io.skl2onnx_converter import shape_calculator

        return shape_calculator

    def onnx_converter(self) -> Any:
        """The converter skl2onnx uses for this estimator: the graph of
        :mod:`simplenn.io.skl2onnx_converter`, with ``classes_`` as the labels."""
        from .io.skl2onnx_converter import converter

        return converter

    # -- pickling ------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        """The estimator's state with ``net_`` as plain data: its sizes, dtype, seed,
        NumPy parameters and, as information, the backend it was trained on (a
        backend's objects need not pickle, nor its library be installed where the
        estimator is loaded)."""
        state = dict(super().__getstate__())
        net = state.get("net_")
        if isinstance(net, TwoLayerNet):
            state["net_"] = {
                "trained_backend": net.backend,
                "dtype": net.dtype.name,
                "sizes": (net.n_inputs, net.n_hidden, net.n_classes),
                "seed": net.seed,
                "parameters": net.parameters(),
            }
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`__getstate__` state, rebuilding ``net_`` on
        ``$SIMPLENN_BACKEND`` when set, else on the backend it was trained on when that
        can run here, else on the best backend that does, with a one-line
        :class:`simplenn.BackendFallbackWarning`."""
        net = state.get("net_")
        if isinstance(net, dict):
            state = dict(state)
            trained = net.get("trained_backend", net.get("backend"))
            backend = loading_backend(
                trained,
                os.environ.get(ENV_VAR, "").strip() or "auto",
                what=f"this {type(self).__name__}",
                choose=f"set ${ENV_VAR}",
            )
            state["net_"] = rebuilt = TwoLayerNet(
                *net["sizes"], backend=backend, dtype=net["dtype"], seed=net["seed"]
            )
            rebuilt.set_parameters(net["parameters"])
        super().__setstate__(state)


class _Printer:
    """``verbose``: one line per epoch (numbered from ``done`` + 1) and, when ``watch``
    stops the run, why."""

    def __init__(self, done: int, watch: StopOnPlateau | None) -> None:
        self.done, self.watch = done, watch

    def __call__(self, stats: Any) -> None:
        line = f"Epoch {self.done + stats.epoch}, loss = {stats.train_loss:.8f}"
        if stats.val_loss is not None:
            line += (
                f", validation loss = {stats.val_loss:.8f}, validation accuracy = "
                f"{stats.val_accuracy:.4f}"
            )
        print(line)
        watch = self.watch
        if watch is not None and watch.epochs_without_improvement >= watch.patience:
            loss = "Validation" if watch.metric == "val_loss" else "Training"
            print(
                f"{loss} loss did not improve more than tol={watch.tol:g} for "
                f"{watch.patience} consecutive epochs. Stopping."
            )


def _network_inputs(X: np.ndarray, net: TwoLayerNet, pixels: bool) -> np.ndarray:
    """Checked numeric X (n, d) -> what ``net`` takes. For an estimator fitted on uint8
    ``pixels``: uint8 X as it is (the net scales it by 1/255), any other dtype as floats
    of the net's dtype divided by 255; otherwise C-contiguous floats of the net's dtype."""
    if pixels and X.dtype == np.uint8:
        return np.ascontiguousarray(X)
    floats = np.ascontiguousarray(X, dtype=net.dtype)
    return floats / net.dtype.type(255) if pixels else floats
