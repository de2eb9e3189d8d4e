"""SkyRL tier: the training entry point imports, its Hydra config composes with our overrides,
and SkyRL's own `validate_cfg` accepts the result.

The overrides are exactly those of the rendered YAML's training command
(skyrl_stack.launch.task_spec.training_overrides, written by the host side to a file
given with --overrides-file; `invoke launch` passes the launched task's).
Composing them catches a wrong or misspelt key without a GPU: SkyRL's config is
in Hydra struct mode, so an unknown key fails. Validating runs the check
`main_base.main` runs first on the cluster (skyrl_train/utils/utils.py
`validate_cfg`: batch sizes against the placement, checkpoint count, ...), so a
plan SkyRL refuses fails here, not after the cluster is up and billed.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import re
from contextlib import contextmanager
from pathlib import Path

from skyrl_stack.smoke.suite import Check, Fail, Skip, joined, last_line

ENTRYPOINT = "skyrl_train.entrypoints.main_base"
CONFIG_NAME = "ppo_base_config"
VALIDATE = "skyrl_train.utils.utils"
# SkyPilot sets these on every node; values stand in for them when composing.
SKYPILOT_PLACEHOLDERS = {"SKYPILOT_NUM_GPUS_PER_NODE": "1", "SKYPILOT_NUM_NODES": "1", "SKYPILOT_NODE_RANK": "0"}
# validate_generator_cfg asserts WANDB_API_KEY is set when the logger is wandb;
# the real key is a secret given at launch, so a stand-in is set for this check only.
WANDB_STAND_IN = "skyrl-smoke-stand-in"


def require_skyrl(ctx) -> None:
    if ctx.variant is not None and not ctx.variant.has_skyrl:
        raise Skip("not in this variant")
    if ctx.variant is None and importlib.util.find_spec("skyrl_train") is None:
        raise Skip("skyrl_train not installed (variant unknown)")


def skyrl_config_dir() -> str:
    """SkyRL's Hydra config directory, found as main_base finds it (Path(__file__).parent.parent / "config"),
    without importing the entry point's heavy dependencies (vLLM, transformers)."""
    spec = importlib.util.find_spec("skyrl_train")
    if spec is None or not spec.submodule_search_locations:
        raise Fail("skyrl_train is not installed")
    return str(Path(list(spec.submodule_search_locations)[0]) / "config")


def check_entrypoint(ctx) -> str:
    require_skyrl(ctx)
    try:
        module = importlib.import_module(ENTRYPOINT)
    except Exception as exc:
        raise Fail(f"{ENTRYPOINT} does not import: {type(exc).__name__}: {last_line(exc)}") from None
    ctx.cache["skyrl_config_dir"] = module.config_dir
    return f"{ENTRYPOINT} imports (config dir {module.config_dir})"


def expand(override: str) -> str:
    """Expand $VARS as the node's shell would, with SkyPilot's variables standing in."""
    env = dict(SKYPILOT_PLACEHOLDERS, **os.environ)

    def value(match: re.Match) -> str:
        return env.get(match.group(1) or match.group(2), match.group(0))

    return re.sub(r"\$(?:\{(\w+)\}|(\w+))", value, override)


def compose(config_dir: str, overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=config_dir, version_base=None):
        cfg = hydra_compose(config_name=CONFIG_NAME, overrides=overrides)
    # Resolving catches interpolations that point at keys the overrides removed.
    OmegaConf.to_container(cfg, resolve=True)
    return cfg


def check_config(ctx) -> str:
    config_dir = ctx.cache.get("skyrl_config_dir")  # set by skyrl.entrypoint when it ran
    if config_dir is None:
        require_skyrl(ctx)
        config_dir = skyrl_config_dir()
    overrides = [expand(o) for o in (ctx.overrides or [])]
    try:
        cfg = compose(config_dir, overrides)
    except Exception as exc:
        raise Fail(f"{CONFIG_NAME} does not compose with the training overrides: {joined(exc)}") from None
    ctx.cache["skyrl_config_dir"] = config_dir
    if not overrides:
        return f"{CONFIG_NAME} composes (no --overrides-file: base config only)"
    return f"{CONFIG_NAME} composes with {len(overrides)} overrides (backend {cfg.generator.backend})"


@contextmanager
def wandb_stand_in(logger: str):
    """WANDB_API_KEY set to a stand-in while validating, when the logger needs one and none is set; restored after."""
    needed = logger == "wandb" and not os.environ.get("WANDB_API_KEY")
    if needed:
        os.environ["WANDB_API_KEY"] = WANDB_STAND_IN
    try:
        yield needed
    finally:
        if needed:
            os.environ.pop("WANDB_API_KEY", None)


def validate(config_dir: str, overrides: list[str]) -> str:
    """Compose, then run SkyRL's own validate_cfg on the result; returns a note, raises Fail with SkyRL's message."""
    cfg = compose(config_dir, [expand(o) for o in overrides])
    try:
        validate_cfg = importlib.import_module(VALIDATE).validate_cfg
    except Exception as exc:
        raise Fail(f"{VALIDATE} does not import: {type(exc).__name__}: {last_line(exc)}") from None
    with wandb_stand_in(str(cfg.trainer.logger)) as stood_in:
        try:
            validate_cfg(cfg)  # mutates cfg (fills derived fields); it is thrown away
        except Exception as exc:  # SkyRL asserts (AssertionError) or raises ValueError/NotImplementedError
            raise Fail(f"SkyRL's validate_cfg refuses the training overrides: {type(exc).__name__}: {joined(exc)}") from None
    trainer = cfg.trainer
    note = (f"SkyRL's validate_cfg accepts them: {trainer.placement.policy_num_nodes} x "
            f"{trainer.placement.policy_num_gpus_per_node} GPUs, train {trainer.train_batch_size}, mini "
            f"{trainer.policy_mini_batch_size}, micro {trainer.micro_train_batch_size_per_gpu}, "
            f"max_ckpts_to_keep {trainer.max_ckpts_to_keep}")
    return note + (" (WANDB_API_KEY: a stand-in for this check; the real key is given at launch)" if stood_in else "")


def check_validation(ctx) -> str:
    if not ctx.overrides:
        raise Skip("no --overrides-file: nothing of ours to validate")
    return validate(ctx.cache["skyrl_config_dir"], ctx.overrides)


CHECKS = [
    Check("skyrl.entrypoint", check_entrypoint),
    # Composing and validating need only SkyRL's config and utils, not the entry
    # point's engine imports: a broken vLLM import must not hide a plan SkyRL refuses.
    Check("skyrl.config", check_config),
    Check("skyrl.validate", check_validation, requires=("skyrl.config",)),
]
