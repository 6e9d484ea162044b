"""The JAX backend: the generic ops on ``jax.numpy`` arrays, which are immutable, so it
runs the functional contract as written; the network's own functions go through
``jax.jit`` (:meth:`JaxOps.jit`), as Numba's go through ``@njit``.

Training runs a chunk of steps as one compiled ``lax.fori_loop`` over the same step
(the ``jax-loop`` fast path, :mod:`simplenn.backends.jax_fastpath`). JAX runs on its
default device: a GPU where its jaxlib finds one, else the CPU
(``JAX_PLATFORMS=cpu`` forces the CPU). float64 needs JAX's ``jax_enable_x64``, which
this backend turns on; arrays made with an explicit float32 dtype stay float32.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .base import Array, Ops

jax.config.update("jax_enable_x64", True)


class JaxOps(Ops):
    """The interface's ops on ``jax.numpy`` arrays, the network math ``jax.jit``-ed."""

    name = "jax"
    xp = jnp
    fast_paths = ("simplenn.backends.jax_fastpath:JAX_LOOP",)

    def __init__(self, dtype: str | np.dtype = "float32") -> None:
        super().__init__(dtype)
        self.device = jax.devices()[0]
        self.is_device = self.device.platform != "cpu"

    def __repr__(self) -> str:
        return f"JaxOps(dtype={self.dtype.name!r}, device={self.device.platform!r})"

    def to_numpy(self, a: Array) -> np.ndarray:
        return np.asarray(a)

    def host_dtype(self, a: Array) -> np.dtype:
        return np.dtype(a.dtype)

    def synchronize(self, *arrays: Array) -> None:
        """Waits for ``arrays`` (JAX dispatches asynchronously) and for pending effects."""
        jax.block_until_ready(arrays)
        jax.effects_barrier()

    def jit(self, fn: Any) -> Any:
        """``jax.jit`` of a function of the network math (its arrays traced, Python
        numbers such as ``lr`` too, so one compilation serves every learning rate)."""
        return jax.jit(fn)
