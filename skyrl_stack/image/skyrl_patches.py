"""The patches the image carries on top of SkyRL's pinned commit ([skyrl.patches] in pins.toml).

Each is a file docker/patches/<name>.patch, pinned by its sha256. The Dockerfile's skyrl-source stage
applies them (docker/scripts/apply-skyrl-patches: sha256, `git apply --check`, `git apply`), so the
build argument and the label below carry name and digest, and `invoke build` checks the files against
the pins before anything runs: a patch edited without its pin is one line here, not a failed build.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from skyrl_stack.errors import StackError
from skyrl_stack.image.pins import PINS_FILE, Pins
from skyrl_stack.project import project_root

# Relative to the build context (the checkout); the Dockerfile bind-mounts this directory.
PATCH_DIR = "docker/patches"
APPLY_SCRIPT = "docker/scripts/apply-skyrl-patches"


def patch_file(name: str, root: Path | None = None) -> Path:
    return (root or project_root()) / PATCH_DIR / f"{name}.patch"


def build_arg(pins: Pins) -> str:
    """SKYRL_PATCHES: "name=sha256 ..." in the order they apply (apply-skyrl-patches' argument)."""
    return " ".join(f"{name}={digest}" for name, digest in pins.skyrl_patches.items())


def label(pins: Pins) -> str:
    """io.skyrl-stack.skyrl.patches: what `docker inspect` shows, e.g. "name@sha256:..."."""
    return ",".join(f"{name}@sha256:{digest}" for name, digest in pins.skyrl_patches.items())


def check_files(pins: Pins, root: Path | None = None) -> None:
    """Every pinned patch exists and has its pinned sha256."""
    for name, digest in pins.skyrl_patches.items():
        path = patch_file(name, root)
        if not path.is_file():
            raise StackError(f"pins file {PINS_FILE}: [skyrl.patches] {name}: {PATCH_DIR}/{name}.patch not found",
                             hint=f"add the patch file, or drop {name} from [skyrl.patches]")
        found = hashlib.sha256(path.read_bytes()).hexdigest()
        if found != digest:
            raise StackError(f"pins file {PINS_FILE}: [skyrl.patches] {name} is {digest}, "
                             f"but {PATCH_DIR}/{name}.patch has sha256 {found}",
                             hint=f"a changed patch is a new pin: set {name} = \"{found}\" if the change is meant")
