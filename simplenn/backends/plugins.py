"""simplenn's backends for other array libraries (PyTorch, JAX), registered through
simplenn's own ``simplenn.backends`` entry points, as any installed package's are.

This module imports neither library: each probe imports its library when the
backend is first listed or asked for, and the backend module when it is built.
"""

from __future__ import annotations

from .. import _probes
from .registry import Availability, missing_library_reason, register

TORCH_HINT = "pip install torch (from a simplenn checkout: pip install '.[torch]')"
JAX_HINT = "pip install jax (from a simplenn checkout: pip install '.[jax]')"


def _probe_torch() -> Availability:
    try:
        import torch
    except ImportError as exc:
        return Availability(False, missing_library_reason("PyTorch", exc, TORCH_HINT))
    from .torch_backend import device_choice

    device, why = device_choice()
    if device is None:
        return Availability(False, why, version=torch.__version__)
    where = f"GPU 0: {torch.cuda.get_device_name(0)}" if device == "cuda" else "CPU"
    return Availability(True, version=torch.__version__, device=where)


def _probe_jax() -> Availability:
    try:
        import jax
    except ImportError as exc:
        return Availability(False, missing_library_reason("JAX", exc, JAX_HINT))
    _probes.silence_jax_platform_notes()
    try:
        device = jax.devices()[0]
    except RuntimeError as exc:  # e.g. JAX_PLATFORMS names a platform that does not work
        return Availability(
            False, f"JAX {jax.__version__} has no usable device ({exc})", version=jax.__version__
        )
    where = "CPU" if device.platform == "cpu" else f"GPU 0: {device.device_kind}"
    return Availability(True, version=jax.__version__, device=f"{where}, jax.jit")


def register_torch() -> None:
    """Entry point ``torch``: PyTorch tensors, on CUDA when a CUDA device works."""
    register(
        "torch",
        "simplenn.backends.torch_backend:TorchOps",
        probe=_probe_torch,
        install_hint=TORCH_HINT,
        priority=-1,
    )


def register_jax() -> None:
    """Entry point ``jax``: ``jax.numpy`` arrays, the network's functions ``jax.jit``-ed."""
    register(
        "jax",
        "simplenn.backends.jax_backend:JaxOps",
        probe=_probe_jax,
        install_hint=JAX_HINT,
        priority=-1,
    )
