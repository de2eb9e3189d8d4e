"""Whether a run's checkpoint folder under the bucket already holds checkpoints, before a launch pays.

A new run (--run NAME, or a generated name) must find its folder without
checkpoints: SkyRL's cleanup keeps the highest steps of the folder
(trainer_utils.cleanup_old_checkpoints) and `resume_mode=latest` loads the
pointer it finds, so a new run in an old run's folder would resume the old run
or delete its own checkpoints. `--resume NAME` must find them.

SkyRL's checkpoints in a folder (SkyRL 1ed499c trainer.py save_checkpoints):
`global_step_N/` per checkpoint and `latest_ckpt_global_step.txt`, the pointer.

run_path_state is the one place a scheme is checked; s3:// is listed with
boto3 (the credentials and endpoint SkyPilot's own S3 store uses on this
machine: the default chain, AWS_ENDPOINT_URL included). Other schemes are not
checked here, and say so. boto3 is imported inside the function.
"""
from __future__ import annotations

import sys
from typing import Literal

from skyrl_stack.errors import StackError
from skyrl_stack.launch.local_bucket import local_run_state
from skyrl_stack.launch.task_spec import TaskSpec

POINTER = "latest_ckpt_global_step.txt"
STEP_PREFIX = "global_step_"

State = Literal["empty", "has-checkpoints", "unknown"]


def run_url(bucket: str, run: str) -> str:
    """The run's folder: the bucket (mounted at BUCKET_MOUNT) joined with the run's name."""
    return f"{bucket.rstrip('/')}/{run}"


def run_path_state(bucket: str, run: str) -> tuple[State, str]:
    """('empty' | 'has-checkpoints' | 'unknown', why): what the run's folder under `bucket` holds."""
    scheme = bucket.partition("://")[0] if "://" in bucket else ""
    checker = _CHECKERS.get(scheme)
    if checker is None:
        return "unknown", f"{scheme or 'this'} storage is not checked before launch (only s3:// is)"
    return checker(bucket, run)


def _s3_state(bucket: str, run: str) -> tuple[State, str]:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    name, _, prefix = bucket.removeprefix("s3://").partition("/")
    key_prefix = f"{prefix.strip('/')}/{run}/" if prefix.strip("/") else f"{run}/"
    try:
        pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=name, Prefix=key_prefix)
        for page in pages:
            for item in page.get("Contents", ()):
                rest = item["Key"][len(key_prefix):]
                if rest == POINTER or rest.startswith(STEP_PREFIX):
                    return "has-checkpoints", f"{run_url(bucket, run)} holds {rest.split('/')[0]}"
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchBucket", "404"):  # SkyPilot creates a missing bucket at launch: nothing in it yet
            return "empty", f"bucket {name} does not exist yet"
        return "unknown", f"cannot list {run_url(bucket, run)}: {code or exc}"
    except BotoCoreError as exc:  # no credentials, no endpoint
        return "unknown", f"cannot list {run_url(bucket, run)}: {exc}"
    return "empty", f"{run_url(bucket, run)} holds no checkpoints"


# scheme -> checker; "" is a `--cloud local` host directory (local_bucket.py).
_CHECKERS = {"s3": _s3_state, "": local_run_state}


def check_run_path(spec: TaskSpec) -> State | None:
    """Refuse a new run whose folder holds checkpoints and a --resume whose folder does not;
    a folder that cannot be checked is a warning line, never a silent pass. None without a bucket."""
    if not spec.bucket or not spec.run_name:
        return None
    state, why = run_path_state(spec.bucket, spec.run_name)
    where = run_url(spec.bucket, spec.run_name)
    if state == "unknown":
        expect = "holds its checkpoints" if spec.resume else "holds no checkpoints"
        print(f"WARNING: could not check that {where} {expect}: {why}", file=sys.stderr, flush=True)
    elif state == "has-checkpoints" and not spec.resume:
        raise StackError(f"run {spec.run_name} already has checkpoints ({why}): a new run there would resume "
                         "or delete them",
                         hint=f"continue it with --resume {spec.run_name}, or start another with --run OTHER_NAME")
    elif state == "empty" and spec.resume:
        raise StackError(f"--resume {spec.run_name}: no checkpoints to resume ({why})",
                         hint=f"check the name and --bucket; start it anew with --run {spec.run_name}")
    return state
