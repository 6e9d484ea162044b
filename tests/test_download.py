"""Tests for simplenn.data.download against a local HTTP server (no network needed)."""

from __future__ import annotations

import gzip
import hashlib
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from simplenn.data.datasets import MNIST_SHA256, STANDARD_FILES, load_idx_dataset
from simplenn.data.download import MIRRORS, default_cache_dir, download_mnist, fetch_file
from simplenn.data.idx import encode_idx
from simplenn.errors import DownloadError

NAME = "tiny-images-idx3-ubyte"
RAW = encode_idx(np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4))
GZ = gzip.compress(RAW)
SHA = hashlib.sha256(RAW).hexdigest()
OTHER_GZ = gzip.compress(encode_idx(np.zeros((2, 3, 4), np.uint8)))  # valid gzip, wrong content


class Server:
    """A local HTTP server; ``routes`` maps a path to ``(mode, body)``.

    Modes: ``"ok"`` serves the body; ``"404"`` answers Not Found; ``"truncate"`` announces a
    Content-Length larger than the body, sends half of it and closes; ``"hang"`` waits
    (until teardown) without answering.
    """

    def __init__(self) -> None:
        self.routes: dict[str, tuple[str, bytes]] = {}
        self.requests: list[str] = []
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                outer.requests.append(self.path)
                mode, body = outer.routes.get(self.path, ("404", b""))
                if mode == "404":
                    self.send_error(404, "Not Found")
                    return
                if mode == "hang":
                    outer.release.wait(5)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                if mode == "truncate":
                    self.send_header("Content-Length", str(len(body) + 1000))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def mirror(self, prefix: str) -> str:
        return f"{self.base}/{prefix}/"

    def serve(self, prefix: str, name: str, mode: str, body: bytes = b"") -> str:
        self.routes[f"/{prefix}/{name}"] = (mode, body)
        return self.mirror(prefix)

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def server():
    srv = Server()
    yield srv
    srv.close()


@pytest.fixture
def refused_mirror():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    return f"http://127.0.0.1:{port}/m/"


def _fetch(mirrors, dest, **kw):
    return fetch_file(NAME, SHA, mirrors=mirrors, dest_dir=dest, timeout=5, progress=False, **kw)


def test_good_mirror(server, tmp_path):
    good = server.serve("a", f"{NAME}.gz", "ok", GZ)
    dest = tmp_path / "cache" / "deep"  # created on demand
    path = _fetch([good], dest)
    assert path == dest / f"{NAME}.gz"
    assert path.read_bytes() == GZ
    assert hashlib.sha256(gzip.decompress(path.read_bytes())).hexdigest() == SHA
    assert sorted(p.name for p in dest.iterdir()) == [f"{NAME}.gz"]
    assert server.requests == [f"/a/{NAME}.gz"]


def test_mirror_without_trailing_slash(server, tmp_path):
    server.serve("a", f"{NAME}.gz", "ok", GZ)
    assert _fetch([f"{server.base}/a"], tmp_path).read_bytes() == GZ


@pytest.mark.parametrize(
    "mode,body,reason",
    [
        ("404", b"", "HTTP 404"),
        ("ok", OTHER_GZ, "sha256 mismatch"),
        ("ok", GZ[:-20], "truncated gzip"),
        ("ok", b"not gzip at all", "not a valid gzip file"),
        ("truncate", GZ, "truncated response"),
    ],
)
def test_bad_first_mirror_then_good(server, tmp_path, mode, body, reason):
    bad = server.serve("bad", f"{NAME}.gz", mode, body)
    with pytest.raises(DownloadError, match=reason):
        _fetch([bad], tmp_path)
    assert list(tmp_path.iterdir()) == []
    good = server.serve("good", f"{NAME}.gz", "ok", GZ)
    path = _fetch([bad, good], tmp_path)
    assert path.read_bytes() == GZ
    assert server.requests == [f"/bad/{NAME}.gz"] * 2 + [f"/good/{NAME}.gz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{NAME}.gz"]


def test_all_mirrors_fail(server, tmp_path, refused_mirror):
    mirrors = [
        server.serve("m404", f"{NAME}.gz", "404"),
        server.serve("corrupt", f"{NAME}.gz", "ok", OTHER_GZ),
        server.serve("trunc", f"{NAME}.gz", "truncate", GZ),
        server.serve("badgz", f"{NAME}.gz", "ok", GZ[: len(GZ) // 2]),
        refused_mirror,
    ]
    with pytest.raises(DownloadError) as info:
        _fetch(mirrors, tmp_path)
    msg = str(info.value)
    for mirror in mirrors:
        assert f"{mirror}{NAME}.gz" in msg
    for reason in (
        "HTTP 404",
        "sha256 mismatch",
        "truncated response",
        "truncated gzip",
        "connection failed",
    ):
        assert reason in msg
    assert "simplenn.load_mnist()" in msg
    assert list(tmp_path.iterdir()) == [], "a partial or temporary file was left behind"


def test_timeout_moves_on(server, tmp_path):
    slow = server.serve("slow", f"{NAME}.gz", "hang")
    good = server.serve("good", f"{NAME}.gz", "ok", GZ)
    path = fetch_file(
        NAME, SHA, mirrors=[slow, good], dest_dir=tmp_path, timeout=0.3, progress=False
    )
    assert path.read_bytes() == GZ


def test_no_mirrors(tmp_path):
    with pytest.raises(DownloadError, match="no mirrors"):
        _fetch([], tmp_path)


def test_existing_valid_file_reused(server, tmp_path):
    (tmp_path / f"{NAME}.gz").write_bytes(GZ)
    good = server.serve("a", f"{NAME}.gz", "ok", GZ)
    path = _fetch([good], tmp_path)
    assert path == tmp_path / f"{NAME}.gz"
    assert server.requests == []
    # a trailing .gz in the name means the same file
    assert fetch_file(f"{NAME}.gz", SHA, mirrors=[good], dest_dir=tmp_path, progress=False) == path
    assert server.requests == []


def test_existing_damaged_file_replaced(server, tmp_path):
    (tmp_path / f"{NAME}.gz").write_bytes(OTHER_GZ)
    good = server.serve("a", f"{NAME}.gz", "ok", GZ)
    assert _fetch([good], tmp_path).read_bytes() == GZ
    assert len(server.requests) == 1


def test_existing_damaged_file_kept_untouched_on_failure(server, tmp_path):
    (tmp_path / f"{NAME}.gz").write_bytes(GZ[:10])
    with pytest.raises(DownloadError):
        _fetch([server.serve("a", f"{NAME}.gz", "404")], tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{NAME}.gz"]
    assert (tmp_path / f"{NAME}.gz").read_bytes() == GZ[:10]


def test_bad_sha_argument(tmp_path):
    with pytest.raises(ValueError, match="64 hex digits"):
        fetch_file(NAME, "abc", mirrors=[], dest_dir=tmp_path)


def test_download_mnist_uses_all_four_names(server, tmp_path, monkeypatch):
    """download_mnist fetches the four standard names; served here as small synthetic files."""
    import simplenn.data.download as download

    rng = np.random.default_rng(0)
    arrays = {}
    for split, (img, lbl) in STANDARD_FILES.items():
        n = 5 if split == "train" else 3
        arrays[img] = rng.integers(0, 256, size=(n, 2, 2), dtype=np.uint8)
        arrays[lbl] = rng.integers(0, 10, size=n, dtype=np.uint8)
    digests = {}
    for name, arr in arrays.items():
        raw = encode_idx(arr)
        digests[name] = hashlib.sha256(raw).hexdigest()
        server.serve("m", f"{name}.gz", "ok", gzip.compress(raw))
    monkeypatch.setattr(download, "MNIST_SHA256", digests)
    out = download_mnist(tmp_path / "d", mirrors=[server.mirror("m")], timeout=5, progress=False)
    assert out == tmp_path / "d"
    train, test = load_idx_dataset(out, checksums=digests)
    assert len(train) == 5 and len(test) == 3
    assert len(server.requests) == 4
    download_mnist(out, mirrors=[server.mirror("m")], timeout=5, progress=False)
    assert len(server.requests) == 4  # second call: nothing fetched


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("SIMPLENN_DATA_DIR", str(tmp_path / "explicit"))
    assert default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("SIMPLENN_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "simplenn" / "mnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "simplenn" / "mnist"


def test_constants():
    assert len(MIRRORS) >= 2 and all(m.endswith("/") for m in MIRRORS)
    assert set(MNIST_SHA256) == {n for pair in STANDARD_FILES.values() for n in pair}
