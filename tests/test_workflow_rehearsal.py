"""The release job of .github/workflows/image.yml, rehearsed here: its `invoke` lines, in order, flags unchanged.

The command lines are read from the workflow file, so the rehearsal cannot
drift from it. What differs from GitHub, and only that:
- the registry: IMAGE_REPOSITORY names a registry process on a free port
  (tests/support/registry.py) instead of GHCR, and its login is a real
  `docker login` into a temporary DOCKER_CONFIG, as docker/login-action does;
- the matrix value: VARIANT is `rehearsal`, the variant that builds offline
  (vllm and sglang need Docker Hub and GitHub for their base image and wheels);
- where it runs: a temporary workspace (SKYRL_STACK_WORKSPACE and the current
  directory) instead of the checkout, whose records stay untouched;
- the active buildx builder is one of another driver (BUILDX_BUILDER), as on a
  runner where a docker/setup-buildx-action step made its docker-container
  builder the default: the lines must work whatever builder is active.
Lines that need a GPU (`--gpus` other than `none`) would be left out; the
release job has none (the gpu-smoke job holds them).
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.paths import REPO_ROOT

WORKFLOW = REPO_ROOT / ".github" / "workflows" / "image.yml"
INVOKE = str(Path(sys.executable).with_name("invoke"))
MATRIX_VARIANT = "rehearsal"
STAND_IN_BUILDER = "skyrl-test-ci-builder"
_EXPRESSION = re.compile(r"\$\{\{\s*([^}]*?)\s*\}\}")


def release_invoke_lines(workflow: dict) -> list[tuple[str, dict[str, str], str]]:
    """(step name, step env, command line) for every `invoke` line of the release job's run: steps, in order."""
    found = []
    for step in workflow["jobs"]["release"]["steps"]:
        script = step.get("run")
        if not script:
            continue
        env = {name: _expand(str(value)) for name, value in (step.get("env") or {}).items()}
        for line in script.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0].endswith("/invoke") and not _needs_gpu(words):
                found.append((step.get("name", ""), env, line.strip()))
    return found


def _expand(value: str) -> str:
    """A step's env value: the matrix variant stands in for `${{ matrix.variant }}`; no other expression is expected."""
    def one(match: re.Match) -> str:
        assert match.group(1) == "matrix.variant", f"no stand-in for ${{{{ {match.group(1)} }}}}"
        return MATRIX_VARIANT
    return _EXPRESSION.sub(one, value)


def _needs_gpu(words: list[str]) -> bool:
    return any(word == "--gpus" and words[i + 1] != "none" for i, word in enumerate(words[:-1]))


LINES = release_invoke_lines(yaml.safe_load(WORKFLOW.read_text()))


def test_the_release_jobs_invoke_lines_are_found():
    tasks = [shlex.split(line)[1] for _, _, line in LINES]
    assert tasks == ["build", "smoke", "push", "render"]  # the job's order
    assert "--cache-ref" in LINES[0][2] and "$IMAGE_REPOSITORY" in LINES[0][2]


@pytest.mark.container
def test_the_release_job_runs_here_on_a_local_registry(docker_engine, registry, tmp_path):
    workflow = yaml.safe_load(WORKFLOW.read_text())
    repository = f"{registry.host}/team/skyrl-stack"  # the only substitution of the registry: GHCR -> here
    docker_config = tmp_path / "docker-config"
    docker_config.mkdir()
    base_env = {**os.environ, **{name: str(value) for name, value in workflow["env"].items()},
                "IMAGE_REPOSITORY": repository, "DOCKER_CONFIG": str(docker_config),
                "SKYRL_STACK_WORKSPACE": str(tmp_path), "BUILDX_BUILDER": STAND_IN_BUILDER}
    for name in ("SKYRL_STACK_REGISTRY_USER", "SKYRL_STACK_REGISTRY_PASSWORD"):
        base_env.pop(name, None)  # credentials come from the login, as in the job
    subprocess.run(["docker", "login", registry.host, "-u", registry.user, "--password-stdin"],
                   input=registry.password, text=True, check=True, capture_output=True, env=base_env)
    # setup-buildx-action's default builder, stood in for by a remote-driver one (creatable offline; it lives in
    # the temporary DOCKER_CONFIG, so it goes with it).
    subprocess.run(["docker", "buildx", "create", "--name", STAND_IN_BUILDER, "--driver", "remote",
                    "tcp://127.0.0.1:1"], check=True, capture_output=True, env=base_env)

    outputs = {}
    for step_name, step_env, line in LINES:
        command = line.replace(".venv/bin/invoke", f"{shlex.quote(INVOKE)} --search-root {shlex.quote(str(REPO_ROOT))}",
                               1)
        result = subprocess.run(["bash", "-e", "-c", command], cwd=tmp_path, env=dict(base_env, **step_env),
                                capture_output=True, text=True)
        assert result.returncode == 0, f"step {step_name!r}: {line}\n{result.stderr[-3000:]}"
        outputs[shlex.split(line)[1]] = result.stderr
    assert f"the active builder {STAND_IN_BUILDER!r} (driver remote) does not store images in" in outputs["build"]

    record = json.loads((tmp_path / ".skyrl-stack" / "builds" / f"{MATRIX_VARIANT}.json").read_text())
    assert record["repository"] == repository
    assert record["pushed"]["ref"] == f"{repository}@{record['digest']}"
    for ref in record["pushed"]["tags"]:  # every tag the push says it moved, read back from the registry itself
        assert registry.manifest_digest("team/skyrl-stack", ref.rsplit(":", 1)[1]) == record["digest"]
    assert registry.tags("team/skyrl-stack-cache") == [MATRIX_VARIANT]  # --cache-ref exported the build cache
    rendered = (tmp_path / "rendered" / f"{MATRIX_VARIANT}-aws.yaml").read_text()
    assert f"{repository}@{record['digest']}" in rendered
    assert (tmp_path / "reports" / f"smoke-{MATRIX_VARIANT}").is_dir()
