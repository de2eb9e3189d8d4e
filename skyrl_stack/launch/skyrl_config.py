"""SkyRL's Hydra config at the pinned commit, on this machine: what `invoke render` composes `--set` against.

The source is SkyRL's PyPI wheel skyrl-train==0.2.0, which is SkyRL 1ed499c (tag
skyrl_train-v0.2.0): its skyrl_train/config/ is byte-identical to that commit's
skyrl-train/skyrl_train/config/, and scripts/skyrl-validate-requirements.txt pins
the same wheel hash for .venv-skyrl. None of SkyRL's YAML is in this repository:
the files are taken once into the workspace (.skyrl-stack/skyrl-config/), from the
checkout's .venv-skyrl when scripts/setup-dev.sh made one, else from the wheel,
downloaded with this Python's pip (--require-hashes), and every file is checked
against CONFIG_FILES (sha256) each time it is used, wherever it came from.

Standard library only at import: Hydra is imported by compose() alone, so
`invoke --list` stays instant. The image's own check (smoke tier skyrl, run by
`invoke launch`, launch/preflight.py) stays the final word before a cloud launch.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from skyrl_stack.errors import StackError, first_line
from skyrl_stack.reporter import step

# The SkyRL commit the config below is of; pins.toml [skyrl] commit must be the same (config_dir refuses otherwise).
SKYRL_COMMIT = "1ed499cce4df7ef21462969707b0476bc3c7e0c8"
WHEEL = "skyrl-train==0.2.0"
WHEEL_SHA256 = "d20317886a3744e6c31f1cd69ed8888f4947931b590fb0c6b7562b124f049294"
PACKAGE_DIR = "skyrl_train/config"  # where the wheel holds it; main_base.py: config_dir = Path(__file__).parent.parent / "config"
# Every YAML file under skyrl_train/config/ in that wheel, with its sha256 (tests/launch/test_skyrl_config.py
# checks this list against the wheel's own RECORD and the installed package).
CONFIG_FILES = {
    "ppo_base_config.yaml": "bccbce2d9a347246a66b8facf52926be16bb31349e82d4b23f9596cd1723610a",
    "deepspeed_config/eval.yaml": "2fb2c41b012ef1195c1f5775888d5c49e7b133718c090fef84e658cc4741c0b2",
    "deepspeed_config/train.yaml": "eeb9aa1c8e2964b3782ad20557f1fcb0dcf0ab3275e357e8040ab781ddab3b4d",
    "megatron_config/policy.yaml": "af0b2d431356d139a272376a2eff7c897e6050dac4e208fd25323d2d4f3dfa7d",
    "megatron_config/ref.yaml": "4b399e4867601aeb9bb827693156bef2820d8b8252b864e63dd84c1c5c0319a6",
    "skyrl_gym_config/default.yaml": "8ffb251970114c2df14e66ec8746c2234777fd1ba7c6fde28a33690ed86593a2",
}
_OFFLINE_HINT = (f"on a machine with PyPI: pip download {WHEEL} --no-deps --ignore-requires-python, "
                 "then `python -m skyrl_stack.launch.skyrl_config WHEEL_FILE` here")


def cache_dir() -> Path:
    from skyrl_stack.image.records import state_dir

    return state_dir() / "skyrl-config" / f"skyrl-train-0.2.0-{WHEEL_SHA256[:12]}"


def config_dir() -> Path:
    """SkyRL's config directory at the pinned commit, every file verified; fetched into the workspace once."""
    from skyrl_stack.image.pins import load_pins

    pinned = load_pins().skyrl_commit
    if pinned != SKYRL_COMMIT:
        raise StackError(
            f"pins.toml pins SkyRL {pinned[:12]}, but render checks --set against SkyRL {SKYRL_COMMIT[:12]}'s config",
            hint="point WHEEL, WHEEL_SHA256 and CONFIG_FILES in skyrl_stack/launch/skyrl_config.py at that commit's config",
        )
    target = cache_dir()
    if _verified(target):
        return target
    installed = _checkout_skyrl_venv()
    if installed is not None and _verified(installed):
        return _store(lambda rel: (installed / rel).read_bytes(), target)
    with tempfile.TemporaryDirectory(prefix="skyrl-wheel-") as tmp:
        return from_wheel(_download_wheel(Path(tmp)), target)


def from_wheel(wheel: Path, target: Path | None = None) -> Path:
    """Take the config out of the pinned wheel (refused unless its sha256 is WHEEL_SHA256) into the cache."""
    digest = hashlib.sha256(Path(wheel).read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise StackError(f"{wheel} is not the pinned {WHEEL} wheel (sha256 {digest[:12]}, want {WHEEL_SHA256[:12]})",
                         hint=_OFFLINE_HINT)
    with zipfile.ZipFile(wheel) as archive:
        return _store(lambda rel: archive.read(f"{PACKAGE_DIR}/{rel}"), target or cache_dir())


def _verified(folder: Path) -> bool:
    """Every file of CONFIG_FILES is there with its sha256 (nothing else is read from the folder by Hydra's
    compose of ppo_base_config than its defaults list names, all of which are in CONFIG_FILES)."""
    try:
        return all(hashlib.sha256((folder / rel).read_bytes()).hexdigest() == sha for rel, sha in CONFIG_FILES.items())
    except OSError:
        return False


def _store(read, target: Path) -> Path:
    """Write the files (read(rel) -> bytes) into a fresh folder beside target, verify, then rename it into place."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
        try:
            for rel in CONFIG_FILES:
                (staging / rel).parent.mkdir(parents=True, exist_ok=True)
                (staging / rel).write_bytes(read(rel))
            if not _verified(staging):
                raise StackError(f"SkyRL's config files from the {WHEEL} source do not match their pinned sha256",
                                 hint=_OFFLINE_HINT)
            shutil.rmtree(target, ignore_errors=True)  # a stale or altered copy
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except OSError as exc:
        if _verified(target):  # another render stored it at the same time
            return target
        raise StackError(f"cannot write SkyRL's config into {target.parent}: {exc.strerror or exc}",
                         hint="free space or make the workspace writable (SKYRL_STACK_WORKSPACE names another)") from None
    return target


def _checkout_skyrl_venv() -> Path | None:
    """skyrl_train/config in the checkout's .venv-skyrl (scripts/setup-dev.sh installs the pinned wheel there)."""
    from skyrl_stack.project import project_root

    found = sorted((project_root() / ".venv-skyrl").glob(f"lib/python3*/site-packages/{PACKAGE_DIR}"))
    return found[0] if found else None


def _download_wheel(into: Path) -> Path:
    """The pinned wheel from the package index this Python's pip is configured for, hash-checked by pip."""
    step(f"fetching SkyRL's config (the {WHEEL} wheel, sha256 {WHEEL_SHA256[:12]}) once, for the --set checks")
    requirements = into / "requirements.txt"
    requirements.write_text(f"{WHEEL} --hash=sha256:{WHEEL_SHA256}\n")
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
             "--ignore-requires-python", "--require-hashes", "-r", str(requirements), "-d", str(into)],
            capture_output=True, text=True, timeout=300,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StackError(f"cannot download {WHEEL} for SkyRL's config: {first_line(exc)}", hint=_OFFLINE_HINT) from None
    wheels = sorted(into.glob("skyrl_train-*.whl"))
    if result.returncode != 0 or not wheels:
        errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")] or [result.stderr]
        raise StackError(f"cannot download {WHEEL} for SkyRL's config: {first_line(errors[-1])}", hint=_OFFLINE_HINT)
    return wheels[0]


def compose(overrides: list[str]):
    """SkyRL's ppo_base_config composed with these overrides, as main_base composes it (Hydra, struct mode):
    the smoke suite's own composition (skyrl_stack.smoke.skyrl.compose), on the verified config."""
    from skyrl_stack.smoke.skyrl import compose as skyrl_compose

    return skyrl_compose(str(config_dir()), overrides)


if __name__ == "__main__":
    # `python -m skyrl_stack.launch.skyrl_config [WHEEL_FILE]`: fill the cache now (scripts/setup-dev.sh),
    # or from a wheel carried to an offline machine.
    try:
        print(from_wheel(Path(sys.argv[1])) if sys.argv[1:] else config_dir())
    except StackError as exc:
        sys.exit(exc.render())
