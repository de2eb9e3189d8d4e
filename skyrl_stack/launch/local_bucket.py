"""`--cloud local --bucket /abs/dir`: a host directory as the bucket, mounted into every node like SkyPilot's.

The rendered task mounts it at BUCKET_MOUNT with `mode: MOUNT_CACHED`, as a
cloud task mounts its bucket. The local cluster bind-mounts the host directory
into each node at a hidden path (REMOTE_ROOT, "the bucket") and runs
cached_mount.py there, which gives the node SkyPilot's MOUNT_CACHED behaviour
at BUCKET_MOUNT (a node-local cache, uploads after close, lost with the node);
the task's `run:` ends with SkyPilot's flush (flush_script), as
`sky/backends/task_codegen.py::build_task_bash_script` appends it.
"""
from __future__ import annotations

import os
import shlex
from pathlib import Path

from skyrl_stack.errors import StackError
from skyrl_stack.launch import cached_mount

CACHED_MOUNT_SOURCE = Path(cached_mount.__file__)
CACHED_MOUNT_PATH = "/tmp/skyrl-stack-cached-mount.py"
REMOTE_ROOT = "/mnt/skyrl-stack-bucket"  # where "the bucket" (the host directory) is in a node
STATE_ROOT = "/tmp/skyrl-stack-mount"  # per mount: the uploader's status file (node-local, like rclone's log)
CACHED = "MOUNT_CACHED"


def parse_local_bucket(value: str) -> str:
    """--bucket with --cloud local: an absolute host directory that exists or can be created."""
    hint = "with --cloud local, --bucket is an absolute directory on this machine, e.g. --bucket $PWD/.skyrl-stack/local-bucket"
    if "://" in value:
        raise StackError(f"bad --bucket {value!r}: --cloud local mounts a host directory, not a cloud bucket", hint=hint)
    path = Path(value)
    if not path.is_absolute():
        raise StackError(f"bad --bucket {value!r}: not an absolute path", hint=hint)
    if path.exists() and not path.is_dir():
        raise StackError(f"bad --bucket {value!r}: it exists and is not a directory", hint=hint)
    existing = next(parent for parent in (path, *path.parents) if parent.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise StackError(f"bad --bucket {value!r}: {existing} is not a directory this user can write to", hint=hint)
    return str(path)


def cached_mounts(config: dict) -> dict[str, str]:
    """{mount path in the node: host directory} for the task's MOUNT_CACHED mounts of a host directory."""
    mounts = {}
    for target, mount in (config.get("file_mounts") or {}).items():
        if isinstance(mount, dict) and mount.get("mode") == CACHED and os.path.isabs(str(mount.get("source", ""))):
            mounts[target] = str(mount["source"])
    return mounts


def _remote(index: int) -> str:
    return f"{REMOTE_ROOT}-{index}"


def volumes(mounts: dict[str, str]) -> dict:
    """The docker volumes that put each host directory into a node as its bucket."""
    return {source: {"bind": _remote(index), "mode": "rw"} for index, source in enumerate(mounts.values())}


def prepare(mounts: dict[str, str]) -> None:
    """Create the host directories (parse_local_bucket checked what it can; root passes os.access
    checks that mkdir then fails, e.g. under /proc), one line if one cannot be made."""
    for source in mounts.values():
        try:
            Path(source).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StackError(f"bad --bucket {source!r}: cannot create it: {exc.strerror or exc}",
                             hint="with --cloud local, --bucket is a directory this user can create, "
                                  "e.g. --bucket $PWD/.skyrl-stack/local-bucket") from None


def mount_in(container, mounts: dict[str, str], put_file) -> None:
    """Mount every bucket in one node before its job starts (rclone mount --daemon --daemon-wait)."""
    put_file(container, CACHED_MOUNT_PATH, CACHED_MOUNT_SOURCE.read_bytes())
    for index, target in enumerate(mounts):
        command = ["python3", CACHED_MOUNT_PATH, "mount", "--remote", _remote(index), "--path", target,
                   "--state", f"{STATE_ROOT}-{index}"]
        code, output = container.exec_run(command)
        if code != 0:
            raise StackError(f"cannot mount the local bucket at {target} in {container.name}: "
                             f"{output.decode(errors='replace').strip()[-300:]}", hint="check the --bucket directory")


def flush_script(mounts: dict[str, str]) -> str:
    """What SkyPilot appends to `run:` (task_codegen.get_rclone_flush_script): on a normal end, wait for uploads."""
    if not mounts:
        return ""
    waits = "\n".join(f"python3 {CACHED_MOUNT_PATH} flush --state {shlex.quote(f'{STATE_ROOT}-{index}')}"
                      for index in range(len(mounts)))
    return f"\n__skypilot_user_exit_code=$?\n{waits}\nexit $__skypilot_user_exit_code\n"


def local_run_state(bucket: str, run: str) -> tuple[str, str]:
    """run_paths' check for a host-directory bucket: ('empty' | 'has-checkpoints', why), by SkyRL's names."""
    folder = Path(bucket) / run
    held = sorted(p.name for p in folder.iterdir() if p.name == "latest_ckpt_global_step.txt"
                  or p.name.startswith("global_step_")) if folder.is_dir() else []
    if held:
        return "has-checkpoints", f"{folder} holds {', '.join(held[:3])}"
    return "empty", f"{folder} holds no checkpoints"
