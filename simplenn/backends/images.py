"""The image-distortion interface: the two ops that training augmentation needs.

:class:`ImageOps` writes them once against a backend's array API namespace, as
:class:`~simplenn.backends.Ops` does for the network's ops; a backend overrides them
only to make them faster, and names its subclass in :attr:`Ops.image_ops`. The
conformance kit holds every override to an independent float64 reference. Both ops
are pure: they return new arrays and never change an argument.
"""

from __future__ import annotations

import importlib
import math
from contextlib import AbstractContextManager, nullcontext

from array_api_compat import device as device_of

from .base import Array, Ops


class ImageOps:
    """Elastic fields and the bilinear warp on the arrays of ``ops``, in ``ops.dtype``."""

    def __init__(self, ops: Ops) -> None:
        self.ops = ops
        self.xp = ops.xp
        self.dtype = ops.dtype

    def training(self) -> AbstractContextManager:
        """A context an augmented run trains in, whose chunks, distortions and
        evaluations take turns: a backend may arrange its threads for that there. The
        default does nothing."""
        return nullcontext()

    def elastic_fields(self, noise: Array, levels: Array, basis: Array) -> Array:
        """Displacement fields ``B Z Bᵀ`` (m, 2, s, s) in ``dtype`` from uint8 noise
        (m, 2, k, k), ``Z = levels[noise]`` with ``levels`` (256,), and the (s, k)
        ``basis`` B (see :func:`simplenn.core.augment.elastic_basis`)."""
        xp = self.xp
        z = xp.reshape(xp.take(levels, xp.reshape(xp.astype(noise, xp.int64), (-1,))), noise.shape)
        return xp.matmul(xp.matmul(basis, z), xp.matrix_transpose(basis))

    def warp(self, x: Array, matrices: Array, fields: Array | None) -> Array:
        """Images x (m, s * s), uint8 pixels (read as ``x / 255``) or floats, resampled
        bilinearly (zeros outside) -> (m, s * s) in ``dtype``: output pixel (r, c)
        of image i reads the input at ``A_i (r - h, c - h) + t_i + (h, h)`` plus
        ``fields[i, :, r, c]`` when given, with ``h = (s - 1) / 2``, ``[A_i | t_i]`` =
        ``matrices[i]`` (m, 2, 3) and ``fields`` (m, 2, s, s) or None."""
        xp = self.xp
        m, d = x.shape
        s = math.isqrt(d)
        f, dev = self.ops.float_dtype, device_of(x)
        img = xp.astype(x, f) / 255 if x.dtype == xp.uint8 else xp.astype(x, f)
        grid = xp.arange(s, dtype=f, device=dev) - (s - 1) / 2
        u = xp.reshape(xp.broadcast_to(grid[:, None], (s, s)), (1, d))  # r - h
        v = xp.reshape(xp.broadcast_to(grid[None, :], (s, s)), (1, d))  # c - h
        A = xp.astype(matrices, f)
        src_r = A[:, 0, 0:1] * u + A[:, 0, 1:2] * v + (A[:, 0, 2:3] + (s - 1) / 2)
        src_c = A[:, 1, 0:1] * u + A[:, 1, 1:2] * v + (A[:, 1, 2:3] + (s - 1) / 2)
        if fields is not None:
            src_r = src_r + xp.reshape(fields[:, 0, ...], (m, d))
            src_c = src_c + xp.reshape(fields[:, 1, ...], (m, d))
        r0, c0 = xp.floor(src_r), xp.floor(src_c)
        fr, fc = src_r - r0, src_c - c0
        # corners more than one pixel outside read zeros: clip before the integer cast
        r0 = xp.astype(xp.clip(r0, -2, s), xp.int64)
        c0 = xp.astype(xp.clip(c0, -2, s), xp.int64)
        flat = xp.reshape(img, (m * d,))
        first = xp.arange(m, dtype=xp.int64, device=dev)[:, None] * d
        out = xp.zeros((m, d), dtype=f, device=dev)
        for dr, wr in ((0, 1 - fr), (1, fr)):
            for dc, wc in ((0, 1 - fc), (1, fc)):
                r, c = r0 + dr, c0 + dc
                inside = (r >= 0) & (r < s) & (c >= 0) & (c < s)
                at = first + xp.clip(r, 0, s - 1) * s + xp.clip(c, 0, s - 1)
                value = xp.reshape(xp.take(flat, xp.reshape(at, (m * d,))), (m, d))
                out = out + xp.where(inside, wr * wc * value, xp.zeros((), dtype=f, device=dev))
        return out


def image_ops(ops: Ops) -> ImageOps:
    """The image ops of backend ``ops``: its :attr:`Ops.image_ops`, a class or a
    ``"module:class"`` name."""
    cls = ops.image_ops
    if isinstance(cls, str):
        module, _, name = cls.partition(":")
        cls = getattr(importlib.import_module(module), name)
    return cls(ops)


__all__ = ["ImageOps", "image_ops"]
