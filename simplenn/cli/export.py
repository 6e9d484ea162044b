"""``python -m simplenn.export MODEL.npz OUT.onnx``: export a saved model to ONNX.

Writes an ONNX model (:func:`simplenn.export_onnx`) that any ONNX runtime can run:
input ``pixels`` (N, n_inputs) uint8 (or ``features`` float32 with ``--inputs float``), outputs
``probabilities`` (N, n_classes) float32 and ``label`` (N,) int64. Prints one line on
success; a usage error exits 2 and a missing or damaged model file exits 1, each with
one line on stderr.
"""

from __future__ import annotations

from pathlib import Path

from . import common

PROG = common.invoked_as("simplenn.export")


def build_parser() -> common.ArgumentParser:
    p = common.ArgumentParser(
        prog=PROG,
        description=(
            "Export a saved model (or checkpoint) to an ONNX file that onnxruntime or any "
            "ONNX runtime can run: outputs probabilities (N, classes) float32 and label (N,) "
            "int64. Needs onnx: pip install onnx onnxruntime."
        ),
    )
    p.add_argument(
        "model",
        type=Path,
        metavar="MODEL.npz",
        help="a model saved by python -m simplenn.train --save, or a checkpoint",
    )
    p.add_argument("output", type=Path, metavar="OUT.onnx", help="the ONNX file to write")
    p.add_argument(
        "--inputs",
        choices=("uint8", "float"),
        default="uint8",
        help="graph input: 'pixels', uint8 raw pixels scaled by 1/255 inside the "
        "graph (default), or 'features', float32 features used as they are",
    )
    p.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return common.run_command(PROG, lambda: _export(args), args.debug)


def _export(args) -> int:
    from ..errors import ModelFileError
    from ..io.models import load_model
    from ..io.onnx import export_onnx

    net = load_model(args.model, backend="numpy")
    try:
        path = export_onnx(net, args.output, inputs=args.inputs)
    except ValueError as exc:  # a model ONNX's float32 graph cannot hold
        if isinstance(exc, ModelFileError):
            raise
        raise ModelFileError(f"cannot export {args.model}: {exc}") from None
    kind = "pixels" if args.inputs == "uint8" else "features"
    dtype = "uint8" if args.inputs == "uint8" else "float32"
    print(
        f"wrote {path}: {net.n_inputs} -> {net.n_hidden} -> {net.n_classes} network, input "
        f"{kind} (N, {net.n_inputs}) {dtype}, outputs probabilities (N, {net.n_classes}) "
        f"float32 and label (N,) int64"
    )
    return 0
