"""Exporting a trained :class:`~simplenn.TwoLayerNet` as an ONNX model.

The exported graph computes what :meth:`TwoLayerNet.predict_proba` and
:meth:`TwoLayerNet.predict` compute, so any ONNX runtime (onnxruntime, a browser, a
phone) can run the network without simplenn:

- input ``pixels``: (N, n_inputs) uint8, cast to float32 and divided by 255 exactly as
  simplenn does (``x.astype(float32) / 255``); or, exported with ``inputs="float"``,
  input ``features``: (N, n_inputs) float32 features used as they are;
- output ``probabilities``: (N, n_classes) float32, ``softmax(relu(x @ W1 + b1) @ W2 + b2)``;
- output ``label``: (N,) int64, the index of the largest logit (the first on a tie).

A fitted :class:`~simplenn.sklearn.SimpleNNClassifier`, or a scikit-learn pipeline
that ends in one, exports through skl2onnx (:mod:`simplenn.io.skl2onnx_converter`),
with ``classes_`` as labels and the pipeline's steps in the graph.

Needs the ``onnx`` package (and skl2onnx for estimators), imported only when
:func:`export_onnx` runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from .._optional import MissingDependencyError
from ..core.model import TwoLayerNet
from ..errors import ModelFileError
from .atomic import atomic_write_bytes

#: The accepted values of ``export_onnx(..., inputs=...)``.
INPUT_KINDS = ("uint8", "float")
#: The ONNX operator set the exported graphs use.
OPSET = 17
INPUT_NAME = "pixels"
#: The input of a graph exported with ``inputs="float"``.
FEATURES_NAME = "features"
OUTPUT_NAMES = ("probabilities", "label")


def _require_onnx() -> ModuleType:
    """Import ``onnx`` or raise :class:`MissingDependencyError` with the install command."""
    try:
        import onnx
    except ImportError as exc:
        raise MissingDependencyError(
            f"ONNX export needs onnx, which is not installed ({exc}); install it with "
            f"pip install onnx onnxruntime (from a simplenn checkout: pip install '.[onnx]')"
        ) from None
    return onnx


def _output_path(path: str | os.PathLike) -> Path:
    """``path`` as a :class:`Path` that a file can be written to, or a one-line error."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, not {type(path).__name__}")
    path = Path(path)
    if str(path) in ("", "."):
        raise ModelFileError("cannot write the ONNX model: the path is empty")
    if path.is_dir():
        raise ModelFileError(f"cannot write the ONNX model to {path}: it is a directory")
    if not path.parent.is_dir():
        raise ModelFileError(
            f"cannot write the ONNX model to {path}: directory {path.parent} does not exist"
        )
    return path


def _float32_parameters(net: TwoLayerNet) -> dict[str, np.ndarray]:
    """``W1`` (d, h), ``b1`` (h,), ``W2`` (h, c), ``b2`` (c,) as float32 NumPy arrays."""
    params = {}
    for name, value in net.parameters().items():
        with np.errstate(over="ignore"):
            value = np.ascontiguousarray(value, dtype=np.float32)
        if not np.isfinite(value).all():
            raise ValueError(
                f"parameter {name} does not fit in float32 (values beyond "
                f"±{np.finfo(np.float32).max:.3g})"
            )
        params[name] = value
    return params


def build_onnx_model(net: TwoLayerNet, *, inputs: str = "uint8"):
    """The ONNX ``ModelProto`` of ``net`` (see the module docstring for its inputs and
    outputs), checked by ``onnx.checker.check_model``; float32 initializers whatever
    the network's dtype."""
    onnx = _require_onnx()
    from onnx import TensorProto, helper, numpy_helper

    from .._version import __version__

    d, h, c = net.n_inputs, net.n_hidden, net.n_classes
    params = _float32_parameters(net)
    initializers = [numpy_helper.from_array(value, name=k) for k, value in params.items()]
    nodes = []
    if inputs == "uint8":
        initializers.append(numpy_helper.from_array(np.array(255, dtype=np.float32), name="scale"))
        nodes += [
            helper.make_node(
                "Cast", [INPUT_NAME], ["pixels_float"], to=TensorProto.FLOAT, name="to_float32"
            ),
            helper.make_node("Div", ["pixels_float", "scale"], ["x"], name="divide_by_255"),
        ]
        x, input_type, input_doc = "x", TensorProto.UINT8, "uint8 pixels, scaled by 1/255"
        input_name = INPUT_NAME
    else:
        x, input_type, input_doc = (
            FEATURES_NAME,
            TensorProto.FLOAT,
            "float32 features, used as given",
        )
        input_name = FEATURES_NAME
    nodes += [
        helper.make_node("MatMul", [x, "W1"], ["xW1"], name="layer1_matmul"),
        helper.make_node("Add", ["xW1", "b1"], ["z1"], name="layer1_bias"),
        helper.make_node("Relu", ["z1"], ["hidden"], name="layer1_relu"),
        helper.make_node("MatMul", ["hidden", "W2"], ["hW2"], name="layer2_matmul"),
        helper.make_node("Add", ["hW2", "b2"], ["logits"], name="layer2_bias"),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1, name="softmax"),
        helper.make_node(
            "ArgMax", ["logits"], ["label"], axis=1, keepdims=0, select_last_index=0, name="argmax"
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "simplenn_two_layer_net",
        inputs=[helper.make_tensor_value_info(input_name, input_type, ["N", d], input_doc)],
        outputs=[
            helper.make_tensor_value_info(
                "probabilities",
                TensorProto.FLOAT,
                ["N", c],
                "class probabilities, rows summing to 1",
            ),
            helper.make_tensor_value_info(
                "label", TensorProto.INT64, ["N"], "predicted class: index of the largest logit"
            ),
        ],
        initializer=initializers,
    )
    opsets = [helper.make_opsetid("", OPSET)]
    model = helper.make_model(
        graph,
        opset_imports=opsets,
        producer_name="simplenn",
        producer_version=__version__,
        ir_version=helper.find_min_ir_version_for(opsets),
        doc_string=(
            f"simplenn TwoLayerNet {d} -> {h} (ReLU) -> {c} (softmax); input "
            f"{input_name} (N, {d}) {input_doc}; outputs probabilities (N, {c}) "
            f"float32 and label (N,) int64"
        ),
    )
    helper.set_model_props(
        model,
        {
            "n_inputs": str(d),
            "n_hidden": str(h),
            "n_classes": str(c),
            "inputs": inputs,
            "trained_dtype": net.dtype.name,
        },
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def export_onnx(net: Any, path: str | os.PathLike, *, inputs: str | None = None) -> Path:
    """Write ``net`` to ``path`` as an ONNX model (opset :data:`OPSET`) and return the path.

    For a :class:`TwoLayerNet` the graph's input is, with ``inputs="uint8"`` (the
    default), ``pixels``: an (N, n_inputs) uint8 array of raw pixels, cast to float32
    and divided by 255 as simplenn does; with ``inputs="float"``, ``features``: an
    (N, n_inputs) float32 array of features used as they are.
    Its outputs are ``probabilities``, (N, n_classes) float32 (as
    :meth:`TwoLayerNet.predict_proba`), and ``label``, (N,) int64 (as
    :meth:`TwoLayerNet.predict`). N may be any batch size.

    ``net`` may also be a fitted :class:`~simplenn.sklearn.SimpleNNClassifier` or a
    scikit-learn pipeline that ends in one (a ``StandardScaler`` then the classifier,
    say), converted by skl2onnx: the input ``features`` (N, n_features_in_) is float32
    (``inputs="float"``, the default there) or uint8, ``label`` holds ``classes_``'s
    labels and ``probabilities`` is as :meth:`predict_proba`.

    The weights are stored as float32 whatever the network's dtype: a float64 network
    exports its parameters rounded to float32 and runs in float32. The file passes
    ``onnx.checker.check_model`` and is written atomically (a killed process never
    leaves a damaged file at ``path``).

    Raises ``ValueError`` for an ``inputs`` other than ``"uint8"`` or ``"float"``,
    :class:`~simplenn.ModelFileError` when ``path`` cannot be written and
    :class:`~simplenn._optional.MissingDependencyError` when onnx (or, for an
    estimator, skl2onnx) is not installed.
    """
    network = isinstance(net, TwoLayerNet)
    if not network and not (hasattr(net, "fit") and hasattr(net, "predict")):
        raise TypeError(
            f"net must be a TwoLayerNet, a SimpleNNClassifier or a pipeline "
            f"ending in one, not {type(net).__name__}"
        )
    if inputs is None:
        inputs = "uint8" if network else "float"
    if not isinstance(inputs, str) or inputs not in INPUT_KINDS:
        raise ValueError(
            f"inputs must be 'uint8' (raw pixels) or 'float' (float32 features), not {inputs!r}"
        )
    path = _output_path(path)
    if network:
        model = build_onnx_model(net, inputs=inputs)
    else:
        _require_onnx()
        model = _estimator_model(net, inputs)
    data = model.SerializeToString()
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        raise ModelFileError(
            f"cannot write the ONNX model to {path}: {exc.strerror or exc}"
        ) from None
    return path


def _estimator_model(model: Any, inputs: str) -> Any:
    """The ONNX ``ModelProto`` of a fitted SimpleNNClassifier, or of a scikit-learn
    pipeline that ends in one, from the input ``features``: (N, n_features_in_) float32
    with ``inputs="float"``, uint8 with ``inputs="uint8"``; outputs ``label`` and
    ``probabilities``.
    Raises :class:`~simplenn._optional.MissingDependencyError` without skl2onnx."""
    try:
        import skl2onnx
        from skl2onnx.common.data_types import FloatTensorType, UInt8TensorType
    except ImportError as exc:
        raise MissingDependencyError(
            f"ONNX export of a scikit-learn model needs skl2onnx, which is not installed "
            f"({exc}); install it with pip install skl2onnx onnxruntime (from a simplenn "
            f"checkout: pip install '.[onnx]')"
        ) from None
    n_features = getattr(model, "n_features_in_", None)
    if n_features is None:
        raise ValueError(
            f"{type(model).__name__} is not fitted (it has no n_features_in_); "
            f"fit it before exporting it"
        )
    kind = UInt8TensorType if inputs == "uint8" else FloatTensorType
    return skl2onnx.to_onnx(
        model, initial_types=[(FEATURES_NAME, kind([None, n_features]))], target_opset=OPSET
    )
