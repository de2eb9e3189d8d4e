"""Managed runs (`--managed`, `--spot`, `--run`, `--resume`): the recovery policy and the run's name.

Standard library only (render stays instant). The policy is SkyPilot's
`resources.job_recovery`, read by the managed-jobs controller (SkyPilot 0.14.1
sky/jobs/recovery_strategy.py StrategyExecutor.make and
should_restart_on_failure, sky/jobs/controller.py):

- The cluster is no longer UP (a spot preemption, a lost VM): the controller
  recovers every time, whatever the exit codes, and counts nothing.
- The cluster is UP and the job failed: the controller reads the exit codes of
  every node's `run:` and restarts when one of them is in
  `recover_on_exit_codes` (NOT counted: no limit) or while its failure counter
  is at most `max_restarts_on_errors`. Each restart, like a preemption,
  terminates the cluster and provisions a new one (EAGER_NEXT_REGION.recover).

What SkyRL's driver exits with (`skyrl-train` execs `python -m
skyrl_train.entrypoints.main_base` on the Ray head):

- main() is `@hydra.main` and does `ray.get(skyrl_entrypoint.remote(cfg))`
  (SkyRL 1ed499c, skyrl_train/entrypoints/main_base.py). Any exception there,
  Ray's included, is caught by Hydra's run_and_report, which prints it and
  calls `sys.exit(1)` (hydra-core 1.3.2, hydra/_internal/utils.py).
- A dead policy/ref/inference actor (its process killed, or aborted by
  torch's NCCL watchdog: TORCH_NCCL_ASYNC_ERROR_HANDLING defaults to 3,
  SkipCleanUp, for which SHOULD_TEAR_DOWN holds (torch/csrc/distributed/c10d/
  ProcessGroupNCCL.hpp ErrorHandlingMode), so the watchdog thread rethrows the
  timeout ("To avoid data inconsistency, we are taking the entire process
  down") and std::terminate aborts the process, SIGABRT) reaches the driver as
  Ray 2.48's `RayTaskError(ActorDiedError)` (ray/exceptions.py); a worker node
  whose raylet is lost as `RayTaskError(ActorUnavailableError)`: exit 1.
  Measured here with Ray 2.48.0 and Hydra 1.3.2 (a Hydra main ray.get()ting a
  task whose actor calls os.abort(), SIGKILLs itself or raises, and one whose
  actor's node is killed with ray.cluster_utils): 1 each time.
  The NCCL watchdog's abort kills the actor process, never the driver, which
  runs no collective; 134 (SIGABRT) or 137 (SIGKILL) would be the head's code
  only if the driver process itself died so.
- skyrl-ray-up exits 1 when a node does not join in SKYRL_RAY_JOIN_TIMEOUT.
- On the other nodes SkyPilot kills the `run:` once one node failed and
  records 137 for them (sky/backends/task_codegen.py get_or_fail,
  CANCELLED_RETURN_CODE = 137): a 2-node failure reads [1, 137].

So a lost node or an NCCL timeout gives the same code as a bug in the
training code: 1. Listing 1 in recover_on_exit_codes would restart a real bug
forever, and listing 137 would match every multi-node failure (the cancelled
nodes); so `recover_on_exit_codes` is empty and `max_restarts_on_errors`
bounds restarts after such failures: a bug costs at most that many extra
provisionings before the job is FAILED.
"""
from __future__ import annotations

import re
import secrets
import time

from skyrl_stack.errors import StackError

# EAGER_NEXT_REGION is SkyPilot's default strategy (registry default=True): on a
# preemption it terminates the cluster and tries another region first, where the
# capacity that was just taken back is less likely to be taken again soon.
RECOVERY_STRATEGY = "EAGER_NEXT_REGION"
# Restarts after a failure with the cluster UP (exit 1: actor/node death, NCCL
# timeout, or a bug). 3: a transient fault rarely strikes three times in one run,
# and a bug then wastes at most 3 provisionings + image pulls (README "Long runs on spot").
MAX_RESTARTS_ON_ERRORS = 3
# Why `trainer.resume_mode=latest` whenever checkpoints are durable (task_spec.training_values):
# SkyRL reads latest_ckpt_global_step.txt in ckpt_path and starts from scratch when there is
# none (trainer_utils), so a first run and every recovery of a managed job run the same
# command. On node disks a checkpoint is never complete on one node (each rank writes its
# own shards there, the driver's node the trainer state), hence null without a bucket.
RESUME = "latest"
# Exit codes recovered without limit: none of the driver's codes means "the
# machine failed" only (see the module docstring).
RECOVER_ON_EXIT_CODES: tuple[int, ...] = ()

# A run name is a folder under the bucket and the SkyPilot managed job's name: SkyPilot's
# rule for names (sky/task.py _VALID_NAME_REGEX: alphanumeric at both ends, at most two
# '.', '_' or '-' in a row), so no '/' that would nest in another run's folder, no spaces,
# no '..' alone; at most 63 characters, a DNS label, safe for any store.
_RUN_NAME = re.compile(r"[A-Za-z0-9]+(?:[._-]{1,2}[A-Za-z0-9]+)*")
MAX_RUN_NAME = 63


def job_recovery() -> dict:
    """`resources.job_recovery` of a managed task (SkyPilot schema: sky/utils/schemas.py)."""
    return {
        "strategy": RECOVERY_STRATEGY,
        "max_restarts_on_errors": MAX_RESTARTS_ON_ERRORS,
        "recover_on_exit_codes": list(RECOVER_ON_EXIT_CODES),
    }


def generated_run_name(variant: str, now: float | None = None, token: str | None = None) -> str:
    """`<variant>-YYYYmmdd-HHMMSS-xxxx` (UTC): unique enough that two launches never share a folder."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(time.time() if now is None else now))
    return f"{variant}-{stamp}-{token or secrets.token_hex(2)}"


def check_durable_resume_mode(mode: str) -> None:
    """With durable storage the run and every recovery rest on `latest` (RESUME): `null` would restart a
    managed job at step 0 on each recovery (and --resume NAME at 0 in a folder whose old steps SkyRL's
    cleanup keeps); `from_path` would reload the same checkpoint on each recovery."""
    if mode != RESUME:
        raise StackError(f"bad --set trainer.resume_mode={mode}: with --bucket the run resumes from its own "
                         f"folder's newest checkpoint (resume_mode={RESUME}), every recovery included",
                         hint="leave it out; --resume NAME continues a run, --run NAME starts one in a new folder")


def parse_run(run: str | None, resume: str | None, variant: str) -> tuple[str, bool]:
    """--run NAME / --resume NAME -> (run name, resume?); neither: a generated name, a new run."""
    for option, value in (("--run", run), ("--resume", resume)):
        if value is not None and not value.strip():  # `--resume ""` would silently start a new run
            raise StackError(f"bad {option} {value!r}: it is empty", hint=f"name the run: {option} NAME, or leave {option} out")
    if run and resume:
        raise StackError("--run and --resume are mutually exclusive",
                         hint="--run NAME starts a new run, --resume NAME continues one that has checkpoints")
    name = check_run_name(resume or run, "--resume" if resume else "--run")
    if name is None:
        return generated_run_name(variant), False
    return name, bool(resume)


def check_run_name(name: str | None, option: str = "--run") -> str | None:
    """A run's name as `invoke jobs.*` takes it (None: not given): SkyPilot's name rule, as --run's."""
    if name is None or name == "":
        return None
    if not _RUN_NAME.fullmatch(name) or len(name) > MAX_RUN_NAME:
        raise StackError(f"bad {option} {name!r}: a run name is a folder under the bucket and a SkyPilot job name",
                         hint=f"use letters and digits, joined by at most two of '.', '_', '-' (at most {MAX_RUN_NAME} "
                              "characters, a letter or digit at both ends), e.g. gsm8k-r1")
    return name


def require_durable_storage(managed: bool, bucket: str | None, cloud: str | None) -> None:
    """A managed run needs checkpoints that outlive the nodes: every recovery replaces them."""
    if managed and not bucket:
        where = "a host directory: --bucket /abs/dir" if cloud == "local" else "a bucket: --bucket s3://BUCKET/PATH"
        raise StackError(
            "--managed needs durable checkpoint storage: a recovery provisions new nodes, so checkpoints on "
            "the nodes' disks are lost and every recovery would restart at step 0",
            hint=f"give it {where}",
        )
