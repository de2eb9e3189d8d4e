"""SkyPilot's MOUNT_CACHED bucket mount, as it behaves on one node, for `invoke launch --cloud local`.

`python3 cached_mount.py mount --remote DIR --path /checkpoints --state DIR`
runs inside a node's container (the local cluster copies this file in, as it
does skylet.py: standard library only). DIR stands for the bucket (a host
directory bind-mounted into every node); /checkpoints is the node's view of it.
Transcribed from SkyPilot 0.14.1:

- `sky/data/mounting_utils.py::get_mount_cached_cmd`: `rclone mount ...
  --daemon --daemon-wait 10 --vfs-cache-mode full --vfs-cache-poll-interval 10s`
  and, from `sky/data/storage.py::MountCachedConfig.to_rclone_flags`,
  `--vfs-write-back 1s`. With rclone's full VFS cache, writes land in a
  node-local cache (`--cache-dir` on the node's disk) and a file is uploaded
  in the background once it has been closed for the write-back time, each node
  uploading its own files. Here: at mount the node's view is filled from the
  bucket (rclone fetches on read: same content), then a daemon uploads every
  file that no process has open and that was last written WRITE_BACK_S ago;
  an upload appears in the bucket whole (written aside, then renamed, as an
  object store's PUT), and a file or folder removed on the node is removed
  from the bucket. What the node has not uploaded is lost with the node.
- `sky/backends/task_codegen.py::get_rclone_flush_script`, appended to every
  `run:` (`build_task_bash_script`): a `run:` that reaches its end waits,
  `sleep 1` then every RCLONE_CACHE_REFRESH_INTERVAL (10 s), until the rclone
  log says "in use 0, to upload 0, uploading 0", printing "skypilot: cached
  mount is still uploading" meanwhile. `flush` here is that loop against the
  daemon's status file. A `run:` that fails (`set -e`) or a node that is
  preempted never gets there.

Not modelled: rclone refreshing the node's listing of files other nodes
uploaded after this node mounted (`--dir-cache-time 10s`); SkyRL's and the
rehearsal's nodes read only their own files and what was there at the start.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

WRITE_BACK_S = 1.0  # MountCachedConfig.to_rclone_flags: --vfs-write-back 1s
POLL_S = 0.25  # how often the daemon looks (rclone reacts to close events; a short poll stands for it)
FLUSH_FIRST_WAIT_S = 1  # get_rclone_flush_script: `sleep 1` before the first check
FLUSH_POLL_S = 10  # get_rclone_flush_script: sleep constants.RCLONE_CACHE_REFRESH_INTERVAL (10) per check
UPLOADS = ".skyrl-stack-uploads"  # in the bucket: uploads in flight, renamed into place when whole


def _walk(root: str) -> tuple[dict[str, tuple[int, int]], set[str]]:
    """{relative file: (size, mtime_ns)} and the set of relative folders under root."""
    files, folders = {}, set()
    for here, dirs, names in os.walk(root):
        rel = os.path.relpath(here, root)
        dirs[:] = [d for d in dirs if not (rel == "." and d == UPLOADS)]
        if rel != ".":
            folders.add(rel)
        for name in names:
            path = os.path.join(here, name)
            try:
                info = os.lstat(path)
            except FileNotFoundError:  # removed meanwhile
                continue
            files[os.path.normpath(os.path.join(rel, name))] = (info.st_size, info.st_mtime_ns)
    return files, folders


def open_files(root: str) -> set[str]:
    """Files under root that some process has open (what rclone counts as "in use"), from /proc."""
    prefix = root.rstrip("/") + "/"
    found = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith(prefix):
                found.add(os.path.relpath(target, root))
    return found


class Uploader:
    """One node's upload loop: the node's view (path) against the bucket (remote)."""

    def __init__(self, remote: str, path: str, state: str, write_back_s: float = WRITE_BACK_S):
        self.remote, self.path, self.state, self.write_back_s = remote, path, state, write_back_s
        self.known: dict[str, tuple[int, int]] = {}  # files the bucket holds as the node has them
        self.folders: set[str] = set()
        self.loops = 0

    def fill(self) -> int:
        """The node's view at mount: what the bucket holds (a fresh node has an empty cache)."""
        os.makedirs(self.path, exist_ok=True)
        files, folders = _walk(self.remote)
        for rel in sorted(folders):
            os.makedirs(os.path.join(self.path, rel), exist_ok=True)
        for rel in files:
            shutil.copy2(os.path.join(self.remote, rel), os.path.join(self.path, rel))
        self.known, self.folders = _walk(self.path)
        return len(files)

    def upload(self, rel: str) -> None:
        source, target = os.path.join(self.path, rel), os.path.join(self.remote, rel)
        aside = os.path.join(self.remote, UPLOADS, f"{os.getpid()}-{self.loops}-{os.path.basename(rel)}")
        os.makedirs(os.path.dirname(aside), exist_ok=True)
        shutil.copy2(source, aside)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.replace(aside, target)
        try:  # leave the bucket as the job wrote it (another node's upload in flight keeps it; a lost race retries)
            os.rmdir(os.path.dirname(aside))
        except OSError:
            pass

    def once(self) -> dict:
        """One pass: upload what is closed and settled, remove what the node removed; the status."""
        now = time.time_ns()
        files, folders = _walk(self.path)
        busy = open_files(self.path)
        pending = 0
        for rel, seen in sorted(files.items()):
            if self.known.get(rel) == seen:
                continue
            if rel in busy or now - seen[1] < self.write_back_s * 1e9:
                pending += 1
                continue
            try:
                self.upload(rel)
            except FileNotFoundError:  # removed while being uploaded
                continue
            self.known[rel] = seen
        for rel in [rel for rel in self.known if rel not in files]:
            try:
                os.remove(os.path.join(self.remote, rel))
            except FileNotFoundError:
                pass
            del self.known[rel]
        for rel in sorted(self.folders - folders, key=lambda r: -r.count(os.sep)):
            try:
                os.rmdir(os.path.join(self.remote, rel))
            except OSError:  # not empty (another node's files) or gone already
                pass
        self.folders = folders
        self.loops += 1
        # time_ns: when this pass began looking, so a flush counts only passes that saw files written before it.
        status = {"loop": self.loops, "time_ns": now, "in_use": len(busy), "to_upload": pending}
        tmp = os.path.join(self.state, "status.json.tmp")
        with open(tmp, "w") as fh:
            json.dump(status, fh)
        os.replace(tmp, os.path.join(self.state, "status.json"))
        return status

    def run_forever(self) -> None:
        while True:
            self.once()
            time.sleep(POLL_S)


def _daemonize() -> bool:
    """Fork a detached daemon (rclone --daemon); True in the daemon, False in the caller."""
    if os.fork() > 0:
        return False
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    return True


def mount(remote: str, path: str, state: str, write_back_s: float) -> int:
    os.makedirs(state, exist_ok=True)
    uploader = Uploader(remote, path, state, write_back_s)
    count = uploader.fill()
    uploader.once()  # the status exists before the caller returns (rclone's --daemon-wait)
    print(f"cached mount: {path} holds the bucket's {count} file(s); uploads {write_back_s:g}s after close", flush=True)
    sys.stdout.flush()
    if _daemonize():
        with open(os.path.join(state, "pid"), "w") as fh:
            fh.write(str(os.getpid()))
        try:
            uploader.run_forever()
        finally:
            os._exit(0)
    return 0


def flush(state: str) -> int:
    """get_rclone_flush_script's wait: until a pass after this one started saw nothing in use or to upload."""
    started = time.time_ns()
    time.sleep(FLUSH_FIRST_WAIT_S)
    while True:
        time.sleep(FLUSH_POLL_S)
        with open(os.path.join(state, "status.json")) as fh:
            status = json.load(fh)
        if status["time_ns"] > started and status["in_use"] == 0 and status["to_upload"] == 0:
            break
        elapsed = (time.time_ns() - started) // 10**9
        print(f"skypilot: cached mount is still uploading (elapsed: {elapsed}s) "
              f"[in use {status['in_use']}, to upload {status['to_upload']}]", flush=True)
    print(f"skypilot: cached mount upload complete (took {(time.time_ns() - started) // 10**9}s)", flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("mount")
    up.add_argument("--remote", required=True)
    up.add_argument("--path", required=True)
    up.add_argument("--state", required=True)
    up.add_argument("--write-back", type=float, default=WRITE_BACK_S)
    down = sub.add_parser("flush")
    down.add_argument("--state", required=True)
    args = parser.parse_args()
    if args.command == "mount":
        return mount(args.remote, args.path, args.state, args.write_back)
    return flush(args.state)


if __name__ == "__main__":
    sys.exit(main())
