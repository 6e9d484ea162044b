"""The CuPy backend's ops (:class:`CupyOps`) and the fused CUDA kernels they run, each
compiled (by NVRTC) on first use, never at import:

- ``affine_relu``: cuBLAS product, then bias + ReLU in place in one pass;
- ``relu_backward``: ``dy ⊙ [y > 0]`` in one pass;
- ``softmax_cross_entropy``: one kernel launch computes the max-shifted softmax, the
  gradient ``(p - onehot(y)) / m`` and the mean loss (a deterministic block reduction),
  leaving the loss on the device as a 0-d array -- nothing comes back to the host;
- ``sgd_momentum`` (for the fast path, :mod:`.fastpath`): momentum, weight decay and the
  step in one in-place pass, rounded step by step exactly as NumPy does (``__fmul_rn``
  and friends stop the compiler from contracting them into FMAs);
- ``to_float`` of pixels: uint8 → float and the 1/255 scale in one pass.

The products are cuBLAS GEMMs through ``cupy.matmul``, or, with CUDA graphs on, direct
cuBLAS calls (:mod:`.cublas`).
"""

from __future__ import annotations

import functools
from typing import Any

import array_api_compat.cupy as xp_cupy
import cupy
import numpy as np

from ..base import Array, Ops
from .cublas import _CublasGemm, _direct_gemm
from .graphs import graphs_enabled

_CTYPES = {"float32": "float", "float64": "double"}

# Correctly rounded arithmetic that the compiler may not fuse into FMAs, so a kernel
# rounds after every operation exactly like the NumPy expression it replaces.
_ROUNDED_ARITHMETIC = r"""
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ float sub_rn(float a, float b) { return __fsub_rn(a, b); }
__device__ __forceinline__ double sub_rn(double a, double b) { return __dsub_rn(a, b); }
"""

# One block walks the rows (thread t takes rows t, t + blockDim, ...), then reduces the
# per-thread loss sums in shared memory in a fixed order: a single launch, deterministic.
_SOFTMAX_XENT_SOURCE = r"""
typedef {ctype} T;
extern "C" __global__ void simplenn_softmax_xent(
        const T* __restrict__ logits, const long long* __restrict__ labels,
        T* __restrict__ dlogits, T* __restrict__ loss, const int m, const int c) {{
    extern __shared__ unsigned char shared_raw[];
    T* partial = reinterpret_cast<T*>(shared_raw);
    const T scale = (T)m;
    T acc = 0;
    for (int i = threadIdx.x; i < m; i += blockDim.x) {{
        const T* z = logits + (long long)i * c;
        T* d = dlogits + (long long)i * c;
        T top = z[0];
        for (int j = 1; j < c; ++j) top = z[j] > top ? z[j] : top;
        T s = 0;
        for (int j = 0; j < c; ++j) {{ d[j] = {exp}(z[j] - top); s += d[j]; }}
        const int y = (int)labels[i];
        acc += {log}(s) - (z[y] - top);
        for (int j = 0; j < c; ++j) {{
            T p = d[j] / s;
            if (j == y) p -= (T)1;
            d[j] = p / scale;
        }}
    }}
    partial[threadIdx.x] = acc;
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half /= 2) {{
        if (threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
        __syncthreads();
    }}
    if (threadIdx.x == 0) loss[0] = partial[0] / scale;
}}
"""


# -- the kernels, built on first use ----------------------------------------------------
@functools.cache
def _bias_relu_kernel() -> cupy.ElementwiseKernel:
    """In place on y (m, n) with b (n,) broadcast: ``y = relu(y + b)``; NaN stays NaN,
    as with ``numpy.maximum``."""
    return cupy.ElementwiseKernel(
        "T b", "T y", "T v = y + b; y = (v > (T)0 || v != v) ? v : (T)0", "simplenn_bias_relu"
    )


@functools.cache
def _relu_backward_kernel() -> cupy.ElementwiseKernel:
    """``dx = dy * [y > 0]``, the same product NumPy's ``dy * (y > 0)`` computes."""
    return cupy.ElementwiseKernel(
        "T dy, T y", "T dx", "dx = dy * (T)(y > (T)0)", "simplenn_relu_backward"
    )


@functools.cache
def sgd_momentum_kernel() -> cupy.ElementwiseKernel:
    """In place on param and velocity; ``lr`` may be a scalar or a 0-d device array;
    ``tiny`` is the dtype's smallest normal number (smaller velocities become 0)."""
    return cupy.ElementwiseKernel(
        "T grad, T lr, T momentum, T wd, T tiny",
        "T param, T velocity",
        """
        const T g = wd != (T)0 ? add_rn(grad, mul_rn(param, wd)) : grad;
        const T v = add_rn(mul_rn(velocity, momentum), g);
        velocity = fabs(v) < tiny ? (T)0 : v;
        param = sub_rn(param, mul_rn(velocity, lr));
        """,
        "simplenn_sgd_momentum",
        preamble=_ROUNDED_ARITHMETIC,
    )


@functools.cache
def _pixels_kernel() -> cupy.ElementwiseKernel:
    """uint8 → T, divided by 255 (the same division ``x.astype(T) / 255`` does)."""
    return cupy.ElementwiseKernel("uint8 x", "T y", "y = (T)x / (T)255", "simplenn_pixels")


@functools.cache
def _softmax_xent_kernel(dtype_name: str) -> cupy.RawKernel:
    ctype = _CTYPES[dtype_name]
    exp, log = ("expf", "logf") if ctype == "float" else ("exp", "log")
    source = _SOFTMAX_XENT_SOURCE.format(ctype=ctype, exp=exp, log=log)
    return cupy.RawKernel(source, "simplenn_softmax_xent")


_KERNEL_FACTORIES = (
    _bias_relu_kernel,
    _relu_backward_kernel,
    sgd_momentum_kernel,
    _pixels_kernel,
    _softmax_xent_kernel,
)


def built_kernel_count() -> int:
    """How many of this module's kernels have been built so far (0 right after import)."""
    return sum(f.cache_info().currsize for f in _KERNEL_FACTORIES)


# -- the backend ------------------------------------------------------------------------
class CupyOps(Ops):
    """The interface's ops on CuPy arrays (cuBLAS products), the hot element-wise work
    replaced by the fused kernels of this module. Arrays live on the current CUDA
    device; ``synchronize`` waits for it."""

    name = "cupy"
    xp = xp_cupy
    is_device = True
    fast_paths = ("simplenn.backends.cupy.fastpath:CUDA_SGD",)

    # -- moving data -----------------------------------------------------------------
    def to_numpy(self, a: Array) -> np.ndarray:
        """Device array -> a NumPy copy on the host (waits for the work producing it)."""
        return cupy.asnumpy(a)

    def synchronize(self, *arrays: Array) -> None:
        """Wait until all queued work on the current device has finished."""
        cupy.cuda.Device().synchronize()

    def scalar(self, value: float) -> Any:
        """A NumPy scalar of ``self.dtype``, as the kernels take it."""
        return self.dtype.type(value)

    # -- products --------------------------------------------------------------------
    def matmul(self, a: Array, b: Array) -> Array:
        """``a @ b`` for (m, k) x (k, n) -> (m, n), one cuBLAS GEMM."""
        gemm = self._direct(a, b)
        return (
            a @ b if gemm is None else gemm(False, False, a, b, a.shape[0], b.shape[1], a.shape[1])
        )

    def matmul_tn(self, a: Array, b: Array) -> Array:
        """``aᵀ @ b`` for (k, m) x (k, n) -> (m, n), one cuBLAS GEMM (no transposed copy)."""
        gemm = self._direct(a, b)
        return (
            a.T @ b if gemm is None else gemm(True, False, a, b, a.shape[1], b.shape[1], a.shape[0])
        )

    def matmul_nt(self, a: Array, b: Array) -> Array:
        """``a @ bᵀ`` for (m, k) x (n, k) -> (m, n), one cuBLAS GEMM (no transposed copy)."""
        gemm = self._direct(a, b)
        return (
            a @ b.T if gemm is None else gemm(False, True, a, b, a.shape[0], b.shape[0], a.shape[1])
        )

    def _direct(self, a: Array, b: Array) -> _CublasGemm | None:
        """The direct GEMM when CUDA graphs are on and both operands suit it
        (C-contiguous 2-D, this dtype); otherwise None and ``cupy.matmul`` does it."""
        if (
            not graphs_enabled()
            or a.dtype != self.dtype
            or b.dtype != self.dtype
            or a.ndim != 2
            or b.ndim != 2
            or not a.flags.c_contiguous
            or not b.flags.c_contiguous
        ):
            return None
        return _direct_gemm()

    # -- inputs ----------------------------------------------------------------------
    def to_float(self, x: Array) -> Array:
        """(m, d) uint8 -> (m, d) ``x / 255`` in ``self.dtype``, one fused kernel; floats
        cast."""
        if x.dtype != np.uint8:
            return x.astype(self.dtype)
        return _pixels_kernel()(x, cupy.empty(x.shape, dtype=self.dtype))

    # -- the forward pass ------------------------------------------------------------
    def affine_relu(self, x: Array, W: Array, b: Array) -> Array:
        """``relu(x W + b)`` -> (m, n): cuBLAS, then bias + ReLU in place in one pass."""
        out = self.matmul(x, W)
        _bias_relu_kernel()(b, out)
        return out

    def relu_backward(self, dy: Array, y: Array) -> Array:
        """``dy ⊙ [y > 0]`` into a new array, one fused kernel."""
        return _relu_backward_kernel()(dy, y)

    # -- the loss --------------------------------------------------------------------
    def softmax_cross_entropy(self, logits: Array, labels: Array) -> tuple[Array, Array]:
        """As :meth:`Ops.softmax_cross_entropy`, in one kernel launch; ``loss`` is a 0-d
        device array (nothing is copied to the host)."""
        logits = cupy.ascontiguousarray(logits, dtype=self.dtype)
        labels = cupy.ascontiguousarray(labels, dtype=np.int64)
        m, c = logits.shape
        dlogits = cupy.empty_like(logits)
        loss = cupy.empty((), dtype=self.dtype)
        threads = min(1024, max(32, 1 << max(0, m - 1).bit_length()))
        _softmax_xent_kernel(self.dtype.name)(
            (1,),
            (threads,),
            (logits, labels, dlogits, loss, np.int32(m), np.int32(c)),
            shared_mem=threads * self.dtype.itemsize,
        )
        return loss, dlogits
