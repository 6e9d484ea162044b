"""Numba compile cost: import + ``warm_up(ops)`` in this (fresh) process, then one epoch.

Run it twice after clearing the cache to see the cold and the cached cost::

    find simplenn -name '*.nb[ic]' -delete
    python scripts/numba_compile_time.py   # cold: compiles and writes the cache
    python scripts/numba_compile_time.py   # cached
    SIMPLENN_NUMBA_CACHE=0 python scripts/numba_compile_time.py   # no cache at all
"""

import time

import simplenn
from simplenn.core.model import warm_up
from simplenn.core.network import DEFAULT_HIDDEN

start = time.perf_counter()
ops = simplenn.get_backend("numba")
warm_up(ops)
warmup = time.perf_counter() - start
train, _ = simplenn.load_mnist()
net = simplenn.TwoLayerNet(784, DEFAULT_HIDDEN, backend=ops)
start = time.perf_counter()
simplenn.fit(net, train, epochs=1, eval_train=False)
print(f"import numba + warmup {warmup:.2f}s, first epoch after warmup "
      f"{time.perf_counter() - start:.2f}s")
