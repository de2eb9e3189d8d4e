"""The nodes' identity on AWS: the stack's role, the SkyPilot config layer as SkyPilot resolves it, and
the launch's check that the nodes can pull the image and use the bucket.

Real parts: the registry stack deployed by `invoke infra.up` into moto in server
mode (real boto3 over HTTP), our IAM reading and evaluation, `invoke
infra.skypilot-config`, SkyPilot 0.14.1's config loader (sky/skypilot_config.py,
its schema) and its cluster-config writer (sky/backends/backend_utils.py
write_cluster_config, the function that resolves aws.remote_identity for a
cluster name and renders sky/templates/aws-ray.yml.j2), run in a subprocess
with a private HOME.

Stand-ins, each named where used:
- moto 5.2 stores the inline policies CloudFormation creates as Python reprs
  rather than JSON; `as_json_policies` re-puts the very documents it holds.
- rclone's choice between embedded keys and the node's identity depends on
  the kind of AWS identity SkyPilot's API server has (SSO or a role vs static
  keys: sky/clouds/aws.py should_use_env_auth_for_s3); moto only has static
  keys, so the tests that need the other kind stub that one function.
"""
from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from skyrl_stack.errors import StackError
from tests.infra.test_infra_aws import REGION, aws, boto, invoke  # noqa: F401 - the aws fixture
from tests.support.moto import moto_server
from tests.support.paths import DATA, REPO_ROOT

FAKE_DIGEST = "sha256:" + "5e" * 32


@pytest.fixture(scope="module")
def moto_url():
    """This module's moto_server (the aws fixture uses it): one that holds AWS's managed policies
    (AmazonEC2FullAccess, ...), which moto loads only when started with MOTO_IAM_LOAD_MANAGED_POLICIES,
    and the stand-in for the catalog's AMI that SkyPilot's cluster config looks up (tests/data/README.md)."""
    env = {**os.environ, "MOTO_IAM_LOAD_MANAGED_POLICIES": "true", "MOTO_AMIS_PATH": str(DATA / "moto-amis.json")}
    with moto_server(env=env) as url:
        yield url


def deploy(state_dir) -> dict:
    up = invoke("infra.up", "--cloud", "aws", "--region", REGION)
    assert up.returncode == 0, up.stderr
    outputs = json.loads((state_dir / "infra" / f"aws-{REGION}.json").read_text())["outputs"]
    as_json_policies(outputs["InstanceProfileName"])
    return outputs


def as_json_policies(profile: str) -> None:
    """moto stand-in: re-put the role's inline policies (made by CloudFormation, stored by moto as
    Python reprs) as the JSON documents AWS holds. Their content is what moto returned, unchanged."""
    iam = boto("iam")
    (role,) = iam.get_instance_profile(InstanceProfileName=profile)["InstanceProfile"]["Roles"]
    for name in iam.list_role_policies(RoleName=role["RoleName"])["PolicyNames"]:
        document = iam.get_role_policy(RoleName=role["RoleName"], PolicyName=name)["PolicyDocument"]
        if isinstance(document, str):
            iam.put_role_policy(RoleName=role["RoleName"], PolicyName=name,
                                PolicyDocument=json.dumps(ast.literal_eval(document)))


def skypilot_default_role() -> None:
    """SkyPilot's own skypilot-v1, made as sky/provision/aws/config.py _configure_iam_role makes it."""
    iam = boto("iam")
    trust = {"Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
    iam.create_role(RoleName="skypilot-v1", AssumeRolePolicyDocument=json.dumps(trust))
    for policy in ("AmazonEC2FullAccess", "AmazonS3FullAccess"):
        iam.attach_role_policy(RoleName="skypilot-v1", PolicyArn=f"arn:aws:iam::aws:policy/{policy}")
    iam.create_instance_profile(InstanceProfileName="skypilot-v1")
    iam.add_role_to_instance_profile(InstanceProfileName="skypilot-v1", RoleName="skypilot-v1")


def test_the_stack_role_pulls_its_repository_and_uses_its_bucket_and_nothing_else(aws, state_dir):
    import boto3

    from skyrl_stack.infra.iam_access import missing, role_statements
    from skyrl_stack.launch.node_identity import ECR_LOGIN, bucket_needs, ecr_repository_arn

    outputs = deploy(state_dir)
    role, statements = role_statements(boto3.session.Session(region_name=REGION), outputs["InstanceProfileName"])
    assert outputs["RoleArn"].endswith(f"/{role}")
    image = f"{outputs['RepositoryUri']}@{FAKE_DIGEST}"
    assert ecr_repository_arn(image) == outputs["RepositoryArn"]
    pull = [ECR_LOGIN] + [(a, outputs["RepositoryArn"]) for a in ("ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer")]
    assert missing(statements, pull) == []
    other_repo = [(a, outputs["RepositoryArn"].replace("/skyrl-stack", "/other")) for a, _ in pull[1:]]
    assert missing(statements, other_repo) == ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
    bucket = outputs["CheckpointBucketName"]
    assert missing(statements, bucket_needs(f"s3://{bucket}/runs/r1")) == []
    assert missing(statements, bucket_needs("s3://someone-elses-bucket")) == [
        "s3:ListBucket", "s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    assert missing(statements, [("s3:DeleteBucket", f"arn:aws:s3:::{bucket}"), ("iam:PassRole", "*")]) == [
        "s3:DeleteBucket", "iam:PassRole"]
    encryption = boto("s3").get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
    assert encryption["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"

    skypilot_default_role()  # SkyPilot's default role: EC2 and S3, no ECR (AWS managed policies, as moto has them)
    _, default = role_statements(boto3.session.Session(region_name=REGION), "skypilot-v1")
    assert missing(default, pull) == [a for a, _ in pull]
    assert missing(default, bucket_needs(f"s3://{bucket}")) == []


# SkyPilot's own cluster config for each cluster name, under the layer in SKYPILOT_PROJECT_CONFIG; and
# what node_identity.remote_identity resolves for the same names, in the same process.
RESOLVE = r"""
import json, pathlib, sys, yaml
from sky import clouds, resources
from sky.backends import backend_utils
from sky.utils import common
from skyrl_stack.launch.node_identity import remote_identity

names = [common.JOB_CONTROLLER_NAME, common.SKY_SERVE_CONTROLLER_NAME, "skyrl-vllm", "skyrl-vllm-7-0"]
out = {}
for name in names:
    written = backend_utils.write_cluster_config(
        resources.Resources(infra="aws/us-east-1", instance_type="g6e.12xlarge"), 1, "aws-ray.yml.j2", name,
        pathlib.Path("/nonexistent-wheel"), "wheel-hash", clouds.Region("us-east-1"),
        zones=[clouds.Zone("us-east-1a")], dryrun=True)
    cluster = yaml.safe_load(pathlib.Path(written["ray"]).read_text())
    node = cluster["available_node_types"]["ray.head.default"]["node_config"]
    out[name] = {"profile": (node.get("IamInstanceProfile") or {}).get("Name"),
                 "uploads_aws_credentials": "~/.aws/credentials" in cluster["file_mounts"],
                 "ours": remote_identity(name, "us-east-1")[0]}
print(json.dumps(out))
"""


def skypilot_resolves(layer: Path, aws_env: dict, home: Path) -> dict:
    if not (home / ".sky").exists():
        shutil.copytree(DATA / "skypilot-catalog" / "v8", home / ".sky" / "catalogs" / "v8")
        (home / ".aws").mkdir()
        (home / ".aws" / "credentials").write_text("[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYPILOT_")}
    env.update(aws_env, HOME=str(home), SKYPILOT_PROJECT_CONFIG=str(layer), SKYPILOT_DISABLE_USAGE_COLLECTION="1",
               PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run([sys.executable, "-c", RESOLVE], env=env, cwd=home, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_bucket_is_judged_on_the_runs_own_folder(state_dir):
    """Objects go to s3://B/PATH/RUN/... (one folder per run): a role scoped to some runs' prefix can use
    this run's folder. The check asked for B/PATH/checkpoint and refused it."""
    from skyrl_stack.infra.iam_access import missing
    from skyrl_stack.launch.node_identity import bucket_needs, run_folder
    from skyrl_stack.launch.options import build_spec
    from tests.launch.test_render import fake_record

    fake_record("vllm")
    team = [{"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": ["arn:aws:s3:::b"]},
            {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
             "Resource": ["arn:aws:s3:::b/runs/team-a-*"]}]
    ours = build_spec("vllm", cloud="aws", bucket="s3://b/runs", run="team-a-r1")
    assert run_folder(ours) == "s3://b/runs/team-a-r1"
    assert missing(team, bucket_needs(run_folder(ours))) == []
    assert missing(team, bucket_needs(ours.bucket)) != []  # what the check asked before: the bucket's path only
    theirs = build_spec("vllm", cloud="aws", bucket="s3://b/runs", run="team-b-r1")
    assert missing(team, bucket_needs(run_folder(theirs))) == ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]


def test_skypilot_gives_controllers_credentials_and_task_clusters_the_node_profile(aws, state_dir, tmp_path):
    """The generated layer, loaded and applied by SkyPilot's own config and cluster-config code."""
    import yaml

    from tests.infra.test_infra_skypilot import validate_skypilot_config

    outputs = deploy(state_dir)
    written = invoke("infra.skypilot-config")
    assert written.returncode == 0, written.stderr
    line = written.stdout.strip()
    assert line.startswith("export SKYPILOT_PROJECT_CONFIG=")  # laid over ~/.sky/config.yaml, not replacing it
    layer = Path(line.removeprefix("export SKYPILOT_PROJECT_CONFIG="))
    validate_skypilot_config(yaml.safe_load(layer.read_text()))

    profile, controller = outputs["InstanceProfileName"], outputs["ControllerInstanceProfileName"]
    resolved = skypilot_resolves(layer, aws, tmp_path / "home")
    controllers = [name for name in resolved if name.startswith(("sky-jobs-controller-", "sky-serve-controller-"))]
    assert len(controllers) == 2
    for name, got in resolved.items():
        # controllers: the profile that may launch instances with the node role; task clusters, named by
        # hand or by the jobs controller: the node profile. No credentials uploaded to either.
        expected = controller if name in controllers else profile
        assert got == {"profile": expected, "uploads_aws_credentials": False, "ours": expected}, name

    # The string form this layer had before: SkyPilot then gives the jobs controller the node role,
    # which cannot launch instances (issue 16: "SkyPilot applies that to the jobs controller too").
    string_form = tmp_path / "string-form.yaml"
    string_form.write_text(yaml.safe_dump({"aws": {"remote_identity": profile}}))
    old = skypilot_resolves(string_form, aws, tmp_path / "home")
    assert {old[name]["profile"] for name in controllers} == {profile}


@pytest.fixture
def skypilot_config(monkeypatch, tmp_path):
    """Load a SkyPilot config layer in this process as SkyPilot's client does (None: no layer), with a
    private HOME; SkyPilot's loaded config is restored after."""
    from sky import skypilot_config as loader

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir(exist_ok=True)

    def load(path: Path | None):
        if path is None:
            monkeypatch.delenv("SKYPILOT_PROJECT_CONFIG", raising=False)
        else:
            monkeypatch.setenv("SKYPILOT_PROJECT_CONFIG", str(path))
        loader.reload_config()

    yield load
    monkeypatch.undo()
    loader.reload_config()


def test_a_managed_jobs_nodes_are_judged_by_the_cluster_name_the_jobs_controller_gives_them(state_dir, skypilot_config,
                                                                                            tmp_path):
    """The controller names a managed job's cluster `<run>-<id>`: a remote_identity list that gives
    `skyrl-*` clusters a profile does not cover it. The check used the unmanaged default, skyrl-vllm."""
    from skyrl_stack.launch.node_identity import nodes_cluster, remote_identity
    from skyrl_stack.launch.options import build_spec
    from tests.launch.test_render import fake_record

    layer = tmp_path / "layer.yaml"
    layer.write_text("aws:\n  remote_identity:\n    - skyrl-*: skyrl-node-profile\n    - '*': LOCAL_CREDENTIALS\n")
    skypilot_config(layer)
    fake_record("vllm")
    managed = build_spec("vllm", cloud="aws", managed=True, bucket="s3://b/runs", run="r1")
    assert nodes_cluster(managed, "skyrl-vllm") == "r1-1"
    assert remote_identity(nodes_cluster(managed, "skyrl-vllm"), None)[0] == "LOCAL_CREDENTIALS"
    plain = build_spec("vllm", cloud="aws", bucket="s3://b/runs", run="r1")
    assert remote_identity(nodes_cluster(plain, "skyrl-vllm"), None)[0] == "skyrl-node-profile"


def ecr_spec(outputs: dict, bucket: str | None = None):
    from skyrl_stack.launch.options import build_spec

    return build_spec("rehearsal", cloud="aws/us-east-1", image=f"{outputs['RepositoryUri']}@{FAKE_DIGEST}",
                      bucket=bucket)


def test_nodes_that_cannot_pull_the_ecr_image_are_refused_with_what_to_run(aws, state_dir, skypilot_config):
    from skyrl_stack.infra.skypilot_config import write_skypilot_config
    from skyrl_stack.launch.node_identity import require_node_access

    outputs = deploy(state_dir)
    spec = ecr_spec(outputs)
    assert spec.registry_login.password_env is None  # SkyPilot's IAM login path

    skypilot_config(None)  # no layer: SkyPilot's default identity, skypilot-v1 (not made yet)
    with pytest.raises(StackError, match=r"^launch refused: the nodes of skyrl-rehearsal could not pull "
                                         r"\S+ from ECR: they run as instance profile skypilot-v1 \(SkyPilot's default"
                                         r".*does not exist or holds no role \(SkyPilot makes it with EC2 and S3"
                                         ) as refused:
        require_node_access(spec, "skyrl-rehearsal")
    assert refused.value.hint.startswith(f"run: invoke infra.skypilot-config --region {REGION} && "
                                         f"export SKYPILOT_PROJECT_CONFIG={state_dir / 'infra'}")
    skypilot_default_role()  # once SkyPilot has made it: it exists, but may not pull
    with pytest.raises(StackError, match=r"its role skypilot-v1 is not allowed ecr:GetAuthorizationToken, "
                                         r"ecr:BatchCheckLayerAvailability, ecr:GetDownloadUrlForLayer, "
                                         r"ecr:BatchGetImage$"):
        require_node_access(spec, "skyrl-rehearsal")

    layer = write_skypilot_config(REGION)
    skypilot_config(layer)  # with the layer: the stack's profile, which can
    require_node_access(spec, "skyrl-rehearsal")
    require_node_access(spec, "my-run")  # any task cluster name gets it
    # ... but not an image in another repository of the account
    other = ecr_spec({"RepositoryUri": outputs["RepositoryUri"].replace("/skyrl-stack", "/other")})
    with pytest.raises(StackError, match=r"is not allowed ecr:BatchCheckLayerAvailability, ecr:GetDownloadUrlForLayer"
                       ) as refused:
        require_node_access(other, "skyrl-rehearsal")
    assert refused.value.hint.startswith(f"the stack's node profile may pull only from {outputs['RepositoryUri']} "
                                         "(invoke push --variant rehearsal --registry ecr)")


def test_the_bucket_is_checked_when_skypilot_mounts_it_with_the_node_identity(
        aws, state_dir, skypilot_config, monkeypatch):
    """SkyPilot's identity type is stubbed (moto has static keys only): see the module docstring."""
    from sky import clouds

    from skyrl_stack.infra.skypilot_config import write_skypilot_config
    from skyrl_stack.launch.node_identity import require_node_access

    outputs = deploy(state_dir)
    skypilot_config(write_skypilot_config(REGION))
    stack_bucket = f"s3://{outputs['CheckpointBucketName']}/runs"

    monkeypatch.setattr(clouds.AWS, "should_use_env_auth_for_s3", classmethod(lambda cls: True))
    require_node_access(ecr_spec(outputs, bucket=stack_bucket), "skyrl-rehearsal")
    with pytest.raises(StackError, match=r"could not use s3://not-the-stacks-bucket/runs: .* is not allowed "
                                         r"s3:ListBucket, s3:GetObject, s3:PutObject, s3:DeleteObject$") as refused:
        require_node_access(ecr_spec(outputs, bucket="s3://not-the-stacks-bucket/runs"), "skyrl-rehearsal")
    assert refused.value.hint.endswith(f"use only s3://{outputs['CheckpointBucketName']} "
                                       f"(--bucket s3://{outputs['CheckpointBucketName']}/RUN)")

    # Static keys on the API server: SkyPilot embeds them in the node's rclone config, the role is not used.
    monkeypatch.setattr(clouds.AWS, "should_use_env_auth_for_s3", classmethod(lambda cls: False))
    require_node_access(ecr_spec(outputs, bucket="s3://not-the-stacks-bucket/runs"), "skyrl-rehearsal")


def test_invoke_launch_says_so_in_one_line_before_anything_is_provisioned(aws, state_dir, tmp_path):
    from skyrl_stack.image.pins import load_pins
    from skyrl_stack.image.records import BuildRecord
    from skyrl_stack.smoke.gate import record_run

    outputs = deploy(state_dir)
    image = f"{outputs['RepositoryUri']}@{FAKE_DIGEST}"
    pins = load_pins()
    BuildRecord(variant="rehearsal", repository=outputs["RepositoryUri"], digest=FAKE_DIGEST, tags=[],
                pins_digest=pins.digest(), pins=pins.raw, source_date_epoch=pins.source_date_epoch,
                base_image=pins.base_image, built_at="2026-01-01T00:00:00Z", build_seconds=1.0,
                pushed={"ref": image}).save()
    record_run(FAKE_DIGEST, {"ok": True, "tiers": ["environment"], "counts": {"passed": 1, "failed": 0, "skipped": 0},
                             "checks": [{"name": "environment.python", "status": "passed"}]},
               image=image, variant="rehearsal", all_tiers=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYPILOT_")}
    env.update(HOME=str(tmp_path), SKYPILOT_DISABLE_USAGE_COLLECTION="1",
               # nothing may reach an API server: an endpoint that does not answer would fail loudly
               SKYPILOT_API_SERVER_ENDPOINT="http://127.0.0.1:9")
    result = invoke("launch", "--variant", "rehearsal", "--cloud", "aws/us-east-1", "--registry", "ecr", "--yes",
                    env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith("==> smoke gate: ")  # the cheaper check ran first
    assert lines[1].startswith("error: launch refused: the nodes of skyrl-rehearsal could not pull "), result.stderr
    assert lines[2].startswith("hint: run: invoke infra.skypilot-config --region us-east-1 && export "
                               "SKYPILOT_PROJECT_CONFIG=")
    assert len(lines) == 3
    assert "Traceback" not in result.stderr and "sky.launch" not in result.stderr
