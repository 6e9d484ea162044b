"""Reading ``.npz`` archives with bounded memory and time.

:class:`NpzArchive` opens only regular files (a named pipe, ``/dev/zero`` or a
directory is refused before anything is read), checks the zip directory's size and
member count before :mod:`zipfile` parses it, and refuses members that are not
``.npy`` arrays, appear twice, are encrypted or use a compression it does not know.
Each member is decompressed a chunk at a time, never past the size its zip entry
declares, and its CRC is checked; a member's ``.npy`` header is parsed (objects are
refused, nothing is unpickled) before any of its data is read, and the caller decides
from it how many bytes the data may have. Every refusal is a
:class:`~simplenn.errors.ModelFileError` naming the file.
"""

from __future__ import annotations

import bz2
import lzma
import math
import os
import stat
import struct
import tokenize
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Self

import numpy as np

from ..errors import ModelFileError

#: Most members an archive may hold, and most bytes its zip directory may take.
MAX_MEMBERS = 256
MAX_DIRECTORY_BYTES = 1 << 20
#: Longest ``.npy`` header read.
MAX_HEADER_BYTES = 10_000
#: Compressed bytes read from the file at a time.
_CHUNK = 1 << 20
_END_RECORD = b"PK\x05\x06"
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")
_METHODS = {
    zipfile.ZIP_STORED: "stored",
    zipfile.ZIP_DEFLATED: "deflate",
    zipfile.ZIP_BZIP2: "bzip2",
    zipfile.ZIP_LZMA: "lzma",
}
# What the zip and .npy parsers and the decompressors raise on damaged input (an
# OSError is a decompressor's: bz2 says "Invalid data stream").
_DAMAGE = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    EOFError,
    KeyError,
    NotImplementedError,
    RuntimeError,
    zlib.error,
    lzma.LZMAError,
    OSError,
    struct.error,
    OverflowError,
    ValueError,
    TypeError,
    tokenize.TokenError,
)


@contextmanager
def _reported(where: str) -> Iterator[None]:
    """Turn what damaged input raises into one :class:`ModelFileError` naming ``where``."""
    try:
        yield
    except ModelFileError:
        raise
    except _DAMAGE as exc:
        raise ModelFileError(
            f"{where} is damaged or truncated ({type(exc).__name__}: {exc})"
        ) from None


def open_regular_file(path: Path, where: str) -> BinaryIO:
    """``path`` opened for reading in binary mode, refused (a :class:`ModelFileError`
    naming ``where``) when it is missing, unreadable or not a regular file; opening
    never blocks, even on a named pipe."""
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):
            raise ModelFileError(f"{where} is a directory, not a model file")
        if not stat.S_ISREG(mode):
            raise ModelFileError(f"{where} is not a regular file ({file_kind(mode)})")
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ModelFileError(f"{where} does not exist") from None
    except PermissionError:
        raise ModelFileError(f"{where} cannot be read: permission denied") from None
    except OSError as exc:
        raise ModelFileError(f"{where} cannot be read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced since the stat
        os.close(fd)
        raise ModelFileError(f"{where} is not a regular file")
    return os.fdopen(fd, "rb")


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words: ``a named pipe``, ``a character device`` ..."""
    for test, kind in (
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a directory"),
    ):
        if test(mode):
            return kind
    return "not a plain file"


@dataclass(frozen=True)
class NpyHeader:
    """A ``.npy`` member's header: ``shape``, ``dtype`` (as stored), ``fortran`` order,
    ``offset`` (the header's length in bytes) and ``nbytes`` (the data's length)."""

    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool
    offset: int

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


class NpzArchive:
    """An ``.npz`` file opened for bounded reading (a context manager).

    ``names`` lists the arrays (member names without ``.npy``) in the zip directory's
    order. Raises :class:`ModelFileError` naming ``where`` for a file that is not a
    regular file, not a zip archive, damaged, or whose directory is too large or holds
    anything but uniquely named ``.npy`` members.
    """

    def __init__(self, path: Path, where: str) -> None:
        self.path, self.where = path, where
        self._file = open_regular_file(path, where)
        try:
            with _reported(where):
                self._open()
        except BaseException:
            self._file.close()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    def _open(self) -> None:
        where, f = self.where, self._file
        self.size = os.fstat(f.fileno()).st_size
        if self.size == 0:
            raise ModelFileError(f"{where} is empty")
        if f.read(2) != b"PK":
            raise ModelFileError(f"{where} is not a simplenn model (.npz archive)")
        self._check_directory_size()
        f.seek(0)
        zf = zipfile.ZipFile(f)
        self._members: dict[str, zipfile.ZipInfo] = {}
        for info in zf.infolist():
            name = info.filename
            if not name.endswith(".npy") or info.is_dir():
                raise ModelFileError(f"{where} holds {name!r}, which is not a .npy array")
            if name[:-4] in self._members:
                raise ModelFileError(
                    f"{where} holds two members named {name!r}; a model file holds each array once"
                )
            if info.flag_bits & 0x1:
                raise ModelFileError(f"{where}: member {name!r} is encrypted")
            if info.compress_type not in _METHODS:
                raise ModelFileError(
                    f"{where}: member {name!r} is compressed with zip method "
                    f"{info.compress_type}, which simplenn does not read "
                    f"(it reads {', '.join(_METHODS.values())})"
                )
            self._members[name[:-4]] = info
        self.names = list(self._members)

    def _check_directory_size(self) -> None:
        """Refuse a zip directory with too many members or bytes before it is parsed."""
        f = self._file
        f.seek(max(0, self.size - (22 + 0xFFFF)))
        tail = f.read()
        at = tail.rfind(_END_RECORD)
        if at < 0 or len(tail) < at + 22:
            return  # no end record: zipfile reports the archive as damaged
        count, size = struct.unpack_from("<HL", tail, at + 10)
        if count > MAX_MEMBERS or size > MAX_DIRECTORY_BYTES:
            raise ModelFileError(
                f"{self.where}: the zip directory lists {count} members in "
                f"{size} bytes, more than a simplenn model file has "
                f"(at most {MAX_MEMBERS} members)"
            )

    def declared_size(self, name: str) -> int:
        """The uncompressed size the zip directory declares for array ``name``."""
        return self._members[name].file_size

    def header(self, name: str) -> NpyHeader:
        """Array ``name``'s ``.npy`` header, read without reading its data; objects
        (which would need unpickling) and invalid shapes are refused."""
        where = self.where
        with _reported(where):
            stream = _MemberStream(self._file, self._members[name], self)
            version = np.lib.format.read_magic(stream)
            if version == (1, 0):
                read = np.lib.format.read_array_header_1_0
            elif version == (2, 0):
                read = np.lib.format.read_array_header_2_0
            else:
                raise ModelFileError(
                    f"{where}: array {name!r} uses .npy format version "
                    f"{version[0]}.{version[1]}, which simplenn does not read"
                )
            shape, fortran, dtype = read(stream, max_header_size=MAX_HEADER_BYTES)
        if dtype.hasobject:
            raise ModelFileError(
                f"{where}: array {name!r} holds Python objects (dtype {dtype}); "
                f"simplenn refuses to unpickle them"
            )
        if not all(isinstance(s, int) and s >= 0 for s in shape):
            raise ModelFileError(f"{where}: array {name!r} has an invalid shape {shape}")
        return NpyHeader(tuple(shape), dtype, bool(fortran), stream.produced)

    def read(self, name: str, header: NpyHeader) -> np.ndarray:
        """Array ``name``'s data (as described by its ``header``), in native byte order.

        Reads exactly the bytes the header declares, which must be what the zip
        directory declares; the caller bounds ``header.nbytes`` beforehand.
        """
        info, where = self._members[name], self.where
        nbytes = header.nbytes
        if info.file_size != header.offset + nbytes:
            raise ModelFileError(
                f"{where}: array {name!r} is {info.file_size} bytes in the zip directory, but "
                f"its header declares {header.offset + nbytes}: the file is damaged"
            )
        try:
            data = bytearray(nbytes)
        except MemoryError:
            raise ModelFileError(
                f"{where}: not enough memory for array {name!r} ({nbytes} bytes)"
            ) from None
        with _reported(where):
            stream = _MemberStream(self._file, info, self)
            stream.skip(header.offset)
            view, filled = memoryview(data), 0
            while filled < nbytes:
                got = stream.readinto(view[filled:])
                if not got:
                    raise ModelFileError(
                        f"{where}: array {name!r} has {filled} bytes of data, "
                        f"expected {nbytes}: the file is damaged or truncated"
                    )
                filled += got
            stream.check_crc()
        array = np.frombuffer(data, dtype=header.dtype).reshape(
            header.shape, order="F" if header.fortran else "C"
        )
        return array.astype(header.dtype.newbyteorder("="), copy=False)


class _MemberStream:
    """The uncompressed bytes of one zip member, a file-like object whose ``read`` and
    ``readinto`` decompress only as much as asked and never past the member's declared
    size."""

    def __init__(self, f: BinaryIO, info: zipfile.ZipInfo, archive: NpzArchive) -> None:
        self._f, self._info, self._where = f, info, f"{archive.where}: member {info.filename!r}"
        f.seek(info.header_offset)
        local = f.read(_LOCAL_HEADER.size)
        if len(local) != _LOCAL_HEADER.size or local[:4] != b"PK\x03\x04":
            raise zipfile.BadZipFile(f"{self._where} has no valid local header")
        name_length, extra_length = _LOCAL_HEADER.unpack(local)[-2:]
        start = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
        if start + info.compress_size > archive.size:
            raise EOFError(f"{self._where} ends past the end of the file")
        f.seek(start)
        self._raw_left = info.compress_size
        self._left = info.file_size  # uncompressed bytes still to come
        self.produced, self._crc, self._tail = 0, 0, b""
        method = info.compress_type
        # bz2 and lzma keep the input they did not use; zlib hands it back (unconsumed_tail)
        self._keeps_input = method in (zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)
        if method == zipfile.ZIP_STORED:
            self._decompressor = None
        elif method == zipfile.ZIP_DEFLATED:
            self._decompressor = zlib.decompressobj(-15)
        elif method == zipfile.ZIP_BZIP2:
            self._decompressor = bz2.BZ2Decompressor()
        else:
            self._decompressor = self._lzma()

    def _raw(self, n: int) -> bytes:
        data = self._f.read(min(n, self._raw_left))
        self._raw_left -= len(data)
        return data

    def _lzma(self) -> lzma.LZMADecompressor:
        """Zip's LZMA: a 4-byte version and properties size, the LZMA1 properties
        (lc, lp, pb in one byte, then the dictionary size), then a raw LZMA1 stream."""
        head = self._raw(4)
        if len(head) < 4:
            raise EOFError(f"{self._where} ends inside its LZMA header")
        props = self._raw(struct.unpack_from("<H", head, 2)[0])
        if len(props) != 5:
            raise lzma.LZMAError(f"{self._where} has invalid LZMA properties")
        pb, rest = divmod(props[0], 45)
        lp, lc = divmod(rest, 9)
        filters = [
            {
                "id": lzma.FILTER_LZMA1,
                "dict_size": struct.unpack_from("<L", props, 1)[0],
                "lc": lc,
                "lp": lp,
                "pb": pb,
            }
        ]
        return lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=filters)

    def _next(self, n: int) -> bytes:
        """Up to ``n`` (>= 1) more uncompressed bytes; b"" at the end of the data."""
        d = self._decompressor
        if d is None:
            return self._raw(min(n, _CHUNK))
        while not d.eof:
            if self._keeps_input:
                data = self._raw(_CHUNK) if d.needs_input else b""
                if d.needs_input and not data:
                    return b""
            else:
                data = self._tail or self._raw(_CHUNK)
            out = d.decompress(data, n)
            if not self._keeps_input:
                self._tail = d.unconsumed_tail
                if not out and not data:
                    return b""
            if out:
                return out
        return b""

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (fewer only at the end of the member)."""
        if n < 0:
            raise ValueError("reading a whole member at once is not bounded")
        parts, want = [], min(n, self._left)
        while want > 0:
            out = self._next(want)
            if not out:
                break
            parts.append(out)
            want -= len(out)
        data = b"".join(parts)
        self._count(data)
        return data

    def readinto(self, buffer: memoryview) -> int:
        """Fill ``buffer`` with up to its length in bytes; the number read (0 at the end)."""
        out = self._next(min(len(buffer), self._left))
        buffer[: len(out)] = out
        self._count(out)
        return len(out)

    def skip(self, n: int) -> None:
        """Read and drop ``n`` bytes (counted in the CRC)."""
        while n > 0:
            got = len(self.read(min(n, _CHUNK)))
            if not got:
                raise EOFError(f"{self._where} is truncated")
            n -= got

    def _count(self, data: bytes) -> None:
        self.produced += len(data)
        self._left -= len(data)
        self._crc = zlib.crc32(data, self._crc)

    def check_crc(self) -> None:
        """After the whole member was read: its CRC must be the directory's."""
        if self._left == 0 and self._crc != self._info.CRC:
            raise zipfile.BadZipFile(f"{self._where} fails its CRC check")
