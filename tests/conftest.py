"""Shared fixtures: the real Docker engine, a real registry process, the rehearsal image.

Container tests use the engine that scripts/setup-test-machine.sh installs and
starts (.ci/run does this on a fresh machine). They fail, not skip, when it is
missing: a green suite must mean the container paths really ran.
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.support.registry import RegistryProcess

from tests.support.paths import REPO_ROOT
# The Debian base image made without a registry (see scripts/setup-test-machine.sh).
TEST_BASE_IMAGE = os.environ.get("SKYRL_STACK_TEST_BASE", "skyrl-stack/debian-base:bookworm")
# The host's CA bundle (behind a TLS-intercepting proxy it holds the proxy's CA); test builds
# get it with a marker certificate appended (test_ca_bundle), as a build secret.
TEST_CA_BUNDLE = os.environ.get("SKYRL_STACK_TEST_CA", "/etc/ssl/certs/ca-certificates.crt")
# Kept per checkout (git-ignored), so the bundle's path, part of the build's input
# fingerprint, stays the same from session to session and unchanged builds are skipped.
TEST_CA_DIR = REPO_ROOT / ".skyrl-stack" / "test-ca"
# Overridable so that parallel test runs on one engine keep their image tags apart.
TEST_REPOSITORY = os.environ.get("SKYRL_STACK_TEST_REPOSITORY", "127.0.0.1:5000/skyrl-stack-test")


@pytest.fixture
def state_dir(tmp_path, monkeypatch):
    """An empty state directory (.skyrl-stack) for build records and reports."""
    path = tmp_path / ".skyrl-stack"
    monkeypatch.setenv("SKYRL_STACK_WORKSPACE", str(tmp_path))
    return path


@pytest.fixture(scope="session")
def docker_engine():
    probe = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.fail("no Docker engine: run scripts/setup-test-machine.sh first (.ci/run does)", pytrace=False)
    return probe.stdout.strip()


@pytest.fixture(scope="session")
def test_ca_bundle() -> Path:
    """TEST_CA_BUNDLE plus a marker certificate made here (openssl req -x509), whatever the host holds:
    a build secret that must reach no layer; test_image looks for the marker (marker_certificate)."""
    TEST_CA_DIR.mkdir(parents=True, exist_ok=True)
    marker = TEST_CA_DIR / "marker.pem"
    if not marker.exists():  # made once per checkout: the same marker for every build that saw it
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
                        "-subj", "/CN=skyrl-stack test marker CA (must not reach any image layer)",
                        "-keyout", str(TEST_CA_DIR / "marker.key"), "-out", str(marker)],
                       check=True, capture_output=True)
    bundle = TEST_CA_DIR / "bundle.pem"
    text = Path(TEST_CA_BUNDLE).read_text() + "\n" + marker.read_text()
    if not bundle.exists() or bundle.read_text() != text:
        bundle.write_text(text)
    return bundle


def marker_certificate() -> bytes:
    """The marker certificate's base64 body (what a leak would contain)."""
    pem = (TEST_CA_DIR / "marker.pem").read_bytes()
    return b"".join(pem.split(b"-----")[2].split())


@pytest.fixture(scope="session")
def rehearsal_image(docker_engine, tmp_path_factory, test_ca_bundle):
    """The rehearsal variant, built once per session through the real build path.

    Returns its BuildRecord; the state dir it was written to is record_dir.
    """
    from skyrl_stack.image.build import build_variants

    workspace = tmp_path_factory.mktemp("rehearsal-workspace")
    old = os.environ.get("SKYRL_STACK_WORKSPACE")
    os.environ["SKYRL_STACK_WORKSPACE"] = str(workspace)
    try:
        (record,) = build_variants(
            ["rehearsal"], TEST_REPOSITORY, base_image=TEST_BASE_IMAGE,
            ca_bundle=str(test_ca_bundle), progress="quiet",
        )
    finally:
        if old is None:
            os.environ.pop("SKYRL_STACK_WORKSPACE", None)
        else:
            os.environ["SKYRL_STACK_WORKSPACE"] = old
    record.state_dir = workspace / ".skyrl-stack"
    return record


@pytest.fixture
def registry(tmp_path):
    """A real registry process (Debian's docker-registry) with htpasswd auth on a free port.

    A push tags the image locally under the registry's host first; those tags are removed
    at the end with the registry (RegistryProcess: the port is free for the next one, and its
    images are gone)."""
    with RegistryProcess(tmp_path / "registry") as reg:
        yield reg


# Names tests (this checkout's and the other checkouts' sharing the engine) give their images:
# every SKYRL_STACK_TEST_REPOSITORY (127.0.0.1:5000/skyrl-stack-test-<name>), the names older
# tests used, and a registry on a temporary port (any 127.0.0.1:<port>/ but the shared :5000).
# This session's own SKYRL_STACK_TEST_REPOSITORY too, whatever it is named (its images are the tests' to remove).
_TEST_NAMES = re.compile(r"^(?:127\.0\.0\.1:5000/skyrl-stack-test|skyrl-stack-test|skyrl-stack-smoke-|"
                         r"skyrl-stack-bench|127\.0\.0\.1:(?!5000/)\d+/|" + re.escape(TEST_REPOSITORY) + r"[:@/-])")


def engine_leaks(before: dict[str, str], after: dict[str, str], temporary_hosts: set[str]) -> list[str]:
    """What the session did to the engine that it must not ({reference: image id}, engine_refs): a name
    that was there before, not a test's (the user's, e.g. the quickstart's image), is gone; a name under
    one of this session's temporary registries or proxies (all stopped by now) is left."""
    removed = [f"removed {ref}" for ref in sorted(before) if ref not in after and not _TEST_NAMES.match(ref)]
    left = [f"left {ref}" for ref in sorted(after) if any(ref.startswith(f"{host}/") for host in temporary_hosts)]
    return removed + left


@pytest.fixture(scope="session", autouse=True)
def engine_left_as_found():
    """The suite leaves the user's engine as it found it (engine_leaks): a leak fails the run.
    Scoped so that other checkouts' tests working on the same engine meanwhile are not counted."""
    from tests.support.registry import TEMPORARY_HOSTS, engine_refs

    before = engine_refs()
    yield
    after = engine_refs()
    if before is not None and after is not None:
        leaks = engine_leaks(before, after, TEMPORARY_HOSTS)
        if leaks:
            pytest.fail("the tests changed the engine's tags: " + "; ".join(leaks), pytrace=False)


@pytest.fixture
def remote_builder():
    """A buildx builder of another driver than the engine's (`remote`, creatable offline; docker-container needs
    the moby/buildkit image from Docker Hub), of this test's own name, removed after; never made the default.
    It points at nothing (tcp://127.0.0.1:1): whatever it is asked to build fails."""
    name = f"skyrl-test-remote-{os.getpid()}"
    subprocess.run(["docker", "buildx", "create", "--name", name, "--driver", "remote", "tcp://127.0.0.1:1"],
                   check=True, capture_output=True)
    try:
        yield name
    finally:
        subprocess.run(["docker", "buildx", "rm", name], capture_output=True)
