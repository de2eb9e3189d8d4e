"""`invoke launch --cloud local --managed`: the jobs controller's recoveries, on the real engine (issue 16).

The recovery policy is checked against SkyPilot's own StrategyExecutor.should_restart_on_failure
(sky/jobs/recovery_strategy.py, SkyPilot in .venv). The container tests run the rehearsal image's
real job (Ray on every node, SkyRL's checkpoint layout through the cached-mount model) and kill
node containers as a spot preemption does.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skyrl_stack.errors import StackError
from skyrl_stack.launch import local_cluster, local_managed
from skyrl_stack.launch.launcher import for_local
from skyrl_stack.launch.options import build_spec
from skyrl_stack.launch.task_yaml import REHEARSAL_TRAINING, task_config
from tests.support.paths import REPO_ROOT

STEPS = int(REHEARSAL_TRAINING["REHEARSAL_STEPS"])
INTERVAL = int(REHEARSAL_TRAINING["REHEARSAL_CKPT_INTERVAL"])


# ----------------------------------------------------------------------- the policy, against SkyPilot's code

@settings(derandomize=True, database=None, deadline=None, max_examples=150)
@given(max_restarts=st.integers(0, 3), codes=st.one_of(st.none(), st.lists(st.integers(0, 255), max_size=3)),
       failures=st.lists(st.lists(st.integers(0, 255), min_size=1, max_size=2), min_size=1, max_size=6))
def test_the_restart_decisions_are_skypilots(max_restarts, codes, failures):
    from sky.jobs.recovery_strategy import StrategyExecutor

    ours = local_managed.RecoveryPolicy(max_restarts_on_errors=max_restarts, recover_on_exit_codes=codes)
    theirs = SimpleNamespace(max_restarts_on_errors=max_restarts, recover_on_exit_codes=codes, restart_cnt_on_failure=0)
    for exit_codes in failures:
        assert ours.should_restart_on_failure(exit_codes) == StrategyExecutor.should_restart_on_failure(theirs, exit_codes)
        assert ours.restart_cnt_on_failure == theirs.restart_cnt_on_failure


@pytest.mark.parametrize("recovery, expected", [
    (None, ("EAGER_NEXT_REGION", 0, None)),
    ("FAILOVER", ("FAILOVER", 0, None)),
    ({"max_restarts_on_errors": 2, "recover_on_exit_codes": 137}, ("EAGER_NEXT_REGION", 2, [137])),
    ({"strategy": "FAILOVER", "recover_on_exit_codes": [1, 137]}, ("FAILOVER", 0, [1, 137])),
])
def test_the_policy_is_read_as_strategy_executor_make_reads_it(recovery, expected):
    config = {"resources": {"job_recovery": recovery} if recovery is not None else {}}
    policy = local_managed.RecoveryPolicy.from_task(config)
    assert (policy.strategy, policy.max_restarts_on_errors, policy.recover_on_exit_codes) == expected


@pytest.mark.parametrize("value, message", [
    ("node1", r"bad --preempt 'node1'"),
    ("node1@0", r"bad --preempt 'node1@0'"),
    ("node2@20", r"the cluster has node0..node1"),
    ("worker@5", r"bad --preempt 'worker@5'"),
])
def test_bad_preempt_values_are_refused(value, message):
    with pytest.raises(StackError, match=message):
        local_managed.parse_preempt([value], nodes=2)


def test_preemptions_are_in_time_order():
    assert [p.label for p in local_managed.parse_preempt(["node0@45", "node1@20.5"], nodes=2)] == ["node1@20.5", "node0@45"]


# ----------------------------------------------------------------------- bad input through the real invoke

def _invoke(*args, cwd, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "invoke", "--search-root", str(REPO_ROOT), *args], cwd=cwd,
                          env={**os.environ, "SKYPILOT_DISABLE_LOCAL_API_SERVER": "1", **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.reliability("bad input", "`invoke launch --cloud local --managed` without `--bucket`",
                         "one `error:`/`hint:` pair, exit 1, nothing started")
def test_managed_without_a_bucket_is_one_line(tmp_path):
    out = _invoke("launch", "--variant", "rehearsal", "--cloud", "local", "--managed", "--image",
                  "r/x@sha256:" + "0" * 64, cwd=tmp_path)
    assert out.returncode == 1
    assert out.stderr.splitlines() == [
        "error: --managed needs durable checkpoint storage: a recovery provisions new nodes, so checkpoints on the "
        "nodes' disks are lost and every recovery would restart at step 0",
        "hint: give it a host directory: --bucket /abs/dir"]


def test_a_new_run_refuses_a_run_folder_that_holds_checkpoints_and_resume_needs_one(tmp_path):
    bucket = tmp_path / "bucket"
    (bucket / "r1" / "global_step_5").mkdir(parents=True)
    spec = build_spec("rehearsal", cloud="local", nodes=2, managed=True, bucket=str(bucket), run="r1",
                      image="r/x@sha256:" + "0" * 64)
    with pytest.raises(StackError, match=r"run r1 already has checkpoints \(.*/r1 holds global_step_5\)"):
        local_managed.prepare_local_run(spec, ())
    resumed = build_spec("rehearsal", cloud="local", nodes=2, managed=True, bucket=str(bucket), resume="r2",
                         image="r/x@sha256:" + "0" * 64)
    with pytest.raises(StackError, match=r"--resume r2: no checkpoints to resume \(.*/r2 holds no checkpoints\)"):
        local_managed.prepare_local_run(resumed, ())
    with pytest.raises(StackError, match=r"--preempt rehearses a managed job's recovery"):
        local_managed.prepare_local_run(build_spec("rehearsal", cloud="local", nodes=2, bucket=str(bucket), run="r3",
                                                   image="r/x@sha256:" + "0" * 64), ["node1@20"])


# ----------------------------------------------------------------------- recoveries on the real engine

def expected_final_weights(nodes: int, steps: int) -> str:
    """The rehearsal model trained without interruption: per rank a hash chain over batch-0 .. batch-(steps-1)."""
    weights = []
    for rank in range(nodes):
        value = hashlib.sha256(f"init-{rank}".encode()).hexdigest()
        for batch in range(steps):
            value = hashlib.sha256(f"{value}:batch-{batch}".encode()).hexdigest()
        weights.append(value)
    return hashlib.sha256("".join(weights).encode()).hexdigest()[:16]


@pytest.fixture
def managed_job(rehearsal_image, tmp_path):
    """A managed rehearsal job for 2 local nodes with its bucket directory: (job, config, bucket, run dir)."""
    old = os.environ.get("SKYRL_STACK_WORKSPACE")
    os.environ["SKYRL_STACK_WORKSPACE"] = str(rehearsal_image.state_dir.parent)
    try:
        spec = for_local(build_spec("rehearsal", cloud="local", nodes=2, managed=True, bucket=str(tmp_path / "bucket"),
                                    run="r1"))
    finally:
        os.environ.pop("SKYRL_STACK_WORKSPACE") if old is None else os.environ.__setitem__("SKYRL_STACK_WORKSPACE", old)
    local_managed.prepare_local_run(spec, ())
    config = task_config(spec)
    job = local_cluster.from_task(config, nodes=2, gpus_per_node=0, image=spec.image, name="skyrl-managed-test")
    return SimpleNamespace(job=job, config=config, run_dir=tmp_path / "bucket" / "r1")


def _preempt_at_steps(controller, plan):
    """Preempt node N of attempt A once it has trained step S: plan = [(attempt, step, rank)]. Steps, not
    seconds: the machine's load cannot move a preemption out of the training it must interrupt."""
    def watch():
        for attempt, step, rank in plan:
            while not controller.done.is_set():
                current = controller.attempt
                if current is not None and current.number == attempt and (current.last_trained or 0) >= step:
                    controller.preempt(rank, f"test: node{rank} at step {step}")
                    break
                time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.container
@pytest.mark.reliability("fault", "`--cloud local --managed`: a worker's, then the head's container killed mid-run",
                         "every node replaced twice; each resume from the newest checkpoint saved, at most one "
                         "interval redone; final weights those of an uninterrupted run")
def test_two_preemptions_end_where_an_uninterrupted_run_ends_and_redo_at_most_an_interval_each(managed_job):
    out = io.StringIO()
    controller = local_managed.Controller(managed_job.job, local_managed.RecoveryPolicy.from_task(managed_job.config),
                                          [], stream=out)
    # mid-interval: the last checkpoint (10, then 25) has had time to upload; a worker, then the head
    _preempt_at_steps(controller, [(1, 13, 1), (2, 28, 0)])
    code = controller.run()
    text = out.getvalue()
    assert code == 0, text
    attempts = controller.attempts
    assert len(attempts) == 3, text
    assert [a.preempted for a in attempts] == [["test: node1 at step 13"], ["test: node0 at step 28"], []]
    # the same end as an uninterrupted run: every step trained once in the end, the same weights
    assert f"(node0) rehearsal job: training done: {STEPS} of {STEPS} steps trained, final weights " \
           f"{expected_final_weights(2, STEPS)}" in text.splitlines(), text
    for before, after in zip(attempts, attempts[1:]):
        # resumed from the newest checkpoint saved before the preemption (never a cut one: it loads whole),
        assert after.resumed_from == before.last_saved, (before, after)
        # so at most one interval of steps is trained again
        assert 0 < before.last_trained - after.resumed_from <= INTERVAL, (before, after)
    assert text.count("all 2 ranks' shards loaded") == 2
    assert "(jobs controller) recovery 1: launching every node again" in text
    assert "(jobs controller) recovery 2: launching every node again" in text
    assert re.search(r"\(jobs controller\)   attempt 2 at \d+s: resumed from global_step_10; redid 3 step\(s\)", text)
    assert re.search(r"\(jobs controller\)   attempt 3 at \d+s: resumed from global_step_25; redid 3 step\(s\)", text)
    # the bucket holds the run's newest checkpoints, the last one the pointer's
    assert (managed_job.run_dir / "latest_ckpt_global_step.txt").read_text() == str(STEPS + 1)
    assert sorted(p.name for p in managed_job.run_dir.glob("global_step_*")) == [
        f"global_step_{STEPS}", f"global_step_{STEPS + 1}"]


@pytest.mark.container
def test_a_user_program_failure_is_not_recovered_without_max_restarts_on_errors(managed_job):
    """A job that fails on an UP cluster (here: the rehearsal refuses a folder that fails SkyRL's
    consistency rule, left by hand with no pointer-to-folder match) ends the managed job under
    SkyPilot's default policy (a task without job_recovery: max_restarts_on_errors 0)."""
    run_dir = managed_job.run_dir
    (run_dir / "global_step_20" / "policy").mkdir(parents=True)
    job = managed_job.job
    job.run = job.run.replace("skyrl-ckpt-guard", "true")  # without the guard, a user error (exit 1)
    (run_dir / "latest_ckpt_global_step.txt").write_text("5")
    out = io.StringIO()
    controller = local_managed.Controller(job, local_managed.RecoveryPolicy.from_task({"resources": {}}), [], stream=out)
    assert controller.run() == 1
    text = out.getvalue()
    assert "Inconsistent checkpoint folder" in text
    assert "(jobs controller) the job exited with code 1 on an UP cluster (user program failure); not retried " \
           "(max_restarts_on_errors 0): FAILED" in text
    assert len(controller.attempts) == 1


@pytest.mark.container
def test_invoke_launch_managed_local_recovers_from_a_preemption_at_20s(rehearsal_image, tmp_path):
    """The issue's command, through the real invoke: exit 0 after the recovery, which the output names
    with the step the next attempt started from."""
    bucket = tmp_path / "bucket"
    result = _invoke("launch", "--variant", "rehearsal", "--cloud", "local", "--nodes", "2", "--managed",
                     "--bucket", str(bucket), "--preempt", "node1@20", "--cluster", "skyrl-managed-e2e",
                     cwd=tmp_path, env={"SKYRL_STACK_WORKSPACE": str(rehearsal_image.state_dir.parent)}, timeout=480)
    text = result.stdout + result.stderr
    assert result.returncode == 0, text
    assert "(jobs controller) preempting node1 at " in text and "(--preempt node1@20)" in text
    assert "(jobs controller) recovery 1: launching every node again" in text
    assert re.search(r"\(jobs controller\) managed job SUCCEEDED after 1 recovery", text), text
    assert re.search(r"\(jobs controller\)   attempt 2 at \d+s: (resumed from global_step_\d+|started from step 0 \(no checkpoint yet\))", text)
    assert f"training done: {STEPS} of {STEPS} steps trained, final weights {expected_final_weights(2, STEPS)}" in text
    (run,) = [p.name for p in bucket.iterdir()]
    assert re.fullmatch(r"rehearsal-\d{8}-\d{6}-[0-9a-f]{4}", run)


# ----------------------------------------------------------------------- what render writes for durable storage

def head_lines(config: dict) -> list[str]:
    """The head's part of run:, without skyrl-phase's timing lines (run_script PHASES)."""
    head = config["run"].split('if [ "$SKYPILOT_NODE_RANK" = "0" ]; then\n', 1)[1].splitlines()
    return [line for line in head if not line.startswith("  skyrl-phase ")]


def test_durable_storage_renders_the_guard_before_training_and_resume_latest(tmp_path):
    image = "r/x@sha256:" + "0" * 64
    local = task_config(build_spec("rehearsal", cloud="local", nodes=2, managed=True, bucket=str(tmp_path), run="r1",
                                   image=image))
    assert local["file_mounts"] == {"/checkpoints": {"source": str(tmp_path), "mode": "MOUNT_CACHED"}}
    head = head_lines(local)
    assert head[0] == "  skyrl-ckpt-guard /checkpoints/r1"
    assert head[1].startswith("  skyrl-rehearsal-job --port 6479 --ckpt-path /checkpoints/r1 --steps \"$REHEARSAL_STEPS\"")
    assert {k: local["envs"][k] for k in REHEARSAL_TRAINING} == REHEARSAL_TRAINING

    gpu = task_config(build_spec("vllm", cloud="aws", nodes=2, bucket="s3://b/runs", run="r1", image=image))
    head = head_lines(gpu)
    assert head[:2] == ["  skyrl-ckpt-guard /checkpoints/r1", "  skyrl-train \\"]
    assert "    trainer.resume_mode=latest \\" in head and "    trainer.ckpt_path=/checkpoints/r1 \\" in head
    # without durable storage: no guard, no resume (a fresh node has nothing to resume from)
    plain = task_config(build_spec("vllm", cloud="aws", nodes=2, image=image))
    assert "skyrl-ckpt-guard" not in plain["run"] and "trainer.resume_mode=null" in plain["run"]


def test_a_local_bucket_is_a_host_directory_and_spot_does_not_apply(tmp_path):
    image = "r/x@sha256:" + "0" * 64
    with pytest.raises(StackError, match=r"bad --bucket 'rel/dir': not an absolute path"):
        build_spec("rehearsal", cloud="local", bucket="rel/dir", image=image)
    with pytest.raises(StackError, match=r"--cloud local mounts a host directory as its bucket, not s3://b/r"):
        local_managed.prepare_local_run(build_spec("rehearsal", cloud="local", bucket="s3://b/r", managed=True,
                                                   image=image), ())
    with pytest.raises(StackError, match=r"--spot does not apply to --cloud local"):
        local_managed.prepare_local_run(build_spec("rehearsal", cloud="local", bucket=str(tmp_path), managed=True,
                                                   spot=True, image=image), ())


@pytest.mark.container
def test_the_rendered_policy_restarts_a_failing_job_up_to_max_restarts_on_errors_then_fails(managed_job):
    """The managed task's job_recovery (managed.py: max_restarts_on_errors 3, no recover_on_exit_codes):
    a job that keeps failing on an UP cluster gets 3 fresh clusters, then the managed job is FAILED."""
    from skyrl_stack.launch.managed import MAX_RESTARTS_ON_ERRORS

    run_dir = managed_job.run_dir
    (run_dir / "global_step_20" / "policy").mkdir(parents=True)
    (run_dir / "latest_ckpt_global_step.txt").write_text("5")
    job = managed_job.job
    job.run = 'echo "task id: $SKYPILOT_TASK_ID"\n' + job.run.replace("skyrl-ckpt-guard", "true")
    out = io.StringIO()
    controller = local_managed.Controller(job, local_managed.RecoveryPolicy.from_task(managed_job.config), [], stream=out)
    assert controller.run() == 1
    text = out.getvalue()
    assert len(controller.attempts) == 1 + MAX_RESTARTS_ON_ERRORS
    # SkyPilot's controller keeps SKYPILOT_TASK_ID across recoveries: every node of every attempt sees one id.
    task_ids = re.findall(r"task id: (\S+)", text)
    assert len(task_ids) == len(controller.attempts) * job.nodes and len(set(task_ids)) == 1, task_ids
    for restart in range(1, MAX_RESTARTS_ON_ERRORS + 1):
        assert (f"restarting: restart {restart} of {MAX_RESTARTS_ON_ERRORS} on errors (max_restarts_on_errors)"
                in text), text
    assert f"not retried (max_restarts_on_errors {MAX_RESTARTS_ON_ERRORS}): FAILED" in text
