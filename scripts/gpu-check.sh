#!/usr/bin/env bash
# A prepared check for a machine with an NVIDIA GPU: exits 0 when every check passes, 1 when one fails, 77 where no
# GPU is present. One JSON report on stdout (progress on stderr).
#
#   bash scripts/gpu-check.sh              # the whole system on the GPU: local and docker runtimes (~10 min)
#   bash scripts/gpu-check.sh --nvml-only  # a bare GPU machine: NVML inventory and per-process measurement only;
#                                          # needs python3 with nvidia-ml-py, nothing else
set -uo pipefail
cd "$(dirname "$0")/.."

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu-check: no NVIDIA GPU here (nvidia-smi is missing or finds no device): nothing to check" >&2
  exit 77
fi

if [ "${1:-}" = "--nvml-only" ]; then
  exec python3 scripts/gpu_check.py --nvml-only
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv || exit 1
fi
echo "gpu-check: installing the project with its gpu extra" >&2
.venv/bin/pip install -q -e '.[dev,gpu]' || exit 1
.venv/bin/asrpro models pull whisper-base >&2 || exit 1
exec .venv/bin/python scripts/gpu_check.py
