"""What `invoke launch --env KEY=VALUE` may set, and which values go to SkyPilot as secrets.

SkyPilot exports a task's envs (and secrets) right before its `run:` on every
node (sky/backends/task_codegen.py: `sky_env_vars_dict[...]` handed to
`run_bash_command_with_log`), after its own variables and over the image's
`ENV`. So an --env of a variable the image, SkyPilot or our Ray owns replaces
it on every node, after the cluster is up and billed: `--env PATH=/tmp` leaves
no `skyrl-ray-up`, `--env LD_LIBRARY_PATH=...` swaps the CUDA libraries torch
loads, `--env SKYPILOT_NODE_RANK=0` makes every node a head. Those are refused
here, one line each, before anything starts (refuse_owned).

A value whose name looks like a credential is passed as a SkyPilot secret, not
an env (split_secrets): SkyPilot redacts secrets in its logs, dashboard and
`sky jobs queue` (sky/task.py: `secrets` vs `envs`); an env is shown as is.
"""
from __future__ import annotations

import re
import shlex
from functools import lru_cache

from skyrl_stack.errors import StackError
from skyrl_stack.project import project_root

# SkyPilot's own variables: every one it sets on a node starts with
# sky/skylet/constants.py SKYPILOT_ENV_VAR_PREFIX ("SKYPILOT_": NODE_RANK,
# NODE_IPS, NUM_NODES, NUM_GPUS_PER_NODE, TASK_ID, DOCKER_* ...).
# tests/launch/test_launch_env.py holds this against SkyPilot's constants.
SKYPILOT_PREFIX = "SKYPILOT_"
# The process basics the image's one environment rests on (its `ENV` adds to
# these; image_env_names reads the Dockerfile), each with why it is not ours to change.
PROCESS = {
    "PATH": "the image's tools (skyrl-ray-up, ray, python) are found through it",
    "LD_LIBRARY_PATH": "it decides which CUDA/NCCL libraries torch loads (the image sets only the driver's mount points)",
    "LD_PRELOAD": "it injects a library into every process of the job, SkyPilot's and Ray's included",
    "PYTHONPATH": "it puts other modules ahead of the image's environment in every Python process, Ray's workers too",
    "PYTHONHOME": "it moves the standard library away from the image's Python",
    "VIRTUAL_ENV": "the image's one environment (/opt/skyrl/venv) is named by it",
    "HOME": "SkyPilot keeps its runtime and Ray's state under it (~/.sky, ~/sky_workdir)",
}
# Ray's variables that redirect or rebuild the job's Ray rather than tune it.
RAY = {
    "RAY_ADDRESS": "it points SkyRL's ray.init at another cluster (SkyPilot's own Ray on 6380), not the task's",
    "RAY_RUNTIME_ENV_HOOK": "it rebuilds every Ray worker through `uv run` and broke SkyPilot's Ray (skypilot#7180)",
    # SkyPilot unsets it before every run: sky/backends/task_codegen.py UNSET_RAY_ENV_VARS.
    "RAY_RAYLET_PID": "SkyPilot unsets it before every run (task_codegen UNSET_RAY_ENV_VARS)",
    "CUDA_VISIBLE_DEVICES": "Ray assigns each worker its GPUs; SkyRL's placement expects every GPU of the node",
}
# Names that hold credentials: sent as SkyPilot secrets. Suffixes as credentials
# are conventionally named (HF_TOKEN, WANDB_API_KEY, AWS_SECRET_ACCESS_KEY,
# GITHUB_PAT, ...), anywhere for PASSWORD/SECRET/CREDENTIAL.
SECRET_NAME = re.compile(
    r"(?:^|_)(?:TOKEN|KEY|PAT|AUTH)$|PASSWORD|PASSWD|SECRET|CREDENTIAL|ACCESS_KEY|API_KEY|PRIVATE",
)


@lru_cache(maxsize=None)
def image_env_names(dockerfile=None) -> frozenset[str]:
    """The names the Dockerfile's `ENV` instructions set (they persist in the image and every node's job)."""
    path = dockerfile or project_root() / "docker" / "Dockerfile"
    text = re.sub(r"\\\n", " ", path.read_text())  # join continuation lines
    names = set()
    for line in text.splitlines():
        match = re.match(r"^\s*ENV\s+(.*)$", line)
        if match:
            for token in shlex.split(match[1], comments=True):
                names.add(token.split("=", 1)[0])
    return frozenset(names)


def owner(name: str) -> tuple[str, str] | None:
    """(who owns it, why) when an --env of `name` would break the node, else None."""
    if name.startswith(SKYPILOT_PREFIX):
        return "SkyPilot", "SkyPilot sets its SKYPILOT_* variables on every node (sky/skylet/constants.py)"
    if name in PROCESS:
        return "the image", PROCESS[name]
    if name in RAY:
        return "the task's Ray", RAY[name]
    if name in image_env_names():
        return "the image", "docker/Dockerfile sets it with ENV"
    return None


def refuse_owned(name: str) -> None:
    """One line for an --env the image, SkyPilot or our Ray owns."""
    owned = owner(name)
    if owned:
        who, why = owned
        raise StackError(f"--env {name} would replace a variable {who} owns: {why}",
                         hint="leave it out; to change the job, use --set for SkyRL's settings or "
                              "an env of your own name")


def is_secret(name: str) -> bool:
    return bool(SECRET_NAME.search(name.upper()))


def split_secrets(env: dict | None) -> tuple[dict, dict]:
    """(plain envs, secrets) of the --env values: credential-like names go to SkyPilot as secrets."""
    plain, secret = {}, {}
    for key, value in (env or {}).items():
        (secret if is_secret(key) else plain)[key] = value
    return plain, secret
