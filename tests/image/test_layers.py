"""Balanced layers (skyrl_stack/image/layers.py), checked against uv itself on SkyRL's real lock.

The GPU images' layer split is proven with uv 0.8.22's own planner: the real
docker/scripts/install-layer runs here, step by step as the Dockerfile's venv-skyrl stage calls
it, on SkyRL's uv.lock at the pinned commit (tests/data/skyrl-1ed499c); every uv command it
issues is recorded and each `uv sync` replayed as `uv sync --dry-run`. The one stand-in is
`with-build-ca`, the script every install goes through (it only adds a CA and execs): it records
instead, because the installs themselves (GBs from PyTorch's index and GitHub) cannot run here.
The rehearsal image's split is built for real by the container tests (tests/image/test_reproducible.py
builds it twice).
"""
from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from skyrl_stack.image import bake, layers
from skyrl_stack.image.pins import load_pins

from tests.support.paths import DATA, REPO_ROOT
SKYRL_LOCK = DATA / "skyrl-1ed499c"
REHEARSAL_LOCK = REPO_ROOT / "docker" / "rehearsal" / "requirements.lock"
DOCKERFILE = REPO_ROOT / "docker" / "Dockerfile"
UV = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
# An install-layer command in a RUN (not the mount line that names the script).
INSTALL_LAYER = re.compile(r"^\s*(?:&& )?/opt/skyrl-build/install-layer (\S+)", re.M)
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


def dockerfile_stage(name: str) -> str:
    return DOCKERFILE.read_text().split(f"AS {name}", 1)[1].split("\nFROM ", 1)[0]


def test_dockerfile_installs_every_group_in_order():
    # Every group, then the project (SkyRL itself) by the last sync of the whole lock.
    assert INSTALL_LAYER.findall(dockerfile_stage("venv-skyrl")) == [*layers.GROUP_NAMES, layers.PROJECT]
    rehearsal = dockerfile_stage("venv-rehearsal")
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


def python312() -> str:
    python = _python312()
    if python is None:
        # A skip is for a developer machine without 3.12; CI machines have pyenv's 3.12.1
        # (~/.pyenv/versions/3.12.1), so there a missing interpreter fails instead of passing silently.
        message = "no CPython 3.12 on this machine for uv's planner (uv python find 3.12, ~/.pyenv/versions/3.12*)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return python


# Stands in for docker/scripts/with-build-ca, the script every install of install-layer goes through:
# records the uv command (and the requirements files it reads) instead of downloading GBs.
RECORDER = """#!{python}
import json, os, sys
argv = sys.argv[1:]
files = {{argv[i + 1]: open(argv[i + 1]).read() for i, arg in enumerate(argv[:-1]) if arg == "-r"}}
with open(os.environ["RECORD"], "a") as log:
    log.write(json.dumps({{"step": os.environ["STEP"], "argv": argv, "files": files}}) + "\\n")
"""


def lock_check_stage(project: Path, variant, state: Path) -> None:
    """What the skyrl-lock-check stage leaves in /opt/skyrl: the checked export and the prebuilt wheels'
    entries, made by the commands that stage runs, with the build arguments bake gives the variant."""
    args = bake.build_args(load_pins(), variant)
    stage = dockerfile_stage("skyrl-lock-check")
    assert 'uv export --frozen --no-hashes --no-emit-project --extra "${SKYRL_EXTRA}" >/opt/skyrl/locked.txt' in stage
    assert 'python3 /opt/skyrl-build/layers.py prebuilt --expect "${SKYRL_PREBUILT}" </opt/skyrl/locked.txt' \
           ' >/opt/skyrl/prebuilt.txt' in stage
    (state / "locked.txt").write_text(export(project, args["SKYRL_EXTRA"]))
    with (state / "locked.txt").open() as stdin, (state / "prebuilt.txt").open("w") as stdout:
        subprocess.run([sys.executable, str(REPO_ROOT / "skyrl_stack" / "image" / "layers.py"), "prebuilt", "--expect",
                        args["SKYRL_PREBUILT"]], cwd=project, stdin=stdin, stdout=stdout, check=True,
                       env={**os.environ, "PATH": f"{Path(UV).parent}{os.pathsep}{os.environ['PATH']}"})


def install_steps(project: Path, variant, python: str, work: Path) -> list[dict]:
    """Run docker/scripts/install-layer for each step the venv-skyrl stage runs, in order; return the uv
    commands it issued ({"step", "argv", "files"}), recorded by the with-build-ca stand-in."""
    state, bin_dir, tmp = work / "opt-skyrl", work / "bin", work / "tmp"
    for path in (state, bin_dir, tmp):
        path.mkdir(parents=True)
    lock_check_stage(project, variant, state)
    recorder = bin_dir / "with-build-ca"
    recorder.write_text(RECORDER.format(python=sys.executable))
    recorder.chmod(0o755)
    (bin_dir / "install-layer").symlink_to(REPO_ROOT / "docker" / "scripts" / "install-layer")
    # install-layer compiles the new .py of the env's `python`: a throwaway venv here, not the host's.
    subprocess.run([UV, "venv", "--quiet", "--python", python, str(work / "compile-env")], check=True)
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{work}/compile-env/bin/python" "$@"\n')
    (bin_dir / "python").chmod(0o755)
    record = work / "record.jsonl"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "RECORD": str(record),
           "LAYER_LOCK": "uv", "SKYRL_EXTRA": variant.skyrl_extra, "TMPDIR": str(tmp),
           "SKYRL_LAYERS_LIB": str(REPO_ROOT / "skyrl_stack" / "image"), "SKYRL_STATE_DIR": str(state)}
    for step in INSTALL_LAYER.findall(dockerfile_stage("venv-skyrl")):
        subprocess.run(["install-layer", step], cwd=project, env={**env, "STEP": step}, check=True)
    return [json.loads(line) for line in record.read_text().splitlines()]


def plan(project: Path, argv: list[str], python: str, environment: Path) -> dict[str, set[str]]:
    """uv's own plan for a recorded `uv sync`: `--dry-run` against `environment` (missing: a new one).
    {"+": {"name==version", "name @ url"}, "-": {...}}."""
    assert argv[:2] == ["uv", "sync"], argv
    out = subprocess.run([UV, *argv[1:], "--dry-run", "--python", python], cwd=project, capture_output=True,
                         text=True, check=True, env={**os.environ, "UV_PROJECT_ENVIRONMENT": str(environment)})
    found = {"+": set(), "-": set()}
    for sign, requirement in re.findall(r"^ ([+-]) (\S+(?: @ \S+)?)", out.stdout + out.stderr, re.M):
        found[sign].add(requirement)
    return found


def names(requirements: set[str]) -> set[str]:
    return {re.split(r"==| @ ", r, maxsplit=1)[0] for r in requirements}


@pytest.mark.parametrize("extra", ["vllm", "sglang"])
def test_each_gpu_layer_installs_exactly_its_group_per_uvs_planner(skyrl_project, extra, tmp_path):
    python = python312()
    variant = load_pins().variant(extra)
    commands = install_steps(skyrl_project, variant, python, tmp_path)
    syncs = {c["step"]: c["argv"] for c in commands if c["argv"][:2] == ["uv", "sync"]}
    assert list(syncs) == [*layers.GROUP_NAMES, layers.PROJECT]
    prebuilt = {name for c in commands if c["argv"][:3] == ["uv", "pip", "install"]
                for text in c["files"].values() for name, _ in layers.entries(text)}
    assert prebuilt == set(variant.prebuilt)
    before: set[str] = set()
    per_layer = {}
    for group in layers.GROUP_NAMES:
        now = names(plan(skyrl_project, syncs[group], python, tmp_path / "new-env")["+"])
        assert before <= now
        per_layer[group] = now - before
        assert {layers.group_of(name) for name in per_layer[group]} <= {group}, (group, per_layer[group])
        before = now
    # The layers (and the prebuilt wheels) add up to the whole lock for linux x86_64, less the project,
    # which the last sync installs.
    last = names(plan(skyrl_project, syncs[layers.PROJECT], python, tmp_path / "new-env")["+"])
    assert before == last - layers.PROJECT_PACKAGES and not before & prebuilt
    assert all(per_layer[group] for group in layers.GROUP_NAMES), per_layer
    assert {"torch", "flash-attn", "triton"} <= per_layer["torch"] and extra in per_layer["engine"]


def flashinfer_wheel_of_the_lock(project: Path) -> dict:
    """SkyRL's uv.lock entry for the prebuilt flashinfer wheel (read here with tomllib, not through uv):
    version 0.2.6.post1+cu128torch2.7 from PyTorch's cu128 index, with its sha256."""
    lock = tomllib.loads((project / "uv.lock").read_text())
    (entry,) = [p for p in lock["package"] if p["name"] == "flashinfer-python" and "wheels" in p]
    (wheel,) = entry["wheels"]
    assert entry["version"] == "0.2.6.post1+cu128torch2.7"
    # The other entry, the one sglang 0.4.8.post1's [srt] extra pins (==0.2.6.post1): PyPI, an sdist only.
    (sdist,) = [p for p in lock["package"] if p["name"] == "flashinfer-python" and "wheels" not in p]
    assert sdist["version"] == "0.2.6.post1" and "sdist" in sdist
    # (sglang 0.4.8.post1's wheel: `Requires-Dist: flashinfer_python==0.2.6.post1; extra == "srt"`.)
    sglang = next(p for p in lock["package"] if p["name"] == "sglang")
    assert {"name": "flashinfer-python", "version": "0.2.6.post1", "source": {"registry": "https://pypi.org/simple"}} \
        in sglang["optional-dependencies"]["srt"]
    return wheel


def environment_with_the_prebuilt_wheel(tmp_path: Path, python: str, wheel: dict) -> Path:
    """An environment holding flashinfer-python as the build's engine layer leaves it: installed by uv
    from the wheel, its PEP 610 record (direct_url.json) naming the lock's URL and sha256. The wheel's
    contents are a stand-in (the real one is 200 MB of CUDA kernels behind download.pytorch.org)."""
    name = "flashinfer_python-0.2.6.post1+cu128torch2.7"
    path = tmp_path / f"{name}-cp39-abi3-linux_x86_64.whl"
    info = f"{name}.dist-info"
    with zipfile.ZipFile(path, "w") as whl:
        whl.writestr("flashinfer/__init__.py", "")
        whl.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: flashinfer-python\n"
                                         "Version: 0.2.6.post1+cu128torch2.7\n")
        whl.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\n"
                                      "Tag: cp39-abi3-linux_x86_64\n")
        whl.writestr(f"{info}/RECORD", f"flashinfer/__init__.py,,\n{info}/METADATA,,\n{info}/WHEEL,,\n{info}/RECORD,,\n")
    env = tmp_path / "env"
    subprocess.run([UV, "venv", "--quiet", "--python", python, str(env)], check=True)
    subprocess.run([UV, "pip", "install", "--quiet", "--no-deps", "--python", str(env / "bin" / "python"), str(path)],
                   check=True)
    (record,) = env.glob(f"lib/python3.12/site-packages/{info}/direct_url.json")
    digest = wheel["hash"].split(":", 1)[1]
    record.write_text(json.dumps({"url": wheel["url"], "archive_info": {"hash": f"sha256={digest}",
                                                                        "hashes": {"sha256": digest}}}))
    return env


def test_sglang_never_builds_flashinfer_and_keeps_the_locked_prebuilt_wheel(skyrl_project, tmp_path):
    """SkyRL's lock gives the sglang extra flashinfer-python 0.2.6.post1 as a PyPI sdist, whose isolated
    build would install the newest torch (uv ignores build constraints under --frozen). The build must
    install the prebuilt wheel the same lock records (vllm's entry) by its hash, in the engine layer, and
    no later sync, the last (exact) one included, may remove it or replace it with a build of the sdist."""
    python = python312()
    wheel = flashinfer_wheel_of_the_lock(skyrl_project)
    commands = install_steps(skyrl_project, load_pins().variant("sglang"), python, tmp_path / "work")
    installs = [c for c in commands if c["argv"][:3] == ["uv", "pip", "install"]]
    assert [c["step"] for c in installs] == ["engine"]
    argv = installs[0]["argv"]
    assert {"--require-hashes", "--no-deps"} <= set(argv)
    (requirements,) = installs[0]["files"].values()
    assert requirements == f"flashinfer-python @ {wheel['url']} \\\n    --hash={wheel['hash']}\n"
    environment = environment_with_the_prebuilt_wheel(tmp_path, python, wheel)
    syncs = [c for c in commands if c["argv"][:2] == ["uv", "sync"]]
    touched = {}
    for command in syncs:
        planned = plan(skyrl_project, command["argv"], python, environment)
        changes = sorted(f"{sign} {r}" for sign in "+-" for r in planned[sign] if r.startswith("flashinfer-python"))
        if changes:
            touched[command["step"]] = changes
    # "+ flashinfer-python==0.2.6.post1" would be the sdist built; "- ...+cu128torch2.7" the wheel removed.
    assert touched == {}, f"uv would change flashinfer-python: {touched}"
    # And never may: a sync that would build it from source fails instead.
    assert all(("--no-build-package", "flashinfer-python") in set(zip(c["argv"], c["argv"][1:])) for c in syncs)


@pytest.mark.parametrize("extra", ["vllm", "sglang"])
def test_no_gpu_layer_holds_most_of_the_locked_wheel_bytes(skyrl_project, extra):
    table = layers.expected_gpu_layers(export(skyrl_project, extra), (skyrl_project / "uv.lock").read_text())
    sized = sum(row["bytes"] for row in table.values())
    largest = max(table, key=lambda group: table[group]["bytes"])
    assert table[largest]["bytes"] < 0.5 * sized, {g: row["bytes"] for g, row in table.items()}
    # Wheels from a URL or PyTorch's index carry no size in uv.lock: named, never guessed.
    assert {"torch", "flash-attn"} <= set(table["torch"]["unsized"])
    assert table["cudnn-cublas"]["packages"] == 2 and table["ray"]["packages"] == 1


PREBUILT_PIN = "[variants.sglang.prebuilt] flashinfer-python"


@pytest.mark.parametrize("package, extra, locked, message", [
    ("flashinfer-python", "sglang", None,
     f'pin {PREBUILT_PIN} = "sglang": extra sglang locks `flashinfer-python==0.2.6.post1`, not a wheel by URL'),
    ("flashinfer-python", "vllm", "flashinfer-python==0.2.7\n",
     f'pin {PREBUILT_PIN} = "vllm": extra vllm\'s wheel is flashinfer-python 0.2.6.post1, '
     "this variant's lock holds 0.2.7"),
    ("flash-infer", "vllm", None, 'pin [variants.sglang.prebuilt] flash-infer = "vllm": SkyRL\'s lock gives extra vllm '
                                  "no flash-infer"),
])
def test_a_prebuilt_pin_the_lock_cannot_honour_fails_naming_the_pin(skyrl_project, package, extra, locked, message):
    """The skyrl-lock-check stage's `layers.py prebuilt`, on SkyRL's real lock: only a wheel by URL with its
    sha256, of the release the variant's own lock holds, is taken; anything else is one line naming the pin."""
    expect = json.dumps({package: [extra, f"[variants.sglang.prebuilt] {package}"]})
    result = subprocess.run([sys.executable, str(REPO_ROOT / "skyrl_stack" / "image" / "layers.py"), "prebuilt", "--expect", expect],
                            cwd=skyrl_project, input=locked if locked is not None else export(skyrl_project, "sglang"),
                            capture_output=True, text=True,
                            env={**os.environ, "PATH": f"{Path(UV).parent}{os.pathsep}{os.environ['PATH']}"})
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines()[0] == f"error: {message}"
    assert result.stderr.splitlines()[1].startswith("hint: ")
