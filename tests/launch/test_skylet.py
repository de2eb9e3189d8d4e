"""skyrl_stack/launch/skylet.py does to a job's processes what SkyPilot's own skylet code does.

No mocks, no containers: real processes on this machine, each scenario run once
under SkyPilot's real `sky/skylet/subprocess_daemon.py` (the installed SkyPilot,
started as `subprocess_utils.kill_process_daemon` starts it, beside a job shell
started as `log_lib.run_with_log` starts it) and once under our transcription.
The job starts a process that daemonizes the way `ray start` leaves a raylet
behind (its parent lives ~2 s, then exits and the process is reparented), then
the job's shell either ends at once or lingers for a few polls.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from skyrl_stack.launch import skylet

# The "ray start": fork a long-lived process into its own session, write its pid, live 2 s, exit.
DAEMONIZER = (
    "import os, sys, time\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "    os.setsid(); null = os.open(os.devnull, os.O_RDWR)\n"
    "    [os.dup2(null, fd) for fd in (0, 1, 2)]\n"  # as Ray's daemons write to log files, not the job's pipe
    "    time.sleep(300); os._exit(0)\n"
    "open(sys.argv[1], 'w').write(str(pid))\n"
    "time.sleep(2)\n"
)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _job(tmp_path: Path, linger_s: float) -> tuple[Path, Path]:
    pidfile = tmp_path / "daemon.pid"
    script = tmp_path / "job.sh"
    (tmp_path / "daemonizer.py").write_text(DAEMONIZER)
    script.write_text(f"{sys.executable} {tmp_path / 'daemonizer.py'} {pidfile}\nsleep {linger_s}\necho job-done\n")
    return script, pidfile


def _kill_stragglers(marker: str) -> None:
    """End the killers that wait out the 30 s grace (ours and SkyPilot's), found by their own command line."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    os.kill(int(entry.name), signal.SIGKILL)
            except OSError:
                pass


def _under_skypilot(script: Path) -> subprocess.Popen:
    from sky.skylet import subprocess_daemon

    # log_lib.run_with_log: `/bin/bash -i SCRIPT` through a shell, in a new session.
    job = subprocess.Popen(f"/bin/bash -i {script}", shell=True, start_new_session=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    # subprocess_utils.kill_process_daemon: the daemon with this process as the parent.
    subprocess.Popen([sys.executable, subprocess_daemon.__file__, "--parent-pid", str(os.getpid()),
                      "--proc-pid", str(job.pid), "--initial-children", ""],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    return job


def _under_ours(script: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, skylet.__file__, "--pidfile", f"{script}.pid", str(script)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("runner", [_under_skypilot, _under_ours], ids=["skypilot-0.14.1", "ours"])
@pytest.mark.parametrize("linger_s, survives", [(0, False), (3, True)], ids=["job-ends-at-once", "job-lingers-3s"])
def test_a_daemonized_child_dies_with_the_job_only_if_the_last_poll_saw_it(runner, linger_s, survives, tmp_path):
    script, pidfile = _job(tmp_path, linger_s)
    job = runner(script)
    try:
        output = job.communicate(timeout=60)[0].decode()
        assert "job-done" in output
        daemon = int(pidfile.read_text())
        time.sleep(skylet.POLL_S * 2)  # SkyPilot's daemon notices the end within a poll, then SIGTERMs
        assert _alive(daemon) is survives
    finally:
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass
        _kill_stragglers(f"--proc-pid {job.pid}")
        _kill_stragglers(f"{script}.pid")


def test_skipped_lines_and_timing_are_skypilots():
    """The constants our transcription hard-codes, read back from SkyPilot's source."""
    import inspect

    from sky.skylet import log_lib, subprocess_daemon

    daemon = inspect.getsource(subprocess_daemon)
    assert "time.sleep(1)" in inspect.getsource(subprocess_daemon.main) and skylet.POLL_S == 1
    assert "time.sleep(30)" in inspect.getsource(subprocess_daemon.kill_process_tree) and skylet.GRACE_S == 30
    assert "children(recursive=True)" in daemon
    run_with_log = inspect.getsource(log_lib.run_with_log)
    assert all(line in run_with_log for line in skylet.SKIP_LINES)
    assert "start_new_session=True" in run_with_log
    assert "/bin/bash -i {script_path}" in inspect.getsource(log_lib.run_bash_command_with_log)


def test_a_cancelled_job_has_its_tree_terminated_and_reports_137(tmp_path):
    """SIGTERM to skylet.py stands for SkyPilot cancelling the node's task (get_or_fail's ray.cancel)."""
    script = tmp_path / "job.sh"
    marker = tmp_path / "child.pid"
    script.write_text(f"sleep 300 & echo $! > {marker}\nwait\necho after-wait\n")
    job = _under_ours(script)
    try:
        pidfile = Path(f"{script}.pid")
        while not (marker.exists() and marker.read_text().strip() and pidfile.exists()):
            time.sleep(0.1)
        time.sleep(skylet.POLL_S * 1.5)  # a poll has seen the sleep
        os.kill(int(pidfile.read_text()), signal.SIGTERM)
        output = job.communicate(timeout=60)[0].decode()
        assert job.returncode == skylet.CANCELLED_RETURN_CODE == 137
        assert "after-wait" in output  # bash -i ignores SIGTERM (as under SkyPilot); its child did not
        assert not _alive(int(marker.read_text()))
    finally:
        job.kill()
        _kill_stragglers(f"{script}.pid")
