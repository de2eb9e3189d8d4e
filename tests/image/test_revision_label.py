"""The image's revision label names the last commit that changed what the build reads, not HEAD.

Built for real, through `invoke build`, in a git repository made from a copy of
this checkout: a commit that touches only the README keeps the digest (and so
the smoke record keyed on it); a commit under docker/ moves the label and the
digest.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TEST_BASE_IMAGE, TEST_REPOSITORY
from tests.support.paths import REPO_ROOT

# Its own repository: the copy's labels differ from the checkout's, so sharing the session
# image's tags would move them away from it.
REPOSITORY = f"{TEST_REPOSITORY}-revision"
INVOKE = str(Path(sys.executable).with_name("invoke"))
# Fixed identity and dates: the copy's commit hashes are the same on every run (and so its image).
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.invalid", "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
           "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z"}


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True,
                          env=dict(os.environ, **GIT_ENV)).stdout.strip()


def _commit_all(repo: Path, message: str) -> str:
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", message)
    return _git(repo, "rev-parse", "HEAD")


@pytest.fixture
def checkout_copy(tmp_path) -> Path:
    """The tracked files of this checkout, as they are now, committed in a fresh repository."""
    copy = tmp_path / "checkout"
    files = subprocess.run(["git", "-C", str(REPO_ROOT), "ls-files", "-z"], capture_output=True, text=True,
                           check=True).stdout.split("\0")
    for name in filter(None, files):
        source = REPO_ROOT / name
        if source.is_file():  # a tracked file deleted in the working tree is not copied
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    _git(copy.parent, "init", "-q", str(copy))
    _commit_all(copy, "the checkout")
    return copy


def _build(copy: Path, workspace: Path, ca_bundle: Path) -> dict:
    """`invoke build` in the copy (its own skyrl_stack imported); its record, which is then removed so the
    next build is a real bake, not skipped as up to date."""
    env = dict(os.environ, PYTHONPATH=str(copy), SKYRL_STACK_WORKSPACE=str(workspace))
    result = subprocess.run([INVOKE, "build", "--variant", "rehearsal", "--repository", REPOSITORY, "--base-image",
                             TEST_BASE_IMAGE, "--ca-bundle", str(ca_bundle), "--progress", "quiet"],
                            cwd=copy, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    path = workspace / ".skyrl-stack" / "builds" / "rehearsal.json"
    record = json.loads(path.read_text())
    path.unlink()
    return record


def _revision(digest: str) -> str:
    labels = json.loads(subprocess.run(["docker", "image", "inspect", "--format", "{{json .Config.Labels}}", digest],
                                       capture_output=True, text=True, check=True).stdout)
    return labels["org.opencontainers.image.revision"]


@pytest.mark.container
def test_a_readme_only_commit_keeps_the_digest_a_docker_change_moves_it(docker_engine, checkout_copy, tmp_path,
                                                                        test_ca_bundle):
    inputs_commit = _git(checkout_copy, "rev-parse", "HEAD")
    tags: list[str] = []
    try:
        first = _build(checkout_copy, tmp_path / "ws", test_ca_bundle)
        tags = first["tags"]
        assert _revision(first["digest"]) == inputs_commit

        (checkout_copy / "README.md").write_text((checkout_copy / "README.md").read_text() + "\nA typo fixed.\n")
        readme_commit = _commit_all(checkout_copy, "README only")
        after_readme = _build(checkout_copy, tmp_path / "ws", test_ca_bundle)
        assert readme_commit != inputs_commit
        assert after_readme["digest"] == first["digest"]  # same image: its smoke record still covers it

        _untag(tags)  # the next build moves these tags: the image they leave would stay behind, untagged
        dockerfile = checkout_copy / "docker" / "Dockerfile"
        dockerfile.write_text(dockerfile.read_text() + "# a comment: the Dockerfile is a build input\n")
        docker_commit = _commit_all(checkout_copy, "Dockerfile")
        after_docker = _build(checkout_copy, tmp_path / "ws", test_ca_bundle)
        assert after_docker["digest"] != first["digest"]
        assert _revision(after_docker["digest"]) == docker_commit
    finally:
        _untag(tags)


def _untag(tags: list[str]) -> None:
    """Remove only the tags this test made (its own repository); an image goes with its last tag."""
    if tags:
        subprocess.run(["docker", "image", "rm", *tags], capture_output=True)


def test_an_edit_to_a_build_input_marks_the_label_dirty_and_others_do_not(checkout_copy, monkeypatch):
    from skyrl_stack.image import bake

    monkeypatch.setattr(bake, "project_root", lambda: checkout_copy)
    clean = _git(checkout_copy, "rev-parse", "HEAD")
    (checkout_copy / "README.md").write_text("edited\n")
    (checkout_copy / "tests" / "new_test_file.py").write_text("")
    assert bake.git_revision() == clean
    (checkout_copy / "skyrl_stack" / "new_module.py").write_text("")  # untracked, but the image installs it
    assert bake.git_revision() == f"{clean}-dirty"


def test_a_shallow_clone_does_not_take_its_cut_commit_for_the_last_change(tmp_path, monkeypatch):
    """actions/checkout clones at depth 1: its one commit shows every file as added, so `git log -- INPUTS` names
    HEAD whatever it changed. That is not the last change of the inputs: the label must not say it is (it would
    give a README-only commit a new digest in CI, the very thing the label's rule is for)."""
    from skyrl_stack.image import bake

    origin = tmp_path / "origin"
    (origin / "docker").mkdir(parents=True)
    (origin / "docker" / "Dockerfile").write_text("FROM scratch\n")
    _git(tmp_path, "init", "-q", str(origin))
    inputs_commit = _commit_all(origin, "inputs")
    (origin / "README.md").write_text("docs\n")
    readme_commit = _commit_all(origin, "README only")

    full, shallow = tmp_path / "full", tmp_path / "shallow"
    _git(tmp_path, "clone", "-q", f"file://{origin}", str(full))
    _git(tmp_path, "clone", "-q", "--depth", "1", f"file://{origin}", str(shallow))
    monkeypatch.setattr(bake, "project_root", lambda: full)
    assert bake.git_revision() == inputs_commit
    monkeypatch.setattr(bake, "project_root", lambda: shallow)
    assert bake.git_revision() != readme_commit
    assert bake.git_revision() == "unknown"


def test_the_workflows_builds_check_out_the_history_the_label_reads():
    """Every job that runs `invoke build` clones with fetch-depth 0 (actions/checkout's default depth 1 cuts
    the history git_revision reads: test above)."""
    import yaml

    workflow = yaml.safe_load((REPO_ROOT / ".github" / "workflows" / "image.yml").read_text())
    building = [name for name, job in workflow["jobs"].items()
                if any("invoke build" in (step.get("run") or "") for step in job["steps"])]
    assert building == ["check", "release"]
    for name in building:
        (checkout,) = [step for step in workflow["jobs"][name]["steps"]
                       if step.get("uses", "").startswith("actions/checkout@")]
        assert checkout["with"].get("fetch-depth") == 0, name
