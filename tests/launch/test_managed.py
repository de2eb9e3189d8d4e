"""Managed runs on the cloud side: `--managed --spot --run/--resume`, per-run checkpoints, autostop, `invoke jobs.*`.

Real: the `invoke` CLI, the renderer, SkyPilot 0.14.1's schema, parser, DAG
conversion, managed-jobs defaults, the controller's YAML reload, AWS's feature
check, the controller's recovery executor (tests/support/managed_path.py, in a
process whose HOME holds real catalog rows), boto3 against moto server for the
run-path check. Replaced, because no API server or cloud exists here: the one
seam to SkyPilot's API server (skypilot_api._request) and the in-image plan
check, as in test_launch.py.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest
import requests
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from skyrl_stack.errors import StackError
from skyrl_stack.launch import launcher, managed, managed_jobs, preflight, skypilot_api
from skyrl_stack.launch.options import DEFAULT_AUTOSTOP_MINUTES, build_spec
from skyrl_stack.launch.run_paths import POINTER, STEP_PREFIX, check_run_path, run_path_state
from skyrl_stack.launch.task_spec import training_overrides
from tests.launch.test_launch import passed_smoke
from tests.launch.test_render import FAKE_DIGEST, FAKE_REPO, fake_record, no_skypilot_api_server  # noqa: F401
from tests.launch.test_training_plan import SKYRL_VENV_PYTHON, VALIDATE_MANY, needs_skyrl_venv
from tests.support.moto import moto_server
from tests.support.paths import DATA, REPO_ROOT
from tests.support.registry import free_port

IMAGE = f"{FAKE_REPO}@{FAKE_DIGEST}"
DONE_WHEN = ["render", "--variant", "vllm", "--image", IMAGE, "--cloud", "aws", "--nodes", "2", "--managed", "--spot",
             "--bucket", "s3://my-bucket/runs", "--run", "r1"]


def _env(tmp_path, state_dir, **extra) -> dict:
    """A process environment: our workspace, no local API server, a HOME holding SkyPilot's catalog rows."""
    home = tmp_path / "home"
    if not home.exists():
        shutil.copytree(DATA / "skypilot-catalog" / "v8", home / ".sky" / "catalogs" / "v8")
    return {**os.environ, "HOME": str(home), "SKYRL_STACK_WORKSPACE": str(state_dir.parent),
            "SKYPILOT_DISABLE_LOCAL_API_SERVER": "1", "SKYPILOT_DISABLE_USAGE_COLLECTION": "1", **extra}


def _run(args, tmp_path, env):
    return subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_managed_spot_render_is_what_skypilots_managed_jobs_path_accepts(state_dir, tmp_path):
    """The issue's done-when render, then SkyPilot's own managed-jobs path on the file (managed_path.py)."""
    fake_record("vllm")
    env = _env(tmp_path, state_dir)
    rendered = _run(["-m", "invoke", "--search-root", str(REPO_ROOT), *DONE_WHEN, "--out", "F.yaml"], tmp_path, env)
    assert rendered.returncode == 0, rendered.stderr
    assert "not run" not in rendered.stderr  # render's own dag.validate() ran: the catalog is in HOME
    text = (tmp_path / "F.yaml").read_text()
    assert "# Run:     r1: a new run" in text and "s3://my-bucket/runs/r1" in text

    checked = _run(["-m", "tests.support.managed_path", str(tmp_path / "F.yaml")], REPO_ROOT,
                   {**env, "PYTHONPATH": str(REPO_ROOT)})
    assert checked.returncode == 0, checked.stderr[-3000:]
    seen = json.loads(checked.stdout.strip().splitlines()[-1])
    assert seen["use_spot"] is True and seen["spot_feature_checked"] and seen["cloud"] == "AWS"
    assert seen["job_recovery"] == {"strategy": "EAGER_NEXT_REGION", "max_restarts_on_errors": 3,
                                    "recover_on_exit_codes": []}
    assert seen["file_mounts"] == {"/checkpoints": "s3://my-bucket/runs"}
    assert "trainer.resume_mode=latest " in seen["run"] and "trainer.ckpt_path=/checkpoints/r1 " in seen["run"]
    # SkyPilot's controller restarts a [1, 137] failure (driver 1, cancelled worker 137) 3 times, then stops:
    # a bug in the training code costs at most 3 re-provisionings.
    assert seen["restarts_after_1_137"] == [True, True, True, False, False]


@pytest.mark.reliability("bad input", "`invoke render --managed` without `--bucket` (aws, kubernetes, gcp)",
                         "one `error:`/`hint:` pair, exit 1, nothing written")
@pytest.mark.parametrize("cloud", ["aws", "kubernetes", "gcp/us-central1"])
def test_managed_without_durable_storage_is_one_line_and_writes_nothing(state_dir, tmp_path, cloud):
    fake_record("vllm")
    result = _run(["-m", "invoke", "--search-root", str(REPO_ROOT), "render", "--variant", "vllm", "--cloud", cloud,
                   "--managed", "--spot", "--out", "F.yaml"], tmp_path, _env(tmp_path, state_dir))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: --managed needs durable checkpoint storage") and len(lines) == 2, result.stderr
    assert lines[1] == "hint: give it a bucket: --bucket s3://BUCKET/PATH"
    assert not (tmp_path / "F.yaml").exists() and not (tmp_path / "skypilot").exists()


def test_the_driver_codes_of_a_bug_are_never_recovered_without_limit():
    """SkyPilot recovers a code in recover_on_exit_codes without counting it (recovery_strategy.py
    should_restart_on_failure): 1 (SkyRL's driver, bug or dead actor alike) and 137 (every node SkyPilot
    cancels after a failure) must not be there, or a bug would restart forever."""
    assert not {1, 137} & set(managed.RECOVER_ON_EXIT_CODES)
    assert managed.MAX_RESTARTS_ON_ERRORS >= 1


def test_without_a_bucket_nothing_changes(state_dir):
    fake_record("vllm")
    spec = build_spec("vllm", cloud="aws")
    assert (spec.run_name, spec.managed, spec.spot) == (None, False, False)
    assert spec.ckpt_path == "/root/ckpts/gsm8k_1.5B_ckpt"
    assert "trainer.resume_mode=null" in training_overrides(spec)


@pytest.mark.parametrize("mode", ["null", "none", "from_path"])
def test_durable_storage_refuses_a_resume_mode_that_a_recovery_would_not_resume_from(state_dir, mode):
    """A managed job's recoveries run the same command: a --set trainer.resume_mode other than latest
    (which the --set checks accept: SkyRL's config takes a string) would restart each recovery at step 0."""
    fake_record("vllm")
    with pytest.raises(StackError, match=rf"^bad --set trainer.resume_mode={mode}: with --bucket"):
        build_spec("vllm", cloud="aws", bucket="s3://b/r", managed=True, spot=True, sets=[f"trainer.resume_mode={mode}"])
    spec = build_spec("vllm", cloud="aws", bucket="s3://b/r", managed=True, sets=["trainer.resume_mode=latest"])
    assert "trainer.resume_mode=latest" in training_overrides(spec)
    assert "trainer.resume_mode=null" in training_overrides(build_spec("vllm", cloud="aws",
                                                                       sets=["trainer.resume_mode=null"]))


def test_spot_without_managed_warns(state_dir, capsys):
    fake_record("vllm")
    spec = build_spec("vllm", cloud="aws", spot=True)
    assert spec.spot and not spec.managed
    assert "WARNING: --spot without --managed" in capsys.readouterr().err


@pytest.mark.parametrize("kwargs, message", [
    ({"run": "a", "resume": "b", "bucket": "s3://b/r"}, "--run and --resume are mutually exclusive"),
    ({"resume": "r1"}, "--resume r1 needs the bucket that holds its checkpoints"),
    ({"run": "r1"}, "--run r1 names the run's checkpoint folder under --bucket, and there is no --bucket"),
    ({"run": "../other", "bucket": "s3://b/r"}, "bad --run '../other': a run name is a folder under the bucket"),
    ({"resume": "a/b", "bucket": "s3://b/r"}, "bad --resume 'a/b'"),
    ({"bucket": "/data/ckpts"}, "bad --bucket '/data/ckpts' (an absolute directory only with --cloud local)"),
    ({"managed": True, "cloud": "local"}, "--managed needs durable checkpoint storage"),
    ({"resume": "", "bucket": "s3://b/r"}, "bad --resume '': it is empty"),
    ({"run": " ", "bucket": "s3://b/r"}, "bad --run ' ': it is empty"),
])
def test_bad_run_options_are_one_clear_error(state_dir, kwargs, message):
    fake_record("vllm")
    with pytest.raises(StackError, match=re.escape(message)) as err:
        build_spec("vllm", **{"cloud": "aws", **kwargs})
    assert "\n" not in err.value.message and err.value.hint


def test_a_host_directory_is_a_bucket_only_for_the_local_cloud(state_dir):
    fake_record("rehearsal", pushed=False)
    spec = build_spec("rehearsal", cloud="local", nodes=2, managed=True, bucket="/srv/ckpts", run="r1")
    assert (spec.bucket, spec.run_name, spec.ckpt_path) == ("/srv/ckpts", "r1", "/checkpoints/r1")


@given(name=st.text(max_size=70) | st.from_regex(r"[A-Za-z0-9._/-]{1,70}", fullmatch=True))
@settings(derandomize=True, database=None, deadline=None, max_examples=300)
def test_any_run_name_is_a_single_safe_folder_or_one_line_refusal(name):
    try:
        parsed, resume = managed.parse_run(name, None, "vllm")
    except StackError as err:
        assert err.message.startswith("bad --run ") and err.hint
        return
    from sky.task import _is_valid_name  # SkyPilot's own rule for task and job names

    assert name, "an empty --run is refused (it would silently be a new, generated run)"
    assert parsed == name and not resume
    assert "/" not in parsed and ".." != parsed and parsed[0].isalnum() and len(parsed) <= 63
    assert parsed.isascii() and parsed.isprintable() and " " not in parsed
    assert _is_valid_name(parsed)


def test_generated_run_names_differ_and_say_when():
    assert re.fullmatch(r"vllm-\d{8}-\d{6}-[0-9a-f]{4}", managed.parse_run(None, None, "vllm")[0])
    assert managed.generated_run_name("vllm", now=0, token="abcd") == "vllm-19700101-000000-abcd"
    assert len({managed.generated_run_name("vllm", now=0) for _ in range(20)}) > 1


# --------------------------------------------------------------------------- the run's folder in S3 (moto)


@pytest.fixture(scope="module")
def moto_url():
    with moto_server() as url:
        yield url


@pytest.fixture
def s3(moto_url, monkeypatch, tmp_path):
    """boto3 pointed at a clean moto account (as a user's AWS_ENDPOINT_URL would), with bucket `ckpts`."""
    import boto3

    requests.post(f"{moto_url}/moto-api/reset", timeout=10).raise_for_status()
    for key in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    for key, value in {"AWS_ENDPOINT_URL": moto_url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
                       "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")
                       }.items():
        monkeypatch.setenv(key, value)
    client = boto3.client("s3")
    client.create_bucket(Bucket="ckpts")
    return client


def test_s3_run_folder_states(s3):
    assert run_path_state("s3://missing-bucket/runs", "r1")[0] == "empty"  # SkyPilot creates it at launch
    assert run_path_state("s3://ckpts/runs", "r1") == ("empty", "s3://ckpts/runs/r1 holds no checkpoints")
    s3.put_object(Bucket="ckpts", Key="runs/r10/latest_ckpt_global_step.txt", Body=b"10")  # another run
    s3.put_object(Bucket="ckpts", Key="runs/r1/notes.txt", Body=b"not a checkpoint")
    assert run_path_state("s3://ckpts/runs", "r1")[0] == "empty"
    s3.put_object(Bucket="ckpts", Key="runs/r1/global_step_10/policy/model_world_size_8_rank_0.pt", Body=b"x")
    assert run_path_state("s3://ckpts/runs/", "r1") == ("has-checkpoints", "s3://ckpts/runs/r1 holds global_step_10")
    s3.put_object(Bucket="ckpts", Key=f"r2/{POINTER}", Body=b"5")  # a bucket without a path
    assert run_path_state("s3://ckpts", "r2") == ("has-checkpoints", f"s3://ckpts/r2 holds {POINTER}")


def test_a_new_run_refuses_checkpoints_and_a_resume_needs_them(s3, state_dir):
    fake_record("vllm")
    s3.put_object(Bucket="ckpts", Key=f"runs/old/{POINTER}", Body=b"20")
    with pytest.raises(StackError, match="^run old already has checkpoints .*latest_ckpt_global_step.txt") as err:
        check_run_path(build_spec("vllm", cloud="aws", bucket="s3://ckpts/runs", run="old", managed=True))
    assert "--resume old" in err.value.hint
    assert check_run_path(build_spec("vllm", cloud="aws", bucket="s3://ckpts/runs", resume="old")) == "has-checkpoints"
    with pytest.raises(StackError, match="^--resume nwe: no checkpoints to resume"):
        check_run_path(build_spec("vllm", cloud="aws", bucket="s3://ckpts/runs", resume="nwe"))
    assert check_run_path(build_spec("vllm", cloud="aws", bucket="s3://ckpts/runs", run="new")) == "empty"


def test_a_folder_that_cannot_be_checked_is_a_warning(state_dir, monkeypatch, capsys):
    fake_record("vllm")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    assert check_run_path(build_spec("vllm", cloud="aws", bucket="s3://ckpts/runs", run="r1")) == "unknown"
    assert re.search(r"WARNING: could not check that s3://ckpts/runs/r1 holds no checkpoints: cannot list .*",
                     capsys.readouterr().err)
    assert check_run_path(build_spec("vllm", cloud="gcp", bucket="gs://ckpts/runs", resume="r1")) == "unknown"
    assert ("WARNING: could not check that gs://ckpts/runs/r1 holds its checkpoints: gs storage is not checked "
            "before launch (only s3:// is)") in capsys.readouterr().err


# --------------------------------------------------------------------------- launch --managed, autostop, jobs.*


@pytest.fixture
def server(monkeypatch, tmp_path):
    """Every request to SkyPilot's API server, in order (skypilot_api._request replaced), with canned answers."""
    calls: list = []
    answers = {"jobs.launch": ([11], None), "jobs.tail_logs": 0, "jobs.cancel": None, "optimize": None,
               "launch": (3, None), "tail_logs": 0, "jobs.queue_v2": ([], 0, {}, 0)}

    def fake_request(request, /, *args, **kwargs):
        calls.append((request, args, kwargs))
        return answers[request]

    monkeypatch.setattr(skypilot_api, "_request", fake_request)
    monkeypatch.setattr(preflight, "check_plan_in_image", lambda image, overrides: "accepted")
    monkeypatch.setenv("WANDB_API_KEY", "k")
    monkeypatch.chdir(tmp_path)
    return calls, answers


def _names(calls):
    return [name for name, _, _ in calls]


def test_launch_managed_submits_the_rendered_task_as_the_runs_job(state_dir, server):
    calls, _ = server
    fake_record("vllm")
    passed_smoke()
    spec = build_spec("vllm", cloud="aws", nodes=2, managed=True, spot=True, bucket="gs://b/runs", run="r1")
    assert launcher.launch(spec) == 0
    assert _names(calls) == ["jobs.launch", "jobs.tail_logs"]
    _, (task,), kwargs = calls[0]
    assert kwargs == {"name": "r1"}
    (resources,) = task.resources
    assert resources.use_spot and resources.job_recovery == managed.job_recovery()
    assert task.num_nodes == 2 and "trainer.ckpt_path=/checkpoints/r1 " in task.run
    assert calls[1][2] == {"name": None, "job_id": 11, "follow": True}  # follows the job the launch made


@pytest.mark.parametrize("kwargs, flags", [({"cluster": "c"}, "--cluster does"), ({"down": True, "autostop": 5},
                                                                                     "--autostop, --down do")])
def test_launch_managed_refuses_cluster_options(state_dir, server, kwargs, flags):
    fake_record("vllm")
    spec = build_spec("vllm", cloud="aws", managed=True, bucket="gs://b/runs")
    with pytest.raises(StackError, match=f"^{flags} not apply to --managed$"):
        launcher.launch(spec, **kwargs)
    assert server[0] == []


def test_managed_dry_run_shows_the_spot_and_the_on_demand_plan(state_dir, server, capsys):
    calls, _ = server
    fake_record("vllm")
    spec = build_spec("vllm", cloud="aws", managed=True, spot=True, bucket="gs://b/runs")
    assert launcher.launch(spec, dry_run=True) == 0
    assert _names(calls) == ["optimize", "optimize"]  # nothing submitted
    planned = [[r.use_spot for r in dag.tasks[0].resources] for _, (dag,), _ in calls]
    assert planned == [[True], [False]]
    err = capsys.readouterr().err
    assert "plan on spot capacity (requested)" in err and "plan on on-demand capacity:" in err


def test_managed_launch_asks_after_both_plans(state_dir, server, monkeypatch):
    calls, _ = server
    fake_record("vllm")
    passed_smoke()
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    questions = []
    monkeypatch.setattr("builtins.input", lambda prompt: questions.append(prompt) or "n")
    spec = build_spec("vllm", cloud="aws", managed=True, spot=True, bucket="gs://b/runs", run="r2")
    with pytest.raises(StackError, match="^launch of r2 not confirmed"):
        launcher.launch(spec, confirm=True)
    assert _names(calls) == ["optimize", "optimize"]
    assert questions == ["Submit managed job r2 with this plan (COST is $ per hour for all 1 node(s))? [y/N] "]


def test_an_unmanaged_spot_launch_asks_after_both_plans(state_dir, server, monkeypatch, capsys):
    """As its dry run does (and README "What it costs" says): the on-demand table, then the task's own
    spot one, then the question. It showed the spot table alone before asking."""
    calls, _ = server
    fake_record("vllm")
    passed_smoke()
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    spec = build_spec("vllm", cloud="aws", spot=True)
    with pytest.raises(StackError, match="^launch of c4 not confirmed"):
        launcher.launch(spec, cluster="c4", confirm=True)
    assert _names(calls) == ["optimize", "optimize"]  # nothing launched
    planned = [[r.use_spot for r in dag.tasks[0].resources] for _, (dag,), _ in calls]
    assert planned == [[False], [True]]
    assert "plan on on-demand capacity:" in capsys.readouterr().err


@pytest.mark.parametrize("cloud, kwargs, minutes, line", [
    ("aws", {}, DEFAULT_AUTOSTOP_MINUTES, f"stops after {DEFAULT_AUTOSTOP_MINUTES} idle minutes (default"),
    ("aws", {"autostop": "off"}, None, "no idle autostop (--autostop off)"),
    ("aws", {"autostop": "0"}, 0, "stops after 1 idle minute(s)"),
    ("aws", {"down": True}, None, "torn down when its job ends"),
    ("kubernetes", {}, None, "Kubernetes cannot stop a cluster"),
])
def test_an_idle_cluster_stops_by_default(state_dir, server, capsys, cloud, kwargs, minutes, line):
    calls, _ = server
    fake_record("vllm")
    launcher.launch(build_spec("vllm", cloud=cloud), dry_run=True, **kwargs)
    (_, _, sent), = [c for c in calls if c[0] == "launch"]
    assert sent["idle_minutes_to_autostop"] == minutes
    assert line in capsys.readouterr().err


def test_kubernetes_refuses_an_autostop_that_stops_before_skypilot(state_dir, server):
    """SkyPilot asks Kubernetes for AUTOSTOP (sky/execution.py), which it lacks: the optimizer would find no
    resources after the preflight; --down makes it an autodown, which Kubernetes has."""
    calls, _ = server
    fake_record("vllm")
    with pytest.raises(StackError, match="^--autostop 5 would stop the cluster, and Kubernetes cannot stop one") as err:
        launcher.launch(build_spec("vllm", cloud="kubernetes"), dry_run=True, autostop="5")
    assert "--down" in err.value.hint and calls == []
    launcher.launch(build_spec("vllm", cloud="kubernetes"), dry_run=True, autostop="5", down=True)
    (_, _, sent), = [c for c in calls if c[0] == "launch"]
    assert (sent["idle_minutes_to_autostop"], sent["down"]) == (5, True)


@pytest.mark.reliability("bad input", "`invoke launch --run r1` where the S3 run folder already holds checkpoints",
                         "refused before any SkyPilot request, hint `--resume r1`")
def test_a_new_run_over_old_checkpoints_stops_the_launch_before_skypilot(s3, state_dir, server):
    fake_record("vllm")
    s3.put_object(Bucket="ckpts", Key=f"runs/r1/{POINTER}", Body=b"10")
    with pytest.raises(StackError, match="^run r1 already has checkpoints"):
        launcher.launch(build_spec("vllm", cloud="aws", managed=True, bucket="s3://ckpts/runs", run="r1"), dry_run=True)
    assert server[0] == []


def _job(job_id, name, status, recoveries):
    """A queue row as SkyPilot's API server sends it (sky/schemas/api/responses.py ManagedJobRecord)."""
    from sky.jobs.state import ManagedJobStatus
    from sky.schemas.api.responses import ManagedJobRecord

    return ManagedJobRecord(job_id=job_id, job_name=name, status=ManagedJobStatus[status], recovery_count=recoveries,
                            resources="2x[L40S:4]")


def test_jobs_status_shows_each_runs_recoveries(server, capsys):
    calls, answers = server
    answers["jobs.queue_v2"] = ([_job(4, "r1", "RUNNING", 2), _job(5, "r12", "RECOVERING", 0)], 2, {}, 2)
    rows = managed_jobs.status("r1")
    assert rows == [{"id": 4, "name": "r1", "status": "RUNNING", "recoveries": 2, "resources": "2x[L40S:4]"}]
    assert calls[0][2]["name_match"] == "r1" and "recovery_count" in calls[0][2]["fields"]
    assert capsys.readouterr().out.split() == ["4", "r1", "RUNNING", "recoveries", "2", "2x[L40S:4]"]


@pytest.mark.parametrize("call", [managed_jobs.status, managed_jobs.logs, managed_jobs.cancel])
@pytest.mark.parametrize("name", ["x/y", "a b", "a\nb", "-r1"])
def test_jobs_commands_refuse_a_name_no_run_can_have_before_any_request(server, call, name):
    """--run of jobs.status/logs/cancel took any text to SkyPilot's server (a line break included)."""
    with pytest.raises(StackError, match=r"^bad --run .*: a run name is a folder under the bucket"):
        call(name)
    assert server[0] == []


def test_no_managed_jobs_points_at_jobs_status_not_the_clusters(monkeypatch):
    """SkyPilot raises ClusterNotUpError when no jobs controller is up (sky/jobs/server/core.py); the hint
    named `invoke status`, which lists clusters, not managed jobs."""
    from sky import exceptions as sky_errors

    def no_jobs(request, /, *args, **kwargs):
        raise sky_errors.ClusterNotUpError("No in-progress managed jobs.", cluster_status=None)

    monkeypatch.setattr(skypilot_api, "_request", no_jobs)
    with pytest.raises(StackError, match=r"^SkyPilot: No in-progress managed jobs\.$") as err:
        managed_jobs.logs("r1")
    assert err.value.hint.startswith("`invoke jobs.status` lists the managed jobs")
    with pytest.raises(StackError, match=r"^SkyPilot: No in-progress managed jobs\.$") as err:
        skypilot_api.api("tail_logs", "c1")
    assert err.value.hint == "`invoke status` lists the clusters and their state"


def test_jobs_logs_and_cancel_name_the_job(server):
    calls, answers = server
    answers["jobs.tail_logs"] = 100  # SkyPilot's code for a failed managed job (sky/exceptions.py JobExitCode)
    assert managed_jobs.logs("r1", follow=False) == 100
    managed_jobs.cancel("r1")
    assert calls == [("jobs.tail_logs", (), {"name": "r1", "job_id": None, "follow": False}),
                     ("jobs.cancel", (), {"name": "r1", "job_ids": None})]
    with pytest.raises(StackError, match="--run NAME or --job-id ID"):
        managed_jobs.cancel()


def test_the_request_seam_reaches_skypilots_managed_jobs_sdk():
    """skypilot_api._request resolves "jobs.launch" on the real SDK (sky.jobs.launch in 0.14.1)."""
    import inspect

    import sky

    assert list(inspect.signature(sky.jobs.launch).parameters)[:2] == ["task", "name"]
    assert {"refresh", "skip_finished", "fields", "name_match"} <= set(inspect.signature(sky.jobs.queue_v2).parameters)
    assert {"name", "job_id", "follow"} <= set(inspect.signature(sky.jobs.tail_logs).parameters)
    assert {"name", "job_ids"} <= set(inspect.signature(sky.jobs.cancel).parameters)


@needs_skyrl_venv
def test_skyrls_validate_cfg_accepts_the_managed_runs_overrides(state_dir):
    """SkyRL 0.2.0's own config composition and validate_cfg (the skyrl tier's code, in .venv-skyrl) on the
    command of a managed run: resume_mode=latest and the run's checkpoint folder are keys SkyRL takes."""
    fake_record("vllm")
    overrides = training_overrides(build_spec("vllm", cloud="aws", nodes=2, managed=True, spot=True,
                                              bucket="s3://my-bucket/runs", run="r1"))
    assert {"trainer.resume_mode=latest", "trainer.ckpt_path=/checkpoints/r1"} <= set(overrides)
    env = {k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"}
    result = subprocess.run([str(SKYRL_VENV_PYTHON), "-c", VALIDATE_MANY], input=json.dumps([overrides]),
                            env=dict(env, PYTHONPATH=str(REPO_ROOT)), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [None]


@needs_skyrl_venv
def test_the_run_folder_check_reads_skyrls_own_names():
    """run_paths' names and the resume mode are SkyRL 0.2.0's (its installed source, read with ast: importing
    trainer_utils needs transformers, which the minimal .venv-skyrl lacks)."""
    import ast

    site = next(SKYRL_VENV_PYTHON.parent.parent.glob("lib/python3*/site-packages/skyrl_train"))
    tree = ast.parse((site / "utils" / "trainer_utils.py").read_text())
    constants = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
                 for t in n.targets if isinstance(t, ast.Name) and isinstance(n.value, ast.Constant)}
    (enum,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ResumeMode"]
    modes = {n.value.value for n in enum.body if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant)}
    assert constants["GLOBAL_STEP_PREFIX"] == STEP_PREFIX and managed.RESUME in modes
    assert f'"{POINTER}"' in (site / "trainer.py").read_text()  # the pointer SkyRL writes and `latest` reads


@pytest.mark.parametrize("args, message", [
    (["jobs.cancel"], "error: name the managed job to cancel: --run NAME or --job-id ID (one of them)"),
    (["jobs.logs", "--job-id", "x"], "error: bad --job-id 'x'"),
    (["launch", "--variant", "vllm", "--cloud", "aws", "--managed", "--bucket", "gs://b/r", "--down"],
     "error: --down does not apply to --managed"),
    (["launch", "--variant", "vllm", "--cloud", "aws", "--autostop", "off", "--down"],
     "error: --autostop off contradicts --down"),
    (["render", "--variant", "vllm", "--bucket", "s3://b/r", "--run", "a", "--resume", "b"],
     "error: --run and --resume are mutually exclusive"),
])
def test_invoke_managed_options_are_one_clear_line(state_dir, tmp_path, args, message):
    fake_record("vllm")
    result = _run(["-m", "invoke", "--search-root", str(REPO_ROOT), *args], tmp_path, _env(tmp_path, state_dir))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and lines[0] == message and len(lines) == 2 and lines[1].startswith("hint: "), \
        result.stderr
    assert not (tmp_path / "skypilot").exists()


@needs_skyrl_venv
@pytest.mark.parametrize("failure", ["abort", "node", "raise"])
def test_a_skyrl_shaped_driver_exits_1_for_a_dead_actor_a_lost_node_and_a_bug(tmp_path, failure):
    """The exit codes the recovery policy is built on, with the real Ray 2.48.0 and Hydra 1.3.2 (the driver is a
    stand-in for SkyRL's main_base, whose real trainer needs GPUs: tests/support/driver_exit.py)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    ray_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    try:
        result = subprocess.run([str(SKYRL_VENV_PYTHON), str(REPO_ROOT / "tests" / "support" / "driver_exit.py"),
                                 failure, f"hydra.run.dir={tmp_path}"], cwd=tmp_path,
                                env={**env, "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": ray_dir},
                                capture_output=True, text=True, timeout=240)
    finally:
        shutil.rmtree(ray_dir, ignore_errors=True)
    seen = {"abort": "ActorDiedError", "node": "ActorUnavailableError", "raise": "RuntimeError"}[failure]
    assert result.returncode == 1 and f"RayTaskError({seen})" in result.stderr, result.stderr[-3000:]
    assert result.returncode not in managed.RECOVER_ON_EXIT_CODES  # recovered only up to MAX_RESTARTS_ON_ERRORS
