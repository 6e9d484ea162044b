"""``python -m simplenn.bench.report PATH.json [--hidden H] [--batch-sizes LIST]``: a benchmark's results as a
Markdown table.

Reads the JSON that ``python -m simplenn.bench --json PATH.json`` writes and prints one
row per hidden width, batch size and contender: hidden, batch, backend, samples/s and
the speed-up over the NumPy backend. The rates come from the recorded epoch times,
through the benchmark's own :func:`~simplenn.bench.throughput.summarize` and
:func:`~simplenn.bench.throughput.format_table`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..cli import common
from .cli import _int_list
from .throughput import Cell, format_table, summarize

PROG = common.invoked_as("simplenn.bench.report")
#: The columns of :func:`~simplenn.bench.throughput.format_table` this report keeps.
COLUMNS = ("hidden", "batch", "backend", "samples/s", "vs numpy")
_RAW_KEYS = ("name", "is_peer", "hidden", "batch_size", "samples", "seconds")


class ReportError(ValueError):
    """The results file is missing, unreadable or not a benchmark's JSON."""


def load_cells(path: str | Path) -> list[Cell]:
    """The cells of the benchmark JSON at ``path``, rates recomputed from its epoch times."""
    path = Path(path)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"{path}: cannot read it ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: not JSON ({exc})") from None
    what = "not a results file of python -m simplenn.bench --json"
    if not isinstance(report, dict):
        raise ReportError(f"{path}: {what} (expected a JSON object)")
    results, peak = report.get("results"), report.get("peak")
    if not isinstance(results, list) or not results:
        raise ReportError(
            f"{path}: {what} (no 'results' list: the report reads the throughput suite's files)"
        )
    if (
        not isinstance(peak, dict)
        or not isinstance(peak.get("flops_per_s"), (int, float))
        or peak["flops_per_s"] <= 0
    ):
        raise ReportError(f"{path}: {what} (no 'peak.flops_per_s')")
    for i, row in enumerate(results):
        missing = [k for k in _RAW_KEYS if not isinstance(row, dict) or k not in row]
        if missing:
            raise ReportError(f"{path}: {what} (results[{i}] lacks {', '.join(missing)})")
        seconds = row["seconds"]
        if (
            not isinstance(seconds, list)
            or not seconds
            or not all(isinstance(s, (int, float)) and s > 0 for s in seconds)
        ):
            raise ReportError(
                f"{path}: {what} (results[{i}].seconds is not a list of positive numbers)"
            )
    try:
        return summarize(results, float(peak["flops_per_s"]))
    except (TypeError, ValueError, KeyError) as exc:
        raise ReportError(f"{path}: {what} ({type(exc).__name__}: {exc})") from None


def markdown_table(
    cells: list[Cell], hidden: int | None = None, batch_sizes: tuple[int, ...] | None = None
) -> str:
    """The Markdown table of ``cells`` (those of width ``hidden`` and of ``batch_sizes``
    only, when given): the :data:`COLUMNS` of :func:`~simplenn.bench.throughput.format_table`'s
    table."""
    if hidden is not None:
        cells = [c for c in cells if c.hidden == hidden]
        if not cells:
            raise ReportError(f"no results for hidden width {hidden}")
    if batch_sizes is not None:
        missing = sorted(set(batch_sizes) - {c.batch_size for c in cells})
        if missing:
            raise ReportError(f"no results for batch size {', '.join(map(str, missing))}")
        cells = [c for c in cells if c.batch_size in batch_sizes]
    lines = format_table(cells).splitlines()
    split = [line.split("|")[1:-1] for line in lines]  # "| a | b |" -> [" a ", " b "]
    header = [field.strip() for field in split[0]]
    keep = [header.index(name) for name in COLUMNS]
    return "\n".join("|" + "|".join(fields[i] for i in keep) + "|" for fields in split)


def build_parser() -> argparse.ArgumentParser:
    p = common.ArgumentParser(
        prog=PROG,
        description=(
            "Print the results of python -m simplenn.bench --json PATH.json as a Markdown "
            "table: hidden, batch, backend, samples/s, speed-up over the NumPy backend."
        ),
    )
    p.add_argument(
        "path",
        metavar="PATH.json",
        type=Path,
        help="a results file written by python -m simplenn.bench --json",
    )
    p.add_argument(
        "--hidden",
        type=common.positive_int,
        default=None,
        metavar="H",
        help="only the rows of hidden width H (default: every width)",
    )
    p.add_argument(
        "--batch-sizes",
        type=_int_list,
        default=None,
        metavar="LIST",
        help="only the rows of these batch sizes, comma-separated (default: all)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Print the table; exit status 2, with a one-line message, for a missing or
    malformed file (or a width it has no results for)."""
    args = build_parser().parse_args(argv)

    def report() -> int:
        try:
            table = markdown_table(load_cells(args.path), args.hidden, args.batch_sizes)
        except ReportError as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            return common.EXIT_USAGE
        print(table)
        return 0

    return common.run_command(PROG, report, debug=False)


if __name__ == "__main__":
    sys.exit(main())
