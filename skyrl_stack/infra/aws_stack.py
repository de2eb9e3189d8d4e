"""The AWS registry stack (infra/aws/registry.yaml): deploy, read outputs, delete.

`invoke infra.up --cloud aws` creates the stack or updates it through a change
set (so a re-run with nothing to change says so and touches nothing), reporting
the stack's events while CloudFormation works (stack_events.py). The outputs
(repository URI, instance profile) are recorded under the state directory, so
`invoke push --registry ecr`, `invoke render --registry ecr` and the SkyPilot
config layer (skypilot_config.py) read them instead of a copy-pasted URI.

boto3 is imported inside functions only (see aws_api.py).
"""
from __future__ import annotations

import json
import os
import uuid
from datetime import datetime, timezone
from pathlib import Path

from skyrl_stack.errors import StackError
from skyrl_stack.image.records import state_dir, write_json_atomic
from skyrl_stack.image.refs import validate_repository
from skyrl_stack.infra.aws_api import api_error, aws_call, aws_session, one_line, resolve_region
from skyrl_stack.infra.stack_events import DEAD, SUCCESS, EventPrinter, wait_for_change_set, wait_for_stack
from skyrl_stack.project import project_root
from skyrl_stack.reporter import step

TEMPLATE = project_root() / "infra" / "aws" / "registry.yaml"
DEFAULT_STACK_NAME = "skyrl-stack-registry"
SUPPORTED_CLOUDS = ("aws",)
UP_HINT = "invoke infra.up --cloud aws"
# The role and instance profile are IAM resources with generated names.
CAPABILITIES = ["CAPABILITY_IAM"]


# --------------------------------------------------------------------------- input


def check_cloud(cloud: str) -> str:
    """The registry stack exists for AWS only; other registries need no infra (README 'Registries')."""
    if cloud not in SUPPORTED_CLOUDS:
        raise StackError(
            f"infra for cloud {cloud!r} is not supported",
            hint=f"supported: {', '.join(SUPPORTED_CLOUDS)}; for GHCR, Docker Hub or GCP Artifact Registry "
                 "see README 'Registries' (no infra needed)",
        )
    return cloud


def _parameters(repository_name: str | None, untagged_expiry_days: int | str | None, *, existing: bool,
                previous: frozenset = frozenset()) -> list[dict]:
    """Parameters given on the command line; on an update the others keep their deployed values.

    previous: the deployed stack's parameter keys. A parameter the template
    gained since (e.g. IncompleteUploadExpiryDays) gets its default: CloudFormation
    refuses UsePreviousValue for a key the stack never had.
    """
    if untagged_expiry_days is not None:
        text = str(untagged_expiry_days).strip()
        if not text.isdigit() or not 1 <= int(text) <= 3650:
            raise StackError(f"--untagged-expiry-days must be a whole number of days from 1 to 3650, "
                             f"not {untagged_expiry_days!r}")
        untagged_expiry_days = int(text)
    if repository_name is not None:
        validate_repository(repository_name)
    given = {"RepositoryName": repository_name, "UntaggedExpiryDays": untagged_expiry_days,
             "IncompleteUploadExpiryDays": None}
    params = []
    for key, value in given.items():
        if value is not None:
            params.append({"ParameterKey": key, "ParameterValue": str(value)})
        elif existing and key in previous:
            params.append({"ParameterKey": key, "UsePreviousValue": True})
    return params


# --------------------------------------------------------------------------- outputs cache


def outputs_path(region: str) -> Path:
    return state_dir() / "infra" / f"aws-{region}.json"


def _cache(stack: dict, region: str) -> dict:
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs") or []}
    missing = {"RepositoryUri", "InstanceProfileName", "InstanceProfileArn"} - outputs.keys()
    if missing:
        raise StackError(
            f"stack {stack['StackName']} lacks outputs {', '.join(sorted(missing))}",
            hint=f"it was not made from infra/aws/registry.yaml; run {UP_HINT} --stack-name <another name>",
        )
    data = {
        "cloud": "aws",
        "region": region,
        "stack_name": stack["StackName"],
        "stack_id": stack["StackId"],
        "status": stack["StackStatus"],
        "parameters": {p["ParameterKey"]: p.get("ParameterValue") for p in stack.get("Parameters") or []},
        "outputs": outputs,
        "recorded_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    write_json_atomic(outputs_path(region), data)
    return data


def cached_outputs(region: str | None = None) -> dict:
    """The outputs recorded by the last infra.up/infra.outputs (for one region, or the only one recorded)."""
    folder = state_dir() / "infra"
    if region:
        path = outputs_path(region)
        candidates = [path] if path.exists() else []
    else:
        candidates = sorted(folder.glob("aws-*.json")) if folder.is_dir() else []
        if len(candidates) > 1:
            default = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
            chosen = [p for p in candidates if default and p.name == f"aws-{default}.json"]
            if not chosen:
                regions = ", ".join(p.stem.removeprefix("aws-") for p in candidates)
                raise StackError(f"registry stacks recorded in several regions ({regions})",
                                 hint="pick one with --region or AWS_REGION")
            candidates = chosen
    if not candidates:
        where = f" in {region}" if region else ""
        raise StackError(f"no AWS registry stack recorded{where} ({folder})",
                         hint=f"run: {UP_HINT}{f' --region {region}' if region else ''} "
                              "(or `invoke infra.outputs --cloud aws` for an existing stack)")
    try:
        return json.loads(candidates[0].read_text())
    except ValueError as exc:
        raise StackError(f"{candidates[0]} is unreadable: {exc}", hint="run: invoke infra.outputs --cloud aws") from None


def ecr_repository_uri(region: str | None = None) -> str:
    """The ECR repository URI from the stack's recorded outputs (push/render --registry ecr).

    Checked by the reference grammar: the file is state on disk, and what it
    holds ends up in the task's image_id.
    """
    uri = cached_outputs(region)["outputs"].get("RepositoryUri")
    try:
        return validate_repository(uri, what="RepositoryUri in the registry stack's outputs")
    except StackError as exc:
        raise StackError(exc.message, hint="refresh the recorded outputs: invoke infra.outputs --cloud aws") from None


def print_outputs(recorded: dict) -> None:
    """The outputs on stdout (key value lines, easy to read and to grep), where they were recorded on stderr."""
    for key, value in sorted(recorded["outputs"].items()):
        print(f"{key} {value}")
    step(f"recorded in {outputs_path(recorded['region'])}")


# --------------------------------------------------------------------------- operations


def _find_stack(cloud: str, region: str | None, stack_name: str | None) -> tuple[str, str, object, dict | None]:
    """(stack name, region, CloudFormation client, the stack or None when it does not exist)."""
    check_cloud(cloud)
    stack_name = stack_name or DEFAULT_STACK_NAME
    region = resolve_region(region)
    cf = aws_session(region).client("cloudformation")
    return stack_name, region, cf, aws_call(f"cannot reach CloudFormation in {region}", _describe, cf, stack_name)


def _describe(cf, stack: str) -> dict | None:
    """The stack, or None when it does not exist."""
    from botocore.exceptions import ClientError

    try:
        return cf.describe_stacks(StackName=stack)["Stacks"][0]
    except ClientError as exc:
        if "does not exist" in exc.response.get("Error", {}).get("Message", ""):
            return None
        raise  # callers wrap this in aws_call, which words it


def check_updatable(stack: dict, region: str) -> None:
    """CloudFormation refuses to update a stack whose creation failed, or one that is mid-operation."""
    name, status = stack["StackName"], stack["StackStatus"]
    if status in DEAD or status == "REVIEW_IN_PROGRESS":
        raise StackError(
            f"stack {name} in {region} is in state {status} and cannot be updated",
            hint="remove it with `invoke infra.down --cloud aws` (nothing usable was created), then run infra.up again",
        )
    if status.endswith("_IN_PROGRESS"):
        raise StackError(f"stack {name} in {region} is busy ({status})",
                         hint="wait until the running operation finishes, then re-run")


def deploy(cloud: str = "aws", region: str | None = None, stack_name: str | None = None, *,
           repository_name: str | None = None, untagged_expiry_days: int | str | None = None) -> dict:
    """Create or update the stack; returns the recorded outputs ({..., 'changed': bool})."""
    _parameters(repository_name, untagged_expiry_days, existing=False)  # bad input fails before any AWS call
    stack_name, region, cf, existing = _find_stack(cloud, region, stack_name)
    if existing:
        check_updatable(existing, region)
    params = _parameters(repository_name, untagged_expiry_days, existing=existing is not None,
                         previous=frozenset(p["ParameterKey"] for p in (existing or {}).get("Parameters") or []))
    if existing is None:
        return _create(cf, region, stack_name, params)
    return _update(cf, region, existing, params)


def _create(cf, region: str, stack_name: str, params: list[dict]) -> dict:
    # A brand-new stack has nothing to review, so it is created directly:
    # unlike a CREATE change set, a failed create leaves no stack stuck in
    # REVIEW_IN_PROGRESS, only one in ROLLBACK_COMPLETE that infra.down removes.
    step(f"creating stack {stack_name} in {region}")
    created = aws_call(f"cannot create stack {stack_name}", cf.create_stack, StackName=stack_name,
                       TemplateBody=TEMPLATE.read_text(), Parameters=params, Capabilities=CAPABILITIES,
                       Tags=[{"Key": "app", "Value": "skyrl-stack"}])
    stack = wait_for_stack(cf, EventPrinter(cf, created["StackId"], new_stack=True), "creation")
    step(f"stack {stack_name} created")
    return {**_cache(stack, region), "changed": True}


def _update(cf, region: str, existing: dict, params: list[dict]) -> dict:
    stack_name = existing["StackName"]
    step(f"planning changes to stack {stack_name} in {region}")
    change_set = _plan_update(cf, stack_name, params)
    if change_set is None:
        step(f"no changes: stack {stack_name} is up to date")
        return {**_cache(existing, region), "changed": False}
    for change in change_set.get("Changes", []):
        rc = change.get("ResourceChange", {})
        step(f"change: {rc.get('Action')} {rc.get('LogicalResourceId')} ({rc.get('ResourceType')})"
             + (f", replacement: {rc['Replacement']}" if rc.get("Replacement") not in (None, "False") else ""))
    printer = EventPrinter(cf, existing["StackId"])
    aws_call(f"cannot update stack {stack_name}", cf.execute_change_set, ChangeSetName=change_set["ChangeSetId"])
    stack = wait_for_stack(cf, printer, "update")
    step(f"stack {stack_name} updated")
    return {**_cache(stack, region), "changed": True}


def _plan_update(cf, stack_name: str, params: list[dict]) -> dict | None:
    """The UPDATE change set as CloudFormation describes it; None when it changes nothing (then it is deleted)."""
    from botocore.exceptions import ClientError

    try:
        created = cf.create_change_set(StackName=stack_name, ChangeSetName=f"skyrl-stack-{uuid.uuid4().hex[:12]}",
                                       ChangeSetType="UPDATE", TemplateBody=TEMPLATE.read_text(), Parameters=params,
                                       Capabilities=CAPABILITIES)
    except ClientError as exc:
        # Some endpoints (moto) refuse an empty plan up front instead of failing the change set.
        if _no_changes(exc.response.get("Error", {}).get("Message", "")):
            return None
        raise api_error(f"cannot plan changes to stack {stack_name}", exc) from None
    described = wait_for_change_set(cf, created["Id"])
    if described["Status"] != "FAILED":
        return {**described, "ChangeSetId": created["Id"]}
    aws_call("cannot delete the empty change set", cf.delete_change_set, ChangeSetName=created["Id"])
    reason = described.get("StatusReason") or ""
    if _no_changes(reason):
        return None
    raise StackError(f"planning changes to stack {stack_name} failed: {one_line(reason)}")


def _no_changes(reason: str) -> bool:
    return "didn't contain changes" in reason or "No updates are to be performed" in reason


def refresh_outputs(cloud: str = "aws", region: str | None = None, stack_name: str | None = None) -> dict:
    """Read a deployed stack's outputs and record them (infra.outputs)."""
    stack_name, region, _, stack = _find_stack(cloud, region, stack_name)
    if stack is None:
        raise StackError(f"no stack {stack_name} in {region}", hint=f"run: {UP_HINT} --region {region}")
    if stack["StackStatus"] not in SUCCESS and stack["StackStatus"] != "UPDATE_ROLLBACK_COMPLETE":
        raise StackError(f"stack {stack_name} in {region} is in state {stack['StackStatus']}; it has no usable outputs",
                         hint=f"run: {UP_HINT} --region {region} (or infra.down if it failed to create)")
    return _cache(stack, region)


def destroy(cloud: str = "aws", region: str | None = None, stack_name: str | None = None) -> bool:
    """Delete the stack and its recorded outputs; False when there was nothing to delete."""
    stack_name, region, cf, stack = _find_stack(cloud, region, stack_name)
    if stack is None:
        step(f"no stack {stack_name} in {region}: nothing to delete")
        outputs_path(region).unlink(missing_ok=True)
        return False
    step(f"deleting stack {stack_name} in {region}")
    printer = EventPrinter(cf, stack["StackId"])
    aws_call(f"cannot delete stack {stack_name}", cf.delete_stack, StackName=stack["StackId"])
    try:
        wait_for_stack(cf, printer, "deletion")
    except StackError as exc:
        # The usual causes: CloudFormation never deletes an ECR repository that still holds images, nor an
        # S3 bucket that still holds objects (the checkpoint bucket, CheckpointBucketName).
        raise StackError(exc.message, hint="delete what the reason names (the repository's images: `aws ecr "
                                           "batch-delete-image`; the checkpoints in the bucket `invoke "
                                           "infra.outputs` names CheckpointBucketName: `aws s3 rm s3://BUCKET "
                                           "--recursive`), then run infra.down again") from None
    outputs_path(region).unlink(missing_ok=True)
    step(f"stack {stack_name} deleted")
    return True
