"""CUDA graphs for the CuPy backend: :class:`CudaGraphTrainSteps` runs each chunk of
training steps as a replay of a captured graph, when ``$SIMPLENN_CUDA_GRAPHS`` turns
them on (:func:`graphs_enabled`; off by default).
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import cupy

from ..base import Array
from .cublas import _direct_gemm

logger = logging.getLogger("simplenn")

#: Set to 0 (or false/off/no) to run every training chunk eagerly instead of as a CUDA graph.
GRAPHS_ENV_VAR = "SIMPLENN_CUDA_GRAPHS"


def graphs_enabled() -> bool:
    """Whether ``$SIMPLENN_CUDA_GRAPHS`` turns CUDA graphs on (the default: off; see
    docs/gpu.md)."""
    return os.environ.get(GRAPHS_ENV_VAR, "0").strip().lower() in ("1", "true", "on", "yes")


class _Entry:
    """One captured chunk shape: its static inputs/outputs and, once captured, its graph."""

    def __init__(self, order: Array, lrs: Array) -> None:
        self.rows = cupy.empty(order.shape, dtype=order.dtype)
        self.lrs = cupy.zeros(lrs.shape, dtype=lrs.dtype)
        self.losses: Any = None  # the captured work's losses array, written by each replay
        self.warmed = False
        self.graph: Any = None


class CudaGraphTrainSteps:
    """``train_steps`` that runs each chunk as a replay of a captured CUDA graph.

    Called exactly like the function it wraps (``W1, b1, W2, b2, V1, v1, V2, v2, X, Y,
    order, batch_size, lrs, momentum, wd``, ``lrs`` the steps' learning rates on the
    device), and returns what it returns: the parameters and velocities, updated in
    place, and a new array of the losses. A graph is kept per *shape* of a chunk: the
    device, ``len(order)``, ``batch_size``, ``momentum``, ``wd`` and the address, shape
    and dtype of every array the steps read or update in place (the parameters,
    velocities, X and Y). The per-chunk inputs go through static device buffers
    refreshed before each replay: the rows ``order`` and the learning rates ``lrs`` are
    copied in (the update kernel reads each step's from there); the losses that the
    captured work wrote are copied out after it.

    The products inside are :class:`_CublasGemm` calls (CuPy's own cuBLAS wrappers
    raise under capture); without them graphs stay off. The first call of a shape runs
    eagerly (this warms up the private memory pool), the
    second captures and launches, later ones only launch. Everything runs on a private
    non-blocking stream, ordered after and before the caller's current stream with
    events, and the temporaries of captured work come from a private memory pool that
    nothing else allocates from, so no other array can ever sit in memory a replay
    writes. When capture fails the wrapper logs a warning and runs eagerly from then on.
    Unless ``$SIMPLENN_CUDA_GRAPHS=1``, every call runs eagerly, on the caller's stream.
    """

    MAX_GRAPHS = 8

    def __init__(self, fn: Callable[..., tuple]) -> None:
        self.fn = fn
        self.__doc__ = fn.__doc__
        self._entries: OrderedDict[tuple, _Entry] = OrderedDict()
        self._stream: Any = None
        self._pool: Any = None
        #: Why graphs were turned off for good in this process (None while they work).
        self.disabled_reason: str | None = None
        self.eager_calls = 0
        self.captures = 0
        self.replays = 0

    def __call__(
        self, W1, b1, W2, b2, V1, v1, V2, v2, X, Y, order, batch_size, lrs, momentum, wd
    ) -> tuple:
        if self.disabled_reason is None and graphs_enabled() and _direct_gemm() is None:
            self.disabled_reason = (
                "cuBLAS can't be called directly, and CuPy's cuBLAS "
                "wrappers refuse to run under stream capture"
            )
        if self.disabled_reason is not None or not graphs_enabled():
            return self.fn(
                W1, b1, W2, b2, V1, v1, V2, v2, X, Y, order, batch_size, lrs, momentum, wd
            )
        arrays = (W1, b1, W2, b2, V1, v1, V2, v2, X, Y)
        key = (
            cupy.cuda.Device().id,
            order.shape[0],
            order.dtype.str,
            int(batch_size),
            float(momentum),
            float(wd),
            lrs.shape,
            lrs.dtype.str,
            tuple((a.data.ptr, a.shape, a.strides, a.dtype.str) for a in arrays),
        )
        entry = self._entry(key, order, lrs)
        caller = cupy.cuda.get_current_stream()
        stream = self._get_stream()
        stream.wait_event(caller.record())
        with stream:
            cupy.copyto(entry.rows, order)
            cupy.copyto(entry.lrs, lrs)
            args = (*arrays, entry.rows, batch_size, entry.lrs, momentum, wd)
            if not entry.warmed:
                losses = self._run_eagerly(args)
                entry.warmed = True
            else:
                if entry.graph is None:
                    entry.graph = self._capture(stream, args, entry)
                if entry.graph is None:  # capture failed: run this chunk eagerly
                    losses = self._run_eagerly(args)
                else:
                    entry.graph.launch(stream)
                    self.replays += 1
                    losses = entry.losses
            losses = losses.copy()  # out of the private pool, before the next replay
        caller.wait_event(stream.record())
        return (*arrays[:8], losses)

    def _get_stream(self) -> Any:
        if self._stream is None:
            self._stream = cupy.cuda.Stream(non_blocking=True)
            self._pool = cupy.cuda.MemoryPool()
        return self._stream

    def _entry(self, key: tuple, order: Array, lrs: Array) -> _Entry:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            return entry
        if len(self._entries) >= self.MAX_GRAPHS:
            self._get_stream().synchronize()  # the oldest graph may still be running
            self._entries.popitem(last=False)
        entry = self._entries[key] = _Entry(order, lrs)
        return entry

    def _run_eagerly(self, args: tuple) -> Array:
        """Runs the steps on the private stream and pool; returns their losses."""
        with cupy.cuda.using_allocator(self._pool.malloc):
            losses = self.fn(*args)[-1]
        self.eager_calls += 1
        return losses

    def _capture(self, stream: Any, args: tuple, entry: _Entry) -> Any:
        """The graph of the steps (``entry.losses`` their losses array), or None."""
        try:
            with cupy.cuda.using_allocator(self._pool.malloc):
                stream.begin_capture()
                try:
                    entry.losses = self.fn(*args)[-1]
                finally:
                    graph = stream.end_capture()
        except Exception as exc:  # a CUDA or CuPy error: the capture recorded nothing usable
            self.disabled_reason = f"{type(exc).__name__}: {exc}"
            logger.warning(
                "cupy backend: CUDA graph capture failed (%s); training runs "
                "without CUDA graphs from now on",
                self.disabled_reason,
            )
            return None
        self.captures += 1
        return graph
