"""The strict backend: the generic ops on ``array_api_strict``, which accepts nothing
outside the Python array API standard (no NumPy arrays, no NumPy scalars, no
NumPy-only functions or methods). It is as slow as NumPy and exists to prove that the
interface is the standard: every op it runs is :class:`~simplenn.backends.Ops`'s own.
"""

from __future__ import annotations

import array_api_strict

from .base import Ops


class StrictOps(Ops):
    """:class:`~simplenn.backends.Ops` as written, on ``array_api_strict`` arrays. They
    refuse host NumPy arrays, as a GPU library's do, hence ``is_device``."""

    name = "strict"
    xp = array_api_strict
    is_device = True
