"""The rehearsal variant's hashed lock: made from the pins, and checked against them before a build.

The lock (``[variants.rehearsal] lock``) is what the image installs
(``uv pip sync --require-hashes``); ``[ray] version`` is what it must hold.
``invoke lock-rehearsal`` generates the lock from the pins; ``invoke build``
refuses a lock that no longer agrees with them, in its first second.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from skyrl_stack.errors import StackError
from skyrl_stack.image.lock_check import disagreements, expectations, locked_versions
from skyrl_stack.image.pins import Pins, Variant
from skyrl_stack.project import project_root



def lock_path(variant: Variant) -> Path:
    return project_root() / variant.lock


def requirements(variant: Variant) -> str:
    """The lock's input, from the pins alone (`name==version` for every expected package)."""
    return "".join(f"{package}=={version}\n" for package, version in sorted(variant.expect.items()))


def check(variant: Variant, path: Path | None = None) -> None:
    """Fail naming the pin when the lock would install something else."""
    path = path or lock_path(variant)
    try:
        text = path.read_text()
    except OSError as exc:
        raise StackError(f"cannot read the {variant.name} lock {path}: {exc.strerror}",
                         hint="generate it with `invoke lock-rehearsal`") from None
    problems = disagreements(expectations(variant), locked_versions(text), variant.lock)
    if problems:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise StackError(problems[0] + more,
                         hint="regenerate the lock from the pins with `invoke lock-rehearsal` (needs PyPI), "
                              "or put the pin back")


def regenerate(pins: Pins, name: str = "rehearsal") -> Path:
    """Resolve the pins with uv, hashed, as of the pinned SkyRL commit's time, into the lock file.

    The cut-off date keeps Ray's dependencies at the versions of the pinned
    SkyRL's era, and makes the lock repeatable on another day.
    """
    variant = pins.variant(name)
    uv = shutil.which("uv")
    if uv is None:
        raise StackError("uv not found", hint="install the dev dependencies: pip install -e '.[dev]'")
    path = lock_path(variant)
    command = [uv, "pip", "compile", "-", "--quiet", "--generate-hashes", "--no-header",
               "--python-version", variant.python_minor, "--python-platform", "x86_64-manylinux_2_28",
               "--exclude-newer", pins.raw["skyrl"]["commit_time"], "--output-file", str(path)]
    result = subprocess.run(command, input=requirements(variant), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise StackError(f"uv pip compile failed: {result.stderr.strip().splitlines()[-1] if result.stderr.strip() else result.returncode}",
                         hint="is the pinned version on PyPI (and PyPI reachable)?")
    check(variant, path)
    return path
