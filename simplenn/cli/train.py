"""``python -m simplenn.train``: train the two-layer network on MNIST.

With no flags it trains on the MNIST copy bundled with the package on the best
backend that runs here and prints the final test accuracy as its last line.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import math
import os
import shlex
import signal
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .._version import __version__
from ..backends import available_backends, default_backend_name, resolve_backend_name
from ..core.augment import AUGMENTATIONS
from ..core.callbacks import CallbackList
from ..core.network import DEFAULT_HIDDEN
from ..core.schedule import LR_SCHEDULES
from ..core.training import EpochStats, TrainConfig, warm_up
from ..data.datasets import example_inputs, load_dataset
from ..errors import SimplennError
from ..optim import OPTIMIZERS, SGD, Adam, AdamW, get_optimizer
from ..optim.sgd import LR_REFERENCE_BATCH, REFERENCE_LR
from . import common

PROG = common.invoked_as("simplenn.train")
#: The flags of optimizer hyperparameters, by hyperparameter.
OPTIMIZER_FLAGS = {
    "momentum": "--momentum",
    "nesterov": "--nesterov",
    "beta1": "--beta1",
    "beta2": "--beta2",
    "eps": "--eps",
    "weight_decay": "--weight-decay",
}


def open_unit_interval(text: str) -> float:
    """A number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}")
    return value


def rng_seed(text: str) -> int:
    """A seed for ``numpy.random.default_rng``: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


#: Named recipes (``--preset``): flag values that flags given on the command line override.
PRESETS = {
    "best": {"hidden": 800, "epochs": 40, "lr": 0.1, "augment": "elastic"},
}


def _preset_help() -> str:
    """The presets and their flags, as ``--help`` lists them."""
    return "; ".join(
        f"{name}: " + " ".join(f"{_flag(k)} {v}" for k, v in flags.items())
        for name, flags in PRESETS.items()
    )


def build_parser() -> common.ArgumentParser:
    d = TrainConfig()
    p = common.ArgumentParser(
        prog=PROG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Train the 784-hidden-10 ReLU network on MNIST (SGD with momentum, or --optimizer)\n"
            "(the bundled copy, or --data-dir) and report test accuracy."
        ),
        epilog=(
            "environment variables:\n"
            "  SIMPLENN_BACKEND       the default for --backend\n"
            "  SIMPLENN_NUMBA_CACHE   0: don't cache Numba's compiled kernels on disk\n"
            "  SIMPLENN_NUMBA_BLAS    scipy: Numba kernels multiply with Numba's np.dot\n"
            "                         (SciPy's BLAS; needs SciPy) instead of NumPy's BLAS\n"
            "  SIMPLENN_CUDA_GRAPHS   1: replay each chunk of steps as a CUDA graph (cupy)\n"
            "  SIMPLENN_TORCH_DEVICE  cpu or cuda: the torch backend's device (default: cuda\n"
            "                         when a CUDA device works, else cpu)\n"
            "  JAX_PLATFORMS          cpu: the jax backend on the CPU even where JAX sees a GPU\n"
            "  SIMPLENN_DATA_DIR      where the downloader caches datasets\n"
            "  SIMPLENN_SKIP_BACKENDS a,b: backends the benchmark grid and the test suite\n"
            "                         leave out (python -m simplenn.bench --skip-backends)\n"
            "\n"
            "exit status:\n"
            "  0 done; 1 an error, e.g. bad data, an output that cannot be written (checked\n"
            "  before training), a --checkpoint-dir another run holds, or a diverged run (the\n"
            "  loss NaN, infinite or exploding; the message suggests a smaller --lr); 2 bad\n"
            "  arguments; 130 after Ctrl-C and 143 after SIGTERM (both finish the current\n"
            "  step and save a checkpoint with --checkpoint-dir)"
        ),
    )
    p.add_argument(
        "--backend",
        type=common.backend_name,
        default=None,
        help=f"{common.BACKEND_HELP} (default: $SIMPLENN_BACKEND, else auto: the "
        "fastest that runs here, cupy with a CUDA GPU, else numba when "
        "installed, else numpy; a line on stderr names its pick)",
    )
    p.add_argument(
        "--preset",
        choices=tuple(PRESETS),
        default=None,
        help=f"a named recipe; flags given as well override its values "
        f"({_preset_help()}; 'best' reaches 99%% on MNIST, see "
        f"docs/augmentation.md)",
    )
    p.add_argument(
        "--epochs",
        type=common.positive_int,
        default=d.epochs,
        help=f"passes over the training set (default {d.epochs})",
    )
    p.add_argument(
        "--batch-size",
        type=common.positive_int,
        default=d.batch_size,
        help=f"minibatch size (default {d.batch_size})",
    )
    p.add_argument(
        "--hidden",
        type=common.positive_int,
        default=DEFAULT_HIDDEN,
        help=f"hidden units (default {DEFAULT_HIDDEN})",
    )
    p.add_argument(
        "--optimizer",
        type=optimizer_name,
        default=d.optimizer.name,
        help=f"the optimizer: {', '.join(OPTIMIZERS)} (default {d.optimizer.name}; "
        f"see docs/design.md)",
    )
    p.add_argument(
        "--lr",
        type=common.positive_float,
        default=None,
        help=f"peak learning rate (default for sgd {REFERENCE_LR:g} * batch size / "
        f"{LR_REFERENCE_BATCH} up to batch {LR_REFERENCE_BATCH}, "
        f"{REFERENCE_LR:g} above: {d.lr:g} at the default batch size; for "
        f"adam and adamw {Adam().default_lr(d.batch_size):g})",
    )
    p.add_argument(
        "--lr-schedule",
        choices=LR_SCHEDULES,
        default=d.lr_schedule,
        help=f"learning-rate decay over the run, step by step (default {d.lr_schedule})",
    )
    p.add_argument(
        "--warmup-steps",
        type=common.nonnegative_int,
        default=d.warmup_steps,
        metavar="N",
        help="raise the learning rate linearly over the first N steps, then follow "
        f"--lr-schedule (default {d.warmup_steps})",
    )
    p.add_argument(
        "--momentum",
        type=common.unit_interval,
        default=None,
        help=f"sgd: momentum in [0, 1) (default {SGD.momentum})",
    )
    p.add_argument("--nesterov", action="store_true", default=None, help="sgd: Nesterov's momentum")
    p.add_argument(
        "--beta1",
        type=common.unit_interval,
        default=None,
        help=f"adam, adamw: decay of the gradient's mean, in [0, 1) (default {Adam.beta1})",
    )
    p.add_argument(
        "--beta2",
        type=common.unit_interval,
        default=None,
        help=f"adam, adamw: decay of the gradient's square, in [0, 1) (default {Adam.beta2})",
    )
    p.add_argument(
        "--eps",
        type=common.positive_float,
        default=None,
        help=f"adam, adamw: added to the denominator, > 0 (default {Adam.eps:g})",
    )
    p.add_argument(
        "--weight-decay",
        type=common.nonnegative_float,
        default=None,
        help=f"L2 weight decay on W1 and W2 (default {SGD.weight_decay:g}; adamw "
        f"{AdamW.weight_decay:g}, decoupled)",
    )
    p.add_argument(
        "--seed",
        type=rng_seed,
        default=d.seed,
        help=f"seed for initialisation and shuffling, an integer >= 0 (default {d.seed})",
    )
    p.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        default="float32",
        help="floating-point precision (default float32)",
    )
    p.add_argument(
        "--val-split",
        dest="validation_fraction",
        type=open_unit_interval,
        default=None,
        metavar="F",
        help="hold out the fraction F in (0, 1) of the training images (stratified "
        "by class, drawn with --seed) as a validation set: each epoch reports "
        "the validation loss and accuracy and the test set is evaluated once, "
        "at the end (default: no validation set; the test set every epoch)",
    )
    p.add_argument(
        "--early-stop",
        dest="early_stopping",
        type=common.positive_int,
        default=None,
        metavar="N",
        help="stop when the validation loss has not improved for N epochs and keep "
        "the parameters of the best epoch (needs --val-split)",
    )
    p.add_argument(
        "--augment",
        choices=AUGMENTATIONS,
        default=d.augment,
        help="distort every training batch before its step: affine (rotation, "
        "scale, shear, shift) or elastic (Simard's α 34, σ 4); the test set "
        f"is never distorted (default {d.augment})",
    )
    p.add_argument(
        "--eval-train",
        action="store_true",
        help="also measure the training-set accuracy after every epoch (a pass "
        "over the training images; default: only the loss of the steps)",
    )
    p.add_argument(
        "--data-dir",
        type=common.existing_dir,
        default=None,
        help="directory with the four MNIST-format IDX files (train-images-idx3-ubyte, "
        "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, "
        "each optionally .gz); default: the bundled MNIST",
    )
    p.add_argument(
        "--save",
        type=Path,
        default=None,
        metavar="PATH",
        help="write the trained model to PATH (.npz; checked writable before "
        "training; if writing fails at the end, the model goes to "
        "PATH's directory or the temp directory as STEM.unsaved-*.npz)",
    )
    p.add_argument(
        "--metrics-out",
        type=Path,
        default=None,
        metavar="PATH",
        help="write the per-epoch history and final test accuracy to PATH (JSON), "
        "with what reproduces the run: every setting, the simplenn version, "
        "the command line, the time (UTC) and the data's sha256 checksums",
    )
    p.add_argument(
        "--plot",
        type=Path,
        default=None,
        metavar="DIR",
        help="write the training curves (losses and accuracies per epoch: train, "
        "validation, test, those measured) to DIR/training_curves.png, and with "
        "--augment a grid of training digits and their distortions to "
        "DIR/augmentation.png (DIR is created; needs matplotlib: pip install "
        "matplotlib)",
    )
    p.add_argument(
        "--log-csv",
        type=Path,
        default=None,
        metavar="PATH",
        help="write every epoch's statistics to PATH (CSV): a header naming them "
        "(epoch, lr, train_loss, ...), then one row per epoch, written as "
        "the epoch ends (with --resume, rows are added to the file)",
    )
    p.add_argument(
        "--checkpoint-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="save a checkpoint (model, optimiser and RNG state, history) to "
        "DIR/checkpoint.npz after every epoch and on Ctrl-C or SIGTERM (DIR "
        "is created); the run locks DIR (DIR/run.lock): a second run on it "
        "exits at once naming the holder's PID",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run saved in --checkpoint-dir on its backend; settings "
        "not given take the checkpoint's values, settings given must match "
        "them (a different --backend is allowed, with a warning that the "
        "result will not be bitwise the unbroken run's)",
    )
    p.add_argument(
        "--list-backends",
        action="store_true",
        help="list every backend, whether it can run here and why not, then exit",
    )
    p.add_argument(
        "--quiet",
        action="store_true",
        help="print only the final test accuracy (no progress bar or epoch lines)",
    )
    p.add_argument(
        "--debug",
        action="store_true",
        help="show full tracebacks for errors, and which training path ran (a "
        "backend's fast path or the generic compiled math)",
    )
    return p


def optimizer_name(text: str) -> str:
    """A name of :data:`simplenn.optim.OPTIMIZERS`."""
    if text.lower() not in OPTIMIZERS:
        raise argparse.ArgumentTypeError(
            f"unknown optimizer {text!r}; choose from {', '.join(OPTIMIZERS)}"
        )
    return text.lower()


def build_optimizer(parser: common.ArgumentParser, args) -> None:
    """``args.optimizer`` as an :class:`~simplenn.optim.Optimizer`, with the hyperparameter
    flags given; a flag the optimizer has no use for, or a value it refuses, is a usage
    error."""
    cls = OPTIMIZERS[args.optimizer]
    given = {k: getattr(args, k) for k in OPTIMIZER_FLAGS if getattr(args, k) is not None}
    for k in given:
        if k not in cls.__dataclass_fields__:
            parser.error(
                f"argument {OPTIMIZER_FLAGS[k]}: does not apply to --optimizer "
                f"{cls.name} (it applies to "
                f"{', '.join(n for n, c in OPTIMIZERS.items() if k in c.__dataclass_fields__)})"
            )
    try:
        args.optimizer = get_optimizer(cls.name, **given)
    except ValueError as exc:
        parser.error(str(exc))


def list_backends() -> int:
    for info in available_backends():
        print(info.describe())
    return 0


def _check_output_path(parser: common.ArgumentParser, flag: str, path: Path | None) -> None:
    if path is not None and not path.parent.is_dir():
        parser.error(f"argument {flag}: directory {str(path.parent)!r} does not exist")


#: The flags that define a run: a resumed run takes them from its checkpoint (the
#: optimizer's hyperparameter flags with ``optimizer``).
RUN_SETTINGS = (
    "epochs",
    "batch_size",
    "lr",
    "optimizer",
    "lr_schedule",
    "warmup_steps",
    "seed",
    "hidden",
    "dtype",
    "validation_fraction",
    "early_stopping",
    "augment",
)
#: The flags whose names differ from their settings'.
FLAG_NAMES = {"validation_fraction": "--val-split", "early_stopping": "--early-stop"}


def _explicit_flags(argv: list[str] | None) -> set[str]:
    """The destinations of the options given on the command line (not defaulted)."""
    parser = build_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv)))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_output_path(parser, "--save", args.save)
    _check_output_path(parser, "--metrics-out", args.metrics_out)
    _check_output_path(parser, "--log-csv", args.log_csv)
    if args.resume and args.checkpoint_dir is None:
        parser.error("argument --resume: needs --checkpoint-dir DIR (the directory of the run)")
    if args.early_stopping is not None and args.validation_fraction is None and not args.resume:
        parser.error("argument --early-stop: needs --val-split F (a validation set to watch)")
    args.explicit = _explicit_flags(argv)
    if any(k in args.explicit for k in OPTIMIZER_FLAGS):
        args.explicit.add("optimizer")  # a hyperparameter given sets the optimizer
    build_optimizer(parser, args)
    if args.preset is not None:  # a preset's values count as given, unless a flag is
        for key, value in PRESETS[args.preset].items():
            if key not in args.explicit:
                setattr(args, key, value)
                args.explicit.add(key)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    return common.run_command(PROG, lambda: _train(args), args.debug)


def _flag(name: str) -> str:
    return FLAG_NAMES.get(name, "--" + name.replace("_", "-"))


def _shown(value) -> str:
    """A setting as a conflict message shows it (an optimizer by its description)."""
    return value.describe() if hasattr(value, "describe") else str(value)


def _adopt_checkpoint_settings(args, ckpt) -> None:
    """Take the run's settings from the checkpoint; a setting given that differs is an error."""
    from ..io.checkpoints import ResumeError

    settings = {
        **ckpt.run.get("settings", {}),
        **asdict(ckpt.state.config),
        "optimizer": ckpt.state.config.optimizer,
    }
    settings.setdefault("hidden", ckpt.metadata["n_hidden"])
    settings.setdefault("dtype", ckpt.metadata["dtype"])
    conflicts = [
        f"{_flag(k)} {_shown(getattr(args, k))} (checkpoint: {_shown(settings[k])})"
        for k in RUN_SETTINGS
        if k in args.explicit and getattr(args, k) != settings[k]
    ]
    data_dir = ckpt.run.get("data_dir")
    if "data_dir" in args.explicit and str(args.data_dir.resolve()) != str(data_dir):
        conflicts.append(f"--data-dir {args.data_dir} (checkpoint: {data_dir or 'bundled MNIST'})")
    if conflicts:
        raise ResumeError(
            f"cannot resume from {ckpt.path}: this command's settings differ from the "
            f"checkpoint's: {'; '.join(conflicts)}. Leave these flags out to use the "
            f"checkpoint's settings, or start a new run with another --checkpoint-dir"
        )
    for k in RUN_SETTINGS:
        setattr(args, k, settings[k])
    if "data_dir" not in args.explicit and data_dir is not None:
        args.data_dir = Path(data_dir)
        if not args.data_dir.is_dir():
            raise ResumeError(
                f"cannot resume from {ckpt.path}: its data directory {data_dir} "
                f"does not exist; pass --data-dir"
            )


def _data_fingerprint(split) -> str:
    """sha256 of a split's images and labels: a resumed run must see the same data."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(split.X).data)
    digest.update(np.ascontiguousarray(split.y).data)
    return digest.hexdigest()


class _WarningsOnly(logging.Filter):
    """Lets through records of level WARNING and above."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


def _choose_backend(requested: str | None) -> tuple[str, bool]:
    """The backend to run on (``--backend``, else ``$SIMPLENN_BACKEND``, else auto's pick)
    and whether auto picked it. Auto's reasons for skipping the others are not logged:
    ``--list-backends`` shows them."""
    name = requested or default_backend_name("auto")
    if name != "auto":
        return name, False
    registry_logger, infos_off = logging.getLogger("simplenn"), _WarningsOnly()
    registry_logger.addFilter(infos_off)
    try:
        return resolve_backend_name("auto"), True
    finally:
        registry_logger.removeFilter(infos_off)


def _metrics_record(history, args, source: str, fingerprints: dict[str, str]) -> dict:
    """The ``--metrics-out`` JSON: the history, whose config gains the network's size and
    dtype, with the simplenn version, the command line, the time and the data."""
    record = history.to_dict()
    record["config"].update(hidden=args.hidden, dtype=args.dtype)
    return {
        "simplenn_version": __version__,
        "command": shlex.join([*PROG.split(), *args.argv]),
        "finished_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data": {
            "source": source,
            "data_dir": None if args.data_dir is None else str(args.data_dir.resolve()),
            **fingerprints,
        },
        **record,
    }


def _interrupted_line(exc, ckpt_file: Path | None, checkpoint_dir: Path | None) -> str:
    """What a run stopped by Ctrl-C or SIGTERM says: where it stood and how to resume."""
    cause = (
        "interrupted"
        if exc.signal_number == signal.SIGINT
        else f"interrupted by {signal.Signals(exc.signal_number).name}"
    )
    if exc.saved:
        return (
            f"{PROG}: {cause} ({exc.state.describe()}); saved checkpoint {ckpt_file}; "
            f"resume with: {PROG} --checkpoint-dir {shlex.quote(str(checkpoint_dir))} "
            f"--resume"
        )
    return (
        f"{PROG}: {cause} ({exc.state.describe()}); nothing was saved (pass "
        f"--checkpoint-dir DIR to be able to resume)"
    )


class NetworkTooLargeError(SimplennError, MemoryError):
    """The network asked for cannot fit in this machine's memory."""


#: Rows the evaluation passes compute at a time (TwoLayerNet.logits' default).
_EVALUATION_ROWS = 8192


def _parameter_count(n_inputs: int, hidden: int, n_classes: int) -> int:
    """The number of weights and biases of a n_inputs-hidden-n_classes network."""
    return n_inputs * hidden + hidden + hidden * n_classes + n_classes


def _training_bytes(n_inputs: int, hidden: int, n_classes: int, dtype: str, batch_size: int) -> int:
    """About the memory training a network takes: its parameters, their gradients and
    two optimizer slots (Adam's), and the hidden activations of a batch and of an
    evaluation pass."""
    rows = 3 * batch_size + _EVALUATION_ROWS
    return np.dtype(dtype).itemsize * (
        4 * _parameter_count(n_inputs, hidden, n_classes) + rows * hidden
    )


def _memory_here() -> int | None:
    """The memory this process may use: the physical memory, or the address-space limit
    (``ulimit -v``) when lower; None when unknown."""
    limits = []
    try:
        limits.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        pass
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY:
            limits.append(soft)
    except (ImportError, OSError, ValueError):
        pass
    return min(limits) if limits else None


def _check_memory(args) -> None:
    """Refuse, with the memory training it would take, a network whose parameters alone
    do not fit in this machine's memory (a GPU run keeps a copy on the host too)."""
    parameters = np.dtype(args.dtype).itemsize * _parameter_count(784, args.hidden, 10)
    need = _training_bytes(784, args.hidden, 10, args.dtype, args.batch_size)
    here = _memory_here()
    if here is not None and parameters > here:
        raise NetworkTooLargeError(
            f"--hidden {args.hidden}: training this network needs about {_gib(need)} of "
            f"memory (parameters, gradients, optimizer state and activations, {args.dtype}), "
            f"more than the {_gib(here)} available here; choose a smaller --hidden"
        )


def _gib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB"


def _check_outputs(args) -> None:
    """Check every output before training: each writable (a temp file created and
    removed where it goes), none a directory, none the checkpoint or another output."""
    from ..io.checkpoints import checkpoint_path
    from ..io.lock import LOCK_NAME
    from ..io.models import ensure_directory
    from ..io.outputs import OutputError, check_output_file, check_writable_dir

    taken: dict[Path, str] = {}
    if args.checkpoint_dir is not None:
        directory = args.checkpoint_dir
        for path, what in (
            (checkpoint_path(directory), "the checkpoint"),
            (directory / LOCK_NAME, "the lock file"),
        ):
            taken[path.resolve()] = f"{what} of --checkpoint-dir {directory}"
    for flag, path in (
        ("--save", args.save),
        ("--metrics-out", args.metrics_out),
        ("--log-csv", args.log_csv),
    ):
        if path is None:
            continue
        check_output_file(path, flag)
        what = taken.get(path.resolve())
        if what is not None:
            raise OutputError(
                f"{flag} {path} is {what}; writing there would replace it: choose another path"
            )
        taken[path.resolve()] = f"the file of {flag}"
    if args.plot is not None:
        check_writable_dir(ensure_directory(args.plot, "--plot"), "--plot")
    if args.checkpoint_dir is not None:
        check_writable_dir(
            ensure_directory(args.checkpoint_dir, "--checkpoint-dir"), "--checkpoint-dir"
        )


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """``warnings.showwarning`` for the command: ``PROG: warning: MESSAGE``."""
    print(f"{PROG}: warning: {message}", file=sys.stderr if file is None else file)


def _train(args) -> int:
    if args.list_backends:
        return list_backends()
    from ..io.lock import DirectoryLock

    if args.plot is not None:
        from .plots import require_matplotlib

        require_matplotlib()  # fail now, not after training
    _check_outputs(args)
    lock = None
    if args.checkpoint_dir is not None:
        lock = DirectoryLock(args.checkpoint_dir, "--checkpoint-dir")
        lock.acquire()
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
            return _train_holding(args, lock)
    finally:
        if lock is not None:
            lock.release()


def _train_holding(args, lock) -> int:
    """The run, once its outputs are checked and its checkpoint directory (if any) is
    locked by ``lock``."""
    from ..core.model import TwoLayerNet
    from ..core.training import TrainingInterrupted, fit
    from ..errors import BackendUnavailableError, TrainingDivergedError
    from ..io.checkpoints import ResumeError, checkpoint_path, load_checkpoint, save_checkpoint

    say = (lambda *a: None) if args.quiet else print
    ckpt, ckpt_file, saved_backend = None, None, None
    if args.checkpoint_dir is not None:
        ckpt_file = checkpoint_path(args.checkpoint_dir)
        if args.resume:
            if not ckpt_file.exists():
                raise ResumeError(
                    f"cannot resume: {ckpt_file} does not exist; run without "
                    f"--resume to start a run that saves checkpoints there"
                )
            ckpt = load_checkpoint(ckpt_file)
            _adopt_checkpoint_settings(args, ckpt)
            saved_backend = ckpt.run.get("settings", {}).get("backend", ckpt.state.backend)
            if "backend" not in args.explicit:
                args.backend = saved_backend
        elif ckpt_file.exists():
            raise ResumeError(
                f"{ckpt_file} already holds a checkpoint; pass --resume to "
                f"continue that run, or choose another --checkpoint-dir"
            )
    _check_memory(args)

    log_csv = None if args.log_csv is None else _csv_logger(args.log_csv, ckpt is not None)

    # The data decompresses and is checksummed (work that releases the GIL) in a thread
    # while the backend is imported and what the run will run is compiled or loaded.
    with ThreadPoolExecutor(max_workers=1) as pool:
        loading = pool.submit(load_dataset, args.data_dir)
        backend, auto = _choose_backend(args.backend)
        if auto and not args.quiet:
            print(f"backend: {backend} (auto; --list-backends shows the others)", file=sys.stderr)
        if saved_backend is not None and backend != saved_backend:
            print(
                f"{PROG}: warning: resuming on backend {backend}, not the checkpoint's "
                f"{saved_backend}: the result will not be bitwise the same as the unbroken "
                f"run's",
                file=sys.stderr,
            )
        try:
            net = TwoLayerNet(
                784, args.hidden, 10, backend=backend, dtype=args.dtype, seed=args.seed
            )
        except BackendUnavailableError as exc:
            if saved_backend is None or "backend" in args.explicit:
                raise
            raise ResumeError(
                f"cannot resume {ckpt_file} on its backend {saved_backend}: {exc}; "
                f"pass --backend NAME to continue on another backend (the result "
                f"will not be bitwise the same)"
            ) from None
        if loading.done():
            loading.result()  # a missing or damaged file fails now, not after compiling
        compile_seconds = None
        if net.ops.needs_warmup:  # epoch 1's time is training, not compiling
            start = time.perf_counter()
            warm_up(
                net.ops,
                example_inputs(),
                optimizer=args.optimizer,
                batch_size=args.batch_size,
                augment=args.augment,
                gradients=False,
            )
            compile_seconds = time.perf_counter() - start
        train, test, source = loading.result()
    if train.n_features != net.n_inputs or test.n_features != net.n_inputs:
        net = TwoLayerNet(
            train.n_features, args.hidden, 10, backend=net.ops, dtype=args.dtype, seed=args.seed
        )
    run = None
    train_sha256 = None
    if ckpt_file is not None or args.metrics_out is not None:
        train_sha256 = _data_fingerprint(train)
    if ckpt_file is not None:
        run = {
            "settings": {"hidden": args.hidden, "dtype": args.dtype, "backend": net.backend},
            "data_dir": None if args.data_dir is None else str(args.data_dir.resolve()),
            "data_sha256": train_sha256,
        }
        if ckpt is not None and ckpt.run.get("data_sha256") != run["data_sha256"]:
            raise ResumeError(
                f"cannot resume from {ckpt_file}: the training data in {source} "
                f"is not the data the checkpoint was trained on"
            )
    held_out = (
        ""
        if args.validation_fraction is None
        else f" ({args.validation_fraction:g} of them held out for validation)"
    )
    say(f"training {net!r} on {source}: {len(train)} train{held_out} / {len(test)} test images")
    if ckpt is not None:
        say(f"resuming from {ckpt_file} ({ckpt.state.describe()})")

    if compile_seconds is not None:
        say(
            f"compiled the {net.backend} kernels in {compile_seconds:.1f}s "
            f"(cached on disk for later runs)"
        )

    def report(s: EpochStats) -> None:
        say(_epoch_line(s, args.epochs))

    def checkpoint(state) -> None:
        lock.verify()  # never write into a directory this run no longer owns
        save_checkpoint(ckpt_file, state, run=run)

    try:
        history = fit(
            net,
            train,
            test,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            optimizer=args.optimizer,
            lr_schedule=args.lr_schedule,
            warmup_steps=args.warmup_steps,
            seed=args.seed,
            validation_fraction=args.validation_fraction,
            early_stopping=args.early_stopping,
            augment=args.augment,
            eval_train=args.eval_train,
            progress=not args.quiet,
            on_epoch_end=CallbackList(report, log_csv),
            on_checkpoint=checkpoint if ckpt_file is not None else None,
            resume=ckpt.state if ckpt is not None else None,
        )
    except TrainingInterrupted as exc:
        print(_interrupted_line(exc, ckpt_file, args.checkpoint_dir), file=sys.stderr)
        return 128 + exc.signal_number  # as a shell reports a command ended by the signal
    except TrainingDivergedError as exc:
        if ckpt_file is not None and ckpt_file.exists():
            raise TrainingDivergedError(
                f"{exc} The last good checkpoint, {ckpt_file}, was kept."
            ) from None
        raise
    if args.debug:
        print(
            f"training path: {history.training_path} ({args.optimizer.describe()} on "
            f"{net.backend})",
            file=sys.stderr,
        )
    if history.best_epoch is not None:
        say(_best_epoch_line(history))
    accuracy = history.final_test_accuracy
    written = True
    if args.save is not None:
        written &= _save_model(
            net,
            args.save,
            {"training": history.to_dict()["config"], "test_accuracy": accuracy},
            ckpt_file,
            say,
        )
    if args.metrics_out is not None:
        record = _metrics_record(
            history,
            args,
            source,
            {"train_sha256": train_sha256, "test_sha256": _data_fingerprint(test)},
        )
        written &= _write_output(
            "--metrics-out", args.metrics_out, say, _write_metrics, args.metrics_out, record
        )
    if args.plot is not None:
        written &= _write_output(
            "--plot", args.plot, say, _plot_run, history, train, args, net.n_hidden
        )
    print(f"test accuracy: {100 * accuracy:.2f}%")
    return 0 if written else common.EXIT_ERROR


def _save_model(net, path: Path, metadata: dict, ckpt_file: Path | None, say) -> bool:
    """Write the trained model to ``path``; if that fails (a full disk), to a new file
    beside it or in the temp directory, saying where. Whether ``path`` was written."""
    from ..errors import ModelFileError
    from ..io.models import save_model
    from ..io.outputs import fallback_path

    try:
        save_model(net, path, metadata=metadata)
    except ModelFileError as exc:
        failure = str(exc)
    else:
        say(f"saved model to {path}")
        return True
    for directory in (path.parent, Path(tempfile.gettempdir())):
        try:
            fallback = fallback_path(path, directory)
        except OSError:
            continue
        try:
            save_model(net, fallback, metadata=metadata)
        except ModelFileError:
            with contextlib.suppress(OSError):
                fallback.unlink()
            continue
        print(
            f"{PROG}: error: {failure}; the trained model was saved to {fallback} instead",
            file=sys.stderr,
        )
        return False
    kept = (
        f"the last checkpoint, {ckpt_file}, holds the finished run"
        if ckpt_file is not None and ckpt_file.exists()
        else "the trained model is lost"
    )
    print(f"{PROG}: error: {failure}; no fallback could be written either: {kept}", file=sys.stderr)
    return False


def _write_output(flag: str, path: Path, say, write, *args) -> bool:
    """Run ``write(*args)`` (which returns the lines to say); a failure is one error
    line naming ``flag`` and ``path``. Whether it succeeded."""
    try:
        lines = write(*args)
    except (OSError, SimplennError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        print(f"{PROG}: error: cannot write {flag} {path}: {reason}", file=sys.stderr)
        return False
    for line in lines:
        say(line)
    return True


def _write_metrics(path: Path, record: dict) -> list[str]:
    from ..io.atomic import atomic_write_bytes

    atomic_write_bytes(path, json.dumps(record, indent=2).encode())
    return [f"wrote metrics to {path}"]


def _plot_run(history, train, args, n_hidden: int) -> list[str]:
    """The training curves (and with --augment the distorted digits) in --plot DIR."""
    from .plots import TRAINING_CURVES, plot_training_curves

    curves = plot_training_curves(history, args.plot / TRAINING_CURVES, n_hidden)
    lines = [f"wrote training curves to {curves}"]
    if args.augment != "none":
        path = _plot_augmentation(train, args, args.plot)
        lines.append(f"wrote the distorted training digits to {path}")
    return lines


def _csv_logger(path: Path, append: bool):
    """The ``--log-csv`` logger (appending to the file of a resumed run), or a one-line
    error when the file can't be written."""
    from ..core.callbacks import CSVLogger
    from ..errors import SimplennError

    try:
        return CSVLogger(path, append=append)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise SimplennError(f"--log-csv {path}: {reason}") from None


def _plot_augmentation(train, args, plot_dir: Path) -> Path:
    """DIR/augmentation.png: ten training digits and three draws of the run's distortion."""
    from ..core.augment import distort_images
    from .plots import AUGMENTATION, plot_augmentation

    images = train.X[:10]
    draws = [
        distort_images(images, args.augment, seed=args.seed + k, backend="numpy") for k in range(3)
    ]
    return plot_augmentation(images, {args.augment: draws}, plot_dir / AUGMENTATION)


def _epoch_line(s: EpochStats, epochs: int) -> str:
    """One epoch's report: losses, accuracies (those measured), learning rate, speed."""
    parts = [f"epoch {s.epoch:>2}/{epochs}", f"loss {s.train_loss:.4f}"]
    if s.train_accuracy is not None:
        parts.append(f"train {100 * s.train_accuracy:.2f}%")
    if s.val_accuracy is not None:
        parts.append(f"val {100 * s.val_accuracy:.2f}% (loss {s.val_loss:.4f})")
    if s.test_accuracy is not None:
        parts.append(f"test {100 * s.test_accuracy:.2f}%")
    parts.append(f"lr {s.lr:.4f}  {s.seconds:.2f}s ({s.samples_per_second:,.0f} img/s)")
    return "  ".join(parts)


def _best_epoch_line(history) -> str:
    """Which epoch validated best, and whether early stopping ended the run there."""
    best = history.best_epoch
    if history.stopped_early:
        return (
            f"stopped early after epoch {len(history.epochs)}: the validation loss was "
            f"lowest at epoch {best}, whose parameters the model keeps"
        )
    if history.config.early_stopping is not None:
        return f"the validation loss was lowest at epoch {best}, whose parameters the model keeps"
    return f"the validation loss was lowest at epoch {best}"
