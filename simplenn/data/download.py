"""Download the MNIST IDX files from public mirrors, verified by sha256.

Not needed for ordinary use: the package ships MNIST (see :func:`simplenn.data.datasets.load_mnist`).
This module exists to fetch a fresh copy into a cache directory, e.g. to check the bundled
one. Each file is downloaded as ``NAME.gz``, decompressed in memory, verified against the
sha256 of the uncompressed bytes, and only then written (atomically) to the destination.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import re
import zlib
from pathlib import Path
from typing import Sequence
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from tqdm import tqdm

from ..errors import DownloadError
from ..io.atomic import atomic_write_bytes
from .datasets import MNIST_SHA256

#: Base URLs tried in order; each serves ``<base>NAME.gz``.
MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

_CHUNK = 1 << 16
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_NO_DOWNLOAD_HINT = "The bundled copy of MNIST needs no download: use simplenn.load_mnist()."


class _MirrorFailure(Exception):
    """One mirror failed; the message says why (internal, never escapes)."""


def default_cache_dir() -> Path:
    """Where downloads go by default.

    ``$SIMPLENN_DATA_DIR`` if set, else ``$XDG_CACHE_HOME/simplenn/mnist``, else
    ``~/.cache/simplenn/mnist``.
    """
    explicit = os.environ.get("SIMPLENN_DATA_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "simplenn" / "mnist"


def _gunzip_and_hash(raw: bytes) -> str:
    """sha256 hex of the decompressed ``raw``; raises ValueError when it is not valid gzip."""
    try:
        return hashlib.sha256(gzip.decompress(raw)).hexdigest()
    except EOFError:
        raise ValueError("truncated gzip stream") from None
    except (OSError, zlib.error) as exc:
        raise ValueError(f"not a valid gzip file ({exc})") from None


def _fetch_bytes(url: str, desc: str, timeout: float, progress: bool) -> bytes:
    """GET ``url`` completely; raises :class:`_MirrorFailure` saying why it failed."""
    try:
        with urlopen(Request(url, headers={"User-Agent": "simplenn"}), timeout=timeout) as resp:
            length_txt = resp.headers.get("Content-Length")
            length = int(length_txt) if length_txt and length_txt.isdigit() else None
            chunks: list[bytes] = []
            received = 0
            with tqdm(
                total=length,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=desc,
                disable=not progress,
                leave=False,
            ) as bar:
                while True:
                    chunk = resp.read(_CHUNK)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except HTTPError as exc:
        raise _MirrorFailure(f"HTTP {exc.code} {exc.reason}") from None
    except http.client.IncompleteRead as exc:
        raise _MirrorFailure(
            f"truncated response: connection closed after {len(exc.partial)} "
            "more bytes, before the announced Content-Length"
        ) from None
    except URLError as exc:
        raise _MirrorFailure(f"connection failed ({exc.reason})") from None
    except TimeoutError:
        raise _MirrorFailure(f"timed out after {timeout:g} s") from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise _MirrorFailure(f"{type(exc).__name__}: {exc}") from None
    if length is not None and received != length:
        raise _MirrorFailure(f"truncated response: got {received} of {length} bytes")
    return b"".join(chunks)


def fetch_file(
    name: str,
    sha256: str,
    *,
    mirrors: Sequence[str] = MIRRORS,
    dest_dir: str | os.PathLike[str] | None = None,
    timeout: float = 30.0,
    progress: bool = True,
) -> Path:
    """Download ``NAME.gz`` into ``dest_dir`` and return its path.

    Args:
        name: the uncompressed file name, e.g. ``"train-images-idx3-ubyte"`` (a trailing
            ``.gz`` is ignored).
        sha256: hex sha256 of the *decompressed* file.
        mirrors: base URLs tried in order; the file is fetched from ``<base>NAME.gz``.
        dest_dir: target directory (created if needed); default :func:`default_cache_dir`.
        timeout: socket timeout in seconds for each mirror.
        progress: show a tqdm progress bar over the bytes received.

    A file already at the destination with the right checksum is returned without any
    network access. A mirror that answers with an HTTP error, fails to connect, times out,
    sends a truncated response, invalid gzip or the wrong content is skipped. The file is
    written atomically, so the destination never holds a partial download.

    Raises:
        DownloadError: every mirror failed (the message lists each URL and why), or the
            destination cannot be written.
        ValueError: ``sha256`` is not 64 hex digits.
    """
    base = name[:-3] if name.endswith(".gz") else name
    expected = sha256.strip().lower()
    if not _SHA256_RE.fullmatch(expected):
        raise ValueError(f"sha256 for {base} must be 64 hex digits, got {sha256!r}")
    directory = Path(dest_dir) if dest_dir is not None else default_cache_dir()
    dest = directory / f"{base}.gz"

    if dest.is_file():
        try:
            if _gunzip_and_hash(dest.read_bytes()) == expected:
                return dest
        except (OSError, ValueError):
            pass  # damaged or unreadable: download it again and replace it

    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(
            f"{directory}: cannot create the download directory ({exc.strerror or exc})"
        ) from None

    failures: list[str] = []
    for mirror in mirrors:
        url = mirror if mirror.endswith("/") else mirror + "/"
        url += f"{base}.gz"
        try:
            raw = _fetch_bytes(url, f"{base}.gz", timeout, progress)
            try:
                got = _gunzip_and_hash(raw)
            except ValueError as exc:
                raise _MirrorFailure(str(exc)) from None
            if got != expected:
                raise _MirrorFailure(
                    f"sha256 mismatch: expected {expected}, got {got} (corrupted or different file)"
                )
        except _MirrorFailure as exc:
            failures.append(f"  - {url}: {exc}")
            continue
        try:
            atomic_write_bytes(dest, raw)
        except OSError as exc:
            raise DownloadError(
                f"{dest}: downloaded from {url} but cannot write it ({exc.strerror or exc})"
            ) from None
        return dest

    tried = "\n".join(failures) if failures else "  (no mirrors were given)"
    raise DownloadError(
        f"could not download {base}.gz; every mirror failed:\n{tried}\n{_NO_DOWNLOAD_HINT}"
    )


def download_mnist(
    dest_dir: str | os.PathLike[str] | None = None,
    *,
    mirrors: Sequence[str] = MIRRORS,
    timeout: float = 30.0,
    progress: bool = True,
) -> Path:
    """Fetch the four standard MNIST files (see :func:`fetch_file`) and return the directory.

    The result can be read with :func:`simplenn.data.datasets.load_idx_dataset`, e.g.
    ``load_idx_dataset(download_mnist(), checksums=MNIST_SHA256)``.

    Raises:
        DownloadError: a file could not be fetched from any mirror.
    """
    directory = Path(dest_dir) if dest_dir is not None else default_cache_dir()
    for name, digest in MNIST_SHA256.items():
        fetch_file(
            name, digest, mirrors=mirrors, dest_dir=directory, timeout=timeout, progress=progress
        )
    return directory
