"""The training loggers (SkyRL's `trainer.logger`) the image can run.

SkyRL's tracking (skyrl_train/utils/tracking.py, class Tracking) accepts
wandb, mlflow, swanlab, tensorboard and console, but imports each backend's
package only when the job starts: one the image does not hold fails after the
cluster is up. The image holds exactly SkyRL's lock at the pinned commit
(`uv sync --frozen`), so a logger is offered only when its package is locked
for every SkyRL extra: at 1ed499c `wandb` and `tensorboard` are SkyRL's core
dependencies, `mlflow` and `swanlab` are in no extra.
tests/launch/test_launch_env.py derives this table's packages from that lock
(tests/data/skyrl-1ed499c) and fails when they disagree.
"""
from __future__ import annotations

from skyrl_stack.errors import StackError

# logger -> the package SkyRL's Tracking imports for it (None: none needed).
# tensorboard: torch.utils.tensorboard's SummaryWriter needs the tensorboard package.
LOGGER_PACKAGES = {"wandb": "wandb", "console": None, "tensorboard": "tensorboard"}
LOGGERS = tuple(LOGGER_PACKAGES)
# SkyRL's backends whose package its lock at the pinned commit does not hold.
NOT_IN_IMAGE = {"mlflow": "mlflow", "swanlab": "swanlab"}


def check_logger(value: str, source: str = "--logger") -> str:
    """A logger the image can run, or one line naming where the value came from."""
    if value in LOGGER_PACKAGES:
        return value
    if value in NOT_IN_IMAGE:
        raise StackError(
            f"{source} {value}: SkyRL supports it, but the image cannot run it ({NOT_IN_IMAGE[value]} is not in "
            "SkyRL's uv.lock at the pinned commit, so training would fail after provisioning)",
            hint=f"choose one of: {', '.join(LOGGERS)}")
    raise StackError(f"unknown {source} {value!r}", hint=f"choose one of: {', '.join(LOGGERS)}")
