"""The research tools outside the package: ``benchmarks/tools/ab_trees.py`` (two source
trees timed side by side) on tiny grids, and ``scripts/`` holding only what the docs cite."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOL = "benchmarks/tools/ab_trees.py"
TINY = [
    "--backends",
    "numpy",
    "--hidden",
    "8",
    "--batch-sizes",
    "64",
    "--samples",
    "256",
    "--repeat",
    "1",
]

#: A tree whose core was rewritten: it keeps only the public API the tool may use
#: (load_mnist, TwoLayerNet, fit returning a History of epochs with their seconds), and
#: its fit takes none of the keywords lr, momentum, lr_schedule, eval_train, progress.
#: Each epoch reports 1 microsecond per sample: 1,000,000 samples/s.
STUB_TREE = """
from dataclasses import dataclass, field

import numpy as np

__version__ = "9.9"


@dataclass
class DataSplit:
    X: np.ndarray
    y: np.ndarray


def load_mnist():
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (1024, 784), dtype=np.uint8)
    y = rng.integers(0, 10, 1024)
    return DataSplit(X, y), DataSplit(X[:10], y[:10])


class TwoLayerNet:
    def __init__(self, n_inputs=784, n_hidden=256, n_classes=10, *, backend=None, seed=0):
        assert (n_inputs, n_classes, backend) == (784, 10, "numpy")
        self.n_hidden = n_hidden


@dataclass
class EpochStats:
    seconds: float
    train_loss: float


@dataclass
class History:
    epochs: list = field(default_factory=list)


def fit(net, train, test=None, *, epochs=6, batch_size=128, optimizer=None, seed=0):
    X, y = train
    assert epochs == 1 and X.shape[0] == y.shape[0]
    return History([EpochStats(seconds=X.shape[0] * 1e-6, train_loss=2.0)])
"""


def _tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, TOOL, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_two_trees_and_a_control_side_by_side(tmp_path):
    out_json = tmp_path / "ab.json"
    done = _tool("--old", str(ROOT), "--new", ".", "--control", *TINY, "--json", str(out_json))
    assert done.returncode == 0, done.stderr
    assert (
        "| backend | hidden | batch | old samples/s | new samples/s | new/old | copy/new |"
        in done.stdout
    )
    assert "hidden 8 batch 64 numpy: old " in done.stdout  # the cell, as it was measured
    assert re.search(
        r"numpy: copy/new \(best\) spans [0-9.]+ to [0-9.]+ over the grid", done.stdout
    )
    report = json.loads(out_json.read_text())
    trees = {t["label"]: t for t in report["trees"]}
    assert list(trees) == ["old", "new", "copy"]
    assert (
        trees["old"]["simplenn"]
        == trees["new"]["simplenn"]
        == str(ROOT / "simplenn" / "__init__.py")
    )
    copy = Path(trees["copy"]["simplenn"])
    assert ROOT not in copy.parents and not copy.exists()  # a copy, removed at the end
    assert [
        (r["tree"], r["hidden"], r["batch_size"], len(r["seconds"])) for r in report["results"]
    ] == [("old", 8, 64, 1), ("new", 8, 64, 1), ("copy", 8, 64, 1)]
    (row,) = report["summary"]
    old, new = report["results"][0]["seconds"][0], report["results"][1]["seconds"][0]
    assert row["new_old"] == pytest.approx(old / new)
    assert row["against_band"] in ("below", "within", "above")
    assert row["control_band"][0] == row["control_band"][1] == row["copy_new"]


def test_a_tree_with_only_the_public_api(tmp_path):
    """The old tree is this checkout; the new one, a stub with a different core and fit
    signature, is timed by its History's seconds."""
    stub = tmp_path / "rewritten"
    (stub / "simplenn").mkdir(parents=True)
    (stub / "simplenn" / "__init__.py").write_text(STUB_TREE)
    out_json = tmp_path / "ab.json"
    done = _tool("--old", ".", "--new", str(stub), *TINY, "--repeat", "2", "--json", str(out_json))
    assert done.returncode == 0, done.stderr
    assert "new 1,000,000 / 1,000,000" in done.stdout
    assert "copy/new" not in done.stdout
    report = json.loads(out_json.read_text())
    assert report["results"][1]["seconds"] == [256e-6, 256e-6]
    assert report["trees"][1]["version"] == "9.9"
    assert "against_band" not in report["summary"][0]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--old", "/nonexistent", "--new", "."], "'/nonexistent' does not exist"),
        (["--old", "benchmarks", "--new", "."], "has no simplenn/__init__.py"),
        (["--old", "."], "--new"),
        (["--old", ".", "--new", ".", "--hidden", "0"], "positive integers"),
        (["--old", ".", "--new", ".", "--samples", "60001"], "at most 60000"),
        (["--old", ".", "--new", ".", "--json", "no/such/dir/ab.json"], "does not exist"),
    ],
)
def test_bad_input_is_one_line(args, message):
    done = _tool(*args)
    assert done.returncode == 2
    err = done.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"python {TOOL}: error:")
    assert message in err


def test_a_failing_worker_is_reported_with_its_traceback():
    done = _tool("--old", ".", "--new", ".", *TINY[2:], "--backends", "nosuch")
    assert done.returncode == 1
    assert done.stderr.startswith(f"python {TOOL}: error: old:nosuch: Traceback")
    assert "nosuch" in done.stderr.splitlines()[-1]


def _cited() -> str:
    return "\n".join(
        p.read_text(encoding="utf-8")
        for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    )


def test_scripts_holds_only_what_the_docs_cite():
    cited = _cited()
    uncited = [
        p.name
        for p in sorted((ROOT / "scripts").iterdir())
        if p.is_file() and f"scripts/{p.name}" not in cited
    ]
    assert not uncited, f"scripts/ files that neither README.md nor docs/ cite: {uncited}"


def test_every_cited_script_and_tool_exists():
    cited = set(re.findall(r"\b((?:scripts|benchmarks/tools)/[\w.-]+\.(?:py|sh))", _cited()))
    assert cited  # the docs do cite some
    assert not [c for c in sorted(cited) if not (ROOT / c).is_file()]


# --------------------------------------------------------------------------------------
# scripts/numba_compile_time.py: each command cold (an empty Numba cache), then cached.
# --------------------------------------------------------------------------------------
COMPILE_TIME = ROOT / "scripts" / "numba_compile_time.py"


def _compile_time(tmp_path: Path, *argv: str) -> tuple[str, dict]:
    pytest.importorskip("numba", reason="numba is not installed (an optional backend)")
    out = tmp_path / "compile.json"
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, str(COMPILE_TIME), *argv, "--json", str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": path},
        timeout=900,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout, json.loads(out.read_text())


def _compiled(run: dict) -> list[dict]:
    """Every function a cold or cached process compiled, in either mode."""
    report = run["report"]
    if "stages" in report:
        return [r for stage in report["stages"] for r in stage["compiled"]]
    return report["compiled"]


@pytest.mark.slow
@pytest.mark.parametrize("whole", [False, True])
def test_compile_time_lists_what_evaluate_compiles_cold_and_loads_cached(tmp_path, whole):
    text, report = _compile_time(tmp_path, "--commands", "evaluate", *["--whole"][: int(whole)])
    assert "## python -m simplenn.evaluate MODEL --backend numba" in text.splitlines()
    assert report["cpu"] and report["load_average"]["before"] and report["versions"]["numba"]
    run = report["commands"]["evaluate"]
    cold, cached = _compiled(run["cold"]), _compiled(run["cached"])
    assert [r for r in cold if r["depth"] == 0] and all(r["seconds"] > 0 for r in cold)
    assert cached == []  # everything loaded from the cache the cold process wrote


@pytest.mark.slow
def test_the_train_warm_up_leaves_the_run_nothing_to_compile(tmp_path):
    """What python -m simplenn.train's warm-up compiles is all its run needs: fit on real
    images after it compiles nothing."""
    text, report = _compile_time(tmp_path, "--commands", "train")
    stages = report["commands"]["train"]["cold"]["report"]["stages"]
    warm, run = stages[1], stages[2]
    assert "warm-up" in warm["stage"] and warm["compiled"]
    assert run["stage"].startswith("the run") and run["compiled"] == []
