"""ONNX for :class:`~simplenn.sklearn.SimpleNNClassifier`, alone or in a scikit-learn
pipeline, through skl2onnx.

:class:`~simplenn.sklearn.SimpleNNClassifier` hands skl2onnx the :func:`shape_calculator`
and :func:`converter` of this module through skl2onnx's converter protocol (its
``onnx_shape_calculator`` and ``onnx_converter`` methods), so that
``skl2onnx.to_onnx(model, X[:1])`` converts a fitted estimator, or a ``Pipeline`` that
ends in one, with nothing to register first. skl2onnx is imported by the conversion
only (it is in the ``onnx`` extra).

The estimator's part of the graph takes the features it is given (any numeric tensor;
a float64 one when ``X`` is float64) and computes in float32:

- ``x = float32(input)``, divided by 255 when the estimator was fitted on uint8 pixels
  (``pixel_inputs_``), as :meth:`~simplenn.sklearn.SimpleNNClassifier.predict_proba`
  does;
- ``probabilities`` (N, n_classes) float32: ``softmax(relu(x @ W1 + b1) @ W2 + b2)``,
  columns in ``classes_`` order;
- ``label`` (N,): ``classes_[argmax]`` (the first on a tie), int64 for integer class
  labels and strings for string labels.

For an estimator, :func:`simplenn.export_onnx` writes this graph with the input
``features`` (N, n_features_in_) float32 (or uint8).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .onnx import _float32_parameters


def _label_kind(classes: np.ndarray) -> str:
    """``"int64"`` or ``"string"``: how the graph outputs these class labels."""
    if classes.dtype.kind in "iub":
        return "int64"
    if classes.dtype.kind in "US" or (
        classes.dtype.kind == "O" and all(isinstance(c, str) for c in classes)
    ):
        return "string"
    raise ValueError(
        f"ONNX export needs integer or string class labels, not "
        f"{classes.dtype} ones such as {classes[0]!r}"
    )


def shape_calculator(operator: Any) -> None:
    """skl2onnx's shape calculator: one input (N, n_features), the outputs ``label`` (N,)
    and ``probabilities`` (N, n_classes) float32."""
    from skl2onnx.common.data_types import (
        FloatTensorType,
        Int64TensorType,
        StringTensorType,
    )

    if len(operator.inputs) != 1 or len(operator.outputs) != 2:
        raise RuntimeError(
            f"SimpleNNClassifier takes 1 input and gives 2 outputs, not "
            f"{len(operator.inputs)} and {len(operator.outputs)}"
        )
    estimator = operator.raw_operator
    n = operator.inputs[0].get_first_dimension()
    label = StringTensorType if _label_kind(estimator.classes_) == "string" else Int64TensorType
    operator.outputs[0].type = label([n])
    operator.outputs[1].type = FloatTensorType([n, len(estimator.classes_)])


def converter(scope: Any, operator: Any, container: Any) -> None:
    """skl2onnx's converter: the nodes described in the module docstring."""
    from onnx import TensorProto

    estimator = operator.raw_operator
    params = _float32_parameters(estimator.net_)
    names: dict[str, str] = {}

    def constant(name: str, value: np.ndarray, proto_type: int) -> str:
        names[name] = scope.get_unique_variable_name(name)
        container.add_initializer(
            names[name], proto_type, list(value.shape), value.ravel().tolist()
        )
        return names[name]

    def node(op_type: str, inputs: list[str], output: str | None = None, **attrs: Any) -> str:
        output = output or scope.get_unique_variable_name(op_type.lower())
        container.add_node(
            op_type, inputs, output, name=scope.get_unique_operator_name(op_type), **attrs
        )
        return output

    for key, value in params.items():
        constant(key, value, TensorProto.FLOAT)
    x = node("Cast", [operator.inputs[0].full_name], to=TensorProto.FLOAT)
    if estimator.pixel_inputs_:
        x = node("Div", [x, constant("scale", np.array(255, np.float32), TensorProto.FLOAT)])
    hidden = node("Relu", [node("Add", [node("MatMul", [x, names["W1"]]), names["b1"]])])
    logits = node("Add", [node("MatMul", [hidden, names["W2"]]), names["b2"]])
    node("Softmax", [logits], operator.outputs[1].full_name, axis=1)
    index = node("ArgMax", [logits], axis=1, keepdims=0, select_last_index=0)
    classes = estimator.classes_
    if _label_kind(classes) == "string":
        labels = constant(
            "classes", np.array([str(c) for c in classes], dtype=object), TensorProto.STRING
        )
    else:
        labels = constant("classes", classes.astype(np.int64), TensorProto.INT64)
    node("Gather", [labels, index], operator.outputs[0].full_name, axis=0)
