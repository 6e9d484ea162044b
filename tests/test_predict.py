"""``python -m simplenn.predict`` and the MNIST-style preprocessing of user images."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import simplenn
from simplenn import _optional
from simplenn.errors import SimplennError

PIL = pytest.importorskip("PIL", reason="predict needs Pillow: pip install Pillow")
from PIL import Image, ImageDraw  # noqa: E402

from simplenn.data.preprocess import ImageError, load_digit, to_mnist  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_blas_thread")


@pytest.fixture(scope="module")
def mnist_small():
    train, test = simplenn.load_mnist()
    return train, test


@pytest.fixture(scope="module")
def model_path(tmp_path_factory, mnist_small):
    """A model trained for this module: 64 hidden units, 2 epochs (about 96% on MNIST)."""
    train, test = mnist_small
    net = simplenn.TwoLayerNet(784, 64, 10, backend="numpy", seed=0)
    simplenn.fit(net, train, epochs=2, eval_train=False, interruptible=False)
    return simplenn.save_model(net, tmp_path_factory.mktemp("model") / "model.npz")


def _render(
    row: np.ndarray, path: Path, size=(112, 140), offset=(30, 20), canvas=(200, 220)
) -> Path:
    """An MNIST row as a photo-like picture: dark ink on white, scaled up, off-centre."""
    digit = Image.fromarray(255 - row.reshape(28, 28)).resize(size, Image.Resampling.BILINEAR)
    page = Image.new("L", canvas, 255)
    page.paste(digit, offset)
    page.save(path)
    return path


def _run(*args) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "simplenn.predict", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_preprocessing_an_mnist_digit_gives_it_back(mnist_small):
    # MNIST digits are already preprocessed this way: doing it again gives the same
    # picture, up to a one-pixel shift where the centre of mass rounds the other way
    for row in mnist_small[1].X[:100]:
        original = row.reshape(28, 28).astype(float)
        again = to_mnist(original).reshape(28, 28).astype(float)
        best = max(
            np.corrcoef(np.roll(again, (dy, dx), axis=(0, 1)).ravel(), original.ravel())[0, 1]
            for dy in (-1, 0, 1)
            for dx in (-1, 0, 1)
        )
        assert best > 0.95


def test_preprocessing_crops_scales_and_centres():
    img = np.full((300, 200), 255.0)  # white page, dark 100x40 bar in a corner
    img[10:110, 5:45] = 0
    out = to_mnist(img).reshape(28, 28).astype(float)
    rows, cols = np.flatnonzero(out.any(axis=1)), np.flatnonzero(out.any(axis=0))
    assert rows[-1] - rows[0] + 1 == 20 and cols[-1] - cols[0] + 1 == 8  # aspect 100:40 in a 20 box
    ys, xs = np.indices(out.shape)
    com = (ys * out).sum() / out.sum(), (xs * out).sum() / out.sum()
    assert abs(com[0] - 13.5) <= 0.5 and abs(com[1] - 13.5) <= 0.5
    assert out.max() == 255 and out[0].sum() == 0 and out[:, 0].sum() == 0


def test_light_on_dark_is_not_inverted():
    dark = np.zeros((60, 60))
    dark[10:50, 25:35] = 200
    light = 255 - dark
    np.testing.assert_array_equal(to_mnist(dark), to_mnist(light))


def test_blank_image_has_no_digit():
    with pytest.raises(ImageError, match="no digit found"):
        to_mnist(np.full((40, 40), 250.0), "blank.png")


def test_renders_of_test_digits_are_classified(tmp_path, model_path, mnist_small):
    test = mnist_small[1]
    net = simplenn.load_model(model_path)
    rows = test.X[:60]
    files = [
        _render(
            row, tmp_path / f"d{i}.{'png' if i % 2 else 'jpg'}", offset=(20 + i % 9, 10 + i % 7)
        )
        for i, row in enumerate(rows)
    ]
    predicted = net.predict(np.stack([load_digit(f) for f in files]))
    assert (predicted == test.y[:60]).mean() >= 0.9
    # and on par with the model on the original digits
    assert (predicted == test.y[:60]).mean() >= (net.predict(rows) == test.y[:60]).mean() - 0.05


def _drawing(path: Path, draw, mode="RGB", background="white") -> Path:
    im = Image.new(mode, (200, 200), background)
    draw(ImageDraw.Draw(im))
    im.save(path)
    return path


def test_cli_synthetic_drawings_and_bad_files(tmp_path, model_path):
    one = _drawing(
        tmp_path / "one.png", lambda d: d.line([(100, 30), (100, 170)], fill="black", width=14)
    )
    zero = _drawing(
        tmp_path / "zero.jpg", lambda d: d.ellipse([55, 30, 145, 170], outline="black", width=14)
    )
    zero_alpha = _drawing(
        tmp_path / "zero-transparent.png",
        lambda d: d.ellipse([55, 30, 145, 170], outline=(0, 0, 0, 255), width=14),
        mode="RGBA",
        background=(0, 0, 0, 0),
    )
    chalk_one = _drawing(
        tmp_path / "chalk-one.png",  # white on black
        lambda d: d.line([(100, 30), (100, 170)], fill=230, width=14),
        mode="L",
        background=20,
    )
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(one.read_bytes()[:60])
    missing = tmp_path / "missing.png"

    r = _run(model_path, one, empty, zero, text, zero_alpha, truncated, chalk_one, missing)
    assert r.returncode == 1
    answers = dict(line.rsplit(": ", 1) for line in r.stdout.splitlines())
    assert set(answers) == {str(one), str(zero), str(zero_alpha), str(chalk_one)}
    assert answers[str(one)].startswith("1 (") and answers[str(chalk_one)].startswith("1 (")
    assert answers[str(zero)].startswith("0 (") and answers[str(zero_alpha)].startswith("0 (")
    errors = r.stderr.strip().splitlines()
    assert len(errors) == 4
    assert f"{empty}: the file is empty" in errors[0]
    assert f"{text}: not an image file" in errors[1]
    assert f"{truncated}: damaged or truncated image" in errors[2]
    assert f"{missing}: no such file" in errors[3]


def test_cli_json(tmp_path, model_path, mnist_small):
    good = _render(mnist_small[1].X[0], tmp_path / "seven.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG garbage")
    r = _run(model_path, good, bad, "--json")
    assert r.returncode == 1
    results = json.loads(r.stdout)
    assert results[0]["file"] == str(good) and results[0]["digit"] == int(mnist_small[1].y[0])
    assert len(results[0]["probabilities"]) == 10
    assert abs(sum(results[0]["probabilities"]) - 1) < 1e-4
    assert (
        results[0]["probability"] == max(results[0]["probabilities"])
        or abs(results[0]["probability"] - max(results[0]["probabilities"])) < 1e-6
    )
    assert results[1]["file"] == str(bad) and "error" in results[1] and "digit" not in results[1]
    ok = _run(model_path, good, "--json")
    assert ok.returncode == 0 and len(json.loads(ok.stdout)) == 1


def test_missing_pillow_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(
        SimplennError,
        match=r"pip install Pillow \(from a simplenn checkout: pip install '\.\[image\]'\)",
    ):
        _optional.require("PIL", "python -m simplenn.predict")
