"""Saving and loading trained models as ``.npz`` files.

A model file is an uncompressed NumPy ``.npz`` archive holding the four parameter
arrays ``W1``, ``b1``, ``W2``, ``b2`` and ``metadata``: a 0-d unicode array with a
JSON object (``format_version``, sizes, dtype, backend, training settings, simplenn
version). It is read with ``allow_pickle=False`` and written atomically: a temporary
file in the same directory, flushed and fsynced, then renamed over the target.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelFileError
from .network import PARAMETER_NAMES, TwoLayerNet

FORMAT_VERSION = 1


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` is always either the old file or the
    complete new one: temp file in the same directory, fsync, rename, fsync the dir."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent or ".", prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:
        dir_fd = os.open(path.parent or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def save_model(net: TwoLayerNet, path: str | os.PathLike, *, metadata: dict[str, Any] | None = None) -> Path:
    """Save ``net``'s parameters and ``metadata`` (JSON-serialisable) to ``path``."""
    from . import __version__

    path = Path(path)
    if not path.parent.is_dir():
        raise ModelFileError(f"cannot save model to {path}: directory {path.parent} does not exist")
    meta = {
        "format_version": FORMAT_VERSION,
        "simplenn_version": __version__,
        "n_inputs": net.n_inputs, "n_hidden": net.n_hidden, "n_classes": net.n_classes,
        "dtype": net.dtype.name, "backend": net.backend,
        **(metadata or {}),
    }
    buffer = io.BytesIO()
    np.savez(buffer, metadata=np.array(json.dumps(meta)), **net.parameters())
    atomic_write_bytes(path, buffer.getvalue())
    return path


def read_model_file(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The parameter arrays and metadata of a model file, fully validated.

    Raises :class:`ModelFileError` naming the file and the problem for anything that
    is not a complete model file of a format this version reads.
    """
    path = Path(path)
    where = f"model file {path}"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelFileError(f"{where} does not exist") from None
    except OSError as exc:
        raise ModelFileError(f"{where} cannot be read: {exc.strerror or exc}") from None
    if not data.startswith(b"PK"):
        raise ModelFileError(f"{where} is not a simplenn model (.npz archive)")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise ModelFileError(f"{where} holds object arrays, which simplenn refuses to "
                                 "unpickle") from None
        raise ModelFileError(f"{where} is damaged: {exc}") from None
    except (zipfile.BadZipFile, OSError, EOFError, KeyError, TypeError) as exc:
        raise ModelFileError(f"{where} is damaged or truncated ({type(exc).__name__}: {exc})") from None
    if "metadata" not in arrays:
        raise ModelFileError(f"{where} has no metadata: not a simplenn model")
    meta_array = arrays.pop("metadata")
    try:
        meta = json.loads(str(meta_array[()])) if meta_array.dtype.kind == "U" and meta_array.ndim == 0 else None
    except (json.JSONDecodeError, ValueError):
        meta = None
    if not isinstance(meta, dict):
        raise ModelFileError(f"{where} has unreadable metadata (not a JSON object)")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ModelFileError(f"{where} has no valid format_version in its metadata")
    if version > FORMAT_VERSION:
        raise ModelFileError(f"{where} has format version {version}, newer than this simplenn "
                             f"reads ({FORMAT_VERSION}); upgrade simplenn")
    sizes = {}
    for key in ("n_inputs", "n_hidden", "n_classes"):
        value = meta.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ModelFileError(f"{where} metadata has an invalid {key}: {value!r}")
        sizes[key] = value
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
    return {k: arrays[k] for k in PARAMETER_NAMES}, meta


def load_model(path: str | os.PathLike, *, backend: str | None = None) -> TwoLayerNet:
    """Restore a saved model on ``backend`` (any backend; ``None`` as in TwoLayerNet)."""
    params, meta = read_model_file(path)
    net = TwoLayerNet(meta["n_inputs"], meta["n_hidden"], meta["n_classes"],
                      backend=backend, dtype=meta["dtype"])
    net.set_parameters(params)
    net.metadata = meta
    return net
