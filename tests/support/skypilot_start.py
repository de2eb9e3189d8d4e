"""SkyPilot's own container preparation, driven locally: DockerInitializer.initialize()
(sky/provision/docker_utils.py, SkyPilot 0.14.1) against an image in this machine's engine.

One harness for the SkyPilot-readiness container test (tests/launch/test_skypilot_container.py)
and the SkyPilot-start benchmark (scripts/bench_start.py).

The steps that act on the host rather than on the container or the image are recorded, not
run (each would change this machine); everything else SkyPilot runs for real, through its
own LocalProcessCommandRunner.
"""
from __future__ import annotations

import contextlib
import os
import re
import secrets
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

# The steps of DockerInitializer.initialize() that act on the host (0.14.1). The value is the
# read-only command run instead, if any.
HOST_SIDE = {
    # _check_docker_installed: `id -nG $USER | grep -qw docker || sudo usermod -aG docker $USER; command -v docker`
    "docker group": ("usermod -aG docker", "command -v docker || echo NoExist"),
    # initialize(): apt-installs jq, rewrites /etc/docker/daemon.json (cgroupfs driver), restarts the engine
    "engine config": ("/etc/docker/daemon.json", None),
    # initialize(): rsync ~/.ssh/authorized_keys into sky_container; stop/disable jupyter(hub) services
    "ssh keys and jupyter": ("systemctl stop jupyter", None),
}
def host_safe_runner():
    from sky.utils import command_runner

    from skyrl_stack.launch import skypilot_container

    class HostSafeRunner(command_runner.LocalProcessCommandRunner):
        """SkyPilot's local runner that runs every command on the container or image, and only records
        the host-side ones (HOST_SIDE). SkyPilot's `--cap-add=SYS_RESOURCE` is dropped from its run line
        only where this kernel lacks that capability (skypilot_container.capabilities)."""

        def __init__(self):
            super().__init__()
            self.recorded: list[str] = []
            self.run_lines: list[str] = []

        def run(self, cmd, **kwargs):
            engine_command = re.match(r"^(flock [^']*-c ')?sudo docker ", cmd)
            if engine_command or cmd == "cat /proc/meminfo || true":
                if " run --name " in cmd:
                    if "SYS_RESOURCE" not in skypilot_container.capabilities():
                        cmd = cmd.replace(" --cap-add=SYS_RESOURCE", "")
                    self.run_lines.append(cmd)
                return super().run(cmd, **kwargs)
            for name, (marker, read_only) in HOST_SIDE.items():
                if marker in cmd:
                    self.recorded.append(name)
                    if read_only:
                        return super().run(read_only, **kwargs)
                    return (0, "", "") if kwargs.get("require_outputs") else 0
            raise AssertionError(f"DockerInitializer ran a host-side command this harness does not know: {cmd}")

    return HostSafeRunner()


@dataclass
class Prepared:
    """One DockerInitializer run: its wall time, SkyPilot's answer and what it did."""

    container: str
    seconds: float
    user: str
    recorded: list[str]
    run_lines: list[str]
    log: str
    lock_files: list[str] = field(default_factory=list)


@contextlib.contextmanager
def prepared_container(image: str, run_options: tuple[str, ...] = ("--ipc=host",)):
    """Run SkyPilot's DockerInitializer on `image` (already in the engine, as after SkyPilot's pull);
    yields a Prepared with the container still running, removes it (and SkyPilot's lock file) after."""
    from sky.provision import docker_utils

    name = f"sky_container_bench_{secrets.token_hex(3)}"
    locks = [f"/tmp/{name}.sky.lifecycle.lock"]
    with tempfile.TemporaryDirectory(prefix="skypilot-start-") as work:
        # SkyPilot runs `sudo docker ...`; this machine runs as root without sudo: a pass-through on PATH.
        shim = Path(work) / "bin"
        shim.mkdir()
        (shim / "sudo").write_text('#!/bin/sh\nexec "$@"\n')
        (shim / "sudo").chmod(0o755)
        old_path = os.environ["PATH"]
        os.environ["PATH"] = f"{shim}:{old_path}"
        log = Path(work) / "provision.log"
        runner = host_safe_runner()
        config = {"container_name": name, "image": image, "run_options": list(run_options), "pull_before_run": False}
        try:
            started = time.monotonic()
            user = docker_utils.DockerInitializer(config, runner, str(log)).initialize()
            seconds = time.monotonic() - started
            yield Prepared(name, seconds, user, runner.recorded, runner.run_lines, log.read_text(), locks)
        finally:
            os.environ["PATH"] = old_path
            subprocess.run(["docker", "rm", "-f", name], capture_output=True)
            for lock in locks:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(lock)
