"""Tests for simplenn.data.datasets: the bundled MNIST and validation of IDX dataset directories."""

from __future__ import annotations

import gzip
import hashlib

import numpy as np
import pytest

from simplenn.data.datasets import (
    MNIST_SHA256,
    STANDARD_FILES,
    DataSplit,
    bundled_mnist_dir,
    load_idx_dataset,
    load_idx_split,
    load_mnist,
    load_test_split,
)
from simplenn.data.idx import write_idx
from simplenn.errors import DataError

TRAIN_IMG, TRAIN_LBL = STANDARD_FILES["train"]
TEST_IMG, TEST_LBL = STANDARD_FILES["test"]


def make_dataset(directory, *, n_train=6, n_test=4, shape=(3, 2), gz=False, overrides=None):
    """Write a tiny synthetic dataset; ``overrides`` maps a standard name to a replacement array."""
    rng = np.random.default_rng(1)
    arrays = {
        TRAIN_IMG: rng.integers(0, 256, size=(n_train, *shape), dtype=np.uint8),
        TRAIN_LBL: (np.arange(n_train) % 10).astype(np.uint8),
        TEST_IMG: rng.integers(0, 256, size=(n_test, *shape), dtype=np.uint8),
        TEST_LBL: (np.arange(n_test)[::-1] % 10).astype(np.uint8),
    }
    arrays.update(overrides or {})
    directory.mkdir(parents=True, exist_ok=True)
    for name, arr in arrays.items():
        write_idx(directory / (name + (".gz" if gz else "")), arr)
    return arrays


# ---------------------------------------------------------------- bundled MNIST


def test_bundled_mnist_loads():
    train, test = load_mnist()
    for split, n, name in ((train, 60000, "train"), (test, 10000, "test")):
        assert isinstance(split, DataSplit)
        assert split.name == name
        assert len(split) == n and split.X.shape == (n, 784) and split.n_features == 784
        assert split.X.dtype == np.uint8 and split.X.flags.c_contiguous
        assert split.y.shape == (n,) and split.y.dtype == np.int64
        assert split.image_shape == (28, 28)
        assert set(np.unique(split.y).tolist()) == set(range(10))
        assert not split.X.flags.writeable and not split.y.flags.writeable
    # Well-known facts about the standard files.
    assert train.y[:8].tolist() == [5, 0, 4, 1, 9, 2, 1, 3]
    assert test.y[:8].tolist() == [7, 2, 1, 0, 4, 1, 4, 9]
    assert int(train.X.max()) == 255 and int(train.X.min()) == 0


def test_bundled_mnist_is_cached():
    a = load_mnist()
    b = load_mnist()
    assert a[0] is b[0] and a[1] is b[1]
    with pytest.raises(ValueError):
        a[0].X[0, 0] = 1


def test_bundled_files_match_checksums():
    for name, digest in MNIST_SHA256.items():
        raw = gzip.decompress((bundled_mnist_dir() / f"{name}.gz").read_bytes())
        assert hashlib.sha256(raw).hexdigest() == digest


def test_wrong_checksum_raises(tmp_path):
    make_dataset(tmp_path, gz=True)
    with pytest.raises(
        DataError,
        match=r"sha256 mismatch for .*train-images-idx3-ubyte\.gz: expected 0{64}, "
        r"got [0-9a-f]{64} \(the file is damaged or not the standard one\)",
    ):
        load_idx_dataset(tmp_path, checksums={TRAIN_IMG: "0" * 64})


def test_wrong_checksum_on_bundled_copy():
    bad = dict(MNIST_SHA256)
    bad[TEST_LBL] = "f" * 64
    with pytest.raises(DataError, match=r"sha256 mismatch for .*t10k-labels-idx1-ubyte\.gz"):
        load_idx_dataset(bundled_mnist_dir(), checksums=bad)


def test_correct_checksums_pass(tmp_path):
    arrays = make_dataset(tmp_path)
    digests = {name: hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() for name in arrays}
    train, test = load_idx_dataset(tmp_path, checksums=digests)
    assert len(train) == 6 and len(test) == 4


def test_unknown_checksum_key(tmp_path):
    make_dataset(tmp_path)
    with pytest.raises(ValueError, match="unknown file name"):
        load_idx_dataset(tmp_path, checksums={"train-images": "0" * 64})


# ---------------------------------------------------------------- synthetic datasets


@pytest.mark.parametrize("gz", [False, True])
def test_synthetic_dataset(tmp_path, gz):
    arrays = make_dataset(tmp_path, gz=gz)
    train, test = load_idx_dataset(tmp_path)
    assert train.name == "train" and test.name == "test"
    assert train.image_shape == test.image_shape == (3, 2)
    assert train.X.shape == (6, 6) and test.X.shape == (4, 6) and train.n_features == 6
    np.testing.assert_array_equal(train.X, arrays[TRAIN_IMG].reshape(6, 6))
    np.testing.assert_array_equal(test.X[1], arrays[TEST_IMG][1].ravel())
    np.testing.assert_array_equal(train.y, arrays[TRAIN_LBL])
    assert train.y.dtype == np.int64 and train.X.dtype == np.uint8


def test_plain_preferred_over_gz(tmp_path):
    make_dataset(tmp_path, gz=True)
    plain_labels = np.full(6, 7, dtype=np.uint8)
    write_idx(tmp_path / TRAIN_LBL, plain_labels)
    train, _ = load_idx_dataset(tmp_path)
    assert train.y.tolist() == [7] * 6


def test_mixed_plain_and_gz(tmp_path):
    make_dataset(tmp_path)
    (tmp_path / TEST_IMG).rename(tmp_path / "tmp")
    (tmp_path / f"{TEST_IMG}.gz").write_bytes(gzip.compress((tmp_path / "tmp").read_bytes()))
    _, test = load_idx_dataset(tmp_path)
    assert len(test) == 4


def test_n_classes(tmp_path):
    make_dataset(tmp_path, overrides={TRAIN_LBL: np.array([0, 1, 2, 3, 11, 12], np.uint8)})
    with pytest.raises(DataError) as info:
        load_idx_dataset(tmp_path)
    msg = str(info.value)
    assert TRAIN_LBL in msg and "label 11 at index 4" in msg and "[0, 10)" in msg
    train, _ = load_idx_dataset(tmp_path, n_classes=13)
    assert train.y.max() == 12
    with pytest.raises(ValueError, match="n_classes"):
        load_idx_dataset(tmp_path, n_classes=0)


def test_mismatched_counts(tmp_path):
    make_dataset(tmp_path, overrides={TRAIN_LBL: np.zeros(5, np.uint8)})
    with pytest.raises(DataError, match=f"{TRAIN_IMG} has 6 images but {TRAIN_LBL} has 5 labels"):
        load_idx_dataset(tmp_path)


@pytest.mark.parametrize(
    "images",
    [
        np.zeros((6, 3, 2), np.int16),
        np.zeros((6, 6), np.uint8),
        np.zeros((6, 3, 2, 1), np.uint8),
    ],
    ids=["int16", "2-D", "4-D"],
)
def test_wrong_image_dtype_or_ndim(tmp_path, images):
    make_dataset(tmp_path, overrides={TRAIN_IMG: images})
    with pytest.raises(DataError, match=f"{TRAIN_IMG}: expected 3-D uint8 images"):
        load_idx_dataset(tmp_path)


@pytest.mark.parametrize(
    "labels", [np.zeros(6, np.int32), np.zeros((6, 1), np.uint8)], ids=["int32", "2-D"]
)
def test_wrong_label_dtype_or_ndim(tmp_path, labels):
    make_dataset(tmp_path, overrides={TEST_LBL: labels})
    with pytest.raises(DataError, match=f"{TEST_LBL}: expected 1-D uint8 labels"):
        load_idx_dataset(tmp_path)


def test_empty_split(tmp_path):
    make_dataset(tmp_path, n_test=0)
    with pytest.raises(DataError, match=f"{TEST_IMG}: contains no images"):
        load_idx_dataset(tmp_path)


def test_missing_files(tmp_path):
    make_dataset(tmp_path)
    (tmp_path / TRAIN_LBL).unlink()
    (tmp_path / TEST_IMG).unlink()
    with pytest.raises(DataError) as info:
        load_idx_dataset(tmp_path)
    msg = str(info.value)
    assert str(tmp_path) in msg
    assert f"missing dataset file(s): {TRAIN_LBL}, {TEST_IMG}" in msg
    assert all(name in msg for name in (TRAIN_IMG, TEST_LBL))  # the expected list
    assert ".gz" in msg


def test_missing_directory(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="does not exist") as info:
        load_idx_dataset(missing)
    assert str(missing) in str(info.value) and TRAIN_IMG in str(info.value)


def test_not_a_directory(tmp_path):
    f = tmp_path / "file"
    f.write_bytes(b"x")
    with pytest.raises(DataError, match="not a directory"):
        load_idx_dataset(f)


def test_train_test_shape_mismatch(tmp_path):
    make_dataset(tmp_path, overrides={TEST_IMG: np.zeros((4, 2, 3), np.uint8)})
    with pytest.raises(DataError, match=r"train images are 3x2 .* but test images are 2x3"):
        load_idx_dataset(tmp_path)


def test_damaged_file_is_named(tmp_path):
    make_dataset(tmp_path, gz=True)
    path = tmp_path / f"{TEST_IMG}.gz"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError) as info:
        load_idx_dataset(tmp_path)
    assert str(path) in str(info.value)


def test_datasplit_validates():
    X = np.zeros((3, 4), np.uint8)
    y = np.zeros(3, np.int64)
    split = DataSplit(X=X, y=y, image_shape=(2, 2), name="x")
    assert len(split) == 3 and split.n_features == 4
    with pytest.raises(ValueError, match="rows"):
        DataSplit(X=X, y=np.zeros(2, np.int64), image_shape=(2, 2), name="x")
    with pytest.raises(ValueError, match="uint8"):
        DataSplit(X=X.astype(np.float32), y=y, image_shape=(2, 2), name="x")
    with pytest.raises(ValueError, match="image_shape"):
        DataSplit(X=X, y=y, image_shape=(3, 3), name="x")
    with pytest.raises(AttributeError):
        split.name = "y"  # frozen


# ---------------------------------------------------------------- one split


def test_one_split_needs_only_its_own_files(tmp_path):
    arrays = make_dataset(tmp_path)
    for name in (TRAIN_IMG, TRAIN_LBL):
        (tmp_path / name).unlink()
    test = load_idx_split(tmp_path, "test")
    assert test.name == "test" and test.image_shape == (3, 2) and len(test) == 4
    np.testing.assert_array_equal(test.X, arrays[TEST_IMG].reshape(4, 6))
    assert load_test_split(tmp_path)[0].y.tolist() == test.y.tolist()
    with pytest.raises(DataError) as info:
        load_idx_split(tmp_path, "train")
    message = str(info.value)
    assert f"missing dataset file(s): {TRAIN_IMG}, {TRAIN_LBL}" in message
    assert TEST_IMG not in message


def test_one_split_checks_its_arguments(tmp_path):
    make_dataset(tmp_path)
    with pytest.raises(ValueError, match="split must be one of"):
        load_idx_split(tmp_path, "validation")
    with pytest.raises(ValueError, match="n_classes"):
        load_idx_split(tmp_path, "test", n_classes=0)
    with pytest.raises(DataError, match="sha256 mismatch"):
        load_idx_split(tmp_path, "test", checksums={TEST_IMG: "0" * 64})
    assert len(load_idx_split(tmp_path, "test", checksums={TRAIN_IMG: "0" * 64})) == 4


def test_bundled_test_split_alone():
    test, source = load_test_split()
    assert source == "bundled MNIST" and len(test) == 10000 and test.name == "test"
    np.testing.assert_array_equal(test.y, load_mnist()[1].y)


def test_datasplit_repr_is_short():
    train, _ = load_mnist()
    assert (
        repr(train[:1000])
        == "DataSplit(name='train', n=1000, X=uint8(1000, 784), image_shape=(28, 28))"
    )
