"""The patches of SkyRL's checkout: pinned by sha256, applied by the skyrl-source stage's own script.

The script (docker/scripts/apply-skyrl-patches) runs here exactly as the stage runs it, on the pinned
commit's trainer.py (the wheel's copy in .venv-skyrl, byte-identical to 1ed499c's file: asserted
below). What the patch does to a resumed run is tests/image/test_skyrl_resume_epoch.py.
"""
from __future__ import annotations

import difflib
import re
import shutil
import socket
import subprocess
import time

import pytest

from skyrl_stack.errors import StackError
from skyrl_stack.image import bake, skyrl_patches
from skyrl_stack.image.pins import load_pins
from tests.conftest import TEST_BASE_IMAGE, TEST_REPOSITORY
from tests.image.test_layers import dockerfile_stage
from tests.image.test_pins import real_raw, write_pins
from tests.support.paths import REPO_ROOT
from tests.support.skyrl_trainer import (
    PINNED_TRAINER_SHA256,
    apply_patches,
    checkout_with_pinned_trainer,
    needs_skyrl_venv,
    sha256,
    trainer_in_checkout,
    wheel_trainer,
)

PATCH = "skyrl-1ed499c-resume-epoch"


@needs_skyrl_venv
def test_the_wheels_trainer_is_the_pinned_commits_file():
    assert sha256(wheel_trainer()) == PINNED_TRAINER_SHA256


def test_every_patch_file_is_pinned_and_has_its_pinned_sha256():
    pins = load_pins()
    skyrl_patches.check_files(pins)  # raises on a missing file or another sha256
    on_disk = sorted(p.stem for p in (REPO_ROOT / skyrl_patches.PATCH_DIR).glob("*.patch"))
    assert on_disk == sorted(pins.skyrl_patches) == [PATCH]
    # Its header names the upstream fix it stands in for.
    header = skyrl_patches.patch_file(PATCH).read_text().split("\ndiff --git ", 1)[0]
    assert "NovaSky-AI/SkyRL#589" in header and "74170ab9" in header


def test_a_patch_changed_without_its_pin_is_refused_before_the_build(tmp_path):
    pins = load_pins()
    (tmp_path / skyrl_patches.PATCH_DIR).mkdir(parents=True)
    with pytest.raises(StackError, match=rf"\[skyrl.patches\] {PATCH}: docker/patches/{PATCH}.patch not found"):
        skyrl_patches.check_files(pins, root=tmp_path)
    edited = skyrl_patches.patch_file(PATCH, tmp_path)
    edited.write_bytes(skyrl_patches.patch_file(PATCH).read_bytes() + b"\n")
    with pytest.raises(StackError, match=rf"\[skyrl.patches\] {PATCH} is [0-9a-f]{{64}}, but .* has sha256 "
                                         rf"{sha256(edited)}") as info:
        skyrl_patches.check_files(pins, root=tmp_path)
    assert f'set {PATCH} = "{sha256(edited)}"' in info.value.hint


@pytest.mark.parametrize("name, value, problem", [
    (PATCH, "f" * 63, f"{PATCH}: 'fff"),
    (PATCH, "F" * 64, f"{PATCH}: 'FFF"),
    ("../resume-epoch", "f" * 64, "'../resume-epoch' is not a patch file name"),
])
def test_a_malformed_patch_pin_is_one_line_naming_the_key(tmp_path, name, value, problem):
    raw = real_raw()
    raw["skyrl"]["patches"] = {name: value}
    pins_file = write_pins(tmp_path, raw)
    with pytest.raises(StackError, match=re.escape(f"pins file {pins_file}: [skyrl] patches: ")) as info:
        load_pins(pins_file)
    assert problem in info.value.message and "\n" not in info.value.message
    assert "sha256" in info.value.message or "file name" in info.value.message


def test_the_build_arguments_and_labels_carry_each_patch_with_its_sha256():
    pins = load_pins()
    digest = pins.skyrl_patches[PATCH]
    for name in ("vllm", "sglang"):
        variant = pins.variant(name)
        assert bake.build_args(pins, variant)["SKYRL_PATCHES"] == f"{PATCH}={digest}"
        assert bake.labels(pins, variant, revision="r")["io.skyrl-stack.skyrl.patches"] == f"{PATCH}@sha256:{digest}"
    rehearsal = pins.variant("rehearsal")  # no SkyRL, no patches
    assert "SKYRL_PATCHES" not in bake.build_args(pins, rehearsal)
    assert "io.skyrl-stack.skyrl.patches" not in bake.labels(pins, rehearsal, revision="r")


def test_the_skyrl_source_stage_applies_the_pinned_patches_after_the_checkout():
    stage = dockerfile_stage("skyrl-source")
    assert 'ARG SKYRL_PATCHES=""' in stage
    assert f"--mount=type=bind,source={skyrl_patches.PATCH_DIR},target=/tmp/skyrl-patches" in stage
    assert f"--mount=type=bind,source={skyrl_patches.APPLY_SCRIPT},target=/tmp/apply-skyrl-patches" in stage
    assert stage.index("rm -rf .git") < stage.index('bash /tmp/apply-skyrl-patches /tmp/skyrl-patches "${SKYRL_PATCHES}"')
    # The context the build sends holds them (.dockerignore keeps docker/).
    ignored = (REPO_ROOT / ".dockerignore").read_text().split()
    assert not any(entry.strip("/*") in ("docker", "docker/patches", "docker/scripts") for entry in ignored)


@needs_skyrl_venv
def test_the_patch_applies_cleanly_to_the_pinned_trainer_and_changes_only_the_epoch_loop(tmp_path):
    trainer = checkout_with_pinned_trainer(tmp_path)
    before = trainer.read_text().splitlines()
    applied = apply_patches(tmp_path)
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout == f"applied SkyRL patch {PATCH} (sha256 {load_pins().skyrl_patches[PATCH]})\n"
    diff = [line for line in difflib.unified_diff(before, trainer.read_text().splitlines(), lineterm="", n=0)
            if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert [line for line in diff if line.startswith("-")] == ["-        for epoch in range(self.cfg.trainer.epochs):"]
    code = [line.strip() for line in diff if line.startswith("+") and not line.strip("+ ").startswith("#")]
    assert code == ["+        start_epoch = max(self.global_step - 1, 0) // len(self.train_dataloader)".strip(),
                    "+        for epoch in range(start_epoch, self.cfg.trainer.epochs):".strip()]


@needs_skyrl_venv
def test_a_patch_that_does_not_apply_or_has_another_sha256_fails_and_changes_nothing(tmp_path):
    trainer = checkout_with_pinned_trainer(tmp_path)
    pristine = trainer.read_bytes()
    wrong = apply_patches(tmp_path, f"{PATCH}={'0' * 64}")
    assert wrong.returncode == 1 and trainer.read_bytes() == pristine
    assert wrong.stderr.splitlines()[-2:] == [
        f"error: SkyRL patch {PATCH}: sha256 {load_pins().skyrl_patches[PATCH]}, pinned {'0' * 64}",
        f"hint: a changed patch is a new pin: set [skyrl.patches] {PATCH} in pins.toml"]
    assert apply_patches(tmp_path).returncode == 0
    patched = trainer.read_bytes()
    again = apply_patches(tmp_path)  # a second time: `git apply --check` refuses, nothing half applied
    assert again.returncode == 1 and trainer.read_bytes() == patched
    assert f"error: SkyRL patch {PATCH} does not apply to this SkyRL checkout" in again.stderr
    missing = tmp_path / "no-patches"
    missing.mkdir()
    gone = apply_patches(tmp_path, f"{PATCH}={'0' * 64}", patch_dir=missing)
    assert gone.returncode == 1 and f"error: SkyRL patch {PATCH}: {missing}/{PATCH}.patch not found" in gone.stderr


def test_no_patches_is_a_no_op(tmp_path):
    assert shutil.which("git")
    done = apply_patches(tmp_path, "")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


# ------------------------------------------------------------------ the stage itself, in BuildKit
@pytest.fixture
def skyrl_git_server(tmp_path):
    """A stand-in for SkyRL's GitHub repository: the pinned trainer.py committed at its path, served by
    `git daemon` on the Docker bridge's gateway, where the build's RUN steps reach the host. Returns
    (repository URL, commit). The stage fetches a commit by its sha (allowAnySHA1InWant, as GitHub allows)."""
    repo = tmp_path / "served" / "SkyRL"
    checkout_with_pinned_trainer(repo)
    git = ["git", "-C", str(repo), "-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "the pinned trainer.py"], check=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    gateway = subprocess.run(["docker", "network", "inspect", "bridge", "--format", "{{(index .IPAM.Config 0).Gateway}}"],
                             capture_output=True, text=True, check=True).stdout.strip()
    with socket.socket() as probe:
        probe.bind((gateway, 0))
        port = probe.getsockname()[1]
    daemon = subprocess.Popen(["git", "-c", "uploadpack.allowAnySHA1InWant=true", "daemon", "--reuseaddr",
                               "--export-all", f"--base-path={repo.parent}", f"--listen={gateway}", f"--port={port}",
                               str(repo.parent)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"git://{gateway}:{port}/SkyRL"
    try:
        for _ in range(100):
            if subprocess.run(["git", "ls-remote", url], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"git daemon did not answer on {url}")
        yield url, commit
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)


def build_skyrl_source(url: str, commit: str, patches: str, ca_bundle, tag: str | None) -> subprocess.CompletedProcess:
    """`docker buildx build --target skyrl-source` on the rehearsal's base with the rehearsal's arguments for the
    shared stages (so they come from its cache), SkyRL from `url`, the given SKYRL_PATCHES."""
    pins = load_pins()
    shared = bake.build_args(pins, pins.variant("rehearsal"), base_image=TEST_BASE_IMAGE)
    args = {key: shared[key] for key in ("BASE_IMAGE", "APT_SNAPSHOT", "SOURCE_DATE_EPOCH", "UV_VERSION", "UV_SHA256")}
    args.update(SKYRL_REPO=url, SKYRL_COMMIT=commit, SKYRL_PATCHES=patches)
    command = ["docker", "buildx", "build", "--progress=plain", "--file", bake.DOCKERFILE, "--target", "skyrl-source",
               "--secret", f"id=ca,src={ca_bundle}", *(f"--build-arg={k}={v}" for k, v in args.items())]
    command += ["--tag", tag, "--load", "."] if tag else ["."]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)


@pytest.mark.container
@needs_skyrl_venv
def test_the_skyrl_source_stage_applies_the_patch_in_buildkit_and_a_wrong_sha256_fails_the_build(
        tmp_path, docker_engine, test_ca_bundle, skyrl_git_server):
    url, commit = skyrl_git_server
    expected = tmp_path / "expected"
    checkout_with_pinned_trainer(expected)
    assert apply_patches(expected).returncode == 0
    tag = f"{TEST_REPOSITORY}:skyrl-source-patch-check"
    built = build_skyrl_source(url, commit, skyrl_patches.build_arg(load_pins()), test_ca_bundle, tag)
    try:
        assert built.returncode == 0, built.stderr[-3000:]
        assert f"applied SkyRL patch {PATCH}" in built.stderr
        in_image = subprocess.run(
            ["docker", "run", "--rm", "--entrypoint", "/bin/cat", tag,
             f"/opt/skyrl/src/{load_pins().skyrl_subdir}/skyrl_train/trainer.py"],
            capture_output=True, check=True).stdout
    finally:
        subprocess.run(["docker", "image", "rm", tag], capture_output=True)
    assert in_image == trainer_in_checkout(expected).read_bytes()
    refused = build_skyrl_source(url, commit, f"{PATCH}={'0' * 64}", test_ca_bundle, None)
    assert refused.returncode != 0
    assert f"error: SkyRL patch {PATCH}: sha256 {load_pins().skyrl_patches[PATCH]}, pinned {'0' * 64}" in refused.stderr
