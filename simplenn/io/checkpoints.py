"""Training checkpoints: a :class:`~simplenn.core.training.TrainingState` on disk.

A checkpoint is a model file (:mod:`simplenn.io.models`; ``python -m simplenn.evaluate``
and ``simplenn.predict`` read it as one) with the optimizer's state arrays by name
(``optimizer.W1.velocity``, ``optimizer.W1.m`` ...) and the losses of the current epoch
beside the parameters, and a ``checkpoint`` object in its metadata: the training
settings (the optimizer by name and hyperparameters), the optimizer's update count,
epochs done, position in
the next epoch, the shuffling RNG's ``bit_generator.state``, the per-epoch history, the
validation bookkeeping (size of the validation set, best validation loss and epoch,
epochs without improvement) and whatever the caller adds under ``run`` (the CLI stores
the hidden size, dtype and a fingerprint of the training data). With a validation split
the rows held out are the array ``validation_indices``; with early stopping the best
epoch's parameters are ``best_W1`` ... Version 1 files, from before validation sets,
are read as runs without one; files before version 4, from before optimizers were
objects, as SGD runs with their ``velocity_W1`` ... arrays. It is written atomically -- a killed process leaves
the previous checkpoint -- and refuses non-finite parameters, so a diverged run never
replaces a good checkpoint.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..core.params import PARAMETER_NAMES
from ..core.training import EpochStats, TrainConfig, TrainingState, slot_names
from ..errors import ModelFileError, SimplennError
from .models import (
    BEST_PREFIX,
    OPTIMIZER_PREFIX,
    VALIDATION_ROWS,
    VELOCITY_PREFIX,
    read_model_archive,
    write_model_file,
)

#: File name of the checkpoint inside a ``--checkpoint-dir``.
CHECKPOINT_NAME = "checkpoint.npz"
CHECKPOINT_VERSION = 4
_VELOCITY, _OPTIMIZER, _BEST = VELOCITY_PREFIX, OPTIMIZER_PREFIX, BEST_PREFIX
_VALIDATION_ROWS = VALIDATION_ROWS
#: Settings and statistics that older files lack; they read as their defaults
#: (``augment``: none, from version 3) or None (the others, from version 2).
_NEW_CONFIG_FIELDS = {"validation_fraction", "early_stopping", "augment"}
_NEW_EPOCH_FIELDS = {"val_loss", "val_accuracy", "test_loss"}


class ResumeError(SimplennError, ValueError):
    """A checkpoint that does not belong to the run asked to continue it."""


@dataclass
class Checkpoint:
    """A checkpoint as read back: the training state, the caller's ``run`` metadata and
    the whole model metadata (sizes, dtype, backend)."""

    path: Path
    state: TrainingState
    run: dict[str, Any]
    metadata: dict[str, Any]


def checkpoint_path(directory: str | os.PathLike) -> Path:
    """Where the checkpoint of ``directory`` lives."""
    return Path(directory) / CHECKPOINT_NAME


def save_checkpoint(
    path: str | os.PathLike, state: TrainingState, *, run: dict[str, Any] | None = None
) -> Path:
    """Atomically write ``state`` (and the JSON-serialisable ``run``) to ``path``.

    Raises :class:`ModelFileError` (and leaves ``path`` untouched) when the state holds
    NaN or infinite numbers: a checkpoint is always a good point to go on from.
    """
    path = Path(path)
    groups = [("parameter", state.parameters), ("optimizer", state.optimizer_state)]
    if state.best_parameters is not None:
        groups.append(("best parameter", state.best_parameters))
    for group, arrays in groups:
        for k, a in arrays.items():
            if not np.isfinite(a).all():
                raise ModelFileError(
                    f"refusing to write checkpoint {path}: {group} {k} holds "
                    f"NaN or infinite values (the run diverged)"
                )
    meta = {
        "checkpoint": {
            "format_version": CHECKPOINT_VERSION,
            "config": state.config.to_dict(),
            "backend": state.backend,
            "optimizer_steps": state.optimizer_steps,
            "n_train": state.n_train,
            "epochs_done": state.epochs_done,
            "position": state.position,
            "rng_state": state.rng_state,
            "epoch_seconds": state.epoch_seconds,
            "history": [asdict(e) for e in state.history],
            "n_validation": state.n_validation,
            "best_val_loss": state.best_val_loss,
            "best_epoch": state.best_epoch,
            "epochs_without_improvement": state.epochs_without_improvement,
            "run": run or {},
        }
    }
    extra = {f"{_OPTIMIZER}{k}": a for k, a in state.optimizer_state.items()}
    extra["epoch_losses"] = np.asarray(state.epoch_losses, dtype=np.float64)
    if state.validation_indices is not None:
        extra[_VALIDATION_ROWS] = np.asarray(state.validation_indices, dtype=np.int64)
    if state.best_parameters is not None:
        extra.update({f"{_BEST}{k}": state.best_parameters[k] for k in PARAMETER_NAMES})
    return write_model_file(
        path, state.parameters, backend=state.backend, metadata=meta, extra_arrays=extra
    )


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read and fully validate a checkpoint; any problem is a :class:`ModelFileError`
    naming the file."""
    path = Path(path)
    where = f"checkpoint {path}"
    params, meta, extra = read_model_archive(path, kind="checkpoint")
    info = meta.get("checkpoint")
    if not isinstance(info, dict):
        raise ModelFileError(
            f"{where} is a model file without training state; it can be evaluated but not resumed"
        )
    version = info.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelFileError(f"{where} has no valid checkpoint format_version")
    if version > CHECKPOINT_VERSION:
        raise ModelFileError(
            f"{where} has checkpoint format version {version}, newer than this "
            f"simplenn reads ({CHECKPOINT_VERSION}); upgrade simplenn"
        )
    try:
        state = _state_from(info, params, extra, meta["dtype"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{where} has invalid training state: {exc}") from None
    run = info.get("run", {})
    if not isinstance(run, dict):
        raise ModelFileError(f"{where} has invalid run metadata")
    return Checkpoint(path=path, state=state, run=run, metadata=meta)


def _int(info: dict, key: str, low: int = 0) -> int:
    value = info[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{key} must be an integer >= {low}, not {value!r}")
    return value


def _state_from(info: dict, params: dict, extra: dict, dtype: str) -> TrainingState:
    config_dict = info["config"]
    if not isinstance(config_dict, dict):
        raise ValueError("config must be an object with the fields of TrainConfig")
    config_dict = dict(config_dict)
    if "optimizer" not in config_dict:  # before version 4: SGD's settings among the others
        config_dict["optimizer"] = {
            "name": "sgd",
            "momentum": config_dict.pop("momentum", None),
            "weight_decay": config_dict.pop("weight_decay", None),
        }
    names = {f.name for f in fields(TrainConfig)}
    if not names - _NEW_CONFIG_FIELDS <= set(config_dict) <= names or not isinstance(
        config_dict["optimizer"], dict
    ):
        raise ValueError("config must be an object with the fields of TrainConfig")
    config = TrainConfig.from_dict(config_dict)
    if not isinstance(config.seed, int) or isinstance(config.seed, bool) or config.seed < 0:
        raise ValueError(f"the seed must be an integer >= 0, not {config.seed!r}")
    rng_state = info["rng_state"]
    if not isinstance(rng_state, dict) or rng_state.get("bit_generator") != "PCG64":
        raise ValueError("rng_state is not a PCG64 state")
    try:
        np.random.default_rng().bit_generator.state = rng_state
    except (KeyError, OverflowError, AttributeError) as exc:
        raise ValueError(f"rng_state is not a valid PCG64 state ({exc!r})") from None
    optimizer_state, updates = _optimizer_state(info, config, params, extra, dtype)
    losses = extra.get("epoch_losses")
    if losses is None or losses.ndim != 1 or losses.dtype != np.float64:
        raise ValueError("epoch_losses must be a 1-D float64 array")
    history = info["history"]
    if not isinstance(history, list) or not all(isinstance(e, dict) for e in history):
        raise ValueError("history must be a list of objects")
    names = {f.name for f in fields(EpochStats)}
    for e in history:
        numbers = all(
            v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
            for v in e.values()
        )
        if not (names - _NEW_EPOCH_FIELDS <= set(e) <= names and numbers):
            raise ValueError("history entries must hold the numbers of EpochStats")
    stats = [EpochStats(**e) for e in history]
    seconds = info["epoch_seconds"]
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
        raise ValueError(f"epoch_seconds must be a number, not {seconds!r}")
    backend = info["backend"]
    if not isinstance(backend, str):
        raise ValueError(f"backend must be a string, not {backend!r}")
    n_train = _int(info, "n_train", 1)
    epochs_done, position = _int(info, "epochs_done"), _int(info, "position")
    steps = (position + config.batch_size - 1) // config.batch_size
    if (
        epochs_done > config.epochs
        or position >= n_train
        or position % config.batch_size
        or losses.shape != (steps,)
        or len(stats) != epochs_done
        or (position and epochs_done == config.epochs)
    ):
        raise ValueError(
            f"inconsistent position: {epochs_done} of {config.epochs} epochs done, "
            f"position {position} of {n_train}, {losses.shape[0]} losses, "
            f"{len(stats)} epochs of history"
        )
    return TrainingState(
        config=config,
        backend=backend,
        n_train=n_train,
        epochs_done=epochs_done,
        position=position,
        rng_state=rng_state,
        parameters=params,
        optimizer_state=optimizer_state,
        optimizer_steps=updates,
        epoch_losses=losses,
        epoch_seconds=float(seconds),
        history=stats,
        **_validation_from(info, config, params, extra, dtype, epochs_done),
    )


def _optimizer_state(
    info: dict,
    config: TrainConfig,
    params: dict,
    extra: dict,
    dtype: str,
) -> tuple[dict[str, np.ndarray], int]:
    """The optimizer's state arrays by ``PARAMETER.SLOT`` and its update count; a file
    before version 4 holds SGD's velocities as ``velocity_W1`` ..., and its count is
    that of the steps done."""
    if "optimizer_steps" not in info:
        velocities = _parameter_like(_VELOCITY, params, extra, dtype)
        steps_per_epoch = -(-_int(info, "n_train", 1) // config.batch_size)
        steps = _int(info, "epochs_done") * steps_per_epoch + -(
            -_int(info, "position") // config.batch_size
        )
        return {f"{k}.velocity": v for k, v in velocities.items()}, steps
    arrays = {
        name: _like(extra, f"{_OPTIMIZER}{name}", params[name.split(".")[0]], dtype)
        for name in slot_names(config.optimizer)
    }
    return arrays, _int(info, "optimizer_steps")


def _parameter_like(prefix: str, params: dict, extra: dict, dtype: str) -> dict[str, np.ndarray]:
    """The four arrays ``PREFIX W1`` ... of ``extra``, each finite and shaped like its
    parameter."""
    return {k: _like(extra, f"{prefix}{k}", params[k], dtype) for k in PARAMETER_NAMES}


def _like(extra: dict, key: str, param: np.ndarray, dtype: str) -> np.ndarray:
    """The array ``key`` of ``extra``: present, finite, of ``param``'s shape and ``dtype``."""
    a = extra.get(key)
    if a is None:
        raise ValueError(f"the array {key} is missing")
    if a.shape != param.shape or a.dtype != np.dtype(dtype):
        raise ValueError(
            f"{key} has shape {a.shape} and dtype {a.dtype}, expected {param.shape} {dtype}"
        )
    if not np.isfinite(a).all():
        raise ValueError(f"{key} holds NaN or infinite values")
    return a


def _validation_from(
    info: dict, config: TrainConfig, params: dict, extra: dict, dtype: str, epochs_done: int
) -> dict[str, Any]:
    """The validation split and best-epoch bookkeeping of a checkpoint, as the keyword
    arguments of TrainingState (those of a run without validation set when absent)."""
    n_validation = _int(info, "n_validation") if "n_validation" in info else 0
    stale = _int(info, "epochs_without_improvement") if "epochs_without_improvement" in info else 0
    best_epoch = info.get("best_epoch")
    if best_epoch is not None:
        best_epoch = _int(info, "best_epoch", 1)
    best_loss = info.get("best_val_loss")
    if best_loss is not None and (
        isinstance(best_loss, bool)
        or not isinstance(best_loss, (int, float))
        or not np.isfinite(best_loss)
    ):
        raise ValueError(f"best_val_loss must be a finite number, not {best_loss!r}")
    if (
        (best_epoch is None) != (best_loss is None)
        or (best_epoch or 0) > epochs_done
        or stale > epochs_done
        or (n_validation == 0 and (best_epoch or stale))
    ):
        raise ValueError(
            f"inconsistent validation bookkeeping: best epoch {best_epoch} with "
            f"loss {best_loss}, {stale} epochs without improvement, "
            f"{epochs_done} epochs done, {n_validation} validation samples"
        )
    rows = extra.get(_VALIDATION_ROWS)
    if (rows is None) != (config.validation_fraction is None):
        raise ValueError(
            f"the array {_VALIDATION_ROWS} must be present exactly when validation_fraction is set"
        )
    if rows is not None and (
        rows.ndim != 1 or rows.dtype != np.int64 or rows.shape[0] != n_validation
    ):
        raise ValueError(f"{_VALIDATION_ROWS} must be {n_validation} int64 row numbers")
    kept = best_epoch is not None and config.early_stopping is not None
    best_parameters = _parameter_like(_BEST, params, extra, dtype) if kept else None
    return {
        "n_validation": n_validation,
        "validation_indices": rows,
        "best_val_loss": None if best_loss is None else float(best_loss),
        "best_epoch": best_epoch,
        "best_parameters": best_parameters,
        "epochs_without_improvement": stale,
    }
