#!/usr/bin/env bash
# On a machine with an NVIDIA GPU, from the repository root: OUT=<dir> bash scripts/gpu_run.sh
# Runs the GPU tests (pytest -m gpu, then the conformance kit on cupy), records the
# environment (nvidia-smi, the backends) and times the GPU backend with
# `python -m simplenn.bench --suite gpu`, all into $OUT (default benchmarks/results/local).
# GPU_RUN_SAMPLES / GPU_RUN_EPOCHS shrink the benchmark; without a GPU its parts are skipped.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results/local}" PY="${PYTHON:-python}"
mkdir -p "$OUT" && export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
BENCH=(-m simplenn.bench --suite gpu --samples "${GPU_RUN_SAMPLES:-60000}" --repeat "${GPU_RUN_EPOCHS:-5}" --out-dir "$OUT")
{ date -u; git rev-parse HEAD; nvidia-smi || echo "nvidia-smi: not available"; "$PY" -m simplenn.train --list-backends; } > "$OUT/environment.txt" 2>&1
timeout 240 "$PY" -m pytest -m gpu -q -rs tests 2>&1 | tee "$OUT/pytest_gpu.txt"; gpu_tests=${PIPESTATUS[0]}
timeout 240 "$PY" -m pytest -q -rs tests/test_conformance.py -k cupy 2>&1 | tee -a "$OUT/pytest_gpu.txt"; kit=${PIPESTATUS[0]}
timeout 300 "$PY" "${BENCH[@]}" 2>&1 | tee "$OUT/benchmark.txt"; bench=${PIPESTATUS[0]}
echo "$PY ${BENCH[*]}; exit status: GPU tests $gpu_tests, conformance kit $kit, benchmark $bench" | tee "$OUT/command.txt"
for status in "$gpu_tests" "$kit"; do [ "$status" -eq 0 ] || [ "$status" -eq 5 ] || exit "$status"; done  # 5: none collected
exit "$bench"
