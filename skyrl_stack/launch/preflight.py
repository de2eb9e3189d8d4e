"""What must hold before a cloud launch pays for nodes, checked cheapest first.

1. Someone can answer: a launch that asks for confirmation needs a terminal.
2. The task's secrets are in this shell (WANDB_API_KEY, the registry password).
3. The smoke gate (skyrl_stack.smoke.gate) passed the image's digest.
4. On AWS, the nodes' identity can pull the ECR image and use the s3://
   bucket (node_identity.py: the SkyPilot config and IAM, a few API calls).
5. SkyRL's own validate_cfg accepts this task's training plan, run in a
   container of the image (which may pull a large image: hence last).
A dry run launches nothing: it needs neither the secrets' values nor 3 to 5.
"""
from __future__ import annotations

import os
import sys

from skyrl_stack.errors import StackError
from skyrl_stack.launch.task_spec import TaskSpec, training_overrides
from skyrl_stack.reporter import step

PLAN_CHECK = "skyrl.validate"


def preflight(spec: TaskSpec, *, dry_run: bool, confirm: bool, skip_smoke_gate: bool,
              cluster: str | None = None, env_overrides: dict | None = None) -> dict:
    """Refuse a launch that cannot or must not go ahead; returns the secrets' values for SkyPilot.

    env_overrides: the launch's --env values; one that names a secret the task declares gives its value
    (the launcher sends it as that secret, launch_env.split_secrets), so it need not be in this shell too.
    """
    from skyrl_stack.launch.clusters import default_cluster
    from skyrl_stack.launch.node_identity import nodes_cluster, require_node_access

    if confirm and not sys.stdin.isatty():
        raise StackError("launching asks for confirmation, but stdin is not a terminal",
                         hint="see the plan with --dry-run, then launch with --yes")
    secrets = launch_secrets(spec, required=not dry_run, given=env_overrides)
    if not dry_run:
        require_smoke_passed(spec.image, skip_smoke_gate)
        require_node_access(spec, nodes_cluster(spec, cluster or default_cluster(spec.variant)))
        require_plan_validated(spec, skip_smoke_gate)
    return secrets


def launch_secrets(spec: TaskSpec, required: bool, given: dict | None = None) -> dict:
    """Secret values from this shell's environment (or an --env of the secret's own name), by the names
    the YAML declares."""
    wanted = {}
    if spec.logger == "wandb":
        wanted["WANDB_API_KEY"] = "WANDB_API_KEY"
    login = spec.registry_login
    if login and login.password_env:
        wanted["SKYPILOT_DOCKER_PASSWORD"] = login.password_env
    values = {}
    for secret, env in wanted.items():
        value = (given or {}).get(secret, os.environ.get(env))
        if value is None and required:
            raise StackError(
                f"{env} is not set (needed for {secret})",
                hint=f"export {env}=..." + (" or launch with --logger console" if secret == "WANDB_API_KEY" else ""),
            )
        values[secret] = value if value is not None else "<dry-run>"
    return values


def require_smoke_passed(image: str, skip_smoke_gate: bool) -> None:
    """The smoke gate (skyrl_stack.smoke.gate): no cloud launch of an untested digest."""
    from skyrl_stack.smoke.gate import require_passed

    require_passed(image, skip_smoke_gate=skip_smoke_gate, action="launch")


def require_plan_validated(spec: TaskSpec, skip_smoke_gate: bool) -> None:
    """SkyRL's own validate_cfg on the exact overrides of the task being launched, in the image, before paying.

    The smoke gate vouches for the image; this vouches for the plan (batch
    sizes against the placement, checkpoints, any --set). It runs the image's
    skyrl tier in a container of the image on this machine's CPU (composition
    and validation need no GPU), not recorded for the gate.
    """
    if spec.backend is None:
        return  # nothing of SkyRL's to validate (rehearsal)
    if skip_smoke_gate:
        print("WARNING: gate overridden: SkyRL's validate_cfg did not check this task's training plan",
              file=sys.stderr, flush=True)
        return
    check_plan_in_image(spec.image, training_overrides(spec))


def check_plan_in_image(image: str, overrides: list[str]) -> str:
    """Run the skyrl tier in a container of `image` on these overrides; its detail, or StackError unless it passed."""
    from skyrl_stack.image.records import state_dir
    from skyrl_stack.smoke.runner import run_smoke

    step(f"checking the training plan with SkyRL's own validate_cfg in {image} (CPU, not recorded for the gate)")
    outcome = run_smoke(image=image, gpus="none", tiers=["skyrl"], overrides=overrides, record=False,
                        raise_on_failure=False, report_dir=str(state_dir() / "plan-check"))
    results = {c["name"]: c for c in outcome.report["checks"]}
    result = results.get(PLAN_CHECK, {"status": "missing", "detail": "the image's suite has no such check"})
    if result["status"] != "passed":
        # A skip (no SkyRL in the image, no overrides) proves nothing: refuse it like a failure.
        raise StackError(
            f"launch refused: the training plan was not validated in {image} ({PLAN_CHECK} {result['status']}: "
            f"{result['detail']})",
            hint=f"fix the --set or shape named above and launch again; details in {outcome.report_dir / 'summary.txt'}",
        )
    step(f"plan check: {result['detail']}")
    return result["detail"]
