"""Nothing lost, nothing trusted: one run per checkpoint directory, resume on the
checkpoint's backend, bounded readers for models, IDX files and images, outputs checked
before training, no traceback, temp files cleaned up, warnings for hopeless labels.

The memory-bound tests run a command under ``RLIMIT_AS`` with a time limit and require a
one-line refusal."""

from __future__ import annotations

import errno
import gzip
import json
import os
import shlex
import signal
import struct
import subprocess
import sys
import time
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

import simplenn
from simplenn.core.labels import LabelWarning
from simplenn.data.idx import TRAILING_SLACK, read_idx, write_idx
from simplenn.errors import DataError, ModelFileError
from simplenn.io.atomic import atomic_write_bytes
from simplenn.io.checkpoints import load_checkpoint
from simplenn.io.lock import DirectoryLock, DirectoryLockedError
from simplenn.io.models import read_model_file, save_model

ROOT = Path(__file__).resolve().parents[1]
#: The address-space limit of the memory-bound commands; every bomb below needs more.
MEMORY_LIMIT = 1 << 30
TIME_LIMIT = 60

pytestmark = pytest.mark.usefixtures("one_blas_thread")


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "SIMPLENN_BACKEND"}
    return {
        **env,
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def _command(command: str, *args) -> list[str]:
    return [sys.executable, "-m", f"simplenn.{command}", *map(str, args)]


def _run(
    command: str, *args, memory: int | None = None, timeout: float = TIME_LIMIT
) -> subprocess.CompletedProcess:
    """``python -m simplenn.COMMAND ARGS``, under an address-space limit of ``memory``
    (set by a small Python that then execs the command: no preexec_fn in a threaded
    pytest). predict's tests skip without Pillow, which predict checks for first."""
    if command == "predict":
        pytest.importorskip("PIL", reason="predict needs Pillow: pip install Pillow")
    cmd = _command(command, *args)
    if memory is not None:
        cmd = [sys.executable, "-c", LIMITED, str(memory), *cmd]
    return subprocess.run(
        cmd, env=_env(), capture_output=True, text=True, timeout=timeout, check=False
    )


LIMITED = """
import os, resource, sys
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
os.execv(sys.argv[2], sys.argv[2:])
"""


def _refused(result: subprocess.CompletedProcess, command: str, *phrases: str) -> str:
    """The one stderr line of a command that refused with exit status 1."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr[-3000:]
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith(f"python -m simplenn.{command}: error: ")
    for phrase in phrases:
        assert phrase in lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A small trained-shaped model file (784-16-10, float32)."""
    net = simplenn.TwoLayerNet(784, 16, 10, backend="numpy", seed=0)
    return save_model(net, tmp_path_factory.mktemp("model") / "model.npz")


@pytest.fixture(scope="module")
def data_dir(mnist_subset_dir):
    """A small MNIST-format directory: 2000 train and 200 test images."""
    return mnist_subset_dir(2000, 200)


@pytest.fixture
def time_limit():
    """``with time_limit(SECONDS):`` raises TimeoutError in a call that blocks longer (an
    open() of a named pipe, say)."""
    from contextlib import contextmanager

    @contextmanager
    def limit(seconds: float):
        def expire(signum, frame):
            raise TimeoutError(f"still blocked after {seconds} s")

        previous = signal.signal(signal.SIGALRM, expire)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)

    return limit


def _train_args(data_dir, *args) -> list:
    return ["--data-dir", data_dir, "--hidden", 16, "--batch-size", 50, *args]


def _train(data_dir, *args) -> list[str]:
    return _command("train", *_train_args(data_dir, *args))


def _popen(cmd: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_for_epoch(child: subprocess.Popen) -> None:
    for line in child.stdout:
        if line.startswith("epoch "):
            return
    raise AssertionError(f"no epoch line; stderr: {child.stderr.read()}")


# -- zip, gzip and PNG files written by hand: bombs without the cost of compressing them ----
def _deflated(data: bytes) -> bytes:
    """``data`` as a raw deflate block ending on a full flush (so blocks concatenate)."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush(zlib.Z_FULL_FLUSH)


def _zeros_deflate(n: int, chunk: int = 1 << 20, prefix: bytes = b"") -> bytes:
    """A raw deflate stream of ``prefix`` and ``n`` zero bytes: one compressed chunk of
    zeros, repeated."""
    full, rest = divmod(n, chunk)
    return (
        _deflated(prefix)
        + _deflated(bytes(chunk)) * full
        + _deflated(bytes(rest))
        + zlib.compressobj(9, zlib.DEFLATED, -15).flush()
    )


def _npy_header(shape: tuple[int, ...], descr: str = "|u1") -> bytes:
    import io

    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return buffer.getvalue()


def _write_zip(path: Path, members: list[tuple[str, int, bytes, int, int]]) -> Path:
    """A zip of ``(name, method, compressed bytes, CRC, uncompressed size)`` members."""
    out, directory = bytearray(), bytearray()
    for name, method, data, crc, size in members:
        offset, encoded = len(out), name.encode()
        out += (
            struct.pack(
                "<4s5H3L2H",
                b"PK\x03\x04",
                20,
                0,
                method,
                0,
                0,
                crc,
                len(data),
                size,
                len(encoded),
                0,
            )
            + encoded
            + data
        )
        directory += (
            struct.pack(
                "<4s6H3L5H2L",
                b"PK\x01\x02",
                20,
                20,
                0,
                method,
                0,
                0,
                crc,
                len(data),
                size,
                len(encoded),
                0,
                0,
                0,
                0,
                0,
                offset,
            )
            + encoded
        )
    out += directory + struct.pack(
        "<4s4H2LH", b"PK\x05\x06", 0, 0, len(members), len(members), len(directory), len(out), 0
    )
    path.write_bytes(bytes(out))
    return path


def _members(model: Path) -> list[tuple[str, int, bytes, int, int]]:
    """The members of a (stored) model file, for _write_zip."""
    with zipfile.ZipFile(model) as zf:
        return [(i.filename, 0, zf.read(i), i.CRC, i.file_size) for i in zf.infolist()]


def _bomb_member(name: str, n: int) -> tuple[str, int, bytes, int, int]:
    """A deflated ``.npy`` member of ``n`` zero bytes (a few MB on disk)."""
    header = _npy_header((n,))
    return (name, 8, _zeros_deflate(n, prefix=header), 0, len(header) + n)


# -- 1. one run per checkpoint directory ------------------------------------------------------
def test_a_second_run_on_a_locked_directory_is_refused_and_sigkill_frees_it(data_dir, tmp_path):
    ck = tmp_path / "ck"
    holder = _popen(
        _train(data_dir, "--backend", "numpy", "--epochs", 100000, "--checkpoint-dir", ck)
    )
    try:
        _wait_for_epoch(holder)
        for args in ((), ("--resume",)):  # another run, or a resume of this one
            start = time.monotonic()
            second = _run(
                "train",
                *_train_args(
                    data_dir, "--backend", "numpy", "--epochs", 3, "--checkpoint-dir", ck, *args
                ),
            )
            _refused(second, "train", str(ck), f"PID {holder.pid}", "in use by another run")
            assert time.monotonic() - start < 30
        holder.kill()  # SIGKILL: no chance to unlock, the OS does
        holder.wait(timeout=30)
    finally:
        holder.kill()
        holder.communicate()
    taker = _popen(_command("train", "--checkpoint-dir", ck, "--resume"))
    try:
        _wait_for_epoch(taker)
        third = _run("train", "--checkpoint-dir", ck, "--resume")
        _refused(third, "train", f"PID {taker.pid}")
        taker.send_signal(signal.SIGINT)
        _, err = taker.communicate(timeout=60)
        assert taker.returncode == 130, err
        assert "saved checkpoint" in err
    finally:
        taker.kill()


def test_a_run_that_lost_its_lock_writes_nothing(data_dir, tmp_path):
    ck = tmp_path / "ck"
    child = _popen(
        _train(data_dir, "--backend", "numpy", "--epochs", 100000, "--checkpoint-dir", ck)
    )
    try:
        _wait_for_epoch(child)
        (ck / "run.lock").unlink()  # the lock file removed: another run could lock a new one
        with DirectoryLock(ck):
            _, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 1
    assert "no longer holds its lock" in err.strip().splitlines()[-1]


def test_directory_lock_names_the_holder_and_checks_its_file(tmp_path):
    first = DirectoryLock(tmp_path, "--checkpoint-dir")
    with first:
        assert first.held
        with pytest.raises(
            DirectoryLockedError,
            match=rf"in use by another run \(PID "
            rf"{os.getpid()}\)",
        ):
            DirectoryLock(tmp_path).acquire()
        (tmp_path / "run.lock").unlink()
        assert not first.held
        with pytest.raises(DirectoryLockedError, match="no longer holds its lock"):
            first.verify()
    with DirectoryLock(tmp_path) as again:  # released: a new owner takes it
        again.verify()


# -- 2. the checkpoint names its run: resume on its backend -----------------------------------
def test_the_printed_resume_hint_of_a_numpy_run_continues_it_bitwise(data_dir, tmp_path):
    ck = tmp_path / "ck"
    epochs = 40
    child = _popen(
        _train(data_dir, "--backend", "numpy", "--epochs", epochs, "--checkpoint-dir", ck)
    )
    _wait_for_epoch(child)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130, err
    hint = err.strip().splitlines()[-1].split("resume with: ", 1)[1]
    assert load_checkpoint(ck / "checkpoint.npz").state.epochs_done < epochs
    # the hint as printed, with the environment's default backend anything but numpy
    resumed = subprocess.run(
        [sys.executable, *shlex.split(hint)[1:], "--quiet"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "warning" not in resumed.stderr
    unbroken = subprocess.run(
        _train(
            data_dir,
            "--backend",
            "numpy",
            "--epochs",
            epochs,
            "--quiet",
            "--save",
            tmp_path / "unbroken.npz",
        ),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert unbroken.returncode == 0, unbroken.stderr
    assert resumed.stdout == unbroken.stdout
    ckpt = load_checkpoint(ck / "checkpoint.npz")
    assert ckpt.state.backend == "numpy" and ckpt.run["settings"]["backend"] == "numpy"
    expected, _ = read_model_file(tmp_path / "unbroken.npz")
    for k, v in expected.items():
        np.testing.assert_array_equal(ckpt.state.parameters[k], v, err_msg=k)


def test_resuming_on_another_backend_says_it_is_not_bitwise_and_goes_on(
    data_dir, tmp_path, require_backend
):
    require_backend("strict")
    ck = tmp_path / "ck"
    child = _popen(_train(data_dir, "--backend", "numpy", "--epochs", 30, "--checkpoint-dir", ck))
    _wait_for_epoch(child)
    child.send_signal(signal.SIGINT)
    child.communicate(timeout=60)
    other = _run(
        "train", "--checkpoint-dir", ck, "--resume", "--backend", "strict", "--quiet", timeout=300
    )
    assert other.returncode == 0, other.stderr
    warning = [line for line in other.stderr.splitlines() if "warning" in line]
    assert len(warning) == 1
    assert "strict" in warning[0] and "numpy" in warning[0] and "not be bitwise" in warning[0]
    assert other.stdout.startswith("test accuracy: ")


# -- 3. bounded readers -----------------------------------------------------------------------
@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_a_compressed_junk_member_is_refused_before_it_is_inflated(tmp_path, model, command):
    bomb = _write_zip(tmp_path / "bomb.npz", _members(model) + [_bomb_member("junk.npy", 1 << 31)])
    assert bomb.stat().st_size < 4 << 20
    args = [bomb] + ([tmp_path / "digit.png"] if command == "predict" else [])
    start = time.monotonic()
    result = _run(command, *args, memory=MEMORY_LIMIT)
    _refused(result, command, str(bomb), "unknown array 'junk'")
    assert time.monotonic() - start < TIME_LIMIT


def test_a_parameter_whose_zip_entry_is_larger_than_its_shape_is_refused(tmp_path, model):
    members = [m for m in _members(model) if m[0] != "W1.npy"]
    header = _npy_header((784, 16), "<f4")
    n = 1 << 31  # the zip entry says 2 GiB; the header, 784x16 floats
    w1 = ("W1.npy", 8, _zeros_deflate(n - len(header), prefix=header), 0, n)
    bomb = _write_zip(tmp_path / "w1.npz", members + [w1])
    result = _run("evaluate", bomb, memory=MEMORY_LIMIT)
    _refused(result, "evaluate", str(bomb), "'W1'", "damaged")


def test_duplicate_members_are_refused(tmp_path, model):
    members = _members(model)
    w1 = next(m for m in members if m[0] == "W1.npy")
    doubled = _write_zip(tmp_path / "doubled.npz", members + [w1])
    with pytest.raises(ModelFileError, match="two members named 'W1.npy'"):
        read_model_file(doubled)


def test_a_checkpoint_array_in_a_plain_model_file_is_refused(tmp_path, model):
    extra = _write_zip(
        tmp_path / "extra.npz", _members(model) + [_bomb_member("epoch_losses.npy", 1 << 20)]
    )
    with pytest.raises(ModelFileError, match="only a checkpoint has"):
        read_model_file(extra)


@pytest.mark.parametrize("command", ["predict", "evaluate", "export"])
def test_a_named_pipe_as_model_is_refused_without_hanging(tmp_path, command):
    fifo = tmp_path / "model.npz"
    os.mkfifo(fifo)
    args = [fifo, tmp_path / ("out.onnx" if command == "export" else "digit.png")]
    result = _run(command, *(args[:1] if command == "evaluate" else args), timeout=30)
    _refused(result, command, str(fifo), "not a regular file (a named pipe)")


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_a_device_as_model_is_refused_at_once(tmp_path, device):
    if not os.path.exists(device):
        pytest.skip(f"{device} does not exist here")
    result = _run("predict", device, tmp_path / "digit.png", memory=MEMORY_LIMIT)
    _refused(result, "predict", device, "not a regular file (a character device)")


def test_a_large_sparse_file_costs_nothing_to_refuse(tmp_path):
    sparse = tmp_path / "sparse.npz"
    with open(sparse, "wb") as f:
        f.truncate(2 << 30)
    result = _run("evaluate", sparse, memory=MEMORY_LIMIT)
    _refused(result, "evaluate", str(sparse), "not a simplenn model")


def _padded_gzip(path: Path, data: bytes, zeros: int) -> Path:
    """A gzip file of ``data`` followed by ``zeros`` zero bytes (cheap to write)."""
    crc = zlib.crc32(bytes(zeros), zlib.crc32(data)) if zeros <= 1 << 20 else 0
    body = _zeros_deflate(zeros, prefix=data)
    path.write_bytes(
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
        + body
        + struct.pack("<2L", crc, (len(data) + zeros) & 0xFFFFFFFF)
    )
    return path


def test_a_gzip_idx_padded_with_zeros_stops_at_the_declared_size(tmp_path, data_dir):
    padded = tmp_path / "data"
    padded.mkdir()
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        raw = (data_dir / name).read_bytes()
        if name.startswith("t10k-images"):
            _padded_gzip(padded / f"{name}.gz", raw, 3 << 29)  # 1.5 GiB of zeros
        else:
            (padded / name).write_bytes(raw)
    model = save_model(simplenn.TwoLayerNet(784, 8, 10, backend="numpy"), tmp_path / "m.npz")
    result = _run("evaluate", model, "--data-dir", padded, memory=MEMORY_LIMIT)
    _refused(result, "evaluate", "t10k-images-idx3-ubyte.gz", "trailing bytes after the data")


def test_idx_readers_refuse_pipes_and_count_trailing_bytes_without_reading_them(
    tmp_path, time_limit
):
    fifo = tmp_path / "pipe.idx"
    os.mkfifo(fifo)
    with time_limit(10), pytest.raises(DataError, match="not a regular file \\(a named pipe\\)"):
        read_idx(fifo)
    write_idx(tmp_path / "a.idx", np.arange(6, dtype=np.uint8))
    sparse = tmp_path / "a.idx"
    with open(sparse, "r+b") as f:
        f.truncate(8 + 6 + (1 << 30))  # a 1-D header is 8 bytes
    with pytest.raises(DataError, match=f"{1 << 30} trailing bytes after the data"):
        read_idx(sparse)
    data = tmp_path / "b.idx"
    write_idx(data, np.arange(6, dtype=np.uint8))
    _padded_gzip(tmp_path / "b.idx.gz", data.read_bytes(), 4 * TRAILING_SLACK)
    with pytest.raises(DataError, match=f"more than {TRAILING_SLACK} trailing bytes"):
        read_idx(tmp_path / "b.idx.gz")
    # a gzip file of two members still reads, and a short one within the slack is exact
    two = tmp_path / "two.idx.gz"
    raw = data.read_bytes()
    two.write_bytes(gzip.compress(raw[:7]) + gzip.compress(raw[7:]))
    np.testing.assert_array_equal(read_idx(two), np.arange(6, dtype=np.uint8))
    _padded_gzip(tmp_path / "c.idx.gz", raw, 5)
    with pytest.raises(DataError, match="5 trailing bytes after the data"):
        read_idx(tmp_path / "c.idx.gz")


@pytest.mark.parametrize(
    "method",
    [zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA],
    ids=["deflate", "bzip2", "lzma"],
)
def test_compressed_models_still_read(tmp_path, model, method):
    packed = tmp_path / "packed.npz"
    with zipfile.ZipFile(model) as src, zipfile.ZipFile(packed, "w", compression=method) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    params, _ = read_model_file(packed)
    expected, _ = read_model_file(model)
    for k, v in expected.items():
        np.testing.assert_array_equal(params[k], v)


# -- 4. predict answers every image it can ---------------------------------------------------
@pytest.fixture
def Image():  # the module, as PIL names it
    """PIL.Image (the test is skipped without Pillow)."""
    pytest.importorskip("PIL", reason="predict needs Pillow: pip install Pillow")
    from PIL import Image

    return Image


def _digit_png(path: Path) -> Path:
    from PIL import Image

    train, _ = simplenn.load_mnist()
    Image.fromarray(255 - train.X[0].reshape(28, 28)).resize((112, 112)).save(path)
    return path


def _huge_png(path: Path, side: int) -> Path:
    """A black ``side`` x ``side`` 8-bit PNG, written without compressing it for real."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">L", len(data)) + kind + data + struct.pack(">L", zlib.crc32(kind + data))
        )

    n = side * (side + 1)  # each row: a filter byte and the pixels, all zero
    stream = (
        b"\x78\xda"
        + _zeros_deflate(n, 100 * (side + 1))
        + struct.pack(">L", ((n % 65521) << 16) | 1)
    )
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">2L5B", side, side, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", stream)
        + chunk(b"IEND", b"")
    )
    return path


def test_one_bad_image_never_ends_the_batch(tmp_path, model, Image):
    good = _digit_png(tmp_path / "good.png")
    pixels = np.zeros((28, 28), np.float32)
    pixels[10:18, 12:16] = 1.0
    for name, value in (("nan", np.nan), ("inf", np.inf)):
        bad = pixels.copy()
        bad[0, 0] = value
        Image.fromarray(bad, mode="F").save(tmp_path / f"{name}.tif")
    huge = _huge_png(tmp_path / "huge.png", 12000)
    assert huge.stat().st_size < 1 << 20
    images = [tmp_path / "nan.tif", good, huge, tmp_path / "inf.tif"]
    result = _run("predict", model, *images, "--json", memory=MEMORY_LIMIT)
    assert result.returncode == 1, result.stderr
    answers = {r["file"]: r for r in json.loads(result.stdout)}
    assert "digit" in answers[str(good)]
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 3 and "Traceback" not in result.stderr
    assert "Warning" not in result.stderr  # Pillow's DecompressionBombWarning
    for path, phrase in (
        (images[0], "NaN or infinite"),
        (huge, "12000x12000"),
        (images[3], "NaN or infinite"),
    ):
        assert phrase in answers[str(path)]["error"]
        assert any(
            line.startswith(f"python -m simplenn.predict: error: {path}: ") and phrase in line
            for line in errors
        )


def test_float_images_in_0_1_are_read_as_such(tmp_path, model, Image):
    from simplenn.data.preprocess import load_grayscale

    train, _ = simplenn.load_mnist()
    digit = train.X[0].reshape(28, 28)
    Image.fromarray(digit).save(tmp_path / "digit.png")
    Image.fromarray(digit.astype(np.float32) / 255, mode="F").save(tmp_path / "digit.tif")
    np.testing.assert_allclose(
        load_grayscale(tmp_path / "digit.tif"), load_grayscale(tmp_path / "digit.png"), atol=1e-3
    )
    result = _run("predict", model, tmp_path / "digit.png", tmp_path / "digit.tif")
    assert result.returncode == 0, result.stderr
    (_, png), (_, tif) = (line.rsplit(": ", 1) for line in result.stdout.splitlines())
    assert png == tif


def test_an_unreadable_image_says_permission_denied(tmp_path, monkeypatch, Image):
    from simplenn.data.preprocess import ImageError, load_digit

    image = _digit_png(tmp_path / "locked.png")

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(image))

    monkeypatch.setattr(Image, "open", refuse)  # as root, chmod 000 would not refuse
    with pytest.raises(ImageError, match="permission denied") as info:
        load_digit(image)
    assert "damaged" not in str(info.value)


def test_images_are_checked_for_size_before_decoding(tmp_path, Image, time_limit):
    from simplenn.data.preprocess import MAX_PIXELS, ImageError, load_grayscale

    side = int(MAX_PIXELS**0.5) + 100
    with pytest.raises(ImageError, match="more than the") as info:
        load_grayscale(_huge_png(tmp_path / "big.png", side))
    assert f"{side}x{side}" in str(info.value)
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with time_limit(10), pytest.raises(ImageError, match="not a regular file"):
        load_grayscale(fifo)


# -- 5. fail before training, not after -------------------------------------------------------
@pytest.fixture
def unwritable_dir(tmp_path) -> Path:
    """A directory that exists but takes no new files (skipped where none can be had)."""
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        yield locked
        locked.chmod(0o755)
        return
    for candidate in (Path("/proc"), Path("/sys")):
        try:
            probe = candidate / f".simplenn-probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError:
            yield candidate
            return
    pytest.skip("no unwritable directory here (running as root)")


@pytest.mark.parametrize("flag", ["--save", "--metrics-out", "--plot", "--checkpoint-dir"])
def test_an_unwritable_output_fails_before_training(data_dir, unwritable_dir, flag):
    if flag == "--plot":
        pytest.importorskip("matplotlib", reason="--plot needs matplotlib")
    target = unwritable_dir / ("out" if flag in ("--save", "--metrics-out") else "")
    result = _run(
        "train", *_train_args(data_dir, "--backend", "numpy", "--epochs", 1000, flag, target)
    )
    _refused(result, "train", flag, "cannot")
    assert "epoch" not in result.stdout


@pytest.mark.parametrize("flag", ["--save", "--metrics-out"])
def test_an_output_onto_a_directory_fails_before_training(data_dir, tmp_path, flag):
    result = _run(
        "train", *_train_args(data_dir, "--backend", "numpy", "--epochs", 1000, flag, tmp_path)
    )
    _refused(result, "train", flag, "is a directory")
    assert "epoch" not in result.stdout


def test_save_onto_the_checkpoint_is_refused(data_dir, tmp_path):
    ck = tmp_path / "ck"
    ck.mkdir()
    result = _run(
        "train",
        *_train_args(
            data_dir,
            "--backend",
            "numpy",
            "--epochs",
            1000,
            "--checkpoint-dir",
            ck,
            "--save",
            ck / "checkpoint.npz",
        ),
    )
    _refused(result, "train", "--save", "the checkpoint of --checkpoint-dir")


def test_a_full_disk_at_the_end_keeps_the_model_and_says_where(
    data_dir, tmp_path, monkeypatch, capsys
):
    from simplenn.cli import train
    from simplenn.io import models

    target, metrics = tmp_path / "model.npz", tmp_path / "metrics.json"
    real = models.atomic_write_bytes

    def full_disk(path, data):
        if Path(path) in (target, metrics):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(models, "atomic_write_bytes", full_disk)
    monkeypatch.setattr("simplenn.io.atomic.atomic_write_bytes", full_disk)
    status = train.main(
        [
            "--data-dir",
            str(data_dir),
            "--backend",
            "numpy",
            "--hidden",
            "8",
            "--epochs",
            "1",
            "--quiet",
            "--save",
            str(target),
            "--metrics-out",
            str(metrics),
        ]
    )
    out, err = capsys.readouterr()
    assert status == 1
    assert out.startswith("test accuracy: ")
    lines = err.strip().splitlines()
    assert len(lines) == 2 and all("No space left on device" in line for line in lines)
    assert "--metrics-out" in lines[1]
    fallback = Path(lines[0].split("saved to ", 1)[1].split(" instead")[0])
    assert fallback.parent == tmp_path and fallback.name.startswith("model.unsaved-")
    assert not target.exists()
    read_model_file(fallback)


# -- 6. no traceback --------------------------------------------------------------------------
def test_an_absurd_hidden_size_says_the_memory_it_needs(data_dir):
    for memory in (None, MEMORY_LIMIT):
        result = _run("train", "--hidden", 10**9, "--backend", "numpy", memory=memory)
        _refused(result, "train", "--hidden 1000000000", "GiB of memory")
    # parameters that fit the limit, a network that does not: a MemoryError, on one line
    result = _run(
        "train",
        "--data-dir",
        data_dir,
        "--hidden",
        200_000,
        "--backend",
        "numpy",
        memory=MEMORY_LIMIT,
    )
    _refused(result, "train", "out of memory")


def test_memory_errors_are_one_line(capsys):
    from simplenn.cli import common

    def exhausted() -> int:
        raise MemoryError("Unable to allocate 3 TiB for an array")

    assert common.run_command("prog", exhausted, debug=False) == 1
    assert capsys.readouterr().err == (
        "prog: error: out of memory (Unable to allocate 3 TiB "
        "for an array); free memory or ask for less (a smaller "
        "model, batch or image)\n"
    )
    with pytest.raises(MemoryError):
        common.run_command("prog", exhausted, debug=True)


def test_export_of_a_weight_beyond_float32_is_one_line(tmp_path):
    pytest.importorskip("onnx", reason="export needs onnx: pip install onnx onnxruntime")
    net = simplenn.TwoLayerNet(784, 4, 10, backend="numpy", dtype="float64")
    params = net.parameters()
    params["W2"][0, 0] = 1e39
    net.set_parameters(params)
    model = save_model(net, tmp_path / "big.npz")
    result = _run("export", model, tmp_path / "big.onnx")
    _refused(result, "export", str(model), "W2", "float32")


# -- 7. temp files never pile up --------------------------------------------------------------
def test_the_next_write_removes_the_temp_files_of_dead_writers(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        left = tmp_path / f".checkpoint.npz.{dead.pid}-abcd_123.tmp"
        other = tmp_path / f".model.npz.{dead.pid}-zz99zz99.tmp"
        busy = tmp_path / f".checkpoint.npz.{alive.pid}-efgh4567.tmp"
        mine = tmp_path / "notes.tmp"
        for path in (left, other, busy, mine):
            path.write_bytes(b"partial")
        atomic_write_bytes(tmp_path / "checkpoint.npz", b"new")
        assert not left.exists() and not other.exists()
        assert busy.exists() and mine.exists()
        assert (tmp_path / "checkpoint.npz").read_bytes() == b"new"
    finally:
        alive.kill()
        alive.wait()


WRITE_LOOP = """
import sys
from simplenn.io.atomic import atomic_write_bytes

data = bytes(64 << 20)  # long writes: a kill almost always lands in one
print("ready", flush=True)
while True:
    atomic_write_bytes(sys.argv[1], data)
"""


def test_temp_files_of_killed_writes_do_not_pile_up(tmp_path):
    path = tmp_path / "checkpoint.npz"
    left_behind = 0
    for delay in (0.2, 0.3, 0.4):
        child = subprocess.Popen(
            [sys.executable, "-c", WRITE_LOOP, str(path)],
            env=_env(),
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout.readline().strip() == "ready"
        time.sleep(delay)
        child.kill()
        child.wait(timeout=30)
        child.stdout.close()
        temps = list(tmp_path.glob(".checkpoint.npz.*.tmp"))
        assert len(temps) <= 1  # the last kill's, if it hit a write; never the earlier ones
        left_behind += len(temps)
    assert left_behind  # the kills did interrupt writes
    atomic_write_bytes(path, b"done")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.npz"]


# -- 9. warnings for data that trains to nonsense ---------------------------------------------
def test_a_single_class_or_unseen_test_labels_warn_once(mnist):
    train, test = mnist
    net = simplenn.TwoLayerNet(784, 4, 10, backend="numpy")
    single = (train.X[:200], np.full(200, 3))
    with pytest.warns(LabelWarning, match="single class \\(label 3\\)") as caught:
        simplenn.fit(net, single, (test.X[:100], test.y[:100]), epochs=1)
    assert len(caught) == 1
    keep = train.y[:500] < 8
    with pytest.warns(LabelWarning, match="never shows \\(8, 9\\)") as caught:
        simplenn.fit(
            net, (train.X[:500][keep], train.y[:500][keep]), (test.X[:200], test.y[:200]), epochs=1
        )
    assert len(caught) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", LabelWarning)
        simplenn.fit(net, (train.X[:500], train.y[:500]), (test.X[:200], test.y[:200]), epochs=1)


def test_train_prints_a_label_warning_as_one_line(tmp_path, mnist):
    train, test = mnist
    d = tmp_path / "one-class"
    d.mkdir()
    ones = train.y == 1
    write_idx(d / "train-images-idx3-ubyte", train.X[ones][:300].reshape(-1, 28, 28))
    write_idx(d / "train-labels-idx1-ubyte", train.y[ones][:300].astype(np.uint8))
    write_idx(d / "t10k-images-idx3-ubyte", test.X[:100].reshape(-1, 28, 28))
    write_idx(d / "t10k-labels-idx1-ubyte", test.y[:100].astype(np.uint8))
    result = _run(
        "train", "--data-dir", d, "--backend", "numpy", "--hidden", 8, "--epochs", 1, "--quiet"
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines() == [
        (
            "python -m simplenn.train: warning: the training set holds a single class (label 1): "
            "the network can only learn to answer 1 for every image"
        )
    ]
