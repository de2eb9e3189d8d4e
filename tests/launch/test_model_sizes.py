"""The disk is sized from the model the task trains (--set trainer.policy.model.path), or refused without --disk-size."""
from __future__ import annotations

import pytest

from skyrl_stack.errors import StackError
from skyrl_stack.launch.model_sizes import MODEL_PARAMS_B, model_size
from skyrl_stack.launch.options import MIN_DISK_GB, build_spec
from skyrl_stack.launch.task_spec import GSM8K_GRPO
from skyrl_stack.launch.task_yaml import plan_notes
from skyrl_stack.launch.training_plan import CKPT_GB, DATA_GB, HEADROOM_GB
from tests.launch.test_render import _invoke, fake_record

SEED = dict(GSM8K_GRPO)["trainer.policy.model.path"]
MODEL = "trainer.policy.model.path"


def test_the_seed_model_sizes_as_the_plan_always_did():
    size = model_size(SEED)
    assert (size.ckpt_gb, size.download_gb) == (CKPT_GB, DATA_GB)


def test_a_7b_model_sizes_its_checkpoints_not_the_seeds(state_dir):
    fake_record("vllm")
    seed = build_spec("vllm")
    big = build_spec("vllm", sets=[f"{MODEL}=Qwen/Qwen2.5-7B-Instruct"])
    assert seed.disk_size == 182
    # 7.61e9 params x 12 B = 91.3 -> 92 GB a checkpoint (about 90 GB, as measured), 3 on disk at the peak;
    # download 7.61e9 x 2 B = 15.2 -> 16 GB + 1.
    assert big.disk_size == MIN_DISK_GB[True] + 17 + 3 * 92 + HEADROOM_GB == 413
    assert "3 checkpoints x 92" in plan_notes(big)[-1]
    with pytest.raises(StackError, match=r"^bad --disk-size '300': the vllm plan needs at least 413 GB per node"):
        build_spec("vllm", sets=[f"{MODEL}=Qwen/Qwen2.5-7B-Instruct"], disk_size="300")


def test_larger_known_models_never_get_less_disk(state_dir):
    fake_record("vllm")
    by_params = sorted(MODEL_PARAMS_B, key=MODEL_PARAMS_B.get)
    disks = [build_spec("vllm", sets=[f"{MODEL}={name}"]).disk_size for name in by_params]
    assert disks == sorted(disks) and disks[0] < disks[-1]


@pytest.mark.parametrize("model", ["/models/my-finetune", "meta-llama/Llama-3.1-8B-Instruct", "Qwen/Qwen2.5-7B-Chat"])
def test_a_model_it_cannot_size_needs_disk_size(state_dir, model):
    fake_record("vllm")
    with pytest.raises(StackError, match=rf"^cannot size the disk for --set {MODEL}={model}: not a model ") as err:
        build_spec("vllm", sets=[f"{MODEL}={model}"])
    assert err.value.hint.startswith("give --disk-size GB")
    spec = build_spec("vllm", sets=[f"{MODEL}={model}"], disk_size="700")
    assert spec.disk_size == 700
    assert f"model {model} and its checkpoints (not sized: --disk-size decides)" in plan_notes(spec)[-1]


@pytest.mark.reliability("bad input", "`invoke render --set trainer.policy.model.path=/models/mine` (no --disk-size)",
                         "one `error:`/`hint:` pair: the disk cannot be sized for it, exit 1, nothing rendered")
def test_invoke_render_refuses_an_unsized_model_in_one_line(state_dir, tmp_path):
    fake_record("vllm")
    result = _invoke(["render", "--variant", "vllm", "--set", f"{MODEL}=/models/mine"], tmp_path, state_dir)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(lines) == 2 and lines[0].startswith(f"error: cannot size the disk for --set {MODEL}=/models/mine")
