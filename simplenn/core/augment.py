"""Random distortions of the training images: affine and elastic (Simard, Steinkraus and
Platt, ICDAR 2003), drawn on the host from the run's seed and applied by the backend.

A distortion moves the point each output pixel reads. Output pixel ``(r, c)`` of an
``s x s`` image reads the input, by bilinear interpolation with zeros outside, at::

    (r', c') = A (r - h, c - h) + t + (h, h) + (Δr, Δc)[r, c],     h = (s - 1) / 2

- ``affine``: ``A = rotation(θ) · shear(k) / scale`` and a translation ``t``, each drawn
  uniformly from :data:`ROTATION_DEGREES`, :data:`SCALE`, :data:`SHEAR` and
  :data:`TRANSLATION`; no displacement field.
- ``elastic``: ``A = I``, ``t = 0`` and Simard's displacement fields with α = 34, σ = 4.
  Simard smooths two fields ``U`` of uniform noise in [-1, 1] (256 levels here) with
  the Gaussian filter ``G`` of width σ: ``α G U G`` (``G`` normalised, truncated at 4σ,
  zeros beyond the border, as ``scipy.ndimage.gaussian_filter(mode="constant")``).
  Each pixel's displacement sums hundreds of U's entries: the fields are Gaussian, of
  covariance ``α² var(U) G² ⊗ G²``. Here that Gaussian field is drawn in ``G``'s
  eigenbasis: ``B Z Bᵀ``, with ``B = Q_k Λ_k`` the ``k`` eigenvectors of ``G`` whose
  eigenvalues are at least :data:`BASIS_CUTOFF` of the largest, scaled by them
  (:func:`elastic_basis`; k = 8 for 28 x 28 and σ = 4), and ``Z`` two k x k fields of
  independent Gaussian noise of variance ``α² var(U)``, each entry one byte of the
  generator's raw output read through :func:`elastic_levels` (256 quantiles of the
  Gaussian). The covariance is Simard's but for the eigenvalues dropped (1.7e-5 of
  the variance). An image's fields take 128 random bytes and products of inner size k,
  where Simard's take 1,568 bytes and products of inner size s.

The draws of training batch ``k`` of epoch ``e`` come from a generator seeded with the
run's seed, ``e`` and ``k``, so the same seed distorts the same images the same way on every
backend, however the epoch is cut into calls, and in a resumed run. The backend's image
ops (:mod:`simplenn.backends.images`) compute the fields and the warp.
"""

from __future__ import annotations

import functools
import math
from statistics import NormalDist
from typing import Any, NamedTuple

import numpy as np

from ..backends import Ops
from ..backends.base import Array

AUGMENTATIONS = ("none", "affine", "elastic")
#: The affine ranges: rotation in ±degrees, isotropic scale, shear (the tangent of
#: the shear angle, ±) and translation in ±pixels along each axis.
ROTATION_DEGREES = 12.0
SCALE = (0.9, 1.1)
SHEAR = 0.2
TRANSLATION = 2.0
#: The elastic distortion: displacement scale α and the Gaussian's σ, in pixels.
ELASTIC_ALPHA = 34.0
ELASTIC_SIGMA = 4.0
#: The eigenvalues of the Gaussian filter the elastic fields keep: those at least this
#: fraction of the largest (what is dropped is 1.7e-5 of the fields' variance at 28 x 28).
BASIS_CUTOFF = 1e-2
#: Tells the augmentation generator's seeds apart from the run's other streams.
_STREAM = 0x61756D67


class Distortions(NamedTuple):
    """The draws for ``m`` images, host arrays: ``matrices`` (m, 2, 3) float64 ``[A | t]``;
    ``noise`` (m, 2, k, k) uint8, ``Z = elastic_levels()[noise]`` (see
    :func:`elastic_basis`), or None (affine)."""

    matrices: np.ndarray
    noise: np.ndarray | None


def check_augmentation(kind: str) -> str:
    """``kind`` if it is one of :data:`AUGMENTATIONS`, else ValueError naming them."""
    if kind not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {', '.join(AUGMENTATIONS)}, not {kind!r}")
    return kind


def image_side(n_inputs: int) -> int:
    """The side ``s`` of square images of ``n_inputs = s * s`` pixels (ValueError if none)."""
    side = math.isqrt(n_inputs)
    if side * side != n_inputs or side < 2:
        raise ValueError(
            f"augmentation distorts square images of at least 2 x 2 pixels, but "
            f"the inputs have {n_inputs} features; train with augment='none'"
        )
    return side


def draw(kind: str, m: int, side: int, rng: np.random.Generator) -> Distortions:
    """The random distortions of ``kind`` (``affine`` or ``elastic``) for ``m`` images."""
    if kind == "elastic":
        matrices = np.zeros((m, 2, 3))
        matrices[:, 0, 0] = matrices[:, 1, 1] = 1.0
        k = elastic_basis(side).shape[1]
        n = m * 2 * k * k  # bytes of the generator's raw 64-bit words, little-endian
        raw = rng.bit_generator.random_raw(-(-n // 8)).astype("<u8", copy=False)
        return Distortions(matrices, raw.view(np.uint8)[:n].reshape(m, 2, k, k))
    if kind != "affine":
        raise ValueError(f"no distortion is drawn for augment={kind!r}")
    u = rng.random((m, 5)) * 2 - 1  # uniform in [-1, 1)
    theta = np.deg2rad(ROTATION_DEGREES) * u[:, 0]
    scale = SCALE[0] + (SCALE[1] - SCALE[0]) * (u[:, 1] + 1) / 2
    shear = SHEAR * u[:, 2]
    cos, sin = np.cos(theta), np.sin(theta)
    matrices = np.empty((m, 2, 3))
    # rotation(θ) @ [[1, shear], [0, 1]] / scale, in (row, column) coordinates
    matrices[:, 0, 0], matrices[:, 0, 1] = cos / scale, (cos * shear - sin) / scale
    matrices[:, 1, 0], matrices[:, 1, 1] = sin / scale, (sin * shear + cos) / scale
    matrices[:, :, 2] = TRANSLATION * u[:, 3:5]
    return Distortions(matrices, None)


def draw_batches(
    kind: str, seed: int, epoch: int, begin: int, end: int, batch_size: int, side: int
) -> Distortions:
    """The distortions of the samples ``begin`` to ``end`` of ``epoch`` (whole training
    batches: ``begin`` a multiple of ``batch_size``), batch by batch, each from its own
    seeded generator."""
    parts = []
    for first in range(begin, end, batch_size):
        rng = np.random.default_rng([seed, _STREAM, epoch, first // batch_size])
        parts.append(draw(kind, min(end, first + batch_size) - first, side, rng))
    if len(parts) == 1:
        return parts[0]
    noise = None if parts[0].noise is None else np.concatenate([p.noise for p in parts])
    return Distortions(np.concatenate([p.matrices for p in parts]), noise)


def gaussian_filter_matrix(side: int, sigma: float = ELASTIC_SIGMA) -> np.ndarray:
    """(s, s) float64 ``G`` with ``G @ f`` the Gaussian filter of width ``sigma`` along
    the first axis of ``f`` (normalised, truncated at 4σ, zeros beyond the border);
    symmetric, so ``G @ U @ G`` filters both axes."""
    radius = int(4 * sigma + 0.5)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    offset = np.arange(side)[:, None] - np.arange(side)[None, :]
    return np.where(np.abs(offset) <= radius, taps[np.clip(offset + radius, 0, 2 * radius)], 0.0)


@functools.lru_cache(maxsize=8)
def elastic_basis(side: int, sigma: float = ELASTIC_SIGMA) -> np.ndarray:
    """(s, k) float64 ``B = Q_k Λ_k``, read-only: the eigenvectors of
    :func:`gaussian_filter_matrix` whose eigenvalues are at least :data:`BASIS_CUTOFF`
    of the largest, largest first, each scaled by its eigenvalue, so ``B Bᵀ`` is ``G²``
    but for the eigenvalues dropped. Each column's sign makes its first entry of at
    least half its largest magnitude positive, so every machine draws the same fields."""
    values, vectors = np.linalg.eigh(gaussian_filter_matrix(side, sigma))
    keep = np.argsort(values)[::-1]
    keep = keep[values[keep] >= BASIS_CUTOFF * values[keep[0]]]
    basis = vectors[:, keep] * values[keep]
    magnitude = np.abs(basis)
    first = np.argmax(magnitude >= magnitude.max(axis=0) / 2, axis=0)
    basis *= np.sign(basis[first, np.arange(basis.shape[1])])
    basis.flags.writeable = False
    return basis


@functools.lru_cache(maxsize=1)
def elastic_levels(alpha: float = ELASTIC_ALPHA) -> np.ndarray:
    """(256,) float64, read-only: the displacement coefficient of each noise byte ``b``,
    the Gaussian quantile ``Φ⁻¹((b + ½) / 256)``, scaled so the 256 levels have the
    variance ``α² var(U)`` of Simard's uniform levels ``U = b / 127.5 - 1``."""
    quantiles = np.array([NormalDist().inv_cdf((b + 0.5) / 256) for b in range(256)])
    uniform = np.arange(256) / 127.5 - 1
    levels = quantiles * (alpha * uniform.std() / quantiles.std())
    levels.flags.writeable = False
    return levels


class Augmenter:
    """Distorts the training batches of one run on one backend."""

    def __init__(self, ops: Ops, kind: str, seed: int, n_inputs: int) -> None:
        from ..backends.images import image_ops

        self.ops, self.kind, self.seed = ops, check_augmentation(kind), seed
        self.images = image_ops(ops)
        self.side = image_side(n_inputs)
        self._levels = self._basis = None

    def distort(self, X: Array, rows: Array, epoch: int, begin: int, batch_size: int) -> Array:
        """The rows ``X[rows]`` (uint8 pixels or floats) of the samples ``begin`` to
        ``begin + len(rows)`` of ``epoch``, distorted: (m, s * s) floats in the backend's
        dtype."""
        ops = self.ops
        m = rows.shape[0]
        d = draw_batches(self.kind, self.seed, epoch, begin, begin + m, batch_size, self.side)
        fields = None
        if d.noise is not None:
            if self._basis is None:
                self._levels = ops.asarray(elastic_levels(), dtype=ops.dtype)
                self._basis = ops.asarray(elastic_basis(self.side), dtype=ops.dtype)
            fields = self.images.elastic_fields(
                ops.asarray(d.noise, dtype=np.uint8), self._levels, self._basis
            )
        return self.images.warp(ops.take(X, rows), ops.asarray(d.matrices), fields)

    def rows(
        self, X: Array, Y: Array, order: Array, epoch: int, begin: int, end: int, batch_size: int
    ) -> tuple[Array, Array, Array]:
        """The samples ``begin`` to ``end`` of ``epoch`` (rows ``order[begin:end]`` of the
        training set ``X``, ``Y``) as ``(x, y, arange(end - begin))``: ``x`` distorted, for
        ``train_steps``."""
        rows = order[begin:end]
        return (
            self.distort(X, rows, epoch, begin, batch_size),
            self.ops.take(Y, rows),
            self.ops.asarray(np.arange(end - begin), dtype=np.int64),
        )


def distort_images(
    images: np.ndarray, kind: str, seed: int = 0, backend: Any = "numpy", dtype: str = "float32"
) -> np.ndarray:
    """``images`` (n, s * s) or (n, s, s), uint8 pixels or floats, distorted as training
    batch 0 of epoch 1 with ``seed`` would be: (n, s * s) floats in [0, 1] for pixels.
    For pictures and checks; training distorts inside :func:`simplenn.fit`."""
    from ..backends import get_backend

    ops = backend if isinstance(backend, Ops) else get_backend(backend, dtype)
    images = np.asarray(images)
    if images.ndim == 3:
        images = images.reshape(images.shape[0], -1)
    if check_augmentation(kind) == "none":
        return (images / 255 if images.dtype == np.uint8 else images).astype(ops.dtype)
    augmenter = Augmenter(ops, kind, seed, images.shape[1])
    X = ops.asarray(images, dtype=images.dtype if images.dtype == np.uint8 else ops.dtype)
    rows = ops.asarray(np.arange(images.shape[0]), dtype=np.int64)
    out = augmenter.distort(X, rows, 1, 0, max(1, images.shape[0]))
    return np.asarray(ops.to_numpy(out))
