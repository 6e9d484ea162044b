"""The augmentation's compiled loops: the elastic fields and the bilinear warp."""

from __future__ import annotations

import numpy as np
from numba import prange

from .blas import NO_TRANS
from .compile import _kernel
from .kernels import _gemm_at

#: Images per task of :func:`warp_into`'s parallel loop, which share its buffers.
WARP_BLOCK = 64
#: Images per block of :func:`elastic_fields_into`, whose products are one BLAS call each.
FIELD_BLOCK = 64


@_kernel(parallel=True)
def elastic_fields_into(noise, levels, basis, transposed, parts, out):
    """``out`` (s, 2m * s): the fields ``B Z Bᵀ`` of ``noise`` (m, 2, k, k) uint8, ``Z =
    levels[noise]``, in the layout of
    :meth:`~simplenn.backends.numpy_backend.NumpyOps.elastic_fields` (``[r, 2i + c, col]``),
    from ``basis`` B (s, k) and ``transposed`` = Bᵀ (k, s) in ``out``'s dtype. Per block
    of :data:`FIELD_BLOCK` images: Z in the (k, 2n, k) layout, then the two products,
    one BLAS call each; the blocks are shared among ``parts`` numba threads (more than
    one only while BLAS runs on one thread).

    While BLAS runs on one thread, each block is the same BLAS call whichever thread
    makes it, so the fields are the same to the bit for any ``parts``; on BLAS's own
    threads they may differ in their last bits, on CPUs where BLAS splits a product
    into parts that add in another order (docs/numba.md#which-results-are-bitwise)."""
    m, k, s = noise.shape[0], noise.shape[2], basis.shape[0]
    size = out.itemsize
    n_blocks = (m + FIELD_BLOCK - 1) // FIELD_BLOCK
    for t in prange(parts):
        z = np.empty(k * 2 * FIELD_BLOCK * k, out.dtype)
        v = np.empty(k * 2 * FIELD_BLOCK * s, out.dtype)
        for block in range(t, n_blocks, parts):
            begin = block * FIELD_BLOCK
            fields = 2 * (min(m, begin + FIELD_BLOCK) - begin)
            for f in range(fields):
                i, c = begin + f // 2, f % 2
                for a in range(k):
                    for j in range(k):
                        z[(a * fields + f) * k + j] = levels[noise[i, c, a, j]]
            # v (k * 2n, s) = Z Bᵀ; out[:, 2 begin s:...] (s, 2n * s) = B v
            _gemm_at(
                size,
                NO_TRANS,
                NO_TRANS,
                k * fields,
                s,
                k,
                z.ctypes.data,
                k,
                transposed.ctypes.data,
                s,
                v.ctypes.data,
                s,
            )
            _gemm_at(
                size,
                NO_TRANS,
                NO_TRANS,
                s,
                fields * s,
                k,
                basis.ctypes.data,
                k,
                v.ctypes.data,
                fields * s,
                out.ctypes.data + size * 2 * begin * s,
                out.shape[1],
            )
    return out


@_kernel
def _frame(image, scale, s, framed):
    """``framed`` ((s + 3)², zeros around) with ``image * scale`` (s * s,) at rows and
    columns 1 to s."""
    p = s + 3
    for r in range(s):
        for c in range(s):
            framed[(r + 1) * p + c + 1] = image[r * s + c] * scale


@_kernel
def _field_rows(fields, i, dr, dc):
    """Image ``i``'s displacements ``fields[:, i, 0, :]`` and ``fields[:, i, 1, :]``
    ((s, m, 2, s)) as contiguous (s * s,) ``dr`` and ``dc``."""
    s = fields.shape[0]
    for r in range(s):
        for c in range(s):
            dr[r * s + c] = fields[r, i, 0, c]
            dc[r * s + c] = fields[r, i, 1, c]


@_kernel
def _source_points(a00, a01, a02, a10, a11, a12, dr, dc, gr, gc, low, high, p, at, wr, wc):
    """For each output pixel ``j`` of one image: the source point
    ``(a00 gr + a01 gc + a02 + dr, a10 gr + a11 gc + a12 + dc)`` clamped to
    ``[low, high]`` (NaN to ``low``), as the frame offset ``at[j]`` of its top-left
    corner and the weights ``wr[j]``, ``wc[j]`` of the next row and column. A loop
    without branches or gathers, which the compiler vectorises."""
    for j in range(gr.shape[0]):
        src_r = a00 * gr[j] + a01 * gc[j] + a02 + dr[j]
        src_c = a10 * gr[j] + a11 * gc[j] + a12 + dc[j]
        src_r = src_r if src_r >= low else low
        src_r = src_r if src_r <= high else high
        src_c = src_c if src_c >= low else low
        src_c = src_c if src_c <= high else high
        r0, c0 = np.floor(src_r), np.floor(src_c)
        wr[j] = src_r - r0
        wc[j] = src_c - c0
        at[j] = (np.int32(r0) + np.int32(1)) * np.int32(p) + np.int32(c0) + np.int32(1)


@_kernel
def _bilinear(framed, p, at, wr, wc, out):
    """``out[j]``: the framed image read bilinearly at the points of :func:`_source_points`."""
    for j in range(at.shape[0]):
        k = np.uint32(at[j])
        fr, fc = wr[j], wc[j]
        top = framed[k] + fc * (framed[k + 1] - framed[k])
        bottom = framed[k + p] + fc * (framed[k + p + 1] - framed[k + p])
        out[j] = top + fr * (bottom - top)


@_kernel(parallel=True)
def warp_into(x, scale, matrices, fields, grid, out):
    """``out[i]`` (s * s,) = image ``x[i] * scale`` read bilinearly (zeros outside) at
    ``A_i (r - h, c - h) + t_i + (h, h) + fields[r, i, :, c]`` (``fields`` (s, m, 2, s),
    the layout :meth:`~simplenn.backends.numpy_backend.NumpyOps.elastic_fields` computes;
    no field when it has no images), as :meth:`simplenn.backends.Ops.warp`; ``grid`` (s,)
    holds ``r - h`` in the output dtype, in which the coordinates are computed.

    Each image is copied into a zero frame (one row and column before it, two after),
    and the source point is clamped to [-1, s] (NaN to -1), where every corner it reads
    lies in the frame. Per image, one vectorised pass computes the source points
    (:func:`_source_points`, from the image's fields copied to contiguous rows) and a
    second reads the frame (:func:`_bilinear`). Blocks of :data:`WARP_BLOCK` images are
    shared among numba's threads."""
    s = grid.shape[0]
    d = s * s
    h = -grid[0]
    one = grid[1] - grid[0]
    low, high = -one, grid[s - 1] + h + one
    p = s + 3
    m = x.shape[0]
    has_fields = fields.shape[1] > 0
    gr, gc = np.empty(d, out.dtype), np.empty(d, out.dtype)  # r - h and c - h per pixel
    for r in range(s):
        for c in range(s):
            gr[r * s + c], gc[r * s + c] = grid[r], grid[c]
    for b in prange((m + WARP_BLOCK - 1) // WARP_BLOCK):
        framed = np.zeros(p * p, out.dtype)
        dr, dc = np.zeros(d, out.dtype), np.zeros(d, out.dtype)
        at = np.empty(d, np.int32)
        wr, wc = np.empty(d, out.dtype), np.empty(d, out.dtype)
        for i in range(b * WARP_BLOCK, min(m, (b + 1) * WARP_BLOCK)):
            _frame(x[i], scale, s, framed)
            if has_fields:
                _field_rows(fields, i, dr, dc)
            _source_points(
                matrices[i, 0, 0],
                matrices[i, 0, 1],
                matrices[i, 0, 2] + h,
                matrices[i, 1, 0],
                matrices[i, 1, 1],
                matrices[i, 1, 2] + h,
                dr,
                dc,
                gr,
                gc,
                low,
                high,
                p,
                at,
                wr,
                wc,
            )
            _bilinear(framed, p, at, wr, wc, out[i])
    return out
