"""The network's parameters as one named structure.

:class:`Params` holds one entry per parameter of the two-layer network, by name. The
same structure carries anything shaped like the parameters: their gradients, their
NumPy copies, and each optimizer's per-parameter state. This module is the one place
outside the math (:mod:`simplenn.core.network`) and a backend's compiled kernels that
lists the parameters; everything else walks them by name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple


class Params(NamedTuple):
    """The parameters of a ``d → h → c`` network, or anything shaped like them.

    ``W1`` (d, h), ``b1`` (h,), ``W2`` (h, c), ``b2`` (c,): arrays of one backend in
    its float dtype, or NumPy copies of them. A NamedTuple, so compiled code (Numba,
    ``jax.jit``) takes and returns it like a tuple.
    """

    W1: Any
    b1: Any
    W2: Any
    b2: Any


#: The parameters' names, in the order of :class:`Params`.
PARAMETER_NAMES: tuple[str, ...] = Params._fields
#: Which parameters weight decay applies to: the weights, not the biases.
DECAYED = Params(W1=True, b1=False, W2=True, b2=False)


def parameter_shapes(n_inputs: int, n_hidden: int, n_classes: int) -> Params:
    """The shape of each parameter of a ``n_inputs → n_hidden → n_classes`` network."""
    return Params(
        W1=(n_inputs, n_hidden), b1=(n_hidden,), W2=(n_hidden, n_classes), b2=(n_classes,)
    )


def map_params(fn: Callable[..., Any], *trees: Params) -> Params:
    """``Params`` of ``fn(a, b, ...)`` applied name by name to the entries of ``trees``."""
    return Params(*(fn(*leaves) for leaves in zip(*trees)))


def as_dict(params: Params) -> dict[str, Any]:
    """``{"W1": ..., "b1": ..., "W2": ..., "b2": ...}``."""
    return dict(zip(PARAMETER_NAMES, params))


def from_mapping(mapping: Mapping[str, Any], what: str = "parameters") -> Params:
    """A mapping with exactly the keys of :data:`PARAMETER_NAMES` as :class:`Params`;
    ``ValueError`` naming the missing and unexpected keys otherwise."""
    missing = [k for k in PARAMETER_NAMES if k not in mapping]
    extra = [k for k in mapping if k not in PARAMETER_NAMES]
    if missing or extra:
        raise ValueError(
            f"{what} must have exactly the keys {PARAMETER_NAMES}; missing "
            f"{missing}, unexpected {extra}"
        )
    return Params(*(mapping[k] for k in PARAMETER_NAMES))
