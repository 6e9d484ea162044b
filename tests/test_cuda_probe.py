"""The NVIDIA driver probe that the ``cupy`` backend asks before it imports CuPy.

No GPU needed, and nothing assumed about whether CuPy or a driver is installed here: the
driver library is replaced by a name that does not exist or by a stand-in built of
``ctypes`` callbacks, and CuPy by a stand-in module.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from simplenn.backends import builtin, cuda_driver, probe_backend

REPO = Path(__file__).resolve().parents[1]
NO_SUCH_LIBRARY = "libsimplenn-no-such-cuda-driver.so.1"
ERROR_NAMES = {100: b"CUDA_ERROR_NO_DEVICE", 34: b"CUDA_ERROR_STUB_LIBRARY"}

CU_INIT = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_uint)
CU_DEVICE_GET_COUNT = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_int))
CU_GET_ERROR_NAME = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_char_p))


def fake_driver(init_status: int = 0, devices: int = 1) -> types.SimpleNamespace:
    """A stand-in for the loaded driver library: cuInit returns ``init_status`` and
    cuDeviceGetCount counts ``devices``; cuGetErrorName knows ``ERROR_NAMES``."""

    def count(out):
        out[0] = devices
        return 0

    def error_name(code, out):
        if code not in ERROR_NAMES:
            return 1  # CUDA_ERROR_INVALID_VALUE
        out[0] = ERROR_NAMES[code]
        return 0

    return types.SimpleNamespace(
        cuInit=CU_INIT(lambda flags: init_status),
        cuDeviceGetCount=CU_DEVICE_GET_COUNT(count),
        cuGetErrorName=CU_GET_ERROR_NAME(error_name),
    )


@pytest.fixture
def driver(monkeypatch):
    """``driver(lib)`` makes the probe load ``lib`` (on Linux) instead of the real driver."""

    def use(lib) -> None:
        monkeypatch.setattr(cuda_driver, "load_driver_library", lambda name: lib)

    return use


@pytest.fixture
def fake_cupy(monkeypatch):
    """A stand-in ``cupy`` module that sees one GPU named 'Fake GPU'."""
    module = types.ModuleType("cupy")
    module.__spec__ = importlib.machinery.ModuleSpec("cupy", None)
    module.__version__ = "0.0-fake"
    runtime = types.SimpleNamespace(
        getDeviceCount=lambda: 1, getDeviceProperties=lambda index: {"name": b"Fake GPU"}
    )
    module.cuda = types.SimpleNamespace(runtime=runtime)
    monkeypatch.setitem(sys.modules, "cupy", module)
    return module


def test_a_missing_driver_library_is_refused_with_its_cause(monkeypatch):
    monkeypatch.setattr(cuda_driver, "DRIVER_LIBRARIES", {"linux": NO_SUCH_LIBRARY})
    reason = cuda_driver.cuda_driver_problem("linux")
    assert reason is not None and reason.startswith("no NVIDIA driver was found (")
    assert NO_SUCH_LIBRARY in reason
    assert reason.endswith("install the NVIDIA driver, on a machine with an NVIDIA GPU")


@pytest.mark.parametrize(
    ("status", "cause"),
    [
        (100, "CUDA_ERROR_NO_DEVICE: no CUDA-capable GPU is visible"),
        (34, "CUDA_ERROR_STUB_LIBRARY: the libcuda found is the CUDA toolkit's stub"),
        (999, "CUresult 999: the NVIDIA driver failed to initialise"),
    ],
)
def test_a_failed_cuinit_is_refused_with_the_error(driver, status, cause):
    driver(fake_driver(init_status=status))
    reason = cuda_driver.cuda_driver_problem("linux")
    assert reason is not None
    assert reason.startswith(f"the NVIDIA driver's cuInit failed with {cause}")


def test_a_driver_without_devices_is_refused(driver):
    driver(fake_driver(devices=0))
    reason = cuda_driver.cuda_driver_problem("linux")
    assert reason is not None and reason.startswith("the NVIDIA driver counts no device")


@pytest.mark.parametrize("platform", ["linux", "win32"])
def test_a_driver_with_a_device_passes(driver, platform):
    driver(fake_driver(devices=2))
    assert cuda_driver.cuda_driver_problem(platform) is None


def test_what_the_probe_cannot_tell_passes(driver, monkeypatch):
    driver(types.SimpleNamespace())  # a library without the driver API's functions
    assert cuda_driver.cuda_driver_problem("linux") is None

    def refuse(name):
        raise AssertionError(f"loaded {name} on a platform the probe does not know")

    monkeypatch.setattr(cuda_driver, "load_driver_library", refuse)
    assert cuda_driver.cuda_driver_problem("freebsd14") is None


def test_macos_is_refused_without_loading_anything(monkeypatch):
    monkeypatch.setattr(cuda_driver, "load_driver_library", lambda name: pytest.fail(name))
    reason = cuda_driver.cuda_driver_problem("darwin")
    assert reason is not None and reason.startswith("macOS has no CUDA driver")


def test_cupy_probe_goes_on_to_cupy_when_the_driver_counts_a_device(driver, fake_cupy):
    if sys.platform not in cuda_driver.DRIVER_LIBRARIES:
        pytest.skip(f"the driver library probe runs on Linux and Windows, not {sys.platform}")
    driver(fake_driver(devices=1))
    result = builtin._probe_cupy()
    assert result.available and result.device == "GPU 0: Fake GPU", result


def test_cupy_probe_refuses_before_importing_cupy(monkeypatch, fake_cupy):
    fake_cupy.cuda = None  # were it asked, the stand-in would fail with an AttributeError
    monkeypatch.setattr(cuda_driver, "cuda_driver_problem", lambda: "no NVIDIA driver was found")
    result = builtin._probe_cupy()
    assert not result.available
    assert result.reason == "CuPy is installed but no NVIDIA driver was found"


def test_a_missing_cupy_is_named_before_the_driver(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # find_spec: not installed
    monkeypatch.setattr(cuda_driver, "cuda_driver_problem", lambda: pytest.fail("asked"))
    result = builtin._probe_cupy()
    assert not result.available and result.reason.startswith("CuPy is not installed")
    assert "pip install cupy-cuda12x" in result.reason


# --------------------------------------------------------------------------------------
# In a fresh process: a stand-in CuPy package that fails when imported, no driver library


@pytest.fixture
def cupy_without_driver(tmp_path: Path) -> dict[str, str]:
    """The environment of a process where ``cupy`` is installed (a package that raises
    when imported) and the driver library is missing."""
    if sys.platform not in cuda_driver.DRIVER_LIBRARIES:
        pytest.skip(f"the driver library probe runs on Linux and Windows, not {sys.platform}")
    (tmp_path / "cupy").mkdir()
    (tmp_path / "cupy" / "__init__.py").write_text("raise RuntimeError('CuPy was imported')\n")
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\n"
        "from simplenn.backends import cuda_driver\n"
        f"cuda_driver.DRIVER_LIBRARIES = {{sys.platform: {NO_SUCH_LIBRARY!r}}}\n"
    )
    env = dict(os.environ)
    env.pop("SIMPLENN_BACKEND", None)
    env["PYTHONPATH"] = os.pathsep.join(
        str(p) for p in (tmp_path, REPO, env.get("PYTHONPATH")) if p
    )
    return env


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=120
    )


def test_auto_without_a_driver_never_imports_cupy(cupy_without_driver):
    code = (
        "import sys\n"
        "from simplenn.backends import probe_backend, resolve_backend_name\n"
        "print(resolve_backend_name('auto'), 'cupy' in sys.modules)\n"
        "print(probe_backend('cupy').reason)\n"
    )
    result = _run(["-c", code], cupy_without_driver)
    assert result.returncode == 0, result.stderr
    choice, reason = result.stdout.splitlines()
    assert choice.split()[0] != "cupy" and choice.split()[1] == "False", choice
    assert reason.startswith("CuPy is installed but no NVIDIA driver was found (")
    assert NO_SUCH_LIBRARY in reason


def test_list_backends_names_the_missing_driver_in_one_line(cupy_without_driver):
    result = _run(["-m", "simplenn.train", "--list-backends"], cupy_without_driver)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("cupy")]
    assert len(lines) == 1, result.stdout
    assert lines[0].startswith("cupy   unavailable: CuPy is installed but no NVIDIA driver")
    assert NO_SUCH_LIBRARY in lines[0] and "install the NVIDIA driver" in lines[0]


def test_the_registry_reports_the_probe(monkeypatch):
    monkeypatch.setattr(cuda_driver, "cuda_driver_problem", lambda: "no NVIDIA driver was found")
    monkeypatch.setitem(sys.modules, "cupy", types.ModuleType("cupy"))  # installed, no spec
    probe_backend.cache_clear()
    try:
        info = probe_backend("cupy")
    finally:
        probe_backend.cache_clear()
    assert not info.available and info.reason == "CuPy is installed but no NVIDIA driver was found"
