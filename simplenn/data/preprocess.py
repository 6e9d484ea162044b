"""Turn a photo or drawing of one digit into an MNIST-style 28x28 image.

The MNIST recipe, as LeCun et al. describe it: the digit is light on a dark ground,
cropped to its ink, scaled (keeping its aspect ratio, anti-aliased) to fit a 20x20
box, and placed in a 28x28 field so that its centre of mass is at the centre.
Reading image files needs Pillow (``pip install Pillow``);
:func:`to_mnist` works on any NumPy array.
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import numpy as np

from .._optional import require
from ..errors import SimplennError

#: The digit is scaled to fit a BOX x BOX square inside a SIZE x SIZE image.
BOX, SIZE = 20, 28
#: Ink weaker than this fraction of the strongest ink is treated as background noise.
NOISE_FLOOR = 0.2
#: A picture whose ink contrast (0..255) is below this holds no digit.
MIN_CONTRAST = 24


class ImageError(SimplennError, ValueError):
    """An image file that cannot be read or holds no digit; the message names the file."""


#: Most pixels an image file may have (checked before decoding it; Pillow's own
#: decompression-bomb limit is about 89 million).
MAX_PIXELS = 25_000_000
#: An image with a longer side is first reduced (box filter) to about this size.
REDUCED_SIDE = 1024


def load_grayscale(path: str | os.PathLike) -> np.ndarray:
    """The image at ``path`` as (H, W) float64 luminance in [0, 255].

    EXIF rotation is applied; transparent areas are filled with a ground that contrasts
    with the opaque strokes (so both black-on-transparent and white-on-transparent
    drawings work). Float images (mode ``F``) with values in [0, 1] are read as
    such. An image with more than :data:`MAX_PIXELS` pixels is refused before it is
    decoded, one with a side longer than :data:`REDUCED_SIDE` is reduced to about that.
    Raises :class:`ImageError` for a missing, empty, unreadable, not regular, non-image,
    damaged or too large file and for NaN or infinite pixels.
    """
    require("PIL", "reading images")
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise ImageError(f"{path}: is a directory, not an image")
        if not stat.S_ISREG(info.st_mode):
            from ..io.archive import file_kind

            raise ImageError(
                f"{path}: not a regular file ({file_kind(info.st_mode)}), not an image"
            )
        if info.st_size == 0:
            raise ImageError(f"{path}: the file is empty")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # MAX_PIXELS is lower
            im = Image.open(path)
        with im:
            width, height = im.size
            if width * height > MAX_PIXELS:
                raise ImageError(
                    f"{path}: refused, {width}x{height} is more than the "
                    f"{MAX_PIXELS:,} pixels simplenn reads; scale the image down"
                )
            im.load()
            im = ImageOps.exif_transpose(im)
            if max(im.size) > REDUCED_SIDE:
                im = _reduced(im)
            return _luminance(im, path)
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory, not an image") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied; make the file readable") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file Pillow can read (PNG, JPEG, ...)") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(
            f"{path}: refused, the image has more than the {MAX_PIXELS:,} pixels "
            f"simplenn reads ({exc})"
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        if isinstance(exc, ImageError):
            raise
        if isinstance(exc, OSError) and exc.errno is not None:  # the system's, not Pillow's
            raise ImageError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
        raise ImageError(f"{path}: damaged or truncated image ({exc})") from None


def _reduced(im):
    """``im`` shrunk by a whole factor (averaging boxes of pixels) to a longest side of
    at most :data:`REDUCED_SIDE`; as it is for modes Pillow cannot reduce."""
    try:
        return im.reduce(-(-max(im.size) // REDUCED_SIDE))
    except (ValueError, NotImplementedError):
        return im


def _luminance(im, path: Path) -> np.ndarray:
    mode = im.mode
    if mode in ("I", "F") or mode.startswith("I;"):
        a = np.asarray(im, dtype=np.float64)
        if not np.isfinite(a).all():
            raise ImageError(f"{path}: the image holds NaN or infinite pixel values")
        if mode == "F" and a.size and 0 <= a.min() and a.max() <= 1:
            return a * 255.0  # floats in [0, 1]
        top = 65535.0 if mode.startswith("I;16") else max(255.0, float(a.max()))
        return np.clip(a * (255.0 / top), 0, 255)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float64)
        lum = np.asarray(im.convert("RGBA").convert("L"), dtype=np.float64)
        alpha = rgba[..., 3] / 255.0
        if alpha.min() < 0.99 and alpha.sum() > 0:
            strokes = float((lum * alpha).sum() / alpha.sum())
            ground = 255.0 if strokes < 127.5 else 0.0
            return lum * alpha + ground * (1.0 - alpha)
        return lum
    return np.asarray(im.convert("L"), dtype=np.float64)


def to_mnist(gray: np.ndarray, name: str = "image") -> np.ndarray:
    """(H, W) luminance in [0, 255] -> (784,) uint8, MNIST-style (light digit on black).

    The ground is the median of the border pixels; a light ground is inverted. Raises
    :class:`ImageError` naming ``name`` when the picture holds no digit (no contrast).
    """
    require("PIL", "preprocessing images")
    from PIL import Image

    gray = np.asarray(gray, dtype=np.float64)
    if gray.ndim != 2 or gray.size == 0:
        raise ImageError(
            f"{name}: expected a non-empty 2-D grayscale image, got shape {gray.shape}"
        )
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    ground = float(np.median(border))
    ink = 255.0 - gray if ground > 127.5 else gray
    ink = np.clip(ink - (255.0 - ground if ground > 127.5 else ground), 0, None)
    peak = float(ink.max())
    if peak < MIN_CONTRAST:
        raise ImageError(f"{name}: no digit found (the image is blank or has almost no contrast)")
    ink = np.where(ink >= NOISE_FLOOR * peak, ink * (255.0 / peak), 0.0)
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    h, w = crop.shape
    scale = BOX / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = np.asarray(
        Image.fromarray(crop.astype(np.float32)).resize(size, Image.Resampling.LANCZOS),
        dtype=np.float64,
    )
    small = np.clip(small, 0, None)
    if small.max() <= 0:
        small = np.ones_like(small)
    small *= 255.0 / small.max()
    ys, xs = np.indices(small.shape)
    total = small.sum()
    com = (float((ys * small).sum() / total), float((xs * small).sum() / total))
    out = np.zeros((SIZE, SIZE))
    top = int(np.clip(round(SIZE / 2 - com[0]), 0, SIZE - small.shape[0]))
    left = int(np.clip(round(SIZE / 2 - com[1]), 0, SIZE - small.shape[1]))
    out[top : top + small.shape[0], left : left + small.shape[1]] = small
    return np.round(out).astype(np.uint8).reshape(SIZE * SIZE)


def load_digit(path: str | os.PathLike) -> np.ndarray:
    """The image file at ``path`` as one MNIST-style (784,) uint8 row."""
    return to_mnist(load_grayscale(path), str(path))
