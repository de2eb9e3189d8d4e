"""`invoke render`: SkyPilot task YAMLs checked by SkyPilot's own parser and schema (offline).

Build records for vllm/sglang are fakes with a made-up digest (no GPU image can
be built here); everything else is real: pins, SkyPilot's Task parser, invoke.
"""
from __future__ import annotations

import dataclasses
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from skyrl_stack.errors import StackError
from skyrl_stack.image.pins import load_pins
from skyrl_stack.image.records import BuildRecord, write_json_atomic
from skyrl_stack.infra import aws_stack
from skyrl_stack.launch.options import build_spec
from skyrl_stack.launch.render import render
from skyrl_stack.launch.task_spec import GSM8K_GRPO, training_overrides

from tests.support.paths import REPO_ROOT
FAKE_DIGEST = "sha256:" + "5e" * 32
FAKE_REPO = "ghcr.io/example/skyrl-stack"
API_PORT = 46580


def _api_server_up() -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", API_PORT)) == 0


@pytest.fixture(autouse=True, scope="module")
def no_skypilot_api_server():
    """Validation is offline: it must never start SkyPilot's API server (and we stop one if it did).

    The variable is not set here: render() must keep SkyPilot from starting
    one by itself (and leave the environment as it found it).
    """
    was_up = _api_server_up()
    yield
    if _api_server_up() and not was_up:
        subprocess.run([sys.executable, "-m", "sky.cli", "api", "stop"], capture_output=True)
        pytest.fail("rendering started a SkyPilot API server")


def fake_record(variant: str, pushed: bool = True) -> BuildRecord:
    pins = load_pins()
    record = BuildRecord(
        variant=variant, repository=FAKE_REPO, digest=FAKE_DIGEST,
        tags=[f"{FAKE_REPO}:{variant}-test"], pins_digest=pins.digest(), pins=pins.raw,
        source_date_epoch=pins.source_date_epoch, base_image=pins.base_image,
        built_at="2026-01-01T00:00:00Z", build_seconds=1.0,
        pushed={"ref": f"{FAKE_REPO}@{FAKE_DIGEST}"} if pushed else {},
    )
    record.save()
    return record


@pytest.fixture
def records(state_dir):
    return {variant: fake_record(variant) for variant in ("vllm", "sglang")}


def skypilot_task(text: str):
    """Parse with SkyPilot itself, independent of render's own validate()."""
    import sky

    config = yaml.safe_load(text)
    blanks = [(k, "x") for k, v in (config.get("secrets") or {}).items() if v is None]
    return sky.Task.from_yaml_config(config, secrets_overrides=blanks or None)


@pytest.mark.parametrize("variant", ["vllm", "sglang"])
@pytest.mark.parametrize("nodes", [1, 4])
# OCI (no container images) and RunPod (single node) are refused at render by
# SkyPilot's feature check: tests/launch/test_cloud_features.py.
@pytest.mark.parametrize("cloud", ["aws", "gcp/us-central1", "azure", "nebius", "lambda", "kubernetes"])
def test_rendered_yaml_passes_skypilot(records, tmp_path, variant, nodes, cloud):
    spec = build_spec(variant, cloud=cloud, nodes=nodes)
    out, text = render(spec, out=tmp_path / "task.yaml")
    assert out.read_text() == text
    task = skypilot_task(text)
    assert task.num_nodes == nodes
    (resources,) = task.resources
    assert resources.extract_docker_image() == f"{FAKE_REPO}@{FAKE_DIGEST}"
    assert resources.cloud is not None and str(resources.cloud).lower().startswith(cloud.split("/")[0][:3])
    assert resources.accelerators == {"L40S": 4}
    config = yaml.safe_load(text)
    assert "setup" not in config
    assert config["envs"]["INFERENCE_BACKEND"] == variant
    assert "generator.backend=\"$INFERENCE_BACKEND\"" in config["run"]
    assert f"trainer.placement.policy_num_nodes={nodes}" in config["run"]
    assert f"skyrl-ray-up --port {load_pins().ray_port}" in config["run"]
    assert "RAY_RUNTIME_ENV_HOOK" not in text
    assert "network_tier" not in config["resources"]  # opt-in only (test_cloud_features.py)
    assert text.startswith("# SkyPilot task rendered by skyrl-stack")
    assert "LOST on teardown" in text


def test_no_secret_value_in_file(records, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "wandb-secret-0123")
    monkeypatch.setenv("REG_PASSWORD", "hunter2-registry")
    spec = build_spec("vllm", cloud="aws", registry_login="ci:REG_PASSWORD@ghcr.io")
    _, text = render(spec, out=tmp_path / "t.yaml")
    assert "wandb-secret-0123" not in text and "hunter2-registry" not in text
    secrets = yaml.safe_load(text)["secrets"]
    assert secrets == {"WANDB_API_KEY": None, "SKYPILOT_DOCKER_USERNAME": "ci",
                       "SKYPILOT_DOCKER_PASSWORD": None, "SKYPILOT_DOCKER_SERVER": "ghcr.io"}
    assert "$REG_PASSWORD" in text  # the header says where the password comes from at launch


def test_ecr_uses_the_iam_role_and_kubernetes_uses_pull_secrets(records, tmp_path):
    ecr = "123456789012.dkr.ecr.us-east-1.amazonaws.com/skyrl-stack@" + FAKE_DIGEST
    _, text = render(build_spec("vllm", cloud="aws/us-east-1", image=ecr, registry_login="ecr"), out=tmp_path / "a.yaml")
    secrets = yaml.safe_load(text)["secrets"]
    assert secrets["SKYPILOT_DOCKER_PASSWORD"] == ""  # empty: SkyPilot logs in with the node's IAM role
    assert secrets["SKYPILOT_DOCKER_SERVER"] == "123456789012.dkr.ecr.us-east-1.amazonaws.com"
    skypilot_task(text)
    _, text = render(build_spec("sglang", cloud="kubernetes", nodes=2, pull_secret="regcred"), out=tmp_path / "k.yaml")
    config = yaml.safe_load(text)
    assert config["config"]["kubernetes"]["pod_config"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert not any(k.startswith("SKYPILOT_DOCKER") for k in config.get("secrets", {}))
    skypilot_task(text)


@pytest.mark.parametrize("cloud", ["gcp", "azure/eastus", "lambda"])
def test_an_ecr_image_off_aws_needs_a_credential_never_an_empty_password(records, tmp_path, cloud):
    """SkyPilot's password-less ECR login runs `aws ecr get-login-password` with the node's own AWS
    identity (sky/provision/docker_utils.py DockerInitializer.initialize): only AWS nodes have one."""
    ecr = "123456789012.dkr.ecr.us-east-1.amazonaws.com/skyrl-stack@" + FAKE_DIGEST
    for login in (None, "ecr", "AWS:"):
        with pytest.raises(StackError, match=r"have no AWS identity for SkyPilot's ECR login") as refused:
            build_spec("vllm", cloud=cloud, image=ecr, registry_login=login)
        assert refused.value.hint.startswith("launch with --cloud aws, or give a token")
        assert "--registry-login AWS:ECR_TOKEN@123456789012.dkr.ecr.us-east-1.amazonaws.com" in refused.value.hint
    _, text = render(build_spec("vllm", cloud=cloud, image=ecr, registry_login="AWS:ECR_TOKEN"), out=tmp_path / "t.yaml")
    secrets = yaml.safe_load(text)["secrets"]
    assert secrets["SKYPILOT_DOCKER_PASSWORD"] is None  # a secret given at launch, from $ECR_TOKEN
    assert secrets["SKYPILOT_DOCKER_SERVER"] == "123456789012.dkr.ecr.us-east-1.amazonaws.com"
    skypilot_task(text)


def test_kubernetes_disk_is_the_pods_ephemeral_storage_without_the_image(records, tmp_path):
    """On Kubernetes SkyPilot makes disk_size the pod's ephemeral-storage request and filters nodes by
    it (sky/clouds/kubernetes.py, kubernetes_utils.check_instance_fits); image layers do not count there."""
    from skyrl_stack.launch.options import MIN_DISK_GB

    vm = build_spec("vllm", cloud="aws")
    pod = build_spec("vllm", cloud="kubernetes", pull_secret="regcred")
    assert vm.disk_size == 182 and pod.disk_size == 182 - MIN_DISK_GB[True] == 82  # 5 + 3 x 19 + 20
    _, text = render(pod, out=tmp_path / "k.yaml")
    assert "82 GB = model and data 5 + 3 checkpoints x 19 + headroom 20 (the pod's ephemeral-storage request" in text
    (resources,) = skypilot_task(text).resources
    assert resources.disk_size == 82 and resources.disk_size_specified  # what SkyPilot will request per pod
    # A disk that holds the plan but not the image: accepted for a pod, refused for a VM.
    assert build_spec("vllm", cloud="kubernetes", pull_secret="regcred", disk_size=90).disk_size == 90
    with pytest.raises(StackError, match=r"needs at least 182 GB per node \(182 GB = image 100 \+"):
        build_spec("vllm", cloud="aws", disk_size=90)
    with pytest.raises(StackError, match=r"needs at least 82 GB per node"):
        build_spec("vllm", cloud="kubernetes", pull_secret="regcred", disk_size=81)


def test_bucket_is_the_checkpoint_path(records, tmp_path):
    """With a bucket each run gets its own folder (a generated name unless --run) and resumes from it."""
    spec = build_spec("vllm", cloud="gcp", bucket="gs://my-ckpts/run1")
    assert re.fullmatch(r"vllm-\d{8}-\d{6}-[0-9a-f]{4}", spec.run_name), spec.run_name
    _, text = render(spec, out=tmp_path / "b.yaml")
    config = yaml.safe_load(text)
    assert config["file_mounts"] == {"/checkpoints": {"source": "gs://my-ckpts/run1", "mode": "MOUNT_CACHED"}}
    assert f"trainer.ckpt_path=/checkpoints/{spec.run_name} " in config["run"]
    assert "trainer.resume_mode=latest " in config["run"] and "trainer.resume_mode=null" not in config["run"]
    assert f"# Run:     {spec.run_name}: a new run" in text
    assert "survive `invoke down`" in text
    (storage,) = skypilot_task(text).storage_mounts.values()
    assert storage.mode.value == "MOUNT_CACHED"  # SkyPilot parsed the mode we wrote


def test_training_overrides_follow_the_seed_and_set(records):
    spec = build_spec("vllm", nodes=2, gpus="H100:8", sets=["trainer.epochs=1", "+trainer.extra=3"])
    overrides = training_overrides(spec)
    as_dict = dict(item.split("=", 1) for item in overrides)
    for key, value in GSM8K_GRPO:
        if key not in ("trainer.epochs", "trainer.micro_train_batch_size_per_gpu"):
            assert as_dict[key] == value, key
    assert as_dict["trainer.epochs"] == "1" and overrides[-1] == "+trainer.extra=3"
    # 256 x 5 / 16 GPUs = 80 per GPU: the seed's micro batch 64 does not divide it (tests/launch/test_training_plan.py).
    assert as_dict["trainer.micro_train_batch_size_per_gpu"] == "40"
    assert as_dict["generator.num_inference_engines"] == "16"  # colocate_all: engines x TP == policy GPUs
    assert as_dict["trainer.placement.policy_num_gpus_per_node"] == "8"
    assert as_dict["generator.backend"] == "vllm"
    assert overrides[0] == "data.train_data=['/root/data/gsm8k/train.parquet']"
    assert len(overrides) == len(set(k.split("=")[0] for k in overrides))  # every key once


def test_rehearsal_runs_a_ray_job_and_no_training(state_dir, tmp_path):
    fake_record("rehearsal", pushed=False)
    spec = build_spec("rehearsal", cloud="aws", nodes=2)
    _, text = render(spec, out=tmp_path / "r.yaml")
    config = yaml.safe_load(text)
    assert "skyrl-rehearsal-job --port" in config["run"] and "skyrl-train" not in config["run"]
    assert "INFERENCE_BACKEND" not in config["envs"]
    assert "accelerators" not in config["resources"]
    skypilot_task(text)


@pytest.mark.parametrize("kwargs, message", [
    ({"cloud": "mars"}, "unknown cloud 'mars'"),
    ({"gpus": "L40S:x"}, "bad --gpus 'L40S:x'"),
    ({"nodes": 0}, "bad --nodes 0"),
    ({"registry_login": ":REG_PASSWORD@ghcr.io"}, "lacks its user"),
    ({"registry_login": "ci@ghcr.io"}, "lacks its password variable"),
    ({"image": "ghcr.io/example/skyrl-stack:latest"}, "is not pinned by digest"),
    ({"sets": ["generator.backend=sglang"]}, "does not match the vllm image"),
    ({"sets": ["no-equals-sign"]}, "bad --set"),
    ({"disk_size": 50}, "needs at least 182 GB per node (182 GB = image 100 + model and data 5 + 3 checkpoints"),
])
def test_bad_input_is_one_clear_error(records, tmp_path, monkeypatch, kwargs, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StackError, match=re.escape(message)) as err:
        build_spec(kwargs.pop("variant", "vllm"), **kwargs)
    assert message in err.value.message and "\n" not in err.value.message
    assert err.value.hint
    assert not (tmp_path / "skypilot").exists()


def test_variant_without_record(state_dir, tmp_path):
    with pytest.raises(StackError, match="no build record for variant 'sglang'"):
        build_spec("sglang")


def test_skypilot_rejection_surfaces_its_message(records, tmp_path):
    # build_spec refuses a malformed --memory itself (task_spec.parse_memory); put one past it
    # to show that what SkyPilot's own check says reaches the user.
    spec = dataclasses.replace(build_spec("vllm", cloud="aws"), memory="lots")
    with pytest.raises(StackError, match="SkyPilot rejects the task: .*lots"):
        render(spec, out=tmp_path / "bad.yaml")
    assert not (tmp_path / "bad.yaml").exists()


def _invoke(args, tmp_path, state):
    env = {**os.environ, "SKYRL_STACK_WORKSPACE": str(state.parent), "SKYPILOT_DISABLE_LOCAL_API_SERVER": "1"}
    return subprocess.run([sys.executable, "-m", "invoke", "--search-root", str(REPO_ROOT), *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, message", [
    (["--cloud", "mars"], "error: unknown cloud 'mars'"),
    (["--nodes", "0"], "error: bad --nodes '0'"),
    (["--variant", "sglang"], "error: no build record for variant 'sglang'"),
    (["--registry-login", "ci@ghcr.io"], "error: registry login 'ci@ghcr.io' lacks its password variable"),
])
def test_invoke_render_bad_input(state_dir, tmp_path, args, message):
    fake_record("vllm")
    variant = [] if "--variant" in args else ["--variant", "vllm"]
    result = _invoke(["render", *variant, *args, "--out", "out.yaml"], tmp_path, state_dir)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines[0] == message or lines[0].startswith(message), result.stderr
    assert len(lines) == 2 and lines[1].startswith("hint: ") and "Traceback" not in result.stderr
    assert not (tmp_path / "out.yaml").exists() and not (tmp_path / "skypilot").exists()


def test_invoke_render_writes_under_skypilot(state_dir, tmp_path):
    fake_record("vllm")
    result = _invoke(["render", "--variant", "vllm", "--cloud", "aws/us-west-2", "--nodes", "2",
                      "--set", "trainer.epochs=1"], tmp_path, state_dir)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "skypilot" / "vllm-aws-2n.yaml"
    assert result.stdout.strip() == str(Path("skypilot/vllm-aws-2n.yaml"))
    text = out.read_text()
    assert "render --variant vllm --cloud aws/us-west-2 --nodes 2 --set trainer.epochs=1\n" in text
    assert "trainer.epochs=1 \\" in text
    skypilot_task(text)


@pytest.mark.parametrize("variant", ["vllm", "sglang", "vllm-managed-spot"])
def test_checked_in_examples_are_current_and_valid(variant):
    from skyrl_stack.launch.examples import render_example

    path = REPO_ROOT / "skypilot" / "examples" / f"{variant}.yaml"
    assert path.read_text() == render_example(variant), "regenerate: python -m skyrl_stack.launch.render --examples"
    text = path.read_text()
    assert "PLACEHOLDER" in text
    skypilot_task(text)


@pytest.mark.parametrize("before", [None, "0"])
def test_render_leaves_the_environment_as_it_was(records, tmp_path, monkeypatch, before):
    """A launch in the same process must be free to start SkyPilot's local API server afterwards."""
    if before is None:
        monkeypatch.delenv("SKYPILOT_DISABLE_LOCAL_API_SERVER", raising=False)
    else:
        monkeypatch.setenv("SKYPILOT_DISABLE_LOCAL_API_SERVER", before)
    environ = dict(os.environ)
    render(build_spec("vllm", cloud="aws"), out=tmp_path / "ok.yaml")
    assert dict(os.environ) == environ
    with pytest.raises(StackError, match="SkyPilot rejects"):  # also when SkyPilot refuses the task
        render(dataclasses.replace(build_spec("vllm", cloud="aws"), memory="lots"), out=tmp_path / "bad.yaml")
    assert dict(os.environ) == environ


DOCKER_HUB_IMAGE = "me/skyrl@" + FAKE_DIGEST


def test_short_docker_hub_image_logs_in_to_docker_hub(records, tmp_path):
    _, text = render(build_spec("vllm", cloud="aws", image=DOCKER_HUB_IMAGE, registry_login="me:HUB_TOKEN"),
                     out=tmp_path / "hub.yaml")
    secrets = yaml.safe_load(text)["secrets"]
    assert secrets["SKYPILOT_DOCKER_SERVER"] == "docker.io"  # not "me": that is the Docker Hub user
    assert secrets["SKYPILOT_DOCKER_USERNAME"] == "me" and secrets["SKYPILOT_DOCKER_PASSWORD"] is None
    skypilot_task(text)
    # a Docker Hub image is no ECR image: no password variable is an error, not an IAM-role login
    with pytest.raises(StackError, match="lacks its password variable"):
        build_spec("vllm", cloud="aws", image=DOCKER_HUB_IMAGE, registry_login="me:")


ECR_REGION = "us-east-1"
ECR_REPOSITORY = f"123456789012.dkr.ecr.{ECR_REGION}.amazonaws.com/team/skyrl"


def record_stack_outputs(repository=ECR_REPOSITORY, region=ECR_REGION):
    """The outputs file `invoke infra.up` records (aws_stack._cache's format)."""
    write_json_atomic(aws_stack.outputs_path(region), {
        "cloud": "aws", "region": region, "stack_name": "skyrl-stack-registry",
        "stack_id": f"arn:aws:cloudformation:{region}:123456789012:stack/skyrl-stack-registry/1",
        "status": "CREATE_COMPLETE", "parameters": {"RepositoryName": "team/skyrl"},
        "outputs": {"RepositoryUri": repository, "InstanceProfileName": "skyrl-nodes",
                    "InstanceProfileArn": "arn:aws:iam::123456789012:instance-profile/skyrl-nodes"},
        "recorded_at": "2026-01-01T00:00:00Z",
    })


def ecr_record(variant="vllm", repository=ECR_REPOSITORY):
    record = fake_record(variant)
    record.pushed = {"ref": f"{repository}@{FAKE_DIGEST}"}
    record.save()
    return record


def test_registry_ecr_renders_the_push_to_the_stack_repository(state_dir, tmp_path):
    record_stack_outputs()
    ecr_record()
    spec = build_spec("vllm", cloud="aws/us-west-2", registry="ecr")
    assert spec.image == f"{ECR_REPOSITORY}@{FAKE_DIGEST}"
    _, text = render(spec, out=tmp_path / "ecr.yaml")
    secrets = yaml.safe_load(text)["secrets"]
    # nodes log in with their IAM role: SkyPilot's ECR path needs an empty password
    assert secrets["SKYPILOT_DOCKER_USERNAME"] == "AWS" and secrets["SKYPILOT_DOCKER_PASSWORD"] == ""
    assert secrets["SKYPILOT_DOCKER_SERVER"] == f"123456789012.dkr.ecr.{ECR_REGION}.amazonaws.com"
    assert "through the node's IAM role" in text
    task = skypilot_task(text)
    (resources,) = task.resources
    assert resources.extract_docker_image() == f"{ECR_REPOSITORY}@{FAKE_DIGEST}"
    assert task.secrets["SKYPILOT_DOCKER_PASSWORD"].get_secret_value() == ""


def test_any_ecr_image_defaults_to_the_iam_role_login(records, tmp_path):
    image = f"{ECR_REPOSITORY}@{FAKE_DIGEST}"
    _, text = render(build_spec("sglang", cloud="aws", image=image), out=tmp_path / "e.yaml")
    assert yaml.safe_load(text)["secrets"]["SKYPILOT_DOCKER_PASSWORD"] == ""
    # another login given: it wins
    spec = build_spec("sglang", cloud="aws", image=image, registry_login="AWS:ECR_TOKEN")
    assert spec.registry_login.password_env == "ECR_TOKEN"
    # on Kubernetes SkyPilot ignores the login variables: a pull secret does the job
    assert build_spec("sglang", cloud="kubernetes", image=image, pull_secret="ecr-cred").registry_login is None


def test_registry_ecr_refuses_an_image_not_pushed_there(state_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fake_record("vllm")  # pushed to ghcr.io, not to the stack's ECR repository
    with pytest.raises(StackError, match="no AWS registry stack recorded") as err:
        build_spec("vllm", registry="ecr")
    assert "invoke infra.up" in err.value.hint
    record_stack_outputs()
    with pytest.raises(StackError, match="not in the ECR repository") as err:
        build_spec("vllm", registry="ecr")
    assert err.value.message == f"the vllm image is not in the ECR repository {ECR_REPOSITORY} (it was pushed to {FAKE_REPO})"
    assert err.value.hint == "push it first: invoke push --variant vllm --registry ecr"
    fake_record("sglang", pushed=False)
    with pytest.raises(StackError, match="it was not pushed") as err:
        build_spec("sglang", registry="ecr")
    ecr_record("vllm", repository=f"123456789012.dkr.ecr.{ECR_REGION}.amazonaws.com/other")
    with pytest.raises(StackError, match="not in the ECR repository"):
        build_spec("vllm", registry="ecr")
    with pytest.raises(StackError, match="unknown --registry 'ghcr'"):
        build_spec("vllm", registry="ghcr")
    assert not (tmp_path / "skypilot").exists()


def test_invoke_render_registry_ecr(state_dir, tmp_path):
    record_stack_outputs()
    ecr_record()
    result = _invoke(["render", "--variant", "vllm", "--registry", "ecr", "--out", "ecr.yaml"], tmp_path, state_dir)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load((tmp_path / "ecr.yaml").read_text())
    assert config["resources"]["image_id"] == f"docker:{ECR_REPOSITORY}@{FAKE_DIGEST}"
    assert config["secrets"]["SKYPILOT_DOCKER_PASSWORD"] == ""
    fake_record("sglang")
    result = _invoke(["render", "--variant", "sglang", "--registry", "ecr"], tmp_path, state_dir)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"error: the sglang image is not in the ECR repository {ECR_REPOSITORY} (it was pushed to {FAKE_REPO})",
        "hint: push it first: invoke push --variant sglang --registry ecr"]
