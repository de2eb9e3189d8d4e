#!/usr/bin/env bash
# The main job on a local default, no cloud account needed: set up this
# machine, build the offline rehearsal image, smoke-test it, push it (digest
# first) to the local registry, render its SkyPilot task, and run that task on
# a 2-node local cluster of containers (SkyPilot's variables and docker flags).
# Last, the same task as a managed job that survives a preemption: node1 is
# killed 30 s in (past the first checkpoints even where the cluster is slow to
# start), every node is replaced, and the run resumes from its newest complete
# checkpoint in a bucket directory in the workspace (a new run name each time;
# README "Long runs on spot").
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-dev.sh

# The local registry's test login, made by scripts/setup-test-machine.sh (not a secret).
export SKYRL_STACK_REGISTRY_USER="${SKYRL_STACK_REGISTRY_USER:-ci}"
export SKYRL_STACK_REGISTRY_PASSWORD="${SKYRL_STACK_REGISTRY_PASSWORD:-ci-password}"
# Behind a TLS-intercepting proxy, its CA is in the system bundle: builds get
# it as a BuildKit secret (never a layer). Harmless without a proxy.
if [ -z "${INVOKE_BUILD_CA_BUNDLE:-}" ] && [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  export INVOKE_BUILD_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
fi

invoke=.venv/bin/invoke
$invoke build --variant rehearsal
$invoke smoke --variant rehearsal
$invoke push --variant rehearsal
$invoke render --variant rehearsal --cloud aws --nodes 2
$invoke launch --variant rehearsal --cloud local --nodes 2
$invoke launch --variant rehearsal --cloud local --nodes 2 --managed --bucket "$PWD/.skyrl-stack/local-bucket" \
  --preempt node1@30
