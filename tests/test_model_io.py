"""Model files: round trip, and every kind of damage gives one clear ModelFileError
naming the file (and exit status 1 with one line from the commands that read models)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import simplenn
from simplenn.errors import ModelFileError
from simplenn.io.models import FORMAT_VERSION, load_model, read_model_file, save_model

ROOT = Path(__file__).resolve().parents[1]
UNPICKLED: list[str] = []


def _mark_unpickled(tag: str) -> str:
    UNPICKLED.append(tag)
    return tag


class Booby:
    """Unpickling this records it: proves the loader never unpickles."""

    def __reduce__(self):
        return (_mark_unpickled, ("unpickled!",))


def _net(dtype="float32"):
    return simplenn.TwoLayerNet(784, 8, 10, backend="numpy", dtype=dtype, seed=1)


def _archive(path: Path, meta: dict | None, **arrays) -> Path:
    """Write an .npz like save_model would, with chosen metadata and arrays."""
    if meta is not None:
        arrays["metadata"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)
    return path


def _valid(path: Path, dtype="float32") -> tuple[dict, dict]:
    save_model(_net(dtype), path)
    return read_model_file(path)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_round_trip(tmp_path, dtype):
    net = _net(dtype)
    path = save_model(net, tmp_path / "m.npz", metadata={"note": "hi"})
    back = load_model(path)
    assert back.dtype == np.dtype(dtype) and back.metadata["note"] == "hi"
    for k, v in net.parameters().items():
        np.testing.assert_array_equal(back.parameters()[k], v)


def test_save_into_missing_directory(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        save_model(_net(), tmp_path / "nope" / "m.npz")


def _damaged_cases(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, the phrase its error must contain)."""
    good = save_model(_net(), tmp_path / "good.npz")
    params, meta = read_model_file(good)
    data = good.read_bytes()
    cases: dict[str, tuple[Path, str]] = {}

    def put(name, content: bytes, phrase):
        p = tmp_path / f"{name}.npz"
        p.write_bytes(content)
        cases[name] = (p, phrase)

    put("empty", b"", "is empty")
    put("text", b"W1,b1\n1,2\n", "not a simplenn model")
    put("truncated-half", data[: len(data) // 2], "damaged or truncated")
    put("truncated-end", data[:-10], "damaged or truncated")
    cases["missing-array"] = (
        _archive(tmp_path / "missing.npz", meta, **{k: v for k, v in params.items() if k != "W2"}),
        "missing the arrays W2",
    )
    cases["wrong-shape"] = (
        _archive(tmp_path / "shape.npz", meta, **{**params, "b1": np.zeros(9, np.float32)}),
        "b1 has shape (9,), expected (8,)",
    )
    cases["wrong-dtype"] = (
        _archive(tmp_path / "dtype.npz", meta, **{**params, "W2": params["W2"].astype(np.int32)}),
        "W2 has dtype int32, expected float32",
    )
    cases["object-array"] = (
        _archive(
            tmp_path / "object.npz",
            meta,
            **{**params, "b2": np.array([Booby()] * 10, dtype=object)},
        ),
        "refuses to unpickle",
    )
    cases["object-metadata"] = (
        _archive(
            tmp_path / "objmeta.npz", None, metadata=np.array(Booby(), dtype=object), **params
        ),
        "refuses to unpickle",
    )
    cases["newer-version"] = (
        _archive(tmp_path / "newer.npz", {**meta, "format_version": FORMAT_VERSION + 1}, **params),
        "newer than this simplenn reads",
    )
    cases["no-metadata"] = (_archive(tmp_path / "nometa.npz", None, **params), "no metadata")
    cases["bad-metadata"] = (
        _archive(tmp_path / "badmeta.npz", None, metadata=np.array("{not json"), **params),
        "unreadable metadata",
    )
    cases["bad-size"] = (
        _archive(tmp_path / "badsize.npz", {**meta, "n_hidden": "8"}, **params),
        "invalid n_hidden",
    )
    cases["nan"] = (
        _archive(tmp_path / "nan.npz", meta, **{**params, "b1": np.full(8, np.nan, np.float32)}),
        "b1 holds NaN",
    )
    with zipfile.ZipFile(tmp_path / "notnpy.npz", "w") as zf:
        zf.writestr("README.txt", "hello")
    cases["not-npy-member"] = (tmp_path / "notnpy.npz", "not a .npy array")
    # a forged header claiming a huge array must be refused before any allocation
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "<f4", "fortran_order": False, "shape": (10**6, 10**6)}
    )
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as zf:
        zf.writestr("W1.npy", buf.getvalue())
    cases["forged-huge"] = (tmp_path / "huge.npz", "claims")
    cases["directory"] = (tmp_path, "is a directory")
    cases["missing-file"] = (tmp_path / "absent.npz", "does not exist")
    return cases


CASE_NAMES = [
    "empty",
    "text",
    "truncated-half",
    "truncated-end",
    "missing-array",
    "wrong-shape",
    "wrong-dtype",
    "object-array",
    "object-metadata",
    "newer-version",
    "no-metadata",
    "bad-metadata",
    "bad-size",
    "nan",
    "not-npy-member",
    "forged-huge",
    "directory",
    "missing-file",
]


@pytest.mark.parametrize("case", CASE_NAMES)
def test_damaged_model_file(tmp_path, case):
    path, phrase = _damaged_cases(tmp_path)[case]
    UNPICKLED.clear()
    with pytest.raises(ModelFileError) as info:
        load_model(path)
    assert phrase in str(info.value)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)
    assert UNPICKLED == []


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


@pytest.mark.parametrize("command", ["evaluate", "predict"])
@pytest.mark.parametrize(
    "case", ["text", "truncated-half", "object-array", "newer-version", "wrong-shape"]
)
def test_commands_refuse_damaged_models_with_one_line(tmp_path, command, case):
    if command == "predict":
        pytest.importorskip("PIL", reason="predict needs Pillow (pip install Pillow)")
    path, phrase = _damaged_cases(tmp_path)[case]
    image = tmp_path / "digit.png"
    image.write_bytes(b"")  # never read: the model is checked first
    args = [str(path)] + ([str(image)] if command == "predict" else [])
    r = subprocess.run(
        [sys.executable, "-m", f"simplenn.{command}", *args],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and phrase in lines[0] and str(path) in lines[0]
    assert lines[0].startswith(f"python -m simplenn.{command}: error: ")


@pytest.mark.parametrize(
    "method",
    [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA, zipfile.ZIP_DEFLATED],
    ids=["bzip2", "lzma", "deflate"],
)
def test_damaged_compressed_member_is_a_model_file_error(tmp_path, method):
    """A member compressed with bzip2 / LZMA / deflate whose data is damaged (found by
    the fuzz test: bz2 raises OSError "Invalid data stream")."""
    good = tmp_path / "good.npz"
    save_model(simplenn.TwoLayerNet(4, 3, 2, backend="numpy"), good)
    buffer = io.BytesIO()
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(buffer, "w", compression=method) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    data = bytearray(buffer.getvalue())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        first = zf.infolist()[0]
    start = first.header_offset + 30 + len(first.filename) + len(first.extra)
    for i in range(start + 8, start + first.compress_size - 2):  # keep any stream header
        data[i] ^= 0x5A
    bad = tmp_path / "bad.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="damaged or truncated"):
        read_model_file(bad)
