"""``python -m simplenn.bench.report``: a benchmark's JSON as the README's Markdown table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from simplenn.bench.report import COLUMNS, load_cells, main, markdown_table

ROOT = Path(__file__).resolve().parent.parent
FIVE_LIBRARIES = ROOT / "benchmarks/results/2026-12-01-cpu-2core-five-libraries/benchmark.json"


def _cells(line: str) -> list[str]:
    return [f.strip() for f in line.strip().strip("|").split("|")]


def test_table_of_the_committed_results(capsys):
    assert main([str(FIVE_LIBRARIES), "--hidden", "128"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert tuple(_cells(lines[0])) == COLUMNS
    rows = [_cells(line) for line in lines[2:]]
    assert len(rows) == 6 * 5  # batch sizes x contenders
    assert {r[0] for r in rows} == {"128"}
    assert ["128", "1", "numpy", "4,028", "1.00x"] in rows
    assert ["128", "1", "numba", "71,847", "17.84x"] in rows
    assert ["128", "2048", "torch-cpu (peer)", "399,713", "1.08x"] in rows


def test_every_width_by_default():
    table = markdown_table(load_cells(FIVE_LIBRARIES))
    widths = {_cells(line)[0] for line in table.splitlines()[2:]}
    assert widths == {"128", "512"}


@pytest.mark.parametrize(
    "content",
    [
        None,
        "not json",
        "[]",
        '{"results": []}',
        '{"results": [{"name": "numpy"}], "peak": {"flops_per_s": 1}}',
    ],
)
def test_missing_or_malformed_file(tmp_path, capsys, content):
    path = tmp_path / "benchmark.json"
    if content is not None:
        path.write_text(content)
    assert main([str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("python -m simplenn.bench.report: error: ")
    assert str(path) in err and "\n" not in err


def test_width_without_results(capsys):
    assert main([str(FIVE_LIBRARIES), "--hidden", "64"]) == 2
    assert "hidden width 64" in capsys.readouterr().err


def test_runs_as_a_module():
    done = subprocess.run(
        [sys.executable, "-m", "simplenn.bench.report", str(FIVE_LIBRARIES), "--hidden", "512"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("| hidden | batch | backend")


def test_batch_sizes_filter(capsys):
    assert main([str(FIVE_LIBRARIES), "--hidden", "128", "--batch-sizes", "1,512"]) == 0
    rows = capsys.readouterr().out.splitlines()[2:]
    assert {_cells(line)[1] for line in rows} == {"1", "512"}
    assert main([str(FIVE_LIBRARIES), "--batch-sizes", "3"]) == 2
    assert "batch size 3" in capsys.readouterr().err
