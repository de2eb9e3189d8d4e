"""The AWS registry stack (infra/aws/registry.yaml): deploy, read outputs, delete.

`invoke infra.up --cloud aws` creates the stack or updates it through a change
set (so a re-run with nothing to change says so and touches nothing), prints
the stack's events while CloudFormation works, and on failure names the
resource that failed and CloudFormation's reason. The outputs (repository URI,
instance profile) are cached under the state directory, so `invoke push
--registry ecr`, `invoke render --registry ecr` and the SkyPilot config read
them instead of a copy-pasted URI.

boto3 is imported inside functions only. It honours AWS_ENDPOINT_URL, which
is how the tests point all of this at a local moto server.
"""
from __future__ import annotations

import json
import os
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from skyrl_stack.errors import StackError
from skyrl_stack.image.records import state_dir, write_json_atomic, write_text_atomic
from skyrl_stack.image.refs import validate_repository
from skyrl_stack.project import project_root
from skyrl_stack.reporter import step

TEMPLATE = project_root() / "infra" / "aws" / "registry.yaml"
DEFAULT_STACK_NAME = "skyrl-stack-registry"
SUPPORTED_CLOUDS = ("aws",)
UP_HINT = "invoke infra.up --cloud aws"
# The role and instance profile are IAM resources with generated names.
CAPABILITIES = ["CAPABILITY_IAM"]
POLL_SECONDS = float(os.environ.get("SKYRL_STACK_STACK_POLL_SECONDS", "5"))

_SUCCESS = {"CREATE_COMPLETE", "UPDATE_COMPLETE", "DELETE_COMPLETE", "IMPORT_COMPLETE"}
# Terminal states that mean the last operation did not do what was asked.
_FAILED = {
    "CREATE_FAILED", "ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "DELETE_FAILED",
    "UPDATE_ROLLBACK_COMPLETE", "UPDATE_ROLLBACK_FAILED", "UPDATE_FAILED",
    "IMPORT_ROLLBACK_COMPLETE", "IMPORT_ROLLBACK_FAILED",
}
# A stack whose creation failed holds nothing usable and cannot be updated.
_DEAD = {"ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "CREATE_FAILED", "DELETE_FAILED"}


# --------------------------------------------------------------------------- input


def check_cloud(cloud: str) -> str:
    if cloud not in SUPPORTED_CLOUDS:
        raise StackError(
            f"infra for cloud {cloud!r} is not supported",
            hint=f"supported: {', '.join(SUPPORTED_CLOUDS)}; for GHCR, Docker Hub or GCP Artifact Registry "
                 "see README 'Registries' (no infra needed)",
        )
    return cloud


def resolve_region(region: str | None) -> str:
    """--region, else the AWS environment/profile's region; checked against botocore's region list."""
    import boto3

    session = boto3.session.Session()
    # AWS_REGION is the variable most AWS SDKs and the CLI read; botocore itself only reads AWS_DEFAULT_REGION.
    region = region or os.environ.get("AWS_REGION") or session.region_name
    if not region:
        raise StackError("no AWS region given", hint="pass --region (e.g. us-east-1) or set AWS_REGION")
    known = set()
    for partition in session.get_available_partitions():
        known.update(session.get_available_regions("cloudformation", partition_name=partition))
    if region not in known:
        raise StackError(
            f"unknown AWS region {region!r}",
            hint="use a region name such as us-east-1, us-west-2 or eu-west-1 (`aws ec2 describe-regions`)",
        )
    return region


def aws_session(region: str):
    """A boto3 session that has credentials, or a StackError saying how to provide them."""
    import boto3

    session = boto3.session.Session(region_name=region)
    if session.get_credentials() is None:
        raise StackError(
            "no AWS credentials found (environment, ~/.aws, SSO or instance role)",
            hint="set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, or run `aws configure` / `aws sso login`",
        )
    return session


def _parameters(repository_name: str | None, untagged_expiry_days: int | str | None, *, existing: bool) -> list[dict]:
    """Parameters given on the command line; on an update the others keep their deployed values."""
    if untagged_expiry_days is not None:
        text = str(untagged_expiry_days).strip()
        if not text.isdigit() or not 1 <= int(text) <= 3650:
            raise StackError(f"--untagged-expiry-days must be a whole number of days from 1 to 3650, "
                             f"not {untagged_expiry_days!r}")
        untagged_expiry_days = int(text)
    if repository_name is not None:
        validate_repository(repository_name)
    given = {"RepositoryName": repository_name, "UntaggedExpiryDays": untagged_expiry_days}
    params = []
    for key, value in given.items():
        if value is not None:
            params.append({"ParameterKey": key, "ParameterValue": str(value)})
        elif existing:
            params.append({"ParameterKey": key, "UsePreviousValue": True})
    return params


# --------------------------------------------------------------------------- API errors


def aws_call(what: str, fn, *args, **kwargs):
    """One AWS call; credential, network and API errors become one StackError line."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    try:
        return fn(*args, **kwargs)
    except NoCredentialsError:
        raise StackError("no AWS credentials found", hint="set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE") from None
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code, message = error.get("Code", "Error"), error.get("Message", str(exc))
        hint = None
        if code in {"InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken", "UnrecognizedClientException",
                    "AccessDenied", "AccessDeniedException"}:
            hint = "check the AWS credentials and their permissions (CloudFormation, ECR, IAM)"
        raise StackError(f"{what}: {code}: {_one_line(message)}", hint=hint) from None
    except BotoCoreError as exc:
        raise StackError(f"{what}: {_one_line(str(exc))}", hint="check the network and AWS_ENDPOINT_URL if set") from None


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _describe(cf, stack: str) -> dict | None:
    """The stack, or None when it does not exist."""
    from botocore.exceptions import ClientError

    try:
        return cf.describe_stacks(StackName=stack)["Stacks"][0]
    except ClientError as exc:
        if "does not exist" in exc.response.get("Error", {}).get("Message", ""):
            return None
        raise  # callers wrap this in aws_call, which words it


# --------------------------------------------------------------------------- events


def failure_reason(events: list[dict]) -> str | None:
    """The root cause among stack events (newest first, as CloudFormation lists them).

    The earliest *_FAILED resource event is the cause; later ones are usually
    "Resource creation cancelled" for siblings rolled back because of it.
    """
    for event in reversed(events):
        if event["ResourceStatus"].endswith("_FAILED") and event.get("LogicalResourceId") != event.get("StackName"):
            return (f"{event['LogicalResourceId']} ({event.get('ResourceType', '?')}) {event['ResourceStatus']}: "
                    f"{_one_line(event.get('ResourceStatusReason') or 'no reason given')}")
    for event in reversed(events):
        if event["ResourceStatus"].endswith("_FAILED") or "ROLLBACK" in event["ResourceStatus"]:
            reason = event.get("ResourceStatusReason")
            if reason:
                return f"{event['LogicalResourceId']} {event['ResourceStatus']}: {_one_line(reason)}"
    return None


class _EventPrinter:
    """Prints each new stack event once, oldest first, as a progress line."""

    def __init__(self, cf, stack_id: str):
        self.cf = cf
        self.stack_id = stack_id
        self.seen = {e["EventId"] for e in self._page()}
        self.new: list[dict] = []  # newest first, like the API

    def _page(self) -> list[dict]:
        return aws_call("cannot read stack events", self.cf.describe_stack_events, StackName=self.stack_id)["StackEvents"]

    def poll(self) -> None:
        fresh = [e for e in self._page() if e["EventId"] not in self.seen]
        for event in reversed(fresh):
            self.seen.add(event["EventId"])
            reason = event.get("ResourceStatusReason")
            step(f"{event['LogicalResourceId']} ({event.get('ResourceType', '')}): {event['ResourceStatus']}"
                 + (f" - {_one_line(reason)}" if reason else ""))
        self.new = fresh + self.new


def _wait(cf, stack_id: str, printer: _EventPrinter, action: str) -> dict:
    """Poll until the stack leaves *_IN_PROGRESS; a StackError naming the failing resource if it failed."""
    while True:
        printer.poll()
        stack = aws_call("cannot read the stack's status", cf.describe_stacks, StackName=stack_id)["Stacks"][0]
        status = stack["StackStatus"]
        if status.endswith("_IN_PROGRESS") and status != "REVIEW_IN_PROGRESS":
            time.sleep(POLL_SECONDS)
            continue
        if status in _SUCCESS:
            return stack
        reason = failure_reason(printer.new) or stack.get("StackStatusReason") or "no reason reported"
        hint = ("`invoke infra.down --cloud aws` removes the failed stack; fix the cause, then run infra.up again"
                if status in _DEAD else "the stack was rolled back to its previous state; fix the cause and re-run")
        raise StackError(f"{action} of stack {stack['StackName']} failed ({status}): {reason}", hint=hint)


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


def instance_profile(region: str | None = None) -> str:
    """The instance profile name for SkyPilot's aws.remote_identity."""
    return cached_outputs(region)["outputs"]["InstanceProfileName"]


# --------------------------------------------------------------------------- operations


def check_updatable(stack: dict, region: str) -> None:
    """CloudFormation refuses to update a stack whose creation failed, or one that is mid-operation."""
    name, status = stack["StackName"], stack["StackStatus"]
    if status in _DEAD or status == "REVIEW_IN_PROGRESS":
        raise StackError(
            f"stack {name} in {region} is in state {status} and cannot be updated",
            hint="remove it with `invoke infra.down --cloud aws` (nothing usable was created), then run infra.up again",
        )
    if status.endswith("_IN_PROGRESS"):
        raise StackError(f"stack {name} in {region} is busy ({status})",
                         hint="wait until the running operation finishes, then re-run")


def deploy(region: str | None = None, stack_name: str = DEFAULT_STACK_NAME, *, repository_name: str | None = None,
           untagged_expiry_days: int | str | None = None) -> dict:
    """Create or update the stack; returns the recorded outputs ({..., 'changed': bool})."""
    from botocore.exceptions import ClientError

    _parameters(repository_name, untagged_expiry_days, existing=False)  # bad input fails before any AWS call
    region = resolve_region(region)
    cf = aws_session(region).client("cloudformation")
    body = TEMPLATE.read_text()
    existing = aws_call(f"cannot reach CloudFormation in {region}", _describe, cf, stack_name)
    if existing:
        check_updatable(existing, region)
    params = _parameters(repository_name, untagged_expiry_days, existing=existing is not None)

    if existing is None:
        # A brand-new stack has nothing to review, so it is created directly:
        # unlike a CREATE change set, a failed create leaves no stack stuck in
        # REVIEW_IN_PROGRESS, only one in ROLLBACK_COMPLETE that infra.down removes.
        step(f"creating stack {stack_name} in {region}")
        created = aws_call(f"cannot create stack {stack_name}", cf.create_stack, StackName=stack_name, TemplateBody=body,
                        Parameters=params, Capabilities=CAPABILITIES, Tags=[{"Key": "app", "Value": "skyrl-stack"}])
        printer = _EventPrinter(cf, created["StackId"])
        printer.seen.clear()  # every event of a new stack is news
        stack = _wait(cf, created["StackId"], printer, "creation")
        step(f"stack {stack_name} created")
        return {**_cache(stack, region), "changed": True}

    name = f"skyrl-stack-{uuid.uuid4().hex[:12]}"
    step(f"planning changes to stack {stack_name} in {region}")
    try:
        change_set = cf.create_change_set(StackName=stack_name, ChangeSetName=name, ChangeSetType="UPDATE",
                                          TemplateBody=body, Parameters=params, Capabilities=CAPABILITIES)
        described = _wait_for_change_set(cf, change_set["Id"])
        reason = described.get("StatusReason") or ""
    except ClientError as exc:
        # Some endpoints (moto) refuse an empty plan up front instead of failing the change set.
        reason = exc.response.get("Error", {}).get("Message", "")
        if not _NO_CHANGES(reason):
            aws_call(f"cannot plan changes to stack {stack_name}", _reraise, exc)
        described = {"Status": "FAILED"}
        change_set = None
    if described["Status"] == "FAILED":
        if change_set:
            aws_call("cannot delete the empty change set", cf.delete_change_set, ChangeSetName=change_set["Id"])
        if _NO_CHANGES(reason):
            step(f"no changes: stack {stack_name} is up to date")
            return {**_cache(existing, region), "changed": False}
        raise StackError(f"planning changes to stack {stack_name} failed: {_one_line(reason)}")
    for change in described.get("Changes", []):
        rc = change.get("ResourceChange", {})
        step(f"change: {rc.get('Action')} {rc.get('LogicalResourceId')} ({rc.get('ResourceType')})"
             + (f", replacement: {rc['Replacement']}" if rc.get("Replacement") not in (None, "False") else ""))
    printer = _EventPrinter(cf, existing["StackId"])
    aws_call(f"cannot update stack {stack_name}", cf.execute_change_set, ChangeSetName=change_set["Id"])
    stack = _wait(cf, existing["StackId"], printer, "update")
    step(f"stack {stack_name} updated")
    return {**_cache(stack, region), "changed": True}


def _NO_CHANGES(reason: str) -> bool:
    return "didn't contain changes" in reason or "No updates are to be performed" in reason


def _reraise(exc: Exception):
    raise exc


def _wait_for_change_set(cf, change_set_id: str) -> dict:
    while True:
        described = aws_call("cannot read the change set", cf.describe_change_set, ChangeSetName=change_set_id)
        if described["Status"] in {"CREATE_COMPLETE", "FAILED"}:
            return described
        time.sleep(min(POLL_SECONDS, 2))


def refresh_outputs(region: str | None = None, stack_name: str = DEFAULT_STACK_NAME) -> dict:
    """Read a deployed stack's outputs and record them (infra.outputs)."""
    region = resolve_region(region)
    cf = aws_session(region).client("cloudformation")
    stack = aws_call(f"cannot reach CloudFormation in {region}", _describe, cf, stack_name)
    if stack is None:
        raise StackError(f"no stack {stack_name} in {region}", hint=f"run: {UP_HINT} --region {region}")
    if stack["StackStatus"] not in _SUCCESS and stack["StackStatus"] != "UPDATE_ROLLBACK_COMPLETE":
        raise StackError(f"stack {stack_name} in {region} is in state {stack['StackStatus']}; it has no usable outputs",
                         hint=f"run: {UP_HINT} --region {region} (or infra.down if it failed to create)")
    return _cache(stack, region)


def destroy(region: str | None = None, stack_name: str = DEFAULT_STACK_NAME) -> bool:
    """Delete the stack and its recorded outputs; False when there was nothing to delete."""
    region = resolve_region(region)
    cf = aws_session(region).client("cloudformation")
    stack = aws_call(f"cannot reach CloudFormation in {region}", _describe, cf, stack_name)
    if stack is None:
        step(f"no stack {stack_name} in {region}: nothing to delete")
        outputs_path(region).unlink(missing_ok=True)
        return False
    step(f"deleting stack {stack_name} in {region}")
    printer = _EventPrinter(cf, stack["StackId"])
    aws_call(f"cannot delete stack {stack_name}", cf.delete_stack, StackName=stack["StackId"])
    try:
        _wait(cf, stack["StackId"], printer, "deletion")
    except StackError as exc:
        # The usual cause: CloudFormation never deletes an ECR repository that still holds images.
        raise StackError(exc.message, hint="delete what the reason names (e.g. the repository's images with "
                                           "`aws ecr batch-delete-image`), then run infra.down again") from None
    outputs_path(region).unlink(missing_ok=True)
    step(f"stack {stack_name} deleted")
    return True


# --------------------------------------------------------------------------- SkyPilot config

SKYPILOT_CONFIG_TEMPLATE = TEMPLATE.parent.parent / "skypilot" / "config.yaml"
PROFILE_PLACEHOLDER = "SKYRL_STACK_INSTANCE_PROFILE"


def skypilot_config_path(region: str) -> Path:
    return state_dir() / "infra" / f"skypilot-aws-{region}.yaml"


def write_skypilot_config(region: str | None = None) -> Path:
    """infra/skypilot/config.yaml with the stack's instance profile filled in (from the recorded outputs)."""
    recorded = cached_outputs(region)
    profile = recorded["outputs"]["InstanceProfileName"]
    text = SKYPILOT_CONFIG_TEMPLATE.read_text()
    # Text substitution keeps the file's comments, which explain each setting.
    text = text.replace(PROFILE_PLACEHOLDER, profile)
    header = (f"# Generated by `invoke infra.skypilot-config` from infra/skypilot/config.yaml\n"
              f"# for stack {recorded['stack_name']} in {recorded['region']}.\n")
    path = skypilot_config_path(recorded["region"])
    write_text_atomic(path, header + text)
    return path


def print_outputs(recorded: dict) -> None:
    """The outputs on stdout (key value lines, easy to read and to grep), where they were recorded on stderr."""
    for key, value in sorted(recorded["outputs"].items()):
        print(f"{key} {value}")
    step(f"recorded in {outputs_path(recorded['region'])}")
