"""Fixtures of the benchmark suites: ``python -m pytest benchmarks/``.

The suites time the workloads of :mod:`simplenn.bench.workloads` with pytest-benchmark,
for every simplenn backend and PyTorch peer that runs here (the others skip with the
reason). Plain ``python -m pytest`` never collects them (``testpaths = ["tests"]``).

Two modes:

- ``python -m pytest benchmarks/``: the real measurements (full MNIST epochs, the
  97.5% time-to-accuracy target); add ``-k numba`` etc. to narrow the grid.
- ``python -m pytest benchmarks/ --benchmark-disable``: every benchmark runs once,
  untimed, as a smoke test (CI does this); epochs shrink to :data:`SMOKE_SAMPLES`
  images and time-to-accuracy trains on a subset to a lower target.
  ``--bench-samples N`` sets the epoch size in either mode.

All contenders share the pytest process. On a machine with few cores, one library's
BLAS/OpenMP threads that have worked (NumPy's OpenBLAS, PyTorch's OpenMP) can slow the
next library's threads down, so for clean peer numbers run them alone
(``-k torch``), or use ``python -m simplenn.bench``, which gives every contender a
process of its own.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from simplenn.bench.contenders import PEER_NAMES, contender_names, probe_contender

FULL_SAMPLES = 60000
SMOKE_SAMPLES = 512

_HERE = Path(__file__).resolve().parent
_GPU = ("cupy", "torch-cuda")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("simplenn benchmarks")
    group.addoption(
        "--bench-samples",
        type=int,
        default=None,
        metavar="N",
        help=f"training images per timed epoch (default {FULL_SAMPLES}; "
        f"{SMOKE_SAMPLES} with --benchmark-disable)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "bench: a simplenn benchmark (benchmarks/, run with python -m pytest benchmarks/)",
    )
    config.addinivalue_line("markers", "gpu: needs a working CUDA device")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.bench)


@pytest.fixture(scope="session")
def smoke(request: pytest.FixtureRequest) -> bool:
    """True under ``--benchmark-disable``: run each benchmark once, on reduced work."""
    return bool(request.config.getoption("benchmark_disable"))


@pytest.fixture(scope="session")
def epoch_samples(request: pytest.FixtureRequest, smoke: bool) -> int:
    n = request.config.getoption("bench_samples")
    if n is None:
        return SMOKE_SAMPLES if smoke else FULL_SAMPLES
    if not 1 <= n <= FULL_SAMPLES:
        raise pytest.UsageError(f"--bench-samples must be in 1..{FULL_SAMPLES}, not {n}")
    return n


@pytest.fixture(scope="session")
def mnist():
    """The bundled MNIST as (train, test) DataSplits."""
    import simplenn

    return simplenn.load_mnist()


def _skip_unless_available(name: str) -> None:
    info = probe_contender(name)
    if not info.available:
        pytest.skip(f"{'peer' if info.is_peer else 'backend'} {name!r} unavailable: {info.reason}")


@pytest.fixture(
    params=[
        pytest.param(n, marks=[pytest.mark.gpu] if n in _GPU else []) for n in contender_names()
    ]
)
def contender_name(request: pytest.FixtureRequest) -> str:
    """Every simplenn backend and PyTorch peer; skipped with the reason where it can't run."""
    _skip_unless_available(request.param)
    return request.param


@pytest.fixture(
    params=[
        pytest.param(n, marks=[pytest.mark.gpu] if n in _GPU else [])
        for n in contender_names()
        if n not in PEER_NAMES
    ]
)
def backend_name(request: pytest.FixtureRequest) -> str:
    """Every simplenn backend; skipped with the reason where it can't run."""
    _skip_unless_available(request.param)
    return request.param


@pytest.fixture
def measure(benchmark) -> Callable[..., float]:
    """``measure(fn, samples, rounds=None)``: benchmark ``fn`` (which synchronizes the
    device before returning) and record its throughput in ``benchmark.extra_info``.

    ``rounds=None`` lets pytest-benchmark calibrate the number of rounds; long
    workloads pass a fixed number. Under ``--benchmark-disable`` ``fn`` runs once.
    Returns the best samples/s seen.
    """

    def run(fn: Callable[[], object], samples: int, rounds: int | None = None) -> float:
        durations: list[float] = []

        def target() -> None:
            start = time.perf_counter()
            fn()
            durations.append(time.perf_counter() - start)

        if rounds is None:
            benchmark(target)
        else:
            benchmark.pedantic(target, rounds=rounds, iterations=1, warmup_rounds=0)
        best = samples / min(durations)
        median = statistics.median(durations)
        benchmark.extra_info.update(
            samples=samples, samples_per_s=best, median_samples_per_s=samples / median
        )
        return best

    return run
