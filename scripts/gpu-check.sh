#!/usr/bin/env bash
# A prepared check for a machine with an NVIDIA GPU. One JSON report on stdout (progress on stderr). Exit codes:
#   0 every check passed; 1 a check failed; 2 it cannot run here (something it needs is missing: the reason on
#   stderr; nothing is installed when what it needs is present); 77 no GPU here.
#
#   bash scripts/gpu-check.sh                       # the whole system on the GPU: local and docker runtimes (~10 min);
#                                                   # installs the project only when its modules are missing
#   bash scripts/gpu-check.sh --nvml-only           # NVML inventory and per-process measurement; python3 + nvidia-ml-py
#   bash scripts/gpu-check.sh --prepare DIR [--python 3.X]  # on a connected machine: all --offline needs (< 64 MiB)
#   bash scripts/gpu-check.sh --offline DIR         # on a GPU machine without network: only python3 and DIR
set -uo pipefail
cd "$(dirname "$0")/.."

python=python3
[ -x .venv/bin/python ] && python=.venv/bin/python

if [ "${1:-}" = "--prepare" ]; then
  shift
  exec "$python" scripts/gpu_prepare.py "$@"
fi

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu-check: no NVIDIA GPU here (nvidia-smi is missing or finds no device): nothing to check" >&2
  exit 77
fi

case "${1:-}" in
  --offline)
    [ -n "${2:-}" ] || { echo "gpu-check: --offline needs the DIR --prepare wrote" >&2; exit 2; }
    # The system python3, not a venv: DIR/site is everything it imports.
    exec python3 scripts/gpu_check.py --offline "$2" "${@:3}" ;;
  --nvml-only)
    exec python3 scripts/gpu_check.py --nvml-only ;;
esac

if ! "$python" -c "import asrpro, faster_whisper, nats, pynvml, nvidia.cublas" >/dev/null 2>&1; then
  [ -x .venv/bin/python ] || python3 -m venv .venv || { echo "gpu-check: cannot run here: no venv" >&2; exit 2; }
  echo "gpu-check: installing the project with its gpu extra" >&2
  .venv/bin/pip install -q -e '.[dev,gpu]' || { echo "gpu-check: cannot run here: pip install failed (offline? use --prepare and --offline)" >&2; exit 2; }
  python=.venv/bin/python
fi
"$python" -m asrpro.cli models pull whisper-base >&2 || { echo "gpu-check: cannot run here: whisper-base cannot be pulled" >&2; exit 2; }
exec "$python" scripts/gpu_check.py
