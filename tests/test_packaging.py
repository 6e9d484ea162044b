"""The package as distributed: the license expression and files (MIT, and a notice for
the bundled MNIST), py.typed, classifiers, ``--version`` on every command, and errors
that name the program as it was invoked."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import simplenn
from simplenn.cli import common

ROOT = Path(__file__).resolve().parents[1]

#: Each command's module and the module whose ``main`` it runs.
COMMANDS = {
    "simplenn.train": "simplenn.cli.train",
    "simplenn.evaluate": "simplenn.cli.evaluate",
    "simplenn.predict": "simplenn.cli.predict",
    "simplenn.export": "simplenn.cli.export",
    "simplenn.bench": "simplenn.bench.cli",
    "simplenn.bench.report": "simplenn.bench.report",
    "simplenn.testing": "simplenn.cli.conformance",
}


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11")
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_prints_its_version(command, capsys):
    main = importlib.import_module(COMMANDS[command]).main
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"simplenn-backends {simplenn.__version__}\n"


def test_the_program_name_is_the_script_run_or_python_m(monkeypatch):
    for argv0, expected in (
        ("/venv/bin/simplenn-train", "simplenn-train"),
        ("simplenn-train.exe", "simplenn-train"),
        ("/src/simplenn/train.py", "python -m simplenn.train"),
        ("/venv/bin/simplenn-evaluate", "python -m simplenn.train"),
        ("", "python -m simplenn.train"),
    ):
        monkeypatch.setattr(sys, "argv", [argv0])
        assert common.invoked_as("simplenn.train") == expected, argv0
    monkeypatch.setattr(sys, "argv", ["/venv/bin/simplenn-bench"])
    assert common.invoked_as("simplenn.bench") == "simplenn-bench"


def test_errors_name_the_program_as_it_was_invoked():
    bad = ["--epochs", "0"]
    as_module = subprocess.run(
        [sys.executable, "-m", "simplenn.train", *bad],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert as_module.returncode == 2
    assert as_module.stderr.startswith("python -m simplenn.train: error: argument --epochs")
    script = Path(sys.executable).parent / "simplenn-train"
    if not script.exists():
        pytest.skip(f"the console script {script} is not installed (pip install .)")
    as_script = subprocess.run(
        [str(script), *bad], capture_output=True, text=True, timeout=120, check=False
    )
    assert as_script.returncode == 2
    assert as_script.stderr.startswith("simplenn-train: error: argument --epochs"), as_script.stderr
    missing = subprocess.run(
        [str(Path(sys.executable).parent / "simplenn-evaluate"), "no-such-model.npz"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert missing.returncode == 1
    assert missing.stderr.startswith("simplenn-evaluate: error: "), missing.stderr


def test_pyproject_declares_the_licenses_classifiers_and_py_typed():
    project = _pyproject()
    meta = project["project"]
    assert meta["license"] == "MIT AND CC-BY-SA-3.0"
    assert meta["license-files"] == ["LICENSE", "NOTICE"]
    assert "MIT License" in (ROOT / "LICENSE").read_text(encoding="utf-8")
    notice = (ROOT / "NOTICE").read_text(encoding="utf-8")
    assert "Yann LeCun and Corinna Cortes" in notice and "CC BY-SA 3.0" in notice
    assert "simplenn/data/mnist/" in notice
    assert not [c for c in meta["classifiers"] if c.startswith("License ::")]  # PEP 639
    assert "Typing :: Typed" in meta["classifiers"]
    requires = project["build-system"]["requires"]
    assert requires == ["setuptools>=77"]  # the first with PEP 639 license expressions
    assert "py.typed" in project["tool"]["setuptools"]["package-data"]["simplenn"]
    assert (Path(simplenn.__file__).parent / "py.typed").is_file()


def test_the_wheel_carries_the_license_files_and_py_typed(tmp_path):
    setuptools = pytest.importorskip("setuptools", reason="setuptools is not installed")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(
            f"setuptools {setuptools.__version__} is older than 77, which builds "
            f"the license expression (the test extra installs it)"
        )
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("simplenn_backends-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(f"{info}/METADATA").decode()
    assert {
        f"{info}/licenses/LICENSE",
        f"{info}/licenses/NOTICE",
        "simplenn/py.typed",
        "simplenn/data/mnist/train-images-idx3-ubyte.gz",
    } <= names
    assert re.search(r"^License-Expression: MIT AND CC-BY-SA-3\.0$", metadata, re.MULTILINE)
    assert re.findall(r"^License-File: (.*)$", metadata, re.MULTILINE) == ["LICENSE", "NOTICE"]
    assert "Classifier: Typing :: Typed" in metadata
