"""Image-classification datasets in IDX format: the bundled MNIST and any MNIST-like directory.

A dataset directory holds the four standard MNIST file names (see :data:`STANDARD_FILES`),
each either plain or gzip-compressed (``NAME.gz``). :func:`load_idx_dataset` reads and
validates them (:func:`load_idx_split` one split, needing only its two files);
:func:`load_mnist` loads the copy of MNIST shipped inside the package.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

import numpy as np

from ..errors import DataError
from .idx import parse_idx, read_idx_bytes


@dataclass(frozen=True, eq=False)
class DataSplit:
    """One split (e.g. ``"train"`` or ``"test"``) of an image-classification dataset.

    Attributes:
        X: images, shape ``(n, rows * cols)``, dtype uint8, C-contiguous; each row is one
            image flattened in row-major order. Read-only when it comes from the loaders.
        y: labels, shape ``(n,)``, dtype int64.
        image_shape: ``(rows, cols)`` of one image.
        name: the split's name, e.g. ``"train"`` or ``"test"``.

    Equality is identity (arrays make value equality ambiguous).

    Indexing selects samples, X and y together, and gives a :class:`DataSplit` with the
    same ``image_shape`` and ``name``: ``split[:1000]`` (a slice), ``split[mask]`` (a
    (n,) bool array), ``split[indices]`` (a 1-D array or list of ints). An int index is
    refused with a TypeError (a DataSplit always has a sample axis): use ``split[[i]]``
    for a 1-sample split, or ``split.X[i]`` and ``split.y[i]``. A read-only split gives
    read-only slices. A DataSplit is not iterable.
    """

    X: np.ndarray
    y: np.ndarray
    image_shape: tuple[int, int]
    name: str

    def __repr__(self) -> str:
        return (
            f"DataSplit(name={self.name!r}, n={len(self.y)}, X={self.X.dtype}"
            f"{tuple(self.X.shape)}, image_shape={self.image_shape})"
        )

    def __post_init__(self) -> None:
        X, y = self.X, self.y
        rows, cols = self.image_shape
        if not isinstance(X, np.ndarray) or X.ndim != 2 or X.dtype != np.uint8:
            raise ValueError(
                f"DataSplit {self.name!r}: X must be a 2-D uint8 array (n, rows*cols), "
                f"got {_describe(X)}"
            )
        if not isinstance(y, np.ndarray) or y.ndim != 1 or y.dtype != np.int64:
            raise ValueError(
                f"DataSplit {self.name!r}: y must be a 1-D int64 array (n,), got {_describe(y)}"
            )
        if X.shape[0] != y.shape[0]:
            raise ValueError(
                f"DataSplit {self.name!r}: X has {X.shape[0]} rows but y has {y.shape[0]} labels"
            )
        if X.shape[1] != rows * cols:
            raise ValueError(
                f"DataSplit {self.name!r}: X has {X.shape[1]} features but image_shape "
                f"{self.image_shape} needs {rows * cols}"
            )
        if not X.flags.c_contiguous:
            raise ValueError(
                f"DataSplit {self.name!r}: X must be C-contiguous; pass np.ascontiguousarray(X)"
            )

    def __len__(self) -> int:
        """The number of samples ``n``."""
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        """The number of features per sample, ``rows * cols``."""
        return int(self.X.shape[1])

    def __getitem__(self, index: slice | np.ndarray | list[int]) -> DataSplit:
        """The samples ``index`` selects (a slice, a (n,) bool mask or 1-D ints) as a
        DataSplit: X (m, rows*cols) uint8, y (m,) int64."""
        if isinstance(index, (int, np.integer)) and not isinstance(index, (bool, np.bool_)):
            raise TypeError(
                f"DataSplit {self.name!r}: an int index would drop the sample axis; "
                f"use split[[{index}]] for a 1-sample DataSplit, or "
                f"split.X[{index}] and split.y[{index}]"
            )
        if isinstance(index, tuple):
            raise TypeError(
                f"DataSplit {self.name!r} selects samples with one index, not a "
                f"tuple; index split.X to select features"
            )
        if not isinstance(index, slice):
            index = np.asarray(index)
            if index.size == 0:
                index = index.astype(np.intp)
            if index.ndim != 1 or index.dtype.kind not in "biu":
                raise TypeError(
                    f"DataSplit {self.name!r} selects samples with a slice, a "
                    f"({len(self)},) bool mask or a 1-D array of ints, not "
                    f"{_describe(index)}"
                )
        X, y = np.ascontiguousarray(self.X[index]), self.y[index]
        if not self.X.flags.writeable:
            X.flags.writeable = False
        if not self.y.flags.writeable:
            y.flags.writeable = False
        return DataSplit(X=X, y=y, image_shape=self.image_shape, name=self.name)

    __iter__ = None  # indexing takes no int, so a DataSplit is not a sequence of samples


#: split name -> (images file name, labels file name), without the optional ``.gz``.
STANDARD_FILES: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    }
)

#: sha256 (hex) of the *decompressed* standard MNIST files, as published by Yann LeCun.
MNIST_SHA256: Mapping[str, str] = MappingProxyType(
    {
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    }
)

_ALL_NAMES = tuple(name for pair in STANDARD_FILES.values() for name in pair)


def _expected_txt(names: tuple[str, ...]) -> str:
    return ", ".join(names) + " (each plain or with .gz)"


def _describe(arr: object) -> str:
    if not isinstance(arr, np.ndarray):
        return type(arr).__name__
    return f"a {arr.ndim}-D {arr.dtype} array of shape {arr.shape}"


def _locate_files(directory: Path, names: tuple[str, ...] = _ALL_NAMES) -> dict[str, Path]:
    """Map each of the standard ``names`` to its file in ``directory`` (plain preferred
    over ``.gz``)."""
    expected = _expected_txt(names)
    if not directory.exists():
        raise DataError(
            f"{directory}: dataset directory does not exist; expected it to contain {expected}. "
            "Use simplenn.load_mnist() for the bundled MNIST or simplenn.data.download.download_mnist() "
            "to fetch it"
        )
    if not directory.is_dir():
        raise DataError(
            f"{directory}: is not a directory; expected a directory containing {expected}"
        )
    found: dict[str, Path] = {}
    missing: list[str] = []
    for name in names:
        plain, gz = directory / name, directory / f"{name}.gz"
        if plain.is_file():
            found[name] = plain
        elif gz.is_file():
            found[name] = gz
        else:
            missing.append(name)
    if missing:
        raise DataError(
            f"{directory}: missing dataset file(s): {', '.join(missing)}; "
            f"the directory must contain {expected}"
        )
    return found


def _read_verified(path: Path, name: str, checksums: Mapping[str, str] | None) -> np.ndarray:
    """Read ``path`` once, check its sha256 (when ``checksums`` has ``name``) and parse it.

    Single-byte data comes back as a read-only view into the file's bytes (no copy).
    """
    data = read_idx_bytes(path)
    if checksums is not None and name in checksums:
        expected = checksums[name].strip().lower()
        got = hashlib.sha256(data).hexdigest()
        if got != expected:
            raise DataError(
                f"sha256 mismatch for {path}: expected {expected}, got {got} "
                "(the file is damaged or not the standard one)"
            )
    return parse_idx(data, os.fspath(path), copy=False)


def _load_split(
    split: str, files: dict[str, Path], n_classes: int, checksums: Mapping[str, str] | None
) -> DataSplit:
    img_name, lbl_name = STANDARD_FILES[split]
    img_path, lbl_path = files[img_name], files[lbl_name]
    images = _read_verified(img_path, img_name, checksums)
    labels = _read_verified(lbl_path, lbl_name, checksums)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(
            f"{img_path}: expected 3-D uint8 images (n, rows, cols), found {_describe(images)}"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DataError(f"{lbl_path}: expected 1-D uint8 labels (n,), found {_describe(labels)}")
    n, rows, cols = images.shape
    if n != labels.shape[0]:
        raise DataError(
            f"{img_path.parent}: {img_path.name} has {n} images but {lbl_path.name} has "
            f"{labels.shape[0]} labels; the two files must describe the same samples"
        )
    if n == 0:
        raise DataError(f"{img_path}: contains no images")
    bad = np.flatnonzero(labels >= n_classes)
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"{lbl_path}: label {int(labels[i])} at index {i} is out of range: labels must be in "
            f"[0, {n_classes}) ({bad.size} bad label(s) in all); pass n_classes= if the dataset "
            "has more classes"
        )
    X = images.reshape(n, rows * cols)
    y = labels.astype(np.int64)
    X.flags.writeable = False
    y.flags.writeable = False
    return DataSplit(X=X, y=y, image_shape=(int(rows), int(cols)), name=split)


def example_inputs(n_features: int = 784, n: int = 8) -> np.ndarray:
    """``n`` rows of zero pixels (uint8, read-only) shaped and flagged as the splits of
    :func:`load_dataset` hold their images: what a warm-up compiles for before the data
    has loaded (:func:`simplenn.core.training.warm_up`)."""
    X = np.zeros((n, n_features), np.uint8)
    X.flags.writeable = False
    return X


def load_idx_dataset(
    directory: str | os.PathLike[str],
    *,
    n_classes: int = 10,
    checksums: Mapping[str, str] | None = None,
) -> tuple[DataSplit, DataSplit]:
    """Load and validate an MNIST-layout dataset directory.

    Args:
        directory: holds the four names of :data:`STANDARD_FILES`, each plain or ``.gz``
            (the plain file wins when both exist).
        n_classes: labels must lie in ``[0, n_classes)``.
        checksums: optional map from standard (uncompressed) file name to the hex sha256
            of its decompressed bytes; every listed file is verified.

    Returns:
        ``(train, test)``: :class:`DataSplit` objects with read-only ``X`` (n, rows*cols)
        uint8 and ``y`` (n,) int64.

    Raises:
        DataError: a file is missing, unreadable, malformed, fails its checksum, or the
            files disagree with each other (counts, label range, image shapes).
    """
    _check_options(n_classes, checksums)
    directory = Path(directory)
    files = _locate_files(directory)
    train = _load_split("train", files, int(n_classes), checksums)
    test = _load_split("test", files, int(n_classes), checksums)
    if train.image_shape != test.image_shape:
        raise DataError(
            f"{directory}: train images are {train.image_shape[0]}x{train.image_shape[1]} "
            f"({files[STANDARD_FILES['train'][0]].name}) but test images are "
            f"{test.image_shape[0]}x{test.image_shape[1]} ({files[STANDARD_FILES['test'][0]].name}); "
            "both splits must have the same image shape"
        )
    return train, test


def load_idx_split(
    directory: str | os.PathLike[str],
    split: str = "test",
    *,
    n_classes: int = 10,
    checksums: Mapping[str, str] | None = None,
) -> DataSplit:
    """Load and validate one split of an MNIST-layout dataset directory, reading (and
    needing) only that split's two files of :data:`STANDARD_FILES`.

    Args and errors as :func:`load_idx_dataset`; ``split`` is ``"train"`` or ``"test"``.

    Returns:
        The :class:`DataSplit`, read-only ``X`` (n, rows*cols) uint8 and ``y`` (n,) int64.
    """
    if split not in STANDARD_FILES:
        raise ValueError(f"split must be one of {list(STANDARD_FILES)}, not {split!r}")
    _check_options(n_classes, checksums)
    files = _locate_files(Path(directory), STANDARD_FILES[split])
    return _load_split(split, files, int(n_classes), checksums)


def _check_options(n_classes: int, checksums: Mapping[str, str] | None) -> None:
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 1:
        raise ValueError(f"n_classes must be a positive integer, got {n_classes!r}")
    if checksums is not None:
        unknown = sorted(set(checksums) - set(_ALL_NAMES))
        if unknown:
            raise ValueError(
                f"checksums has unknown file name(s) {unknown}; keys must be among {list(_ALL_NAMES)}"
            )


def bundled_mnist_dir() -> Path:
    """The directory of the MNIST copy shipped inside the package (four ``.gz`` files)."""
    return Path(__file__).resolve().parent / "mnist"


_CACHE: dict[Path, tuple[DataSplit, DataSplit]] = {}
_CACHE_LOCK = threading.Lock()


def load_mnist() -> tuple[DataSplit, DataSplit]:
    """Load the bundled MNIST: ``(train, test)`` with 60000 and 10000 samples.

    ``X`` is (n, 784) uint8, ``y`` is (n,) int64 in 0..9, both read-only. Every file's
    sha256 is checked against :data:`MNIST_SHA256`. The result is cached per process, so
    later calls return the very same (immutable) objects.
    """
    directory = bundled_mnist_dir()
    with _CACHE_LOCK:
        cached = _CACHE.get(directory)
        if cached is None:
            cached = load_idx_dataset(directory, checksums=MNIST_SHA256)
            _CACHE[directory] = cached
    return cached


def load_dataset(
    directory: str | os.PathLike[str] | None = None,
) -> tuple[DataSplit, DataSplit, str]:
    """``(train, test, source)``: the bundled MNIST when ``directory`` is None, else
    :func:`load_idx_dataset` of it; ``source`` describes where the data came from."""
    if directory is None:
        return (*load_mnist(), "bundled MNIST")
    return (*load_idx_dataset(directory), str(directory))


def load_test_split(directory: str | os.PathLike[str] | None = None) -> tuple[DataSplit, str]:
    """``(test, source)``: the test split alone, of the bundled MNIST when ``directory`` is
    None (checksummed), else of :func:`load_idx_split` of it (the training files need not
    be there); ``source`` as in :func:`load_dataset`."""
    if directory is None:
        with _CACHE_LOCK:
            cached = _CACHE.get(bundled_mnist_dir())
        if cached is not None:
            return cached[1], "bundled MNIST"
        return load_idx_split(bundled_mnist_dir(), "test", checksums=MNIST_SHA256), "bundled MNIST"
    return load_idx_split(directory, "test"), str(directory)
