"""The augmentation's compiled loops: the elastic noise in the layout of the fields'
products, and the bilinear warp."""

from __future__ import annotations

import numpy as np
from numba import prange

from .compile import _kernel


@_kernel
def noise_rows(noise, begin, end, scale, one, out):
    """``out[r, 2i + k, c] = noise[begin + i, k, r, c] * scale - one`` (``scale`` = 1 / 127.5
    and ``one`` in the output dtype): the (s, 2n, s) array of
    :meth:`~simplenn.backends.numpy_backend.NumpyOps.elastic_fields`."""
    s = noise.shape[2]
    for i in range(begin, end):
        for k in range(2):
            f = 2 * (i - begin) + k
            for r in range(s):
                for c in range(s):
                    out[r, f, c] = noise[i, k, r, c] * scale - one
    return out


@_kernel(parallel=True)
def warp_into(x, scale, matrices, fields, grid, out):
    """``out[i]`` (s * s,) = image ``x[i] * scale`` read bilinearly (zeros outside) at
    ``A_i (r - h, c - h) + t_i + (h, h) + fields[r, i, :, c]`` (``fields`` (s, m, 2, s),
    the layout :meth:`~simplenn.backends.numpy_backend.NumpyOps.elastic_fields` computes;
    no field when it has no images), as :meth:`simplenn.backends.Ops.warp`; ``grid`` (s,)
    holds ``r - h`` in the output dtype, in which the coordinates are computed.

    Each image is copied into a zero frame (one row and column before it, two after),
    and the source point is clamped to [-1, s] (NaN to -1), where every corner it reads
    lies in the frame: the loop has no branch per corner. Images are shared among
    numba's threads."""
    s = grid.shape[0]
    h = -grid[0]
    one = grid[1] - grid[0]
    low, high = -one, grid[s - 1] + h + one
    p = s + 3
    has_fields = fields.shape[1] > 0
    for i in prange(x.shape[0]):
        framed = np.zeros(p * p, out.dtype)
        for r in range(s):
            for c in range(s):
                framed[(r + 1) * p + c + 1] = x[i, r * s + c] * scale
        a00, a01, a02 = matrices[i, 0, 0], matrices[i, 0, 1], matrices[i, 0, 2] + h
        a10, a11, a12 = matrices[i, 1, 0], matrices[i, 1, 1], matrices[i, 1, 2] + h
        for r in range(s):
            u = grid[r]
            for c in range(s):
                v = grid[c]
                src_r = a00 * u + a01 * v + a02
                src_c = a10 * u + a11 * v + a12
                if has_fields:
                    src_r += fields[r, i, 0, c]
                    src_c += fields[r, i, 1, c]
                if not src_r >= low:
                    src_r = low
                if not src_r <= high:
                    src_r = high
                if not src_c >= low:
                    src_c = low
                if not src_c <= high:
                    src_c = high
                r0, c0 = np.floor(src_r), np.floor(src_c)
                fr, fc = src_r - r0, src_c - c0
                k = (int(r0) + 1) * p + int(c0) + 1
                top = framed[k] + fc * (framed[k + 1] - framed[k])
                bottom = framed[k + p] + fc * (framed[k + p + 1] - framed[k + p])
                out[i, r * s + c] = top + fr * (bottom - top)
    return out
