"""ONNX export (:func:`simplenn.export_onnx`, ``python -m simplenn.export``): the exported
graph, run by onnxruntime, computes the network's probabilities and labels."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import simplenn
from simplenn._optional import MissingDependencyError
from simplenn.cli.export import main
from simplenn.io.checkpoints import save_checkpoint
from simplenn.testing import assert_close

ROOT = Path(__file__).resolve().parents[1]
PROG = "python -m simplenn.export"


@pytest.fixture
def ort():
    """onnxruntime (and onnx), or a skip saying how to install them."""
    pytest.importorskip("onnx", reason="ONNX export needs onnx: pip install onnx onnxruntime")
    return pytest.importorskip(
        "onnxruntime",
        reason="running exported models needs onnxruntime: pip install onnx onnxruntime",
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A float32 784 -> 32 -> 10 net trained 1 epoch on 10,000 MNIST images, its model
    file, a checkpoint of the same run and the 10,000 uint8 test images."""
    train, test = simplenn.load_mnist()
    net = simplenn.TwoLayerNet(784, 32, 10, backend="numpy", seed=0)
    states = []
    simplenn.fit(
        net,
        (train.X[:10000], train.y[:10000]),
        epochs=1,
        eval_train=False,
        interruptible=False,
        on_checkpoint=states.append,
    )
    d = tmp_path_factory.mktemp("onnx")
    model = simplenn.save_model(net, d / "model.npz")
    checkpoint = save_checkpoint(d / "checkpoint.npz", states[-1])
    return net, model, checkpoint, test.X


def _run(session, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    name = "pixels" if X.dtype == np.uint8 else "features"
    probabilities, label = session.run(["probabilities", "label"], {name: X})
    return probabilities, label


def _session(ort, path: Path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_uint8_export_matches_the_network_on_all_test_images(trained, ort, tmp_path):
    import onnx

    net, _, _, X = trained
    assert X.shape == (10000, 784) and X.dtype == np.uint8
    path = simplenn.export_onnx(net, tmp_path / "net.onnx")
    assert path == tmp_path / "net.onnx"
    onnx.checker.check_model(str(path), full_check=True)
    session = _session(ort, path)
    (inp,) = session.get_inputs()
    assert (inp.name, inp.type, inp.shape[1]) == ("pixels", "tensor(uint8)", 784)
    assert [(o.name, o.type) for o in session.get_outputs()] == [
        ("probabilities", "tensor(float)"),
        ("label", "tensor(int64)"),
    ]
    probabilities, label = _run(session, X)
    assert probabilities.shape == (10000, 10) and probabilities.dtype == np.float32
    assert label.shape == (10000,) and label.dtype == np.int64
    assert_close("onnxruntime", "probabilities", probabilities, net.predict_proba(X), "float32")
    np.testing.assert_array_equal(label, net.predict(X))


def test_any_batch_size_runs(trained, ort, tmp_path):
    net, _, _, X = trained
    session = _session(ort, simplenn.export_onnx(net, tmp_path / "net.onnx"))
    for n in (1, 3):
        probabilities, label = _run(session, X[:n])
        assert probabilities.shape == (n, 10) and label.shape == (n,)
        np.testing.assert_array_equal(label, net.predict(X[:n]))


def test_float_inputs_take_float32_features_as_they_are(trained, ort, tmp_path):
    net, _, _, X = trained
    features = X.astype(np.float32) / np.float32(255)
    path = simplenn.export_onnx(net, tmp_path / "float.onnx", inputs="float")
    session = _session(ort, path)
    assert (session.get_inputs()[0].name, session.get_inputs()[0].type) == (
        "features",
        "tensor(float)",
    )
    probabilities, label = _run(session, features)
    assert_close(
        "onnxruntime", "probabilities", probabilities, net.predict_proba(features), "float32"
    )
    np.testing.assert_array_equal(label, net.predict(features))
    with pytest.raises(Exception, match="(?i)type"):
        session.run(None, {"features": X})


def test_a_float64_net_exports_float32_weights(trained, ort, tmp_path):
    import onnx
    from onnx import numpy_helper

    net32, _, _, X = trained
    net = simplenn.TwoLayerNet(784, 32, 10, backend="numpy", dtype="float64")
    net.set_parameters({k: v.astype(np.float64) for k, v in net32.parameters().items()})
    path = simplenn.export_onnx(net, tmp_path / "net64.onnx")
    model = onnx.load(str(path))
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert {k: w.dtype for k, w in weights.items()} == dict.fromkeys(weights, np.float32)
    probabilities, label = _run(_session(ort, path), X)
    assert_close("onnxruntime", "probabilities", probabilities, net.predict_proba(X), "float32")
    np.testing.assert_array_equal(label, net.predict(X))


def test_bad_arguments_are_one_line_errors(trained, tmp_path):
    net, *_ = trained
    with pytest.raises(ValueError, match=r"^inputs must be 'uint8' .* or 'float' .*, not 'int8'$"):
        simplenn.export_onnx(net, tmp_path / "x.onnx", inputs="int8")
    with pytest.raises(simplenn.ModelFileError, match=r"directory .*absent does not exist$"):
        simplenn.export_onnx(net, tmp_path / "absent" / "x.onnx")
    with pytest.raises(simplenn.ModelFileError, match=r"it is a directory$"):
        simplenn.export_onnx(net, tmp_path)
    with pytest.raises(TypeError, match="net must be a TwoLayerNet"):
        simplenn.export_onnx(net.parameters(), tmp_path / "x.onnx")
    assert list(tmp_path.iterdir()) == []


def test_missing_onnx_names_what_to_install(trained, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # makes `import onnx` fail
    net, *_ = trained
    with pytest.raises(MissingDependencyError) as info:
        simplenn.export_onnx(net, tmp_path / "x.onnx")
    message = str(info.value)
    assert "pip install onnx onnxruntime" in message and "pip install '.[onnx]'" in message
    assert "simplenn[" not in message and "\n" not in message
    assert not (tmp_path / "x.onnx").exists()


def test_import_simplenn_does_not_import_onnx():
    code = (
        "import sys, simplenn; simplenn.export_onnx; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('onnx', 'onnxruntime')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert result.returncode == 0, f"import simplenn imported {result.stdout.strip()}"


def test_cli_exports_a_model_and_prints_one_line(trained, ort, tmp_path):
    net, model, _, X = trained
    out = tmp_path / "net.onnx"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run(
        [sys.executable, "-m", "simplenn.export", str(model), str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"wrote {out}: ") and len(r.stdout.splitlines()) == 1
    assert r.stderr == ""
    probabilities, label = _run(_session(ort, out), X[:500])
    assert_close(
        "onnxruntime", "probabilities", probabilities, net.predict_proba(X[:500]), "float32"
    )
    np.testing.assert_array_equal(label, net.predict(X[:500]))


def test_cli_float_inputs_and_checkpoints(trained, ort, tmp_path, capsys):
    _, _, checkpoint, X = trained
    out = tmp_path / "net.onnx"
    assert main([str(checkpoint), str(out), "--inputs", "float"]) == 0
    assert "(N, 784) float32" in capsys.readouterr().out
    features = X[:500].astype(np.float32) / np.float32(255)
    probabilities, _ = _run(_session(ort, out), features)
    expected = simplenn.load_model(checkpoint).predict_proba(features)
    assert_close("onnxruntime", "probabilities", probabilities, expected, "float32")


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "the following arguments are required: MODEL.npz, OUT.onnx"),
        (["model.npz"], "the following arguments are required: OUT.onnx"),
        (
            ["model.npz", "out.onnx", "--inputs", "int8"],
            "argument --inputs: invalid choice: 'int8'",
        ),
        (["model.npz", "out.onnx", "--opset", "9"], "unrecognized arguments: --opset 9"),
    ],
)
def test_cli_bad_arguments_exit_2_with_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith(f"{PROG}: error: ") and message in err


def test_cli_missing_or_bad_model_exits_1_with_one_line(trained, tmp_path, capsys):
    _, model, _, _ = trained
    absent = tmp_path / "absent.npz"
    assert main([str(absent), str(tmp_path / "out.onnx")]) == 1
    assert capsys.readouterr().err == f"{PROG}: error: model file {absent} does not exist\n"
    damaged = tmp_path / "damaged.npz"
    damaged.write_bytes(b"not a model")
    assert main([str(damaged), str(tmp_path / "out.onnx")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{PROG}: error: model file {damaged} ") and err.count("\n") == 1
    assert main([str(model), str(tmp_path / "absent" / "out.onnx")]) == 1
    err = capsys.readouterr().err
    assert (
        err.startswith(f"{PROG}: error: cannot write the ONNX model to ") and err.count("\n") == 1
    )
    assert not (tmp_path / "out.onnx").exists()
