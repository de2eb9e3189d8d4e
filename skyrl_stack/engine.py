"""The Docker engine: one place that connects to it and explains when it cannot.

docker-py cannot drive BuildKit (docker/docker-py#2230), so builds shell out to
`docker buildx`; everything else (load checks, tag, push, inspect, run) goes
through the SDK client returned here.
"""
from __future__ import annotations

import shutil
import subprocess

from skyrl_stack.errors import StackError, first_line

DAEMON_HINT = "start the Docker engine (e.g. `dockerd &` or `systemctl start docker`), or set DOCKER_HOST"


def client():
    """A docker SDK client that has answered a ping, or a StackError saying why not."""
    import docker
    from docker.errors import DockerException

    try:
        api = docker.from_env(timeout=600)
        api.ping()
    except DockerException as exc:
        raise StackError(f"cannot reach the Docker daemon: {first_line(exc)}", hint=DAEMON_HINT) from None
    return api


def require_buildx() -> None:
    """BuildKit through the buildx CLI plugin, with a daemon behind it."""
    if shutil.which("docker") is None:
        raise StackError("the docker CLI is not on PATH", hint="install Docker (the CLI and the buildx plugin)")
    probe = subprocess.run(["docker", "buildx", "version"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        raise StackError(
            "docker buildx is not available: " + first_line(probe.stderr or probe.stdout),
            hint="install the buildx plugin (Debian: docker-buildx; elsewhere: Docker Desktop or docker-buildx-plugin)",
        )
    info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, check=False)
    if info.returncode != 0 or not info.stdout.strip():
        raise StackError("cannot reach the Docker daemon: " + first_line(info.stderr), hint=DAEMON_HINT)
