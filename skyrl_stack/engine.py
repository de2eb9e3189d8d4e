"""The Docker engine: one place that connects to it and explains when it cannot.

docker-py cannot drive BuildKit (docker/docker-py#2230), so builds shell out to
`docker buildx` (and :func:`require_buildx` asks the CLI for the versions it
needs); the library's other engine work (inspect, tag, push, pull, run) goes
through the SDK client returned here. Only the benchmarks (dev/bench.py) read
images with the CLI (`docker image save`, `docker history`), as a user would.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass

from skyrl_stack.errors import StackError, first_line
from skyrl_stack.reporter import step

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


def require_buildx() -> str:
    """BuildKit through the buildx CLI plugin, with a daemon behind it; returns the builder to
    build with (engine_builder: the engine's own, whatever builder is active)."""
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
    builder = engine_builder()
    check_versions(probe.stdout, builder.inspect, info.stdout.strip())
    return builder.name


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
                             hint="upgrade Docker Engine to >= 26: the build runs the engine's own BuildKit "
                                  "(engine_builder), so another builder would not be used")
        return
    engine = version_of(engine_version)
    if engine is not None and engine < MIN_ENGINE_FOR_BUILDKIT:
        raise StackError(f"Docker Engine {engine_version} bundles a BuildKit older than "
                         f"{'.'.join(map(str, MIN_BUILDKIT))} (rewrite-timestamp for reproducible images)",
                         hint="upgrade Docker Engine to >= 26")


# Where buildx reads the active builder from, in its order: the --builder flag (the build
# always passes one), BUILDX_BUILDER, then `docker buildx use` (~/.docker/buildx/current).
BUILDER_ENV = "BUILDX_BUILDER"
# The only buildx driver whose `image` export lands in the engine's image store: it is the
# BuildKit inside the engine. With docker-container, kubernetes or remote, an image export
# without push stays inside the builder (Docker docs, "Build drivers").
ENGINE_DRIVER = "docker"


@dataclass(frozen=True)
class Builder:
    name: str
    driver: str
    inspect: str  # `docker buildx inspect NAME` as printed (check_versions reads its BuildKit version)


def inspect_builder(name: str | None = None) -> Builder | None:
    """`docker buildx inspect [NAME]` (no name: the active builder); None when buildx knows no such builder."""
    result = subprocess.run(["docker", "buildx", "inspect", *([name] if name else [])], capture_output=True,
                            text=True, check=False)
    if result.returncode != 0:
        return None
    fields = dict(line.split(":", 1) for line in result.stdout.splitlines()[:3] if ":" in line)
    return Builder(fields.get("Name", name or "").strip(), fields.get("Driver", "").strip(), result.stdout)


def engine_builder() -> Builder:
    """The engine's own builder (driver `docker`), which the build names with --builder.

    The flow after the build (digest check, tags, smoke, the incremental push of
    only new layers) reads the image from the engine's store, and only this
    builder exports there itself. Another active builder (BUILDX_BUILDER, `docker
    buildx use`, docker/setup-buildx-action's docker-container one) would keep the
    image inside it; it is passed over, in one line. buildx names the engine's
    builder after the Docker context (`docker context show`: `default` for
    DOCKER_HOST or the local socket)."""
    context = subprocess.run(["docker", "context", "show"], capture_output=True, text=True, check=False)
    name = context.stdout.strip() or "default"
    own = inspect_builder(name)
    if own is None or own.driver != ENGINE_DRIVER:
        found = "docker buildx knows no builder of that name" if own is None else f"its driver is {own.driver}"
        raise StackError(f"cannot build with the engine's own builder {name!r} (Docker context {name}): {found}",
                         hint="the build exports into the engine's image store, which only a builder with "
                              "driver `docker` does: check `docker buildx ls` and `docker context show`")
    active = inspect_builder()
    if active is None:
        chosen_by = (f"{BUILDER_ENV}={os.environ[BUILDER_ENV]}" if os.environ.get(BUILDER_ENV)
                     else "the builder `docker buildx use` chose")
        step(f"{chosen_by} names no builder docker buildx knows; building with the engine's own builder {name!r}")
    elif active.name != own.name:
        step(f"the active builder {active.name!r} (driver {active.driver or 'unknown'}) does not store images in "
             f"this engine; building with the engine's own builder {name!r}, which does")
    return own
