#!/usr/bin/env bash
# Set up this machine for skyrl-stack: the Docker engine, base image and local
# registry (scripts/setup-test-machine.sh, needs root on Debian), then the
# project's virtualenv in .venv with the dev tools. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-test-machine.sh

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  # Debian's python3 needs python3-venv for this; install it if missing.
  if ! python3 -c 'import ensurepip, venv' 2>/dev/null && command -v apt-get >/dev/null; then
    apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  fi
  python3 -m venv .venv
fi
echo "[setup] installing skyrl-stack and its dev tools into .venv"
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'

# A second, small environment with SkyRL's own validate_cfg (the PyPI wheel of the
# pinned commit) for the tests that check rendered plans against SkyRL itself.
if [ ! -x .venv-skyrl/bin/python ]; then
  echo "[setup] creating .venv-skyrl"
  python3 -m venv .venv-skyrl
fi
echo "[setup] installing SkyRL's config validation into .venv-skyrl"
.venv-skyrl/bin/python -m pip install --quiet --no-deps --require-hashes --ignore-requires-python \
  -r scripts/skyrl-validate-requirements.txt
# SkyRL's config for render's --set checks (skyrl_stack/launch/skyrl_config.py), taken from that wheel into
# .skyrl-stack/skyrl-config/ and verified by sha256 (render does this itself on first use; here it fails early).
skyrl_config="$(.venv/bin/python -m skyrl_stack.launch.skyrl_config)"  # an assignment: set -e stops on a failure
echo "[setup] SkyRL's config for render's --set checks: ${skyrl_config}"
echo "[setup] ready: activate with 'source .venv/bin/activate'"
