"""docs/writing-a-backend.md: its worked example, a backend on Dask's lazy arrays
without DLPack, passes the conformance kit's checks of the ops and the gradients and
trains as the numpy backend does; without its to_numpy the kit names the op."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import simplenn
from simplenn.backends import probe_backend, registry
from simplenn.testing import check_backend, run_checks

pytest.importorskip(
    "dask.array",
    reason="dask is not installed (the test extra has it: pip install '.[test]' from the checkout)",
)

DOC = Path(__file__).resolve().parents[1] / "docs" / "writing-a-backend.md"


@pytest.fixture
def fresh_registry(monkeypatch):
    """The registry as it is, restored after the test."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    probe_backend.cache_clear()
    yield
    probe_backend.cache_clear()


def _worked_example() -> dict:
    """Run the page's Python example (it registers backend ``dask``); its names."""
    code = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)[0]
    assert "class DaskOps(Ops)" in code
    namespace: dict = {}
    exec(compile(code, str(DOC), "exec"), namespace)  # noqa: S102 -- our own docs
    return namespace


def test_the_worked_example_passes_the_kit_and_trains_like_numpy(fresh_registry):
    example = _worked_example()
    quick = ("ops", "images", "gradients", "optimizers", "inputs_unchanged")
    results = list(run_checks("dask", ("float64",), quick))
    assert [r.status for r in results] == ["passed"] * len(quick), [r.message for r in results]

    train = simplenn.load_mnist()[0][:256]
    nets = {}
    for name in ("dask", "numpy"):
        nets[name] = simplenn.TwoLayerNet(784, 16, 10, backend=name, dtype="float64", seed=3)
        simplenn.fit(nets[name], train, epochs=1, batch_size=64, lr=0.1, interruptible=False)
    for key, value in nets["numpy"].parameters().items():
        np.testing.assert_allclose(nets["dask"].parameters()[key], value, rtol=1e-9, atol=1e-12)
    assert isinstance(example["net"].ops, example["DaskOps"])


def test_without_to_numpy_the_kit_names_the_op_and_the_fix(fresh_registry):
    example = _worked_example()

    class WithoutToNumpy(example["Ops"]):  # the generic to_numpy: np.from_dlpack
        xp = example["dask_xp"]

    registry.register("dask-bare", WithoutToNumpy, priority=-1)
    with pytest.raises(AssertionError) as failure:
        check_backend("dask-bare", ("float64",))
    message = str(failure.value)
    assert "\n" not in message and "op to_numpy raised AttributeError" in message, message
    assert "__dlpack__" in message and "must override Ops.to_numpy" in message, message
