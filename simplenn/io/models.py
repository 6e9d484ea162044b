"""Saving and loading trained models as ``.npz`` files.

A model file is an uncompressed NumPy ``.npz`` archive holding the four parameter
arrays ``W1``, ``b1``, ``W2``, ``b2`` and ``metadata``: a 0-d unicode array with a
JSON object (``format_version``, sizes, dtype, training settings, simplenn version and
``backend``, the backend it was trained on: information, not a requirement, since
:func:`load_model` loads it on any backend). A checkpoint (:mod:`simplenn.io.checkpoints`) is a model file with more arrays.

Files are written atomically: a temporary file in the same directory, flushed and
fsynced, then renamed over the target, so a process killed while saving leaves the
previous file intact. They are read without :func:`numpy.load`: each ``.npy`` member's
header is parsed and checked (dtype, shape, size) before any data is read, object
arrays are refused outright (nothing is ever unpickled) and every problem becomes a
:class:`~simplenn.errors.ModelFileError` that names the file.
"""

from __future__ import annotations

import io
import json
import lzma
import math
import os
import struct
import tokenize
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_write_bytes
from .backend_choice import loading_backend
from ..errors import ModelFileError
from ..core.model import TwoLayerNet
from ..core.params import PARAMETER_NAMES

FORMAT_VERSION = 1
#: Largest array member read from a model file (bytes): guards against forged headers.
MAX_ARRAY_BYTES = 2**31
_MAX_HEADER = 10_000

# What the zip and .npy parsers raise on damaged input (all caught and reported); the
# file is in memory by then, so an OSError is a decompressor's (bz2: "Invalid data
# stream"), as is an LZMAError.
_DAMAGE = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, KeyError, NotImplementedError,
           RuntimeError, zlib.error, lzma.LZMAError, OSError, struct.error, OverflowError,
           ValueError, TypeError, tokenize.TokenError)


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
        "n_inputs": W1.shape[0], "n_hidden": W1.shape[1], "n_classes": W2.shape[1],
        "dtype": W1.dtype.name, "backend": backend,
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
        raise ModelFileError(f"{flag} {path}: cannot create the directory "
                             f"({exc.strerror or exc})") from None
    return path


def save_model(net: TwoLayerNet, path: str | os.PathLike, *, metadata: dict[str, Any] | None = None) -> Path:
    """Save ``net``'s parameters and ``metadata`` (JSON-serialisable) to ``path``."""
    return write_model_file(path, net.parameters(), backend=net.backend, metadata=metadata)


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> np.ndarray:
    """One ``.npy`` member -> array, checking the header before reading any data."""
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f, max_header_size=_MAX_HEADER)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f, max_header_size=_MAX_HEADER)
        else:
            raise ModelFileError(f"{where}: array {info.filename!r} uses .npy format version "
                                 f"{version[0]}.{version[1]}, which simplenn does not read")
        if dtype.hasobject:
            raise ModelFileError(f"{where}: array {info.filename!r} holds Python objects "
                                 f"(dtype {dtype}); simplenn refuses to unpickle them")
        if not all(isinstance(s, int) and s >= 0 for s in shape):
            raise ModelFileError(f"{where}: array {info.filename!r} has an invalid shape {shape}")
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes > MAX_ARRAY_BYTES:
            raise ModelFileError(f"{where}: array {info.filename!r} claims {nbytes} bytes, more "
                                 f"than any simplenn model holds")
        data = f.read(nbytes + 1)
    if len(data) != nbytes:
        raise ModelFileError(f"{where}: array {info.filename!r} has {len(data)} bytes of data, "
                             f"expected {nbytes}: the file is damaged or truncated")
    array = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    return np.array(array, dtype=dtype.newbyteorder("="))


def _read_arrays(path: Path, where: str) -> dict[str, np.ndarray]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelFileError(f"{where} does not exist") from None
    except IsADirectoryError:
        raise ModelFileError(f"{where} is a directory, not a model file") from None
    except OSError as exc:
        raise ModelFileError(f"{where} cannot be read: {exc.strerror or exc}") from None
    if not data:
        raise ModelFileError(f"{where} is empty")
    if not data.startswith(b"PK"):
        raise ModelFileError(f"{where} is not a simplenn model (.npz archive)")
    arrays: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            for info in zf.infolist():
                if info.is_dir():
                    continue
                if not info.filename.endswith(".npy"):
                    raise ModelFileError(f"{where} holds {info.filename!r}, which is not a .npy array")
                arrays[info.filename[:-4]] = _read_member(zf, info, where)
    except ModelFileError:
        raise
    except _DAMAGE as exc:
        raise ModelFileError(f"{where} is damaged or truncated ({type(exc).__name__}: {exc})") from None
    return arrays


def read_model_archive(
    path: str | os.PathLike, *, kind: str = "model file"
) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, np.ndarray]]:
    """``(params, metadata, extra_arrays)`` of a model file, the parameters fully validated.

    ``params`` holds ``W1`` (d, h), ``b1`` (h,), ``W2`` (h, c), ``b2`` (c,) in the dtype
    the metadata names; ``extra_arrays`` every other array, unchecked. ``kind`` names
    the file in messages. Raises :class:`ModelFileError` naming the file and the problem.
    """
    path = Path(path)
    where = f"{kind} {path}"
    arrays = _read_arrays(path, where)
    if "metadata" not in arrays:
        raise ModelFileError(f"{where} has no metadata: not a simplenn model")
    meta_array = arrays.pop("metadata")
    try:
        meta = json.loads(str(meta_array[()])) if meta_array.dtype.kind == "U" and meta_array.ndim == 0 else None
    except (json.JSONDecodeError, ValueError, RecursionError):
        meta = None
    if not isinstance(meta, dict):
        raise ModelFileError(f"{where} has unreadable metadata (not a JSON object)")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ModelFileError(f"{where} has no valid format_version in its metadata")
    if version > FORMAT_VERSION:
        raise ModelFileError(f"{where} has format version {version}, newer than this simplenn "
                             f"reads ({FORMAT_VERSION}); upgrade simplenn")
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
    expected = {"W1": (d, h), "b1": (h,), "W2": (h, c), "b2": (c,)}
    missing = [k for k in PARAMETER_NAMES if k not in arrays]
    if missing:
        raise ModelFileError(f"{where} is missing the arrays {', '.join(missing)}")
    for name, shape in expected.items():
        a = arrays[name]
        if a.shape != shape:
            raise ModelFileError(f"{where}: {name} has shape {a.shape}, expected {shape}")
        if a.dtype != np.dtype(meta["dtype"]):
            raise ModelFileError(f"{where}: {name} has dtype {a.dtype}, expected {meta['dtype']}")
        if not np.isfinite(a).all():
            raise ModelFileError(f"{where}: {name} holds NaN or infinite values")
    params = {k: arrays.pop(k) for k in PARAMETER_NAMES}
    return params, meta, arrays


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
    net = TwoLayerNet(meta["n_inputs"], meta["n_hidden"], meta["n_classes"],
                      backend=backend, dtype=meta["dtype"])
    net.set_parameters(params)
    net.metadata = meta
    return net
