"""Saving and loading trained models as ``.npz`` files.

A model file is an uncompressed NumPy ``.npz`` archive holding the four parameter
arrays ``W1``, ``b1``, ``W2``, ``b2`` and ``metadata``: a 0-d unicode array with a
JSON object (``format_version``, sizes, dtype, training settings, simplenn version and
``backend``, the backend it was trained on: information, not a requirement, since
:func:`load_model` loads it on any backend). A checkpoint (:mod:`simplenn.io.checkpoints`) is a model file with more arrays.

Files are written atomically: a temporary file in the same directory, flushed and
fsynced, then renamed over the target, so a process killed while saving leaves the
previous file intact. They are read without :func:`numpy.load`
(:mod:`simplenn.io.archive`): only a regular file, its zip directory first (unknown or
duplicate arrays refused), each ``.npy`` member's header parsed and checked against the
metadata's sizes and dtype before any data is read and decompressed a chunk at a time,
object arrays refused outright (nothing is ever unpickled); every problem becomes a
:class:`~simplenn.errors.ModelFileError` that names the file.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..core.model import TwoLayerNet
from ..core.params import PARAMETER_NAMES
from ..errors import ModelFileError
from .archive import MAX_HEADER_BYTES, NpyHeader, NpzArchive
from .atomic import atomic_write_bytes
from .backend_choice import loading_backend

FORMAT_VERSION = 1
#: Largest array member read from a model file (bytes): guards against forged headers.
MAX_ARRAY_BYTES = 2**31


def write_model_file(
    path: str | os.PathLike,
    params: Mapping[str, np.ndarray],
    *,
    backend: str,
    metadata: Mapping[str, Any] | None = None,
    extra_arrays: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """Atomically write parameters ``W1`` (d, h), ``b1`` (h,), ``W2`` (h, c), ``b2`` (c,)
    (all float32 or all float64), ``metadata`` (JSON-serialisable, merged into the
    standard fields) and ``extra_arrays`` (numeric arrays stored beside them)."""
    from .._version import __version__

    path = Path(path)
    if not path.parent.is_dir():
        raise ModelFileError(f"cannot save model to {path}: directory {path.parent} does not exist")
    W1, W2 = np.asarray(params["W1"]), np.asarray(params["W2"])
    meta = {
        "format_version": FORMAT_VERSION,
        "simplenn_version": __version__,
        "n_inputs": W1.shape[0],
        "n_hidden": W1.shape[1],
        "n_classes": W2.shape[1],
        "dtype": W1.dtype.name,
        "backend": backend,
        **(metadata or {}),
    }
    arrays = {k: np.asarray(params[k]) for k in PARAMETER_NAMES}
    for name, a in (extra_arrays or {}).items():
        if name in arrays or name == "metadata":
            raise ValueError(f"extra array name {name!r} clashes with a model array")
        arrays[name] = np.asarray(a)
    for name, a in arrays.items():
        if a.dtype.hasobject:
            raise ValueError(f"array {name!r} has dtype {a.dtype}; model files hold numbers only")
    buffer = io.BytesIO()
    np.savez(buffer, metadata=np.array(json.dumps(meta)), **arrays)
    try:
        atomic_write_bytes(path, buffer.getvalue())
    except OSError as exc:
        raise ModelFileError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def ensure_directory(path: str | os.PathLike, flag: str) -> Path:
    """Create the output directory ``path`` (given as ``flag``) with its parents if missing;
    a :class:`ModelFileError` naming it when that fails."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelFileError(
            f"{flag} {path}: cannot create the directory ({exc.strerror or exc})"
        ) from None
    return path


def save_model(
    net: TwoLayerNet, path: str | os.PathLike, *, metadata: dict[str, Any] | None = None
) -> Path:
    """Save ``net``'s parameters and ``metadata`` (JSON-serialisable) to ``path``."""
    return write_model_file(path, net.parameters(), backend=net.backend, metadata=metadata)


#: Largest metadata member read (bytes; the JSON is stored as UTF-32).
MAX_METADATA_BYTES = 1 << 24
#: The arrays a checkpoint (:mod:`simplenn.io.checkpoints`) holds beside the parameters:
#: the optimizer's state ``optimizer.W1.SLOT`` ... (``velocity_W1`` ... before format
#: version 4) and ``best_W1`` ..., each shaped like its parameter, the float64 losses of
#: the current epoch and the int64 rows held out for validation.
OPTIMIZER_PREFIX, VELOCITY_PREFIX, BEST_PREFIX = "optimizer.", "velocity_", "best_"
EPOCH_LOSSES, VALIDATION_ROWS = "epoch_losses", "validation_indices"


def checkpoint_array_limit(
    name: str, info: Mapping[str, Any], parameter_nbytes: Mapping[str, int]
) -> int | None:
    """The most bytes the array ``name`` of a checkpoint whose ``checkpoint`` metadata is
    ``info`` may hold (``parameter_nbytes``: each parameter's size; the losses and
    validation rows number at most ``n_train``), or None when no checkpoint holds it."""
    for prefix in (VELOCITY_PREFIX, BEST_PREFIX):
        if name.startswith(prefix) and name[len(prefix) :] in parameter_nbytes:
            return parameter_nbytes[name[len(prefix) :]]
    if name.startswith(OPTIMIZER_PREFIX):
        parameter, _, slot = name[len(OPTIMIZER_PREFIX) :].partition(".")
        if parameter in parameter_nbytes and slot.isidentifier():
            return parameter_nbytes[parameter]
    if name in (EPOCH_LOSSES, VALIDATION_ROWS):
        n_train = info.get("n_train")
        rows = n_train if isinstance(n_train, int) and not isinstance(n_train, bool) else 0
        return 8 * max(rows, 0)
    return None


def _known_array(name: str) -> bool:
    """Whether a model file or checkpoint may hold an array named ``name``."""
    return (
        name == "metadata"
        or name in PARAMETER_NAMES
        or checkpoint_array_limit(name, {}, dict.fromkeys(PARAMETER_NAMES, 0)) is not None
    )


def _read_metadata(archive: NpzArchive, header: NpyHeader, where: str) -> dict[str, Any]:
    """The metadata member's JSON object, read after its header was checked."""
    if header.dtype.kind != "U" or header.shape != () or header.nbytes > MAX_METADATA_BYTES:
        raise ModelFileError(
            f"{where} has unreadable metadata (not a JSON string of at most "
            f"{MAX_METADATA_BYTES // 4} characters)"
        )
    meta_array = archive.read("metadata", header)
    try:
        meta = json.loads(str(meta_array[()]))
    except (json.JSONDecodeError, ValueError, RecursionError):
        meta = None
    if not isinstance(meta, dict):
        raise ModelFileError(f"{where} has unreadable metadata (not a JSON object)")
    return meta


def _check_metadata(meta: dict[str, Any], where: str) -> dict[str, tuple[int, ...]]:
    """Validate the metadata's version, sizes and dtype; the parameters' shapes."""
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ModelFileError(f"{where} has no valid format_version in its metadata")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{where} has format version {version}, newer than this simplenn "
            f"reads ({FORMAT_VERSION}); upgrade simplenn"
        )
    if version < 1:
        raise ModelFileError(f"{where} has an invalid format version {version}")
    sizes = {}
    for key in ("n_inputs", "n_hidden", "n_classes"):
        value = meta.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ModelFileError(f"{where} metadata has an invalid {key}: {value!r}")
        sizes[key] = value
    if sizes["n_classes"] < 2:
        raise ModelFileError(f"{where} metadata has an invalid n_classes: {sizes['n_classes']}")
    if meta.get("dtype") not in ("float32", "float64"):
        raise ModelFileError(f"{where} metadata has an invalid dtype: {meta.get('dtype')!r}")
    d, h, c = sizes["n_inputs"], sizes["n_hidden"], sizes["n_classes"]
    return {"W1": (d, h), "b1": (h,), "W2": (h, c), "b2": (c,)}


def _read_archive(
    archive: NpzArchive, where: str
) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, np.ndarray]]:
    """Check every member's name and declared size, then every header, then the
    metadata, and read each array's data only once its size fits the metadata."""
    for name in archive.names:
        if not _known_array(name):
            raise ModelFileError(
                f"{where} holds an unknown array {name!r}: not a simplenn model file"
            )
        if archive.declared_size(name) > MAX_ARRAY_BYTES + 2 * MAX_HEADER_BYTES:
            raise ModelFileError(
                f"{where}: array {name!r} declares "
                f"{archive.declared_size(name)} bytes, more than any simplenn "
                f"model holds"
            )
    headers = {name: archive.header(name) for name in archive.names}
    for name, header in headers.items():
        if header.nbytes > MAX_ARRAY_BYTES:
            raise ModelFileError(
                f"{where}: array {name!r} claims {header.nbytes} bytes, more "
                f"than any simplenn model holds"
            )
    if "metadata" not in headers:
        raise ModelFileError(f"{where} has no metadata: not a simplenn model")
    meta = _read_metadata(archive, headers.pop("metadata"), where)
    expected = _check_metadata(meta, where)
    missing = [k for k in PARAMETER_NAMES if k not in headers]
    if missing:
        raise ModelFileError(f"{where} is missing the arrays {', '.join(missing)}")
    dtype = np.dtype(meta["dtype"])
    for name, shape in expected.items():
        header = headers[name]
        if header.shape != shape:
            raise ModelFileError(f"{where}: {name} has shape {header.shape}, expected {shape}")
        if header.dtype.newbyteorder("=") != dtype:
            raise ModelFileError(f"{where}: {name} has dtype {header.dtype}, expected {dtype}")
    params = {}
    for name in PARAMETER_NAMES:
        params[name] = archive.read(name, headers.pop(name))
        if not np.isfinite(params[name]).all():
            raise ModelFileError(f"{where}: {name} holds NaN or infinite values")
    info = meta.get("checkpoint")
    parameter_nbytes = {k: a.nbytes for k, a in params.items()}
    extra = {}
    for name, header in headers.items():
        if info is None:
            raise ModelFileError(
                f"{where} holds the array {name!r}, which only a checkpoint "
                f"has, without the checkpoint's metadata"
            )
        limit = checkpoint_array_limit(
            name, info if isinstance(info, dict) else {}, parameter_nbytes
        )
        if header.nbytes > limit:
            raise ModelFileError(
                f"{where}: array {name!r} claims {header.nbytes} bytes, more "
                f"than its metadata allows ({limit})"
            )
        extra[name] = archive.read(name, header)
    return params, meta, extra


def read_model_archive(
    path: str | os.PathLike, *, kind: str = "model file"
) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, np.ndarray]]:
    """``(params, metadata, extra_arrays)`` of a model file, the parameters fully validated.

    ``params`` holds ``W1`` (d, h), ``b1`` (h,), ``W2`` (h, c), ``b2`` (c,) in the dtype
    the metadata names; ``extra_arrays`` the arrays only a checkpoint holds, each no larger
    than its metadata allows but otherwise unchecked. ``kind`` names the file in messages.
    Only a regular file is read, with memory bounded by the sizes its metadata declares
    (:class:`~simplenn.io.archive.NpzArchive`). Raises :class:`ModelFileError` naming the
    file and the problem.
    """
    path = Path(path)
    where = f"{kind} {path}"
    with NpzArchive(path, where) as archive:
        return _read_archive(archive, where)


def read_model_file(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The parameter arrays and metadata of a model file, fully validated.

    Raises :class:`ModelFileError` naming the file and the problem for anything that
    is not a complete model file of a format this version reads.
    """
    params, meta, _ = read_model_archive(path)
    return params, meta


def load_model(path: str | os.PathLike, *, backend: str | None = "auto") -> TwoLayerNet:
    """Restore a saved model on ``backend``: ``"auto"`` (the default) is the backend it
    was trained on when that can run here, else the best that does, with a one-line
    :class:`~simplenn.io.backend_choice.BackendFallbackWarning`; a backend's name is that
    backend; ``None`` as in TwoLayerNet (``$SIMPLENN_BACKEND``, else numpy). The
    model's metadata is ``net.metadata``."""
    params, meta = read_model_file(path)
    backend = loading_backend(meta.get("backend"), backend, what=f"model {path}")
    net = TwoLayerNet(
        meta["n_inputs"], meta["n_hidden"], meta["n_classes"], backend=backend, dtype=meta["dtype"]
    )
    net.set_parameters(params)
    net.metadata = meta
    return net
