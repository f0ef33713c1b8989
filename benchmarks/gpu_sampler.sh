#!/usr/bin/env bash
# One short GPU comparison: the differential sampler's time per step vs diffusers'
# StableDiffusionImg2ImgPipeline, full-size SD1.5 architecture (random weights, fp16),
# 512x512, 20 steps. Offline; needs torch with CUDA, diffusers, transformers, safetensors,
# numpy and pillow importable (the package itself need not be installed). Takes well
# under the time limit below on an H100; most of it is imports and building the model.
#
#   bash benchmarks/gpu_sampler.sh            # PYTHON=python3.11 bash ... to pick the interpreter
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
PYTHON="${PYTHON:-python3}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PYTHON" -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)"
exec timeout "${BENCH_TIMEOUT:-270}" "$PYTHON" benchmarks/bench_sampler.py \
    --device cuda --full-size --fp16 --steps 20 --runs 5 --check "$@"
