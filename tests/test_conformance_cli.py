"""Running the conformance kit: each check reported as it starts and ends, an exception
raised inside an op reported as a failure naming the op, ``python -m simplenn.testing``,
and ``SIMPLENN_SKIP_BACKENDS`` leaving backends out of the test run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from simplenn.backends import probe_backend, registry
from simplenn.backends.numpy_backend import NumpyOps
from simplenn.cli import conformance
from simplenn.testing import CHECKS, check_backend


class BrokenMatmulOps(NumpyOps):
    """NumPy's ops, but matmul raises."""

    def matmul(self, a, b):
        raise ValueError("no products today")


@pytest.fixture
def broken_backend(monkeypatch):
    """Backend ``broken`` (BrokenMatmulOps) registered for the test only."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    probe_backend.cache_clear()
    registry.register("broken", BrokenMatmulOps, priority=-1)
    yield "broken"
    probe_backend.cache_clear()


def test_check_backend_reports_each_check_as_it_starts_and_ends():
    seen = []
    skipped = check_backend("numpy", ("float64",), report=seen.append)
    assert [(r.check, r.status == "running") for r in seen] == [
        (c, running) for c in CHECKS for running in (True, False)
    ]
    ended = seen[1::2]
    assert {r.status for r in ended} <= {"passed", "skipped"}
    assert skipped == [f"{r.check} (float64): {r.message}" for r in ended if r.status == "skipped"]
    assert all(r.seconds >= 0 for r in ended)


def test_an_exception_inside_an_op_is_a_failure_naming_the_op(broken_backend):
    with pytest.raises(AssertionError) as failure:
        check_backend(broken_backend, ("float64",))
    message = str(failure.value)
    assert message.startswith(
        "backend 'broken', ops (float64): op matmul raised ValueError: "
        "no products today (at test_conformance_cli.py:"
    ), message
    assert isinstance(failure.value.__cause__, ValueError)


def test_the_command_prints_each_check_and_a_summary(capsys):
    assert (
        conformance.main(["numpy", "--dtype", "float64", "--check", "ops", "--check", "trajectory"])
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("the conformance kit on backend numpy")
    assert lines[1].startswith("ops (float64) ... passed in ")
    assert lines[2].startswith("trajectory (float64) ... skipped in ")
    assert "numpy is the backend trajectories are compared with" in lines[2]
    assert lines[3].startswith("1 passed, 1 skipped, 0 failed in ")


def test_the_command_runs_every_check_and_exits_1_on_a_failure(broken_backend, capsys):
    assert conformance.main([broken_backend, "--dtype", "float32"]) == 1
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    failed = [line for line in out.splitlines() if " ... failed in " in line]
    assert failed and all(
        "op matmul raised ValueError: no products today" in line for line in failed
    ), out
    assert re.fullmatch(
        rf"\d+ passed, \d+ skipped, {len(failed)} failed in [0-9.]+ s", out.splitlines()[-1]
    ), out


def test_the_command_refuses_auto_unknown_and_unavailable_backends(capsys, monkeypatch):
    for argv in (["auto"], ["no-such-backend"]):
        with pytest.raises(SystemExit) as exit_:
            conformance.main(argv)
        assert exit_.value.code == 2
        assert capsys.readouterr().err.startswith("python -m simplenn.testing: error: ")
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    probe_backend.cache_clear()
    registry.register("absent", "no_such_module_here:Ops", priority=-1)
    try:
        assert conformance.main(["absent"]) == 1
    finally:
        probe_backend.cache_clear()
    err = capsys.readouterr().err
    assert err.startswith("python -m simplenn.testing: error: backend 'absent' can't run here")
    assert len(err.splitlines()) == 1


def test_python_m_simplenn_testing_runs_the_kit():
    out = subprocess.run(
        [sys.executable, "-m", "simplenn.testing", "numpy", "--check", "ops", "--dtype", "float32"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "ops (float32) ... passed in " in out.stdout
    assert out.stderr == "", out.stderr


# -- SIMPLENN_SKIP_BACKENDS ----------------------------------------------------------
def test_skip_backends_variable_skips_the_named_backends(monkeypatch, require_backend):
    monkeypatch.setenv("SIMPLENN_SKIP_BACKENDS", " strict, NumPy ,")
    with pytest.raises(pytest.skip.Exception, match="left out by SIMPLENN_SKIP_BACKENDS"):
        require_backend("numpy")
    monkeypatch.setenv("SIMPLENN_SKIP_BACKENDS", "strict")
    require_backend("numpy")  # not named: runs


def test_skip_backends_variable_leaves_a_backend_out_of_the_kit_in_the_test_run():
    env = {**os.environ, "SIMPLENN_SKIP_BACKENDS": "numpy"}
    test = "tests/test_conformance.py::test_backend_conforms[numpy-ops-float64]"
    out = subprocess.run(
        [sys.executable, "-m", "pytest", test, "-q", "-rs", "-p", "no:cacheprovider"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=Path(__file__).resolve().parents[1],
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 skipped" in out.stdout and "left out by SIMPLENN_SKIP_BACKENDS" in out.stdout
