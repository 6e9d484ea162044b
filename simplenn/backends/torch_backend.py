"""The PyTorch backend: the generic ops on ``array_api_compat.torch``, on a CUDA device
when one works, else on the CPU (``$SIMPLENN_TORCH_DEVICE`` = ``cpu`` or ``cuda``
forces either).

Registered through simplenn's own ``simplenn.backends`` entry point (see
:mod:`.plugins`), as a third party's backend would be. The dataset moves to the device
once and batches are gathered there.
"""

from __future__ import annotations

import os
from typing import Any

import array_api_compat.torch as xp_torch
import numpy as np
import torch

from ..errors import BackendUnavailableError
from .base import Array, Ops, _xp_dtype

#: ``cpu`` or ``cuda`` forces the device; unset, CUDA is used when it works.
DEVICE_ENV_VAR = "SIMPLENN_TORCH_DEVICE"


def device_choice() -> tuple[str | None, str | None]:
    """(device, None) or (None, why no device can be used)."""
    forced = os.environ.get(DEVICE_ENV_VAR, "").strip().lower()
    if forced not in ("", "cpu", "cuda"):
        return None, f"${DEVICE_ENV_VAR}={forced!r} is not understood; use cpu or cuda"
    if forced == "cpu":
        return "cpu", None
    if torch.cuda.is_available():
        return "cuda", None
    if forced == "cuda":
        return None, (
            f"${DEVICE_ENV_VAR}=cuda, but PyTorch {torch.__version__} sees no usable CUDA device"
        )
    return "cpu", None


class TorchOps(Ops):
    """The interface's ops on PyTorch tensors on ``self.device``."""

    name = "torch"
    xp = xp_torch

    def __init__(self, dtype: str | np.dtype = "float32") -> None:
        super().__init__(dtype)
        device, why = device_choice()
        if device is None:
            raise BackendUnavailableError(f"backend 'torch' unavailable: {why}")
        self.device = torch.device(device)
        self.is_device = self.device.type == "cuda"

    def __repr__(self) -> str:
        return f"TorchOps(dtype={self.dtype.name!r}, device={str(self.device)!r})"

    # -- moving data -----------------------------------------------------------------
    def asarray(self, a: Any, dtype: Any = None) -> Array:
        dtype = _xp_dtype(self.xp, self.dtype if dtype is None else dtype)
        if isinstance(a, np.ndarray) and not a.flags.writeable:
            a = a.copy()  # torch.as_tensor wants writeable memory
        return torch.as_tensor(a, dtype=dtype, device=self.device)

    def to_numpy(self, a: Array) -> np.ndarray:
        return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)

    def host_dtype(self, a: Array) -> np.dtype:
        return np.dtype(str(a.dtype).removeprefix("torch."))

    def synchronize(self, *arrays: Array) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # -- hot ops ---------------------------------------------------------------------
    def affine(self, x: Array, W: Array, b: Array) -> Array:
        return torch.addmm(b, x, W)

    def affine_relu(self, x: Array, W: Array, b: Array) -> Array:
        return torch.relu_(self.affine(x, W, b))
