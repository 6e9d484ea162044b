"""``python -m simplenn.bench`` on a tiny grid, its flags, and the PyTorch peer's loss."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import simplenn
from simplenn.backends import probe_backend
from simplenn.bench import cli as bench
from simplenn.bench import gpu as gpu_suite
from simplenn.bench import sysinfo, throughput
from simplenn.bench.contenders import Availability
from simplenn.core.training import CHUNK_SAMPLES

TINY = [
    "--backends",
    "numpy",
    "--batch-sizes",
    "16,64",
    "--hidden",
    "8",
    "--samples",
    "256",
    "--repeat",
    "1",
    "--peak-size",
    "256",
]
ROOT = Path(__file__).resolve().parents[1]


def _run_cli(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    env.update(env_extra or {})
    for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if k not in (env_extra or {}):
            env.pop(k, None)
    return subprocess.run(
        [sys.executable, "-m", "simplenn.bench", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_tiny_grid_prints_table_and_writes_json_and_plot(tmp_path, capsys):
    out_json, out_png = tmp_path / "bench.json", tmp_path / "bench.png"
    argv = [*TINY, "--json", str(out_json)]
    have_matplotlib = True
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        have_matplotlib = False
    if have_matplotlib:
        argv += ["--plot", str(out_png)]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    assert "| hidden | batch | backend" in out
    rows = [line for line in out.splitlines() if line.startswith("|") and "| numpy " in line]
    assert [r.split("|")[2].strip() for r in rows] == ["16", "64"]
    assert all("1.00x" in r for r in rows)
    for label in ("CPU:", "GPU:", "BLAS:", "versions:", "peak: float32 sgemm"):
        assert label in out

    report = json.loads(out_json.read_text())
    assert [(r["name"], r["hidden"], r["batch_size"]) for r in report["results"]] == [
        ("numpy", 8, 16),
        ("numpy", 8, 64),
    ]
    for r in report["results"]:
        assert r["samples"] == 256 and len(r["seconds"]) == 1 and r["samples_per_s"] > 0
        assert r["samples_per_s"] == pytest.approx(256 / r["seconds"][0])
        assert r["speedup_vs_numpy"] == pytest.approx(1.0)
        assert r["percent_of_peak"] == pytest.approx(
            100 * r["samples_per_s"] * r["flops_per_sample"] / report["peak"]["flops_per_s"]
        )
    assert report["peak"]["flops_per_s"] > 0
    assert report["versions"]["simplenn"] == simplenn.__version__
    if have_matplotlib:
        assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _rows(out: str) -> list[list[str]]:
    """The fields of the table rows (not the head) in ``out``."""
    return [
        [f.strip() for f in line.strip().strip("|").split("|")]
        for line in out.splitlines()
        if line.startswith("|") and not line.startswith(("| hidden", "|---"))
    ]


class _FakeGrid:
    """A stand-in for throughput.run_grid: every contender's epoch of every cell takes
    ``seconds``; records its arguments and what stdout held when each cell was reported."""

    def __init__(self, capsys, seconds: float = 0.5):
        self.capsys, self.seconds, self.calls, self.printed = capsys, seconds, [], []

    def __call__(self, names, hidden_sizes, batch_sizes, samples, repeat, on_cells=None):
        self.calls.append((list(names), hidden_sizes, batch_sizes, samples, repeat))
        raw = []
        for hidden in hidden_sizes:
            for bs in batch_sizes:
                group = [
                    {
                        "name": n,
                        "is_peer": n in throughput.PEER_NAMES,
                        "hidden": hidden,
                        "batch_size": bs,
                        "samples": samples,
                        "seconds": [self.seconds] * repeat,
                    }
                    for n in names
                ]
                on_cells(group)
                out = self.capsys.readouterr().out
                print(out, end="")  # keep it for the test's own readouterr
                self.printed.append(out)
                raw += group
        return raw, [], []


@pytest.fixture
def fake_grid(capsys, monkeypatch):
    """The throughput command with every contender available, a fixed sgemm peak of
    1 GFLOP/s and the grid faked (:class:`_FakeGrid`)."""
    grid = _FakeGrid(capsys)
    monkeypatch.setattr(throughput, "run_grid", grid)
    monkeypatch.setattr(
        throughput,
        "probe_contender",
        lambda name: Availability(name, True, None, name in throughput.PEER_NAMES),
    )
    monkeypatch.setattr(
        sysinfo,
        "measure_sgemm_peak",
        lambda n=2048, repeat=5: {
            "n": n,
            "repeat": repeat,
            "best_seconds": 1.0,
            "flops_per_s": 1e9,
        },
    )
    monkeypatch.setattr(sysinfo, "gpu_names", lambda: [])
    monkeypatch.delenv(throughput.SKIP_ENV, raising=False)
    return grid


def test_default_is_the_quick_grid_and_says_how_to_run_the_full_one(fake_grid, capsys):
    assert bench.main([]) == 0
    quick, full = throughput.GRIDS["quick"], throughput.GRIDS["full"]
    names, hidden, batch_sizes, samples, repeat = fake_grid.calls[-1]
    assert (hidden, batch_sizes, samples, repeat) == (
        quick.hidden,
        quick.batch_sizes,
        quick.samples,
        quick.repeat,
    )
    assert names == list(throughput.contender_names())
    last = capsys.readouterr().out.rstrip().splitlines()[-1]
    assert last.startswith("this was the quick grid;")
    assert last.endswith("python -m simplenn.bench --grid full")

    assert bench.main(["--grid", "full", "--hidden", "64"]) == 0
    assert fake_grid.calls[-1][1:] == ((64,), full.batch_sizes, full.samples, full.repeat)
    assert "this was the quick grid" not in capsys.readouterr().out
    assert full.samples == 60000 and full.hidden == (128, 512)
    assert full.batch_sizes == (1, 8, 32, 128, 512, 2048)


def test_each_cell_is_printed_as_it_is_measured(fake_grid, capsys):
    assert bench.main(["--backends", "numpy,numba", "--batch-sizes", "8,64", "--hidden", "16"]) == 0
    first, second = fake_grid.printed
    second = second[len(first) :]  # what came after the first cell
    assert "| hidden | batch | backend" in first  # the table's head, before any cell
    assert [r[:3] for r in _rows(first)] == [["16", "8", "numpy"], ["16", "8", "numba"]]
    assert [r[:3] for r in _rows(second)] == [["16", "64", "numpy"], ["16", "64", "numba"]]


def test_roofline_columns_count_dense_flops_against_the_measured_peak(fake_grid, capsys):
    """16384 samples in 0.5 s at hidden 128: 32,768 samples/s x 4*784*128 + 6*128*10
    FLOPs = 13.4 GFLOP/s dense-equivalent, 1,345% of a 1 GFLOP/s peak."""
    assert bench.main(["--backends", "numba", "--batch-sizes", "512", "--samples", "16384"]) == 0
    out = capsys.readouterr().out
    assert "roofline: dense GFLOP/s counts" in out and "above 100% of the peak" in out
    header = next(line for line in out.splitlines() if line.startswith("| hidden"))
    assert "| dense GFLOP/s | % of peak |" in header
    (row,) = _rows(out)
    flops = 16384 / 0.5 * (4 * 784 * 128 + 6 * 128 * 10)
    assert row[:4] == ["128", "512", "numba", "32,768"]
    assert row[6:] == [f"{flops / 1e9:.1f}", f"{100 * flops / 1e9:,.1f}%".replace(",", "")]


def test_skip_backends_leaves_them_out_of_the_default_set(fake_grid, capsys, monkeypatch):
    assert bench.main(["--skip-backends", "numba,torch-cpu"]) == 0
    names = fake_grid.calls[-1][0]
    assert "numba" not in names and "torch-cpu" not in names and "numpy" in names
    out = capsys.readouterr().out
    assert "skipped: numba: left out by --skip-backends" in out.splitlines()

    monkeypatch.setenv(throughput.SKIP_ENV, "jax, nosuch")
    assert bench.main([]) == 0
    names = fake_grid.calls[-1][0]
    assert "jax" not in names and "numba" in names
    out = capsys.readouterr().out
    assert f"skipped: jax: left out by {throughput.SKIP_ENV}" in out.splitlines()
    assert f"note: {throughput.SKIP_ENV} names 'nosuch', not a backend or peer here" in out

    assert bench.main(["--backends", "jax"]) == 0  # named explicitly: it runs
    assert fake_grid.calls[-1][0] == ["jax"]


def test_leaving_every_backend_out_is_one_line(fake_grid, capsys):
    assert bench.main(["--skip-backends", ",".join(throughput.contender_names())]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nothing to measure" in err


def test_progress_bar_on_a_terminal_counts_cells(monkeypatch):
    import io

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    err = Terminal()
    monkeypatch.setattr(sys, "stderr", err)
    assert bench.main(TINY) == 0
    assert "bench: 100%" in err.getvalue() and "2/2 [" in err.getvalue()


def test_plot_without_matplotlib_says_how_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    assert bench.main([*TINY, "--plot", str(tmp_path / "p.png")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "matplotlib" in err and "pip install" in err
    assert not (tmp_path / "p.png").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["--batch-sizes", "0"],
        ["--batch-sizes", "8,x"],
        ["--hidden", ""],
        ["--hidden", "-4"],
        ["--backends", "tensorflow"],
        ["--repeat", "0"],
        ["--samples", "60001"],
        ["--plot", "throughput.jpg"],
        ["--json", "no/such/dir/out.json"],
        ["--frobnicate"],
        ["--backends", "numpy@/tmp"],
        ["--grid", "huge"],
        ["--skip-backends", "tensorflow"],
        ["--skip-backends", ""],
        ["--skip-backends", "numba", "--backends", "numpy"],
        ["--unset-openblas-env"],
        ["--processes", "2"],
        ["--suite", "bogus"],
        ["--suite"],
        ["--suite", "gpu", "--hidden", "8"],
        ["--suite", "gpu", "--plot", "p.png"],
        ["--suite", "gpu", "--backends", "numpy"],
        ["--suite", "gpu", "--grid", "full"],
        ["--suite", "gpu", "--skip-backends", "numba"],
        ["--suite", "gpu", "--out-dir", "no/such/dir"],
        ["--out-dir", "."],
        ["--suite", "augment", "--grid", "quick"],
        ["--suite", "augment", "--skip-backends", "numba"],
    ],
)
def test_bad_flags_exit_2_with_one_line(argv, capsys):
    with pytest.raises(SystemExit) as info:
        bench.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("python -m simplenn.bench: error:")


def test_named_backend_that_cannot_run_is_an_error(capsys, monkeypatch):
    monkeypatch.setattr(
        throughput,
        "probe_contender",
        lambda name: Availability(name, False, "pretend it is missing"),
    )
    assert bench.main(["--backends", "numba"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "'numba' unavailable: pretend it is missing" in err


def test_openblas_variables_are_noted_with_how_to_measure_without_them():
    done = _run_cli(*TINY, env_extra={"OPENBLAS_L2_SIZE": "262144"})
    assert done.returncode == 0, done.stderr
    assert "OPENBLAS_L2_SIZE=262144 is set" in done.stdout
    assert "threadpoolctl shows OpenBLAS kernel" in done.stdout
    assert "env -u OPENBLAS_L2_SIZE python -m simplenn.bench" in done.stdout


def test_torch_peer_loss_matches_simplenn_after_one_epoch():
    pytest.importorskip("torch", reason="PyTorch is not installed (an optional peer)")
    train, test = simplenn.load_mnist()
    check = throughput.check_peer_loss("torch-cpu", 32, 2048, train, test)
    assert check.match, check
    assert check.relative_difference < 1e-5
    assert check.samples == 2048 and check.batch_size == throughput.LOSS_CHECK_BATCH


def test_bad_suite_names_the_valid_ones(capsys):
    with pytest.raises(SystemExit) as info:
        bench.main(["--suite", "bogus"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "--suite" in err and "'throughput', 'gpu', 'recipe', 'augment'" in err


def test_help_documents_the_suites_and_the_output_directory():
    text = bench.build_parser().format_help()
    for flag in (
        "--suite {throughput,gpu,recipe,augment}",
        "--out-dir DIR",
        "benchmark.json",
        "benchmark.md",
        "--grid {quick,full}",
        "--skip-backends LIST",
        throughput.SKIP_ENV,
    ):
        assert flag in text


def test_gpu_suite_skips_what_cannot_run_and_writes_its_files(tmp_path):
    """The suite as scripts/gpu_run.sh runs it, shrunk: without a GPU (CI, this machine)
    it says why cupy is skipped, times numba and exits 0."""
    out_json = tmp_path / "copy.json"
    done = _run_cli(
        "--suite",
        "gpu",
        "--samples",
        "1024",
        "--repeat",
        "1",
        "--batch-sizes",
        "512",
        "--out-dir",
        str(tmp_path),
        "--json",
        str(out_json),
    )
    assert done.returncode == 0, done.stderr
    cupy, numba = probe_backend("cupy"), probe_backend("numba")
    if not cupy.available:
        assert (
            f"skipped: cupy (CUDA graphs on and off, batch 512): {cupy.reason}"
            in done.stdout.splitlines()
        )
    report = json.loads((tmp_path / gpu_suite.JSON_NAME).read_text())
    assert json.loads(out_json.read_text())["rows"] == report["rows"]
    assert report["samples"] == 1024 and report["epochs_timed"] == 1
    rows = {r["contender"]: r for r in report["rows"]}
    assert set(rows) == {"cupy", "numba", "torch-cuda eager"}
    assert all("error" not in r for r in report["rows"])
    if not cupy.available:
        assert rows["cupy"]["skipped"] == cupy.reason
    if numba.available:
        assert rows["numba"]["batch_size"] == gpu_suite.NUMBA_BATCH
        assert rows["numba"]["median_ms"] > 0 and rows["numba"]["images_per_s"] > 0
    table = (tmp_path / gpu_suite.TABLE_NAME).read_text()
    assert "| contender | timer | batch | CUDA graphs |" in table
    assert "| numba |" in table and "| torch-cuda eager |" in table


def test_gpu_suite_reports_a_failed_configuration_and_goes_on(tmp_path, capsys, monkeypatch):
    """With numba the one contender (a GPU, where there is one, left out), its failed
    configuration is reported and the suite ends with exit status 1."""
    numba = dataclasses.replace(probe_backend("numba"), available=True, reason=None)
    monkeypatch.setattr(
        gpu_suite,
        "probe_backend",
        lambda name: (
            numba
            if name == "numba"
            else dataclasses.replace(
                probe_backend(name), available=False, reason="left out by this test"
            )
        ),
    )
    monkeypatch.setattr(
        gpu_suite,
        "probe_contender",
        lambda name: Availability(name, False, "left out by this test"),
    )

    def broken(*args, **kwargs):
        raise RuntimeError("pretend the kernel failed")

    monkeypatch.setattr(gpu_suite, "fit_timed_epochs", broken)
    assert (
        bench.main(
            ["--suite", "gpu", "--samples", "64", "--repeat", "1", "--out-dir", str(tmp_path)]
        )
        == 1
    )
    captured = capsys.readouterr()
    assert "FAILED: numba batch 512, fit: RuntimeError: pretend the kernel failed" in captured.err
    assert "1 configuration(s) failed" in captured.err.splitlines()[-1]
    rows = json.loads((tmp_path / gpu_suite.JSON_NAME).read_text())["rows"]
    assert [r["error"] for r in rows if "error" in r] == ["RuntimeError: pretend the kernel failed"]
    assert "torch-cuda eager" in {r["contender"] for r in rows}


def test_event_timed_chunk_loop_trains_through_train_steps(monkeypatch):
    """The CUDA-event loop of the cupy configurations, on the NumPy backend with a stand-in
    for cupy's events: one time per epoch, and the parameters move."""
    import time
    import types

    import numpy as np

    class Event:
        def record(self):
            self.t = time.perf_counter()

        def synchronize(self):
            pass

    fake = types.SimpleNamespace(
        cuda=types.SimpleNamespace(Event=Event, get_elapsed_time=lambda a, b: (b.t - a.t) * 1e3)
    )
    monkeypatch.setitem(sys.modules, "cupy", fake)
    calls = []
    original = simplenn.TwoLayerNet.train_steps

    def counting(self, *args, **kwargs):
        calls.append(args[2].shape[0])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(simplenn.TwoLayerNet, "train_steps", counting)
    train, _ = simplenn.load_mnist()
    net = simplenn.TwoLayerNet(784, 8, 10, backend="numpy", seed=0)
    before = net.parameters()["W1"]
    X, Y = train.X[:5000], train.y[:5000].astype(np.int64)
    ms = gpu_suite.event_timed_epochs(net, X, Y, batch_size=1000, epochs=2)
    assert len(ms) == 3 and all(t > 0 for t in ms)
    chunk = max(1, CHUNK_SAMPLES // 1000) * 1000  # fit's chunks: whole batches
    assert calls == [min(chunk, 5000 - begin) for begin in range(0, 5000, chunk)] * 3
    assert not np.array_equal(net.parameters()["W1"], before)


# --------------------------------------------------------------------------------------
# --suite recipe: whole processes, first run and time to accuracy. The processes are
# faked here (the real ones take minutes); the peers' own functions run on 512 images.
# --------------------------------------------------------------------------------------
from simplenn.bench import recipe  # noqa: E402

TRAIN_OUTPUT = """\
training TwoLayerNet(784, 256, 10, backend='numba', dtype='float32') on bundled MNIST: 60000 train / 10000 test images
compiled the numba kernels in 32.1s (cached on disk for later runs)
epoch 1/6:  48%|####8     | 28.7k/60.0k [00:03<00:02, 11.8kimg/s, loss=0.1955]
epoch  1/6  loss 0.2239  train 97.19%  test 96.32%  lr 0.2000  5.12s (11,720 img/s)
epoch  2/6  loss 0.0881  train 98.36%  test 97.37%  lr 0.1866  5.39s (11,125 img/s)
test accuracy: 98.21%
"""


def test_recipe_parses_what_train_and_the_peers_print():
    out = recipe.parse_train_output(TRAIN_OUTPUT)
    assert out.accuracy == pytest.approx(0.9821)
    assert out.compile_seconds == pytest.approx(32.1)
    assert out.train_seconds == pytest.approx(5.12 + 5.39)
    assert out.backend == "numba"
    sklearn_out = recipe.parse_train_output(
        "trained 6 epochs in 41.50s (final loss 0.0300)\ntest accuracy: 97.90%\n"
    )
    assert (sklearn_out.accuracy, sklearn_out.train_seconds) == (pytest.approx(0.979), 41.5)
    assert sklearn_out.compile_seconds is None and sklearn_out.backend is None
    nothing = recipe.parse_train_output("Traceback (most recent call last):\n")
    assert nothing == recipe.TrainOutput(None, None, None, None)


def _fake_processes(calls, walls=None, fail=()):
    """A stand-in for recipe.run_process: simplenn compiles (and fills the cache) when
    NUMBA_CACHE_DIR is empty, else loads; wall times are fixed per contender."""
    walls = walls or {"cold": [60.0], "warm": [20.0], "torch": [40.0], "sklearn": [80.0]}
    seen = {k: 0 for k in walls}

    def run(argv, env, timeout=None):
        calls.append((argv, env))
        if "simplenn.train" in argv:
            cache = Path(env["NUMBA_CACHE_DIR"])
            kind = "warm" if any(cache.iterdir()) else "cold"
            (cache / "kernels.nbi").write_text("x")
            text = TRAIN_OUTPUT.replace("32.1s", "30.0s" if kind == "cold" else "0.5s")
        else:
            kind = "torch" if "torch_recipe" in argv[-1] else "sklearn"
            text = f"test accuracy: {97.5 if kind == 'sklearn' else 98.0}%\n"
        wall = walls[kind][seen[kind] % len(walls[kind])]
        seen[kind] += 1
        if kind in fail:
            return recipe.ProcessResult(wall, 1, "", "Traceback ...\nRuntimeError: boom\n")
        return recipe.ProcessResult(wall, 0, text, "")

    return run


def test_recipe_suite_prints_the_table_and_writes_json(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(recipe, "library_missing", lambda module: False)
    monkeypatch.setenv("SIMPLENN_NUMBA_CACHE", "0")  # the user's setting must not leak
    calls = []
    monkeypatch.setattr(
        recipe,
        "run_process",
        _fake_processes(
            calls, {"cold": [70.0, 60.0], "warm": [20.0, 25.0], "torch": [40.0], "sklearn": [80.0]}
        ),
    )
    out_json = tmp_path / "recipe.json"
    assert bench.main(["--suite", "recipe", "--repeat", "2", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "| run | wall s | vs simplenn | compile s |" in out
    rows = {
        line.split("|")[1].strip(): line
        for line in out.splitlines()
        if line.startswith("| simplenn")
        or line.startswith("| PyTorch")
        or line.startswith("| scikit")
    }
    assert "| 60.0 | 3.00x | 30.0 |" in rows["simplenn numba, cold cache"]
    assert "| 20.0 | 1.00x | 0.5 |" in rows["simplenn numba, warm cache"]
    assert "| 40.0 | 2.00x | - |" in rows["PyTorch script (torch_recipe)"]
    assert "| 97.50% | -0.71 pt | no |" in rows["scikit-learn MLPClassifier (sklearn_recipe)"]
    assert "cold/warm 3.00x" in out and "skipped:" not in out
    assert (
        "warm/torch 0.50x (target ≤ 0.33: missed by 6.67 s: warm 20.00 s against PyTorch's "
        "40.00 s, at most 13.33 s allowed; test accuracy 98.21% and 98.00%, both reached "
        "98.0%)" in out.splitlines()
    )
    assert (
        "cold/torch 1.50x (target ≤ 1.00: missed by 20.00 s: cold 60.00 s against "
        "PyTorch's 40.00 s, at most 40.00 s allowed)" in out.splitlines()
    )

    # Two turns of four processes, each turn's simplenn runs sharing a new cache directory
    # that is not the user's, with the cache on.
    assert len(calls) == 8
    dirs = [env["NUMBA_CACHE_DIR"] for argv, env in calls if "simplenn.train" in argv]
    assert dirs[0] == dirs[1] != dirs[2] == dirs[3]
    assert all("SIMPLENN_NUMBA_CACHE" not in env for _, env in calls)
    assert all(not Path(d).exists() for d in dirs)  # removed afterwards
    assert calls[0][0][1:] == ["-m", "simplenn.train", "--backend", "numba"]

    report = json.loads(out_json.read_text())
    assert report["suite"] == "recipe" and report["repeat"] == 2 and report["cpu"]
    assert report["cold_warm"] == {
        "cold_seconds": 60.0,
        "warm_seconds": 20.0,
        "ratio": 3.0,
        "cold_compile_seconds": 30.0,
        "warm_compile_seconds": 0.5,
    }
    assert report["cache_files_after_cold_run"] == [1, 1]
    assert report["targets"] == {
        "warm_vs_torch": {
            "ratio": 0.5,
            "target": 0.3333,
            "simplenn_seconds": 20.0,
            "torch_seconds": 40.0,
            "limit_seconds": 13.333,
            "margin_seconds": -6.667,
            "accuracies_reached": True,
            "holds": False,
        },
        "cold_vs_torch": {
            "ratio": 1.5,
            "target": 1.0,
            "simplenn_seconds": 60.0,
            "torch_seconds": 40.0,
            "limit_seconds": 40.0,
            "margin_seconds": -20.0,
            "holds": False,
        },
    }
    by = {r["name"]: r for r in report["rows"]}
    assert by["simplenn-cold"]["wall_seconds"] == [70.0, 60.0]
    assert by["torch"]["time_vs_simplenn"] == 2.0 and by["torch"]["reached_target"]
    assert by["sklearn"]["accuracy_points_vs_simplenn"] == -0.71
    assert report["skipped"] == []


def _timed_row(name, seconds, accuracy=0.982):
    """A row as recipe.summarize gives it, for a run that took ``seconds`` at best."""
    return {
        "name": name,
        "best_wall_seconds": seconds,
        "accuracy": accuracy,
        "reached_target": accuracy >= recipe.TARGET_ACCURACY,
    }


def test_recipe_targets_hold_at_and_below_their_ratios():
    rows = [
        _timed_row("simplenn-cold", 30.0),
        _timed_row("simplenn-warm", 10.0),
        _timed_row("torch", 30.0, accuracy=0.981),
    ]
    t = recipe.targets(rows)
    # warm exactly a third of PyTorch's time, cold exactly PyTorch's: both targets hold
    assert t["warm_vs_torch"]["holds"] and t["warm_vs_torch"]["margin_seconds"] == 0.0
    assert t["cold_vs_torch"]["holds"] and t["cold_vs_torch"]["ratio"] == 1.0
    lines = recipe.target_lines(rows)
    assert lines[0].startswith("warm/torch 0.33x (target ≤ 0.33: held, 0.00 s to spare: ")
    assert lines[1].startswith("cold/torch 1.00x (target ≤ 1.00: held, 0.00 s to spare: ")

    rows[1] = _timed_row("simplenn-warm", 10.01)  # just over a third
    rows[0] = _timed_row("simplenn-cold", 24.0)
    t = recipe.targets(rows)
    assert not t["warm_vs_torch"]["holds"] and t["warm_vs_torch"]["margin_seconds"] == -0.01
    assert t["cold_vs_torch"] == {
        "ratio": 0.8,
        "target": 1.0,
        "simplenn_seconds": 24.0,
        "torch_seconds": 30.0,
        "limit_seconds": 30.0,
        "margin_seconds": 6.0,
        "holds": True,
    }
    assert "cold/torch 0.80x (target ≤ 1.00: held, 6.00 s to spare: cold 24.00 s" in "\n".join(
        recipe.target_lines(rows)
    )


@pytest.mark.parametrize("below", ["simplenn-warm", "torch"])
def test_recipe_warm_target_needs_both_accuracies(below):
    rows = [
        _timed_row(name, seconds, 0.979 if name == below else 0.982)
        for name, seconds in (("simplenn-warm", 5.0), ("torch", 30.0))
    ]
    t = recipe.targets(rows)["warm_vs_torch"]
    assert t["ratio"] < t["target"] and not t["accuracies_reached"] and t["holds"] is False
    line = recipe.target_lines(rows)[0]
    assert "(target ≤ 0.33: missed on accuracy, 5.00 s to spare: " in line
    assert "not both reached 98.0%" in line


def test_recipe_targets_say_why_they_were_not_measured():
    rows = [
        {"name": "simplenn-cold", "label": "c", "error": "exit status 1: boom"},
        _timed_row("simplenn-warm", 10.0),
        {"name": "torch", "label": "t", "skipped": "PyTorch is not installed"},
    ]
    t = recipe.targets(rows)
    assert t["warm_vs_torch"] == {
        "target": 0.3333,
        "holds": None,
        "reason": "the PyTorch script skipped: PyTorch is not installed",
    }
    assert t["cold_vs_torch"]["reason"] == "simplenn's cold run failed: exit status 1: boom"
    assert recipe.target_lines(rows) == [
        "warm/torch - (target ≤ 0.33: not measured: the PyTorch script skipped: PyTorch is "
        "not installed)",
        "cold/torch - (target ≤ 1.00: not measured: simplenn's cold run failed: exit status "
        "1: boom)",
    ]


def test_recipe_skips_missing_libraries_with_one_line(capsys, monkeypatch):
    monkeypatch.setattr(recipe, "library_missing", lambda module: module in ("sklearn", "numba"))
    calls = []
    monkeypatch.setattr(recipe, "run_process", _fake_processes(calls))
    assert recipe.run_suite(repeat=1, json_path=None, command="c") == 0
    out = capsys.readouterr().out
    assert (
        "skipped: scikit-learn MLPClassifier (sklearn_recipe): scikit-learn is not "
        "installed; pip install scikit-learn"
    ) in out.splitlines()
    assert f"skipped: simplenn numba, cold cache: {recipe.NUMBA_MISSING}" in out.splitlines()
    assert "| simplenn (default backend) | 60.0 | 1.00x |" in out  # compiles: an empty cache
    assert "| scikit" not in out and "cold/warm" not in out
    assert [argv[1:] for argv, _ in calls] == [
        ["-m", "simplenn.train"],
        ["-c", "from simplenn.bench.recipe import torch_recipe; torch_recipe()"],
    ]


def test_recipe_reports_a_failed_process_and_goes_on(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(recipe, "library_missing", lambda module: False)
    monkeypatch.setattr(recipe, "run_process", _fake_processes([], fail=("torch",)))
    assert recipe.run_suite(repeat=1, json_path=tmp_path / "r.json", command="c") == 1
    rows = {r["name"]: r for r in json.loads((tmp_path / "r.json").read_text())["rows"]}
    assert rows["torch"]["output_tail"] == ["Traceback ...", "RuntimeError: boom"]
    assert "best_wall_seconds" not in rows["torch"]
    captured = capsys.readouterr()
    assert (
        "FAILED: PyTorch script (torch_recipe): exit status 1: RuntimeError: boom"
        in captured.out.splitlines()
    )
    assert "| scikit-learn MLPClassifier (sklearn_recipe) | 80.0 | 4.00x |" in captured.out
    assert "PyTorch script (torch_recipe) failed" in captured.err


@pytest.mark.parametrize(
    "argv",
    [
        ["--hidden", "8"],
        ["--out-dir", "."],
        ["--samples", "100"],
        ["--batch-sizes", "8"],
        ["--backends", "numpy"],
    ],
)
def test_recipe_rejects_the_grids_flags(argv, capsys):
    with pytest.raises(SystemExit) as info:
        bench.main(["--suite", "recipe", *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not used by --suite recipe" in err


def test_recipe_peer_commands_name_the_peer_functions():
    for key, fn in recipe.PEER_FUNCTIONS.items():
        argv = recipe.peer_argv(key)
        assert argv[1] == "-c" and callable(getattr(recipe, fn))
        compile(argv[2], "<peer>", "exec")
        assert argv[2] in recipe.shown_command(key, numba=True)


@pytest.mark.parametrize("fn, module", [("torch_recipe", "torch"), ("sklearn_recipe", "sklearn")])
def test_recipe_peer_trains_on_512_images(fn, module):
    pytest.importorskip(module, reason=f"{module} is not installed (an optional peer)")
    lines: list[str] = []
    accuracy = getattr(recipe, fn)(samples=512, epochs=1, say=lines.append)
    parsed = recipe.parse_train_output("\n".join(lines))
    assert 0.2 < accuracy <= 1  # one epoch of 512 images: well above chance
    assert parsed.accuracy == pytest.approx(accuracy, abs=5e-5)
    assert parsed.train_seconds is not None and parsed.train_seconds > 0


def test_augment_suite_times_each_augmentation_and_writes_json(tmp_path, capsys):
    path = tmp_path / "augment.json"
    code = bench.main(
        [
            "--suite",
            "augment",
            "--backends",
            "numpy",
            "--hidden",
            "8",
            "--batch-sizes",
            "250",
            "--samples",
            "1000",
            "--repeat",
            "1",
            "--json",
            str(path),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "best epoch (s)" in out and "distortion work (s)" in out
    report = json.loads(path.read_text())
    assert [r["augment"] for r in report["rows"]] == ["none", "affine", "elastic"]
    assert report["rows"][0]["cost"] == 0 and report["samples"] == 1000
    assert all(r["epoch_seconds"] > 0 for r in report["rows"])
    assert all(r["distortion_seconds"] > 0 for r in report["rows"][1:])


@pytest.mark.parametrize(
    "argv",
    [
        ["--hidden", "128,512"],
        ["--backends", "numpy,numba"],
        ["--peak-size", "64"],
        ["--backends", "torch-cpu"],
    ],
)
def test_augment_suite_rejects_what_it_does_not_take(argv, capsys):
    with pytest.raises(SystemExit) as info:
        bench.main(["--suite", "augment", *argv])
    assert info.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
