"""`invoke push` against a real registry process (htpasswd auth) and the real engine."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from skyrl_stack.errors import StackError
from skyrl_stack.push import PASSWORD_ENV, USER_ENV, content_tag, push_variant
from skyrl_stack.records import load_build_record
from tests.support.registry import free_port

pytestmark = pytest.mark.container
REPO_NAME = "team/skyrl-stack"


@pytest.fixture
def built(rehearsal_image, state_dir):
    """A private copy of the rehearsal build record (push writes into it)."""
    shutil.copytree(rehearsal_image.state_dir / "builds", state_dir / "builds")
    return load_build_record("rehearsal")


@pytest.fixture
def login(monkeypatch, registry):
    monkeypatch.setenv(USER_ENV, registry.user)
    monkeypatch.setenv(PASSWORD_ENV, registry.password)


def test_push_digest_first_then_tags_and_pull_back_by_digest(built, registry, login):
    """Gate overridden on purpose: the smoke gate has its own tests; this one is about the transfer."""
    repo = f"{registry.host}/{REPO_NAME}"
    record = push_variant("rehearsal", repository=repo, override_gate=True, backoff_seconds=0.1)

    first = content_tag("rehearsal", built.digest)
    assert registry.manifest_digest(REPO_NAME, first) == built.digest
    expected = {first, "rehearsal-ray2.48.0-py3.11-cpu", f"rehearsal-pins-{built.pins_digest}", "rehearsal-latest"}
    assert set(registry.tags(REPO_NAME)) == expected
    for tag in expected:
        assert registry.manifest_digest(REPO_NAME, tag) == built.digest
    assert load_build_record("rehearsal").pushed["ref"] == f"{repo}@{built.digest}"
    assert record.pushed["bytes_sent"] > 50_000_000  # the whole image went over the wire once

    # Delete every local reference to the image, then pull it back by digest.
    subprocess.run(["docker", "rmi", "--force", built.digest], check=True, capture_output=True)
    assert subprocess.run(["docker", "image", "inspect", built.digest], capture_output=True).returncode != 0
    subprocess.run(["docker", "login", registry.host, "-u", registry.user, "--password-stdin"],
                   input=registry.password, text=True, check=True, capture_output=True)
    try:
        subprocess.run(["docker", "pull", "--quiet", f"{repo}@{built.digest}"], check=True, capture_output=True)
    finally:
        subprocess.run(["docker", "logout", registry.host], capture_output=True)
    pulled = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", f"{repo}@{built.digest}"],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert pulled == built.digest
    for ref in built.tags + [built.ref.split("@")[0] + ":restored"]:  # restore the names other tests use
        subprocess.run(["docker", "tag", built.digest, ref], check=True)


def test_gate_refuses_push_without_a_smoke_run_and_nothing_reaches_the_registry(built, registry, login):
    with pytest.raises(StackError, match="refused: no smoke run"):
        push_variant("rehearsal", repository=f"{registry.host}/{REPO_NAME}")
    assert registry.tags(REPO_NAME) == []


def test_wrong_password_moves_no_tag(built, registry, monkeypatch):
    monkeypatch.setenv(USER_ENV, registry.user)
    monkeypatch.setenv(PASSWORD_ENV, "wrong")
    with pytest.raises(StackError, match="refused the login") as err:
        push_variant("rehearsal", repository=f"{registry.host}/{REPO_NAME}", override_gate=True, backoff_seconds=0.01)
    assert "wrong" not in err.value.render()  # never echo a secret
    assert registry.tags(REPO_NAME) == []
    assert load_build_record("rehearsal").pushed == {}


def test_registry_down_is_retried_then_reported(built, monkeypatch):
    monkeypatch.setenv(USER_ENV, "u")
    monkeypatch.setenv(PASSWORD_ENV, "p")
    with pytest.raises(StackError, match="unreachable"):
        push_variant("rehearsal", repository=f"127.0.0.1:{free_port()}/{REPO_NAME}", override_gate=True,
                     attempts=2, backoff_seconds=0.01)
    assert load_build_record("rehearsal").pushed == {}


def test_half_given_credentials_are_refused_before_any_network(built, monkeypatch):
    monkeypatch.setenv(USER_ENV, "u")
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    with pytest.raises(StackError, match=f"{PASSWORD_ENV} is not set"):
        push_variant("rehearsal", repository="127.0.0.1:1/x", override_gate=True)


def test_immutable_registry_refuses_before_sending_when_a_tag_holds_another_digest(built, registry, login):
    """ECR-style immutable tags (the local registry cannot enforce them, so the check is what is tested):
    a second image for the same pins must not move any tag, nor leave half of them moved."""
    repo = f"{registry.host}/{REPO_NAME}"
    push_variant("rehearsal", repository=repo, override_gate=True, immutable=True, backoff_seconds=0.1)
    before = {tag: registry.manifest_digest(REPO_NAME, tag) for tag in registry.tags(REPO_NAME)}
    assert "rehearsal-latest" not in before  # a tag that must move has no place in an immutable repository

    container = subprocess.run(["docker", "create", built.digest, "true"], capture_output=True, text=True, check=True).stdout.strip()
    try:
        other = subprocess.run(["docker", "commit", container, "skyrl-stack-test-other:1"], capture_output=True,
                               text=True, check=True).stdout.strip()
    finally:
        subprocess.run(["docker", "rm", container], capture_output=True)
    try:
        record = load_build_record("rehearsal")
        record.digest, record.pushed = other, {}
        record.save()
        with pytest.raises(StackError, match="already holds .* immutable tags"):
            push_variant("rehearsal", repository=repo, override_gate=True, immutable=True, backoff_seconds=0.1)
        assert {tag: registry.manifest_digest(REPO_NAME, tag) for tag in registry.tags(REPO_NAME)} == before
    finally:
        subprocess.run(["docker", "rmi", "--force", "skyrl-stack-test-other:1"], capture_output=True)
