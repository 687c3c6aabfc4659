#!/usr/bin/env bash
# The GPU benchmarks in one go, for a machine with a CUDA GPU. Writes one JSON
# line per benchmark to $OUT/gpu_bench.jsonl (OUT defaults to ./bench-out).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench-out}
mkdir -p "$OUT"
PY=${PY:-.venv/bin/python}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
run() { timeout "$1" "$PY" "${@:2}" 2>>"$OUT/stderr.log" | tail -1 | tee -a "$OUT/gpu_bench.jsonl"; }
run 240 bench/supernet_step.py --device cuda --space imagenet --batch 256 --paths 24 --rounds 2
run 180 bench/train_throughput.py --device cuda --jpegs 1024 --workers 8
run 300 bench/shards.py --images 4000 --workers 12
run 300 bench/search_speed.py --imagenet --generations 2 --population 16
run 330 bench/imagenet_supernet.py --device cuda --steps 600 --batch 128 --workers 12
run 180 bench/latency_table.py --device cuda --space imagenet --repeats 50
run 300 bench/processes_scaling.py --device cuda --space imagenet --input-size 224 --batch 128 \
    --steps 20 --processes 1 "$(nvidia-smi -L | wc -l)"
