"""Fuzzing the model and checkpoint loaders: any bytes give a valid result or the
library's own ModelFileError, never another exception. (The IDX reader is fuzzed in
tests/test_idx.py.)"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import simplenn
from simplenn.errors import ModelFileError
from simplenn.io.checkpoints import load_checkpoint, save_checkpoint
from simplenn.io.models import read_model_file, save_model

FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _tiny_net() -> simplenn.TwoLayerNet:
    # tiny, so that most of the file is zip and .npy headers and JSON, where damage matters
    return simplenn.TwoLayerNet(4, 3, 2, backend="numpy", seed=0)


def _model_bytes() -> bytes:
    with tempfile.TemporaryDirectory() as d:
        return save_model(_tiny_net(), Path(d) / "m.npz").read_bytes()


def _checkpoint_bytes() -> bytes:
    states = []
    rng = np.random.default_rng(0)
    X, y = rng.integers(0, 256, (40, 4), dtype=np.uint8), rng.integers(0, 2, 40)
    simplenn.fit(
        _tiny_net(),
        (X, y),
        epochs=2,
        batch_size=16,
        on_checkpoint=states.append,
        interruptible=False,
    )
    with tempfile.TemporaryDirectory() as d:
        return save_checkpoint(Path(d) / "c.npz", states[0]).read_bytes()


MODEL = _model_bytes()
CHECKPOINT = _checkpoint_bytes()
LOADERS = {"model": (read_model_file, MODEL), "checkpoint": (load_checkpoint, CHECKPOINT)}


def _load(loader, data: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "fuzzed.npz"
        path.write_bytes(data)
        try:
            loader(path)
        except ModelFileError as exc:
            assert str(path) in str(exc)


@st.composite
def mutated(draw, original: bytes) -> bytes:
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 16))]
    return bytes(data)


@pytest.mark.parametrize("kind", sorted(LOADERS))
@FUZZ
@given(data=st.data())
def test_fuzz_mutated_valid_files(kind, data):
    loader, original = LOADERS[kind]
    _load(loader, data.draw(mutated(original)))


@pytest.mark.parametrize("kind", sorted(LOADERS))
@FUZZ
@given(
    data=st.one_of(st.binary(max_size=512), st.binary(max_size=64).map(lambda b: b"PK\x03\x04" + b))
)
def test_fuzz_arbitrary_bytes(kind, data):
    _load(LOADERS[kind][0], data)


def test_the_fuzzed_originals_load():
    with tempfile.TemporaryDirectory() as d:
        for name, (loader, data) in LOADERS.items():
            path = Path(d) / f"{name}.npz"
            path.write_bytes(data)
            loader(path)
