"""The contenders by name: every registered simplenn backend, then the peer libraries
(:mod:`.peers`); whether each can run here, and a ready one."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..backends import backend_names, probe_backend
from . import peers
from .workloads import Contender, SimplennContender

PEER_NAMES = ("torch-cpu", "torch-cuda")


def contender_names() -> tuple[str, ...]:
    """Every registered backend, then the peers."""
    return backend_names() + PEER_NAMES


@dataclass(frozen=True)
class Availability:
    """Whether a contender can run here; ``reason`` says why not when it can't."""

    name: str
    available: bool
    reason: str | None = None
    is_peer: bool = False


def probe_contender(name: str) -> Availability:
    """Whether contender ``name`` (one of :func:`contender_names`) can run here."""
    if name in backend_names():
        info = probe_backend(name)
        return Availability(name, info.available, info.reason)
    if name in PEER_NAMES:
        available, reason = peers.probe(name)
        return Availability(name, available, reason, is_peer=True)
    raise ValueError(f"unknown contender {name!r}; valid names are: {', '.join(contender_names())}")


def make_contender(
    name: str,
    hidden: int,
    train_X: np.ndarray,
    train_y: np.ndarray,
    test_X: np.ndarray,
    seed: int = 0,
) -> Contender:
    """A ready :class:`Contender` called ``name``; raises when it can't run here."""
    if name in backend_names():
        return SimplennContender(name, hidden, train_X, train_y, test_X, seed)
    return peers.TorchContender(name, hidden, train_X, train_y, test_X, seed)
