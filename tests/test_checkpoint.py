"""Checkpoints: resume equals the unbroken run (bitwise, numpy), Ctrl-C saves and exits
130, a killed save or a diverged run never damages the last good file."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import simplenn
from simplenn.backends.numpy_backend import NumpyOps
from simplenn.core.training import TrainConfig, TrainingInterrupted
from simplenn.errors import ModelFileError, TrainingDivergedError
from simplenn.io.checkpoints import checkpoint_path, load_checkpoint, save_checkpoint
from simplenn.io.models import read_model_archive, read_model_file, save_model, write_model_file

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_blas_thread")
SETTINGS = dict(epochs=3, batch_size=100, lr=0.1, lr_schedule="cosine", seed=7)
N_TRAIN = 6000  # two chunks of 4000 samples per epoch at batch 100: resume lands mid-chunk


@pytest.fixture(scope="module")
def small():
    train, test = simplenn.load_mnist()
    return (train.X[:N_TRAIN], train.y[:N_TRAIN]), (test.X[:500], test.y[:500])


def _net(ops=None):
    return simplenn.TwoLayerNet(784, 24, 10, backend=ops or "numpy", seed=3)


def _assert_same_run(a: simplenn.TwoLayerNet, b: simplenn.TwoLayerNet, ha, hb) -> None:
    for k, v in a.parameters().items():
        np.testing.assert_array_equal(b.parameters()[k], v, err_msg=k)
    assert [
        (e.epoch, e.lr, e.train_loss, e.train_accuracy, e.test_accuracy) for e in ha.epochs
    ] == [(e.epoch, e.lr, e.train_loss, e.train_accuracy, e.test_accuracy) for e in hb.epochs]


@pytest.fixture(scope="module")
def reference(small):
    net = _net()
    history = simplenn.fit(net, *small, **SETTINGS)
    return net, history


def _interrupting_ops(after_calls: int) -> NumpyOps:
    """NumPy ops that send this process SIGINT in their ``after_calls``-th batch conversion
    (a fresh class each time: compiled network functions are cached per Ops class)."""

    class InterruptingOps(NumpyOps):
        calls = 0

        def to_float(self, x):
            type(self).calls += 1
            if type(self).calls == after_calls:
                signal.raise_signal(signal.SIGINT)
            return super().to_float(x)

    return InterruptingOps("float32")


@pytest.mark.parametrize("k", [1, 2])
def test_resume_after_epoch_k_equals_unbroken_run(small, reference, tmp_path, k):
    states = []
    simplenn.fit(_net(), *small, **SETTINGS, on_checkpoint=states.append)
    assert [s.epochs_done for s in states] == [1, 2, 3] and all(s.position == 0 for s in states)
    path = save_checkpoint(tmp_path / "c.npz", states[k - 1])
    state = load_checkpoint(path).state
    resumed = _net()
    history = simplenn.fit(resumed, *small, **SETTINGS, resume=state)
    _assert_same_run(reference[0], resumed, reference[1], history)


def test_resume_equals_unbroken_run_on_every_backend(small, backend_name):
    """Compiled (Numba) and GPU backends restore the same state: bitwise equal to their own
    unbroken run."""
    unbroken = _net(backend_name)
    simplenn.fit(unbroken, small[0], **SETTINGS)
    states = []
    simplenn.fit(_net(backend_name), small[0], **SETTINGS, on_checkpoint=states.append)
    resumed = _net(backend_name)
    simplenn.fit(resumed, small[0], **SETTINGS, resume=states[0])
    for k, v in unbroken.parameters().items():
        np.testing.assert_array_equal(resumed.parameters()[k], v, err_msg=k)


def test_ctrl_c_mid_epoch_finishes_the_step_and_resume_is_bitwise(small, reference, tmp_path):
    # epoch 1: 60 steps + 1 test-set evaluation batch; interrupt during step 45 of epoch 2
    ops = _interrupting_ops(after_calls=61 + 45)
    path = tmp_path / "c.npz"
    with pytest.raises(TrainingInterrupted) as info:
        simplenn.fit(
            _net(ops), *small, **SETTINGS, on_checkpoint=lambda s: save_checkpoint(path, s)
        )
    state = info.value.state
    assert info.value.saved and (state.epochs_done, state.position) == (1, 45 * 100)
    assert isinstance(info.value, KeyboardInterrupt)
    ckpt = load_checkpoint(path)
    assert ckpt.state.position == 4500 and ckpt.state.epoch_losses.shape == (45,)
    resumed = _net()
    history = simplenn.fit(resumed, *small, **SETTINGS, resume=ckpt.state)
    _assert_same_run(reference[0], resumed, reference[1], history)


def test_sigint_handler_is_removed_after_fit(small):
    before = signal.getsignal(signal.SIGINT)
    simplenn.fit(_net(), small[0], epochs=1, batch_size=500)
    assert signal.getsignal(signal.SIGINT) is before


def test_resume_refuses_other_settings(small, tmp_path):
    states = []
    simplenn.fit(_net(), small[0], **{**SETTINGS, "epochs": 2}, on_checkpoint=states.append)
    with pytest.raises(ValueError, match=r"lr=0.05 \(state: 0.1\)"):
        simplenn.fit(_net(), small[0], **{**SETTINGS, "epochs": 2, "lr": 0.05}, resume=states[0])
    with pytest.raises(ValueError, match="6000 samples, this training set has 5999"):
        simplenn.fit(
            _net(),
            (small[0][0][:5999], small[0][1][:5999]),
            **{**SETTINGS, "epochs": 2},
            resume=states[0],
        )


def test_divergence_never_overwrites_the_last_good_checkpoint(small, tmp_path):
    class DivergingOps(NumpyOps):
        calls = 0

        def softmax_cross_entropy(self, logits, labels):
            type(self).calls += 1
            loss, d = super().softmax_cross_entropy(logits, labels)
            return (loss * np.nan if type(self).calls > 70 else loss), d

    path = tmp_path / "c.npz"
    with pytest.raises(TrainingDivergedError, match="epoch 2, step 11"):
        simplenn.fit(
            _net(DivergingOps("float32")),
            *small,
            **SETTINGS,
            on_checkpoint=lambda s: save_checkpoint(path, s),
        )
    assert load_checkpoint(path).state.epochs_done == 1


def test_save_checkpoint_refuses_non_finite_state(small, tmp_path):
    states = []
    simplenn.fit(_net(), small[0], epochs=1, batch_size=500, on_checkpoint=states.append)
    path = save_checkpoint(tmp_path / "c.npz", states[0])
    good = path.read_bytes()
    states[0].optimizer_state["b2.velocity"][3] = np.inf
    with pytest.raises(ModelFileError, match="optimizer b2.velocity holds NaN or infinite"):
        save_checkpoint(path, states[0])
    assert path.read_bytes() == good


def test_a_plain_model_file_is_not_a_checkpoint(tmp_path):
    path = save_model(_net(), tmp_path / "m.npz")
    with pytest.raises(ModelFileError, match="without training state"):
        load_checkpoint(path)


def test_checkpoint_is_a_model_file(small, tmp_path):
    states = []
    net = _net()
    simplenn.fit(net, small[0], epochs=1, batch_size=500, on_checkpoint=states.append)
    params, meta = read_model_file(save_checkpoint(tmp_path / "c.npz", states[0]))
    for k, v in net.parameters().items():
        np.testing.assert_array_equal(params[k], v)


def test_a_version_1_checkpoint_from_before_validation_sets_still_resumes(
    small, reference, tmp_path
):
    states = []
    simplenn.fit(_net(), *small, **SETTINGS, on_checkpoint=states.append)
    params, meta, extra = read_model_archive(save_checkpoint(tmp_path / "new.npz", states[0]))
    info = meta["checkpoint"]
    info["format_version"] = 1
    for key in ("n_validation", "best_val_loss", "best_epoch", "epochs_without_improvement"):
        del info[key]
    for key in ("validation_fraction", "early_stopping"):
        del info["config"][key]
    for epoch in info["history"]:
        for key in ("val_loss", "val_accuracy", "test_loss"):
            del epoch[key]
    old = write_model_file(
        tmp_path / "old.npz",
        params,
        backend=meta["backend"],
        metadata={"checkpoint": info},
        extra_arrays=extra,
    )
    state = load_checkpoint(old).state
    assert (
        state.n_validation == 0 and state.best_epoch is None and state.history[0].test_loss is None
    )
    resumed = _net()
    history = simplenn.fit(resumed, *small, **SETTINGS, resume=state)
    _assert_same_run(reference[0], resumed, reference[1], history)


# -- killed while saving --------------------------------------------------------------
SAVE_LOOP = textwrap.dedent("""
    import sys
    from simplenn import TwoLayerNet, save_model
    nets = [TwoLayerNet(784, 4096, 10, seed=s, dtype="float64") for s in (1, 2)]
    print("ready", flush=True)
    i = 0
    while True:
        save_model(nets[i % 2], sys.argv[1])
        i += 1
""")


def _env() -> dict:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }


def test_sigkill_during_save_loop_leaves_a_loadable_model(tmp_path):
    # 25 MB files: a non-atomic writer (open + write) is caught damaged in most rounds
    path = tmp_path / "model.npz"
    nets = {s: simplenn.TwoLayerNet(784, 4096, 10, seed=s, dtype="float64") for s in (0, 1, 2)}
    save_model(nets[0], path)
    expected = [net.parameters()["W1"] for net in nets.values()]
    rnd = random.Random(0)
    for _ in range(5):
        child = subprocess.Popen(
            [sys.executable, "-c", SAVE_LOOP, str(path)],
            env=_env(),
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout.readline().strip() == "ready"
        time.sleep(rnd.uniform(0.05, 0.4))
        child.kill()
        child.wait(timeout=30)
        child.stdout.close()
        params, _ = read_model_file(path)
        assert any(np.array_equal(params["W1"], w) for w in expected)


# -- the command line ------------------------------------------------------------------
@pytest.fixture(scope="module")
def data_dir(mnist_subset_dir):
    """A small MNIST-format directory: 2000 train and 200 test images."""
    return mnist_subset_dir(2000, 200)


def _train_cmd(data_dir, *args) -> list[str]:
    return [
        sys.executable,
        "-m",
        "simplenn.train",
        "--backend",
        "numpy",
        "--data-dir",
        str(data_dir),
        "--hidden",
        "16",
        "--batch-size",
        "50",
        *map(str, args),
    ]


def test_cli_ctrl_c_saves_exits_130_and_resume_equals_unbroken_run(data_dir, tmp_path):
    epochs = 60
    ck = tmp_path / "ck"
    child = subprocess.Popen(
        _train_cmd(
            data_dir, "--epochs", epochs, "--checkpoint-dir", ck, "--save", tmp_path / "resumed.npz"
        ),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in child.stdout:
        if line.startswith("epoch  1/"):
            break
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 130, err
    last = err.strip().splitlines()[-1]
    assert f"saved checkpoint {ck / 'checkpoint.npz'}" in last and "--resume" in last
    state = load_checkpoint(checkpoint_path(ck)).state
    assert 1 <= state.epochs_done < epochs

    # resume with only the checkpoint dir: the settings come from the checkpoint
    resumed = subprocess.run(
        [
            sys.executable,
            "-m",
            "simplenn.train",
            "--checkpoint-dir",
            ck,
            "--resume",
            "--backend",
            "numpy",
            "--quiet",
            "--save",
            tmp_path / "resumed.npz",
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr
    unbroken = subprocess.run(
        _train_cmd(data_dir, "--epochs", epochs, "--quiet", "--save", tmp_path / "unbroken.npz"),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert unbroken.returncode == 0, unbroken.stderr
    assert resumed.stdout == unbroken.stdout  # the same final test accuracy line
    a, _ = read_model_file(tmp_path / "resumed.npz")
    b, _ = read_model_file(tmp_path / "unbroken.npz")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_cli_ctrl_c_without_checkpoint_dir_says_nothing_was_saved(data_dir):
    child = subprocess.Popen(
        _train_cmd(data_dir, "--epochs", 500),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in child.stdout:
        if line.startswith("epoch  1/"):
            break
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130
    assert "nothing was saved" in err.strip().splitlines()[-1]


def _run(*cmd) -> subprocess.CompletedProcess:
    return subprocess.run(
        list(map(str, cmd)), env=_env(), capture_output=True, text=True, timeout=120
    )


def test_cli_resume_checks(data_dir, tmp_path):
    ck = tmp_path / "ck"
    missing = _run(
        *_train_cmd(data_dir, "--epochs", 1, "--quiet", "--checkpoint-dir", ck, "--resume")
    )
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    assert (
        _run(*_train_cmd(data_dir, "--epochs", 1, "--quiet", "--checkpoint-dir", ck)).returncode
        == 0
    )
    again = _run(*_train_cmd(data_dir, "--epochs", 1, "--quiet", "--checkpoint-dir", ck))
    assert again.returncode == 1 and "already holds a checkpoint" in again.stderr
    other = _run(
        *_train_cmd(
            data_dir, "--epochs", 2, "--lr", 0.05, "--quiet", "--checkpoint-dir", ck, "--resume"
        )
    )
    assert other.returncode == 1
    assert len(other.stderr.strip().splitlines()) == 1
    assert (
        "--epochs 2 (checkpoint: 1)" in other.stderr
        and f"--lr 0.05 (checkpoint: {TrainConfig(batch_size=50).lr})" in other.stderr
    )
    no_dir = _run(sys.executable, "-m", "simplenn.train", "--resume")
    assert no_dir.returncode == 2 and "--checkpoint-dir" in no_dir.stderr
