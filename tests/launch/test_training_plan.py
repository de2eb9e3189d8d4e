"""The training plan render derives per cluster shape, checked against SkyRL's own rules.

Two references, neither of them skyrl_stack.launch.training_plan:
* tests/support/skyrl_rules.py, a transcription of SkyRL's utils.py
  (validate_batch_sizes, validate_cfg's checkpoint and placement checks) at the
  pinned commit 1ed499c: fast, runs everywhere;
* SkyRL's real validate_cfg from the PyPI wheel skyrl-train==0.2.0 (byte-identical
  to that commit's utils.py), in .venv-skyrl made by scripts/setup-dev.sh, driven
  through the smoke suite's own skyrl tier (`python -m skyrl_stack.smoke --host`).
Nothing is mocked: build_spec, training_overrides and the header are the real render path.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skyrl_stack.errors import StackError
from skyrl_stack.launch.options import build_spec
from skyrl_stack.launch.task_spec import training_overrides, training_values
from skyrl_stack.launch.task_yaml import header
from skyrl_stack.launch.training_plan import (
    MIN_MICRO_BATCH,
    SEED_MICRO_BATCH,
    SEED_MINI_BATCH,
    STEPS_PER_BATCH,
    checkpoints_written,
    plan_batches,
)
from tests.support.skyrl_rules import SkyRLRejects, config_from_overrides, validate_shape_rules

from tests.support.paths import REPO_ROOT
IMAGE = "ghcr.io/example/skyrl-stack@sha256:" + "5e" * 32
SKYRL_VENV_PYTHON = REPO_ROOT / ".venv-skyrl" / "bin" / "python"
SHAPES = [(nodes, gpus) for nodes in range(1, 9) for gpus in (1, 2, 4, 8)]
DONE_WHEN_SHAPES = [(nodes, gpus) for nodes in (1, 2, 4) for gpus in (1, 2, 4, 8)]
SEED_BATCHES = {"trainer.train_batch_size": "1024", "trainer.policy_mini_batch_size": "256",
                "trainer.micro_train_batch_size_per_gpu": "64", "trainer.micro_forward_batch_size_per_gpu": "64"}


def spec_for(nodes: int, gpus: int, **kwargs):
    return build_spec("vllm", cloud="aws", gpus=f"L40S:{gpus}", nodes=nodes, image=IMAGE, **kwargs)


def with_values(overrides: list[str], values: dict[str, str]) -> list[str]:
    """The same overrides with some values replaced in place (e.g. back to the seed's batch sizes)."""
    return [f"{key}={values.get(key, value)}" for key, value in (o.split("=", 1) for o in overrides)]


# ----------------------------------------------------------------- transcription (fast, no venv)

@pytest.mark.parametrize("nodes, gpus", SHAPES)
def test_rendered_plan_passes_skyrls_rules_for_every_shape(nodes, gpus):
    cfg = config_from_overrides(training_overrides(spec_for(nodes, gpus)))
    validate_shape_rules(cfg)  # raises SkyRLRejects with SkyRL's message
    dp, train, mini = nodes * gpus, cfg["trainer.train_batch_size"], cfg["trainer.policy_mini_batch_size"]
    micro = cfg["trainer.micro_train_batch_size_per_gpu"]
    # Stricter than SkyRL's floors: no sample is trimmed from a batch (trainer.py _remove_tail_data).
    assert mini * 5 % dp == 0 and train * 5 % dp == 0
    assert MIN_MICRO_BATCH <= micro <= SEED_MICRO_BATCH
    assert cfg["trainer.micro_forward_batch_size_per_gpu"] == SEED_MICRO_BATCH
    assert train == STEPS_PER_BATCH * mini
    if SEED_MINI_BATCH * 5 % dp == 0:  # the seed's mini batch splits evenly: only the micro batch may move
        assert (train, mini) == (1024, 256)


def test_seed_values_fail_for_2_nodes_of_l40s_4():
    """The defect: the seed's batch sizes on 2 x L40S:4 are refused by SkyRL at job start."""
    overrides = with_values(training_overrides(spec_for(2, 4)), SEED_BATCHES)
    with pytest.raises(SkyRLRejects, match=r"policy_mini_batch_size_per_gpu 160 should be divisible by micro_train_batch_size_per_gpu 64"):
        validate_shape_rules(config_from_overrides(overrides))


def test_transcription_accepts_the_seed_exactly_where_the_issue_says():
    """Cross-check of the transcription: 256 x 5 with micro 64 holds only for dp in {1, 2, 4, 5, 10, 20}."""
    accepted = set()
    for dp in range(1, 65):
        overrides = with_values(training_overrides(spec_for(dp, 1)), SEED_BATCHES)
        try:
            validate_shape_rules(config_from_overrides(overrides))
            accepted.add(dp)
        except SkyRLRejects:
            pass
    assert accepted == {1, 2, 4, 5, 10, 20}


@settings(max_examples=200, deadline=None)
@given(nodes=st.integers(1, 256), gpus=st.integers(1, 16))
def test_any_shape_gets_a_valid_plan_or_a_one_line_refusal(nodes, gpus):
    try:
        plan = plan_batches(nodes, gpus)
    except StackError as exc:
        assert "\n" not in exc.message and exc.hint
        assert f"no training plan for {nodes} node(s) x {gpus} GPU(s)" in exc.message
        return
    cfg = config_from_overrides([f"{k}={v}" for k, v in plan.overrides().items()] + [
        f"trainer.placement.{role}_{what}={value}" for role in ("policy", "ref")
        for what, value in (("num_nodes", nodes), ("num_gpus_per_node", gpus))] + [
        "trainer.algorithm.use_kl_loss=true", "trainer.max_ckpts_to_keep=2", "trainer.placement.colocate_all=false"])
    validate_shape_rules(cfg)
    assert len(plan.changes) == (plan.mini != SEED_MINI_BATCH) + (plan.micro_train != SEED_MICRO_BATCH)


def test_a_shape_that_cannot_be_made_valid_is_refused_at_render():
    with pytest.raises(StackError, match=r"^no training plan for 64 node\(s\) x 8 GPU\(s\): no mini batch within 128\.\.512"):
        spec_for(64, 8)
    # The hint's way out works: batch sizes given with --set are rendered, checked against SkyRL's rules.
    spec = spec_for(64, 8, sets=["trainer.train_batch_size=4096", "trainer.policy_mini_batch_size=1024",
                                 "trainer.micro_train_batch_size_per_gpu=10"])
    validate_shape_rules(config_from_overrides(training_overrides(spec)))
    assert ("set by --set (checked against SkyRL's rules): trainer.train_batch_size=4096, "
            "trainer.policy_mini_batch_size=1024, trainer.micro_train_batch_size_per_gpu=10") in header(spec, "x")
    with pytest.raises(StackError, match=r"^SkyRL would refuse this training plan on 512 GPUs") as err:
        spec_for(64, 8, sets=["trainer.train_batch_size=4096", "trainer.policy_mini_batch_size=1024",
                              "trainer.micro_train_batch_size_per_gpu=64"])
    assert err.value.hint.startswith("pick values that divide evenly: mini x 5 samples a multiple of 512")


def test_a_set_that_skyrl_would_refuse_is_refused_at_render():
    with pytest.raises(StackError, match=r"^SkyRL would refuse this training plan on 8 GPUs: the per-GPU mini batch \(256 x 5 / 8 GPUs = 160\) is not a multiple of micro_train_batch_size_per_gpu 64"):
        spec_for(2, 4, sets=["trainer.micro_train_batch_size_per_gpu=64"])
    with pytest.raises(StackError, match=r"^bad --set trainer.train_batch_size=lots"):
        spec_for(2, 4, sets=["trainer.train_batch_size=lots"])


def test_a_valid_set_is_kept_and_passes():
    spec = spec_for(2, 4, sets=["trainer.policy_mini_batch_size=128", "trainer.train_batch_size=512"])
    cfg = config_from_overrides(training_overrides(spec))
    validate_shape_rules(cfg)
    assert (cfg["trainer.train_batch_size"], cfg["trainer.policy_mini_batch_size"]) == (512, 128)


def test_header_says_what_changed_and_why():
    text = header(spec_for(2, 4), "invoke render --nodes 2")
    assert ("# Plan:    2 node(s) x 4 GPU(s) = 8 data-parallel GPUs: train_batch_size 1024, policy_mini_batch_size 256, "
            "micro_train_batch_size_per_gpu 40") in text
    assert "changed: micro_train_batch_size_per_gpu 64 -> 40: the per-GPU mini batch (256 x 5 / 8 GPUs = 160)" in text
    three = header(spec_for(3, 1), "invoke render --nodes 3")
    assert "changed: policy_mini_batch_size 256 -> 255 and train_batch_size 1024 -> 1020" in three
    assert "unchanged from SkyRL's example" in header(spec_for(1, 4), "invoke render")


# ----------------------------------------------------------------- checkpoints and disk

def test_last_two_checkpoints_are_kept_by_default_and_the_disk_holds_three():
    spec = spec_for(1, 4)
    assert training_values(spec)["trainer.max_ckpts_to_keep"] == "2"
    # SkyRL deletes old checkpoints only after saving the next: 3 at the peak.
    assert spec.disk_size == 100 + 5 + 3 * 19 + 20
    text = header(spec, "invoke render")
    assert "# Ckpts:   the last 2 kept (3 on disk while the next is saved) (trainer.max_ckpts_to_keep=2" in text
    assert "in /root/ckpts/gsm8k_1.5B_ckpt" in text
    bucketed = spec_for(1, 4, bucket="s3://b/run")  # a bucket: the run's own folder (test_managed.py)
    assert f"in /checkpoints/{bucketed.run_name}\n" in header(bucketed, "invoke render")


def test_keep_all_sizes_the_disk_for_every_checkpoint_of_the_schedule():
    # GSM8K: 7473 // 1024 = 7 steps per epoch x 20 epochs = 140 steps, a checkpoint every 10: 14 (as the issue measured).
    assert checkpoints_written(1024, 20, 10) == 14
    assert spec_for(1, 4, sets=["trainer.max_ckpts_to_keep=-1"]).disk_size == 100 + 5 + 14 * 19 + 20
    assert spec_for(1, 4, sets=["trainer.max_ckpts_to_keep=5", "trainer.epochs=1"]).disk_size == 100 + 5 + 1 * 19 + 20


@pytest.mark.parametrize("kwargs, message", [
    ({"sets": ["trainer.max_ckpts_to_keep=0"]}, r"^bad --set trainer.max_ckpts_to_keep=0$"),
    ({"disk_size": 150}, r"^bad --disk-size 150: the vllm plan needs at least 182 GB per node \(182 GB = image 100 \+ "
                         r"model and data 5 \+ 3 checkpoints x 19 \+ headroom 20\)$"),
])
def test_bad_checkpoint_or_disk_input_is_one_line(kwargs, message):
    with pytest.raises(StackError, match=message) as err:
        spec_for(1, 4, **kwargs)
    assert err.value.hint


def test_a_bigger_disk_is_kept():
    assert spec_for(1, 4, disk_size=500).disk_size == 500


# ----------------------------------------------------------------- SkyRL's own validate_cfg (.venv-skyrl)

# A skip is for a developer who has not run setup-dev.sh yet; in CI (.ci/run runs
# setup-dev.sh first) a missing .venv-skyrl must fail, never pass silently.
needs_skyrl_venv = pytest.mark.skipif(
    not SKYRL_VENV_PYTHON.exists() and os.environ.get("CI") != "true",
    reason=".venv-skyrl missing: run scripts/setup-dev.sh (SkyRL's own validate_cfg is not checked without it)",
)


def run_skyrl_tier(tmp_path: Path, overrides: list[str]) -> dict:
    """The smoke suite's skyrl tier, run for real with SkyRL 0.2.0 in .venv-skyrl; returns check -> (status, detail)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "overrides.json").write_text(json.dumps(overrides))
    env = {k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"}
    subprocess.run(
        [str(SKYRL_VENV_PYTHON), "-m", "skyrl_stack.smoke", "--host", "--tier", "skyrl", "--gpus", "none",
         "--overrides-file", str(tmp_path / "overrides.json"), "--report", str(tmp_path)],
        cwd=tmp_path, env=dict(env, PYTHONPATH=str(REPO_ROOT)), capture_output=True, text=True, timeout=300,
    )
    report = json.loads((tmp_path / "smoke.json").read_text())
    return {c["name"]: (c["status"], c["detail"]) for c in report["checks"]}


@needs_skyrl_venv
def test_skyrl_tier_runs_skyrls_validate_cfg_on_the_rendered_plan(tmp_path):
    checks = run_skyrl_tier(tmp_path / "derived", training_overrides(spec_for(2, 4)))
    assert checks["skyrl.config"][0] == "passed"
    status, detail = checks["skyrl.validate"]
    assert status == "passed", detail
    assert "2 x 4 GPUs, train 1024, mini 256, micro 40, max_ckpts_to_keep 2" in detail
    assert "WANDB_API_KEY: a stand-in for this check" in detail
    # The minimal venv has no vLLM/transformers: the entry point's import fails there, and only there.
    assert checks["skyrl.entrypoint"][0] == "failed" and "No module named" in checks["skyrl.entrypoint"][1]


@needs_skyrl_venv
def test_skyrl_tier_fails_the_seed_values_for_2_nodes_of_l40s_4(tmp_path):
    seed = with_values(training_overrides(spec_for(2, 4)), SEED_BATCHES)
    status, detail = run_skyrl_tier(tmp_path / "seed", seed)["skyrl.validate"]
    assert status == "failed"
    assert ("SkyRL's validate_cfg refuses the training overrides: AssertionError: normalized "
            "policy_mini_batch_size_per_gpu 160 should be divisible by micro_train_batch_size_per_gpu 64") in detail
    status, detail = run_skyrl_tier(tmp_path / "zero", with_values(training_overrides(spec_for(1, 4)),
                                                                   {"trainer.max_ckpts_to_keep": "0"}))["skyrl.validate"]
    assert status == "failed" and "`max_ckpts_to_keep` must be greater than 0" in detail


VALIDATE_MANY = """
import json, sys
from skyrl_stack.smoke.skyrl import skyrl_config_dir, validate
from skyrl_stack.smoke.suite import Fail
results = []
for overrides in json.load(sys.stdin):
    try:
        validate(skyrl_config_dir(), overrides)
        results.append(None)
    except Fail as exc:
        results.append(str(exc))
print(json.dumps(results))
"""


@needs_skyrl_venv
def test_skyrl_accepts_every_done_when_shape_and_agrees_with_the_transcription():
    """{1,2,4} nodes x {1,2,4,8} GPUs: SkyRL's validate_cfg (the skyrl tier's code) accepts each rendered plan,
    and on the seed's values it refuses exactly where the transcription does."""
    derived = [training_overrides(spec_for(n, g)) for n, g in DONE_WHEN_SHAPES]
    seeds = [with_values(o, SEED_BATCHES) for o in derived]
    env = {k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"}
    result = subprocess.run([str(SKYRL_VENV_PYTHON), "-c", VALIDATE_MANY], input=json.dumps(derived + seeds),
                            env=dict(env, PYTHONPATH=str(REPO_ROOT)), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    verdicts = json.loads(result.stdout.strip().splitlines()[-1])
    assert dict(zip(DONE_WHEN_SHAPES, verdicts[:len(derived)])) == dict.fromkeys(DONE_WHEN_SHAPES)
    for shape, overrides, verdict in zip(DONE_WHEN_SHAPES, seeds, verdicts[len(derived):]):
        try:
            validate_shape_rules(config_from_overrides(overrides))
            transcribed = None
        except SkyRLRejects:
            transcribed = "refused"
        assert (verdict is None) == (transcribed is None), (shape, verdict)
    assert sum(v is not None for v in verdicts[len(derived):]) == 6  # dp 8 (3 shapes), 16 (2) and 32 fail
