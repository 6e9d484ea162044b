"""``python -m simplenn.predict MODEL.npz IMAGE...``: classify your own digit images.

Each PNG/JPEG/... file is preprocessed the MNIST way (:mod:`simplenn.data.preprocess`) and
classified; one line per file, ``FILE: DIGIT (PROBABILITY)``, or with ``--json`` one
JSON array. A file that cannot be read, whatever the reason (damaged, unreadable, NaN
pixels, more pixels than :data:`~simplenn.data.preprocess.MAX_PIXELS`, out of memory),
gets its own error line on stderr (and an ``error`` entry in the JSON) while the others
are still answered; the exit status is then 1.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from . import common

PROG = common.invoked_as("simplenn.predict")


def build_parser() -> common.ArgumentParser:
    p = common.ArgumentParser(
        prog=PROG,
        description=(
            "Classify images of handwritten digits (PNG, JPEG, ...; one digit per image, any "
            "size, dark on light or light on dark) with a saved model. Needs Pillow: "
            "pip install Pillow."
        ),
    )
    p.add_argument(
        "model",
        type=Path,
        metavar="MODEL.npz",
        help="a model saved by python -m simplenn.train --save, or a checkpoint",
    )
    p.add_argument("images", type=Path, nargs="+", metavar="IMAGE", help="image files")
    p.add_argument(
        "--json",
        action="store_true",
        help="print a JSON array with file, digit, probability and all class "
        "probabilities (or error) per image",
    )
    p.add_argument(
        "--backend",
        type=common.backend_name,
        default=None,
        help=f"{common.BACKEND_HELP} (default: $SIMPLENN_BACKEND, else numpy)",
    )
    p.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return common.run_command(PROG, lambda: _predict(args), args.debug)


def _predict(args) -> int:
    from .._optional import require
    from ..data.preprocess import SIZE, ImageError, load_digit
    from ..errors import ModelFileError
    from ..io.models import load_model

    require("PIL", f"{PROG}")
    net = load_model(args.model, backend=args.backend)
    if net.n_inputs != SIZE * SIZE:
        raise ModelFileError(
            f"model file {args.model} takes {net.n_inputs} inputs, not the "
            f"{SIZE}x{SIZE} = {SIZE * SIZE} pixels of an MNIST-style image"
        )
    rows, results = [], []
    for path in args.images:
        try:
            rows.append(load_digit(path))
            results.append({"file": str(path)})
        except ImageError as exc:
            results.append({"file": str(path), "error": str(exc)})
        except Exception as exc:  # one image's failure never ends the batch
            if args.debug:
                raise
            reason = (
                "out of memory"
                if isinstance(exc, MemoryError)
                else f"{type(exc).__name__}: {' '.join(str(exc).split())}"
            )
            results.append(
                {"file": str(path), "error": f"{path}: cannot read the image ({reason})"}
            )
    if rows:
        probabilities = net.predict_proba(np.stack(rows))
        good = (r for r in results if "error" not in r)
        for r, p in zip(good, probabilities):
            digit = int(p.argmax())
            r.update(
                digit=digit,
                probability=float(p[digit]),
                probabilities=[round(float(v), 6) for v in p],
            )
    failed = 0
    for r in results:
        if "error" in r:
            failed += 1
            print(f"{PROG}: error: {r['error']}", file=sys.stderr)
        elif not args.json:
            print(f"{r['file']}: {r['digit']} ({100 * r['probability']:.1f}%)")
    if args.json:
        print(json.dumps(results, indent=2))
    return common.EXIT_ERROR if failed else 0
