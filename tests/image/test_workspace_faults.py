"""`invoke build` on a workspace disk that is full or read-only: one line, the old records intact.

For real: the workspace (SKYRL_STACK_WORKSPACE) is a 64 kB tmpfs filled to the
last page, or a read-only bind mount, unmounted after (the tests run as root, as
.ci/run does; a mount that fails fails the test).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from skyrl_stack.errors import StackError
from skyrl_stack.image.records import write_json_atomic
from tests.conftest import TEST_BASE_IMAGE, TEST_REPOSITORY

INVOKE = str(Path(sys.executable).with_name("invoke"))
PAGE = 4096


@contextlib.contextmanager
def mounted(target: Path, *how: str):
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", *how, str(target)], check=True, capture_output=True)
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True, capture_output=True)


def fill(disk: Path, leave_pages: int = 0) -> None:
    """Fill the filesystem with one-page files until it refuses, then free `leave_pages` of them."""
    fillers = disk / "fillers"
    fillers.mkdir(exist_ok=True)
    made = []
    with contextlib.suppress(OSError):
        while True:
            path = fillers / str(len(made))
            made.append(path)
            path.write_bytes(b"x" * PAGE)
    for path in made[-1 - leave_pages:]:
        path.unlink(missing_ok=True)
    with pytest.raises(OSError, match="No space left on device"):  # the last one did not fit: the disk is full to the page
        (fillers / "probe").write_bytes(b"x" * PAGE * (leave_pages + 1))
    (fillers / "probe").unlink(missing_ok=True)


def snapshot(state: Path) -> dict[str, bytes]:
    return {str(p.relative_to(state)): p.read_bytes() for p in sorted(state.rglob("*")) if p.is_file()}


def invoke_build(workspace: Path, ca_bundle: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([INVOKE, "build", "--variant", "rehearsal", "--repository", TEST_REPOSITORY, "--base-image",
                           TEST_BASE_IMAGE, "--ca-bundle", str(ca_bundle), "--progress", "quiet", *extra],
                          env=dict(os.environ, SKYRL_STACK_WORKSPACE=str(workspace)), capture_output=True, text=True)


def assert_one_line(result: subprocess.CompletedProcess, message: str) -> None:
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    error, hint = result.stderr.strip().splitlines()[-2:]
    assert error == f"error: {message}"
    assert hint.startswith("hint: free space on or make writable the workspace") and "is intact" in hint


def with_records(workspace: Path, rehearsal_image) -> Path:
    """The session build's records, as a previous `invoke build` leaves them in this workspace."""
    state = workspace / ".skyrl-stack"
    shutil.copytree(rehearsal_image.state_dir / "builds", state / "builds")
    (state / "build").mkdir()
    (state / "build" / ".lock").touch()  # a finished build leaves its lock file empty
    return state


@pytest.mark.container
@pytest.mark.reliability("fault", "`invoke build` with the workspace disk full (a 64 kB tmpfs filled to the page)",
                         "`error: cannot write ...: No space left on device`, no traceback; old records intact")
def test_a_full_workspace_disk_is_one_line_and_keeps_the_old_records(docker_engine, rehearsal_image, test_ca_bundle,
                                                                     tmp_path):
    with mounted(tmp_path / "disk", "-t", "tmpfs", "-o", "size=64k", "tmpfs") as disk:
        state = with_records(disk, rehearsal_image)
        before = snapshot(state)
        fill(disk)
        result = invoke_build(disk, test_ca_bundle)
        assert_one_line(result, f"cannot write {state / 'build' / '.lock'}: No space left on device")
        assert snapshot(state) == before


@pytest.mark.container
def test_a_bake_definition_the_disk_refuses_is_one_line(docker_engine, rehearsal_image, test_ca_bundle, tmp_path):
    """Room for the lock's pid and not for the bake definition (--no-cache: past the up-to-date check)."""
    with mounted(tmp_path / "disk", "-t", "tmpfs", "-o", "size=64k", "tmpfs") as disk:
        state = with_records(disk, rehearsal_image)
        before = snapshot(state)
        fill(disk, leave_pages=1)
        result = invoke_build(disk, test_ca_bundle, "--no-cache")
        assert_one_line(result, f"cannot write {state / 'build' / 'bake.json'}: No space left on device")
        assert snapshot(state) == before  # no bake.json, no half-written temp file beside it, records as they were


@pytest.mark.container
@pytest.mark.reliability("fault", "`invoke build` with a read-only workspace (bind mount)",
                         "`error: cannot write ...: Read-only file system`, no traceback; old records intact")
def test_a_read_only_workspace_is_one_line(docker_engine, rehearsal_image, test_ca_bundle, tmp_path):
    source = tmp_path / "source"
    state = with_records(source, rehearsal_image)
    with mounted(tmp_path / "ro", "--bind", str(source)) as ro:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True, capture_output=True)
        result = invoke_build(ro, test_ca_bundle)
    assert_one_line(result, f"cannot write {tmp_path / 'ro' / '.skyrl-stack' / 'build' / '.lock'}: Read-only file system")
    assert snapshot(state) == snapshot(source / ".skyrl-stack")


def test_an_atomic_write_the_disk_refuses_keeps_the_old_file(tmp_path):
    with mounted(tmp_path / "disk", "-t", "tmpfs", "-o", "size=64k", "tmpfs") as disk:
        record = disk / "record.json"
        write_json_atomic(record, {"old": True})
        fill(disk)
        with pytest.raises(StackError, match=rf"^cannot write {record}: No space left on device$"):
            write_json_atomic(record, {"new": "x" * 2 * PAGE})
        assert record.read_text() == '{\n  "old": true\n}\n'
        assert sorted(p.name for p in disk.iterdir()) == ["fillers", "record.json"]  # no temp file left
