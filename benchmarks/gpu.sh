#!/usr/bin/env bash
# The GPU measurement: seconds per epoch and per evaluation of LightGCN, VLATTICE and IBMRec
# under float32, mixed_bfloat16 and mixed_float16, on TikTok (real features) and on Sports
# (seeded stand-in features), 2 epochs each; then the large study (LightGCN, VLATTICE,
# IBMRec(VLATTICE), FREEDOM, IBMRec(FREEDOM), MRdIB(FREEDOM), 2 epochs, a full evaluation and an
# export each) at the synthetic Elec shape. Run from the checkout with ../shared/data beside it:
#   bash benchmarks/gpu.sh
# The tables (with the device each run used) are printed and written to runs/gpu_*/*.md.
# The Elec shape's data takes about 1.5 minutes to write and 1.1 GB of disk (data/big/elec).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m runners.prepare_data --data_dir=../shared/data --dataset=sports --out_dir=data/standin
python -m runners.benchmark --study=precision --speed_epochs=2 --flagfile=flags/tiktok.cfg \
    --data_dir=../shared/data --bench_dir=runs/gpu_tiktok --intra_op_threads=0
python -m runners.benchmark --study=precision --speed_epochs=2 --flagfile=flags/sports.cfg \
    --data_dir=data/standin --bench_dir=runs/gpu_sports --intra_op_threads=0
[ -d data/big/elec ] || python -m runners.prepare_data --synthetic --synthetic_shape=elec \
    --out_dir=data/big
python -m runners.benchmark --study=large --speed_epochs=2 --dataset=elec --data_dir=data/big \
    --embedding_dim=64 --n_layers=1 --item_layers=1 --knn_k=10 --batch_size=2048 \
    --learning_rate=1e-3 --bench_dir=runs/gpu_elec --intra_op_threads=0
