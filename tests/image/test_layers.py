"""Balanced layers (skyrl_stack/image/layers.py), checked against uv itself on SkyRL's real lock.

The GPU images' layer split is proven with uv 0.8.22's own planner: `uv sync --frozen --dry-run`
on SkyRL's uv.lock at the pinned commit (tests/data/skyrl-1ed499c) with the arguments the
Dockerfile's install-layer step passes, group by group. The rehearsal image's split is built for
real by the container tests (tests/image/test_reproducible.py builds it twice).
"""
from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from skyrl_stack.image import layers

from tests.support.paths import DATA, REPO_ROOT
SKYRL_LOCK = DATA / "skyrl-1ed499c"
REHEARSAL_LOCK = REPO_ROOT / "docker" / "rehearsal" / "requirements.lock"
UV = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
# An install-layer command in a RUN (not the mount line that names the script).
INSTALL_LAYER = re.compile(r"^\s*(?:&& )?install-layer (\S+)", re.M)
EXPORT = ["export", "--frozen", "--no-hashes", "--no-emit-project", "--extra"]


@pytest.fixture(scope="module")
def skyrl_project(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("skyrl-train")
    shutil.copy(SKYRL_LOCK / "pyproject.toml", path / "pyproject.toml")
    (path / "uv.lock").write_bytes(gzip.decompress((SKYRL_LOCK / "uv.lock.gz").read_bytes()))
    (path / "skyrl-gym").mkdir()  # the workspace member's path; never installed by a layer
    return path


def export(project: Path, extra: str) -> str:
    return subprocess.run([UV, *EXPORT, extra], cwd=project, capture_output=True, text=True, check=True).stdout


@given(st.sampled_from(["nvidia-cudnn-cu12", "torch", "vllm", "ray", "requests"]),
       st.lists(st.sampled_from(["-", "_", "."]), min_size=8, max_size=8), st.booleans())
def test_a_package_is_grouped_by_its_normalised_name(name, separators, upper):
    pick = iter(separators)
    spelled = "".join(next(pick) if ch == "-" else ch for ch in name)
    spelled = spelled.upper() if upper else spelled
    assert layers.group_of(spelled) == layers.group_of(name)


def test_groups_in_order():
    assert [layers.group_of(n) for n in ("nvidia-cublas-cu12", "nvidia-nccl-cu12", "flash_attn", "vllm", "Ray",
                                         "rayx", "jsonschema")] == \
        ["cudnn-cublas", "cuda", "torch", "engine", "ray", "rest", "rest"]


def test_rehearsal_lock_is_split_into_groups_that_add_up_to_it():
    text = REHEARSAL_LOCK.read_text()
    whole = layers.entries(text)
    parts = {group: layers.entries(layers.select(text, group)) for group in layers.GROUP_NAMES}
    assert [name for name, _ in parts["ray"]] == ["ray"]
    assert sorted(e for part in parts.values() for e in part) == sorted(whole)
    # Each entry keeps its hashes: `uv pip install --require-hashes` accepts nothing less.
    assert all(re.search(r"--hash=sha256:[0-9a-f]{64}", entry) for _, entry in whole)
    assert not parts["cuda"] and not parts["torch"] and not parts["engine"]


def test_dockerfile_installs_every_group_in_order():
    dockerfile = (REPO_ROOT / "docker" / "Dockerfile").read_text()
    venv_skyrl = dockerfile.split("AS venv-skyrl", 1)[1].split("\nFROM ", 1)[0]
    assert INSTALL_LAYER.findall(venv_skyrl) == layers.GROUP_NAMES
    # The project last, by the exact sync of the whole lock.
    assert venv_skyrl.rindex("install-layer ") < venv_skyrl.index('uv sync --frozen --no-dev --extra "${SKYRL_EXTRA}"\n')
    rehearsal = dockerfile.split("AS venv-rehearsal", 1)[1].split("\nFROM ", 1)[0]
    present = [g for g in layers.GROUP_NAMES if layers.select(REHEARSAL_LOCK.read_text(), g)]
    assert INSTALL_LAYER.findall(rehearsal) == present
    assert rehearsal.rindex("install-layer ") < rehearsal.index("uv pip sync --require-hashes")


def _python312() -> str | None:
    """A CPython 3.12 for uv's planner (SkyRL's lock requires ==3.12.*; uv only inspects it)."""
    found = subprocess.run([UV, "python", "find", "--no-python-downloads", "3.12"], capture_output=True, text=True)
    if found.returncode == 0:
        return found.stdout.strip()
    candidates = sorted(Path.home().glob(".pyenv/versions/3.12*/bin/python3.12"))
    return str(candidates[-1]) if candidates else shutil.which("python3.12")


def planned(project: Path, extra: str, python: str, held_back: list[str]) -> set[str]:
    """What uv's own planner would install: `uv sync --frozen --dry-run` as install-layer runs it."""
    args = [UV, "sync", "--frozen", "--dry-run", "--no-dev", "--extra", extra, "--no-install-project", "--python",
            python, *[a for name in held_back for a in ("--no-install-package", name)]]
    out = subprocess.run(args, cwd=project, capture_output=True, text=True, check=True)
    return set(re.findall(r"^ \+ ([^=\s@]+)(?:==| @ )", out.stdout + out.stderr, re.M))


@pytest.mark.parametrize("extra", ["vllm", "sglang"])
def test_each_gpu_layer_installs_exactly_its_group_per_uvs_planner(skyrl_project, extra):
    python = _python312()
    if python is None:
        # A skip is for a developer machine without 3.12; CI machines have pyenv's 3.12.1
        # (~/.pyenv/versions/3.12.1), so there a missing interpreter fails instead of passing silently.
        message = "no CPython 3.12 on this machine for uv's planner (uv python find 3.12, ~/.pyenv/versions/3.12*)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    text = export(skyrl_project, extra)
    before: set[str] = set()
    per_layer = {}
    for group in layers.GROUP_NAMES:
        now = planned(skyrl_project, extra, python, layers.later_packages(text, group))
        assert before <= now
        per_layer[group] = now - before
        assert {layers.group_of(name) for name in per_layer[group]} <= {group}, (group, per_layer[group])
        before = now
    # The layers add up to the whole lock for linux x86_64 (less the project, the last sync's).
    assert before == planned(skyrl_project, extra, python, sorted(layers.PROJECT_PACKAGES))
    assert all(per_layer[group] for group in layers.GROUP_NAMES), per_layer
    assert {"torch", "flash-attn", "triton"} <= per_layer["torch"] and extra in per_layer["engine"]


@pytest.mark.parametrize("extra", ["vllm", "sglang"])
def test_no_gpu_layer_holds_most_of_the_locked_wheel_bytes(skyrl_project, extra):
    table = layers.expected_gpu_layers(export(skyrl_project, extra), (skyrl_project / "uv.lock").read_text())
    sized = sum(row["bytes"] for row in table.values())
    largest = max(table, key=lambda group: table[group]["bytes"])
    assert table[largest]["bytes"] < 0.5 * sized, {g: row["bytes"] for g, row in table.items()}
    # Wheels from a URL or PyTorch's index carry no size in uv.lock: named, never guessed.
    assert {"torch", "flash-attn"} <= set(table["torch"]["unsized"])
    assert table["cudnn-cublas"]["packages"] == 2 and table["ray"]["packages"] == 1
