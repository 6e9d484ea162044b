"""What a new user runs into first: a bad seed, float pixels not divided by 255, pixels of
another integer dtype or shaped as images, slicing a DataSplit, --data-dir naming a file,
and install hints that name the package index's unrelated ``simplenn``."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest

import simplenn
from simplenn.cli import common
from simplenn.core.model import UnscaledPixelsWarning
from simplenn.data.datasets import DataSplit

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_blas_thread")


@pytest.fixture(scope="module")
def small():
    """512 bundled training images, uint8 (512, 784), and their labels."""
    train, _ = simplenn.load_mnist()
    return train.X[:512], train.y[:512]


def _no_warnings(call):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return call()


# ---------------------------------------------------------------- seed


@pytest.mark.parametrize("seed", [-1, 2.5, "0", True, None])
def test_a_bad_seed_is_a_one_line_error_naming_the_range(seed):
    with pytest.raises(ValueError, match=r"^seed must be a non-negative integer .*, not ") as info:
        simplenn.TwoLayerNet(6, 4, 3, seed=seed)
    assert "\n" not in str(info.value) and repr(seed) in str(info.value)


def test_numpy_integer_seeds_are_seeds():
    a = simplenn.TwoLayerNet(6, 4, 3, seed=np.int64(7)).parameters()
    b = simplenn.TwoLayerNet(6, 4, 3, seed=7).parameters()
    np.testing.assert_array_equal(a["W1"], b["W1"])


# ---------------------------------------------------------------- unscaled float pixels


def test_float_pixels_in_0_255_warn_in_fit_predict_and_accuracy(small):
    X, y = small
    floats = X.astype(np.float32)
    net = simplenn.TwoLayerNet(784, 8, seed=0)
    for call in (
        lambda: net.predict(floats),
        lambda: net.accuracy(floats, y),
        lambda: net.loss_and_gradients(floats, y),
        lambda: simplenn.fit(net, (floats, y), epochs=1, eval_train=False, interruptible=False),
    ):
        with pytest.warns(UnscaledPixelsWarning, match=r"X / 255.*uint8") as record:
            call()
        assert record[0].filename == __file__  # points at the caller's line


def test_accuracy_warns_once(small):
    X, y = small
    net = simplenn.TwoLayerNet(784, 8, seed=0)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        net.accuracy(X.astype(np.float64), y)
    assert [w.category for w in record] == [UnscaledPixelsWarning]


@pytest.mark.parametrize(
    "make",
    [
        lambda X: X / 255,  # scaled
        lambda X: (X > 127).astype(np.float32),  # binary 0/1
        lambda X: X - 128.0,  # negative values
        lambda X: X + 0.5,  # not whole numbers
        lambda X: X * 2.0,  # beyond 255
        lambda X: np.random.default_rng(0).standard_normal(X.shape),  # generic tabular data
    ],
)
def test_other_float_data_does_not_warn(small, make):
    X, _ = small
    net = simplenn.TwoLayerNet(784, 8, seed=0)
    _no_warnings(lambda: net.predict(make(X.astype(np.float64))))


# ---------------------------------------------------------------- integer pixels, images


@pytest.mark.parametrize(
    "convert",
    [
        lambda X: X.astype(np.int64),
        lambda X: X.astype(np.uint16),
        lambda X: X.astype(np.int32),
        lambda X: X.tolist(),
    ],
)
def test_integer_pixels_of_any_dtype_are_uint8_pixels(small, convert):
    X, y = small
    net = simplenn.TwoLayerNet(784, 8, seed=0)
    expected_loss, expected = net.loss_and_gradients(X[:64], y[:64])
    loss, grads = _no_warnings(lambda: net.loss_and_gradients(convert(X[:64]), y[:64]))
    assert loss == expected_loss
    np.testing.assert_array_equal(grads["W1"], expected["W1"])


def test_fit_takes_int64_pixels_like_uint8(small):
    X, y = small
    a, b = simplenn.TwoLayerNet(784, 8, seed=0), simplenn.TwoLayerNet(784, 8, seed=0)
    for net, pixels in ((a, X), (b, X.astype(np.int64))):
        simplenn.fit(net, (pixels, y), epochs=1, eval_train=False, interruptible=False)
    np.testing.assert_array_equal(a.parameters()["W1"], b.parameters()["W1"])


@pytest.mark.parametrize("low, high", [(-1, 10), (0, 256)])
def test_integers_outside_0_255_are_a_one_line_error(low, high):
    X = np.zeros((4, 784), np.int64)
    X[0, 0], X[1, 0] = low, high
    net = simplenn.TwoLayerNet(784, 8, seed=0)
    with pytest.raises(
        ValueError,
        match=rf"pixels in 0\.\.255.*int64 values from {low} to "
        rf"{high}.*floats",
    ) as info:
        net.predict(X)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("shape", [(28, 28), (1, 28, 28), (784, 1)])
def test_images_are_flattened(small, shape):
    X, y = small
    net = simplenn.TwoLayerNet(784, 8, seed=0)
    images = X[:32].reshape(32, *shape)
    np.testing.assert_array_equal(net.predict(images), net.predict(X[:32]))
    assert net.accuracy(images, y[:32]) == net.accuracy(X[:32], y[:32])
    simplenn.fit(net, (X.reshape(-1, *shape), y), epochs=1, eval_train=False, interruptible=False)


@pytest.mark.parametrize(
    "shape, hint",
    [
        ((5, 27, 28), ""),
        ((5, 700), ""),
        ((784,), "X.reshape(1, -1)"),
        ((28, 28), "X.reshape(1, -1)"),
    ],
)
def test_other_shapes_say_what_is_expected_and_what_was_given(shape, hint):
    net = simplenn.TwoLayerNet(784, 8, seed=0)
    with pytest.raises(ValueError) as info:
        net.predict(np.zeros(shape, np.uint8))
    message = str(info.value)
    assert "(n, 784)" in message and str(shape) in message and hint in message
    assert "\n" not in message


def test_integer_pixels_and_images_on_a_backend_that_refuses_host_arrays(require_backend, small):
    require_backend("strict")
    X, _ = small
    net = simplenn.TwoLayerNet(784, 8, backend="strict", seed=0)
    expected = net.predict(X[:16])
    images = net.ops.asarray(X[:16].reshape(16, 28, 28).astype(np.int64), dtype=np.int64)
    np.testing.assert_array_equal(net.predict(images), expected)
    floats = net.ops.asarray(X[:16], dtype=np.float32)
    with pytest.warns(UnscaledPixelsWarning):
        net.predict(floats)


# ---------------------------------------------------------------- DataSplit indexing


def test_datasplit_slices_masks_and_indices(mnist):
    train, _ = mnist
    head = train[:1000]
    assert isinstance(head, DataSplit) and len(head) == 1000
    assert head.image_shape == train.image_shape and head.name == "train"
    np.testing.assert_array_equal(head.X, train.X[:1000])
    np.testing.assert_array_equal(head.y, train.y[:1000])
    assert not head.X.flags.writeable and not head.y.flags.writeable

    sevens = train[train.y == 7]
    assert len(sevens) == int((train.y == 7).sum()) and set(sevens.y.tolist()) == {7}
    picked = train[[5, 0, 5]]
    assert picked.y.tolist() == [train.y[5], train.y[0], train.y[5]]
    np.testing.assert_array_equal(picked.X[1], train.X[0])
    every_other = train[:100:2]
    assert every_other.X.flags.c_contiguous and len(every_other) == 50
    assert len(train[np.arange(3)]) == 3 and len(train[[]]) == 0


def test_datasplit_refuses_an_int_index_with_the_ways_to_get_one_sample(mnist):
    train, _ = mnist
    with pytest.raises(TypeError, match=r"split\[\[3\]\].*split\.X\[3\] and split\.y\[3\]"):
        train[3]
    for bad in ((slice(None), slice(0, 5)), np.zeros(3), np.zeros((2, 2), np.int64)):
        with pytest.raises(TypeError, match="selects samples"):
            train[bad]
    with pytest.raises(TypeError, match="not iterable"):
        iter(train)


def test_a_sliced_split_trains(mnist):
    train, test = mnist
    net = simplenn.TwoLayerNet(784, 8, seed=0)
    history = simplenn.fit(net, train[:512], test=test[:256], epochs=1, interruptible=False)
    assert history.final_test_accuracy is not None


# ---------------------------------------------------------------- --data-dir naming a file


def test_existing_dir_tells_a_file_from_a_missing_path(tmp_path):
    import argparse

    a_file = tmp_path / "README.md"
    a_file.write_text("x")
    with pytest.raises(argparse.ArgumentTypeError, match="is not a directory"):
        common.existing_dir(str(a_file))
    with pytest.raises(argparse.ArgumentTypeError, match="does not exist"):
        common.existing_dir(str(tmp_path / "absent"))
    assert common.existing_dir(str(tmp_path)) == tmp_path


@pytest.mark.parametrize(
    "command, args",
    [
        ("evaluate", ["model.npz"]),
        ("train", []),
    ],
)
def test_data_dir_naming_a_file_says_so(tmp_path, capsys, command, args):
    import importlib

    module = importlib.import_module(f"simplenn.cli.{command}")
    a_file = tmp_path / "README.md"
    a_file.write_text("x")
    with pytest.raises(SystemExit) as info:
        module.build_parser().parse_args([*args, "--data-dir", str(a_file)])
    err = capsys.readouterr().err
    assert info.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "is not a directory" in err and "does not exist" not in err


# ---------------------------------------------------------------- the distribution name


def test_the_distribution_is_not_the_package_index_s_unrelated_simplenn():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == "simplenn-backends"
    example = tomllib.loads((ROOT / "examples/simplenn-f64acc/pyproject.toml").read_text())
    assert "simplenn-backends" in example["project"]["dependencies"]


def test_no_install_hint_names_the_unrelated_simplenn():
    wrong = re.compile(r"pip install +['\"]?simplenn(\[|\b(?!-))")
    places = [ROOT / "README.md", ROOT / ".ci" / "run"]
    for folder in ("simplenn", "docs", "examples", "scripts"):
        places += [
            p
            for p in (ROOT / folder).rglob("*")
            if p.is_file() and p.suffix in (".py", ".md", ".toml", ".txt", ".sh", ".cfg")
        ]
    hits = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in places
        if p.exists()
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if wrong.search(line)
    ]
    assert not hits, hits
