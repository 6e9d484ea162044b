#!/usr/bin/env bash
# The one command a session with a lent GPU runs on the device machine, from the repo root:
#
#     bash scripts/gpu_run.sh
#
# 1. the GPU tests:  python -m pytest -m gpu -q tests, and the conformance kit on cupy
# 2. the GPU training benchmark: time per MNIST epoch (60,000 images) on the cupy backend
#    at batch 128 / 512 / 2048, with and without CUDA graphs, timed with CUDA events around
#    fit's own chunk loop and by fit itself (synchronized wall clock); numba at batch 512
#    (the 10x comparison); PyTorch CUDA eager at batch 128 when torch imports.
# Everything goes to $OUT (default benchmarks/results/local): environment.txt,
# pytest_gpu.txt, benchmark.json, benchmark.md, command.txt -- commit them under
# benchmarks/results/<date>-<gpu>/ (see benchmarks/results/README.md).
# GPU_RUN_EPOCHS (default 5 timed epochs per configuration) and GPU_RUN_SAMPLES (default
# all 60,000) shrink the run; with no GPU the cupy and torch parts are skipped with the
# reason, which makes this a smoke test of the script itself. Budget: under 8 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results/local}"
mkdir -p "$OUT"
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python}"

echo "bash scripts/gpu_run.sh  (OUT=$OUT GPU_RUN_EPOCHS=${GPU_RUN_EPOCHS:-5} GPU_RUN_SAMPLES=${GPU_RUN_SAMPLES:-60000}, started $(date -u +%FT%TZ))" > "$OUT/command.txt"

{
  echo "date: $(date -u +%FT%TZ)"
  echo "git: $(git rev-parse HEAD 2>/dev/null || echo 'no commit') $(git status --porcelain 2>/dev/null | wc -l) changed files"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 || echo "nvidia-smi: not available"
  "$PY" - <<'EOF'
import importlib, platform, sys
print("python", sys.version.split()[0], platform.platform())
for name in ("numpy", "numba", "cupy", "torch", "pytest"):
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as exc:
        print(name, "not importable:", type(exc).__name__, exc)
try:
    import cupy
    print("cuda runtime", cupy.cuda.runtime.runtimeGetVersion(),
          "driver", cupy.cuda.runtime.driverGetVersion())
    print("device", cupy.cuda.runtime.getDeviceProperties(0)["name"].decode())
except Exception as exc:
    print("cupy device: unavailable:", type(exc).__name__, exc)
from simplenn.backends import available_backends
for info in available_backends():
    print("backend", info.describe())
EOF
} > "$OUT/environment.txt" 2>&1
cat "$OUT/environment.txt"

echo "== GPU tests"
timeout 240 "$PY" -m pytest -q -rs tests -m gpu 2>&1 | tee "$OUT/pytest_gpu.txt"
echo "== conformance kit on the GPU backend"
timeout 240 "$PY" -m pytest -q -rs tests/test_conformance.py -k cupy 2>&1 | tee -a "$OUT/pytest_gpu.txt"
tests_status=${PIPESTATUS[0]}

echo "== benchmark"
timeout 300 "$PY" - "$OUT" <<'EOF'
"""Time per MNIST epoch; every GPU time synchronizes (CUDA events or a device sync)."""
import json, os, statistics, sys, time

import numpy as np

import simplenn
from simplenn.backends import probe_backend
from simplenn.core.training import CHUNK_SAMPLES

out_dir = sys.argv[1]
EPOCHS = int(os.environ.get("GPU_RUN_EPOCHS", "5"))
SAMPLES = int(os.environ.get("GPU_RUN_SAMPLES", "60000"))
HIDDEN, LR, MOMENTUM, SEED = 128, 0.01, 0.9, 0
train, test = simplenn.load_mnist()
X_host, y_host = train.X[:SAMPLES], train.y[:SAMPLES]
n = X_host.shape[0]
rows = []


def record(**row):
    rows.append(row)
    print(json.dumps(row), flush=True)


def event_timed_epochs(net, X, Y, batch_size):
    """fit's inner loop (chunks of CHUNK_SAMPLES, losses read back per chunk), timed with
    CUDA events; returns the milliseconds of each of 1 + EPOCHS epochs (first = warm-up)."""
    import cupy
    ops, train_steps = net.ops, net.functions.train_steps_pixels
    params = [net.params[k] for k in ("W1", "b1", "W2", "b2")]
    velocities = [ops.xp.zeros_like(p) for p in params]
    chunk = max(1, CHUNK_SAMPLES // batch_size) * batch_size
    rng, s = np.random.default_rng(SEED), ops.scalar
    times = []
    for _ in range(1 + EPOCHS):
        order = ops.asarray(rng.permutation(n), dtype=np.int64)
        ops.synchronize()
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        for begin in range(0, n, chunk):
            end = min(n, begin + chunk)
            *updated, losses = train_steps(*params, *velocities, X, Y, order[begin:end],
                                           batch_size, s(LR), s(MOMENTUM), s(0.0))
            params, velocities = updated[:4], updated[4:]
            assert np.isfinite(ops.to_numpy(losses)).all()
        stop.record()
        stop.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, stop))
    return times


def fit_timed_epochs(backend, batch_size, X, y):
    """Seconds per epoch as fit reports them (device synchronized), 1 + EPOCHS epochs."""
    net = simplenn.TwoLayerNet(784, HIDDEN, 10, backend=backend, seed=SEED)
    history = simplenn.fit(net, (X, y), epochs=1 + EPOCHS, batch_size=batch_size, lr=LR,
                           momentum=MOMENTUM, lr_schedule="constant", seed=SEED,
                           eval_train=False)
    return [e.seconds * 1e3 for e in history.epochs], net


def summary(ms):
    timed = ms[1:] or ms
    return {"median_ms": round(statistics.median(timed), 3), "min_ms": round(min(timed), 3),
            "warmup_ms": round(ms[0], 3), "images_per_s": round(n / (statistics.median(timed) / 1e3))}


cupy_info = probe_backend("cupy")
if cupy_info.available:
    import cupy
    from simplenn.backends.cupy_backend import GRAPHS_ENV_VAR
    X_dev, Y_dev = cupy.asarray(X_host), cupy.asarray(y_host.astype(np.int64))
    for graphs in ("1", "0"):
        os.environ[GRAPHS_ENV_VAR] = graphs
        for batch_size in (128, 512, 2048):
            net = simplenn.TwoLayerNet(784, HIDDEN, 10, backend="cupy", seed=SEED)
            ms = event_timed_epochs(net, X_dev, Y_dev, batch_size)
            wrapper = net.functions.train_steps_pixels
            record(contender="cupy", timer="cuda-events, fit's chunk loop", batch_size=batch_size,
                   cuda_graphs=graphs == "1", graphs_disabled_reason=wrapper.disabled_reason,
                   **summary(ms))
            ms, _ = fit_timed_epochs("cupy", batch_size, X_dev, Y_dev)
            record(contender="cupy", timer="fit (synchronized wall clock)", batch_size=batch_size,
                   cuda_graphs=graphs == "1", **summary(ms))
    os.environ.pop(GRAPHS_ENV_VAR)
else:
    record(contender="cupy", skipped=cupy_info.reason)

numba_info = probe_backend("numba")
if numba_info.available:
    ms, _ = fit_timed_epochs("numba", 512, X_host, y_host)
    record(contender="numba", timer="fit (wall clock)", batch_size=512, **summary(ms))
else:
    record(contender="numba", skipped=numba_info.reason)

try:
    import torch
    if not torch.cuda.is_available():
        raise RuntimeError("torch.cuda.is_available() is False")
except Exception as exc:
    record(contender="torch-cuda eager", skipped=f"{type(exc).__name__}: {exc}")
else:
    dev = torch.device("cuda")
    torch.manual_seed(SEED)
    Xt = torch.as_tensor(X_host, device=dev)
    Yt = torch.as_tensor(y_host.astype(np.int64), device=dev)
    model = torch.nn.Sequential(torch.nn.Linear(784, HIDDEN), torch.nn.ReLU(),
                                torch.nn.Linear(HIDDEN, 10)).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    batch_size, times = 128, []
    for _ in range(1 + EPOCHS):
        order = torch.randperm(n, device=dev)
        torch.cuda.synchronize()
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for begin in range(0, n, batch_size):
            idx = order[begin:begin + batch_size]
            loss = torch.nn.functional.cross_entropy(model(Xt[idx].float() / 255), Yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    record(contender="torch-cuda eager", timer="cuda-events", batch_size=batch_size,
           torch=torch.__version__, **summary(times))

with open(os.path.join(out_dir, "benchmark.json"), "w") as f:
    json.dump({"epochs_timed": EPOCHS, "samples": n, "hidden": HIDDEN, "lr": LR,
               "device": cupy_info.device, "rows": rows}, f, indent=2)
with open(os.path.join(out_dir, "benchmark.md"), "w") as f:
    f.write(f"Time per epoch of {n} MNIST images, hidden {HIDDEN}, float32, median of "
            f"{EPOCHS} epochs after one warm-up epoch. Device: {cupy_info.device or 'none'}.\n\n")
    f.write("| contender | timer | batch | CUDA graphs | median ms/epoch | min ms | images/s |\n")
    f.write("|---|---|---:|---|---:|---:|---:|\n")
    for r in rows:
        if "skipped" in r:
            f.write(f"| {r['contender']} | skipped: {r['skipped']} | | | | | |\n")
        else:
            f.write(f"| {r['contender']} | {r['timer']} | {r['batch_size']} | "
                    f"{r.get('cuda_graphs', '')} | {r['median_ms']} | {r['min_ms']} | "
                    f"{r['images_per_s']:,} |\n")
print(open(os.path.join(out_dir, "benchmark.md")).read())
EOF
bench_status=$?
echo "tests exit status: $tests_status, benchmark exit status: $bench_status" | tee -a "$OUT/command.txt"
[ "$tests_status" -eq 0 ] || [ "$tests_status" -eq 5 ] || exit "$tests_status"
exit "$bench_status"
