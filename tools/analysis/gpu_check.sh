#!/usr/bin/env bash
# One prepared GPU run (< 10 minutes on one GPU): first the GPU-only tests (flash-attn vs sdpa
# and the 'auto' dispatch, mmcv's deformable attention op, FSDP1 / DeepSpeed ZeRO 1-2-3 / FSDP2
# training from their config pieces in tests/gpu), then InternViT-6B speed and memory at
# 504x504 bf16, sdpa vs flash-attn, with and without activation checkpointing, against the
# measured matmul peak.
# Usage: tools/analysis/gpu_check.sh [OUT_DIR]      (writes OUT_DIR/gpu_check.md)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${1:-${OUT:-work_dirs/gpu_check}}"
PY="${PYTHON:-python}"
# Without a GPU there is nothing to check: say so before anything is written.
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "no GPU: nvidia-smi is missing or sees no device; tools/analysis/gpu_check.sh runs" \
         "on a machine with an NVIDIA GPU (nothing written)" >&2
    exit 2
fi
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
timeout 240 "$PY" -m pytest tests -q -rs -s -m gpu 2>&1 | tee "$OUT/gpu_tests.log" || true
timeout 330 "$PY" tools/analysis/gpu_check.py --out "$OUT" 2>&1 | tee "$OUT/gpu_check.log"
