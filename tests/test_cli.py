"""`python -m simplenn.train`: flags, exit codes and one-line error messages."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import simplenn
from simplenn.cli.train import main
from simplenn.data.idx import write_idx


@pytest.fixture
def data_dir(tmp_path):
    """A tiny MNIST-format dataset: 8x8 images whose class is the bright row."""
    rng = np.random.default_rng(0)

    def make(n):
        y = rng.integers(0, 10, n).astype(np.uint8)
        X = rng.integers(0, 40, size=(n, 8, 8)).astype(np.uint8)
        for i, label in enumerate(y):
            X[i, label % 8, :] = 250 if label < 8 else 0
            X[i, :, 0] = 250 if label >= 8 else X[i, :, 0]
        return X, y

    d = tmp_path / "data"
    d.mkdir()
    for split, n in (("train", 600), ("t10k", 200)):
        X, y = make(n)
        write_idx(d / f"{split}-images-idx3-ubyte.gz", X)
        write_idx(d / f"{split}-labels-idx1-ubyte", y)
    return d


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "simplenn.train", *args], capture_output=True, text=True, timeout=300
    )


def test_trains_on_a_data_dir_saves_the_model_and_writes_metrics(data_dir, tmp_path, capsys):
    model, metrics = tmp_path / "model.npz", tmp_path / "metrics.json"
    code = main(
        [
            "--backend",
            "numpy",
            "--data-dir",
            str(data_dir),
            "--epochs",
            "3",
            "--hidden",
            "32",
            "--batch-size",
            "16",
            "--save",
            str(model),
            "--metrics-out",
            str(metrics),
        ]
    )
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    assert out[-1].startswith("test accuracy: ") and out[-1].endswith("%")
    assert sum(line.startswith("epoch ") for line in out) == 3
    accuracy = float(out[-1].split()[-1].rstrip("%"))
    assert accuracy > 80
    record = json.loads(metrics.read_text())
    assert len(record["epochs"]) == 3
    assert record["final_test_accuracy"] == pytest.approx(accuracy / 100, abs=5e-5)
    net = simplenn.load_model(model, backend="numpy")
    assert (net.n_inputs, net.n_hidden, net.n_classes) == (64, 32, 10)
    assert net.metadata["training"]["epochs"] == 3


def test_quiet_prints_only_the_final_accuracy(data_dir, capsys):
    assert (
        main(
            [
                "--backend",
                "numpy",
                "--data-dir",
                str(data_dir),
                "--epochs",
                "1",
                "--hidden",
                "8",
                "--quiet",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert captured.out.strip().splitlines()[0].startswith("test accuracy: ")
    assert len(captured.out.strip().splitlines()) == 1


def test_list_backends_names_each_backend_and_why_not(capsys):
    assert main(["--list-backends"]) == 0
    out = capsys.readouterr().out
    for info in simplenn.available_backends():
        assert info.name in out
        if not info.available:
            assert info.reason in out


@pytest.mark.parametrize(
    "args, phrase",
    [
        (["--epochs", "0"], "--epochs"),
        (["--batch-size", "-4"], "--batch-size"),
        (["--hidden", "zero"], "--hidden"),
        (["--lr", "nan"], "--lr"),
        (["--lr", "0"], "--lr"),
        (["--lr", "-0.1"], "--lr"),
        (["--lr", "inf"], "--lr"),
        (["--momentum", "1.5"], "--momentum"),
        (["--weight-decay", "-1"], "--weight-decay"),
        (["--seed", "-1"], "--seed"),
        (["--dtype", "float16"], "--dtype"),
        (["--backend", "tpu"], "--backend"),
        (["--data-dir", "/nonexistent/dir"], "does not exist"),
        (["--save", "/nonexistent/dir/model.npz"], "does not exist"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args, phrase, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and phrase in err[0] and "Traceback" not in err[0]


def test_a_data_error_exits_1_with_one_line_naming_the_file(data_dir):
    (data_dir / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x02\x58abc")
    result = run_cli("--backend", "numpy", "--data-dir", str(data_dir), "--epochs", "1")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "train-labels-idx1-ubyte" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_file_in_the_data_dir_exits_1(data_dir):
    (data_dir / "t10k-labels-idx1-ubyte").unlink()
    result = run_cli("--backend", "numpy", "--data-dir", str(data_dir))
    assert result.returncode == 1 and "t10k-labels-idx1-ubyte" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_an_unavailable_backend_exits_1_with_one_line():
    unavailable = [i for i in simplenn.available_backends() if not i.available]
    if not unavailable:
        pytest.skip("every backend is available here")
    info = unavailable[0]
    result = run_cli("--backend", info.name, "--epochs", "1")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"backend {info.name!r} unavailable" in lines[0]
    assert "--backend auto" in lines[0]


def test_debug_shows_the_traceback(data_dir):
    (data_dir / "t10k-labels-idx1-ubyte").unlink()
    result = run_cli("--backend", "numpy", "--data-dir", str(data_dir), "--debug")
    assert result.returncode == 1 and "Traceback" in result.stderr


def test_help_documents_every_environment_variable(capsys):
    """Each SIMPLENN_* variable the package reads (but the bench's internal one) is
    listed under --help."""
    import re
    from pathlib import Path

    source = "".join(p.read_text() for p in Path(simplenn.__file__).parent.rglob("*.py"))
    names = set(re.findall(r'"(SIMPLENN_[A-Z_]+)"', source)) - {"SIMPLENN_BENCH_UNSET_OPENBLAS"}
    assert {"SIMPLENN_BACKEND", "SIMPLENN_NUMBA_BLAS", "SIMPLENN_NUMBA_CACHE"} <= names
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = capsys.readouterr().out
    assert [n for n in sorted(names) if n not in help_text] == []
