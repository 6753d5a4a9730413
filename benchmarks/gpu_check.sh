#!/usr/bin/env bash
# The checks a lent GPU should answer, in under five minutes (see benchmarks/train_throughput.py --gpu-check):
#   1. bf16 precision: gamma*||z||^2 (gamma = 1e6, z ~ 1e-4) and its gradient under autocast vs fp32,
#      and the head's outputs staying fp32 under bf16;
#   2. host syncs per training step (expected: one per epoch, none per step);
#   3. ResNet-18 epoch time on 50,000 CIFAR-shaped random uint8 images on the GPU, bf16 autocast,
#      eager then torch.compile (the second epoch of each is timed; the first pays for compilation);
#   4. the reference pipeline (per-sample torchvision transforms, DataLoader, fp32) on the same data
#      and the speedup over it;
#   5. ResNet-50 epoch time (compiled, bf16).
# Each line is printed as soon as it is measured, so a run cut short by the time limit keeps what it has.
#
#   bash benchmarks/gpu_check.sh            # PYTHON=... to choose the interpreter; extra args go to the script
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"  # works from a plain checkout, installed or not
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device visible'; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
start=$(date +%s)
status=0
timeout --signal=INT --kill-after=10 285 "$PYTHON" benchmarks/train_throughput.py --device cuda --gpu-check "$@" || status=$?
if [[ $status -eq 124 || $status -eq 130 ]]; then
  echo "gpu_check: stopped at the 285 s limit; the lines above are what was measured"
fi
echo "gpu_check: exit status $status after $(( $(date +%s) - start )) s"
exit "$status"
