"""Augmentation: seeded draws independent of how an epoch is cut, bitwise resume with
distortions on, the test set never distorted, the command's flags and preset."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import numpy as np
import pytest

import simplenn
from simplenn.backends.numpy_backend import NumpyImageOps, NumpyOps
from simplenn.core.augment import (
    AUGMENTATIONS,
    distort_images,
    draw_batches,
    elastic_basis,
    elastic_levels,
    gaussian_filter_matrix,
)
from simplenn.core.training import TrainingInterrupted
from simplenn.io.checkpoints import load_checkpoint, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_blas_thread")
SETTINGS = dict(epochs=2, batch_size=100, lr=0.05, seed=5, augment="elastic")
N_TRAIN = 3000


@pytest.fixture(scope="module")
def small():
    train, test = simplenn.load_mnist()
    return (train.X[:N_TRAIN], train.y[:N_TRAIN]), (test.X[:300], test.y[:300])


def _net(ops=None):
    return simplenn.TwoLayerNet(784, 16, 10, backend=ops or "numpy", seed=2)


@pytest.mark.parametrize("kind", ["affine", "elastic"])
def test_draws_depend_on_seed_epoch_and_batch_not_on_the_cut(kind):
    whole = draw_batches(kind, 3, 2, 0, 700, 100, 28)
    parts = [draw_batches(kind, 3, 2, b, e, 100, 28) for b, e in ((0, 300), (300, 400), (400, 700))]
    for field in ("matrices", "noise"):
        if getattr(whole, field) is None:
            continue
        np.testing.assert_array_equal(
            np.concatenate([getattr(p, field) for p in parts]), getattr(whole, field)
        )
    assert not np.array_equal(
        draw_batches(kind, 3, 3, 0, 100, 100, 28).matrices[:, :, 2]
        if kind == "affine"
        else draw_batches(kind, 3, 3, 0, 100, 100, 28).noise,
        whole.matrices[:100, :, 2] if kind == "affine" else whole.noise[:100],
    )


def test_elastic_fields_have_simards_scale():
    d = draw_batches("elastic", 0, 1, 0, 400, 400, 28)
    ops = NumpyImageOps(NumpyOps("float64"))
    fields = ops.elastic_fields(d.noise, elastic_levels(), elastic_basis(28))
    centre = fields[:, :, 8:20, 8:20]  # away from the zero border
    assert 1.0 < float(centre.std()) < 1.8  # alpha * sqrt(1/3) / (2 sqrt(pi) sigma) = 1.38
    assert abs(float(centre.mean())) < 0.05
    assert gaussian_filter_matrix(28)[14].sum() == pytest.approx(1.0, abs=1e-3)


def test_the_basis_is_the_gaussian_filters_square_root_on_its_largest_eigenvalues():
    B, G = elastic_basis(28), gaussian_filter_matrix(28)
    assert B.shape == (28, 8) and not B.flags.writeable
    np.testing.assert_allclose(B @ B.T, G @ G, atol=1e-4 * np.abs(G @ G).max())
    # sign convention: each column's first entry of at least half its peak is positive
    first = np.argmax(np.abs(B) >= np.abs(B).max(axis=0) / 2, axis=0)
    assert (B[first, np.arange(8)] > 0).all()


def test_elastic_fields_have_the_distribution_of_simards_smoothed_uniform_noise():
    """Simard's fields α G U G (U uniform per pixel, 256 levels) and the fields drawn in
    G's eigenbasis agree in their variance, row by row (it falls towards the zero
    border), in the correlation of neighbours 1, 3 and 6 pixels apart, and in their
    tails (kurtosis, and how often a displacement exceeds 3 pixels), within the sampling
    error of 3,000 fields each. (A basis of G's square roots fails the first two, and
    uniform noise in place of the Gaussian levels the tails, kurtosis -0.33.)"""
    rng = np.random.default_rng(0)
    G = gaussian_filter_matrix(28)
    simard = 34.0 * G @ (rng.integers(0, 256, (3000, 28, 28)) / 127.5 - 1) @ G
    d = draw_batches("elastic", 1, 1, 0, 1500, 1500, 28)
    ours = (
        NumpyImageOps(NumpyOps("float64"))
        .elastic_fields(d.noise, elastic_levels(), elastic_basis(28))
        .reshape(3000, 28, 28)
    )
    np.testing.assert_allclose(
        ours.var(axis=0).mean(axis=1), simard.var(axis=0).mean(axis=1), rtol=0.05
    )

    def corr(f, lag):
        a, b = f[:, 8:20, 8:20], f[:, 8:20, 8 + lag : 20 + lag]
        return float((a * b).mean() / np.sqrt((a * a).mean() * (b * b).mean()))

    for lag in (1, 3, 6):
        assert corr(ours, lag) == pytest.approx(corr(simard, lag), abs=0.02), lag
    centre = [f[:, 8:20, 8:20].ravel() for f in (ours, simard)]
    kurtosis = [float((c**4).mean() / (c**2).mean() ** 2 - 3) for c in centre]
    assert kurtosis[0] == pytest.approx(kurtosis[1], abs=0.1)
    beyond = [float((np.abs(c) > 3).mean()) for c in centre]
    assert beyond[0] == pytest.approx(beyond[1], rel=0.1)


def test_identity_warp_returns_the_pixels_and_a_shift_moves_them(mnist):
    images = mnist[0].X[:3]
    ops = NumpyImageOps(NumpyOps("float64"))
    identity = np.tile(np.array([[1.0, 0, 0], [0, 1, 0]]), (3, 1, 1))
    np.testing.assert_allclose(ops.warp(images, identity, None), images / 255, atol=1e-12)
    shift = identity.copy()
    shift[:, 0, 2] = 2  # output row r reads input row r + 2
    moved = ops.warp(images, shift, None).reshape(3, 28, 28)
    np.testing.assert_allclose(moved[:, :26], images.reshape(3, 28, 28)[:, 2:] / 255, atol=1e-12)
    assert not moved[:, 26:].any()


@pytest.mark.parametrize("kind", ["affine", "elastic"])
def test_distortions_change_digits_but_keep_their_ink(mnist, kind):
    images = mnist[0].X[:50]
    out = distort_images(images, kind, seed=1)
    assert out.shape == (50, 784) and out.dtype == np.float32
    assert 0 <= out.min() and out.max() <= 1
    assert np.abs(out - images / 255).mean() > 0.02
    ratio = out.sum(axis=1) / (images / 255).sum(axis=1)  # ink kept, on average
    assert 0.9 < ratio.mean() < 1.1 and 0.5 < ratio.min() and ratio.max() < 1.6
    np.testing.assert_array_equal(distort_images(images, kind, seed=1), out)
    np.testing.assert_array_equal(distort_images(images.reshape(50, 28, 28), kind, seed=1), out)


def test_augmented_training_differs_from_plain_and_is_reproducible(small):
    a, b, plain = _net(), _net(), _net()
    simplenn.fit(a, *small, **SETTINGS)
    simplenn.fit(b, *small, **SETTINGS)
    simplenn.fit(plain, *small, **{**SETTINGS, "augment": "none"})
    for k, v in a.parameters().items():
        np.testing.assert_array_equal(b.parameters()[k], v, err_msg=k)
    assert not np.array_equal(a.parameters()["W1"], plain.parameters()["W1"])


def test_the_test_and_validation_sets_are_never_distorted(small):
    net = _net()
    history = simplenn.fit(net, *small, **SETTINGS, validation=small[1])
    X_test, y_test = small[1]
    assert history.epochs[-1].val_accuracy == net.accuracy(X_test, y_test)
    assert history.test_accuracy == net.accuracy(X_test, y_test)


def test_resume_after_an_epoch_is_bitwise_with_augmentation(small, tmp_path):
    unbroken = _net()
    states = []
    simplenn.fit(unbroken, *small, **SETTINGS, on_checkpoint=states.append)
    path = save_checkpoint(tmp_path / "c.npz", states[0])
    state = load_checkpoint(path).state
    assert state.config.augment == "elastic"
    resumed = _net()
    simplenn.fit(resumed, *small, **SETTINGS, resume=state)
    for k, v in unbroken.parameters().items():
        np.testing.assert_array_equal(resumed.parameters()[k], v, err_msg=k)


def test_ctrl_c_mid_epoch_and_resume_is_bitwise_with_augmentation(small, tmp_path):
    unbroken = _net()
    simplenn.fit(unbroken, *small, **SETTINGS)

    class InterruptingImages(NumpyImageOps):
        calls = 0

        def warp(self, x, matrices, fields):
            type(self).calls += 1
            if type(self).calls == 30 + 17:  # step 17 of epoch 2
                signal.raise_signal(signal.SIGINT)
            return super().warp(x, matrices, fields)

    class InterruptingOps(NumpyOps):
        image_ops = InterruptingImages

    path = tmp_path / "c.npz"
    with pytest.raises(TrainingInterrupted) as info:
        simplenn.fit(
            _net(InterruptingOps("float32")),
            *small,
            **SETTINGS,
            on_checkpoint=lambda s: save_checkpoint(path, s),
        )
    assert (info.value.state.epochs_done, info.value.state.position) == (1, 1700)
    resumed = _net()
    simplenn.fit(resumed, *small, **SETTINGS, resume=load_checkpoint(path).state)
    for k, v in unbroken.parameters().items():
        np.testing.assert_array_equal(resumed.parameters()[k], v, err_msg=k)


def test_resume_refuses_another_augmentation(small):
    states = []
    simplenn.fit(_net(), small[0], **{**SETTINGS, "epochs": 1}, on_checkpoint=states.append)
    with pytest.raises(ValueError, match=r"augment='affine' \(state: 'elastic'\)"):
        simplenn.fit(_net(), small[0], **{**SETTINGS, "augment": "affine"}, resume=states[0])


def test_bad_augmentations_are_refused_with_the_fix(small):
    with pytest.raises(ValueError, match="augment must be one of none, affine, elastic"):
        simplenn.fit(_net(), small[0], epochs=1, augment="mixup")
    rng = np.random.default_rng(0)
    X, y = rng.random((40, 10)), rng.integers(0, 3, 40)
    net = simplenn.TwoLayerNet(10, 4, 3, seed=0)
    with pytest.raises(ValueError, match="square images.*10 features.*augment='none'"):
        simplenn.fit(net, (X, y), epochs=1, augment="affine")
    with pytest.raises(ValueError, match="at least 2 x 2 pixels.*1 features"):
        simplenn.fit(
            simplenn.TwoLayerNet(1, 4, 3, seed=0), (X[:, :1], y), epochs=1, augment="elastic"
        )


# -- the command ------------------------------------------------------------------------


def _train(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "simplenn.train", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
    )


@pytest.fixture(scope="module")
def data_dir(mnist_subset_dir):
    """A small MNIST-format directory (2,000 train and 500 test images)."""
    return mnist_subset_dir(2000, 500)


def test_cli_augment_metrics_and_plot(data_dir, tmp_path):
    pytest.importorskip("matplotlib")
    metrics = tmp_path / "m.json"
    result = _train(
        "--data-dir",
        str(data_dir),
        "--backend",
        "numpy",
        "--epochs",
        "1",
        "--hidden",
        "16",
        "--augment",
        "affine",
        "--metrics-out",
        str(metrics),
        "--plot",
        str(tmp_path / "plots"),
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(metrics.read_text())["config"]["augment"] == "affine"
    assert (tmp_path / "plots" / "augmentation.png").stat().st_size > 5000
    assert "distorted training digits" in result.stdout


def test_cli_preset_sets_its_flags_and_given_flags_win(data_dir, tmp_path):
    metrics = tmp_path / "m.json"
    result = _train(
        "--data-dir",
        str(data_dir),
        "--backend",
        "numpy",
        "--preset",
        "best",
        "--epochs",
        "1",
        "--hidden",
        "12",
        "--metrics-out",
        str(metrics),
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    config = json.loads(metrics.read_text())["config"]
    assert (config["epochs"], config["hidden"]) == (1, 12)  # given flags override the preset
    assert (config["lr"], config["augment"]) == (0.1, "elastic")  # the preset's


def test_cli_help_lists_the_preset_and_augmentations():
    out = _train("--help").stdout
    assert "--preset {best}" in out and "--augment {none,affine,elastic}" in out
    assert "--augment elastic" in " ".join(out.split())
    assert set(AUGMENTATIONS) == {"none", "affine", "elastic"}


def test_cli_refuses_an_unknown_augmentation_in_one_line():
    result = _train("--augment", "mixup")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("python -m simplenn.train: error:")
    assert "invalid choice: 'mixup'" in result.stderr
