"""The door for a backend's fused training chunks.

A backend may offer, for the cases it covers, a whole chunk of training steps fused
into its own code: Numba's sparse, deferred SGD; CuPy's CUDA graphs; NumPy's SGD in
place. It lists them in :attr:`~simplenn.backends.Ops.fast_paths`, each a
:class:`FastPath` or the ``"module:attribute"`` name of one (a fast path builds on the
network's math in :mod:`simplenn.core`, a layer above the backends, so it is imported
only when a run asks). :func:`select` picks the first that covers a run, and ``fit``
runs the generic compiled math (:func:`simplenn.core.network.make_train_steps`) where
none does. The conformance kit holds each fast path's trajectory to the generic path's
on the same backend.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from .base import Ops

Optimizer = Any
"""An optimizer of :mod:`simplenn.optim` (a layer above this one)."""

#: The kinds of stored training inputs: uint8 pixels (scaled by 1/255 per batch), floats.
INPUT_KINDS = ("pixels", "floats")

TrainSteps = Callable[..., tuple]
"""``train_steps(params, state, X, Y, order, batch_size, lrs) -> (params, state, losses)``:
``ceil(len(order) / batch_size)`` steps over the rows ``X[order]`` in order (the last
batch may be smaller). ``params`` is a :class:`~simplenn.core.params.Params` and
``state`` an :class:`~simplenn.optim.OptState` of the backend's arrays; ``X`` (n, d)
the stored inputs, ``Y`` (n,) int64 labels and ``order`` (k,) int64 rows, the backend's
arrays; ``lrs`` a NumPy float64 array of each step's learning rate. Returns the new
parameters and state and each step's loss, a float64 array of the backend."""


class FastPath:
    """A fused chunk of training steps that a backend offers for some runs.

    A subclass names itself (``--debug`` reports it), says which runs it covers, and
    builds its ``train_steps`` (:data:`TrainSteps`); it must compute what the generic
    path computes, within the kit's trajectory tolerance.
    """

    #: Reported by ``--debug`` and the kit.
    name: str = "fast path"
    #: Whether a chunk runs as one call (compiled code, or work queued on a device), so
    #: ``fit`` hands it whole chunks; else a Python loop, which ``fit`` calls one step at
    #: a time (so that Ctrl-C stops after one minibatch).
    fused: bool = True

    def covers(self, ops: Ops, optimizer: Optimizer, input_kind: str, batch_size: int) -> bool:
        """Whether this path runs ``optimizer`` on inputs of ``input_kind`` (one of
        :data:`INPUT_KINDS`) at ``batch_size`` on ``ops``."""
        raise NotImplementedError

    def train_steps(self, ops: Ops, optimizer: Optimizer, input_kind: str) -> TrainSteps:
        """The fused ``train_steps`` for those runs (built once per backend instance,
        optimizer and input kind by the caller, which caches it)."""
        raise NotImplementedError

    def training(self, ops: Ops) -> AbstractContextManager:
        """A context ``fit`` holds for a whole run on this path, its chunks and its
        evaluations: a backend may arrange its threads there once instead of around
        every chunk. The default does nothing."""
        return nullcontext()


def resolve(path: FastPath | str) -> FastPath:
    """A fast path, or the one a ``"module:attribute"`` name names."""
    if isinstance(path, str):
        module, _, name = path.partition(":")
        path = getattr(importlib.import_module(module), name)
    return path


def select(ops: Ops, optimizer: Optimizer, input_kind: str, batch_size: int) -> Any:
    """The first of ``ops.fast_paths`` that covers the run, or None (the generic path)."""
    for entry in ops.fast_paths:
        path = resolve(entry)
        if path.covers(ops, optimizer, input_kind, batch_size):
            return path
    return None
