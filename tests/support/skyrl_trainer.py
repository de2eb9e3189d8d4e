"""SkyRL's trainer.py as the image gets it: the pinned commit's file, then our patches by the Dockerfile's tool.

The pinned commit's file is taken from the PyPI wheel skyrl-train 0.2.0 in .venv-skyrl (made by
scripts/setup-dev.sh), whose skyrl_train/trainer.py is byte-identical to 1ed499c's
skyrl-train/skyrl_train/trainer.py (PINNED_TRAINER_SHA256, asserted by test_skyrl_patches.py), and the
patches are applied by docker/scripts/apply-skyrl-patches, the script the skyrl-source stage runs.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

import pytest

from skyrl_stack.image import skyrl_patches
from skyrl_stack.image.pins import load_pins
from tests.support.paths import REPO_ROOT

SKYRL_VENV_PYTHON = REPO_ROOT / ".venv-skyrl" / "bin" / "python"
# sha256 of skyrl-train/skyrl_train/trainer.py at [skyrl] commit 1ed499c, read from the SkyRL repository
# (`git show 1ed499c:skyrl-train/skyrl_train/trainer.py | sha256sum`; its blob is d77f53e7).
PINNED_TRAINER_SHA256 = "7c658fd2e67243f82cce816cde6d696c5a5b11a3b364bcf25d391af6e537e2d1"

# A skip is for a developer who has not run setup-dev.sh yet; in CI (.ci/run runs setup-dev.sh
# first) a missing .venv-skyrl must fail, never pass silently (as in tests/launch/test_training_plan.py).
needs_skyrl_venv = pytest.mark.skipif(
    not SKYRL_VENV_PYTHON.exists() and os.environ.get("CI") != "true",
    reason=".venv-skyrl missing: run scripts/setup-dev.sh (SkyRL's real trainer is not checked without it)",
)


@lru_cache(maxsize=None)
def wheel_trainer() -> Path:
    """skyrl_train/trainer.py of the wheel in .venv-skyrl, found by that interpreter (not imported)."""
    out = subprocess.run(
        [str(SKYRL_VENV_PYTHON), "-c",
         "import importlib.util; print(importlib.util.find_spec('skyrl_train').submodule_search_locations[0])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    return Path(out) / "trainer.py"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def trainer_in_checkout(root: Path) -> Path:
    """Where the trainer lives in SkyRL's checkout (the patches' paths are relative to its top)."""
    return root / load_pins().skyrl_subdir / "skyrl_train" / "trainer.py"


def checkout_with_pinned_trainer(root: Path) -> Path:
    """A stand-in for the skyrl-source stage's checkout holding the pinned trainer.py; returns that file."""
    target = trainer_in_checkout(root)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(wheel_trainer(), target)
    return target


def apply_patches(root: Path, spec: str | None = None, patch_dir: Path | None = None) -> subprocess.CompletedProcess:
    """docker/scripts/apply-skyrl-patches in `root`, as the skyrl-source stage runs it (default: the pinned list)."""
    return subprocess.run(
        ["bash", str(REPO_ROOT / skyrl_patches.APPLY_SCRIPT), str(patch_dir or REPO_ROOT / skyrl_patches.PATCH_DIR),
         skyrl_patches.build_arg(load_pins()) if spec is None else spec],
        cwd=root, capture_output=True, text=True, timeout=60,
    )
