"""The Docker engine: one place that connects to it and explains when it cannot.

docker-py cannot drive BuildKit (docker/docker-py#2230), so builds shell out to
`docker buildx` (and :func:`require_buildx` asks the CLI for the versions it
needs); the library's other engine work (inspect, tag, push, pull, run) goes
through the SDK client returned here. Only the benchmarks (dev/bench.py) read
images with the CLI (`docker image save`, `docker history`), as a user would.
"""
from __future__ import annotations

import re
import shutil
import subprocess

from skyrl_stack.errors import StackError, first_line

# buildx >= 0.10 passes SOURCE_DATE_EPOCH to BuildKit; BuildKit >= 0.13 has the
# exporter's rewrite-timestamp (moby/buildkit docs/build-repro.md). The build is
# only reproducible with both. Docker Engine 26.0 is the first to bundle
# BuildKit 0.13 (its builtin builder, the `docker` driver).
MIN_BUILDX = (0, 10)
MIN_BUILDKIT = (0, 13)
MIN_ENGINE_FOR_BUILDKIT = (26, 0)
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
    builder = subprocess.run(["docker", "buildx", "inspect"], capture_output=True, text=True, check=False)
    check_versions(probe.stdout, builder.stdout, info.stdout.strip())


def version_of(text: str) -> tuple[int, ...] | None:
    """The first 'X.Y[.Z]' in text; None for none or a distribution's placeholder v0.0.0."""
    match = re.search(r"v?(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not match:
        return None
    numbers = tuple(int(n) for n in match.groups() if n is not None)
    return None if not any(numbers) else numbers


def check_versions(buildx_version: str, builder_inspect: str, engine_version: str) -> None:
    """Refuse a buildx or BuildKit too old for reproducible builds, naming the version found.

    `docker buildx inspect` names the BuildKit version; Debian's packages report
    v0.0.0+unknown there, and then the engine's version stands in for it
    (the `docker` driver runs the BuildKit the engine bundles).
    """
    buildx = version_of(buildx_version.split(None, 1)[-1]) if buildx_version.strip() else None
    if buildx is not None and buildx < MIN_BUILDX:
        raise StackError(f"docker buildx {'.'.join(map(str, buildx))} is too old: the build needs >= "
                         f"{'.'.join(map(str, MIN_BUILDX))} (SOURCE_DATE_EPOCH)", hint="upgrade the buildx plugin")
    line = next((l for l in builder_inspect.splitlines() if l.strip().startswith("BuildKit version:")), "")
    buildkit = version_of(line.split(":", 1)[-1]) if line else None
    if buildkit is not None:
        if buildkit < MIN_BUILDKIT:
            raise StackError(f"BuildKit {'.'.join(map(str, buildkit))} is too old: the build needs >= "
                             f"{'.'.join(map(str, MIN_BUILDKIT))} (rewrite-timestamp for reproducible images)",
                             hint="upgrade Docker Engine to >= 26, or use a newer buildx builder")
        return
    engine = version_of(engine_version)
    if engine is not None and engine < MIN_ENGINE_FOR_BUILDKIT:
        raise StackError(f"Docker Engine {engine_version} bundles a BuildKit older than "
                         f"{'.'.join(map(str, MIN_BUILDKIT))} (rewrite-timestamp for reproducible images)",
                         hint="upgrade Docker Engine to >= 26")
