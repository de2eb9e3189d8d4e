"""`invoke launch/status/logs/down` through SkyPilot's SDK.

No SkyPilot API server or cloud can be reached here, so these tests replace
one function, skypilot_api._request (where every request would go to the API
server), and assert on what our code computed: the real sky.Task built from
the rendered YAML, the table printed from SkyPilot's own StatusResponse
objects, the exit code passed on, the one-line errors made from SkyPilot's
own exception classes. The smoke gate, renderer and SkyPilot's parser are real.
"""
from __future__ import annotations

import re

import pytest

from skyrl_stack.errors import StackError
from skyrl_stack.launch import clusters, launcher, options, preflight, skypilot_api
from skyrl_stack.launch.options import build_spec
from skyrl_stack.smoke.gate import record_run
from tests.launch.test_render import FAKE_DIGEST, FAKE_REPO, _invoke, fake_record, no_skypilot_api_server  # noqa: F401


@pytest.fixture
def sdk(monkeypatch, tmp_path):
    """Replace skypilot_api._request, the one seam to SkyPilot's API server.

    `sdk.answers[name]` is what the server would answer (an exception is raised
    as SkyPilot's SDK raises it); `sdk.calls[name]` records (args, kwargs)."""

    class Server:
        calls: dict = {}
        answers: dict = {"launch": (7, None), "tail_logs": 0, "down": None, "status": [], "optimize": None}

    def fake_request(name, *args, **kwargs):
        Server.calls[name] = (args, kwargs)
        answer = Server.answers[name]
        if isinstance(answer, BaseException):
            raise answer
        return answer

    Server.calls, Server.answers = {}, dict(Server.answers)
    monkeypatch.setattr(skypilot_api, "_request", fake_request)

    def fake_plan_check(image, overrides):
        # The SkyRL images cannot be built here (no GPU stack to pull): the in-image check is replaced at its
        # boundary; it runs for real in test_plan_check_runs_in_a_container_of_the_image and .venv-skyrl tests.
        Server.calls["plan_check"] = (image, overrides, "launch" in Server.calls)
        return "accepted"

    monkeypatch.setattr(preflight, "check_plan_in_image", fake_plan_check)
    monkeypatch.chdir(tmp_path)  # rendered files land in tmp_path/skypilot
    return Server


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
    (task,), kwargs = sdk.calls["launch"]
    assert kwargs == {"cluster_name": "c1", "dryrun": False, "idle_minutes_to_autostop": 30, "down": True}
    assert task.num_nodes == 2 and task.setup is None
    (resources,) = task.resources
    assert resources.extract_docker_image() == f"{FAKE_REPO}@{FAKE_DIGEST}"
    assert str(resources.cloud) == "AWS" and resources.region == "us-east-1"
    assert task.envs["INFERENCE_BACKEND"] == "vllm" and task.envs["SKYRL_RAY_JOIN_TIMEOUT"] == "90"
    assert task.secrets["WANDB_API_KEY"].get_secret_value() == "wandb-key-for-test"
    assert "trainer.epochs=1" in task.run and "skyrl-ray-up --port 6479" in task.run
    assert sdk.calls["tail_logs"] == (("c1", 7, True), {})  # follows the job id the launch returned
    # the file SkyPilot got is on disk and carries no secret value
    assert "wandb-key-for-test" not in (state_dir.parent / "skypilot" / "vllm-aws-2n.yaml").read_text()


def test_registry_password_is_passed_as_a_secret(state_dir, sdk, monkeypatch):
    fake_record("sglang")
    passed_smoke()
    monkeypatch.setenv("REG_PASSWORD", "registry-password")
    spec = build_spec("sglang", cloud="gcp", logger="console", registry_login="ci:REG_PASSWORD@ghcr.io")
    launcher.launch(spec, cluster="c2", detach=True)
    (task,), _ = sdk.calls["launch"]
    assert {k: v.get_secret_value() for k, v in task.secrets.items()} == {
        "SKYPILOT_DOCKER_USERNAME": "ci", "SKYPILOT_DOCKER_PASSWORD": "registry-password", "SKYPILOT_DOCKER_SERVER": "ghcr.io"}
    assert "tail_logs" not in sdk.calls  # detached: no log following


def test_launch_refuses_a_digest_without_a_passing_smoke_run(state_dir, sdk, monkeypatch, capsys):
    fake_record("vllm")
    monkeypatch.setenv("WANDB_API_KEY", "k")
    spec = build_spec("vllm", cloud="aws")
    with pytest.raises(StackError, match="no smoke run"):
        launcher.launch(spec)
    assert "launch" not in sdk.calls
    assert launcher.launch(spec, skip_smoke_gate=True, detach=True) == 0
    assert "WARNING: gate overridden" in capsys.readouterr().err
    assert "launch" in sdk.calls


def test_dry_run_needs_neither_gate_nor_secrets(state_dir, sdk, monkeypatch):
    fake_record("vllm")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert launcher.launch(build_spec("vllm", cloud="azure"), dry_run=True) == 0
    assert sdk.calls["launch"][1]["dryrun"] is True and "tail_logs" not in sdk.calls


def test_missing_secret_is_one_clear_line(state_dir, sdk, monkeypatch):
    fake_record("vllm")
    passed_smoke()
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    with pytest.raises(StackError, match="WANDB_API_KEY is not set") as err:
        launcher.launch(build_spec("vllm", cloud="aws"))
    assert "--logger console" in err.value.hint and "launch" not in sdk.calls


def test_a_secret_given_with_env_is_not_also_required_from_the_shell(state_dir, sdk, monkeypatch):
    """`--env WANDB_API_KEY=...` goes to SkyPilot as that secret (launch_env.split_secrets): the preflight
    took only the shell's value and refused the launch as if the key were missing."""
    fake_record("vllm")
    passed_smoke()
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    launcher.launch(build_spec("vllm", cloud="aws"), detach=True,
                    env_overrides=options.parse_env(["WANDB_API_KEY=key-from-env-flag"]))
    (task,), _ = sdk.calls["launch"]
    assert task.secrets["WANDB_API_KEY"].get_secret_value() == "key-from-env-flag"
    assert "WANDB_API_KEY" not in task.envs


def test_image_in_a_local_registry_is_refused(state_dir, sdk):
    fake_record("vllm")
    spec = build_spec("vllm", cloud="aws", image="127.0.0.1:5000/skyrl-stack@" + FAKE_DIGEST)
    with pytest.raises(StackError, match="only this machine can reach"):
        launcher.launch(spec)


def test_missing_cloud_credentials_give_the_sky_check_hint(state_dir, sdk, monkeypatch):
    from sky import exceptions

    fake_record("vllm")
    passed_smoke()
    monkeypatch.setenv("WANDB_API_KEY", "k")
    sdk.answers["launch"] = exceptions.NoCloudAccessError("Cloud access is not set up. Run: sky check")
    with pytest.raises(StackError, match="cannot launch on lambda") as err:
        launcher.launch(build_spec("vllm", cloud="lambda"))
    assert err.value.message == "SkyPilot cannot launch on lambda: Cloud access is not set up. Run: sky check"
    assert "`sky check lambda`" in err.value.hint


def test_down_calls_sky_down(sdk, capsys):
    clusters.down("skyrl-vllm")
    assert sdk.calls["down"] == (("skyrl-vllm",), {})
    assert "skyrl-vllm is down" in capsys.readouterr().err


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
    assert "launch" not in sdk.calls
    assert launcher.launch(spec, detach=True, skip_smoke_gate=True) == 0
    assert f"gate overridden: launch goes ahead with {image}" in capsys.readouterr().err
    (resources,) = sdk.calls["launch"][0][0].resources
    assert resources.extract_docker_image() == image


def test_env_values_stay_out_of_the_rendered_file(state_dir, sdk, monkeypatch):
    """`invoke launch --env HF_TOKEN=...`: SkyPilot gets the value, the file's header only the name."""
    fake_record("vllm")
    passed_smoke()
    monkeypatch.setenv("WANDB_API_KEY", "k")
    argv = ["launch", "--variant", "vllm", "--env", "HF_TOKEN=hf_secret_value_123", "--env=OTHER=other-secret-456",
            "--set", "trainer.epochs=1"]
    monkeypatch.setattr("sys.argv", ["invoke", *argv])
    command = options.command_line()
    assert command == ("invoke launch --variant vllm --env 'HF_TOKEN=<redacted>' '--env=OTHER=<redacted>' "
                       "--set trainer.epochs=1")
    env = options.parse_env(["HF_TOKEN=hf_secret_value_123", "OTHER=other-secret-456"])
    launcher.launch(build_spec("vllm", cloud="aws", sets=["trainer.epochs=1"]), detach=True, env_overrides=env,
                    command=command)
    text = (state_dir.parent / "skypilot" / "vllm-aws-1n.yaml").read_text()
    assert "hf_secret_value_123" not in text and "other-secret-456" not in text
    assert "HF_TOKEN=<redacted>" in text
    (task,), _ = sdk.calls["launch"]
    # the value still reaches SkyPilot, as a secret it redacts (test_launch_env.py); OTHER is a plain env
    assert task.secrets["HF_TOKEN"].get_secret_value() == "hf_secret_value_123" and "HF_TOKEN" not in task.envs
    assert task.envs["OTHER"] == "other-secret-456"


@pytest.mark.parametrize("kwargs, flags", [
    ({"dry_run": True}, "--dry-run does"),
    ({"detach": True}, "--detach does"),
    ({"down": True, "autostop": 10}, "--down, --autostop do"),
])
def test_local_cloud_refuses_options_it_cannot_honour(state_dir, sdk, kwargs, flags):
    """Refused before anything is rendered or started (no engine is touched)."""
    fake_record("rehearsal", pushed=False)
    spec = build_spec("rehearsal", cloud="local", nodes=2)
    with pytest.raises(StackError, match="not apply to --cloud local") as err:
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


@pytest.mark.parametrize("answer, launched", [("y", True), ("", False), ("no", False)])
def test_launch_shows_skypilots_plan_and_asks_first(state_dir, sdk, monkeypatch, capsys, answer, launched):
    """SkyPilot's optimizer is asked for the plan (its table streams to the user) before the question.

    Faked: the SDK calls (see the fixture) and the terminal. The real optimizer
    run is tests/launch/test_launch_plan.py.
    """
    fake_record("vllm")
    passed_smoke()
    monkeypatch.setenv("WANDB_API_KEY", "k")
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    questions = []
    monkeypatch.setattr("builtins.input", lambda prompt: questions.append(prompt) or answer)
    spec = build_spec("vllm", cloud="aws", nodes=2)
    if launched:
        assert launcher.launch(spec, cluster="c3", detach=True, confirm=True) == 0
        assert "launch" in sdk.calls
    else:
        with pytest.raises(StackError, match="^launch of c3 not confirmed: nothing was launched$"):
            launcher.launch(spec, cluster="c3", detach=True, confirm=True)
        assert "launch" not in sdk.calls
    ((dag,), _) = sdk.calls["optimize"]
    (task,) = dag.tasks  # the task SkyPilot planned is the rendered one
    assert task.num_nodes == 2
    assert questions == ["Launch c3 with this plan (COST is $ per hour for all 2 node(s))? [y/N] "]


def test_launch_without_a_terminal_needs_yes_before_any_work(state_dir, sdk, monkeypatch):
    """Refused before the gate and the plan check (which may pull a large image): no smoke record exists here,
    so a gate consulted first would fail with its own message instead."""
    fake_record("vllm")
    monkeypatch.setenv("WANDB_API_KEY", "k")
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    with pytest.raises(StackError, match="stdin is not a terminal") as err:
        launcher.launch(build_spec("vllm", cloud="aws"), confirm=True)
    assert "--yes" in err.value.hint
    assert not {"plan_check", "optimize", "launch"} & set(sdk.calls)


def test_a_missing_secret_is_refused_before_the_plan_check(state_dir, sdk, monkeypatch):
    fake_record("vllm")
    passed_smoke()
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    with pytest.raises(StackError, match="^WANDB_API_KEY is not set"):
        launcher.launch(build_spec("vllm", cloud="aws"), detach=True)
    assert "plan_check" not in sdk.calls and "launch" not in sdk.calls


def test_ctrl_d_at_the_question_is_a_no(state_dir, sdk, monkeypatch):
    fake_record("vllm")
    passed_smoke()
    monkeypatch.setenv("WANDB_API_KEY", "k")
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)

    def eof(prompt):
        raise EOFError

    monkeypatch.setattr("builtins.input", eof)
    with pytest.raises(StackError, match="^launch of c4 not confirmed: nothing was launched$"):
        launcher.launch(build_spec("vllm", cloud="aws"), cluster="c4", detach=True, confirm=True)
    assert "launch" not in sdk.calls


@pytest.mark.parametrize("name", ["LOGGER", "INFERENCE_BACKEND"])
def test_env_may_not_change_the_checked_training_command(name):
    with pytest.raises(StackError, match=f"^--env {name} would change .* after the plan was checked$") as err:
        options.parse_env([f"{name}=console"])
    assert "--set" in err.value.hint


def _status_response(name, status, resources):
    """What SkyPilot's API server answers to sky.status, built with SkyPilot's own response model
    (sky/schemas/api/responses.py StatusResponse), so a field we read that does not exist fails here."""
    from sky.schemas.api.responses import StatusResponse
    from sky.utils.status_lib import ClusterStatus

    return StatusResponse(name=name, launched_at=0, status=ClusterStatus[status], autostop=-1, to_down=False,
                          cluster_hash="h", cluster_ever_up=True, user_hash="u", user_name="me", workspace="default",
                          is_managed=False, nodes=2, resources_str=resources)


def test_status_prints_each_cluster_from_skypilots_answer(sdk, capsys):
    sdk.answers["status"] = [_status_response("skyrl-vllm", "UP", "2x AWS(p5.48xlarge, {'H100': 8})"),
                             _status_response("skyrl-sglang", "STOPPED", "1x GCP(a3-highgpu-8g)")]
    rows = clusters.status()
    assert sdk.calls["status"] == ((), {"cluster_names": None})
    assert rows == [{"name": "skyrl-vllm", "status": "UP", "resources": "2x AWS(p5.48xlarge, {'H100': 8})"},
                    {"name": "skyrl-sglang", "status": "STOPPED", "resources": "1x GCP(a3-highgpu-8g)"}]
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["skyrl-vllm", "UP", "2x", "AWS(p5.48xlarge,", "{'H100':", "8})"]
    assert out[1].split()[:2] == ["skyrl-sglang", "STOPPED"]


def test_status_of_one_missing_cluster_says_so(sdk, capsys):
    assert clusters.status("nope") == []
    assert sdk.calls["status"] == ((), {"cluster_names": ["nope"]})
    assert capsys.readouterr().out.strip() == "no clusters named nope"


def test_logs_passes_the_job_exit_code_on(sdk):
    """`invoke logs` exits with the job's code: SkyPilot's tail_logs returns it."""
    sdk.answers["tail_logs"] = 3
    assert clusters.logs("c1", job_id="4", follow=False) == 3
    assert sdk.calls["tail_logs"] == (("c1", 4, False), {})
    sdk.answers["tail_logs"] = None  # SkyPilot returns None for a job without an exit code yet
    assert clusters.logs("c1") == 0 and sdk.calls["tail_logs"] == (("c1", None, True), {})


# SkyPilot's exceptions as sky/optimizer.py and sky/server/common.py raise them (0.14.1; messages
# transcribed, the optimizer's colorama codes included), and the hint each must get.
def _sky_errors():
    from sky import exceptions as e

    return [
        ("not enabled", e.ResourcesUnavailableError(
            "Task requires AWS which is not enabled. To enable access, change the task cloud requirement or run: "
            "\x1b[1msky check aws\x1b[0m"), "SkyPilot cannot launch on aws", "`sky check aws`"),
        ("no match", e.ResourcesUnavailableError(
            "No launchable resource found for task None. To fix: relax its resource requirements.\n"
            "Hint: 'sky gpus list --all' to list available accelerators.\n      'sky check' to check the enabled "
            "clouds."), "no aws resources match the task: No launchable resource found", "sky gpus list --all"),
        ("no capacity", e.ResourcesUnavailableError("Failed to provision all possible launchable resources.",
                                                    failover_history=[RuntimeError("InsufficientInstanceCapacity")]),
         "no capacity on aws", "another region"),
        ("accelerator count", e.ResourcesUnavailableError(
            "Catalog does not contain any instances satisfying the request: H100:3."), "no aws resources match",
         "--gpus"),
        ("no cloud", e.NoCloudAccessError("Cloud access is not set up."), "cannot launch on aws", "`sky check aws`"),
        ("server down", e.ApiServerConnectionError("http://127.0.0.1:46580"), "cannot reach the SkyPilot API server",
         "sky api start"),
        ("server login", e.ApiServerAuthenticationError("http://x"), "wants a login", "sky api login"),
        ("no cluster", e.ClusterDoesNotExist("Cluster 'c9' does not exist."), "SkyPilot: Cluster 'c9' does not exist.",
         "invoke status"),
        ("other", ValueError("\x1b[31mboom\x1b[0m\nsecond line"), "SkyPilot failed: boom second line", "sky api logs"),
    ]


@pytest.mark.parametrize("case", range(9))
def test_skypilot_errors_are_mapped_by_class(case, state_dir, sdk, monkeypatch):
    label, exc, message, hint = _sky_errors()[case]
    sdk.answers["launch"] = exc
    fake_record("vllm")
    with pytest.raises(StackError, match=re.escape(message)) as err:
        launcher.launch(build_spec("vllm", cloud="aws"), dry_run=True)
    assert hint in err.value.hint, label
    assert "\x1b" not in err.value.render() and "\n" not in err.value.message


def test_launch_validates_the_exact_overrides_of_the_task_before_launching(state_dir, sdk, monkeypatch):
    """The plan check gets this task's overrides (shape and --set included), not a default render's."""
    from skyrl_stack.launch.task_spec import training_overrides

    fake_record("vllm")
    passed_smoke()
    monkeypatch.setenv("WANDB_API_KEY", "k")
    spec = build_spec("vllm", cloud="aws", nodes=2, gpus="L40S:4", sets=["trainer.epochs=1"])
    launcher.launch(spec, detach=True)
    image, overrides, launched_before = sdk.calls["plan_check"]
    assert image == f"{FAKE_REPO}@{FAKE_DIGEST}" and not launched_before
    assert overrides == training_overrides(spec)
    assert "trainer.epochs=1" in overrides and "trainer.micro_train_batch_size_per_gpu=40" in overrides


def test_a_plan_the_image_refuses_stops_the_launch(state_dir, sdk, monkeypatch, capsys):
    fake_record("vllm")
    passed_smoke()
    monkeypatch.setenv("WANDB_API_KEY", "k")

    def refuses(image, overrides):
        raise StackError("launch refused: the training plan was not validated", hint="fix it")

    monkeypatch.setattr(preflight, "check_plan_in_image", refuses)
    spec = build_spec("vllm", cloud="aws")
    with pytest.raises(StackError, match="^launch refused: the training plan was not validated"):
        launcher.launch(spec, detach=True)
    assert "launch" not in sdk.calls
    assert launcher.launch(spec, detach=True, skip_smoke_gate=True) == 0
    assert "did not check this task's training plan" in capsys.readouterr().err


def test_dry_run_and_rehearsal_skip_the_plan_check(state_dir, sdk, monkeypatch):
    fake_record("vllm")
    launcher.launch(build_spec("vllm", cloud="aws", logger="console"), dry_run=True)
    assert "plan_check" not in sdk.calls
    # The rehearsal has no SkyRL: a real (not dry-run) launch goes ahead without a plan check.
    fake_record("rehearsal")
    passed_smoke()
    assert launcher.launch(build_spec("rehearsal", cloud="aws"), detach=True) == 0
    assert "plan_check" not in sdk.calls and "launch" in sdk.calls


@pytest.mark.container
def test_plan_check_runs_in_a_container_of_the_image(rehearsal_image, monkeypatch):
    """Real engine, real image, the image's own suite: the rehearsal image has no SkyRL, so the check is
    skipped there, and a skip must refuse the launch (it validated nothing); nothing goes into the gate."""
    from skyrl_stack.smoke.gate import load_runs
    from skyrl_stack.launch.task_spec import TaskSpec, training_overrides

    monkeypatch.setenv("SKYRL_STACK_WORKSPACE", str(rehearsal_image.state_dir.parent))
    before = load_runs(rehearsal_image.digest)
    overrides = training_overrides(TaskSpec(variant="vllm", image=rehearsal_image.ref, backend="vllm", nodes=2))
    with pytest.raises(StackError, match=r"^launch refused: the training plan was not validated in .*"
                                         r"\(skyrl.validate skipped: not in this variant\)"):
        preflight.check_plan_in_image(rehearsal_image.ref, overrides)
    assert load_runs(rehearsal_image.digest) == before  # a plan check never moves the gate
    written = (rehearsal_image.state_dir / "plan-check" / "overrides.json").read_text()
    assert "trainer.micro_train_batch_size_per_gpu=40" in written  # this task's plan (2 x L40S:4) went in
