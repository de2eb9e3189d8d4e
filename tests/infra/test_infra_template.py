"""infra/aws/registry.yaml: cfn-lint clean, and the properties moto cannot show us (see test_infra_aws)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from cfnlint.decode import decode_str

from tests.support.paths import REPO_ROOT

TEMPLATE = REPO_ROOT / "infra" / "aws" / "registry.yaml"


def test_cfn_lint_passes():
    result = subprocess.run([str(Path(sys.executable).with_name("cfn-lint")), str(TEMPLATE)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cfn_lint_catches_a_broken_template(tmp_path):
    """The lint above can fail: a misspelt property is reported."""
    broken = tmp_path / "broken.yaml"
    broken.write_text(TEMPLATE.read_text().replace("ImageTagMutability:", "ImageTagMutabilty:"))
    result = subprocess.run([str(Path(sys.executable).with_name("cfn-lint")), str(broken)], capture_output=True, text=True)
    assert result.returncode != 0 and "ImageTagMutabilty" in result.stdout


def test_registry_and_pull_identity_as_specified():
    template, problems = decode_str(TEMPLATE.read_text())
    assert not problems
    resources = template["Resources"]
    repo = resources["Repository"]["Properties"]
    assert repo["ImageTagMutability"] == "IMMUTABLE"
    assert repo["ImageScanningConfiguration"] == {"ScanOnPush": True}
    # The lifecycle policy is JSON with ${UntaggedExpiryDays} substituted; it touches untagged images only.
    policy = json.loads(repo["LifecyclePolicy"]["LifecyclePolicyText"]["Fn::Sub"].replace("${UntaggedExpiryDays}", "14"))
    assert [rule["selection"]["tagStatus"] for rule in policy["rules"]] == ["untagged"]
    assert policy["rules"][0]["selection"]["countNumber"] == 14
    role = resources["NodeRole"]["Properties"]
    assert "ManagedPolicyArns" not in role  # no account-wide ECR read: the pull is scoped to this repository
    policies = {policy["PolicyName"]: policy["PolicyDocument"]["Statement"] for policy in role["Policies"]}
    assert policies["ecr-pull"][1]["Resource"] == {"Fn::GetAtt": ["Repository", "Arn"]}
    assert [s["Resource"] for s in policies["checkpoint-bucket"]] == [
        {"Fn::GetAtt": ["CheckpointBucket", "Arn"]}, {"Fn::Sub": "${CheckpointBucket.Arn}/*"}]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    assert resources["NodeInstanceProfile"]["Properties"]["Roles"] == [{"Ref": "NodeRole"}]
    assert {"RepositoryUri", "InstanceProfileName", "InstanceProfileArn", "RoleArn", "CheckpointBucketName"} <= set(
        template["Outputs"])
    assert set(template["Parameters"]) == {"RepositoryName", "UntaggedExpiryDays", "IncompleteUploadExpiryDays"}


def test_checkpoint_bucket_is_private_encrypted_and_tls_only():
    """What moto does not apply from CloudFormation (public access block, lifecycle, bucket policy)."""
    template, _ = decode_str(TEMPLATE.read_text())
    bucket = template["Resources"]["CheckpointBucket"]["Properties"]
    assert bucket["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True, "RestrictPublicBuckets": True}
    (rule,) = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}
    assert "VersioningConfiguration" not in bucket  # SkyRL deletes old checkpoints on purpose; see the template
    (lifecycle,) = bucket["LifecycleConfiguration"]["Rules"]
    assert lifecycle["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": {"Ref": "IncompleteUploadExpiryDays"}}
    (deny,) = template["Resources"]["CheckpointBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert (deny["Effect"], deny["Condition"]) == ("Deny", {"Bool": {"aws:SecureTransport": "false"}})
