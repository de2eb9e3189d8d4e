"""`invoke launch --cloud aws --dry-run` through SkyPilot's real optimizer and provisioner, offline.

Real parts: the `invoke` CLI, our renderer, SkyPilot 0.14.1's SDK, its local
API server, `sky check`, its optimizer (instance choice, price) and its AWS
provisioner's dry run (the cluster config it would create). AWS is moto in
server mode (real boto3 over HTTP). The catalog is a few real rows of
SkyPilot's public catalog, kept under tests/data/skypilot-catalog (see the
README there); SkyPilot reads a catalog CSV that has no .meta md5 as a local
file and never downloads it (sky/catalog/common.py read_catalog).

Nothing is faked but what cannot exist here: the AWS account (moto) and one
AMI id (tests/data/moto-amis.json, a stand-in; see the README).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.moto import moto_server
from tests.support.registry import free_port
from tests.launch.test_render import FAKE_DIGEST, FAKE_REPO, fake_record

from tests.support.paths import REPO_ROOT
from tests.support.paths import DATA
SKY = str(Path(sys.executable).with_name("sky"))


@pytest.fixture
def offline_aws(tmp_path, state_dir):
    """moto_server + a temp HOME holding the catalog rows + an API server on a private port; all stopped after."""
    if shutil.which("rsync") is None:  # SkyPilot needs it on the launching machine even for a dry run
        pytest.fail("rsync is missing: run scripts/setup-test-machine.sh", pytrace=False)
    home = tmp_path / "home"
    shutil.copytree(DATA / "skypilot-catalog" / "v8", home / ".sky" / "catalogs" / "v8")
    (home / ".aws").mkdir()
    (home / ".aws" / "config").write_text("[default]\nregion = us-east-1\n")
    (home / ".aws" / "credentials").write_text("[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    api_port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "SKYPILOT_"))}
    env.update({
        "HOME": str(home),
        "AWS_EC2_METADATA_DISABLED": "true",
        "SKYPILOT_DISABLE_USAGE_COLLECTION": "1",
        # A private API server (sky/server/common.py get_local_api_server_port):
        # never the user's, nor another test's on the default port 46580.
        "SKYPILOT_API_SERVER_LOCAL_PORT": str(api_port),
        "SKYRL_STACK_WORKSPACE": str(state_dir.parent),
    })
    with moto_server(env={**env, "MOTO_AMIS_PATH": str(DATA / "moto-amis.json")}) as moto_url:
        env["AWS_ENDPOINT_URL"] = moto_url
        try:
            yield env
        finally:
            stop = subprocess.run([SKY, "api", "stop"], env=env, capture_output=True, text=True, timeout=120)
            probe = subprocess.run([SKY, "api", "status"], env=env, capture_output=True, text=True, timeout=60)
            assert stop.returncode == 0, stop.stderr
            assert "not running" in (probe.stdout + probe.stderr).lower() or probe.returncode != 0, probe.stdout


def test_dry_run_plans_l40s_x2_as_g6e_12xlarge_with_the_image_by_digest(offline_aws, state_dir, tmp_path):
    fake_record("vllm")
    check = subprocess.run([SKY, "check", "aws"], env=offline_aws, capture_output=True, text=True, timeout=300)
    assert check.returncode == 0 and "AWS" in check.stdout.split("Enabled infra")[-1], check.stdout + check.stderr

    result = subprocess.run(
        [sys.executable, "-m", "invoke", "--search-root", str(REPO_ROOT),
         "launch", "--variant", "vllm", "--cloud", "aws", "--nodes", "2", "--gpus", "L40S:4", "--dry-run"],
        cwd=tmp_path, env=offline_aws, capture_output=True, text=True, timeout=480,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    # The plan the user sees (SkyPilot's optimizer table): the cheaper of the
    # two L40S:4 types in the catalog rows, its region, and the price for both
    # nodes per hour (2 x $10.49264 in the kept catalog rows).
    row = next(line for line in out.splitlines() if "g6e.12xlarge" in line and "L40S:4" in line)
    assert row.split()[:3] == ["AWS", "(us-east-1)", "g6e.12xlarge"], row
    assert "20.99" in row.split(), row
    assert "Dryrun finished." in out and "dry run: nothing was launched" in out
    assert "idle: the cluster stops after 30 idle minutes (default" in out  # and SkyPilot planned it with autostop

    # What SkyPilot's provisioner would create (sky/backends/backend_utils.py
    # write_cluster_config; a dry run leaves it as <cluster>.yml.tmp).
    (generated,) = (Path(offline_aws["HOME"]) / ".sky" / "generated").glob("skyrl-vllm*.yml*")
    cluster = yaml.safe_load(generated.read_text())
    assert cluster["max_workers"] == 1  # head + 1 worker
    assert cluster["docker"]["image"] == f"{FAKE_REPO}@{FAKE_DIGEST}"
    assert "--ipc=host" in cluster["docker"]["run_options"]
    assert cluster["provider"]["region"] == "us-east-1"
    assert cluster["provider"]["max_efa_interfaces"] == 0  # no network_tier: best (README: no EFA userspace)
    head = cluster["available_node_types"]["ray.head.default"]["node_config"]
    assert head["InstanceType"] == "g6e.12xlarge"
    assert head["ImageId"] == "ami-0000000000c0da13a"  # the catalog's GPU image for us-east-1 (stand-in id)
    # The disk the rendered task asked for (sized from image + data + checkpoints at render).
    rendered = yaml.safe_load((tmp_path / "skypilot" / "vllm-aws-2n.yaml").read_text())
    assert head["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] == rendered["resources"]["disk_size"] == 182


def test_managed_spot_dry_run_shows_spot_and_on_demand_prices(offline_aws, state_dir, tmp_path):
    """`invoke launch --managed --spot --dry-run`: SkyPilot's optimizer plans both capacities from the catalog's
    Price and SpotPrice columns; the run's folder is checked in S3 (moto) first; nothing is submitted."""
    fake_record("vllm")
    check = subprocess.run([SKY, "check", "aws"], env=offline_aws, capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stdout + check.stderr
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "--search-root", str(REPO_ROOT),
         "launch", "--variant", "vllm", "--cloud", "aws", "--nodes", "2", "--gpus", "L40S:4", "--managed", "--spot",
         "--bucket", "s3://ckpts/runs", "--run", "r1", "--dry-run"],
        cwd=tmp_path, env=offline_aws, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=480,
    )
    out = result.stdout  # one stream, in the order written: each of our lines before its table
    assert result.returncode == 0, out
    assert "plan on spot capacity (requested):" in out and "plan on on-demand capacity:" in out, out
    spot, on_demand = out.split("plan on spot capacity (requested):")[1].split("plan on on-demand capacity:")
    assert "g6e.12xlarge" in spot and "g6e.12xlarge" in on_demand, out
    # Cheapest L40S:4 rows for 2 nodes: spot 2 x $3.2906 (us-east-1, use1-az1), on-demand 2 x $10.49264.
    spot_row = next(line for line in spot.splitlines() if "g6e.12xlarge" in line)
    demand_row = next(line for line in on_demand.splitlines() if "g6e.12xlarge" in line)
    assert "g6e.12xlarge[Spot]" in spot_row.split() and "6.58" in spot_row.split(), out
    assert "g6e.12xlarge" in demand_row.split() and "20.99" in demand_row.split(), out
    assert "bucket ckpts does not exist yet" not in out  # an empty run folder is no warning
    assert "dry run: nothing was launched" in out and "sky.jobs.launch" not in out
