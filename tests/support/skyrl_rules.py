"""A transcription of SkyRL's config checks that depend on the cluster shape, for fast tests.

Source: NovaSky-AI/SkyRL at 1ed499cce4df7ef21462969707b0476bc3c7e0c8 (tag
skyrl_train-v0.2.0; byte-identical to the PyPI wheel skyrl-train==0.2.0),
skyrl-train/skyrl_train/utils/utils.py:

* ``validate_batch_sizes`` (lines 47-162), called by ``validate_cfg`` (line 224),
  called by ``entrypoints/main_base.py::main`` (line 299) before training;
* ``validate_cfg``'s ``max_ckpts_to_keep == 0`` check (line 226) and its placement
  check for ``colocate_all`` (lines 297-306).

Written from reading that code, not from skyrl_stack.launch.training_plan, so a test
comparing the two can fail. Kept as SkyRL wrote it: floor divisions (``//``),
fsdp2 (not megatron), critic only when ``trainer.critic.model.path`` is set.
The real function is run too, in .venv-skyrl (tests/launch/test_training_plan.py).
"""
from __future__ import annotations

import math

# Defaults from skyrl_train/config/ppo_base_config.yaml at the same commit, for keys the plan does not set.
BASE_DEFAULTS = {
    "trainer.critic.model.path": None,
    "trainer.policy.sequence_parallel_size": 1,
    "trainer.ref.sequence_parallel_size": 1,
    "trainer.algorithm.use_kl_in_reward": False,
    "trainer.max_ckpts_to_keep": -1,
    "generator.inference_engine_data_parallel_size": 1,
}


class SkyRLRejects(AssertionError):
    pass


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise SkyRLRejects(message)


def _value(text: str):
    if text in ("true", "false"):
        return text == "true"
    if text == "null":
        return None
    try:
        return int(text)
    except ValueError:
        return text


def config_from_overrides(overrides: list[str]) -> dict:
    cfg = dict(BASE_DEFAULTS)
    for item in overrides:
        key, _, value = item.partition("=")
        cfg[key.lstrip("+")] = _value(value)
    return cfg


def validate_batch_sizes(cfg: dict) -> None:
    """utils.py::validate_batch_sizes (lines 47-162), strategy fsdp/fsdp2, no critic unless its path is set."""
    train, mini = cfg["trainer.train_batch_size"], cfg["trainer.policy_mini_batch_size"]
    micro_train = cfg["trainer.micro_train_batch_size_per_gpu"]
    samples = cfg["generator.n_samples_per_prompt"]
    _require(train >= mini, "train_batch_size >= policy_mini_batch_size")
    _require(mini > 0, "policy_mini_batch_size must be greater than 0")
    _require(cfg["trainer.critic.model.path"] is None, "critic not transcribed (GRPO only)")
    _require(micro_train > 0, "micro_train_batch_size_per_gpu must be greater than 0")
    _require(cfg["trainer.micro_forward_batch_size_per_gpu"] > 0, "micro_forward_batch_size_per_gpu must be greater than 0")
    world = cfg["trainer.placement.policy_num_nodes"] * cfg["trainer.placement.policy_num_gpus_per_node"]
    dp = world // cfg["trainer.policy.sequence_parallel_size"]
    _require(train % mini == 0, f"train_batch_size {train} should be divisible by policy_mini_batch_size {mini}")
    mini_per_gpu = mini * samples // dp
    _require(mini_per_gpu > 0, f"Invalid policy_mini_batch_size_per_gpu: {mini_per_gpu}")
    _require(mini_per_gpu % micro_train == 0,
             f"normalized policy_mini_batch_size_per_gpu {mini_per_gpu} should be divisible by "
             f"micro_train_batch_size_per_gpu {micro_train}")
    _require(mini_per_gpu // micro_train > 0, "policy_mini_batch_size_per_gpu should be larger than micro")
    train_per_gpu = train * samples // dp
    _require(train_per_gpu % mini_per_gpu == 0,
             f"normalized policy_train_batch_size_per_gpu {train_per_gpu} should be divisible by "
             f"policy_mini_batch_size_per_gpu {mini_per_gpu}")
    lcm_dp = dp
    if cfg["trainer.algorithm.use_kl_loss"] or cfg["trainer.algorithm.use_kl_in_reward"]:
        ref_world = cfg["trainer.placement.ref_num_nodes"] * cfg["trainer.placement.ref_num_gpus_per_node"]
        lcm_dp = math.lcm(lcm_dp, ref_world // cfg["trainer.ref.sequence_parallel_size"])
    _require(train >= lcm_dp, f"train_batch_size ({train}) should be larger than or equal to lcm_dp_size={lcm_dp}")


def validate_shape_rules(cfg: dict) -> None:
    """The parts of utils.py::validate_cfg that depend on the cluster shape or the checkpoint count."""
    validate_batch_sizes(cfg)  # line 224
    _require(cfg["trainer.max_ckpts_to_keep"] != 0, "`max_ckpts_to_keep` must be greater than 0 ... or negative")  # 226
    if cfg["trainer.placement.colocate_all"]:  # lines 297-306
        policy_gpus = cfg["trainer.placement.policy_num_gpus_per_node"] * cfg["trainer.placement.policy_num_nodes"]
        rollout_gpus = (cfg["generator.num_inference_engines"] * cfg["generator.inference_engine_tensor_parallel_size"]
                        * cfg["generator.inference_engine_data_parallel_size"])
        _require(policy_gpus == rollout_gpus,
                 f"num_policy_gpus ({policy_gpus}) and num_rollout_gpus ({rollout_gpus}) must be the same")
