"""Tests of the f64acc example backend; run after ``pip install ./examples/simplenn-f64acc``."""

import numpy as np
from simplenn_f64acc.ops import F64AccOps

import simplenn
from simplenn.backends import available_backends


def test_listed_and_available():
    infos = {info.name: info for info in available_backends()}
    assert "f64acc" in infos, (
        "f64acc is not registered: install it with pip install ./examples/simplenn-f64acc"
    )
    assert infos["f64acc"].available, infos["f64acc"].reason


def test_float32_matmul_accumulates_in_float64():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((64, 4096), dtype=np.float32)
    b = rng.standard_normal((4096, 64), dtype=np.float32)
    got = F64AccOps("float32").matmul(a, b)
    expected = (a.astype(np.float64) @ b.astype(np.float64)).astype(np.float32)
    assert got.dtype == np.float32 and got.shape == (64, 64)
    np.testing.assert_array_equal(got, expected)
    assert np.any(got != a @ b), "float64 accumulation changed no element of a float32 product"


def test_get_backend_by_name():
    ops = simplenn.get_backend("f64acc", "float32")
    assert isinstance(ops, F64AccOps)
    assert ops.name == "f64acc"
