"""``python -m simplenn.evaluate MODEL.npz``: how good is a saved model on the test set?

Prints the test accuracy, per-class precision and recall and the confusion matrix;
``--plot DIR`` also draws the confusion matrix and the most confidently wrong digits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.inputs import to_host
from ..data.datasets import load_test_split
from . import common

PROG = common.invoked_as("simplenn.evaluate")


@dataclass
class Evaluation:
    """A model's predictions on one labelled split and what they add up to.

    ``probabilities`` (n, c) float, ``predicted`` and ``true`` (n,) int64,
    ``confusion`` (c, c) int64 with rows the true and columns the predicted label;
    ``precision`` and ``recall`` (c,) float64, NaN for a class never predicted /
    absent from the split.
    """

    probabilities: np.ndarray
    predicted: np.ndarray
    true: np.ndarray
    confusion: np.ndarray

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.confusion) / self.confusion.sum())

    @property
    def precision(self) -> np.ndarray:
        predicted_counts = self.confusion.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(
                predicted_counts > 0, np.diag(self.confusion) / predicted_counts, np.nan
            )

    @property
    def recall(self) -> np.ndarray:
        support = self.confusion.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(support > 0, np.diag(self.confusion) / support, np.nan)

    def most_confident_errors(self, k: int) -> np.ndarray:
        """Indices (≤ k,) of the misclassified rows, most confident prediction first."""
        wrong = np.flatnonzero(self.predicted != self.true)
        confidence = self.probabilities[wrong, self.predicted[wrong]]
        return wrong[np.argsort(-confidence, kind="stable")[:k]]


def evaluate(net, X: np.ndarray, y: np.ndarray) -> Evaluation:
    """Evaluate ``net`` on X (n, n_inputs) uint8 or float and labels y (n,) ints, arrays
    of any library (see :mod:`simplenn.core.inputs`)."""
    true = np.asarray(to_host(y, "y"), dtype=np.int64)
    if len(true) == 0:
        raise ValueError("cannot evaluate on an empty split")
    probabilities = net.predict_proba(X)
    predicted = probabilities.argmax(axis=1).astype(np.int64)
    c = net.n_classes
    confusion = np.bincount(true * c + predicted, minlength=c * c).reshape(c, c)
    return Evaluation(probabilities, predicted, true, confusion)


def _percent(value: float) -> str:
    return "    -" if np.isnan(value) else f"{100 * value:5.1f}%"


def format_report(ev: Evaluation) -> str:
    """Accuracy, per-class precision/recall/support and the confusion matrix, as text."""
    c = ev.confusion.shape[0]
    n = int(ev.confusion.sum())
    lines = [
        f"test accuracy: {100 * ev.accuracy:.2f}% ({int(np.trace(ev.confusion))}/{n})",
        "",
        "class  precision  recall  support",
    ]
    support = ev.confusion.sum(axis=1)
    for i in range(c):
        lines.append(
            f"{i:>5}     {_percent(ev.precision[i])}  {_percent(ev.recall[i])}  {support[i]:>7}"
        )
    width = max(4, len(str(ev.confusion.max())) + 1)
    lines += [
        "",
        "confusion matrix (rows: true label, columns: predicted label)",
        "true\\pred " + "".join(f"{j:>{width}}" for j in range(c)),
    ]
    for i in range(c):
        lines.append(f"{i:>9} " + "".join(f"{v:>{width}}" for v in ev.confusion[i]))
    return "\n".join(lines)


def build_parser() -> common.ArgumentParser:
    p = common.ArgumentParser(
        prog=PROG,
        description=(
            "Evaluate a saved model (or checkpoint) on the MNIST test set: accuracy, per-class "
            "precision and recall, confusion matrix."
        ),
    )
    p.add_argument(
        "model",
        type=Path,
        metavar="MODEL.npz",
        help="a model saved by python -m simplenn.train --save, or a checkpoint",
    )
    p.add_argument(
        "--backend",
        type=common.backend_name,
        default=None,
        help=f"{common.BACKEND_HELP} (default: $SIMPLENN_BACKEND, else numpy)",
    )
    p.add_argument(
        "--data-dir",
        type=common.existing_dir,
        default=None,
        help="directory with the MNIST-format test files, t10k-images-idx3-ubyte and "
        "t10k-labels-idx1-ubyte, each plain or .gz (default: the bundled MNIST)",
    )
    p.add_argument(
        "--plot",
        type=Path,
        default=None,
        metavar="DIR",
        help="also write confusion_matrix.png and confident_errors.png to DIR "
        "(created if missing; needs matplotlib: pip install matplotlib)",
    )
    p.add_argument(
        "--errors",
        type=common.positive_int,
        default=24,
        metavar="K",
        help="how many confidently wrong digits --plot shows (default 24)",
    )
    p.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return common.run_command(PROG, lambda: _evaluate(args), args.debug)


def _evaluate(args) -> int:
    from ..errors import DataError
    from ..io.models import load_model

    if args.plot is not None:
        from .plots import require_matplotlib

        require_matplotlib()
    net = load_model(args.model, backend=args.backend)
    test, source = load_test_split(args.data_dir)
    if test.n_features != net.n_inputs or (len(test) and test.y.max() >= net.n_classes):
        raise DataError(
            f"the test set in {source} ({test.n_features} pixels, labels up to "
            f"{test.y.max()}) does not fit model {args.model} ({net.n_inputs} inputs, "
            f"{net.n_classes} classes)"
        )
    ev = evaluate(net, test.X, test.y)
    print(f"model {args.model}: {net!r}, {source} test set, {len(test)} images")
    print(format_report(ev))
    if args.plot is not None:
        from ..io.models import ensure_directory
        from . import plots

        ensure_directory(args.plot, "--plot")
        written = [plots.plot_confusion_matrix(ev.confusion, args.plot / plots.CONFUSION_MATRIX)]
        idx = ev.most_confident_errors(args.errors)
        written.append(
            plots.plot_confident_errors(
                test.X[idx],
                ev.true[idx],
                ev.predicted[idx],
                ev.probabilities[idx, ev.predicted[idx]],
                args.plot / plots.CONFIDENT_ERRORS,
                image_shape=test.image_shape,
            )
        )
        print("wrote " + ", ".join(str(p) for p in written))
    return 0
