"""The SkyRL config check's composition logic, with real Hydra against a small config of our own.

SkyRL itself is only in the production images; what is tested here is that
composing in struct mode with config groups and interpolations fails on a
wrong key (the mistake the check exists to catch) and passes on the
overrides shape `training_overrides` produces. Needs hydra-core (a dev dependency).
"""
from __future__ import annotations

import pytest

# hydra-core is a dev dependency: without it this module fails to import (an error, never a silent skip).
import hydra  # noqa: F401

from skyrl_stack.smoke.skyrl import CONFIG_NAME, check_config, compose
from skyrl_stack.smoke.suite import Context, Fail


@pytest.fixture
def config_dir(tmp_path):
    """A config shaped like SkyRL's: a defaults list with a group, nested keys, an interpolation."""
    (tmp_path / "gym").mkdir()
    (tmp_path / "gym" / "default.yaml").write_text("max_env_workers: 4\n")
    (tmp_path / f"{CONFIG_NAME}.yaml").write_text(
        "defaults:\n  - _self_\n  - gym@environment.skyrl_gym: default\n"
        "data:\n  train_data: ['${oc.env:HOME}/data/train.parquet']\n"
        "trainer:\n  placement:\n    policy_num_nodes: 1\n  max_prompt_length: 512\n"
        "generator:\n  backend: vllm\n  max_input_length: ${trainer.max_prompt_length}\n"
        "environment:\n  env_class: gsm8k\n"
    )
    return str(tmp_path)


def test_overrides_compose(config_dir):
    cfg = compose(config_dir, ["data.train_data=['/root/data/gsm8k/train.parquet']",
                               "trainer.placement.policy_num_nodes=2", "generator.backend=sglang"])
    assert cfg.trainer.placement.policy_num_nodes == 2 and cfg.generator.backend == "sglang"
    assert list(cfg.data.train_data) == ["/root/data/gsm8k/train.parquet"]


def test_misspelt_key_fails_the_check(config_dir):
    ctx = Context(host=False, gpus="none", overrides=["trainer.placement.policy_num_node=2"])
    ctx.cache["skyrl_config_dir"] = config_dir
    with pytest.raises(Fail, match=r"does not compose with the training overrides: Could not override 'trainer.placement.policy_num_node'"):
        check_config(ctx)


def test_skypilot_variables_in_overrides_are_filled_in(config_dir):
    ctx = Context(host=False, gpus="none", overrides=["trainer.placement.policy_num_nodes=$SKYPILOT_NUM_NODES"])
    ctx.cache["skyrl_config_dir"] = config_dir
    assert "composes with 1 overrides (backend vllm)" in check_config(ctx)


def test_training_overrides_keys_are_what_the_check_composes():
    """The overrides the host side passes come from task_spec.training_overrides: key=value strings."""
    from skyrl_stack.smoke.runner import default_overrides

    overrides = default_overrides("vllm", "repo@sha256:" + "0" * 64)
    assert overrides and all("=" in o for o in overrides)
    assert "generator.backend=vllm" in overrides
    assert default_overrides("rehearsal", "x") is None


@pytest.mark.parametrize("logger, before", [("wandb", None), ("wandb", "real-key"), ("console", None)])
def test_wandb_stand_in_is_only_for_the_check(monkeypatch, logger, before):
    """validate_generator_cfg asserts WANDB_API_KEY for the wandb logger: a stand-in while validating, gone after,
    and a real key is never replaced. (SkyRL's real validate_cfg runs in tests/launch/test_training_plan.py.)"""
    import os

    from skyrl_stack.smoke.skyrl import WANDB_STAND_IN, wandb_stand_in

    if before is None:
        monkeypatch.delenv("WANDB_API_KEY", raising=False)
    else:
        monkeypatch.setenv("WANDB_API_KEY", before)
    with wandb_stand_in(logger) as stood_in:
        inside = os.environ.get("WANDB_API_KEY")
    assert stood_in == (logger == "wandb" and before is None)
    assert inside == (WANDB_STAND_IN if stood_in else before)
    assert os.environ.get("WANDB_API_KEY") == before


def test_validation_is_skipped_without_overrides():
    from skyrl_stack.smoke.skyrl import check_validation
    from skyrl_stack.smoke.suite import Skip

    with pytest.raises(Skip, match="no --overrides-file: nothing of ours to validate"):
        check_validation(Context(host=True, gpus="none", overrides=None))
