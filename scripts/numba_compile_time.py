"""Numba compile cost, function by function, in this (fresh) process: what
``python -m simplenn.train`` compiles (or loads from the cache) before its first epoch,
float32, read-only uint8 pixels as ``load_mnist`` gives them, SGD on the numba fast
path's chunks, then what an augmented run adds (inside the image ops' ``training()``
context, as ``fit`` runs it: the chunk loop over floats on numba's threads, the elastic
fields and the warp).

    find simplenn -name '*.nb[ic]' -delete
    python scripts/numba_compile_time.py                            # cold: compiles, writes the cache
    python scripts/numba_compile_time.py                            # cached
    SIMPLENN_NUMBA_CACHE=0 python scripts/numba_compile_time.py     # no cache at all
"""

import time

import numpy as np

start = time.perf_counter()
import simplenn
from simplenn.backends.images import image_ops
from simplenn.core.augment import distort_images
from simplenn.optim import SGD

ops = simplenn.get_backend("numba")
print(f"import simplenn and numba: {time.perf_counter() - start:.2f} s")
rng = np.random.default_rng(0)
net = simplenn.TwoLayerNet(6, 4, 3, backend=ops)
X = rng.integers(0, 256, (8, 6)).astype(np.uint8)
Y = rng.integers(0, 3, 8).astype(np.int64)
X.flags.writeable = Y.flags.writeable = False
floats = X / np.float32(255)


optimizer = SGD()  # fit's default


def steps(inputs, batch_size):
    state = optimizer.init(net.params)
    net.train_steps(
        inputs,
        Y,
        np.arange(8),
        state,
        optimizer=optimizer,
        batch_size=batch_size,
        lrs=np.zeros(-(-8 // batch_size)),
    )


def augmented(fn, *args, **kwargs):
    with image_ops(ops).training():
        return fn(*args, **kwargs)


total = 0.0
for name, call in [
    ("to_float (evaluation)", lambda: ops.to_float(X)),
    ("forward (evaluation)", lambda: net.predict(X)),
    ("train_steps, pixels, batch 128 (training)", lambda: steps(X, 128)),
    ("loss_and_gradients (not used by training)", lambda: net.loss_and_gradients(X, Y)),
    ("train_steps, floats, batch 128 (--augment)", lambda: augmented(steps, floats, 128)),
    (
        "elastic fields and warp (--augment)",
        lambda: augmented(distort_images, np.zeros((2, 784), np.uint8), "elastic", backend=ops),
    ),
    ("train_steps, pixels, batch 1 (sparse batches)", lambda: steps(X, 1)),
]:
    start = time.perf_counter()
    call()
    seconds = time.perf_counter() - start
    total += seconds
    print(f"{name}: {seconds:.2f} s")
print(f"all: {total:.2f} s")
