"""The AWS registry stack against moto in server mode: real boto3 over HTTP, nothing patched.

`invoke infra.*` runs as a subprocess with AWS_ENDPOINT_URL pointing at a
moto_server on 127.0.0.1, the way a user runs it against AWS.

What moto 5.2 cannot do, and how these tests deal with it:
- it emits no per-resource stack events and never reaches ROLLBACK_COMPLETE
  (a failing resource makes CreateStack itself return the error and leaves
  the stack CREATE_IN_PROGRESS). The failure path it can produce (a taken
  repository name) runs for real; reading the failing resource out of
  CloudFormation's events and refusing a ROLLBACK_COMPLETE stack are checked
  with CloudFormation-shaped event records (test names say "recorded").
- it does not apply an ECR repository's LifecyclePolicy/scan settings or a
  role's ManagedPolicyArns made through CloudFormation, so the update is
  checked on the stack (its parameters and change set), not on ECR, and
  test_infra_template checks those properties in the template.
- executing an UPDATE change set leaves moto's idea of the stack parameters
  stale, so "no changes" is checked on the re-run before the update.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml

from tests.support.moto import moto_server

from tests.support.paths import REPO_ROOT
INVOKE = str(Path(sys.executable).with_name("invoke"))
STACK = "skyrl-stack-registry"
REGION = "us-east-1"


@pytest.fixture(scope="module")
def moto_url():
    """moto_server as a process on a free port; terminated at the end of the module."""
    with moto_server() as url:
        yield url


@pytest.fixture
def aws(moto_url, state_dir, monkeypatch, tmp_path):
    """A clean moto account and an environment pointing boto3 (in-process and subprocess) at it."""
    requests.post(f"{moto_url}/moto-api/reset", timeout=10).raise_for_status()
    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    env = {
        "AWS_ENDPOINT_URL": moto_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def boto(service: str):
    import boto3

    return boto3.client(service, region_name=REGION)


def invoke(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([INVOKE, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                          env=env if env is not None else dict(os.environ))


def stack_outputs() -> dict:
    stack = boto("cloudformation").describe_stacks(StackName=STACK)["Stacks"][0]
    return {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}


def test_stack_deploys_reruns_without_changes_updates_and_deletes(aws, state_dir):
    up = invoke("infra.up", "--cloud", "aws", "--region", REGION)
    assert up.returncode == 0, up.stderr
    assert f"==> creating stack {STACK} in {REGION}" in up.stderr
    assert f"==> {STACK} (AWS::CloudFormation::Stack): CREATE_COMPLETE" in up.stderr  # progress from events
    outputs = stack_outputs()
    assert f"RepositoryUri {outputs['RepositoryUri']}" in up.stdout
    assert outputs["RepositoryUri"].endswith(".dkr.ecr.us-east-1.amazonaws.com/skyrl-stack")
    (repo,) = boto("ecr").describe_repositories()["repositories"]
    assert repo["imageTagMutability"] == "IMMUTABLE"
    profile = boto("iam").get_instance_profile(InstanceProfileName=outputs["InstanceProfileName"])["InstanceProfile"]
    (role,) = profile["Roles"]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    # (moto does not attach ManagedPolicyArns given through CloudFormation; test_infra_template checks the ECR one)
    assert sorted(boto("iam").list_role_policies(RoleName=role["RoleName"])["PolicyNames"]) == [
        "checkpoint-bucket", "ecr-pull", "skypilot-autostop"]
    assert boto("s3").head_bucket(Bucket=outputs["CheckpointBucketName"])  # what each policy grants: test_node_identity
    recorded = json.loads((state_dir / "infra" / f"aws-{REGION}.json").read_text())
    assert recorded["outputs"] == outputs

    again = invoke("infra.up", "--cloud", "aws", "--region", REGION)
    assert again.returncode == 0, again.stderr
    assert f"no changes: stack {STACK} is up to date" in again.stderr
    assert not boto("cloudformation").list_change_sets(StackName=STACK)["Summaries"]  # the empty plan is cleaned up

    update = invoke("infra.up", "--cloud", "aws", "--region", REGION, "--untagged-expiry-days", "30")
    assert update.returncode == 0, update.stderr
    assert f"==> stack {STACK} updated" in update.stderr
    assert f"==> {STACK} (AWS::CloudFormation::Stack): UPDATE_COMPLETE" in update.stderr
    stack = boto("cloudformation").describe_stacks(StackName=STACK)["Stacks"][0]
    assert stack["StackStatus"] == "UPDATE_COMPLETE"
    params = {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]}
    assert params == {"RepositoryName": "skyrl-stack", "UntaggedExpiryDays": "30",
                      "IncompleteUploadExpiryDays": "3"}  # repository name kept

    down = invoke("infra.down", "--cloud", "aws", "--region", REGION)
    assert down.returncode == 0, down.stderr
    assert f"==> stack {STACK} deleted" in down.stderr
    assert boto("ecr").describe_repositories()["repositories"] == []
    assert not (state_dir / "infra" / f"aws-{REGION}.json").exists()
    gone = invoke("infra.down", "--cloud", "aws", "--region", REGION)
    assert gone.returncode == 0 and "nothing to delete" in gone.stderr


def test_outputs_feed_push_render_and_skypilot_config(aws, state_dir):
    """ecr_repository_uri() and the SkyPilot config layer read the recorded outputs; the ECR login comes from moto."""
    from skyrl_stack.infra import aws_stack, ecr
    from skyrl_stack.errors import StackError

    with pytest.raises(StackError, match="no AWS registry stack recorded") as missing:
        aws_stack.ecr_repository_uri()
    assert missing.value.hint.startswith("run: invoke infra.up --cloud aws")

    assert invoke("infra.up", "--cloud", "aws", "--repository-name", "team/skyrl").returncode == 0
    outputs = stack_outputs()
    assert aws_stack.ecr_repository_uri() == outputs["RepositoryUri"]
    assert aws_stack.ecr_repository_uri(REGION).endswith("/team/skyrl")

    # infra.outputs re-records from the stack itself (e.g. on another machine).
    (state_dir / "infra" / f"aws-{REGION}.json").unlink()
    shown = invoke("infra.outputs", "--cloud", "aws")
    assert shown.returncode == 0, shown.stderr
    assert f"InstanceProfileArn {outputs['InstanceProfileArn']}" in shown.stdout
    assert aws_stack.ecr_repository_uri() == outputs["RepositoryUri"]

    auth = ecr.docker_auth_config(aws_stack.ecr_repository_uri())
    host = outputs["RepositoryUri"].split("/")[0]
    assert auth == {"username": "AWS", "password": "123456789012-auth-token", "serveraddress": host}

    rendered = invoke("infra.skypilot-config")
    assert rendered.returncode == 0, rendered.stderr
    path = Path(rendered.stdout.strip().removeprefix("export SKYPILOT_PROJECT_CONFIG="))
    assert path == state_dir / "infra" / f"skypilot-aws-{REGION}.yaml"
    config = yaml.safe_load(path.read_text())
    # (how SkyPilot applies it to each cluster name: test_node_identity)
    assert config["aws"]["remote_identity"][-1] == {"*": outputs["InstanceProfileName"]}
    from tests.infra.test_infra_skypilot import validate_skypilot_config

    validate_skypilot_config(config)


def test_taken_repository_name_fails_with_one_line(aws):
    """A real CloudFormation failure moto can produce: the repository already exists outside the stack."""
    boto("ecr").create_repository(repositoryName="skyrl-stack")
    up = invoke("infra.up", "--cloud", "aws")
    assert up.returncode == 1
    assert "error: cannot create stack skyrl-stack-registry: RepositoryAlreadyExistsException: " in up.stderr
    assert "Traceback" not in up.stderr


def test_unknown_region_fails_before_any_call(aws, state_dir):
    result = invoke("infra.up", "--cloud", "aws", "--region", "us-nowhere-1")
    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == "error: unknown AWS region 'us-nowhere-1'"
    assert boto("cloudformation").describe_stacks()["Stacks"] == []
    assert not (state_dir / "infra").exists()


def test_missing_credentials_fail_with_one_line(tmp_path):
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "AWS_REGION": REGION,
           "AWS_EC2_METADATA_DISABLED": "true", "SKYRL_STACK_WORKSPACE": str(tmp_path)}
    for args in (["infra.up", "--cloud", "aws"], ["infra.outputs"], ["infra.down"]):
        result = invoke(*args, env=env)
        assert result.returncode == 1, args
        lines = result.stderr.splitlines()
        assert lines[0].startswith("error: no AWS credentials found"), result.stderr
        assert lines[1].startswith("hint: set AWS_ACCESS_KEY_ID")
        assert "Traceback" not in result.stderr


def test_unsupported_cloud_and_bad_parameter_fail_clearly(tmp_path):
    gcp = invoke("infra.up", "--cloud", "gcp", env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)})
    assert gcp.returncode == 1
    assert gcp.stderr.splitlines()[:2] == [
        "error: infra for cloud 'gcp' is not supported",
        "hint: supported: aws; for GHCR, Docker Hub or GCP Artifact Registry see README 'Registries' (no infra needed)",
    ]
    days = invoke("infra.up", "--untagged-expiry-days", "soon", env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)})
    assert days.returncode == 1
    assert days.stderr.startswith("error: --untagged-expiry-days must be a whole number of days")


# CloudFormation's own records of a create that failed (shape of DescribeStackEvents,
# newest first): moto cannot produce these, see the module docstring.
RECORDED_ROLLBACK_EVENTS = [
    {"EventId": "6", "StackName": STACK, "LogicalResourceId": STACK, "ResourceType": "AWS::CloudFormation::Stack",
     "ResourceStatus": "ROLLBACK_COMPLETE"},
    {"EventId": "5", "StackName": STACK, "LogicalResourceId": "NodeRole", "ResourceType": "AWS::IAM::Role",
     "ResourceStatus": "DELETE_COMPLETE"},
    {"EventId": "4", "StackName": STACK, "LogicalResourceId": STACK, "ResourceType": "AWS::CloudFormation::Stack",
     "ResourceStatus": "ROLLBACK_IN_PROGRESS",
     "ResourceStatusReason": "The following resource(s) failed to create: [Repository, NodeRole]. Rollback requested by user."},
    {"EventId": "3", "StackName": STACK, "LogicalResourceId": "NodeRole", "ResourceType": "AWS::IAM::Role",
     "ResourceStatus": "CREATE_FAILED", "ResourceStatusReason": "Resource creation cancelled"},
    {"EventId": "2", "StackName": STACK, "LogicalResourceId": "Repository", "ResourceType": "AWS::ECR::Repository",
     "ResourceStatus": "CREATE_FAILED",
     "ResourceStatusReason": "Resource handler returned message: \"Invalid parameter at 'LifecyclePolicyText'\n(Service: Ecr, Status Code: 400)\""},
    {"EventId": "1", "StackName": STACK, "LogicalResourceId": STACK, "ResourceType": "AWS::CloudFormation::Stack",
     "ResourceStatus": "CREATE_IN_PROGRESS", "ResourceStatusReason": "User Initiated"},
]


def test_recorded_rollback_names_the_failing_resource_and_reason():
    from skyrl_stack.infra.stack_events import failure_reason

    assert failure_reason(RECORDED_ROLLBACK_EVENTS) == (
        "Repository (AWS::ECR::Repository) CREATE_FAILED: Resource handler returned message: "
        "\"Invalid parameter at 'LifecyclePolicyText' (Service: Ecr, Status Code: 400)\""
    )


@pytest.mark.parametrize("status", ["ROLLBACK_COMPLETE", "REVIEW_IN_PROGRESS", "UPDATE_IN_PROGRESS"])
def test_stack_in_failed_or_busy_state_is_refused(status):
    """CloudFormation refuses updates in these states; infra.up says what to do instead (recorded states)."""
    from skyrl_stack.infra.aws_stack import check_updatable
    from skyrl_stack.errors import StackError

    with pytest.raises(StackError, match=rf"stack \S+ in \S+ is (in state {status}|busy \({status}\))") as refused:
        check_updatable({"StackName": STACK, "StackStatus": status}, REGION)
    assert status in refused.value.message
    assert refused.value.hint
    check_updatable({"StackName": STACK, "StackStatus": "UPDATE_ROLLBACK_COMPLETE"}, REGION)  # updatable again


def test_a_deletion_blocked_by_the_checkpoint_bucket_says_how_to_empty_it(monkeypatch, tmp_path):
    """Since the stack holds a checkpoint bucket, a bucket with checkpoints blocks `infra.down` as a repository with
    images does (CloudFormation deletes neither): the hint names both. Only CloudFormation's answer (the failed
    wait) is stood in for: a stack deletion that fails on AWS's side."""
    from skyrl_stack.errors import StackError
    from skyrl_stack.infra import aws_stack

    failed = StackError("deletion of stack skyrl-stack failed (DELETE_FAILED): CheckpointBucket: The bucket you tried "
                        "to delete is not empty")
    monkeypatch.setenv("SKYRL_STACK_WORKSPACE", str(tmp_path))
    from types import SimpleNamespace

    cf = SimpleNamespace(delete_stack=lambda **k: None)
    monkeypatch.setattr(aws_stack, "_find_stack", lambda *a: ("skyrl-stack", REGION, cf, {"StackId": "id"}))
    monkeypatch.setattr(aws_stack, "EventPrinter", lambda *a, **k: None)
    monkeypatch.setattr(aws_stack, "aws_call", lambda *a, **k: None)
    monkeypatch.setattr(aws_stack, "wait_for_stack", lambda *a: (_ for _ in ()).throw(failed))
    with pytest.raises(StackError, match=r"The bucket you tried to delete is not empty$") as err:
        aws_stack.destroy("aws", REGION)
    assert "aws s3 rm s3://BUCKET --recursive" in err.value.hint and "CheckpointBucketName" in err.value.hint
    assert "aws ecr batch-delete-image" in err.value.hint
