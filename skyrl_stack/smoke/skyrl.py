"""SkyRL tier: the training entry point imports, and its Hydra config composes with our overrides.

The overrides are exactly those of the rendered YAML's training command
(skyrl_stack.task_spec.training_overrides, written by the host side to a file
given with --overrides-file). Composing them catches a wrong or misspelt key
without a GPU: SkyRL's config is in Hydra struct mode, so an unknown key fails.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import re

from skyrl_stack.smoke.suite import Check, Fail, Skip, joined, last_line

ENTRYPOINT = "skyrl_train.entrypoints.main_base"
CONFIG_NAME = "ppo_base_config"
# SkyPilot sets these on every node; values stand in for them when composing.
SKYPILOT_PLACEHOLDERS = {"SKYPILOT_NUM_GPUS_PER_NODE": "1", "SKYPILOT_NUM_NODES": "1", "SKYPILOT_NODE_RANK": "0"}


def check_entrypoint(ctx) -> str:
    if ctx.variant is not None and not ctx.variant.has_skyrl:
        raise Skip("not in this variant")
    if ctx.variant is None and importlib.util.find_spec("skyrl_train") is None:
        raise Skip("skyrl_train not installed (variant unknown)")
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
    overrides = [expand(o) for o in (ctx.overrides or [])]
    try:
        cfg = compose(ctx.cache["skyrl_config_dir"], overrides)
    except Exception as exc:
        raise Fail(f"{CONFIG_NAME} does not compose with the training overrides: {joined(exc)}") from None
    if not overrides:
        return f"{CONFIG_NAME} composes (no --overrides-file: base config only)"
    return f"{CONFIG_NAME} composes with {len(overrides)} overrides (backend {cfg.generator.backend})"


CHECKS = [
    Check("skyrl.entrypoint", check_entrypoint),
    Check("skyrl.config", check_config, requires=("skyrl.entrypoint",)),
]
