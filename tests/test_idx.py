"""Tests for simplenn.data.idx: round trips, every kind of damage, and fuzzing of parse_idx."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simplenn.data.idx import encode_idx, parse_idx, read_idx, write_idx
from simplenn.errors import DataError

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


def _sample(dtype: type, shape: tuple[int, ...]) -> np.ndarray:
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    if info is not None:
        return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 3, 4), (0, 7)])
def test_round_trip(tmp_path, dtype, suffix, shape):
    arr = _sample(dtype, shape)
    path = tmp_path / f"data-idx{suffix}"
    write_idx(path, arr)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype)
    assert back.dtype.isnative
    assert back.shape == shape
    assert back.flags.c_contiguous and back.flags.writeable and back.flags.owndata
    np.testing.assert_array_equal(back, arr)
    if suffix == ".gz":
        assert path.read_bytes()[:2] == b"\x1f\x8b"
    else:
        assert path.read_bytes()[:4] == bytes([0, 0, encode_idx(arr)[2], len(shape)])
    assert not [p for p in tmp_path.iterdir() if p != path], "write_idx left a temporary file"


def test_big_endian_on_disk(tmp_path):
    path = tmp_path / "x.idx"
    write_idx(path, np.array([1, 258], dtype=np.int16))
    assert path.read_bytes() == b"\x00\x00\x0b\x01\x00\x00\x00\x02\x00\x01\x01\x02"


def test_accepts_non_native_and_noncontiguous_input(tmp_path):
    arr = np.arange(12, dtype=">i4").reshape(3, 4).T
    path = tmp_path / "t.idx"
    write_idx(path, arr)
    np.testing.assert_array_equal(read_idx(path), arr)


def test_write_rejects_unsupported(tmp_path):
    with pytest.raises(DataError, match=r"bad\.idx.*dtype int64"):
        write_idx(tmp_path / "bad.idx", np.zeros(3, dtype=np.int64))
    with pytest.raises(DataError, match=r"scalar\.idx.*dimensions"):
        write_idx(tmp_path / "scalar.idx", np.array(5, dtype=np.uint8))
    assert list(tmp_path.iterdir()) == []


def _header(code: int, dims: tuple[int, ...]) -> bytes:
    return struct.pack(f">BBBB{len(dims)}I", 0, 0, code, len(dims), *dims)


VALID = _header(0x08, (2, 3)) + bytes(range(6))

DAMAGE = [
    ("bad-magic", b"\x01\x00" + VALID[2:], "bad magic"),
    ("gzip-as-plain", gzip.compress(VALID), "gzip-compressed"),
    ("bad-type", b"\x00\x00\x07\x02" + VALID[4:], "unknown IDX type code 0x07"),
    ("ndim0", b"\x00\x00\x08\x00", "number of dimensions is 0"),
    ("short-header", b"\x00\x00", "header truncated"),
    ("dims-truncated", _header(0x08, (2, 3))[:9], "header truncated"),
    ("payload-truncated", VALID[:-2], "truncated: expected 6 bytes of data, found 4"),
    ("trailing", VALID + b"\x00\x01", "trailing bytes"),
    (
        "int16-odd",
        _header(0x0B, (3,)) + b"\x00" * 5,
        "truncated: expected 6 bytes of data, found 5",
    ),
    ("empty", b"", "empty"),
]


@pytest.mark.parametrize("fname,data,phrase", DAMAGE, ids=[d[0] for d in DAMAGE])
def test_damage_plain(tmp_path, fname, data, phrase):
    path = tmp_path / f"{fname}.idx"
    path.write_bytes(data)
    with pytest.raises(DataError) as info:
        read_idx(path)
    assert str(path) in str(info.value)
    assert phrase in str(info.value)


@pytest.mark.parametrize("fname,data,phrase", DAMAGE[2:], ids=[d[0] for d in DAMAGE[2:]])
def test_damage_inside_gzip(tmp_path, fname, data, phrase):
    path = tmp_path / f"{fname}.idx.gz"
    path.write_bytes(gzip.compress(data))
    with pytest.raises(DataError) as info:
        read_idx(path)
    assert str(path) in str(info.value) and phrase in str(info.value)


def test_truncated_gzip(tmp_path):
    path = tmp_path / "cut.idx.gz"
    full = gzip.compress(_header(0x08, (1000,)) + bytes(1000))
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(DataError, match="truncated gzip") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_not_gzip_despite_name(tmp_path):
    path = tmp_path / "plain.idx.gz"
    path.write_bytes(VALID)
    with pytest.raises(DataError, match="not a valid gzip file") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_empty_gz_file(tmp_path):
    path = tmp_path / "empty.idx.gz"
    path.write_bytes(b"")
    with pytest.raises(DataError, match="empty") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_nonexistent_file(tmp_path):
    path = tmp_path / "nope.idx"
    with pytest.raises(DataError, match="not found") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(DataError, match="directory"):
        read_idx(tmp_path)


def test_huge_zero_size_dims():
    data = _header(0x08, (0, 2**32 - 1, 2**32 - 1, 2**32 - 1))
    with pytest.raises(DataError, match="too large"):
        parse_idx(data, "huge.idx")


def _check_parse(data: bytes) -> None:
    try:
        arr = parse_idx(data, "fuzz.idx")
    except DataError as exc:
        assert str(exc).startswith("fuzz.idx: ")
    else:
        assert isinstance(arr, np.ndarray)
        assert arr.dtype.isnative and arr.flags.c_contiguous


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_fuzz_arbitrary_bytes(data):
    _check_parse(data)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E]),
    st.lists(st.integers(0, 4), min_size=1, max_size=4),
    st.data(),
)
def test_fuzz_mutated_valid_files(code, dims, draw):
    itemsize = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}[code]
    n = int(np.prod(dims)) * itemsize
    data = bytearray(_header(code, tuple(dims)) + draw.draw(st.binary(min_size=n, max_size=n)))
    _check_parse(bytes(data))  # valid file: must parse
    assert parse_idx(bytes(data), "ok.idx").shape == tuple(dims)
    action = draw.draw(st.sampled_from(["truncate", "flip", "append", "dims"]))
    if action == "truncate":
        data = data[: draw.draw(st.integers(0, len(data)))]
    elif action == "flip":
        i = draw.draw(st.integers(0, len(data) - 1))
        data[i] = draw.draw(st.integers(0, 255))
    elif action == "append":
        data += draw.draw(st.binary(min_size=1, max_size=16))
    else:
        i = draw.draw(st.integers(0, len(dims) - 1))
        data[4 + 4 * i : 8 + 4 * i] = struct.pack(">I", draw.draw(st.integers(0, 2**32 - 1)))
    _check_parse(bytes(data))


def test_parse_without_copy_gives_read_only_view():
    data = _header(0x08, (2, 3)) + bytes(range(6))
    view = parse_idx(data, "v.idx", copy=False)
    assert view.shape == (2, 3) and not view.flags.writeable and view.flags.c_contiguous
    assert view.tolist() == [[0, 1, 2], [3, 4, 5]]
    wide = parse_idx(_header(0x0B, (2,)) + b"\x00\x01\x01\x00", "w.idx", copy=False)
    assert wide.tolist() == [1, 256] and wide.dtype.isnative and wide.flags.writeable  # copied
    assert parse_idx(_header(0x08, (0, 3)), "e.idx", copy=False).shape == (0, 3)
