"""The local cloud's MOUNT_CACHED model (skyrl_stack/launch/cached_mount.py), run here as in a node.

Each "node" is a directory with its own uploader process against one "bucket" directory, exactly
the program the local cluster runs in each container. The upload cut by a preemption is the
case SkyPilot's flush cannot cover (sky/backends/task_codegen.py::get_rclone_flush_script runs
only on a normal exit); skyrl-ckpt-guard then makes the resume load a complete checkpoint, and
SkyRL's own validate_consistency_for_latest_checkpoint accepts the result.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from skyrl_stack.launch import cached_mount, local_bucket
from skyrl_stack.errors import StackError
from tests.support.paths import REPO_ROOT
from tests.support.skyrl_checkpoints import save_step, skyrl_accepts

SCRIPT = Path(cached_mount.__file__)
GUARD = REPO_ROOT / "docker" / "scripts" / "bin" / "skyrl-ckpt-guard"


class Node:
    """A node's mount: its view, its uploader daemon (by pid), its state."""

    def __init__(self, root: Path, bucket: Path, name: str, write_back: float | None = None):
        self.view, self.state = root / name / "checkpoints", root / name / "state"
        command = [sys.executable, str(SCRIPT), "mount", "--remote", str(bucket), "--path", str(self.view),
                   "--state", str(self.state)]
        if write_back is not None:
            command += ["--write-back", str(write_back)]
        out = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        self.mounted = out.stdout
        deadline = time.monotonic() + 10
        while not (self.state / "pid").exists():
            assert time.monotonic() < deadline, "the uploader never started"
            time.sleep(0.05)
        self.pid = int((self.state / "pid").read_text())

    def status(self) -> dict:
        import json

        return json.loads((self.state / "status.json").read_text())

    def settle(self, timeout: float = 20) -> None:
        """Wait until a pass of the uploader saw nothing left to upload (the flush's condition, without its sleeps)."""
        start = time.time_ns()
        deadline = time.monotonic() + timeout
        while True:
            status = self.status()
            if status["time_ns"] > start and status["to_upload"] == 0 and status["in_use"] == 0:
                return
            assert time.monotonic() < deadline, status
            time.sleep(0.1)

    def preempt(self) -> None:
        os.kill(self.pid, signal.SIGKILL)

    def stop(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def nodes(tmp_path):
    started = []

    def start(name, **kwargs):
        node = Node(tmp_path, tmp_path / "bucket", name, **kwargs)
        started.append(node)
        return node

    (tmp_path / "bucket").mkdir()
    yield start
    for node in started:
        node.stop()


def test_a_closed_file_is_uploaded_after_the_write_back_and_an_open_one_is_not(nodes, tmp_path):
    node = nodes("node0")
    bucket = tmp_path / "bucket"
    held = open(node.view / "being-written.pt", "wb")
    held.write(b"x" * 1000)
    held.flush()
    (node.view / "run" / "global_step_5").mkdir(parents=True)
    (node.view / "run" / "global_step_5" / "trainer_state.pt").write_bytes(b"state")
    deadline = time.monotonic() + 20
    while not (bucket / "run" / "global_step_5" / "trainer_state.pt").exists():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert not (bucket / "being-written.pt").exists() and node.status()["in_use"] == 1
    held.close()
    node.settle()
    assert (bucket / "being-written.pt").read_bytes() == b"x" * 1000
    # a removal on the node is a removal in the bucket (SkyRL's cleanup_old_checkpoints through the mount)
    import shutil

    shutil.rmtree(node.view / "run" / "global_step_5")
    node.settle()
    assert not (bucket / "run" / "global_step_5").exists()


def test_a_new_node_sees_what_the_bucket_holds_and_loses_what_it_never_uploaded(nodes, tmp_path):
    first = nodes("node0-old")
    (first.view / "kept.txt").write_text("uploaded")
    first.settle()
    (first.view / "late.txt").write_text("written just before the preemption")
    first.preempt()
    second = nodes("node0-new")
    assert "holds the bucket's 1 file(s)" in second.mounted
    assert sorted(p.name for p in second.view.iterdir()) == ["kept.txt"]


def test_flush_waits_for_uploads_as_skypilots_flush_does(nodes):
    node = nodes("node0")
    (node.view / "pointer.txt").write_text("10")
    start = time.monotonic()
    out = subprocess.run([sys.executable, str(SCRIPT), "flush", "--state", str(node.state)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "skypilot: cached mount upload complete" in out.stdout
    # get_rclone_flush_script: `sleep 1`, then a check every RCLONE_CACHE_REFRESH_INTERVAL (10 s)
    assert time.monotonic() - start >= cached_mount.FLUSH_FIRST_WAIT_S + cached_mount.FLUSH_POLL_S
    assert (Path(node.state).parent.parent / "bucket" / "pointer.txt").read_text() == "10"


@pytest.mark.reliability("fault", "preemption cuts a worker's checkpoint upload after the head's pointer landed",
                         "`skyrl-ckpt-guard` falls back to the newest complete step; SkyRL's own consistency check "
                         "accepts it")
def test_a_preemption_that_cuts_a_worker_upload_never_makes_the_resume_load_it(nodes, tmp_path):
    """Rank 1's node is preempted while its step-10 shards are still uploading (a shard of GBs takes
    longer than the head's few bytes: stood for by stopping its uploader, SIGSTOP, before it writes
    them); the head's state and pointer for step 10 are uploaded. The bucket then names a step it
    does not hold whole: SkyRL would fail to load it on every restart. The guard, run on the new head,
    falls back to step 5, and SkyRL's own consistency check accepts what it leaves."""
    head, worker = nodes("node0"), nodes("node1")
    run_on = {head: head.view / "r1", worker: worker.view / "r1"}

    def checkpoint(step):
        # each node writes only its own rank's shards; the head also the state files and, last, the pointer
        save_step(run_on[worker], step, world=2, lost_ranks=(0,), pointer=False)
        for name in ("data.pt", "trainer_state.pt"):
            (run_on[worker] / f"global_step_{step}" / name).unlink()
        save_step(run_on[head], step, world=2, lost_ranks=(1,))

    checkpoint(5)
    head.settle()
    worker.settle()
    os.kill(worker.pid, signal.SIGSTOP)  # its next upload will not be done in time
    checkpoint(10)
    head.settle()
    worker.preempt()
    bucket_run = tmp_path / "bucket" / "r1"
    assert (bucket_run / "latest_ckpt_global_step.txt").read_text() == "10"
    assert not (bucket_run / "global_step_10" / "policy" / "model_world_size_2_rank_1.pt").exists()
    assert (bucket_run / "global_step_5" / "policy" / "model_world_size_2_rank_1.pt").exists()

    new_head = nodes("node0-after-recovery")
    out = subprocess.run([sys.executable, str(GUARD), str(new_head.view / "r1")], capture_output=True, text=True)
    assert "global_step_10 is incomplete (policy/ world size 2 lacks model rank 1, optim rank 1, extra_state rank 1)" \
        in out.stdout, out.stdout
    assert "pointer rewritten to 5" in out.stdout
    new_head.settle()
    assert (bucket_run / "latest_ckpt_global_step.txt").read_text() == "5"
    assert skyrl_accepts(bucket_run, interval=5) == {"dirs": ["global_step_5"], "error": None, "step": 5}


@pytest.mark.parametrize("value, message", [
    ("s3://b/run", "mounts a host directory, not a cloud bucket"),
    ("relative/dir", "not an absolute path"),
    ("/etc/hostname", "it exists and is not a directory"),
])
def test_a_local_bucket_must_be_an_absolute_directory(value, message):
    with pytest.raises(StackError, match=message):
        local_bucket.parse_local_bucket(value)


def test_a_local_bucket_that_does_not_exist_yet_is_accepted_and_made_at_launch(tmp_path):
    target = tmp_path / "a" / "b"
    assert local_bucket.parse_local_bucket(str(target)) == str(target) and not target.exists()
    local_bucket.prepare({"/checkpoints": str(target)})
    assert target.is_dir()


def test_a_local_bucket_that_cannot_be_made_is_one_line():
    # /proc takes no new folders, not even root's, whom parse_local_bucket's os.access check lets through.
    with pytest.raises(StackError, match=r"bad --bucket '/proc/skyrl-stack-no-such/ckpt': cannot create it"):
        local_bucket.prepare({"/checkpoints": "/proc/skyrl-stack-no-such/ckpt"})
