"""What SkyPilot's skylet does to a job's processes on a node, for `invoke launch --cloud local`.

`python3 skylet.py --pidfile FILE SCRIPT` runs inside a node's container (the
local cluster copies this file in: standard library only, since the image has
no psutil). It is a transcription of SkyPilot's rule (pins.toml [skypilot]
tested range; read at 0.14.1 and 0.10.5, which share this timing):

- `sky/skylet/log_lib.py::run_bash_command_with_log` / `run_with_log`: the job's
  script runs as `/bin/bash -i SCRIPT` through a shell (`shell=True`) in a new
  session, output merged and streamed, `bash -i`'s two terminal warnings skipped;
  `sky/utils/subprocess_utils.py::kill_process_daemon` starts
  `sky/skylet/subprocess_daemon.py` beside it with the children seen at start.
- `subprocess_daemon.main`: while the job's process and its parent (the Ray
  task that runs it) are alive, every second it replaces its list with the job's
  descendants (`children(recursive=True)`) when that list is not empty.
- `subprocess_daemon.kill_process_tree`: once the job's process is gone, or
  its parent is (`sky cancel`, or a failed node making the job cancel the
  others: `ray.cancel(force=True)` in the job's `get_or_fail`), it SIGTERMs the
  job's process and every process of the last list, sleeps 30 s, then SIGKILLs them.

So a process that was in the job's tree at the last poll dies with the job even
if it has daemonized since (a raylet started by `ray start` just before `run:`
ends); one that left the tree at least a poll before the end survives.

SIGTERM to this process stands for the parent dying (a cancelled job): the tree
is killed the same way and the exit code is SkyPilot's CANCELLED_RETURN_CODE.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time

POLL_S = 1.0  # subprocess_daemon.main: time.sleep(1) between refreshes
GRACE_S = 30.0  # kill_process_tree: time.sleep(30) between SIGTERM and SIGKILL
CANCELLED_RETURN_CODE = 137  # the job driver's get_or_fail (task_codegen / cloud_vm_ray_backend)
SKIP_LINES = ("bash: cannot set terminal process group", "bash: no job control in this shell")


def _stat(pid: int):
    """(parent pid, start time) of a process, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), int(fields[19])  # ppid, starttime (proc(5) fields 4 and 22)


def descendants(root: int) -> list[tuple[int, int]]:
    """The processes below `root` as (pid, start time): psutil's children(recursive=True) from /proc."""
    children: dict[int, list[tuple[int, int]]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = _stat(int(name))
            if stat:
                children.setdefault(stat[0], []).append((int(name), stat[1]))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child[0])
    return found


def signal_all(processes, signum) -> None:
    """Signal each process that is still the one seen (a reused pid is left alone, as psutil does)."""
    for pid, started in processes:
        stat = _stat(pid)
        if stat and stat[1] == started:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass


def kill_later(processes) -> None:
    """SIGKILL after the grace period from a detached process, so the job's end is reported now."""
    if os.fork() > 0:
        return
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    time.sleep(GRACE_S)
    signal_all(processes, signal.SIGKILL)
    os._exit(0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pidfile", required=True, help="where to write this process's pid (SIGTERM it to cancel)")
    parser.add_argument("script")
    args = parser.parse_args()

    cancelled = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: cancelled.set())
    with open(args.pidfile, "w") as fh:
        fh.write(f"{os.getpid()}\n")

    proc = subprocess.Popen(f"/bin/bash -i {args.script}", shell=True, start_new_session=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    me = _stat(proc.pid)
    seen = descendants(proc.pid)  # kill_process_daemon's --initial-children
    done = threading.Event()

    def watch():
        nonlocal seen
        while not done.is_set() and not cancelled.is_set():
            now = descendants(proc.pid)
            if now:
                seen = now
            time.sleep(POLL_S)
        targets = ([(proc.pid, me[1])] if me else []) + seen
        signal_all(targets, signal.SIGTERM)
        kill_later(targets)

    watcher = threading.Thread(target=watch)
    watcher.start()
    out = sys.stdout.buffer
    for line in iter(proc.stdout.readline, b""):
        if not line.decode(errors="replace").startswith(SKIP_LINES):
            out.write(line)
            out.flush()
    code = proc.wait()
    done.set()
    watcher.join()
    return CANCELLED_RETURN_CODE if cancelled.is_set() else code


if __name__ == "__main__":
    sys.exit(main())
