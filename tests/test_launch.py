"""`invoke launch/status/logs/down` through SkyPilot's SDK.

No cloud can be reached here, so these tests replace only the SDK calls that
would talk to SkyPilot's API server (sky.launch, sky.stream_and_get,
sky.tail_logs, sky.down) and assert on the real sky.Task built from the
rendered YAML. The smoke gate, renderer and SkyPilot's parser are real.
"""
from __future__ import annotations

import pytest

from skyrl_stack import launch as launcher
from skyrl_stack.errors import StackError
from skyrl_stack.render import build_spec
from skyrl_stack.smoke_gate import record_run
from tests.test_render import FAKE_DIGEST, FAKE_REPO, _invoke, fake_record, no_skypilot_api_server  # noqa: F401


@pytest.fixture
def sdk(monkeypatch, tmp_path):
    """Fake only the SDK calls; record what they received."""
    import sky

    calls = {}

    def fake_launch(task, **kwargs):
        calls["launch"] = (task, kwargs)
        return "request-1"

    def fake_stream_and_get(request):
        calls.setdefault("stream", []).append(request)
        return (7, None) if request == "request-1" else None

    def fake_tail_logs(cluster, job_id, follow):
        calls["tail"] = (cluster, job_id, follow)
        return 0

    def fake_down(cluster):
        calls["down"] = cluster
        return "request-down"

    monkeypatch.setattr(sky, "launch", fake_launch)
    monkeypatch.setattr(sky, "stream_and_get", fake_stream_and_get)
    monkeypatch.setattr(sky, "tail_logs", fake_tail_logs)
    monkeypatch.setattr(sky, "down", fake_down)

    def fake_plan_check(image, overrides):
        # The SkyRL images cannot be built here (no GPU stack to pull): the in-image check is replaced at its
        # boundary; it runs for real in test_plan_check_runs_in_a_container_of_the_image and .venv-skyrl tests.
        calls["plan_check"] = (image, overrides, "launch" in calls)
        return "accepted"

    monkeypatch.setattr(launcher, "check_plan_in_image", fake_plan_check)
    monkeypatch.chdir(tmp_path)  # rendered files land in tmp_path/skypilot
    return calls


def passed_smoke(digest=FAKE_DIGEST):
    report = {"ok": True, "tiers": ["static", "runtime"], "counts": {"passed": 5, "failed": 0, "skipped": 0},
              "checks": [{"name": "imports", "status": "passed"}]}
    record_run(digest, report, image=f"{FAKE_REPO}@{digest}", variant="vllm", all_tiers=True)


def test_launch_hands_the_rendered_task_to_sky_launch(state_dir, sdk, monkeypatch):
    fake_record("vllm")
    passed_smoke()
    monkeypatch.setenv("WANDB_API_KEY", "wandb-key-for-test")
    spec = build_spec("vllm", cloud="aws/us-east-1", nodes=2, sets=["trainer.epochs=1"])
    code = launcher.launch(spec, cluster="c1", autostop=30, down=True, env_overrides={"SKYRL_RAY_JOIN_TIMEOUT": "90"})
    assert code == 0
    task, kwargs = sdk["launch"]
    assert kwargs == {"cluster_name": "c1", "dryrun": False, "idle_minutes_to_autostop": 30, "down": True}
    assert task.num_nodes == 2 and task.setup is None
    (resources,) = task.resources
    assert resources.extract_docker_image() == f"{FAKE_REPO}@{FAKE_DIGEST}"
    assert str(resources.cloud) == "AWS" and resources.region == "us-east-1"
    assert task.envs["INFERENCE_BACKEND"] == "vllm" and task.envs["SKYRL_RAY_JOIN_TIMEOUT"] == "90"
    assert task.secrets["WANDB_API_KEY"].get_secret_value() == "wandb-key-for-test"
    assert "trainer.epochs=1" in task.run and "skyrl-ray-up --port 6479" in task.run
    assert sdk["tail"] == ("c1", 7, True)
    # the file SkyPilot got is on disk and carries no secret value
    assert "wandb-key-for-test" not in (state_dir.parent / "skypilot" / "vllm-aws-2n.yaml").read_text()


def test_registry_password_is_passed_as_a_secret(state_dir, sdk, monkeypatch):
    fake_record("sglang")
    passed_smoke()
    monkeypatch.setenv("REG_PASSWORD", "registry-password")
    spec = build_spec("sglang", cloud="gcp", logger="console", registry_login="ci:REG_PASSWORD@ghcr.io")
    launcher.launch(spec, cluster="c2", detach=True)
    task, _ = sdk["launch"]
    assert {k: v.get_secret_value() for k, v in task.secrets.items()} == {
        "SKYPILOT_DOCKER_USERNAME": "ci", "SKYPILOT_DOCKER_PASSWORD": "registry-password", "SKYPILOT_DOCKER_SERVER": "ghcr.io"}
    assert "tail" not in sdk  # detached: no log following


def test_launch_refuses_a_digest_without_a_passing_smoke_run(state_dir, sdk, monkeypatch, capsys):
    fake_record("vllm")
    monkeypatch.setenv("WANDB_API_KEY", "k")
    spec = build_spec("vllm", cloud="aws")
    with pytest.raises(StackError, match="no smoke run"):
        launcher.launch(spec)
    assert "launch" not in sdk
    assert launcher.launch(spec, skip_smoke_gate=True, detach=True) == 0
    assert "WARNING: gate overridden" in capsys.readouterr().err
    assert "launch" in sdk


def test_dry_run_needs_neither_gate_nor_secrets(state_dir, sdk, monkeypatch):
    fake_record("vllm")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert launcher.launch(build_spec("vllm", cloud="azure"), dry_run=True) == 0
    assert sdk["launch"][1]["dryrun"] is True and "tail" not in sdk


def test_missing_secret_is_one_clear_line(state_dir, sdk, monkeypatch):
    fake_record("vllm")
    passed_smoke()
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    with pytest.raises(StackError, match="WANDB_API_KEY is not set") as err:
        launcher.launch(build_spec("vllm", cloud="aws"))
    assert "--logger console" in err.value.hint and "launch" not in sdk


def test_image_in_a_local_registry_is_refused(state_dir, sdk):
    fake_record("vllm")
    spec = build_spec("vllm", cloud="aws", image="127.0.0.1:5000/skyrl-stack@" + FAKE_DIGEST)
    with pytest.raises(StackError, match="only this machine can reach"):
        launcher.launch(spec)


def test_missing_cloud_credentials_give_the_sky_check_hint(state_dir, sdk, monkeypatch):
    import sky
    from sky import exceptions

    fake_record("vllm")
    passed_smoke()
    monkeypatch.setenv("WANDB_API_KEY", "k")

    def no_access(task, **kwargs):
        raise exceptions.NoCloudAccessError("Cloud access is not set up. Run: sky check")

    monkeypatch.setattr(sky, "launch", no_access)
    with pytest.raises(StackError) as err:
        launcher.launch(build_spec("vllm", cloud="lambda"))
    assert err.value.message == "SkyPilot cannot launch on lambda: Cloud access is not set up. Run: sky check"
    assert "`sky check lambda`" in err.value.hint


def test_down_calls_sky_down(sdk):
    launcher.down("skyrl-vllm")
    assert sdk["down"] == "skyrl-vllm" and sdk["stream"] == ["request-down"]


def test_invoke_launch_unknown_cloud(state_dir, tmp_path):
    fake_record("vllm")
    result = _invoke(["launch", "--variant", "vllm", "--cloud", "nowhere"], tmp_path, state_dir)
    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == "error: unknown cloud 'nowhere'"
    assert "sky check" in result.stderr.splitlines()[1] and "Traceback" not in result.stderr
    assert not (tmp_path / "skypilot").exists()


def test_image_by_tag_launches_with_both_overrides(state_dir, sdk, monkeypatch, capsys):
    fake_record("vllm")
    monkeypatch.setenv("WANDB_API_KEY", "k")
    image = f"{FAKE_REPO}:vllm-latest"
    spec = build_spec("vllm", cloud="aws", image=image, allow_tag=True)
    with pytest.raises(StackError, match="not an image digest"):
        launcher.launch(spec, detach=True)
    assert "launch" not in sdk
    assert launcher.launch(spec, detach=True, skip_smoke_gate=True) == 0
    assert f"gate overridden: launch goes ahead with {image}" in capsys.readouterr().err
    (resources,) = sdk["launch"][0].resources
    assert resources.extract_docker_image() == image


def test_env_values_stay_out_of_the_rendered_file(state_dir, sdk, monkeypatch):
    """`invoke launch --env HF_TOKEN=...`: SkyPilot gets the value, the file's header only the name."""
    fake_record("vllm")
    passed_smoke()
    monkeypatch.setenv("WANDB_API_KEY", "k")
    argv = ["launch", "--variant", "vllm", "--env", "HF_TOKEN=hf_secret_value_123", "--env=OTHER=other-secret-456",
            "--set", "trainer.epochs=1"]
    monkeypatch.setattr("sys.argv", ["invoke", *argv])
    command = launcher.command_line()
    assert command == ("invoke launch --variant vllm --env 'HF_TOKEN=<redacted>' '--env=OTHER=<redacted>' "
                       "--set trainer.epochs=1")
    env = launcher.parse_env(["HF_TOKEN=hf_secret_value_123", "OTHER=other-secret-456"])
    launcher.launch(build_spec("vllm", cloud="aws", sets=["trainer.epochs=1"]), detach=True, env_overrides=env,
                    command=command)
    text = (state_dir.parent / "skypilot" / "vllm-aws-1n.yaml").read_text()
    assert "hf_secret_value_123" not in text and "other-secret-456" not in text
    assert "HF_TOKEN=<redacted>" in text
    task, _ = sdk["launch"]
    assert task.envs["HF_TOKEN"] == "hf_secret_value_123"  # the value still reaches SkyPilot


@pytest.mark.parametrize("kwargs, flags", [
    ({"dry_run": True}, "--dry-run does"),
    ({"detach": True}, "--detach does"),
    ({"down": True, "autostop": 10}, "--down, --autostop do"),
])
def test_local_cloud_refuses_options_it_cannot_honour(state_dir, sdk, kwargs, flags):
    """Refused before anything is rendered or started (no engine is touched)."""
    fake_record("rehearsal", pushed=False)
    spec = build_spec("rehearsal", cloud="local", nodes=2)
    with pytest.raises(StackError) as err:
        launcher.launch(spec, **kwargs)
    assert err.value.message == f"{flags} not apply to --cloud local"
    assert "invoke render --cloud local" in err.value.hint
    assert not (state_dir.parent / "skypilot").exists()


@pytest.mark.parametrize("args, message", [
    (["logs", "--cluster", "c1", "--job-id", "abc"], "error: bad --job-id 'abc'"),
    (["logs", "--cluster", "c1", "--job-id", "0"], "error: bad --job-id '0'"),
    (["launch", "--variant", "vllm", "--cloud", "aws", "--autostop", "soon"], "error: bad --autostop 'soon'"),
    (["launch", "--variant", "vllm", "--cloud", "aws", "--autostop", "-5"], "error: bad --autostop '-5'"),
    (["launch", "--variant", "rehearsal", "--cloud", "local", "--dry-run"], "error: --dry-run does not apply"),
])
def test_invoke_bad_numbers_and_local_options_are_one_clear_line(state_dir, tmp_path, args, message):
    fake_record("vllm")
    fake_record("rehearsal", pushed=False)
    result = _invoke(args, tmp_path, state_dir)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith(message) and len(lines) == 2 and lines[1].startswith("hint: "), result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "skypilot").exists()


def test_launch_validates_the_exact_overrides_of_the_task_before_launching(state_dir, sdk, monkeypatch):
    """The plan check gets this task's overrides (shape and --set included), not a default render's."""
    from skyrl_stack.task_spec import training_overrides

    fake_record("vllm")
    passed_smoke()
    monkeypatch.setenv("WANDB_API_KEY", "k")
    spec = build_spec("vllm", cloud="aws", nodes=2, gpus="L40S:4", sets=["trainer.epochs=1"])
    launcher.launch(spec, detach=True)
    image, overrides, launched_before = sdk["plan_check"]
    assert image == f"{FAKE_REPO}@{FAKE_DIGEST}" and not launched_before
    assert overrides == training_overrides(spec)
    assert "trainer.epochs=1" in overrides and "trainer.micro_train_batch_size_per_gpu=40" in overrides


def test_a_plan_the_image_refuses_stops_the_launch(state_dir, sdk, monkeypatch, capsys):
    fake_record("vllm")
    passed_smoke()
    monkeypatch.setenv("WANDB_API_KEY", "k")

    def refuses(image, overrides):
        raise StackError("launch refused: the training plan was not validated", hint="fix it")

    monkeypatch.setattr(launcher, "check_plan_in_image", refuses)
    spec = build_spec("vllm", cloud="aws")
    with pytest.raises(StackError, match="^launch refused: the training plan was not validated"):
        launcher.launch(spec, detach=True)
    assert "launch" not in sdk
    assert launcher.launch(spec, detach=True, skip_smoke_gate=True) == 0
    assert "did not check this task's training plan" in capsys.readouterr().err


def test_dry_run_and_rehearsal_skip_the_plan_check(state_dir, sdk, monkeypatch):
    fake_record("vllm")
    launcher.launch(build_spec("vllm", cloud="aws", logger="console"), dry_run=True)
    assert "plan_check" not in sdk


@pytest.mark.container
def test_plan_check_runs_in_a_container_of_the_image(rehearsal_image, monkeypatch):
    """Real engine, real image, the image's own suite: the rehearsal image has no SkyRL, so the check is
    skipped there, and a skip must refuse the launch (it validated nothing); nothing goes into the gate."""
    from skyrl_stack.smoke_gate import load_runs
    from skyrl_stack.task_spec import TaskSpec, training_overrides

    monkeypatch.setenv("SKYRL_STACK_STATE_DIR", str(rehearsal_image.state_dir))
    before = load_runs(rehearsal_image.digest)
    overrides = training_overrides(TaskSpec(variant="vllm", image=rehearsal_image.ref, backend="vllm", nodes=2))
    with pytest.raises(StackError, match=r"^launch refused: the training plan was not validated in .*"
                                         r"\(skyrl.validate skipped: not in this variant\)"):
        launcher.check_plan_in_image(rehearsal_image.ref, overrides)
    assert load_runs(rehearsal_image.digest) == before  # a plan check never moves the gate
    written = (rehearsal_image.state_dir / "plan-check" / "overrides.json").read_text()
    assert "trainer.micro_train_batch_size_per_gpu=40" in written  # this task's plan (2 x L40S:4) went in
