"""The CuPy backend: the interface's ops on an NVIDIA GPU, with fused kernels.

The products are cuBLAS GEMMs through ``cupy.matmul``. With CUDA graphs turned on
(``SIMPLENN_CUDA_GRAPHS=1``; off by default until a GPU run has measured and verified
them) they are cuBLAS GEMMs on CuPy's cuBLAS handle, called directly (``ctypes``, see
:class:`~.cublas._CublasGemm`): CuPy's own cuBLAS wrappers refuse to run while a stream
is being captured into a CUDA graph. Where the library can't be reached that way, graphs
stay off. The element-wise work of a training step runs as a handful of fused kernels,
each compiled (by NVRTC) on first use, never at import.

Training data stays on the device (``fit`` moves it once) and each chunk of training
steps can run as a CUDA graph: see :class:`CudaGraphTrainSteps` and
``$SIMPLENN_CUDA_GRAPHS``.

The modules:

- :mod:`.ops`: :class:`CupyOps` and its fused kernels;
- :mod:`.cublas`: the ``ctypes`` binding of cuBLAS's GEMMs;
- :mod:`.graphs`: CUDA-graph capture and replay of training chunks.

Importing this package imports CuPy (and fails with :class:`ImportError` without it);
the registry imports it only when the ``cupy`` backend is asked for.
"""

from __future__ import annotations

from .cublas import gemm_arguments
from .graphs import GRAPHS_ENV_VAR, CudaGraphTrainSteps, graphs_enabled
from .ops import CupyOps, built_kernel_count

__all__ = [
    "CupyOps",
    "CudaGraphTrainSteps",
    "GRAPHS_ENV_VAR",
    "built_kernel_count",
    "gemm_arguments",
    "graphs_enabled",
]
