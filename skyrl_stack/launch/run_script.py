"""The task's `run:` script: the image's own steps, in order, and the training command.

Nothing is installed at launch (the task has no `setup:`): every step is a
script baked into the image (docker/scripts/bin): skyrl-gsm8k-data,
skyrl-ray-up, then skyrl-train (or, for the rehearsal image,
skyrl-rehearsal-job). skyrl-phase prints when each cold-start phase ends on the
node (PHASES), so a user sees where a node's minutes went. The training command's arguments are
task_spec.training_overrides, quoted for bash; the overrides the spec owns are
read from the task's envs instead (ENV_BOUND).
"""
from __future__ import annotations

import shlex

from skyrl_stack.launch.task_spec import TaskSpec, training_overrides

# Overrides the spec owns and the YAML exposes as envs, so `sky launch --env
# LOGGER=console` works as in SkyRL's example.
ENV_BOUND = {"trainer.logger": "LOGGER", "generator.backend": "INFERENCE_BACKEND"}
# The phases skyrl-phase reports, in order (data-ready only where the task fetches data; training-started
# on the head only).
PHASES = ("image-started", "data-ready", "ray-joined", "training-started")
# skyrl-ray-up's line when this node is in the Ray cluster (the head: all nodes joined; a worker: it
# joined, or was already in): a worker's skyrl-ray-up goes on running (it holds the node until the head
# releases it), so its join is read from its output (skyrl-phase --on) rather than from its end.
RAY_JOINED = r"^skyrl-ray-up: (all [0-9]+ nodes joined|rank [0-9]+: (joined|already in the Ray cluster))"


def run_script(spec: TaskSpec, ray_port: int) -> str:
    lines = [
        "set -euo pipefail",
        "# Every step is a script baked into the image (/usr/local/bin); nothing is installed here.",
        "# skyrl-phase prints when each phase ends on this node, and how long after the machine booted.",
        f"skyrl-phase --new {PHASES[0]}",
    ]
    if spec.backend:
        lines += [
            "# Data first, on every node: a node joins Ray only once its data exists,",
            "# because the trainer may be scheduled on any node.",
            f"skyrl-gsm8k-data {shlex.quote(spec.data_dir)}",
            f"skyrl-phase {PHASES[1]}",
        ]
    lines += [
        f"# Our Ray on port {ray_port}, clear of SkyPilot's own Ray (6380). The head waits",
        "# until all SKYPILOT_NUM_NODES nodes joined (SKYRL_RAY_JOIN_TIMEOUT seconds).",
        f"skyrl-ray-up --port {ray_port} | skyrl-phase --on {shlex.quote(RAY_JOINED)} {PHASES[2]}",
        'if [ "$SKYPILOT_NODE_RANK" = "0" ]; then',
    ]
    if spec.bucket:
        # Durable storage: the checkpoint a resume loads is a complete one (never a cut upload).
        lines.append(f"  skyrl-ckpt-guard {shlex.quote(spec.ckpt_path)}")
    lines.append(f"  skyrl-phase {PHASES[3]}")
    lines += _training_command(spec) if spec.backend else [_rehearsal_command(spec, ray_port)]
    # The workers' run: holds their node in the cluster until this; a failed job
    # never gets here, and SkyPilot's job then cancels the workers itself.
    lines.append(f"  skyrl-ray-up --port {ray_port} --release")
    lines.append("fi")
    return "\n".join(lines) + "\n"


def _rehearsal_command(spec: TaskSpec, ray_port: int) -> str:
    """The rehearsal job; with durable storage it trains and checkpoints (REHEARSAL_* envs, task_yaml.py)."""
    if not spec.bucket:
        return f"  skyrl-rehearsal-job --port {ray_port}"
    return (f"  skyrl-rehearsal-job --port {ray_port} --ckpt-path {shlex.quote(spec.ckpt_path)} "
            '--steps "$REHEARSAL_STEPS" --step-seconds "$REHEARSAL_STEP_SECONDS" '
            '--ckpt-interval "$REHEARSAL_CKPT_INTERVAL" --max-ckpts 2')


def _training_command(spec: TaskSpec) -> list[str]:
    """`skyrl-train` with the task's overrides, one per line; the env-bound ones read from their env."""
    args = []
    for item in training_overrides(spec):
        key, _, value = item.partition("=")
        env = ENV_BOUND.get(key)
        args.append(f'{key}="${env}"' if env else _quote(item))
    return ["  skyrl-train \\"] + [f"    {arg} \\" for arg in args[:-1]] + [f"    {args[-1]}"]


def _quote(arg: str) -> str:
    """Shell-quote, preferring double quotes so Hydra lists stay readable: "k=['a']"."""
    if shlex.quote(arg) == arg:
        return arg
    if not any(ch in arg for ch in '"$`\\!'):
        return f'"{arg}"'
    return shlex.quote(arg)
