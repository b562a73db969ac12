#!/usr/bin/env bash
# Every check that needs an NVIDIA GPU, as one command for a machine lent for a few minutes:
#   bash benchmarks/gpu_session.sh OUT_DIR [TRAIN_MINUTES]
# 1. the CUDA tests that are skipped elsewhere (FP16 vs FP32 parity, CUDA graph replay; TensorRT where installed);
# 2. benchmarks/gpu_check.py: a refiner trained on the bundled model's warp + regression layer (needs the
#    prepared data in cache/prepared, from `reggan prepare`), FP16 parity, throughput, the torch backend and
#    end-to-end 720p. Results land in OUT_DIR; copy the numbers into docs/benchmarks.md with the card named.
# Before spending the GPU on it, the same check runs as a dry run on any CPU (tests/test_gpu_check.py does in CI):
#   python benchmarks/gpu_check.py --regression reggan/models/default.safetensors --prepared cache/prepared \
#       --out /tmp/dry --device cpu --steps 2 --batch 2 --frames 12 --baseline-minutes 0
set -u
out=${1:?usage: bash benchmarks/gpu_session.sh OUT_DIR [TRAIN_MINUTES]}
minutes=${2:-6}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=.
python=${PYTHON:-python3}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
"$python" -m pytest -q -rs tests/test_export.py -k "cuda or tensorrt" 2>&1 | tail -n 12 | tee "$out/cuda_tests.txt"
# tqdm redraws one line with carriage returns: keep whole lines, drop the progress bar's.
"$python" benchmarks/gpu_check.py --regression reggan/models/default.safetensors --prepared cache/prepared \
    --out "$out" --train-minutes "$minutes" --baseline-minutes 0 2>&1 | tr '\r' '\n' | grep -v 'step/s' | tail -n 40
