"""``python -m simplenn.train``: train the two-layer network on MNIST.

With no flags it trains on the MNIST copy bundled with the package on the best
backend that runs here and prints the final test accuracy as its last line.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from . import _cli
from .network import DEFAULT_HIDDEN
from .backends import BACKEND_NAMES, available_backends, default_backend_name
from .training import LR_SCHEDULES, EpochStats, TrainConfig

PROG = "python -m simplenn.train"


def build_parser() -> _cli.ArgumentParser:
    d = TrainConfig()
    p = _cli.ArgumentParser(prog=PROG, description=(
        "Train the 784-hidden-10 ReLU network by minibatch SGD with momentum on MNIST "
        "(the bundled copy, or --data-dir) and report test accuracy."))
    p.add_argument("--backend", choices=("auto",) + BACKEND_NAMES, default=None,
                   help="array backend (default: $SIMPLENN_BACKEND, else auto: cupy when a "
                        "CUDA GPU works, else numba when installed, else numpy)")
    p.add_argument("--epochs", type=_cli.positive_int, default=d.epochs,
                   help=f"passes over the training set (default {d.epochs})")
    p.add_argument("--batch-size", type=_cli.positive_int, default=d.batch_size,
                   help=f"minibatch size (default {d.batch_size})")
    p.add_argument("--hidden", type=_cli.positive_int, default=DEFAULT_HIDDEN,
                   help=f"hidden units (default {DEFAULT_HIDDEN})")
    p.add_argument("--lr", type=_cli.positive_float, default=d.lr,
                   help=f"peak learning rate (default {d.lr})")
    p.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=d.lr_schedule,
                   help=f"learning-rate decay over the run (default {d.lr_schedule})")
    p.add_argument("--momentum", type=_cli.unit_interval, default=d.momentum,
                   help=f"SGD momentum in [0, 1) (default {d.momentum})")
    p.add_argument("--weight-decay", type=_cli.nonnegative_float, default=d.weight_decay,
                   help=f"L2 weight decay on W1 and W2 (default {d.weight_decay})")
    p.add_argument("--seed", type=int, default=d.seed,
                   help=f"seed for initialisation and shuffling (default {d.seed})")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="floating-point precision (default float32)")
    p.add_argument("--data-dir", type=_cli.existing_dir, default=None,
                   help="directory with the four MNIST-format IDX files (train-images-idx3-ubyte, "
                        "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, "
                        "each optionally .gz); default: the bundled MNIST")
    p.add_argument("--save", type=Path, default=None, metavar="PATH",
                   help="write the trained model to PATH (.npz)")
    p.add_argument("--metrics-out", type=Path, default=None, metavar="PATH",
                   help="write the per-epoch history and final test accuracy to PATH (JSON)")
    p.add_argument("--list-backends", action="store_true",
                   help="list every backend, whether it can run here and why not, then exit")
    p.add_argument("--quiet", action="store_true",
                   help="print only the final test accuracy (no progress bar or epoch lines)")
    p.add_argument("--debug", action="store_true",
                   help="show full tracebacks for errors")
    return p


def list_backends() -> int:
    for info in available_backends():
        print(info.describe())
    return 0


def _check_output_path(parser: _cli.ArgumentParser, flag: str, path: Path | None) -> None:
    if path is not None and not path.parent.is_dir():
        parser.error(f"argument {flag}: directory {str(path.parent)!r} does not exist")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_output_path(parser, "--save", args.save)
    _check_output_path(parser, "--metrics-out", args.metrics_out)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(message)s", stream=sys.stderr)
    return _cli.run_command(PROG, lambda: _train(args), args.debug)


def _train(args) -> int:
    if args.list_backends:
        return list_backends()
    import simplenn

    say = (lambda *a: None) if args.quiet else print
    backend = args.backend or default_backend_name("auto")
    net = simplenn.TwoLayerNet(784, args.hidden, 10, backend=backend, dtype=args.dtype,
                               seed=args.seed)
    if args.data_dir is None:
        train, test = simplenn.load_mnist()
        source = "bundled MNIST"
    else:
        train, test = simplenn.load_idx_dataset(args.data_dir)
        source = str(args.data_dir)
    if train.n_features != net.n_inputs or test.n_features != net.n_inputs:
        net = simplenn.TwoLayerNet(train.n_features, args.hidden, 10, backend=net.ops,
                                   dtype=args.dtype, seed=args.seed)
    say(f"training {net!r} on {source}: {len(train)} train / {len(test)} test images")

    def report(s: EpochStats) -> None:
        say(f"epoch {s.epoch:>2}/{args.epochs}  loss {s.train_loss:.4f}  "
            f"train {100 * s.train_accuracy:.2f}%  test {100 * s.test_accuracy:.2f}%  "
            f"lr {s.lr:.4f}  {s.seconds:.2f}s ({s.samples_per_second:,.0f} img/s)")

    history = simplenn.fit(
        net, train, test, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        momentum=args.momentum, weight_decay=args.weight_decay, lr_schedule=args.lr_schedule,
        seed=args.seed, progress=not args.quiet, on_epoch_end=report)
    accuracy = history.final_test_accuracy
    if args.save is not None:
        simplenn.save_model(net, args.save, metadata={"training": history.to_dict()["config"],
                                                       "test_accuracy": accuracy})
        say(f"saved model to {args.save}")
    if args.metrics_out is not None:
        from .model_io import atomic_write_bytes

        atomic_write_bytes(args.metrics_out, json.dumps(history.to_dict(), indent=2).encode())
        say(f"wrote metrics to {args.metrics_out}")
    print(f"test accuracy: {100 * accuracy:.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
