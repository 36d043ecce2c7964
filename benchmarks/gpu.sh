#!/usr/bin/env bash
# The GPU measurement: seconds per epoch and per evaluation of LightGCN, VLATTICE and IBMRec
# under float32, mixed_bfloat16 and mixed_float16, on TikTok (real features) and on Sports
# (seeded stand-in features), 2 epochs each. Run from the checkout with ../shared/data beside it:
#   bash benchmarks/gpu.sh
# The tables (with the device each run used) are printed and written to runs/gpu_*/precision.md.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m runners.prepare_data --data_dir=../shared/data --dataset=sports --out_dir=data/standin
python -m runners.benchmark --study=precision --speed_epochs=2 --flagfile=flags/tiktok.cfg \
    --data_dir=../shared/data --bench_dir=runs/gpu_tiktok --intra_op_threads=0
python -m runners.benchmark --study=precision --speed_epochs=2 --flagfile=flags/sports.cfg \
    --data_dir=data/standin --bench_dir=runs/gpu_sports --intra_op_threads=0
