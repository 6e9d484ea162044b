"""Read and write IDX files, the format the MNIST database is distributed in.

An IDX file is a header followed by the raw array data, all big-endian:

* two zero bytes (the "magic" prefix);
* one type-code byte: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32,
  0x0E float64;
* one byte with the number of dimensions ``ndim`` (at least 1);
* ``ndim`` unsigned 32-bit sizes;
* exactly ``product(sizes) * itemsize`` bytes of data, in row-major (C) order.

A file whose name ends in ``.gz`` is gzip-compressed. Every problem with a file is
reported as :class:`~simplenn.errors.DataError`, whose message names the file.
"""

from __future__ import annotations

import gzip
import math
import os
import stat
import struct
import zlib

import numpy as np

from ..errors import DataError
from ..io.atomic import atomic_write_bytes

PathLike = str | os.PathLike[str]

#: IDX type code -> big-endian numpy dtype of the data as stored in the file.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_TYPE_NAMES = {
    0x08: "uint8",
    0x09: "int8",
    0x0B: "int16",
    0x0C: "int32",
    0x0D: "float32",
    0x0E: "float64",
}
_VALID_CODES = ", ".join(f"0x{code:02X} {name}" for code, name in _TYPE_NAMES.items())
_MAX_DIM = 2**32 - 1


def _is_gzip_name(path: PathLike) -> bool:
    return os.fspath(path).endswith(".gz")


#: Bytes read beyond what an IDX header declares, to report trailing data exactly.
TRAILING_SLACK = 1 << 16
_RAW_CHUNK = 1 << 20


def _open_regular(name: str):
    """``name`` opened for binary reading; a :class:`DataError` when it is missing,
    unreadable or not a regular file (opening never blocks on a named pipe)."""
    from ..io.archive import file_kind

    try:
        mode = os.stat(name).st_mode
        if stat.S_ISDIR(mode):
            raise DataError(f"{name}: is a directory, expected an IDX file")
        if not stat.S_ISREG(mode):
            raise DataError(f"{name}: not a regular file ({file_kind(mode)}), expected an IDX file")
        fd = os.open(name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise DataError(f"{name}: file not found; check the path") from None
    except PermissionError:
        raise DataError(f"{name}: permission denied; make the file readable") from None
    except OSError as exc:
        raise DataError(f"{name}: cannot read the file ({exc.strerror or exc})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise DataError(f"{name}: not a regular file, expected an IDX file")
    return os.fdopen(fd, "rb")


class _Gunzip:
    """The decompressed bytes of a gzip file (one or more members), ``read(n)`` at a
    time: never more than asked for is inflated."""

    def __init__(self, fh, name: str) -> None:
        self.fh, self.name = fh, name
        self.d = zlib.decompressobj(wbits=31)
        self.tail = b""

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes, fewer only at the end of the last member; raises EOFError
        when the file ends inside a member, ``zlib.error`` for damaged data."""
        parts: list[bytes] = []
        while n > 0:
            if self.d.eof:  # what follows the member is in unused_data (the tail may repeat it)
                rest = self.d.unused_data
                rest += self.fh.read(max(0, 2 - len(rest)))
                if not rest:
                    break
                if rest[:2] != b"\x1f\x8b":
                    raise zlib.error("data after the end of the gzip stream")
                self.tail, self.d = rest, zlib.decompressobj(wbits=31)
            data = self.tail or self.fh.read(_RAW_CHUNK)
            out = self.d.decompress(data, n)
            self.tail = self.d.unconsumed_tail
            if out:
                parts.append(out)
                n -= len(out)
            elif not data and not self.d.eof:
                raise EOFError("truncated")
        return b"".join(parts)


def _declared_size(head: bytes) -> int | None:
    """The total size (header and data) an IDX file whose first bytes are ``head``
    declares, or None when ``head`` is not a complete valid header."""
    if len(head) < 4 or head[0] or head[1] or head[2] not in IDX_DTYPES or not head[3]:
        return None
    header_len = 4 + 4 * head[3]
    if len(head) < header_len:
        return None
    dims = struct.unpack_from(f">{head[3]}I", head, 4)
    return header_len + math.prod(dims) * IDX_DTYPES[head[2]].itemsize


def _trailing_error(name: str, head: bytes, found: int | None) -> DataError:
    """The error for data beyond what the header declares (``found``: the data's
    length where known, else more than :data:`TRAILING_SLACK` bytes too many)."""
    ndim = head[3]
    dims = struct.unpack_from(f">{ndim}I", head, 4)
    expected = math.prod(dims) * IDX_DTYPES[head[2]].itemsize
    shape = f"{'x'.join(map(str, dims))} {_TYPE_NAMES[head[2]]} array"
    if found is None:
        return DataError(
            f"{name}: more than {TRAILING_SLACK} trailing bytes after the data "
            f"(header says a {shape} of {expected} bytes); the file is damaged"
        )
    return DataError(
        f"{name}: {found - expected} trailing bytes after the data: expected "
        f"{expected} bytes of data, found {found} (header says a {shape})"
    )


def read_idx_bytes(path: PathLike) -> bytes | bytearray:
    """Return the (decompressed) bytes of the IDX file at ``path``.

    The file is gunzipped when its name ends in ``.gz`` and read as is otherwise; either
    way no more than the size its IDX header declares (plus :data:`TRAILING_SLACK`
    bytes) is read or inflated. Raises :class:`DataError` naming the file when it is
    missing, unreadable, not a regular file, not a valid/complete gzip stream, or holds
    more data than its header declares.
    """
    name = os.fspath(path)
    with _open_regular(name) as fh:
        size = os.fstat(fh.fileno()).st_size
        gz = _is_gzip_name(name)
        if gz and size == 0:
            raise DataError(f"{name}: file is empty (0 bytes), expected a gzip-compressed IDX file")
        try:
            return _read_bounded(_Gunzip(fh, name) if gz else fh, name, None if gz else size)
        except EOFError:
            raise DataError(
                f"{name}: truncated gzip stream (the file ends before the compressed data "
                "does); the file is incomplete: download or copy it again"
            ) from None
        except (OSError, zlib.error) as exc:
            if not gz:
                raise DataError(
                    f"{name}: cannot read the file ({getattr(exc, 'strerror', None) or exc})"
                ) from None
            raise DataError(
                f"{name}: not a valid gzip file ({exc}); the name ends in .gz, so the file must "
                "be gzip-compressed: rename it without .gz if it is a plain IDX file, or replace it"
            ) from None
        except MemoryError:
            raise DataError(f"{name}: not enough memory to read the file") from None


def _read_bounded(source, name: str, size: int | None) -> bytes | bytearray:
    """Read an IDX file's bytes from ``source`` (``size``: the file's length when it is
    not compressed), stopping at the size its header declares plus the slack."""
    head = source.read(4)
    if len(head) == 4 and head[3]:
        head += source.read(4 * head[3])
    declared = _declared_size(head)
    if declared is None:  # not an IDX header: parse_idx says what is wrong
        return head + source.read(TRAILING_SLACK)
    if size is not None and size > declared + TRAILING_SLACK:
        raise _trailing_error(name, head, size - len(head))
    data = bytearray(head)
    limit = declared + TRAILING_SLACK
    while len(data) < limit:
        chunk = source.read(min(_RAW_CHUNK, limit - len(data)))
        if not chunk:
            break
        data += chunk
    else:
        if source.read(1):
            raise _trailing_error(name, head, None)
    return data


def parse_idx(data: bytes | bytearray | memoryview, name: str, *, copy: bool = True) -> np.ndarray:
    """Parse the uncompressed bytes of an IDX file.

    Args:
        data: the complete file contents (already decompressed).
        name: the file name, used in error messages only.
        copy: when False and the stored type is single-byte (uint8/int8), return a
            read-only view into ``data`` instead of a copy (saves time and memory for
            large files; the array keeps ``data`` alive).

    Returns:
        A C-contiguous, native-endian array with the file's shape and element type
        (uint8, int8, int16, int32, float32 or float64); owned and writable unless
        ``copy=False`` allowed a view.

    Raises:
        DataError: for any malformed input; the message starts with ``name``.
    """
    buf = memoryview(data).cast("B")
    size = len(buf)
    if size == 0:
        raise DataError(f"{name}: file is empty (0 bytes), expected an IDX file")
    if size < 4:
        raise DataError(
            f"{name}: header truncated: an IDX header needs at least 4 bytes "
            f"(2 zero bytes, a type code, the number of dimensions), found {size}"
        )
    if buf[0] != 0 or buf[1] != 0:
        hint = (
            " The data looks gzip-compressed: give the file a name ending in .gz."
            if buf[0] == 0x1F and buf[1] == 0x8B
            else " Is it really an IDX file?"
        )
        raise DataError(
            f"{name}: bad magic number 0x{bytes(buf[:4]).hex().upper()}: "
            f"the first two bytes of an IDX file must be zero.{hint}"
        )
    code, ndim = buf[2], buf[3]
    if code not in IDX_DTYPES:
        raise DataError(f"{name}: unknown IDX type code 0x{code:02X} (valid: {_VALID_CODES})")
    if ndim == 0:
        raise DataError(f"{name}: number of dimensions is 0 (ndim must be at least 1)")
    header_len = 4 + 4 * ndim
    if size < header_len:
        raise DataError(
            f"{name}: header truncated: {ndim} dimensions need a {header_len}-byte header, "
            f"but the file has only {size} bytes"
        )
    dims = struct.unpack_from(f">{ndim}I", buf, 4)
    stored = IDX_DTYPES[code]
    expected = math.prod(dims) * stored.itemsize
    found = size - header_len
    shape_txt = "x".join(map(str, dims))
    if found < expected:
        raise DataError(
            f"{name}: truncated: expected {expected} bytes of data, found {found} "
            f"(header says a {shape_txt} {_TYPE_NAMES[code]} array); the file is incomplete"
        )
    if found > expected:
        raise DataError(
            f"{name}: {found - expected} trailing bytes after the data: expected {expected} bytes "
            f"of data, found {found} (header says a {shape_txt} {_TYPE_NAMES[code]} array)"
        )
    native = stored.newbyteorder("=")
    if not copy and stored.itemsize == 1 and found > 0:
        view = np.frombuffer(buf, dtype=native, count=found, offset=header_len).reshape(dims)
        view.flags.writeable = False
        return view
    try:
        out = np.empty(dims, dtype=native)
    except (ValueError, MemoryError):
        raise DataError(f"{name}: dimensions {shape_txt} are too large for an array") from None
    if out.size:
        out[...] = np.frombuffer(buf, dtype=stored, count=out.size, offset=header_len).reshape(dims)
    return out


def read_idx(path: PathLike) -> np.ndarray:
    """Read an IDX file (gzip-compressed when the name ends in ``.gz``).

    Returns:
        An owned, writable, C-contiguous, native-endian array; see :func:`parse_idx`.

    Raises:
        DataError: the file is missing, unreadable, not valid gzip or not a valid IDX file.
    """
    return parse_idx(read_idx_bytes(path), os.fspath(path))


def _idx_type_code(dtype: np.dtype) -> int | None:
    for code, stored in IDX_DTYPES.items():
        if dtype.kind == stored.kind and dtype.itemsize == stored.itemsize:
            return code
    return None


def encode_idx(array: np.ndarray, name: str = "<array>") -> bytes:
    """Return the uncompressed IDX bytes of ``array``.

    ``array`` must have at least one dimension, every size below 2**32, and dtype uint8,
    int8, int16, int32, float32 or float64 (any byte order). Raises :class:`DataError`
    (naming ``name``) otherwise.
    """
    arr = np.asarray(array)
    code = _idx_type_code(arr.dtype)
    if code is None:
        raise DataError(
            f"{name}: cannot store dtype {arr.dtype} in an IDX file "
            f"(supported: uint8, int8, int16, int32, float32, float64); convert it with astype()"
        )
    if arr.ndim == 0 or arr.ndim > 255:
        raise DataError(f"{name}: IDX arrays need 1 to 255 dimensions, got {arr.ndim}")
    if any(d > _MAX_DIM for d in arr.shape):
        raise DataError(f"{name}: every IDX dimension must be below 2**32, got shape {arr.shape}")
    header = struct.pack(f">BBBB{arr.ndim}I", 0, 0, code, arr.ndim, *arr.shape)
    payload = np.ascontiguousarray(arr, dtype=IDX_DTYPES[code]).tobytes()
    return header + payload


def write_idx(path: PathLike, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file, gzip-compressed when the name ends in ``.gz``.

    The write is atomic (see :func:`atomic_write_bytes`). ``array`` must satisfy
    :func:`encode_idx`. Raises :class:`DataError` naming the file for an unsupported
    array or when the file cannot be written.
    """
    name = os.fspath(path)
    data = encode_idx(array, name)
    if _is_gzip_name(name):
        data = gzip.compress(data, compresslevel=6, mtime=0)
    try:
        atomic_write_bytes(name, data)
    except OSError as exc:
        raise DataError(f"{name}: cannot write the file ({exc.strerror or exc})") from None
