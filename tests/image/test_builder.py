"""`invoke build` with another buildx builder active: the image still lands in the engine.

A `remote`-driver builder is the one of another driver this machine can make
(`docker-container` needs the moby/buildkit image from Docker Hub). Like
docker/setup-buildx-action's, its `image` export would stay inside it, and here
it cannot even be reached (tcp://127.0.0.1:1): the build must pass it over for
the engine's own builder.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from skyrl_stack import engine
from tests.conftest import TEST_BASE_IMAGE, TEST_REPOSITORY

INVOKE = str(Path(sys.executable).with_name("invoke"))
pytestmark = pytest.mark.container


def _invoke_build(tmp_path, test_ca_bundle, builder_env: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, BUILDX_BUILDER=builder_env, SKYRL_STACK_WORKSPACE=str(tmp_path))
    return subprocess.run([INVOKE, "build", "--variant", "rehearsal", "--repository", TEST_REPOSITORY,
                           "--base-image", TEST_BASE_IMAGE, "--ca-bundle", str(test_ca_bundle), "--progress", "plain"],
                          env=env, capture_output=True, text=True)


@pytest.mark.reliability("fault", "`invoke build` with BUILDX_BUILDER naming a remote-driver builder (as "
                         "setup-buildx-action makes a docker-container one the default)",
                         "built with the engine's own builder, said in one line; the image is in the engine")
def test_another_drivers_active_builder_is_passed_over_for_the_engines(docker_engine, remote_builder, tmp_path,
                                                                       test_ca_bundle):
    assert engine.inspect_builder(remote_builder).driver == "remote"
    result = _invoke_build(tmp_path, test_ca_bundle, remote_builder)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (f"==> the active builder {remote_builder!r} (driver remote) does not store images in this engine; "
            "building with the engine's own builder 'default', which does") in result.stderr
    assert 'building with "default" instance using docker driver' in result.stderr  # buildx's own line
    record = json.loads((tmp_path / ".skyrl-stack" / "builds" / "rehearsal.json").read_text())
    held = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", record["tags"][0]],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert held == record["digest"]


def test_a_builder_name_buildx_does_not_know_is_said_and_passed_over(docker_engine, tmp_path, test_ca_bundle):
    result = _invoke_build(tmp_path, test_ca_bundle, "skyrl-test-no-such-builder")
    assert result.returncode == 0, result.stderr[-3000:]
    assert ("==> BUILDX_BUILDER=skyrl-test-no-such-builder names no builder docker buildx knows; building with the "
            "engine's own builder 'default'") in result.stderr


def test_the_engines_own_builder_is_found_by_the_docker_context(docker_engine):
    own = engine.engine_builder()
    assert (own.name, own.driver) == ("default", "docker")
    assert "BuildKit version:" in own.inspect  # what check_versions reads


def test_an_engine_without_a_docker_driver_builder_is_one_line_naming_it(docker_engine, monkeypatch):
    """A Docker context buildx has no builder for (here: one that does not exist, the real CLI's answer)."""
    from skyrl_stack.errors import StackError

    monkeypatch.setenv("DOCKER_CONTEXT", "skyrl-test-no-such-context")
    with pytest.raises(StackError, match=r"^cannot build with the engine's own builder 'skyrl-test-no-such-context' "
                                         r"\(Docker context skyrl-test-no-such-context\): docker buildx knows no "
                                         r"builder of that name$") as err:
        engine.engine_builder()
    assert "driver `docker`" in err.value.hint and "containerd" not in err.value.hint


def test_an_up_to_date_build_gives_back_a_removed_tag(docker_engine, tmp_path, test_ca_bundle):
    """`invoke build` said "up to date" and left the image without the tag a user (or a test) had removed."""
    repository = f"{TEST_REPOSITORY}-retag"  # its own names: the session image's tags stay as they are
    command = [INVOKE, "build", "--variant", "rehearsal", "--repository", repository, "--base-image",
               TEST_BASE_IMAGE, "--ca-bundle", str(test_ca_bundle), "--progress", "quiet"]
    env = dict(os.environ, SKYRL_STACK_WORKSPACE=str(tmp_path))
    subprocess.run(command, env=env, check=True, capture_output=True)
    record = json.loads((tmp_path / ".skyrl-stack" / "builds" / "rehearsal.json").read_text())
    try:
        descriptive, pins_tag = record["tags"]
        subprocess.run(["docker", "image", "rm", descriptive], check=True, capture_output=True)
        again = subprocess.run(command, env=env, capture_output=True, text=True)
        assert again.returncode == 0, again.stderr[-2000:]
        assert f"rehearsal: tagged {descriptive} again" in again.stderr and "up to date" in again.stderr
        held = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", descriptive], capture_output=True,
                              text=True, check=True).stdout.strip()
        assert held == record["digest"]
    finally:
        subprocess.run(["docker", "image", "rm", *record["tags"]], capture_output=True)
