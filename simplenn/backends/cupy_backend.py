"""The CuPy backend: the interface's ops on an NVIDIA GPU, with fused kernels.

The products are cuBLAS GEMMs through ``cupy.matmul``. With CUDA graphs turned on
(``SIMPLENN_CUDA_GRAPHS=1``; off by default until a GPU run has measured and verified
them) they are cuBLAS GEMMs on CuPy's cuBLAS handle, called directly (``ctypes``, see
:class:`_CublasGemm`): CuPy's own cuBLAS wrappers refuse to run while a stream is
being captured into a CUDA graph. Where the library can't be reached that way, graphs
stay off. The element-wise work of a training step
runs as a handful of fused kernels, each compiled (by NVRTC) on first use, never at
import:

- ``affine_relu``: cuBLAS product, then bias + ReLU in place in one pass;
- ``relu_backward``: ``dy ⊙ [y > 0]`` in one pass;
- ``softmax_cross_entropy``: one kernel launch computes the max-shifted softmax, the
  gradient ``(p - onehot(y)) / m`` and the mean loss (a deterministic block reduction),
  leaving the loss on the device as a 0-d array -- nothing comes back to the host;
- ``sgd_update``: momentum, weight decay and the step in one in-place pass, rounded
  step by step exactly as NumPy does (``__fmul_rn`` and friends stop the compiler
  from contracting them into FMAs), so it matches the NumPy backend bit for bit;
- ``pixels_to_float``: uint8 → float and the 1/255 scale in one pass.

Training data stays on the device (``fit`` moves it once) and each chunk of training
steps can run as a CUDA graph: see :class:`CudaGraphTrainSteps` and
``$SIMPLENN_CUDA_GRAPHS``.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import array_api_compat.cupy as xp_cupy
import cupy
import numpy as np

from .base import Array, Ops

logger = logging.getLogger("simplenn")

#: Set to 0 (or false/off/no) to run every training chunk eagerly instead of as a CUDA graph.
GRAPHS_ENV_VAR = "SIMPLENN_CUDA_GRAPHS"

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


# -- the products: cuBLAS called directly ----------------------------------------------
_CUBLAS_OP_N, _CUBLAS_OP_T, _CUBLAS_POINTER_MODE_HOST = 0, 1, 0


def _loaded_library_path(prefix: str) -> str | None:
    """Path of the already loaded shared library whose file name starts with ``prefix``
    (Linux: read from ``/proc/self/maps``), so ctypes binds to the very copy CuPy uses."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                path = line.rstrip("\n").split(maxsplit=5)[-1]
                if os.path.basename(path).startswith(prefix):
                    return path
    except OSError:
        pass
    return None


def gemm_arguments(trans_a: bool, trans_b: bool, m: int, n: int, k: int) -> tuple[int, ...]:
    """cuBLAS (column-major) arguments for the row-major product ``C = op(a) op(b)``.

    ``op(a)`` is (m, k) and ``op(b)`` (k, n); ``a`` is stored C-contiguous as (m, k), or
    as (k, m) when ``trans_a``; ``b`` as (k, n), or (n, k) when ``trans_b``. A row-major
    (r, c) array is the column-major (c, r) matrix of its transpose, so row-major C is
    column-major ``Cᵀ = op(b)ᵀ op(a)ᵀ``: the GEMM's first operand is ``b``, its second
    ``a``. Returns ``(transa, transb, M, N, K, lda, ldb, ldc)`` of ``cublas?gemm`` with
    ``A = b``, ``B = a``, ``C = out`` (0 = CUBLAS_OP_N, 1 = CUBLAS_OP_T).
    """
    op = {False: _CUBLAS_OP_N, True: _CUBLAS_OP_T}
    return (op[trans_b], op[trans_a], n, m, k, k if trans_b else n, m if trans_a else k, n)


class _CublasGemm:
    """Row-major ``op(a) op(b)`` through ``cublas{S,D}gemm_v2`` on CuPy's cuBLAS handle and
    the current CuPy stream, into a new C-contiguous array; legal under stream capture."""

    def __init__(self, path: str) -> None:
        lib = ctypes.CDLL(path)
        vp, i = ctypes.c_void_p, ctypes.c_int
        self._set_stream = lib.cublasSetStream_v2
        self._set_stream.argtypes, self._set_stream.restype = [vp, vp], i
        self._set_pointer_mode = lib.cublasSetPointerMode_v2
        self._set_pointer_mode.argtypes, self._set_pointer_mode.restype = [vp, i], i
        self._gemm = {}
        for dtype, name, ctype in (("float32", "cublasSgemm_v2", ctypes.c_float),
                                   ("float64", "cublasDgemm_v2", ctypes.c_double)):
            fn = getattr(lib, name)
            fn.argtypes = [vp, i, i, i, i, i, ctypes.POINTER(ctype), vp, i, vp, i,
                           ctypes.POINTER(ctype), vp, i]
            fn.restype = i
            self._gemm[dtype] = (fn, ctype(1.0), ctype(0.0))

    def __call__(self, trans_a: bool, trans_b: bool, a: Array, b: Array, m: int, n: int,
                 k: int) -> Array:
        """(m, n) = op(a) op(b) with op(a) (m, k), op(b) (k, n); a, b C-contiguous,
        ``trans_a`` meaning ``a`` is stored (k, m), ``trans_b`` that ``b`` is (n, k)."""
        out = cupy.empty((m, n), dtype=a.dtype)
        if m == 0 or n == 0:
            return out
        if k == 0:
            out.fill(0)
            return out
        fn, one, zero = self._gemm[a.dtype.name]
        op_1, op_2, rows, cols, inner, ld_1, ld_2, ld_out = gemm_arguments(
            trans_a, trans_b, m, n, k)
        handle = cupy.cuda.device.get_cublas_handle()
        self._check(self._set_stream(handle, cupy.cuda.get_current_stream().ptr))
        self._check(self._set_pointer_mode(handle, _CUBLAS_POINTER_MODE_HOST))
        self._check(fn(handle, op_1, op_2, rows, cols, inner, ctypes.byref(one), b.data.ptr,
                       ld_1, a.data.ptr, ld_2, ctypes.byref(zero), out.data.ptr, ld_out))
        return out

    @staticmethod
    def _check(status: int) -> None:
        if status != 0:
            raise RuntimeError(f"cuBLAS GEMM failed with cublasStatus_t {status}")


@functools.cache
def _direct_gemm() -> _CublasGemm | None:
    """The direct cuBLAS GEMM, or None (logged once) when it can't be set up here."""
    try:
        cupy.cuda.device.get_cublas_handle()  # loads CuPy's libcublas and makes the handle
        path = _loaded_library_path("libcublas.so")
        if path is None:
            raise OSError("CuPy's libcublas is not among the loaded libraries")
        return _CublasGemm(path)
    except (OSError, AttributeError) as exc:
        logger.info("cupy backend: calling cuBLAS directly is not possible (%s); products "
                    "use cupy.matmul and CUDA graphs are off", exc)
        return None


# -- the kernels, built on first use ----------------------------------------------------
@functools.cache
def _bias_relu_kernel() -> cupy.ElementwiseKernel:
    """In place on y (m, n) with b (n,) broadcast: ``y = relu(y + b)``; NaN stays NaN,
    as with ``numpy.maximum``."""
    return cupy.ElementwiseKernel(
        "T b", "T y",
        "T v = y + b; y = (v > (T)0 || v != v) ? v : (T)0",
        "simplenn_bias_relu")


@functools.cache
def _relu_backward_kernel() -> cupy.ElementwiseKernel:
    """``dx = dy * [y > 0]``, the same product NumPy's ``dy * (y > 0)`` computes."""
    return cupy.ElementwiseKernel(
        "T dy, T y", "T dx", "dx = dy * (T)(y > (T)0)", "simplenn_relu_backward")


@functools.cache
def _sgd_momentum_kernel() -> cupy.ElementwiseKernel:
    """In place on param and velocity; ``lr`` may be a scalar or a 0-d device array."""
    return cupy.ElementwiseKernel(
        "T grad, T lr, T momentum, T wd", "T param, T velocity",
        """
        const T g = wd != (T)0 ? add_rn(grad, mul_rn(param, wd)) : grad;
        velocity = add_rn(mul_rn(velocity, momentum), g);
        param = sub_rn(param, mul_rn(velocity, lr));
        """,
        "simplenn_sgd_momentum", preamble=_ROUNDED_ARITHMETIC)


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


_KERNEL_FACTORIES = (_bias_relu_kernel, _relu_backward_kernel, _sgd_momentum_kernel,
                     _pixels_kernel, _softmax_xent_kernel)


def built_kernel_count() -> int:
    """How many of this module's kernels have been built so far (0 right after import)."""
    return sum(f.cache_info().currsize for f in _KERNEL_FACTORIES)


def graphs_enabled() -> bool:
    """Whether ``$SIMPLENN_CUDA_GRAPHS`` turns CUDA graphs on (the default: off, until a
    GPU run has verified and measured them; see benchmarks/results/README.md)."""
    return os.environ.get(GRAPHS_ENV_VAR, "0").strip().lower() in ("1", "true", "on", "yes")


# -- the backend ------------------------------------------------------------------------
class CupyOps(Ops):
    """The interface's ops on CuPy arrays (cuBLAS products), the hot element-wise work
    replaced by the fused kernels of this module. Arrays live on the current CUDA
    device; ``synchronize`` waits for it."""

    name = "cupy"
    xp = xp_cupy
    is_device = True
    compiles_chunks = True  # a chunk is queued on the device (or replayed as a CUDA graph)

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

    def jit_train_steps(self, fn: Any) -> Any:
        """``train_steps`` as a :class:`CudaGraphTrainSteps`."""
        return CudaGraphTrainSteps(fn)

    # -- products --------------------------------------------------------------------
    def matmul(self, a: Array, b: Array) -> Array:
        """``a @ b`` for (m, k) x (k, n) -> (m, n), one cuBLAS GEMM."""
        gemm = self._direct(a, b)
        return a @ b if gemm is None else gemm(False, False, a, b, a.shape[0], b.shape[1],
                                               a.shape[1])

    def matmul_tn(self, a: Array, b: Array) -> Array:
        """``aᵀ @ b`` for (k, m) x (k, n) -> (m, n), one cuBLAS GEMM (no transposed copy)."""
        gemm = self._direct(a, b)
        return a.T @ b if gemm is None else gemm(True, False, a, b, a.shape[1], b.shape[1],
                                                 a.shape[0])

    def matmul_nt(self, a: Array, b: Array) -> Array:
        """``a @ bᵀ`` for (m, k) x (n, k) -> (m, n), one cuBLAS GEMM (no transposed copy)."""
        gemm = self._direct(a, b)
        return a @ b.T if gemm is None else gemm(False, True, a, b, a.shape[0], b.shape[0],
                                                 a.shape[1])

    def _direct(self, a: Array, b: Array) -> _CublasGemm | None:
        """The direct GEMM when CUDA graphs are on and both operands suit it
        (C-contiguous 2-D, this dtype); otherwise None and ``cupy.matmul`` does it."""
        if (not graphs_enabled() or a.dtype != self.dtype or b.dtype != self.dtype or a.ndim != 2 or b.ndim != 2
                or not a.flags.c_contiguous or not b.flags.c_contiguous):
            return None
        return _direct_gemm()

    # -- inputs ----------------------------------------------------------------------
    def pixels_to_float(self, x: Array) -> Array:
        """(m, d) uint8 -> (m, d) ``x / 255`` in ``self.dtype``, one fused kernel."""
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
            (1,), (threads,), (logits, labels, dlogits, loss, np.int32(m), np.int32(c)),
            shared_mem=threads * self.dtype.itemsize)
        return loss, dlogits

    # -- the update ------------------------------------------------------------------
    def sgd_update(
        self, param: Array, grad: Array, velocity: Array, lr: Any, momentum: Any,
        weight_decay: Any,
    ) -> tuple[Array, Array]:
        """As :meth:`Ops.sgd_update`, one fused kernel, in place on ``param`` and
        ``velocity``, which it returns. ``lr`` may be a 0-d device array (the CUDA-graph
        path updates it between replays)."""
        _sgd_momentum_kernel()(grad, self._scalar(lr), self._scalar(momentum),
                               self._scalar(weight_decay), param, velocity)
        return param, velocity

    def _scalar(self, value: Any) -> Any:
        if isinstance(value, cupy.ndarray):
            return value if value.dtype == self.dtype else value.astype(self.dtype)
        return self.dtype.type(value)


# -- CUDA graphs ------------------------------------------------------------------------
class _Entry:
    """One captured chunk shape: its static inputs/outputs and, once captured, its graph."""

    def __init__(self, order: Array, lr_dtype: np.dtype) -> None:
        self.rows = cupy.empty(order.shape, dtype=order.dtype)
        self.lr = cupy.zeros((), dtype=lr_dtype)
        self.losses: Any = None  # the captured work's losses array, written by each replay
        self.warmed = False
        self.graph: Any = None


class CudaGraphTrainSteps:
    """``train_steps`` that runs each chunk as a replay of a captured CUDA graph.

    Called exactly like the function it wraps (``W1, b1, W2, b2, V1, v1, V2, v2, X, Y,
    order, batch_size, lr, momentum, wd``), and returns what it returns: the parameters
    and velocities, updated in place, and a new array of the losses. A graph is kept per *shape* of a
    chunk: the device, ``len(order)``, ``batch_size``, ``momentum``, ``wd`` and the
    address, shape and dtype of every array the steps read or update in place (the
    parameters, velocities, X and Y). The per-chunk inputs go through static device
    buffers refreshed before each replay: the rows ``order`` is copied in and ``lr``
    written to a 0-d array (the update kernel reads it from there); the losses that the
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

    def __call__(self, W1, b1, W2, b2, V1, v1, V2, v2, X, Y, order, batch_size, lr,
                 momentum, wd) -> tuple:
        if self.disabled_reason is None and graphs_enabled() and _direct_gemm() is None:
            self.disabled_reason = "cuBLAS can't be called directly, and CuPy's cuBLAS " \
                                   "wrappers refuse to run under stream capture"
        if self.disabled_reason is not None or not graphs_enabled():
            return self.fn(W1, b1, W2, b2, V1, v1, V2, v2, X, Y, order, batch_size, lr,
                           momentum, wd)
        arrays = (W1, b1, W2, b2, V1, v1, V2, v2, X, Y)
        key = (cupy.cuda.Device().id, order.shape[0], order.dtype.str, int(batch_size),
               float(momentum), float(wd), np.dtype(type(lr)).str
               if not isinstance(lr, cupy.ndarray) else lr.dtype.str,
               tuple((a.data.ptr, a.shape, a.strides, a.dtype.str) for a in arrays))
        entry = self._entry(key, order, lr)
        caller = cupy.cuda.get_current_stream()
        stream = self._get_stream()
        stream.wait_event(caller.record())
        with stream:
            cupy.copyto(entry.rows, order)
            if isinstance(lr, cupy.ndarray):
                cupy.copyto(entry.lr, lr)
            else:
                entry.lr.fill(lr)
            args = (*arrays, entry.rows, batch_size, entry.lr, momentum, wd)
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

    def _entry(self, key: tuple, order: Array, lr: Any) -> _Entry:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            return entry
        if len(self._entries) >= self.MAX_GRAPHS:
            self._get_stream().synchronize()  # the oldest graph may still be running
            self._entries.popitem(last=False)
        lr_dtype = lr.dtype if isinstance(lr, cupy.ndarray) else np.dtype(type(lr))
        entry = self._entries[key] = _Entry(order, lr_dtype)
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
            logger.warning("cupy backend: CUDA graph capture failed (%s); training runs "
                           "without CUDA graphs from now on", self.disabled_reason)
            return None
        self.captures += 1
        return graph
